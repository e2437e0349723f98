"""The analysis as HTML: one self-contained page per input (``visec analyze``), and the same body as
a fragment the web page of ``visec serve`` shows. Images are inline PNGs and the frame curve is
inline SVG, so a page can be archived or mailed as one file."""

from __future__ import annotations

from jinja2 import Environment, select_autoescape

from visec.apps.analyze import Analysis

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { margin-top: 1.4em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .6em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; } th { background: #f2f2f2; }
td:first-child, th:first-child { text-align: left; }
.verdict { font-size: 1.3em; padding: .5em .8em; border-radius: 6px; display: inline-block; }
.verdict.fake { background: #fde2e1; } .verdict.real { background: #e2f4e1; }
.verdict.split, .verdict.no-face { background: #f2f2f2; }
.fake-cell { color: #b3261e; font-weight: 600; } .real-cell { color: #1e7b34; }
.evidence { display: flex; flex-wrap: wrap; gap: 12px; } .evidence figure { margin: 0; text-align: center; }
.evidence img { width: 128px; height: 128px; image-rendering: pixelated; border: 1px solid #ccc; }
figcaption { font-size: .8em; color: #555; max-width: 140px; } .note { background: #fff6d5; padding: .3em .8em; }
.meta { color: #777; font-size: .85em; }
"""

_BODY = """
<div class="analysis" data-schema-version="{{ a.schema_version }}">
<p><span class="verdict {{ a.ensemble.verdict | replace(' ', '-') }}" id="verdict">
{% if a.ensemble.verdict == "no face" %}No face found{% else %}Ensemble verdict: <b>{{ a.ensemble.verdict }}</b>
({{ a.ensemble.fake_votes }} of {{ a.ensemble.voters }} detectors say fake; agreement {{ "%.0f" | format(100 * a.ensemble.agreement) }}%){% endif %}
</span></p>
<p class="meta">{{ a.input.name }} &middot; {{ a.input.media }} {{ a.input.width }}&times;{{ a.input.height }}
{% if a.input.media == "video" %}&middot; {{ a.input.frames_sampled | length }} of {{ a.input.frames_total }} frames sampled{% endif %}
&middot; {{ a.faces | length }} face(s) in {{ a.tracks | length }} track(s) &middot; faces: {{ a.faces_mode }}
&middot; sha256 {{ a.input.sha256[:16] }}&hellip; &middot; {{ "%.2f" | format(a.seconds) }} s</p>
<h2>Detectors</h2>
<table class="scores"><thead><tr><th>detector</th><th>P(fake)</th><th>threshold (val. EER)</th><th>decision</th><th>test AUC</th></tr></thead><tbody>
{% for v in a.detector_verdicts %}{% set d = a.detectors[loop.index0] %}
<tr class="detector-row"><td>{{ v.detector }}</td>
<td>{% if v.prob is none %}-{% else %}{{ "%.3f" | format(v.prob) }}{% endif %}</td>
<td title="{{ d.threshold_source }}">{{ "%.3f" | format(v.threshold) }}</td>
<td class="{% if v.fake %}fake-cell{% elif v.fake is sameas false %}real-cell{% endif %}">{% if v.fake is none %}no face{% elif v.fake %}fake{% else %}real{% endif %}</td>
<td>{% if d.test_auc is none %}-{% else %}{{ "%.3f" | format(d.test_auc) }}{% endif %}</td></tr>
{% endfor %}</tbody></table>
{% if a.evidence %}<h2>Evidence</h2>
{% for e in a.evidence %}<p class="meta">track {{ e.track }}, frame {{ e.frame_index }} (its most suspicious frame): the aligned face and where each detector looks (Grad-CAM or the method's own attention; red: evidence for fake)</p>
<div class="evidence"><figure><img class="face" alt="face" src="data:image/png;base64,{{ e.face_png }}"><figcaption>face</figcaption></figure>
{% for name, png in e.maps_png.items() %}{% if png %}<figure><img class="saliency" alt="saliency {{ name }}" src="data:image/png;base64,{{ png }}"><figcaption>{{ name }}</figcaption></figure>
{% else %}<figure><figcaption>{{ name }}: no saliency maps</figcaption></figure>{% endif %}{% endfor %}</div>{% endfor %}{% endif %}
{% if curve %}<h2>Per-frame scores</h2>{{ curve | safe }}
<p class="meta">P(fake) per sampled frame (highest over the frame's faces); dashed: each detector's threshold.</p>{% endif %}
{% if a.tracks | length > 1 %}<h2>Tracks</h2><table><thead><tr><th>track</th><th>frames</th>{% for v in a.detector_verdicts %}<th>{{ v.detector }}</th>{% endfor %}</tr></thead><tbody>
{% for t in a.tracks %}<tr><td>{{ t.track }}</td><td>{{ t.frames | length }}</td>{% for v in a.detector_verdicts %}<td>{{ "%.3f" | format(t.probs[v.detector]) }}</td>{% endfor %}</tr>{% endfor %}</tbody></table>{% endif %}
{% if a.frames_without_face %}<p class="meta">frames without a face: {{ a.frames_without_face | join(", ") }}</p>{% endif %}
{% if a.frames_unreadable %}<p class="meta">frames that did not decode: {{ a.frames_unreadable | join(", ") }}</p>{% endif %}
{% if a.sequence %}<h2>Edit sequence</h2><p>{{ (a.sequence.edits | join(" &rarr; ")) if a.sequence.edits else "no edit (original)" }} <span class="meta">({{ a.sequence.detector }}, on the main face)</span></p>
{% if a.sequence.recovered_png %}<figure><img alt="recovered face" src="data:image/png;base64,{{ a.sequence.recovered_png }}"><figcaption>recovered face</figcaption></figure>{% endif %}{% endif %}
{% for n in a.notes %}<p class="note">{{ n }}</p>{% endfor %}
</div>
"""

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>visec analysis: {{ a.input.name }}</title>
<style>{{ css }}</style></head><body>
<h1>visec analysis: {{ a.input.name }}</h1>
<p class="meta">generated {{ a.created }} by visec {{ a.visec }} (schema {{ a.schema_name }} v{{ a.schema_version }})</p>
{{ body | safe }}
</body></html>
"""

_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
_env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))


def frame_curve(a: Analysis, width: int = 640, height: int = 200) -> str:
    """Inline SVG of P(fake) per sampled frame and detector (empty for images and single frames)."""
    frames = sorted({f.frame_index for f in a.faces})
    if a.input.media != "video" or len(frames) < 2:
        return ""
    pad, x0, x1 = 28, frames[0], frames[-1]

    def x(i: float) -> float:
        return pad + (i - x0) / max(x1 - x0, 1) * (width - 2 * pad)

    def y(p: float) -> float:
        return height - pad - p * (height - 2 * pad)

    parts = [f'<svg class="curve" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}">',
             f'<rect x="{pad}" y="{pad}" width="{width - 2 * pad}" height="{height - 2 * pad}" fill="none" stroke="#ccc"/>']
    for p in (0.0, 0.5, 1.0):
        parts.append(f'<text x="2" y="{y(p) + 4:.1f}" font-size="10">{p:.1f}</text>')
    parts.append(f'<text x="{pad}" y="{height - 6}" font-size="10">frame {x0}</text>')
    parts.append(f'<text x="{width - pad - 60}" y="{height - 6}" font-size="10">frame {x1}</text>')
    for k, d in enumerate(a.detectors):
        colour = _COLOURS[k % len(_COLOURS)]
        pts = [(i, max(f.probs[d.name] for f in a.faces if f.frame_index == i)) for i in frames]
        line = " ".join(f"{x(i):.1f},{y(p):.1f}" for i, p in pts)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.8" points="{line}">'
                     f'<title>{_env.from_string("{{ n }}").render(n=d.name)}</title></polyline>')
        parts.append(f'<line x1="{pad}" x2="{width - pad}" y1="{y(d.threshold):.1f}" y2="{y(d.threshold):.1f}" '
                     f'stroke="{colour}" stroke-dasharray="4 3" stroke-width="1"/>')
        parts.append(f'<text x="{pad + 4}" y="{pad + 12 * k + 12}" font-size="10" fill="{colour}">'
                     f'{_env.from_string("{{ n }}").render(n=d.name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_fragment(a: Analysis) -> str:
    """The analysis body (what the web page inserts under its upload form)."""
    return _env.from_string(_BODY).render(a=a, curve=frame_curve(a))


def render_page(a: Analysis) -> str:
    """A whole self-contained HTML page for one input."""
    return _env.from_string(_PAGE).render(a=a, css=_CSS, body=render_fragment(a))


def page_css() -> str:
    return _CSS

