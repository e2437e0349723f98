"""``visec data synth --kind captions``: the embedded captioned object set (prompt learning, GCSCoOp).

Every image shows one or two objects of one *category* (24 shape words: circle, star, arrow, ...)
drawn procedurally with random attributes: colour (8), texture (solid, striped, dotted, checkered),
background (black, white, grey, noise), count (one or two), size, position and a small rotation.
The category is the only thing a class name refers to; the attributes vary freely within it.

Output (``out``), written in CoOp's dataset layout so the same loader reads it and the eleven
published sets (:mod:`visec.data.prompt_datasets`):

* ``images/<category>/<split>_<i>.png`` (``size`` px, RGB);
* ``split_visec_captions.json``: ``{"train" | "val" | "test": [[relative path, label, category], ...]}``
  (the downstream classification splits, CoOp's ``split_zhou_*.json`` format);
* ``captions.jsonl``: the *pre-training* set, one ``{"path", "caption", "label"}`` per line, with
  captions such as "two striped red stars on a grey background". Every category word appears in
  pre-training captions, so zero-shot transfer to categories held out of prompt learning (the
  "new" half) is meaningful; the pre-training images are disjoint from the classification splits;
* ``captions.json``: the parameters and a hash of everything written.

Deterministic per seed; calling again with the same parameters returns the cached set.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from visec.errors import ConfigError

GENERATOR_VERSION = 2  # bump when the images a seed produces change
SPLIT_FILE = "split_visec_captions.json"
CATEGORIES = ("circle", "square", "triangle", "star", "cross", "ring", "diamond", "crescent", "heart",
              "arrow", "hexagon", "pentagon", "ellipse", "trapezoid", "house", "bowtie", "kite", "chevron",
              "hourglass", "plus", "bar", "semicircle", "frame", "tee")
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 230), "yellow": (235, 215, 40),
           "purple": (150, 60, 200), "orange": (245, 140, 30), "cyan": (40, 210, 220), "pink": (240, 120, 190)}
TEXTURES = ("solid", "striped", "dotted", "checkered")
BACKGROUNDS = {"black": (15, 15, 15), "white": (240, 240, 240), "grey": (128, 128, 128), "noisy": None}
COUNTS = {1: "a", 2: "two"}


@dataclass(frozen=True)
class CaptionParams:
    seed: int = 0
    size: int = 32
    pretrain: int = 400  # captioned pre-training images per category
    train: int = 24  # classification train images per category (few-shot shots are drawn from these)
    val: int = 8
    test: int = 24


@dataclass
class CaptionReport:
    root: Path
    images: int
    cached: bool
    seconds: float
    digest: str


def plural(word: str) -> str:
    return word + ("es" if word.endswith(("s", "x", "sh", "ch")) else "s")


def _unit_shape(name: str) -> list[list[tuple[float, float]]]:
    """Polygons (in [-1, 1]^2, y down) whose union is the category's silhouette; ``ring``, ``frame``
    and ``crescent`` are drawn as outer minus inner (see :func:`_holes`)."""
    def ngon(n: int, r: float = 1.0, phase: float = -math.pi / 2, sx: float = 1.0, sy: float = 1.0):
        return [(sx * r * math.cos(phase + 2 * math.pi * k / n), sy * r * math.sin(phase + 2 * math.pi * k / n))
                for k in range(n)]

    def rect(x0, y0, x1, y1):
        return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]

    shapes = {
        "circle": [ngon(40)], "ring": [ngon(40)], "crescent": [ngon(40)], "ellipse": [ngon(40, sy=0.55)],
        "square": [rect(-0.8, -0.8, 0.8, 0.8)], "frame": [rect(-0.85, -0.85, 0.85, 0.85)],
        "triangle": [ngon(3)], "pentagon": [ngon(5)], "hexagon": [ngon(6, phase=0)],
        "diamond": [ngon(4, sx=0.65)],
        "star": [[(r * math.cos(-math.pi / 2 + math.pi * k / 5), r * math.sin(-math.pi / 2 + math.pi * k / 5))
                  for k, r in zip(range(10), [1.0, 0.42] * 5)]],
        "cross": [[(-1, -0.7), (-0.7, -1), (1, 0.7), (0.7, 1)], [(1, -0.7), (0.7, -1), (-1, 0.7), (-0.7, 1)]],
        "plus": [rect(-1, -0.28, 1, 0.28), rect(-0.28, -1, 0.28, 1)],
        "heart": [ngon(30, 0.5, sx=1, sy=1), ngon(30, 0.5), [(-0.98, 0.0), (0.98, 0.0), (0, 1.0)]],
        "arrow": [rect(-1, -0.22, 0.2, 0.22), [(0.1, -0.7), (1, 0), (0.1, 0.7)]],
        "trapezoid": [[(-0.5, -0.6), (0.5, -0.6), (1, 0.6), (-1, 0.6)]],
        "house": [rect(-0.7, -0.05, 0.7, 0.9), [(-0.95, 0.0), (0, -0.9), (0.95, 0.0)]],
        "bowtie": [[(-1, -0.8), (0, 0), (-1, 0.8)], [(1, -0.8), (0, 0), (1, 0.8)]],
        "kite": [[(0, -1), (0.6, -0.3), (0, 1), (-0.6, -0.3)]],
        "chevron": [[(-1, -0.9), (0, 0.1), (1, -0.9), (1, -0.3), (0, 0.7), (-1, -0.3)]],
        "hourglass": [[(-0.8, -1), (0.8, -1), (0, 0)], [(-0.8, 1), (0.8, 1), (0, 0)]],
        "bar": [rect(-1, -0.2, 1, 0.2)],
        "semicircle": [[(math.cos(math.pi + math.pi * k / 30), 0.5 + math.sin(math.pi + math.pi * k / 30))
                        for k in range(31)]],
        "tee": [rect(-0.9, -0.9, 0.9, -0.5), rect(-0.22, -0.5, 0.22, 0.95)],
    }
    out = shapes[name]
    if name == "heart":  # two lobes and the point
        out = [[(x - 0.45, y - 0.25) for x, y in out[0]], [(x + 0.45, y - 0.25) for x, y in out[1]], out[2]]
    return out


def _holes(name: str) -> list[list[tuple[float, float]]]:
    if name == "ring":
        return [[(0.55 * math.cos(2 * math.pi * k / 40), 0.55 * math.sin(2 * math.pi * k / 40)) for k in range(40)]]
    if name == "frame":
        return [[(-0.45, -0.45), (0.45, -0.45), (0.45, 0.45), (-0.45, 0.45)]]
    if name == "crescent":
        return [[(0.45 + 0.85 * math.cos(2 * math.pi * k / 40), -0.15 + 0.85 * math.sin(2 * math.pi * k / 40))
                 for k in range(40)]]
    return []


def _texture(rng: np.random.Generator, kind: str, colour: tuple[int, int, int], side: int) -> np.ndarray:
    """``(side, side, 3)`` fill pattern of ``kind`` in ``colour`` (second tone: a darker shade)."""
    base = np.array(colour, np.float32)
    dark = base * 0.35
    yy, xx = np.mgrid[0:side, 0:side]
    period = max(4, side // int(rng.integers(5, 9)))
    if kind == "solid":
        mask = np.zeros((side, side), bool)
    elif kind == "striped":
        angle = rng.uniform(0, math.pi)
        mask = ((xx * math.cos(angle) + yy * math.sin(angle)) // (period / 2)) % 2 == 1
    elif kind == "dotted":
        mask = ((xx % period - period / 2) ** 2 + (yy % period - period / 2) ** 2) < (period / 3.2) ** 2
    else:  # checkered
        mask = ((xx // period) + (yy // period)) % 2 == 1
    return np.where(mask[..., None], dark, base).astype(np.uint8)


def draw(rng: np.random.Generator, category: str, size: int) -> tuple[np.ndarray, dict[str, str]]:
    """One image of ``category`` (uint8 ``(size, size, 3)``) and its attributes."""
    scale = 4  # drawn at 4x, then reduced with antialiasing
    side = size * scale
    colour = str(rng.choice(list(COLOURS)))
    texture = str(rng.choice(TEXTURES))
    background = str(rng.choice(list(BACKGROUNDS)))
    count = int(rng.choice([1, 2], p=[0.7, 0.3]))
    bg = BACKGROUNDS[background]
    if bg is None:
        canvas = rng.integers(40, 215, (side // scale, side // scale, 3)).astype(np.uint8)
        canvas = np.asarray(Image.fromarray(canvas).resize((side, side), Image.NEAREST))
    else:
        canvas = np.full((side, side, 3), bg, np.uint8)
    canvas = canvas.copy()
    fill = _texture(rng, texture, COLOURS[colour], side)
    centres = ([(side / 2 + rng.uniform(-0.08, 0.08) * side, side / 2 + rng.uniform(-0.08, 0.08) * side)]
               if count == 1 else
               [(side * rng.uniform(0.27, 0.33), side * rng.uniform(0.3, 0.7)),
                (side * rng.uniform(0.67, 0.73), side * rng.uniform(0.3, 0.7))])
    radius = side * (rng.uniform(0.3, 0.4) if count == 1 else rng.uniform(0.17, 0.21))
    for cx, cy in centres:
        theta = rng.uniform(-0.35, 0.35)
        c, s = math.cos(theta), math.sin(theta)

        def place(poly):
            return [(cx + radius * (c * x - s * y), cy + radius * (s * x + c * y)) for x, y in poly]

        mask = Image.new("L", (side, side), 0)
        d = ImageDraw.Draw(mask)
        for poly in _unit_shape(category):
            d.polygon(place(poly), fill=255)
        for poly in _holes(category):
            d.polygon(place(poly), fill=0)
        m = np.asarray(mask) > 127
        canvas[m] = fill[m]
    img = Image.fromarray(canvas).resize((size, size), Image.LANCZOS)
    return np.asarray(img), {"colour": colour, "texture": texture, "background": background, "count": str(count)}


def caption(rng: np.random.Generator, category: str, attrs: dict[str, str]) -> str:
    """A caption naming the category and a random subset of its attributes."""
    n = int(attrs["count"])
    noun = category if n == 1 else plural(category)
    det = COUNTS[n]
    colour, texture, bg = attrs["colour"], attrs["texture"], attrs["background"]
    texture_word = "" if texture == "solid" and rng.random() < 0.5 else texture + " "
    # descriptive captions only, never "a photo of ...": CLIP's hand-crafted prompt is then slightly
    # off the pre-training distribution, as prompt engineering is for real CLIP (what CoOp learns away)
    templates = [
        f"{det} {texture_word}{colour} {noun} on a {bg} background",
        f"{det} {colour} {noun}",
        f"{det} {texture_word}{noun} on {bg}",
        f"{colour} {noun} drawn on {bg}",
        f"{noun}",
        f"{det} {noun}, {colour} and {texture}",
    ]
    return templates[int(rng.integers(len(templates)))]


def ensure_caption_dataset(root: str | os.PathLike) -> Path:
    """``root`` when it already holds a captioned set (any parameters), else the default set drawn there."""
    root = Path(root)
    if not (root / "captions.json").is_file():
        make_caption_dataset(root)
    return root


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for name in (SPLIT_FILE, "captions.jsonl"):
        h.update((root / name).read_bytes())
    return h.hexdigest()


def make_caption_dataset(out: str | os.PathLike, params: CaptionParams | None = None, *, force: bool = False,
                         **overrides) -> CaptionReport:
    """Generate (or return the cached) embedded captioned object set under ``out``."""
    params = params or CaptionParams(**overrides)
    if params.size < 16:
        raise ConfigError(f"--size {params.size}: the captioned set needs at least 16 px")
    if min(params.pretrain, params.train, params.test) < 1 or params.val < 0:
        raise ConfigError("the captioned set needs at least one pre-training, train and test image per category")
    root = Path(out)
    meta_path = root / "captions.json"
    wanted = {"version": GENERATOR_VERSION, **asdict(params)}
    if meta_path.is_file() and not force:
        meta = json.loads(meta_path.read_text())
        if meta.get("params") == wanted and (root / SPLIT_FILE).is_file() and (root / "captions.jsonl").is_file():
            return CaptionReport(root, meta["images"], True, 0.0, meta["digest"])
    start = time.perf_counter()
    if (root / "images").exists():
        shutil.rmtree(root / "images")
    root.mkdir(parents=True, exist_ok=True)
    split: dict[str, list] = {"train": [], "val": [], "test": []}
    lines = []
    n_images = 0
    for label, cat in enumerate(CATEGORIES):
        (root / "images" / cat).mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([params.seed, GENERATOR_VERSION, label])
        for part, n in (("pretrain", params.pretrain), ("train", params.train), ("val", params.val),
                        ("test", params.test)):
            for i in range(n):
                img, attrs = draw(rng, cat, params.size)
                rel = f"images/{cat}/{part}_{i:04d}.png"
                Image.fromarray(img).save(root / rel, optimize=False, compress_level=1)
                n_images += 1
                if part == "pretrain":
                    lines.append(json.dumps({"path": rel, "caption": caption(rng, cat, attrs), "label": label}))
                else:
                    split[part].append([rel.removeprefix("images/"), label, cat])
    (root / SPLIT_FILE).write_text(json.dumps(split))
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    digest = _digest(root)
    meta_path.write_text(json.dumps({"params": wanted, "images": n_images, "digest": digest,
                                     "categories": list(CATEGORIES)}, indent=1))
    return CaptionReport(root, n_images, False, time.perf_counter() - start, digest)
