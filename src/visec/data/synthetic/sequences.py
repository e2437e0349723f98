"""``visec data synth --kind sequences``: embedded sequential deepfakes (Seq-DeepFake-style labels).

Every DCGAN identity gives, per subset (:data:`visec.data.sequences.SUBSETS`), one untouched face
and ``forged_per_identity`` faces edited by a sequence of 1 to 5 *distinct* edits, applied one after
another, each on the result of the previous one. The label is the ordered list of edit ids padded
with zeros to five, as in Seq-DeepFake.

The edits
---------
Each edit owns a region placed by the face's 68 landmarks (:func:`edit_region`) and changes pixels
only inside that region's feathered mask (the blend uses the 8-bit quantised mask, so where the
mask is 0 the pixel is left exactly as it was). Inside the mask the edit mixes a little of what is
there (``keep``, at most 0.5, after its own operation: a warp for ``smiling``, a blur for
``young``) with its own signature: a tint, plus a texture of its own (an oriented grating with its
own angle and period, stubble speckle for ``beard``, dark rims for ``eyeglasses``). So where two
edits overlap, the later one's signature is what shows and the earlier one survives only weakly
(its texture at ``keep`` times its amplitude, or blurred away by ``young``): the edits do not
commute, and the order can be read off the overlaps.

* ``facial_components``: nose, eye(s), eyebrow(s), lip(s) and hair (a band across the forehead up
  from the brows). The regions are grown so that hair-eyebrow-eye-nose-lip form a chain of overlaps.
* ``facial_attributes``: bangs (a fringe over the forehead down over the brows), eyeglasses (two
  rims, tinted lenses and a bridge), beard (stubble on jaw, chin and upper lip, lips spared),
  smiling (a warp lifting the mouth corners and cheeks, the under-eye area to the mouth), young
  (smoothing and brightening over the whole face hull, overlapping all others).

Which sequences are drawn
-------------------------
A sequence is *allowed* when every edit's mask overlaps the previous edit's mask by at least
:data:`MIN_OVERLAP` of the smaller mask (counted where the masks are at least 0.5,
:func:`region_overlap`), judged on the mean landmarks of the DCGAN faces (:data:`TEMPLATE64`), so the list is the same for every seed.
Lengths with more than :data:`MAX_PER_LENGTH` such sequences keep a fixed, seeded selection of
that many (:func:`allowed_sequences`): 25 forged sequence types for components (all of them), 37
for attributes. For each forged image a length is drawn uniformly among 1..5, then a sequence of
that length uniformly among the allowed ones whose overlaps also hold on *this* face's landmarks.

Output (``out``)
----------------
``<subset>/manifest.jsonl`` (paths relative to ``out/<subset>``), ``<subset>/images/<split>/<name>/
<identity>-<k>.png`` (forged), ``<subset>/original/<split>/<identity>.png`` (untouched) and
``seqsynth.json`` (parameters, counts, digests, the allowed sequences). Manifest columns beyond the
standard ones: ``sequence`` (five ints), ``subset``, ``source_id`` and ``original`` (the untouched
face; an original row points at its own file). The splits are identity-disjoint
(:func:`~visec.data.manifest.seeded_split` over identities, the same for both subsets). Everything
is deterministic from the seed (one random stream per identity and subset); calling again with the
same parameters returns the cached set.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from PIL import Image

from visec.data.manifest import make_record, seeded_split, write_manifest
from visec.data.sequences import MAX_STEPS, SUBSETS, pad_sequence, parse_sequence, sequence_name, steps
from visec.data.synthetic.generate import manifest_hash
from visec.data.synthetic.manipulations import blend, feather
from visec.data.synthetic.sources import GAN_SIZE, gan_faces, landmarks68
from visec.errors import ConfigError
from visec.registry import unknown_name

DATASET = "seqsynth"
GENERATOR_VERSION = 1  # bump when the images a seed produces change
META = "seqsynth.json"
MIN_OVERLAP = 0.03  # of the smaller mask, between consecutive edits
MAX_PER_LENGTH = 8  # forged sequence types kept per length (a fixed selection when there are more)

# the mean 68 landmarks (x, y) of 256 DCGAN faces (seed 0) at 64 px, to 0.1 px
TEMPLATE64 = np.array([
    [9.4, 28.5], [9.5, 34.7], [10.0, 40.8], [11.3, 46.8], [13.8, 52.4], [17.3, 57.3], [21.6, 61.2],
    [26.4, 63.9], [31.8, 64.5], [37.3, 63.9], [42.0, 61.1], [46.3, 57.1], [49.8, 52.2], [52.2, 46.6],
    [53.5, 40.7], [54.0, 34.6], [54.0, 28.4], [14.8, 24.0], [17.7, 21.8], [21.5, 21.3], [25.5, 21.9],
    [29.1, 23.6], [34.8, 23.5], [38.4, 21.8], [42.2, 21.1], [46.0, 21.6], [48.9, 23.7], [31.9, 28.4],
    [31.9, 32.5], [31.9, 36.6], [31.9, 40.7], [27.2, 43.4], [29.4, 44.3], [31.9, 45.0], [34.4, 44.3],
    [36.6, 43.4], [18.8, 28.6], [21.2, 27.4], [24.0, 27.4], [26.4, 29.2], [23.8, 29.8], [21.0, 29.7],
    [37.4, 29.1], [39.8, 27.3], [42.6, 27.2], [45.0, 28.4], [42.8, 29.5], [40.0, 29.7], [23.7, 51.1],
    [26.6, 49.6], [29.8, 48.9], [31.9, 49.4], [34.1, 48.8], [37.2, 49.5], [40.1, 51.0], [37.3, 54.0],
    [34.3, 55.3], [32.0, 55.6], [29.6, 55.4], [26.5, 54.0], [25.0, 51.1], [29.7, 50.9], [31.9, 51.1],
    [34.1, 50.8], [38.9, 51.1], [34.2, 52.3], [32.0, 52.6], [29.7, 52.3]], np.float32)

BROWS, NOSE, MOUTH = list(range(17, 27)), list(range(27, 36)), list(range(48, 60))
EYE_L, EYE_R = list(range(36, 42)), list(range(42, 48))
BROW_L, BROW_R = list(range(17, 22)), list(range(22, 27))


@dataclass(frozen=True)
class Edit:
    """What an edit puts inside its mask: ``keep`` x op(image) + (1 - keep) x tint, plus a texture."""

    tint: tuple[int, int, int]
    keep: float = 0.6  # the face shows through the tint (an edit changes a region, it does not paint over it)
    texture: str = "grating"  # grating, speckle or none
    angle: float = 0.0  # degrees: direction of the grating's wave vector
    period: float = 3.5  # pixels at 64 px
    amp: float = 12.0
    op: str = "none"  # none, warp (smiling) or blur (young)


EDITS: dict[str, dict[str, Edit]] = {
    "facial_components": {
        "nose": Edit((205, 140, 118), keep=0.45, angle=0.0),
        "eye": Edit((70, 110, 175), angle=36.0),
        "eyebrow": Edit((48, 36, 30), angle=72.0, amp=14.0),
        "lip": Edit((190, 50, 72), keep=0.45, angle=108.0),
        "hair": Edit((125, 82, 40), angle=144.0, period=3.0, amp=14.0),
    },
    "facial_attributes": {
        "bangs": Edit((62, 42, 26), keep=0.45, angle=0.0, period=2.8, amp=16.0),
        "eyeglasses": Edit((22, 22, 28), keep=0.12, texture="none"),
        "beard": Edit((72, 52, 36), keep=0.55, texture="speckle", amp=40.0),
        "smiling": Edit((215, 122, 122), keep=0.5, angle=60.0, period=4.0, amp=10.0, op="warp"),
        "young": Edit((236, 206, 186), keep=0.5, texture="none", op="blur"),
    },
}


@dataclass(frozen=True)
class SequenceParams:
    seed: int = 0
    identities: int = 300
    size: int = 64
    forged_per_identity: int = 3
    subsets: tuple[str, ...] = tuple(SUBSETS)
    version: int = GENERATOR_VERSION

    def check(self) -> None:
        for name in self.subsets:
            if name not in SUBSETS:
                raise ConfigError(unknown_name("Seq-DeepFake subset", name, SUBSETS))
        if not self.subsets or len(set(self.subsets)) != len(self.subsets):
            raise ConfigError("sequences: give one or both subsets, each once")
        if self.identities < 3 or self.forged_per_identity < 1 or not 32 <= self.size <= 512:
            raise ConfigError("sequences need identities >= 3 (one per split at least), "
                              "forged_per_identity >= 1 and 32 <= size <= 512")


@dataclass
class SequenceSynthReport:
    manifests: dict[str, Path]
    images: int
    seconds: float
    cached: bool
    digests: dict[str, str] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)


# -- regions --------------------------------------------------------------------------------------
def _poly(mask: np.ndarray, pts: np.ndarray, value: float = 1.0) -> None:
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], value, lineType=cv2.LINE_8)


def _hull(mask: np.ndarray, pts: np.ndarray, value: float = 1.0) -> None:
    hull = cv2.convexHull(np.asarray(pts, np.float32))
    cv2.fillConvexPoly(mask, np.round(hull).astype(np.int32), value, lineType=cv2.LINE_8)


def _grown(pts: np.ndarray, grow: float) -> np.ndarray:
    c = pts.mean(0)
    return (pts - c) * grow + c


def _dilate(mask: np.ndarray, px: float) -> np.ndarray:
    k = int(round(2 * px)) | 1
    return cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))) if k > 1 else mask


def _hard_region(subset: str, edit: str, lm: np.ndarray, size: int) -> np.ndarray:
    """The region before feathering, float32 in [0, 1] (eyeglass lenses are partial)."""
    s = size / GAN_SIZE
    lm = np.asarray(lm, np.float32)
    m = np.zeros((size, size), np.float32)
    up = np.float32([0, -1])
    if subset == "facial_components":
        if edit == "nose":
            wide = np.stack([lm[27] + [-3.0 * s, 0], lm[27] + [3.0 * s, 0], lm[29] + [-3.5 * s, 0],
                             lm[29] + [3.5 * s, 0]])
            below = lm[31:36] + np.float32([0, 3.5]) * s  # down to the philtrum, meeting the lips
            _hull(m, np.concatenate([lm[NOSE], wide, below]))
            m = _dilate(m, 1.5 * s)
        elif edit == "eye":
            for idx in (EYE_L, EYE_R):  # the eye and its upper lid
                eye = _grown(lm[idx], 1.5)
                _hull(m, np.concatenate([eye, eye[1:3] + up * 2.0 * s]))
            m = _dilate(m, 2.0 * s)
        elif edit == "eyebrow":
            for idx in (BROW_L, BROW_R):
                cv2.polylines(m, [np.round(lm[idx]).astype(np.int32)], False, 1.0,
                              thickness=max(1, int(round(3 * s))), lineType=cv2.LINE_8)
            m = _dilate(m, 1.5 * s)
        elif edit == "lip":
            _hull(m, lm[MOUTH])
            m = _dilate(m, 2.0 * s)
        elif edit == "hair":
            brow = lm[BROWS]
            low = brow + up * 1.0 * s
            high = _grown(brow, 1.2) + up * 15.0 * s
            _poly(m, np.concatenate([low, high[::-1]]))
        else:
            raise ConfigError(unknown_name("facial_components edit", edit, SUBSETS[subset]))
    elif subset == "facial_attributes":
        if edit == "bangs":
            brow = lm[BROWS]
            low = brow - up * 2.5 * s
            high = _grown(brow, 1.25) + up * 13.0 * s
            _poly(m, np.concatenate([low, high[::-1]]))
        elif edit == "eyeglasses":
            lens = np.zeros_like(m)
            rims = np.zeros_like(m)
            inner = []
            thick = max(1, int(round(1.6 * s)))
            for idx in (EYE_L, EYE_R):
                eye = lm[idx]
                c = eye.mean(0)
                w = 0.5 * float(np.linalg.norm(eye[3] - eye[0])) * 1.45 + 1.0 * s
                axes = (max(2, int(round(w))), max(2, int(round(0.8 * w))))
                centre = (int(round(c[0])), int(round(c[1])))
                cv2.ellipse(lens, centre, axes, 0, 0, 360, 1.0, -1)
                cv2.ellipse(rims, centre, axes, 0, 0, 360, 1.0, thick)
                inner.append(c)
            # the bridge: from the inner side of one rim to the other, a little above the eye centres
            y = 0.5 * (inner[0][1] + inner[1][1]) - 1.0 * s
            cv2.line(rims, (int(round(inner[0][0])), int(round(y))), (int(round(inner[1][0])), int(round(y))),
                     1.0, thick)
            m = np.maximum(rims, 0.3 * lens)
        elif edit == "beard":
            nose_base = lm[31:36] + np.float32([0, 1.0]) * s
            _hull(m, np.concatenate([lm[3:14], nose_base]))
            lips = np.zeros_like(m)
            _hull(lips, lm[MOUTH])
            m = np.clip(m - lips, 0, 1)
        elif edit == "smiling":
            under_eyes = lm[[40, 41, 46, 47]] + np.float32([0, 1.5]) * s
            cheeks = np.stack([lm[2] + [3.0 * s, 0], lm[14] - [3.0 * s, 0]])
            _hull(m, np.concatenate([_grown(lm[MOUTH], 1.2), under_eyes, cheeks]))
        elif edit == "young":
            brows_up = lm[BROWS] + up * 6.0 * s
            _hull(m, np.concatenate([lm[0:17], brows_up]))
        else:
            raise ConfigError(unknown_name("facial_attributes edit", edit, SUBSETS[subset]))
    else:
        raise ConfigError(unknown_name("Seq-DeepFake subset", subset, SUBSETS))
    return m


def edit_region(subset: str, edit: str | int, lm68: np.ndarray, size: int) -> np.ndarray:
    """The feathered mask (float32 ``(size, size)``, 8-bit quantised) of one edit on a face.

    ``edit`` is a name of the subset or its id (1..5). Depends only on the landmarks and the size,
    so it can be recomputed from an original face to check what an edit may have touched.
    """
    names = SUBSETS.get(subset)
    if names is None:
        raise ConfigError(unknown_name("Seq-DeepFake subset", subset, SUBSETS))
    if not isinstance(edit, str):
        edit = names[int(edit) - 1]
    hard = _hard_region(subset, edit, lm68, size)
    return feather(hard, sigma=0.7 * size / GAN_SIZE).astype(np.float32)


def region_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Overlap of two masks as a fraction of the smaller one, counting the pixels where a mask is at
    least 0.5 (its core, not the feathered fringe): |A and B| / min(|A|, |B|)."""
    ha, hb = a >= 0.5, b >= 0.5
    small = min(int(ha.sum()), int(hb.sum()))
    return float((ha & hb).sum()) / small if small > 0 else 0.0


