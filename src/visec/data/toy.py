"""A tiny real-vs-spliced face set generated offline in about a second (tests, smoke runs, demo).

Sources are the 100 real LFW face crops that scikit-image ships (``skimage.data.lfw_subset``,
25x25 grayscale). Every source face gives ``per_source`` real variants (small shifts, flips and
brightness changes) and ``per_source`` fakes: a facial band (eyes or mouth) of another face is
blended in through a soft mask, with a brightness/contrast mismatch and a resampling step inside
the mask, the traces a local face swap leaves. Splits are by source identity, so no face appears
in two splits. This is *not* the embedded benchmark data (that is ``visec data synth``); it exists
so every command can run end to end with nothing downloaded.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from visec.data.manifest import make_record, seeded_split, write_manifest

DATASET = "toy"
BANDS = {"eyes": (0.22, 0.52), "mouth": (0.62, 0.90)}  # vertical extent as a fraction of the height


def _faces() -> np.ndarray:
    from skimage.data import lfw_subset

    return lfw_subset()[:100]  # the first 100 are faces, the rest are non-faces


def _jitter(face: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    img = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC)
    dx, dy = rng.integers(-2, 3, size=2)
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    img = cv2.warpAffine(img, m, (size, size), borderMode=cv2.BORDER_REFLECT)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    img = np.clip(img * rng.uniform(0.9, 1.1) + rng.uniform(-0.05, 0.05), 0, 1)
    return img


def _splice(target: np.ndarray, donor: np.ndarray, band: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    size = target.shape[0]
    top, bottom = (int(f * size) for f in BANDS[band])
    mask = np.zeros((size, size), np.float32)
    mask[top:bottom, size // 8: size - size // 8] = 1.0
    mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=size / 32)
    small = max(4, size // 3)
    patch = cv2.resize(cv2.resize(donor, (small, small), interpolation=cv2.INTER_AREA), (size, size),
                       interpolation=cv2.INTER_LINEAR)  # resampling artefact inside the swapped region
    patch = np.clip((patch - patch.mean()) * rng.uniform(0.7, 1.3) + patch.mean() + rng.uniform(-0.12, 0.12), 0, 1)
    return target * (1 - mask) + patch * mask, mask


def make_toy_dataset(out: str | Path, *, seed: int = 0, size: int = 32, per_source: int = 2,
                     sources: int = 100) -> Path:
    """Write PNGs and ``manifest.jsonl`` under ``out``; return the manifest path. Deterministic in ``seed``."""
    out = Path(out)
    faces = _faces().astype(np.float32)[:sources]
    rng = np.random.default_rng(seed)
    split_of = seeded_split([f"s{i:03d}" for i in range(len(faces))], seed=seed)
    rows = []
    for i, face in enumerate(faces):
        src = f"s{i:03d}"
        for k in range(per_source):
            real = _jitter(face, rng, size)
            donor = _jitter(faces[(i + 1 + rng.integers(len(faces) - 1)) % len(faces)], rng, size)
            band = "eyes" if k % 2 == 0 else "mouth"
            fake, _ = _splice(_jitter(face, rng, size), donor, band, rng)
            for label, manip, img in ((0, "real", real), (1, f"splice-{band}", fake)):
                rel = Path(manip) / f"{src}_{k}.png"
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                rgb = np.repeat((np.clip(img, 0, 1) * 255).round().astype(np.uint8)[..., None], 3, axis=2)
                Image.fromarray(rgb).save(out / rel)
                rows.append(make_record(out, rel, dataset=DATASET, split=split_of[src], label=label,
                                        manipulation=manip, video_id=f"{DATASET}/{manip}/{src}_{k}",
                                        source_id=src))
    return write_manifest(rows, out / "manifest.jsonl")
