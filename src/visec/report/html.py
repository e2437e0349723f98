"""Self-contained HTML reports: headings, text, tables and matplotlib figures in one file.

Figures are embedded as base64 PNGs, so a report can be mailed or archived as a single file.
Every report (forgery benchmarks, robustness, identity tracing) is built from the same parts::

    report = HtmlReport("visec bench")
    report.text("Trained on ...")
    report.table(df, caption="Leaderboard")
    report.figure(fig, caption="ROC curves")
    report.write(run_dir / "report.html")
"""

from __future__ import annotations

import base64
import datetime as _dt
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, select_autoescape

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; } figcaption, .caption { color: #555; font-size: 0.9em; }
.meta { color: #777; font-size: 0.85em; } .note { background: #fff6d5; padding: .4em .8em; }
</style></head><body>
<h1>{{ title }}</h1>
<p class="meta">generated {{ created }} by visec {{ version }}</p>
{% for block in blocks %}
{% if block.kind == "heading" %}<h2>{{ block.body }}</h2>
{% elif block.kind == "text" %}<p>{{ block.body }}</p>
{% elif block.kind == "note" %}<p class="note">{{ block.body }}</p>
{% elif block.kind == "table" %}{% if block.caption %}<p class="caption">{{ block.caption }}</p>{% endif %}{{ block.body | safe }}
{% elif block.kind == "figure" %}<figure><img alt="{{ block.caption }}" src="data:image/png;base64,{{ block.body }}">
{% if block.caption %}<figcaption>{{ block.caption }}</figcaption>{% endif %}</figure>
{% endif %}{% endfor %}
</body></html>
"""


@dataclass
class _Block:
    kind: str
    body: str
    caption: str = ""


@dataclass
class HtmlReport:
    title: str
    blocks: list[_Block] = field(default_factory=list)

    def heading(self, text: str) -> "HtmlReport":
        self.blocks.append(_Block("heading", text))
        return self

    def text(self, text: str) -> "HtmlReport":
        self.blocks.append(_Block("text", text))
        return self

    def note(self, text: str) -> "HtmlReport":
        self.blocks.append(_Block("note", text))
        return self

    def table(self, df: pd.DataFrame, caption: str = "", float_format: str = "{:.4f}") -> "HtmlReport":
        formatters: dict[str, Any] = {c: float_format.format for c in df.columns
                                      if pd.api.types.is_float_dtype(df[c])}
        body = df.to_html(index=False, border=0, formatters=formatters, na_rep="-", escape=True)
        self.blocks.append(_Block("table", body, caption))
        return self

    def figure(self, fig: Any, caption: str = "", dpi: int = 110) -> "HtmlReport":
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        self.blocks.append(_Block("figure", base64.b64encode(buf.getvalue()).decode("ascii"), caption))
        return self

    def render(self) -> str:
        import visec

        env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
        return env.from_string(_TEMPLATE).render(
            title=self.title, blocks=self.blocks, version=visec.__version__,
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))

    def write(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.render(), encoding="utf-8")
        return path