def overlap_matrix(subset: str, lm68: np.ndarray, size: int) -> np.ndarray:
    """``(6, 6)`` overlaps between the subset's edit regions, indexed by id (row/column 0 unused)."""
    masks = [edit_region(subset, i, lm68, size) for i in range(1, MAX_STEPS + 1)]
    out = np.zeros((MAX_STEPS + 1, MAX_STEPS + 1))
    for i, j in itertools.combinations(range(MAX_STEPS), 2):
        out[i + 1, j + 1] = out[j + 1, i + 1] = region_overlap(masks[i], masks[j])
    return out


def _chains(overlaps: np.ndarray) -> list[tuple[int, ...]]:
    """Every sequence of distinct ids whose consecutive regions overlap enough, padded to five."""
    out = []
    for n in range(1, MAX_STEPS + 1):
        for perm in itertools.permutations(range(1, MAX_STEPS + 1), n):
            if all(overlaps[a, b] >= MIN_OVERLAP for a, b in zip(perm, perm[1:])):
                out.append(pad_sequence(perm))
    return out


@lru_cache(maxsize=None)
def allowed_sequences(subset: str) -> tuple[tuple[int, ...], ...]:
    """The forged sequence types of ``subset`` (five ids each), sorted by length then ids.

    Judged on :data:`TEMPLATE64`; a length with more than :data:`MAX_PER_LENGTH` sequences keeps a
    fixed selection of that many (the same on every machine and for every dataset seed).
    """
    if subset not in SUBSETS:
        raise ConfigError(unknown_name("Seq-DeepFake subset", subset, SUBSETS))
    chains = _chains(overlap_matrix(subset, TEMPLATE64, GAN_SIZE))
    rng = np.random.default_rng([20240501, list(SUBSETS).index(subset)])
    keep: list[tuple[int, ...]] = []
    for n in range(1, MAX_STEPS + 1):
        of_len = [c for c in chains if steps(c) == n]
        if len(of_len) > MAX_PER_LENGTH:
            of_len = [of_len[i] for i in sorted(rng.choice(len(of_len), MAX_PER_LENGTH, replace=False))]
        keep.extend(of_len)
    return tuple(keep)


