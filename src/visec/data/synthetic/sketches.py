"""``visec data synth --kind sketch``: the embedded sketch/photo set for zero-shot SBIR (SBKA).

Fifty object categories in ten super-categories (``vehicle/car``, ``tool/hammer``, ``plant/cactus``,
...; see :data:`HIERARCHY`) are drawn procedurally from parts (polygons, ellipses, arcs and thick
lines: wheels, handles, legs, windows, fins, ...). Every *instance* of a category has its own part
proportions and pose (rotation, scale, aspect, position, mirror) and is rendered twice:

* a **photo**: the parts filled with the instance's colours and a texture (shaded, gradient,
  stripes, spots or noise), lit by a soft gradient, on a plain, gradient or cluttered background,
  with sensor noise;
* a **sketch** of the very same object (same parts, same pose), black on white, in one of two
  styles, about half each per category:

  - ``stroke``: the visible outlines of the parts (hidden-line removal through a part-id map),
    redrawn by a jittery "hand": wobbling polylines, varying pressure (width), gaps and
    overshoots;
  - ``xdog``: an XDoG line extraction (difference of Gaussians with a soft tanh threshold, with
    jittered sigma, tau, epsilon and phi) of the object photographed on white.

Instance ``k`` of a category is drawn from its own random stream ``(seed, version, category, k)``,
so photo ``k`` and sketch ``k`` are a pair, and changing the image counts does not move the others.

Held-out classes: one category per super-category (picked by ``default_rng([seed, version,
999])``, one integer per super-category in :data:`HIERARCHY` order) is UNSEEN: 10 unseen, 40 seen.
Labels follow :data:`CATEGORIES` order within each side (seen 0..39, unseen 0..9).

Output (``out``), in the SAKE-style file-list format of the published benchmarks (one line
``relative/path label`` per image, paths relative to ``out``):

* ``photo/<super>/<category>/<k>.png`` and ``sketch/<super>/<category>/<k>_<stroke|xdog>.png``
  (``size`` px RGB);
* ``{sketch,photo}_filelist_train.txt``: seen classes, minus the held-out validation instances;
* ``{sketch,photo}_filelist_test.txt``: seen classes, the last ``val_per_class`` sketches and
  photos of each (validation: choosing retrieval settings without touching unseen classes);
* ``{sketch,photo}_filelist_zero.txt``: unseen classes (queries / gallery), labels ``0..U-1``;
* ``cid_mask.npy``: float32 ``(seen, teacher)`` class-id mask. The embedded teacher is pre-trained
  on the seen photos, so teacher classes = seen classes; entry ``(i, j)`` is 1 when ``i == j``,
  else the WordNet-style path similarity ``1 / (1 + path length)`` in the tree root -> super ->
  category when it exceeds 0.2 (siblings, length 2: 1/3), else 0 (cousins, length 4: 0.2 -> 0);
* ``sketches.json``: the generator parameters, ``seen`` / ``unseen`` / ``teacher_classes`` (label
  order), the hierarchy, per-split counts and the digest (sha256 of the lists, the mask and every
  image, in a fixed order).

Deterministic per seed (byte-identical files); calling again with the same parameters returns the
cached set, other parameters regenerate it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy.ndimage import gaussian_filter

from visec.errors import ConfigError

GENERATOR_VERSION = 1  # bump when the images a seed produces change
META_FILE = "sketches.json"
MASK_FILE = "cid_mask.npy"
LIST_SPLITS = ("train", "test", "zero")
MODALITIES = ("sketch", "photo")
SKETCH_STYLES = ("stroke", "xdog")
SUPERSAMPLE = 4  # objects are drawn at 4x and reduced with antialiasing
TONES = ("main", "second", "dark", "light", "accent")

Pts = np.ndarray  # (n, 2) float, unit box [-1, 1]^2, y down


@dataclass(frozen=True)
class SketchParams:
    seed: int = 0
    size: int = 64
    photos_per_class: int = 24
    sketches_per_class: int = 24
    val_per_class: int = 3  # seen classes: the last instances of each modality held out as validation


@dataclass
class SketchReport:
    root: Path
    images: int
    cached: bool
    seconds: float
    digest: str
    seen: int = 0
    unseen: int = 0


@dataclass
class Part:
    """One piece of an object: a filled polygon (``width == 0``) or a thick line (open or a loop)."""

    pts: Pts
    tone: str = "main"
    width: float = 0.0
    closed: bool = False


@dataclass
class Drawing:
    """One instance rendered: photo, object mask (both ``size`` px) and a sketch (or ``None``)."""

    photo: np.ndarray
    mask: np.ndarray
    sketch: np.ndarray | None
    style: str | None
    attrs: dict[str, str] = field(default_factory=dict)


# -- shape vocabulary (unit box, y down) -------------------------------------------------------------
def _ell(cx: float, cy: float, rx: float, ry: float, a0: float = 0.0, a1: float = 2 * math.pi,
         n: int = 28, rot: float = 0.0) -> Pts:
    t = np.linspace(a0, a1, n, endpoint=abs(a1 - a0) < 2 * math.pi - 1e-9)
    pts = np.stack([rx * np.cos(t), ry * np.sin(t)], 1)
    return _rot(pts, rot) + (cx, cy)


def _rect(x0: float, y0: float, x1: float, y1: float) -> Pts:
    return np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], float)


def _rot(pts: Pts, ang: float, cx: float = 0.0, cy: float = 0.0) -> Pts:
    c, s = math.cos(ang), math.sin(ang)
    p = np.asarray(pts, float) - (cx, cy)
    return np.stack([c * p[:, 0] - s * p[:, 1], s * p[:, 0] + c * p[:, 1]], 1) + (cx, cy)


def _poly(pts, tone: str = "main") -> Part:
    return Part(np.asarray(pts, float), tone)


def _line(pts, width: float, tone: str = "dark", closed: bool = False) -> Part:
    return Part(np.asarray(pts, float), tone, width, closed)


def _ring(cx: float, cy: float, r: float, width: float, tone: str = "dark", ry: float | None = None) -> Part:
    return Part(_ell(cx, cy, r, r if ry is None else ry, n=32), tone, width, True)


def _wheel(cx: float, cy: float, r: float) -> list[Part]:
    return [_poly(_ell(cx, cy, r, r), "dark"), _poly(_ell(cx, cy, 0.45 * r, 0.45 * r, n=16), "light")]


# -- the categories ----------------------------------------------------------------------------------
U = Callable[[float, float], float]


def _car(u: U) -> list[Part]:
    L, h = u(0.85, 1.0), u(0.3, 0.42)
    roof = u(-0.55, -0.4)
    parts = [_poly(_rect(-L, -0.05, L, h)),
             _poly([(-0.55, -0.05), (-0.38, roof), (0.3, roof), (u(0.55, 0.7), -0.05)]),
             _poly([(-0.45, -0.08), (-0.33, roof + 0.06), (-0.05, roof + 0.06), (-0.05, -0.08)], "light"),
             _poly([(0.03, -0.08), (0.03, roof + 0.06), (0.26, roof + 0.06), (0.47, -0.08)], "light")]
    r = u(0.18, 0.24)
    for x in (-0.55 * L, 0.58 * L):
        parts += _wheel(x, h, r)
    parts.append(_poly(_ell(L - 0.08, 0.05, 0.07, 0.05, n=12), "accent"))
    return parts


def _bus(u: U) -> list[Part]:
    top, bot = u(-0.6, -0.45), u(0.35, 0.45)
    parts = [_poly(_rect(-1, top, 1, bot)), _poly(_rect(-1, 0.05, 1, 0.13), "second")]
    n = int(u(4, 6.99))
    w = 1.55 / n
    for i in range(n):
        x = -0.9 + i * w
        parts.append(_poly(_rect(x, top + 0.1, x + 0.75 * w, -0.08), "light"))
    parts.append(_poly(_rect(0.72, top + 0.1, 0.92, bot - 0.08), "dark"))
    for x in (-0.6, 0.45):
        parts += _wheel(x, bot, u(0.17, 0.21))
    return parts


def _bicycle(u: U) -> list[Part]:
    r = u(0.34, 0.42)
    rear, front, crank = (-0.58, 0.35), (0.58, 0.35), (u(-0.1, 0.05), 0.35)
    seat, head = (u(-0.25, -0.1), -0.2), (u(0.35, 0.45), -0.25)
    return [_ring(*rear, r, 0.07), _ring(*front, r, 0.07),
            _line([rear, seat, crank, rear], 0.06, "main"), _line([seat, head, crank], 0.06, "main"),
            _line([head, front], 0.06, "main"), _line([head, (head[0] - 0.1, -0.5), (head[0] + 0.12, -0.52)], 0.05),
            _poly(_ell(seat[0] - 0.02, seat[1] - 0.08, 0.14, 0.05, n=14), "dark")]


def _cart(u: U) -> list[Part]:
    top, bot = u(-0.5, -0.35), u(0.15, 0.25)
    parts = [_poly([(-0.75, top), (0.45, top), (0.35, bot), (-0.65, bot)])]
    for f in (0.33, 0.66):
        y = top + f * (bot - top)
        parts.append(_line([(-0.72 + 0.1 * f, y), (0.42 - 0.1 * f, y)], 0.03, "second"))
    parts += [_line([(0.4, top + 0.05), (1.0, top - u(0.2, 0.4))], 0.07, "second"),
              _line([(-0.55, bot), (-0.55, 0.62)], 0.06, "second")]
    parts += _wheel(u(-0.05, 0.1), bot + 0.18, u(0.2, 0.26))
    return parts


def _tractor(u: U) -> list[Part]:
    R = u(0.38, 0.48)
    parts = [_poly(_rect(-0.35, -0.15, 0.85, 0.22)), _poly(_rect(-0.6, -0.75, -0.05, -0.15), "second"),
             _poly(_rect(-0.5, -0.65, -0.15, -0.3), "light"), _line([(0.55, -0.15), (0.55, -0.55)], 0.07)]
    parts += _wheel(-0.4, 0.5 - R + 0.2, R)
    parts += _wheel(0.62, 0.45, u(0.2, 0.26))
    return parts


def _airplane(u: U) -> list[Part]:
    sw = u(0.1, 0.35)
    span = u(0.75, 0.95)
    return [_poly([(0.05, 0), (0.3, 0), (0.05 - sw, span), (-0.2 - sw, span)], "second"),
            _poly([(0.05, 0), (0.3, 0), (0.05 - sw, -span), (-0.2 - sw, -span)], "second"),
            _poly([(-0.72, 0), (-0.6, 0), (-0.9, 0.35), (-1.0, 0.35)], "second"),
            _poly([(-0.72, 0), (-0.6, 0), (-0.9, -0.35), (-1.0, -0.35)], "second"),
            _poly(_ell(0, 0, 1.0, u(0.12, 0.18))),
            _poly(_ell(0.78, 0, 0.12, 0.07, n=14), "light")]


def _rocket(u: U) -> list[Part]:
    w = u(0.18, 0.26)
    return [_poly([(-w, 0.35), (-w - u(0.2, 0.35), 0.8), (-w, 0.7)], "second"),
            _poly([(w, 0.35), (w + u(0.2, 0.35), 0.8), (w, 0.7)], "second"),
            _poly(_rect(-w, -0.45, w, 0.72)), _poly([(-w, -0.45), (0, -1.0), (w, -0.45)], "accent"),
            _poly(_ell(0, -0.1, 0.6 * w, 0.6 * w, n=18), "light"),
            _poly([(-0.6 * w, 0.72), (0, u(0.9, 1.0)), (0.6 * w, 0.72)], "accent")]


def _sailboat(u: U) -> list[Part]:
    d = u(0.6, 0.75)
    return [_poly([(-0.92, 0.45), (0.92, 0.45), (d, 0.78), (-d, 0.78)]),
            _line([(0, 0.45), (0, -0.95)], 0.05),
            _poly([(0.05, -0.9), (0.05, 0.35), (u(0.6, 0.8), 0.35)], "light"),
            _poly([(-0.05, -0.7), (-0.05, 0.35), (-u(0.45, 0.65), 0.35)], "second")]


def _submarine(u: U) -> list[Part]:
    ry = u(0.26, 0.34)
    parts = [_poly([(0.85, 0.15), (1.0, -0.05), (1.0, 0.35)], "dark"), _poly(_ell(0, 0.15, 0.92, ry, n=36)),
             _poly(_rect(-0.3, 0.15 - ry - 0.3, 0.1, 0.15 - ry + 0.05)),
             _line([(-0.1, 0.15 - ry - 0.3), (-0.1, -0.75), (0.08, -0.75)], 0.05)]
    for x in (-0.5, -0.15, 0.2, 0.55):
        parts.append(_poly(_ell(x, 0.15, 0.07, 0.07, n=12), "light"))
    return parts


def _helicopter(u: U) -> list[Part]:
    return [_poly([(0.2, -0.12), (1.0, -0.1), (1.0, 0.0), (0.2, 0.1)]),
            _ring(0.92, -0.15, 0.13, 0.04),
            _poly(_ell(-0.2, 0.0, 0.52, u(0.32, 0.4))), _poly(_ell(-0.42, -0.05, 0.24, 0.2, n=18), "light"),
            _line([(-0.2, -0.35), (-0.2, -0.5)], 0.06), _line([(-0.95, -0.52), (u(0.5, 0.8), -0.48)], 0.05),
            _line([(-0.45, 0.3), (-0.45, 0.55)], 0.04), _line([(0.05, 0.3), (0.05, 0.55)], 0.04),
            _line([(-0.75, 0.55), (0.3, 0.55), (0.38, 0.48)], 0.05)]


def _hammer(u: U) -> list[Part]:
    hw = u(0.07, 0.11)
    return [_poly(_rect(-hw, -0.55, hw, 1.0), "second"),
            _poly([(-0.6, -0.9), (0.4, -0.9), (0.5, -0.8), (0.5, -0.55), (0.4, -0.45), (-0.6, -0.45)]),
            _poly([(-0.6, -0.9), (-0.85, -1.0), (-0.75, -0.6), (-0.6, -0.55)], "main")]


def _axe(u: U) -> list[Part]:
    bw = u(0.5, 0.75)
    edge = _ell(0.1, -0.6, bw, 0.42, -0.9, 0.9, n=14)
    return [_line([(0, 1.0), (0.05, 0.2), (0, -0.9)], 0.14, "second"),
            _poly(np.vstack([[(0.0, -0.78)], edge, [(0.0, -0.45)]]))]


def _wrench(u: U) -> list[Part]:
    jaw = u(0.12, 0.16)
    return [_poly(_rect(-0.1, -0.55, 0.1, 0.65)),
            _poly([(-0.32, -0.5), (-0.32, -1.0), (-jaw, -1.0), (-jaw, -0.75), (jaw, -0.75), (jaw, -1.0),
                   (0.32, -1.0), (0.32, -0.5)]),
            _ring(0, 0.8, 0.2, 0.12, "main")]


def _saw(u: U) -> list[Part]:
    n = int(u(8, 12.99))
    xs = np.linspace(0.5, -0.9, 2 * n + 1)
    low = np.where(np.arange(2 * n + 1) % 2 == 0, 0.2, 0.3) + np.linspace(0, -0.15, 2 * n + 1)
    blade = np.vstack([[(-0.9, -0.1), (0.5, -0.35)], np.stack([xs, low], 1)])
    return [_poly(blade), _poly([(0.45, -0.5), (1.0, -0.55), (1.0, 0.35), (0.45, 0.3)], "second"),
            _poly(_ell(0.72, -0.08, 0.13, 0.22, n=16), "dark")]


def _screwdriver(u: U) -> list[Part]:
    hw = u(0.15, 0.22)
    return [_poly(_rect(-0.04, -0.95, 0.04, 0.05), "dark"), _poly([(-0.04, -0.95), (0, -1.0), (0.04, -0.95)], "dark"),
            _poly(np.vstack([_ell(0, 0.1, hw, 0.08, math.pi, 2 * math.pi, n=10),
                             _ell(0, 0.9, hw, 0.1, 0, math.pi, n=10)])),
            _line([(0, 0.25), (0, 0.8)], 0.03, "second")]


def _cup(u: U) -> list[Part]:
    t = u(0.35, 0.45)
    return [_poly(_ell(0, 0.68, 0.8, 0.12), "second"), _line(_ell(0.48, 0.02, 0.3, 0.28, -1.4, 1.4, n=14), 0.1, "main"),
            _poly([(-0.5, -0.6), (0.5, -0.6), (t, 0.62), (-t, 0.62)]), _poly(_ell(0, -0.6, 0.5, 0.1, n=20), "light")]


def _teapot(u: U) -> list[Part]:
    return [_line(_ell(-0.62, 0.05, 0.3, 0.32, 0.5 * math.pi, 1.5 * math.pi, n=14), 0.1, "second"),
            _poly([(0.45, 0.0), (0.95, -0.45), (1.0, -0.38), (0.55, 0.35)]),
            _poly(_ell(0, 0.12, u(0.6, 0.68), u(0.45, 0.55))), _poly(_ell(0, -0.38, 0.35, 0.09), "second"),
            _poly(_ell(0, -0.52, 0.09, 0.08, n=12), "dark")]


def _pan(u: U) -> list[Part]:
    r = u(0.5, 0.62)
    return [_poly(_rect(-0.3 + r - 0.1, -0.07, 1.0, 0.07), "second"), _poly(_ell(-0.35, 0, r, r, n=36), "dark"),
            _poly(_ell(-0.35, 0, r - 0.08, r - 0.08, n=36))]


def _bottle(u: U) -> list[Part]:
    w, nk = u(0.25, 0.34), u(0.08, 0.13)
    sh = u(-0.3, -0.1)
    return [_poly([(-w, 0.95), (-w, sh), (-nk, sh - 0.3), (-nk, -0.85), (nk, -0.85), (nk, sh - 0.3), (w, sh),
                   (w, 0.95)]),
            _poly(_rect(-nk - 0.02, -1.0, nk + 0.02, -0.85), "accent"), _poly(_rect(-w, 0.15, w, 0.55), "light")]


def _spoon(u: U) -> list[Part]:
    return [_line([(0, -0.3), (0.02, 0.4), (0, 1.0)], u(0.08, 0.12), "main"),
            _poly(_ell(0, -0.62, u(0.22, 0.3), 0.36))]


def _chair(u: U) -> list[Part]:
    back = u(-0.95, -0.7)
    return [_line([(-0.38, 0.2), (-0.45, 0.95)], 0.07, "second"), _line([(0.38, 0.2), (0.45, 0.95)], 0.07, "second"),
            _poly([(-0.45, back), (-0.3, back), (-0.3, 0.05), (-0.45, 0.05)]),
            _poly(_rect(-0.45, 0.05, 0.48, 0.2)), _line([(-0.38, -0.55), (-0.38, -0.25)], 0.03, "dark")]


def _table(u: U) -> list[Part]:
    t = u(-0.35, -0.15)
    return [_poly(_rect(-0.85, t + 0.1, -0.7, 0.9), "second"), _poly(_rect(0.7, t + 0.1, 0.85, 0.9), "second"),
            _poly(_rect(-0.8, t + 0.1, 0.8, t + 0.25), "second"), _poly(_rect(-1.0, t - 0.05, 1.0, t + 0.1))]


def _bed(u: U) -> list[Part]:
    return [_poly(_rect(-0.95, 0.4, -0.85, 0.65), "dark"), _poly(_rect(0.85, 0.4, 0.95, 0.65), "dark"),
            _poly(_rect(-0.95, 0.05, 1.0, 0.42)), _poly(_rect(-0.88, -0.12, 1.0, 0.06), "light"),
            _poly(_rect(-1.0, u(-0.75, -0.55), -0.85, 0.45), "second"),
            _poly(_ell(-0.62, -0.2, 0.2, 0.09, n=16), "light"), _poly(_rect(0.0, -0.16, 1.0, 0.08), "second")]


def _lamp(u: U) -> list[Part]:
    wt, wb = u(0.15, 0.3), u(0.45, 0.6)
    return [_line([(0, -0.35), (0, 0.82)], 0.06), _poly(_ell(0, 0.86, 0.4, 0.1, n=20), "second"),
            _poly([(-wt, -0.92), (wt, -0.92), (wb, -0.3), (-wb, -0.3)])]


def _bookshelf(u: U) -> list[Part]:
    parts = [_poly(_rect(-0.62, -0.95, 0.62, 0.95), "second"), _poly(_rect(-0.54, -0.88, 0.54, 0.88), "dark")]
    rows = (-0.88, -0.3, 0.3, 0.88)
    for i in range(3):
        y0, y1 = rows[i], rows[i + 1] - 0.06
        x, end = -0.54, -0.54 + 1.08 * u(0.35, 0.8)  # a partly filled shelf
        k = 0
        while x < end:
            w = u(0.12, 0.22)
            top = y0 + u(0.05, 0.2)
            parts.append(_poly(_rect(x, top, x + w, y1), ("main", "accent", "light")[k % 3]))
            x += w + 0.01
            k += 1
        parts.append(_poly(_rect(-0.56, y1, 0.56, y1 + 0.06), "second"))
    return parts


def _fish(u: U) -> list[Part]:
    ry = u(0.3, 0.42)
    return [_poly([(0.45, 0), (1.0, -u(0.3, 0.5)), (0.9, 0), (1.0, u(0.3, 0.5))], "second"),
            _poly([(-0.3, -ry + 0.05), (0.0, -ry - 0.25), (0.25, -ry + 0.08)], "second"),
            _poly(_ell(-0.1, 0, 0.68, ry, n=32)), _line(_ell(-0.45, 0, 0.15, 0.7 * ry, -1.2, 1.2, n=10), 0.03),
            _poly(_ell(-0.58, -0.08, 0.06, 0.06, n=10), "dark")]


def _bird(u: U) -> list[Part]:
    return [_line([(-0.1, 0.4), (-0.15, 0.85)], 0.04), _line([(0.15, 0.4), (0.12, 0.85)], 0.04),
            _poly([(0.45, 0.0), (1.0, -u(0.1, 0.35)), (0.95, 0.2)], "second"),
            _poly(_ell(0, 0.1, 0.58, 0.35)), _poly(_ell(-0.55, -0.32, 0.25, 0.24, n=20)),
            _poly([(-0.76, -0.37), (-1.0, -0.28), (-0.76, -0.22)], "accent"),
            _poly([(-0.2, 0.0), (0.55, -0.05), (0.3, 0.25)], "second"),
            _poly(_ell(-0.6, -0.38, 0.05, 0.05, n=10), "dark")]


def _snail(u: U) -> list[Part]:
    t = np.linspace(0, 3.2 * math.pi, 40)
    r = 0.45 * (1 - t / (3.6 * math.pi))
    spiral = np.stack([0.1 + r * np.cos(-t), -0.12 + r * np.sin(-t)], 1)
    return [_line([(-0.75, 0.1), (-0.9, -0.4)], 0.04), _line([(-0.62, 0.1), (-0.65, -0.42)], 0.04),
            _poly([(-0.95, 0.45), (0.85, 0.45), (0.75, 0.3), (-0.55, 0.25), (-0.7, 0.0), (-0.95, 0.1)], "second"),
            _poly(_ell(0.1, -0.12, u(0.45, 0.55), 0.5, n=32)), _line(spiral, 0.05)]


def _turtle(u: U) -> list[Part]:
    parts = [_poly(_ell(-0.45, 0.32, 0.14, 0.2, n=12), "second"), _poly(_ell(0.4, 0.32, 0.14, 0.2, n=12), "second"),
             _poly([(-0.7, 0.2), (-1.0, 0.3), (-0.7, 0.3)], "second"),
             _poly(_ell(0.82, 0.02, 0.2, 0.15, n=16), "second"),
             _poly(_ell(0, 0.25, u(0.62, 0.72), 0.62, math.pi, 2 * math.pi, n=24)),
             _poly(_rect(-0.7, 0.22, 0.7, 0.3), "second")]
    for x in (-0.35, 0.0, 0.35):
        parts.append(_line([(x - 0.12, -0.05), (x, -0.2), (x + 0.12, -0.05), (x, 0.1), (x - 0.12, -0.05)], 0.03))
    parts.append(_poly(_ell(0.9, -0.02, 0.03, 0.03, n=8), "dark"))
    return parts


def _spider(u: U) -> list[Part]:
    parts = []
    for side in (-1, 1):
        for i, a in enumerate((-0.5, -0.15, 0.2, 0.55)):
            knee = (side * 0.55, a - 0.3 + u(-0.05, 0.05))
            foot = (side * u(0.85, 1.0), a + 0.35)
            parts.append(_line([(side * 0.1, 0.1 + a * 0.3), knee, foot], 0.05))
    parts += [_poly(_ell(0, 0.3, u(0.28, 0.34), 0.38)), _poly(_ell(0, -0.2, 0.2, 0.18, n=20)),
              _poly(_ell(-0.07, -0.25, 0.04, 0.04, n=8), "light"), _poly(_ell(0.07, -0.25, 0.04, 0.04, n=8), "light")]
    return parts


def _tree(u: U) -> list[Part]:
    parts = [_poly([(-0.14, 1.0), (-0.09, 0.0), (0.09, 0.0), (0.14, 1.0)], "second")]
    for _ in range(int(u(3, 5.99))):
        parts.append(_poly(_ell(u(-0.4, 0.4), u(-0.6, -0.1), u(0.3, 0.45), u(0.28, 0.4), n=24)))
    return parts


def _flower(u: U) -> list[Part]:
    cy = -0.35
    parts = [_line([(0, cy), (0.05, 0.3), (0, 1.0)], 0.06, "second"),
             _poly(_ell(0.25, 0.45, 0.22, 0.08, rot=-0.5, n=14), "second")]
    n = int(u(5, 8.99))
    L = u(0.3, 0.42)
    for i in range(n):
        a = 2 * math.pi * i / n
        parts.append(_poly(_ell(L * math.cos(a), cy + L * math.sin(a), L * 0.95, 0.16, rot=a, n=16)))
    parts.append(_poly(_ell(0, cy, 0.17, 0.17, n=16), "accent"))
    return parts


def _cactus(u: U) -> list[Part]:
    w = u(0.16, 0.22)
    arm_l, arm_r = u(-0.35, 0.0), u(-0.4, -0.05)
    return [_poly(np.vstack([_ell(-0.55, arm_l - 0.1, 0.1, 0.1, math.pi, 2 * math.pi, n=8),
                             [(-0.45, arm_l + 0.15), (-w, arm_l + 0.15), (-w, arm_l + 0.32), (-0.65, arm_l + 0.32)]])),
            _poly(np.vstack([_ell(0.55, arm_r - 0.1, 0.1, 0.1, math.pi, 2 * math.pi, n=8),
                             [(0.65, arm_r + 0.32), (w, arm_r + 0.32), (w, arm_r + 0.15), (0.45, arm_r + 0.15)]])),
            _poly(_rect(-0.65, arm_l - 0.1, -0.45, arm_l + 0.3)), _poly(_rect(0.45, arm_r - 0.1, 0.65, arm_r + 0.3)),
            _poly(np.vstack([_ell(0, -0.75, w, w, math.pi, 2 * math.pi, n=12), [(w, 0.6), (-w, 0.6)]])),
            _poly([(-0.4, 0.55), (0.4, 0.55), (0.3, 1.0), (-0.3, 1.0)], "second")]


def _mushroom(u: U) -> list[Part]:
    rx = u(0.7, 0.95)
    parts = [_poly([(-0.18, -0.1), (0.18, -0.1), (0.24, 0.85), (-0.24, 0.85)], "light"),
             _poly(np.vstack([_ell(0, 0.0, rx, u(0.6, 0.8), math.pi, 2 * math.pi, n=28), [(rx, 0.0)]]))]
    for x, y in ((-0.4, -0.25), (0.1, -0.45), (0.45, -0.18), (-0.05, -0.12)):
        parts.append(_poly(_ell(x * rx, y, 0.1, 0.07, n=12), "light"))
    return parts


def _leaf(u: U) -> list[Part]:
    ry = u(0.3, 0.45)
    t = np.linspace(0, math.pi, 16)
    upper = np.stack([-0.85 * np.cos(t), -ry * np.sin(t) ** 0.8], 1)
    lower = np.stack([0.85 * np.cos(t), ry * np.sin(t) ** 0.8], 1)
    parts = [_line([(0.85, 0), (1.0, 0.1)], 0.05, "second"), _poly(np.vstack([upper, lower])),
             _line([(-0.85, 0), (0.85, 0)], 0.03, "second")]
    for x in (-0.45, -0.1, 0.25):
        parts += [_line([(x + 0.2, 0), (x, -0.6 * ry)], 0.02, "second"),
                  _line([(x + 0.2, 0), (x, 0.6 * ry)], 0.02, "second")]
    return parts


def _house(u: U) -> list[Part]:
    apex = u(-0.95, -0.7)
    return [_poly(_rect(0.35, apex + 0.2, 0.5, -0.3), "dark"), _poly(_rect(-0.7, -0.1, 0.7, 0.9)),
            _poly([(-0.9, -0.05), (0, apex), (0.9, -0.05)], "second"), _poly(_rect(-0.15, 0.35, 0.15, 0.9), "dark"),
            _poly(_rect(-0.55, 0.1, -0.3, 0.35), "light"), _poly(_rect(0.3, 0.1, 0.55, 0.35), "light")]


def _castle(u: U) -> list[Part]:
    parts = []

    def battlement(x0: float, x1: float, y: float, n: int, tone: str) -> None:
        w = (x1 - x0) / (2 * n - 1)
        for i in range(n):
            parts.append(_poly(_rect(x0 + 2 * i * w, y - 0.12, x0 + (2 * i + 1) * w, y + 0.01), tone))

    ty = u(-0.8, -0.6)
    battlement(-0.6, 0.6, -0.3, 4, "main")
    parts.append(_poly(_rect(-0.6, -0.3, 0.6, 0.9)))
    for x0 in (-0.95, 0.55):
        battlement(x0, x0 + 0.4, ty, 2, "second")
        parts.append(_poly(_rect(x0, ty, x0 + 0.4, 0.9), "second"))
        parts.append(_poly(_rect(x0 + 0.14, ty + 0.25, x0 + 0.26, ty + 0.45), "dark"))
    gate = np.vstack([_ell(0, 0.45, 0.22, 0.22, math.pi, 2 * math.pi, n=12), [(0.22, 0.9), (-0.22, 0.9)]])
    parts.append(_poly(gate, "dark"))
    return parts


def _tent(u: U) -> list[Part]:
    apex = u(-0.85, -0.6)
    return [_line([(0, apex), (0, apex - 0.2)], 0.04), _poly([(-1.0, 0.8), (0, apex), (1.0, 0.8)]),
            _poly([(-0.28, 0.8), (0, u(0.0, 0.3)), (0.28, 0.8)], "dark"),
            _line([(0, apex), (-0.55, 0.8)], 0.03, "second"), _line([(0, apex), (0.55, 0.8)], 0.03, "second")]


def _lighthouse(u: U) -> list[Part]:
    wb, wt = u(0.3, 0.38), u(0.15, 0.22)

    def x_at(y: float) -> float:
        return wt + (wb - wt) * (y + 0.45) / 1.4

    parts = [_poly([(-wb, 0.95), (wb, 0.95), (wt, -0.45), (-wt, -0.45)])]
    for y0, y1 in ((0.45, 0.7), (-0.05, 0.2)):
        parts.append(_poly([(-x_at(y0), y0), (x_at(y0), y0), (x_at(y1), y1), (-x_at(y1), y1)], "second"))
    parts += [_poly(_rect(-wt + 0.02, -0.72, wt - 0.02, -0.45), "light"),
              _line([(-wt - 0.1, -0.45), (wt + 0.1, -0.45)], 0.05),
              _poly([(-wt - 0.05, -0.72), (0, -1.0), (wt + 0.05, -0.72)], "dark"),
              _poly(_rect(-0.08, 0.65, 0.08, 0.95), "dark")]
    return parts


def _windmill(u: U) -> list[Part]:
    phase = u(0, math.pi / 2)
    parts = [_poly([(-0.32, 0.95), (0.32, 0.95), (0.17, -0.3), (-0.17, -0.3)]),
             _poly([(-0.22, -0.3), (0, -0.55), (0.22, -0.3)], "dark"), _poly(_rect(-0.08, 0.7, 0.08, 0.95), "dark")]
    hub = (0, -0.4)
    for i in range(4):
        a = phase + i * math.pi / 2
        parts.append(_poly(_rot(_rect(0.08, -0.08, 0.65, 0.08), a) + hub, "second"))
    parts.append(_poly(_ell(*hub, 0.07, 0.07, n=12), "dark"))
    return parts


def _guitar(u: U) -> list[Part]:
    r1, r2 = u(0.4, 0.48), u(0.28, 0.35)
    return [_poly(_rect(-0.07, -0.95, 0.07, -0.1), "second"), _poly(_rect(-0.12, -1.0, 0.12, -0.82), "second"),
            _poly(_ell(0, 0.52, r1, r1 * 0.95, n=28)), _poly(_ell(0, 0.0, r2, r2 * 0.9, n=24)),
            _poly(_ell(0, 0.22, 0.11, 0.11, n=16), "dark"), _poly(_rect(-0.18, 0.62, 0.18, 0.68), "dark"),
            _line([(0, -0.9), (0, 0.65)], 0.015, "light")]


def _drum(u: U) -> list[Part]:
    h = u(0.3, 0.5)
    parts = [_line([(-0.55, -0.9), (0.2, -0.45)], 0.05, "second"), _line([(0.55, -0.9), (-0.2, -0.45)], 0.05, "second"),
             _poly(np.vstack([[(-0.65, -0.25)], _ell(0, h, 0.65, 0.15, 0, math.pi, n=16)[::-1], [(0.65, -0.25)]])),
             _poly(_ell(0, -0.25, 0.65, 0.15, n=24), "light")]
    xs = np.linspace(-0.6, 0.6, 7)
    zig = [(x, -0.15 if i % 2 == 0 else h - 0.05) for i, x in enumerate(xs)]
    parts.append(_line(zig, 0.03))
    return parts


def _trumpet(u: U) -> list[Part]:
    flare = u(0.28, 0.4)
    return [_line([(-0.4, 0.0), (-0.4, 0.3), (0.3, 0.3), (0.3, 0.0)], 0.06),
            _poly(_rect(-0.85, -0.05, 0.4, 0.05)), _poly([(0.3, -0.05), (1.0, -flare), (1.0, flare), (0.3, 0.05)]),
            _poly(_rect(-1.0, -0.08, -0.85, 0.08), "dark"),
            *[_poly(_rect(x, -0.3, x + 0.08, -0.05), "second") for x in (-0.3, -0.12, 0.06)]]


def _bell(u: U) -> list[Part]:
    w = u(0.65, 0.8)
    t = np.linspace(0, 1, 12)
    side = np.stack([0.25 + (w - 0.25) * t ** 2.2, -0.55 + 1.2 * t], 1)
    body = np.vstack([side[::-1] * (-1, 1), side])
    return [_ring(0, -0.7, 0.14, 0.06), _poly(_ell(0, 0.75, 0.12, 0.12, n=12), "dark"), _poly(body),
            _poly(_ell(0, -0.55, 0.25, 0.08, n=16)), _poly(_rect(-w, 0.6, w, 0.68), "second")]


def _harp(u: U) -> list[Part]:
    top = u(-0.55, -0.35)
    neck = np.stack([np.linspace(-0.6, 0.7, 12), top - 0.35 * np.sin(np.linspace(0, math.pi, 12))], 1)
    parts = []
    for i in range(1, 8):
        f = i / 8
        x = -0.6 + 1.3 * f
        y_top = float(np.interp(x, neck[:, 0], neck[:, 1]))
        y_bot = 0.9 + (top - 0.9) * f
        parts.append(_line([(x, y_top), (x, y_bot)], 0.02, "dark"))
    parts += [_line(neck, 0.1, "second"), _line([(-0.6, top), (-0.6, 0.95)], 0.12, "second"),
              _line([(-0.6, 0.9), (0.72, top)], 0.16)]
    return parts


def _shirt(u: U) -> list[Part]:
    sl = u(-0.1, 0.1)
    return [_poly([(-0.35, -0.78), (-0.1, -0.68), (0.1, -0.68), (0.35, -0.78), (0.95, -0.38 + sl), (0.75, -0.05 + sl),
                   (0.45, -0.25), (0.45, 0.9), (-0.45, 0.9), (-0.45, -0.25), (-0.75, -0.05 + sl), (-0.95, -0.38 + sl)]),
            _poly([(-0.2, -0.74), (0, -0.45), (0.2, -0.74), (0.1, -0.68), (0, -0.58), (-0.1, -0.68)], "second"),
            *[_poly(_ell(0, y, 0.035, 0.035, n=8), "dark") for y in (-0.25, 0.05, 0.35, 0.65)]]


def _trousers(u: U) -> list[Part]:
    sp = u(0.05, 0.3)
    return [_poly([(-0.5, -0.8), (0.5, -0.8), (0.55 + sp, 0.95), (0.12 + sp * 0.5, 0.95), (0, -0.2),
                   (-0.12 - sp * 0.5, 0.95), (-0.55 - sp, 0.95)]),
            _poly(_rect(-0.52, -0.95, 0.52, -0.78), "second"),
            _line([(-0.3, -0.7), (-0.35 - sp * 0.7, 0.9)], 0.02, "dark"),
            _line([(0.3, -0.7), (0.35 + sp * 0.7, 0.9)], 0.02, "dark")]


def _hat(u: U) -> list[Part]:
    top = u(-0.75, -0.45)
    return [_poly(_ell(0, 0.25, u(0.85, 1.0), 0.2, n=32)),
            _poly(np.vstack([_ell(0, top + 0.1, 0.45, 0.12, math.pi, 2 * math.pi, n=12), [(0.5, 0.2), (-0.5, 0.2)]])),
            _poly(_rect(-0.48, 0.0, 0.48, 0.13), "second")]


def _shoe(u: U) -> list[Part]:
    ank = u(-0.6, -0.35)
    parts = [_poly([(-0.9, 0.45), (-0.9, ank), (-0.4, ank), (-0.25, -0.1), (0.55, 0.05), (0.95, 0.25), (0.95, 0.45)]),
             _poly(_rect(-0.92, 0.45, 0.97, 0.62), "dark"), _poly(_ell(-0.65, ank + 0.02, 0.25, 0.06, n=12), "second")]
    for i in range(3):
        x = -0.25 + 0.2 * i
        parts.append(_line([(x - 0.08, -0.1 + 0.05 * i), (x + 0.08, 0.0 + 0.05 * i)], 0.03, "light"))
    return parts


def _glasses(u: U) -> list[Part]:
    r = u(0.3, 0.38)
    return [_line([(-0.45 - r, -0.05), (-1.0, -0.25)], 0.05), _line([(0.45 + r, -0.05), (1.0, -0.25)], 0.05),
            _poly(_ell(-0.45, 0, r, r * 0.85, n=24), "light"), _poly(_ell(0.45, 0, r, r * 0.85, n=24), "light"),
            _ring(-0.45, 0, r, 0.07, "main", ry=r * 0.85), _ring(0.45, 0, r, 0.07, "main", ry=r * 0.85),
            _line(_ell(0, 0.0, 0.15, 0.1, math.pi, 2 * math.pi, n=8), 0.05, "main")]


HIERARCHY: dict[str, dict[str, Callable[[U], list[Part]]]] = {
    "vehicle": {"car": _car, "bus": _bus, "bicycle": _bicycle, "cart": _cart, "tractor": _tractor},
    "craft": {"airplane": _airplane, "rocket": _rocket, "sailboat": _sailboat, "submarine": _submarine,
              "helicopter": _helicopter},
    "tool": {"hammer": _hammer, "axe": _axe, "wrench": _wrench, "saw": _saw, "screwdriver": _screwdriver},
    "kitchen": {"cup": _cup, "teapot": _teapot, "pan": _pan, "bottle": _bottle, "spoon": _spoon},
    "furniture": {"chair": _chair, "table": _table, "bed": _bed, "lamp": _lamp, "bookshelf": _bookshelf},
    "animal": {"fish": _fish, "bird": _bird, "snail": _snail, "turtle": _turtle, "spider": _spider},
    "plant": {"tree": _tree, "flower": _flower, "cactus": _cactus, "mushroom": _mushroom, "leaf": _leaf},
    "building": {"house": _house, "castle": _castle, "tent": _tent, "lighthouse": _lighthouse,
                 "windmill": _windmill},
    "instrument": {"guitar": _guitar, "drum": _drum, "trumpet": _trumpet, "bell": _bell, "harp": _harp},
    "clothing": {"shirt": _shirt, "trousers": _trousers, "hat": _hat, "shoe": _shoe, "glasses": _glasses},
}
CATEGORIES: tuple[str, ...] = tuple(f"{sup}/{name}" for sup, cats in HIERARCHY.items() for name in cats)
_BUILDERS = {f"{sup}/{name}": fn for sup, cats in HIERARCHY.items() for name, fn in cats.items()}


def super_category(name: str) -> str:
    return name.split("/", 1)[0]


def split_classes(seed: int) -> tuple[list[str], list[str]]:
    """``(seen, unseen)`` in :data:`CATEGORIES` order: one unseen category per super-category."""
    rng = np.random.default_rng([seed, GENERATOR_VERSION, 999])
    unseen = {f"{sup}/{list(cats)[int(rng.integers(len(cats)))]}" for sup, cats in HIERARCHY.items()}
    return [c for c in CATEGORIES if c not in unseen], [c for c in CATEGORIES if c in unseen]


def path_similarity(a: str, b: str) -> float:
    """``1 / (1 + path length)`` in the tree root -> super-category -> category."""
    if a == b:
        return 1.0
    return 1.0 / (1 + (2 if super_category(a) == super_category(b) else 4))


def class_id_mask(classes: list[str], teacher: list[str], threshold: float = 0.2) -> np.ndarray:
    """float32 ``(len(classes), len(teacher))``: 1 on identity, path similarity when ``> threshold``, else 0."""
    m = np.array([[path_similarity(a, b) for b in teacher] for a in classes], np.float32)
    return np.where(m > threshold, m, 0).astype(np.float32)


# -- appearance --------------------------------------------------------------------------------------
def _hsv(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - math.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.array(rgb, np.float32) * 255


def _palette(rng: np.random.Generator) -> dict[str, np.ndarray]:
    h = rng.uniform()
    return {"main": _hsv(h, rng.uniform(0.35, 0.95), rng.uniform(0.45, 0.95)),
            "second": _hsv((h + rng.uniform(0.2, 0.8)) % 1, rng.uniform(0.2, 0.8), rng.uniform(0.3, 0.85)),
            "dark": _hsv(rng.uniform(), rng.uniform(0, 0.4), rng.uniform(0.08, 0.25)),
            "light": _hsv(rng.uniform(0.45, 0.65), rng.uniform(0.05, 0.3), rng.uniform(0.85, 0.98)),
            "accent": _hsv(rng.uniform(), rng.uniform(0.7, 1.0), rng.uniform(0.75, 1.0))}


def _grid(side: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    return xx / side, yy / side


def _smooth_noise(rng: np.random.Generator, side: int, cells: int) -> np.ndarray:
    """Values in about [0, 1], smooth at the scale ``side / cells`` (bilinear upsampling of a small grid)."""
    small = rng.uniform(0, 1, (cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(small, "F").resize((side, side), Image.BILINEAR))


def _texture(rng: np.random.Generator, kind: str, pal: dict[str, np.ndarray], side: int) -> np.ndarray:
    """``(side, side, 3)`` float fill of the ``main`` tone."""
    base = pal["main"]
    xx, yy = _grid(side)
    ang = rng.uniform(0, math.pi)
    along = xx * math.cos(ang) + yy * math.sin(ang)
    if kind == "gradient":
        t = np.clip((along - along.min()) / max(float(np.ptp(along)), 1e-6), 0, 1)[..., None]
        return base * (1 - t) + pal["second"] * t
    if kind == "stripes":
        period = rng.uniform(0.06, 0.14)
        m = (np.sin(2 * math.pi * along / period) > rng.uniform(-0.3, 0.3))[..., None]
        other = base * rng.uniform(0.35, 0.6) if rng.random() < 0.5 else pal["second"]
        return np.where(m, other, base)
    if kind == "spots":
        img = Image.new("L", (side, side), 0)
        d = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(12, 30))):
            x, y, r = rng.uniform(0, side), rng.uniform(0, side), rng.uniform(0.02, 0.06) * side
            d.ellipse([x - r, y - r, x + r, y + r], fill=255)
        m = (np.asarray(img) > 127)[..., None]
        return np.where(m, pal["accent"] if rng.random() < 0.5 else base * 0.45, base)
    if kind == "noise":
        n = _smooth_noise(rng, side, int(rng.integers(6, 14)))[..., None]
        return base * (0.6 + 0.7 * n)
    return np.broadcast_to(base, (side, side, 3)).copy()  # solid


TEXTURE_KINDS = ("solid", "gradient", "stripes", "spots", "noise")
BACKGROUND_KINDS = ("plain", "gradient", "clutter")


def _background(rng: np.random.Generator, kind: str, side: int) -> Image.Image:
    def colour() -> np.ndarray:
        return _hsv(rng.uniform(), rng.uniform(0.1, 0.7), rng.uniform(0.15, 0.82))

    if kind == "plain":
        return Image.new("RGB", (side, side), tuple(int(c) for c in colour()))
    if kind == "gradient":
        xx, yy = _grid(side)
        ang = rng.uniform(0, 2 * math.pi)
        t = np.clip(0.5 + (xx - 0.5) * math.cos(ang) + (yy - 0.5) * math.sin(ang), 0, 1)[..., None]
        return Image.fromarray((colour() * (1 - t) + colour() * t).astype(np.uint8))
    img = Image.new("RGB", (side, side), tuple(int(c) for c in colour()))
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(6, 14))):
        x0, y0 = rng.uniform(-0.2, 1.0, 2) * side
        w, h = rng.uniform(0.1, 0.5, 2) * side
        fill = tuple(int(c) for c in colour())
        shape = rng.integers(3)
        if shape == 0:
            d.ellipse([x0, y0, x0 + w, y0 + h], fill=fill)
        elif shape == 1:
            d.rectangle([x0, y0, x0 + w, y0 + h], fill=fill)
        else:
            d.line([(x0, y0), (x0 + w * rng.choice([-1, 1]), y0 + h)], fill=fill, width=int(rng.integers(2, 8)))
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(1.5, 5.0)))


# -- geometry of one instance ------------------------------------------------------------------------
@dataclass
class _Placed:
    """A part in supersampled pixel coordinates."""

    pts: np.ndarray
    tone: str
    width: float
    closed: bool


def _place(rng: np.random.Generator, parts: list[Part], side: int) -> tuple[list[_Placed], dict[str, str]]:
    mirror = rng.random() < 0.5
    theta = rng.uniform(-0.45, 0.45)
    scale = rng.uniform(0.3, 0.42) * side
    aspect = rng.uniform(0.88, 1.12)
    cx, cy = (0.5 + rng.uniform(-0.08, 0.08, 2)) * side
    c, s = math.cos(theta), math.sin(theta)
    out = []
    for p in parts:
        xy = p.pts * ((-1.0 if mirror else 1.0) * aspect, 1.0 / aspect) * scale
        xy = np.stack([c * xy[:, 0] - s * xy[:, 1] + cx, s * xy[:, 0] + c * xy[:, 1] + cy], 1)
        out.append(_Placed(xy, p.tone, p.width * scale, p.closed))
    return out, {"mirror": str(mirror), "rotation": f"{math.degrees(theta):.1f}", "scale": f"{scale / side:.2f}"}


def _flat(pts: np.ndarray) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in pts]


def _paint(draw: ImageDraw.ImageDraw, p: _Placed, fill: int | tuple[int, ...]) -> None:
    if p.width <= 0:
        draw.polygon(_flat(p.pts), fill=fill)
        return
    pts = np.vstack([p.pts, p.pts[:1]]) if p.closed else p.pts
    w = max(1, int(round(p.width)))
    draw.line(_flat(pts), fill=fill, width=w, joint="curve")
    if not p.closed and w > 3:  # round caps
        for x, y in (pts[0], pts[-1]):
            draw.ellipse([x - w / 2, y - w / 2, x + w / 2, y + w / 2], fill=fill)


def _id_map(placed: list[_Placed], side: int) -> np.ndarray:
    """``uint8 (side, side)``: 1 + index of the part visible at each pixel, 0 for background."""
    img = Image.new("L", (side, side), 0)
    d = ImageDraw.Draw(img)
    for k, p in enumerate(placed):
        _paint(d, p, k + 1)
    return np.asarray(img)


def _object_layer(rng: np.random.Generator, placed: list[_Placed], ids: np.ndarray, side: int,
                  texture: str) -> np.ndarray:
    """``(side, side, 3)`` float colours of the object (undefined where ``ids == 0``)."""
    pal = _palette(rng)
    fills = {t: np.broadcast_to(pal[t], (side, side, 3)) for t in TONES}
    fills["main"] = _texture(rng, texture, pal, side)
    shade_ang = rng.uniform(0, 2 * math.pi)
    xx, yy = _grid(side)
    light = 1.0 + rng.uniform(0.1, 0.3) * ((xx - 0.5) * math.cos(shade_ang) + (yy - 0.5) * math.sin(shade_ang))
    layer = np.zeros((side, side, 3), np.float32)
    for k, p in enumerate(placed):
        m = ids == k + 1
        layer[m] = fills[p.tone][m]
    return layer * light[..., None]


def _reduce(arr: np.ndarray, size: int) -> np.ndarray:
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return np.asarray(img.resize((size, size), Image.LANCZOS))


# -- sketches ----------------------------------------------------------------------------------------
def _outlines(p: _Placed, thin: float) -> list[tuple[np.ndarray, bool]]:
    """The contours a person would draw for a part: ``[(points, closed)]``."""
    if p.width <= 0:
        return [(p.pts, True)]
    if p.width < thin:
        return [(p.pts, p.closed)]
    pts = p.pts
    if p.closed:
        tang = np.roll(pts, -1, 0) - np.roll(pts, 1, 0)
    else:
        tang = np.gradient(pts, axis=0)
    tang /= np.maximum(np.linalg.norm(tang, axis=1, keepdims=True), 1e-9)
    normal = np.stack([-tang[:, 1], tang[:, 0]], 1) * p.width / 2
    if p.closed:
        return [(pts + normal, True), (pts - normal, True)]
    return [(np.vstack([pts + normal, (pts - normal)[::-1]]), True)]


def _resample(pts: np.ndarray, closed: bool, step: float) -> np.ndarray:
    if closed:
        pts = np.vstack([pts, pts[:1]])
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    arc = np.concatenate([[0], np.cumsum(seg)])
    if arc[-1] < 1e-6:
        return pts[:1]
    t = np.linspace(0, arc[-1], max(2, int(arc[-1] / step) + 1))
    return np.stack([np.interp(t, arc, pts[:, 0]), np.interp(t, arc, pts[:, 1])], 1)


_STENCIL = np.array([(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)])


def _visible(pts: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Whether part ``k`` shows within 2 px of each point (hidden-line removal)."""
    side = ids.shape[0]
    iy = np.clip(np.round(pts[:, 1]).astype(int)[:, None] + _STENCIL[:, 0], 0, side - 1)
    ix = np.clip(np.round(pts[:, 0]).astype(int)[:, None] + _STENCIL[:, 1], 0, side - 1)
    inside = (pts[:, 0] >= 0) & (pts[:, 0] < side) & (pts[:, 1] >= 0) & (pts[:, 1] < side)
    return (ids[iy, ix] == k + 1).any(1) & inside


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` index ranges of the True runs."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def _stroke_sketch(rng: np.random.Generator, placed: list[_Placed], ids: np.ndarray, side: int) -> np.ndarray:
    """Dark, jittery hand strokes along the visible part outlines; ``uint8 (side, side)`` grey."""
    img = Image.new("L", (side, side), 255)
    d = ImageDraw.Draw(img)
    # pen width: about one output pixel up to 80 px images, growing with the size beyond
    base_w = rng.uniform(0.9, 1.5) * SUPERSAMPLE * max(1.0, side / SUPERSAMPLE / 80)
    wobble = rng.uniform(0.004, 0.012) * side
    ink = int(rng.integers(0, 50))
    gap_p, over = rng.uniform(0.05, 0.25), rng.uniform(0.0, 0.03) * side
    step = side / 96
    for k, p in enumerate(placed):
        for contour, closed in _outlines(p, thin=0.03 * side):
            pts = _resample(contour, closed, step)
            if len(pts) < 2:
                continue
            if closed:  # start anywhere on a loop and run a little past the start (overshoot)
                start = int(rng.integers(len(pts) - 1))
                pts = np.vstack([pts[start:-1], pts[:start + 1]])
            vis = _visible(pts, ids, k)
            for a, b in _runs(vis):
                if b - a < 2:
                    continue
                seg = pts[a:b]
                n = len(seg)
                if rng.random() < gap_p and n > 12:  # a pen lift somewhere in the stroke
                    g = int(rng.integers(3, n - 6))
                    pieces = [seg[:g], seg[g + int(rng.integers(2, 5)):]]
                else:
                    pieces = [seg]
                for piece in pieces:
                    if len(piece) < 2:
                        continue
                    piece = piece.copy()
                    t0 = piece[1] - piece[0]
                    t1 = piece[-1] - piece[-2]
                    ext0 = over * rng.uniform(0, 1) / max(np.linalg.norm(t0), 1e-6)
                    ext1 = over * rng.uniform(0, 1) / max(np.linalg.norm(t1), 1e-6)
                    piece = np.vstack([piece[:1] - t0 * ext0, piece, piece[-1:] + t1 * ext1])
                    m = len(piece)
                    ctrl = max(2, m // 8 + 2)
                    knots = np.linspace(0, m - 1, ctrl)
                    jit = rng.normal(0, wobble, (ctrl, 2))
                    idx = np.arange(m)
                    disp = np.stack([np.interp(idx, knots, jit[:, 0]), np.interp(idx, knots, jit[:, 1])], 1)
                    piece = piece + disp
                    press = np.interp(np.arange(m), knots, rng.uniform(0.6, 1.3, ctrl))
                    for i in range(0, m - 1, 3):  # pressure changes along the stroke
                        chunk = piece[i:i + 4]
                        if len(chunk) >= 2:
                            w = max(1, int(round(base_w * press[i])))
                            d.line(_flat(chunk), fill=ink, width=w, joint="curve")
    return np.asarray(img)


def xdog(gray: np.ndarray, sigma: float, k: float = 1.6, tau: float = 0.98, eps: float = 0.0,
         phi: float = 40.0) -> np.ndarray:
    """XDoG lines of ``gray`` (float in [0, 1]): ``D = G_s - tau * G_ks``, white where ``D >= eps``,
    else ``1 + tanh(phi * (D - eps))``; float in [0, 1], dark lines on white."""
    g1 = gaussian_filter(gray, sigma)
    g2 = gaussian_filter(gray, sigma * k)
    dog = g1 - tau * g2
    return np.where(dog >= eps, 1.0, 1.0 + np.tanh(phi * (dog - eps))).clip(0, 1)


def _xdog_sketch(rng: np.random.Generator, layer: np.ndarray, ids: np.ndarray, size: int) -> np.ndarray:
    """XDoG of the object photographed on white, computed at 2x ``size``; ``uint8 (size, size)`` grey."""
    lum = np.clip(layer, 0, 255) @ np.array([0.299, 0.587, 0.114], np.float32) / 255
    # the object is toned into [0.1, 0.8] so that even a pale part stands out from the white paper
    on_white = np.where(ids > 0, 0.1 + 0.7 * lum, 1.0)
    work = 2 * size
    gray = np.asarray(Image.fromarray((on_white * 255).astype(np.uint8)).resize((work, work), Image.LANCZOS),
                      np.float32) / 255
    lines = xdog(gray, sigma=rng.uniform(0.7, 1.1), k=1.6, tau=rng.uniform(0.97, 0.99),
                 eps=rng.uniform(-0.015, 0.005), phi=rng.uniform(25, 60))
    out = np.asarray(Image.fromarray((lines * 255).astype(np.uint8)).resize((size, size), Image.LANCZOS), np.float32)
    return (255 * (out / 255) ** 2).astype(np.uint8)  # lines thinned by the reduction get their ink back


# -- one instance ------------------------------------------------------------------------------------
def draw(rng: np.random.Generator, category: str, size: int, sketch: str | None = "stroke") -> Drawing:
    """One instance of ``category``: photo (uint8 ``(size, size, 3)``), object mask (bool ``(size,
    size)``) and, unless ``sketch`` is None, its paired sketch in that style (uint8 RGB)."""
    if category not in _BUILDERS:
        raise ConfigError(f"unknown sketch category {category!r}")
    if sketch is not None and sketch not in SKETCH_STYLES:
        raise ConfigError(f"sketch style must be one of {', '.join(SKETCH_STYLES)} (got {sketch!r})")
    side = size * SUPERSAMPLE
    parts = _BUILDERS[category](lambda a, b: float(rng.uniform(a, b)))
    placed, attrs = _place(rng, parts, side)
    ids = _id_map(placed, side)
    texture = str(rng.choice(TEXTURE_KINDS))
    background = str(rng.choice(BACKGROUND_KINDS))
    layer = _object_layer(rng, placed, ids, side, texture)
    bg = np.asarray(_background(rng, background, side), np.float32)
    photo = np.where((ids > 0)[..., None], layer, bg)
    photo = _reduce(photo, size).astype(np.float32)
    photo = photo * rng.uniform(0.85, 1.1) + rng.uniform(-15, 15) + rng.normal(0, rng.uniform(0, 6), photo.shape)
    photo = np.clip(photo, 0, 255).astype(np.uint8)
    # a pixel belongs to the object when the object covers at least a quarter of it
    mask = np.asarray(Image.fromarray(((ids > 0) * 255).astype(np.uint8)).resize((size, size), Image.BOX)) >= 64
    attrs.update(texture=texture, background=background)
    out: np.ndarray | None = None
    if sketch == "stroke":
        grey = np.asarray(Image.fromarray(_stroke_sketch(rng, placed, ids, side)).resize((size, size), Image.LANCZOS))
        out = np.repeat(grey[..., None], 3, 2)
    elif sketch == "xdog":
        out = np.repeat(_xdog_sketch(rng, layer, ids, size)[..., None], 3, 2)
    return Drawing(photo, mask, out, sketch, attrs)


def instance_rng(seed: int, category: str, k: int) -> np.random.Generator:
    """The random stream of instance ``k`` of ``category`` (photo ``k`` and sketch ``k`` share it)."""
    return np.random.default_rng([seed, GENERATOR_VERSION, CATEGORIES.index(category), k])


def sketch_styles(seed: int, category: str, n: int) -> list[str]:
    """The style of each of ``n`` sketches of ``category``: half ``stroke``, half ``xdog``, shuffled."""
    rng = np.random.default_rng([seed, GENERATOR_VERSION, CATEGORIES.index(category), 1_000_003])
    styles = [SKETCH_STYLES[i % 2] for i in range(n)]
    return [styles[i] for i in rng.permutation(n)]


# -- the data set ------------------------------------------------------------------------------------
def ensure_sketch_dataset(root: str | os.PathLike) -> Path:
    """``root`` when it already holds an embedded sketch set (any parameters), else the default set drawn there."""
    root = Path(root)
    if not (root / META_FILE).is_file():
        make_sketch_dataset(root)
    return root


def list_file(modality: str, split: str) -> str:
    return f"{modality}_filelist_{split}.txt"


def _digest(root: Path, images: list[str]) -> str:
    h = hashlib.sha256()
    for name in [list_file(m, s) for s in LIST_SPLITS for m in MODALITIES] + [MASK_FILE] + images:
        h.update(name.encode())
        h.update((root / name).read_bytes())
    return h.hexdigest()


def _is_complete(root: Path) -> bool:
    return (root / MASK_FILE).is_file() and all((root / list_file(m, s)).is_file()
                                                for s in LIST_SPLITS for m in MODALITIES)


def make_sketch_dataset(out: str | os.PathLike, params: SketchParams | None = None, *, force: bool = False,
                        **overrides) -> SketchReport:
    """Generate (or return the cached) embedded sketch/photo set under ``out`` (see the module docstring).

    Keywords: ``seed``, ``size``, ``photos_per_class``, ``sketches_per_class``, ``val_per_class``.
    """
    params = params or SketchParams(**overrides)
    if params.size < 32:
        raise ConfigError(f"--size {params.size}: the sketch set needs at least 32 px")
    if params.val_per_class < 0:
        raise ConfigError("val_per_class must be >= 0")
    if min(params.photos_per_class, params.sketches_per_class) < params.val_per_class + 1:
        raise ConfigError(f"the sketch set needs more than val_per_class={params.val_per_class} photos and "
                          f"sketches per class (got {params.photos_per_class} photos, "
                          f"{params.sketches_per_class} sketches)")
    root = Path(out)
    meta_path = root / META_FILE
    wanted = {"version": GENERATOR_VERSION, **asdict(params)}
    seen, unseen = split_classes(params.seed)
    if meta_path.is_file() and not force:
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            meta = {}
        if meta.get("params") == wanted and _is_complete(root):
            return SketchReport(root, meta["images"], True, 0.0, meta["digest"], len(seen), len(unseen))
    start = time.perf_counter()
    for sub in MODALITIES:
        if (root / sub).exists():
            shutil.rmtree(root / sub)
    root.mkdir(parents=True, exist_ok=True)
    lines: dict[tuple[str, str], list[str]] = {(m, s): [] for m in MODALITIES for s in LIST_SPLITS}
    images: list[str] = []
    seen_id = {c: i for i, c in enumerate(seen)}
    unseen_id = {c: i for i, c in enumerate(unseen)}
    n_inst = max(params.photos_per_class, params.sketches_per_class)
    for cat in CATEGORIES:
        for m in MODALITIES:
            (root / m / cat).mkdir(parents=True, exist_ok=True)
        styles = sketch_styles(params.seed, cat, params.sketches_per_class)
        for k in range(n_inst):
            style = styles[k] if k < params.sketches_per_class else None
            pic = draw(instance_rng(params.seed, cat, k), cat, params.size, style)
            for m, img, count in (("photo", pic.photo, params.photos_per_class), ("sketch", pic.sketch,
                                                                                   params.sketches_per_class)):
                if k >= count or img is None:
                    continue
                rel = f"{m}/{cat}/{k:04d}.png" if m == "photo" else f"{m}/{cat}/{k:04d}_{style}.png"
                Image.fromarray(img).save(root / rel, optimize=False, compress_level=6)
                images.append(rel)
                if cat in unseen_id:
                    lines[(m, "zero")].append(f"{rel} {unseen_id[cat]}")
                else:
                    split = "test" if k >= count - params.val_per_class else "train"
                    lines[(m, split)].append(f"{rel} {seen_id[cat]}")
    for (m, s), rows in lines.items():
        (root / list_file(m, s)).write_text("".join(r + "\n" for r in rows))
    np.save(root / MASK_FILE, class_id_mask(seen, seen))
    digest = _digest(root, images)
    meta = {"params": wanted, "images": len(images), "digest": digest, "seen": seen, "unseen": unseen,
            "teacher_classes": seen,
            "hierarchy": {sup: [f"{sup}/{c}" for c in cats] for sup, cats in HIERARCHY.items()},
            "sketch_styles": list(SKETCH_STYLES), "mask": {"file": MASK_FILE, "rows": "seen", "cols": "teacher_classes",
                                                          "rule": "1 on identity, else 1/(1+path length) if > 0.2"},
            "counts": {f"{m}_{s}": len(rows) for (m, s), rows in lines.items()}}
    meta_path.write_text(json.dumps(meta, indent=1))
    return SketchReport(root, len(images), False, time.perf_counter() - start, digest, len(seen), len(unseen))
