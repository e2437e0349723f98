"""Three manipulation families that leave the traces real face forgeries leave.

Each family maps a target face, its 68 landmarks, a donor face and its landmarks to
``(fake, mask)``: ``fake`` is uint8 RGB, ``mask`` is uint8 (0-255), and every pixel where the mask
is 0 is left exactly as it was (the blend uses the quantised mask, so this holds bit for bit).

- ``faceswap``: the donor's inner face is aligned onto the target by a similarity transform on
  the landmarks, rendered as a swap model would (slightly smoothed, at a lower resolution), only
  partly colour-corrected, and blended through a feathered face-hull mask: a blending boundary
  and a colour mismatch, the traces of FaceSwap / Deepfakes / Face X-ray's "blended images".
- ``component``: one or two facial components (eyes, brows, nose, mouth) of the donor replace the
  target's, one after another, each placed by its landmarks and blended through a small feathered
  mask: the local edits of Seq-DeepFake-style component manipulation.
- ``resynth``: the face region is re-synthesised through a low resolution and up-sampled the way a
  transposed convolution does (zero insertion and a kernel whose overlap differs between odd and
  even pixels), the checkerboard of GAN / auto-encoder decoders.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

# 68-point index ranges (iBUG 300-W order)
JAW, BROWS, NOSE, EYES, MOUTH = (range(0, 17), range(17, 27), range(27, 36), range(36, 48), range(48, 68))
COMPONENTS = {"eyes": EYES, "brows": BROWS, "nose": NOSE, "mouth": MOUTH}

Family = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.random.Generator],
                  tuple[np.ndarray, np.ndarray, dict]]
FAMILIES: dict[str, Family] = {}


def family(name: str):
    def deco(fn: Family) -> Family:
        FAMILIES[name] = fn
        return fn
    return deco


def hull_mask(points: np.ndarray, size: int, grow: float = 1.0, pad: float = 0.0) -> np.ndarray:
    """Filled convex hull of ``points`` scaled by ``grow`` about its centre plus ``pad`` pixels, float 0/1."""
    c = points.mean(0)
    pts = (points - c) * grow + c
    hull = cv2.convexHull(pts.astype(np.float32))
    mask = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(mask, np.round(hull).astype(np.int32), 1, lineType=cv2.LINE_8)
    if pad > 0:
        k = int(round(2 * pad)) | 1
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    elif pad < 0:
        k = int(round(-2 * pad)) | 1
        mask = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    return mask.astype(np.float32)


def feather(mask: np.ndarray, sigma: float) -> np.ndarray:
    """Soft mask quantised to 8 bits (so the saved mask is exactly the one that was blended)."""
    soft = cv2.GaussianBlur(mask, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_CONSTANT) if sigma > 0 else mask
    return np.round(np.clip(soft, 0, 1) * 255) / 255


def blend(target: np.ndarray, source: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(np.float32)
    out = target.astype(np.float32) * (1 - m) + source.astype(np.float32) * m
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def align(donor: np.ndarray, donor_lm: np.ndarray, target_lm: np.ndarray, size: int,
          idx: range | None = None) -> np.ndarray:
    """Warp ``donor`` so its landmarks (``idx`` only, default all) land on the target's."""
    sel = list(idx) if idx is not None else slice(None)
    m, _ = cv2.estimateAffinePartial2D(donor_lm[sel], target_lm[sel], method=cv2.LMEDS)
    if m is None:  # degenerate landmarks: fall back to the identity placement
        m = np.float32([[1, 0, 0], [0, 1, 0]])
    return cv2.warpAffine(donor, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def colour_transfer(src: np.ndarray, ref: np.ndarray, region: np.ndarray, amount: float) -> np.ndarray:
    """Move ``src``'s per-channel mean/std inside ``region`` a fraction ``amount`` toward ``ref``'s."""
    s, r = src.astype(np.float32), ref.astype(np.float32)
    sel = region > 0.5
    if sel.sum() < 4:
        return src
    ms, ss = s[sel].mean(0), s[sel].std(0) + 1e-3
    mr, sr = r[sel].mean(0), r[sel].std(0) + 1e-3
    matched = (s - ms) / ss * sr + mr
    return np.clip(s + amount * (matched - s), 0, 255).astype(np.uint8)


@family("faceswap")
def faceswap(target, target_lm, donor, donor_lm, rng):
    size = target.shape[0]
    face = align(donor, donor_lm, target_lm, size)
    # a swap model renders the face smoother and at a lower resolution than the frame
    scale = rng.uniform(0.45, 0.8)
    low = max(8, round(size * scale))
    face = cv2.resize(cv2.resize(face, (low, low), interpolation=cv2.INTER_AREA), (size, size),
                      interpolation=cv2.INTER_LINEAR)
    region = hull_mask(target_lm[list(JAW) + list(BROWS)], size, grow=1.0, pad=-size / 20)
    amount = rng.uniform(0.0, 0.6)  # partial colour correction: a residual mismatch stays
    face = colour_transfer(face, target, region, amount)
    mask = feather(region, sigma=rng.uniform(size / 40, size / 20))
    return blend(target, face, mask), mask, {"scale": round(scale, 3), "colour_match": round(amount, 3)}


@family("component")
def component(target, target_lm, donor, donor_lm, rng):
    size = target.shape[0]
    k = 1 + int(rng.random() < 0.5)
    edits = [str(e) for e in rng.choice(list(COMPONENTS), size=k, replace=False)]
    out = target
    union = np.zeros((size, size), np.float32)
    for name in edits:
        idx = COMPONENTS[name]
        # place the component by its own landmarks plus the eye corners (a stable frame)
        placed = align(donor, donor_lm, target_lm, size, idx=list(idx) + [36, 39, 42, 45])
        gain = rng.uniform(0.85, 1.15)
        placed = np.clip(placed.astype(np.float32) * gain, 0, 255).astype(np.uint8)
        region = hull_mask(target_lm[list(idx)], size, grow=1.25, pad=size / 32)
        mask = feather(region, sigma=rng.uniform(size / 64, size / 32))
        out = blend(out, placed, mask)
        union = np.maximum(union, mask)
    return out, union, {"edits": ">".join(edits)}


@family("resynth")
def resynth(target, target_lm, donor, donor_lm, rng):
    size = target.shape[0]
    f = int(rng.choice([2, 2, 3]))
    n = len(range(0, size, f))  # low-resolution samples per side
    small = cv2.resize(target, (n, n), interpolation=cv2.INTER_AREA).astype(np.float32)
    # transposed-convolution up-sampling: zero insertion, then a tent kernel (which alone would be
    # plain bilinear interpolation) whose centre tap is off by a factor g, so pixels on the stride
    # grid get gain g (g^2 where both coordinates are on it) and the others 1: a checkerboard
    up = np.zeros((size, size, 3), np.float32)
    up[::f, ::f] = small
    gain = 1 + rng.choice([-1.0, 1.0]) * rng.uniform(0.08, 0.2)
    k1 = 1 - np.abs(np.arange(2 * f - 1) - (f - 1)) / f
    k1[f - 1] *= gain
    up = cv2.sepFilter2D(up, -1, k1, k1, borderType=cv2.BORDER_REFLECT)
    region = hull_mask(target_lm, size, grow=1.05)
    mask = feather(region, sigma=rng.uniform(size / 48, size / 24))
    return blend(target, np.clip(up, 0, 255), mask), mask, {"factor": f, "grid_gain": round(float(gain), 3)}