# -- the edits ------------------------------------------------------------------------------------
def _texture(spec: Edit, size: int, rng: np.random.Generator) -> np.ndarray:
    s = size / GAN_SIZE
    amp = spec.amp * rng.uniform(0.85, 1.15)
    if spec.texture == "grating":
        theta = np.deg2rad(spec.angle + rng.uniform(-6, 6))
        period = max(2.4, spec.period * s * rng.uniform(0.92, 1.08))
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        phase = rng.uniform(0, 2 * np.pi)
        return (amp * np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period + phase)).astype(
            np.float32)
    if spec.texture == "speckle":  # stubble: sparse dark dots, about one pixel each
        dots = (rng.random((size, size)) < 0.4).astype(np.float32)
        if s >= 2:
            dots = cv2.GaussianBlur(dots, (0, 0), 0.4 * s)
        return (-amp * dots).astype(np.float32)
    return np.zeros((size, size), np.float32)


def _smile_warp(img: np.ndarray, lm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lift the mouth corners and cheeks: each output pixel samples from below it, most near them."""
    size = img.shape[0]
    s = size / GAN_SIZE
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    lift = np.zeros((size, size), np.float32)
    amount = rng.uniform(1.6, 2.4) * s
    for p, r in ((lm[48], 4.0), (lm[54], 4.0), (0.5 * (lm[2] + lm[48]), 5.0), (0.5 * (lm[14] + lm[54]), 5.0)):
        lift += np.exp(-((xx - p[0]) ** 2 + (yy - p[1]) ** 2) / (2 * (r * s) ** 2))
    map_y = yy + amount * np.clip(lift, 0, 1)
    return cv2.remap(img, xx, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def apply_edit(img: np.ndarray, lm68: np.ndarray, edit_id: int, subset: str,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One edit on ``img`` (uint8 RGB) placed by ``lm68``: ``(edited uint8, its feathered mask)``."""
    name = SUBSETS[subset][int(edit_id) - 1]
    spec = EDITS[subset][name]
    size = img.shape[0]
    mask = edit_region(subset, name, lm68, size)
    base = img.astype(np.float32)
    if spec.op == "warp":
        base = _smile_warp(img, np.asarray(lm68, np.float32), rng).astype(np.float32)
    elif spec.op == "blur":
        base = cv2.GaussianBlur(base, (0, 0), 1.6 * size / GAN_SIZE) * 1.08 + 10.0
    tint = np.clip(np.float32(spec.tint) + rng.uniform(-12, 12, 3), 0, 255).astype(np.float32)
    target = spec.keep * base + (1 - spec.keep) * tint + _texture(spec, size, rng)[..., None]
    return blend(img, np.clip(target, 0, 255), mask), mask


def apply_sequence(face: np.ndarray, lm68: np.ndarray, seq, subset: str,
                   rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    """Apply the edits of ``seq`` (five ids, or the applied ids alone) in order, each on the result
    of the previous one: ``(image uint8, one feathered float32 mask per step)``."""
    if subset not in SUBSETS:
        raise ConfigError(unknown_name("Seq-DeepFake subset", subset, SUBSETS))
    ids = parse_sequence(seq) if isinstance(seq, str) or len(seq) == MAX_STEPS else pad_sequence(seq)
    out, masks = np.ascontiguousarray(face, dtype=np.uint8), []
    for e in ids[:steps(ids)]:
        out, mask = apply_edit(out, lm68, e, subset, rng)
        masks.append(mask)
    return out, masks


def draw_sequence(subset: str, lm68: np.ndarray, size: int, rng: np.random.Generator) -> tuple[int, ...]:
    """A forged sequence for one face: a length uniform in 1..5 (among the lengths this face allows),
    then uniform among the allowed sequences of that length whose overlaps hold on this face too."""
    ov = overlap_matrix(subset, lm68, size)
    ok = [q for q in allowed_sequences(subset)
          if all(ov[a, b] >= MIN_OVERLAP for a, b in zip(q[:steps(q)], q[1:steps(q)]))]
    lengths = sorted({steps(q) for q in ok})  # never empty: single edits always qualify
    n = lengths[int(rng.integers(len(lengths)))]
    pool = [q for q in ok if steps(q) == n]
    return pool[int(rng.integers(len(pool)))]


# -- the dataset ----------------------------------------------------------------------------------
def _save(img: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, compress_level=1)


def make_sequence_dataset(out: str | os.PathLike, *, seed: int = 0, identities: int = 300, size: int = 64,
                          forged_per_identity: int = 3, subsets: tuple[str, ...] | list[str] = tuple(SUBSETS),
                          force: bool = False,
                          progress: Callable[[int, int], None] | None = None) -> SequenceSynthReport:
    """Generate (or reuse) the embedded sequential-deepfake set under ``out``; see the module docstring."""
    if isinstance(subsets, str):
        subsets = (subsets,)
    p = SequenceParams(seed=int(seed), identities=int(identities), size=int(size),
                       forged_per_identity=int(forged_per_identity), subsets=tuple(subsets))
    p.check()
    out = Path(out)
    meta_path = out / META
    wanted = asdict(p) | {"subsets": list(p.subsets)}
    manifests = {sub: out / sub / "manifest.jsonl" for sub in p.subsets}
    if not force and meta_path.is_file() and all(m.is_file() for m in manifests.values()):
        meta = json.loads(meta_path.read_text())
        if meta.get("params") == wanted:
            return SequenceSynthReport(manifests, meta["images"], 0.0, True, meta["digests"], meta["counts"])
    if out.exists() and any(out.iterdir()):
        if not meta_path.is_file():
            raise ConfigError(f"{out} exists and is not a visec sequences folder; pick an empty folder")
        for sub in SUBSETS:  # a different parameter set: start again
            shutil.rmtree(out / sub, ignore_errors=True)
        meta_path.unlink()
    start = time.perf_counter()
    size = p.size

    faces = gan_faces(p.identities, p.seed)
    if size != GAN_SIZE:
        faces = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_CUBIC) for f in faces])
    lms = [landmarks68(f) for f in faces]
    ids = [f"g{i:05d}" for i in range(p.identities)]
    split_of = seeded_split(ids, seed=p.seed)

    rows: dict[str, list[dict]] = {sub: [] for sub in p.subsets}
    total = len(ids) * len(p.subsets) * (1 + p.forged_per_identity)
    done = 0
    for sub in p.subsets:
        root = out / sub
        sub_id = list(SUBSETS).index(sub)  # stable whichever subsets are asked for
        for i, sid in enumerate(ids):
            rng = np.random.default_rng([p.seed, GENERATOR_VERSION, sub_id, i])  # order-independent
            split = split_of[sid]
            orel = Path("original") / split / f"{sid}.png"
            _save(faces[i], root / orel)
            common = {"subset": sub, "source_id": sid, "original": orel.as_posix()}
            rows[sub].append(make_record(root, orel, dataset=DATASET, split=split, label=0, manipulation="real",
                                         video_id=f"{DATASET}/{sub}/real/{sid}-0", frame_index=0,
                                         sequence=[0] * MAX_STEPS, **common))
            for k in range(1, p.forged_per_identity + 1):
                seq = draw_sequence(sub, lms[i], size, rng)
                img, _ = apply_sequence(faces[i], lms[i], seq, sub, rng)
                name = sequence_name(seq, sub)
                rel = Path("images") / split / name / f"{sid}-{k}.png"
                _save(img, root / rel)
                rows[sub].append(make_record(root, rel, dataset=DATASET, split=split, label=1, manipulation=name,
                                             video_id=f"{DATASET}/{sub}/{name}/{sid}-{k}", frame_index=0,
                                             sequence=list(seq), **common))
            done += 1 + p.forged_per_identity
            if progress:
                progress(done, total)
    digests, counts = {}, {}
    for sub in p.subsets:
        write_manifest(rows[sub], manifests[sub])
        digests[sub] = manifest_hash(manifests[sub])
        by_len: dict[str, int] = {}
        for r in rows[sub]:
            key = str(steps(r["sequence"]))
            by_len[key] = by_len.get(key, 0) + 1
        counts[sub] = dict(sorted(by_len.items()))
    n_images = sum(len(r) for r in rows.values())
    meta_path.write_text(json.dumps({
        "params": wanted, "images": n_images, "counts": counts, "digests": digests,
        "allowed_sequences": {sub: [list(q) for q in allowed_sequences(sub)] for sub in p.subsets},
    }, indent=1) + "\n")
    return SequenceSynthReport(manifests, n_images, time.perf_counter() - start, False, digests, counts)
