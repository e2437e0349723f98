"""``visec data synth``: the embedded face-forgery dataset, generated offline and deterministically.

Every identity (a DCGAN latent, or one of the two public-domain portraits) is a short "video" of
``frames`` jittered frames (small shifts, rotations and zooms, as a head moves). Each identity gives
one real video and one fake video made with one manipulation family (round-robin within each split,
so every split holds every family in equal shares); the donor of a fake is another identity *of the
same split*, so no face appears in two splits. Every video then gets one quality level (none, JPEG,
blur, noise or resize), drawn from the same distribution for real and fake videos and recorded in
the manifest, so quality is never a label cue.

Output (``out``): ``real/``, ``<family>/`` images, ``masks/<family>/`` blend masks (0-255, what was
actually blended), ``nir/<manipulation>/`` the near-infrared twin of every image (single channel,
made from the same manipulated frame and degraded with the same quality setting; see
:func:`visec.data.synthetic.sources.nir_twin`), ``manifest.jsonl`` and ``synth.json`` (the parameters and the manifest hash).
Calling again with the same parameters returns the cached manifest.

Manifest columns beyond the standard ones: ``source_id`` (the target identity), ``donor_id``,
``mask``, ``nir`` (the near-infrared twin), ``quality`` (a corruption spec, ``none`` for pristine), ``quality_level`` (0 pristine to
3 strong), ``generator`` (``dcgan`` or ``photo``) and ``edit`` (family-specific parameters,
e.g. the sequence of component edits ``eyes>mouth``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from PIL import Image

from visec.data.corruptions import corrupt
from visec.data.manifest import make_record, read_manifest, seeded_split, write_manifest
from visec.data.synthetic.manipulations import FAMILIES
from visec.data.synthetic.sources import GAN_SIZE, gan_faces, landmarks68, nir_twin, photo_faces
from visec.errors import ConfigError
from visec.registry import unknown_name

DATASET = "synth"
GENERATOR_VERSION = 2  # bump when the images a seed produces change
# (spec, level, weight): the quality of a video, the same distribution for real and fake
QUALITY = (("none", 0, 0.3), ("jpeg-90", 1, 0.1), ("jpeg-75", 2, 0.12), ("jpeg-60", 3, 0.08),
           ("blur-0.6", 1, 0.1), ("blur-1", 2, 0.06), ("noise-3", 2, 0.08), ("resize-0.7", 2, 0.1),
           ("resize-0.5", 3, 0.06))


@dataclass(frozen=True)
class SynthParams:
    seed: int = 0
    identities: int = 500  # DCGAN identities (plus the 2 public-domain portraits)
    frames: int = 2  # frames per video
    size: int = 64  # working size; the 64 px GAN faces are up-sampled (bicubic) when larger
    families: tuple[str, ...] = ("faceswap", "component", "resynth")
    photos: bool = True
    version: int = GENERATOR_VERSION

    def check(self) -> None:
        for name in self.families:
            if name not in FAMILIES:
                raise ConfigError(unknown_name("manipulation family", name, FAMILIES))
        if self.identities < 12 or self.frames < 1 or not self.families or not 32 <= self.size <= 512:
            # 12 identities give every split at least two, so each fake has a donor from its own split
            raise ConfigError("synth needs identities >= 12, frames >= 1, at least one family and "
                              "32 <= size <= 512")


@dataclass
class SynthReport:
    manifest: Path
    images: int
    seconds: float
    cached: bool
    counts: dict[str, int] = field(default_factory=dict)
    manifest_sha256: str = ""


def manifest_hash(path: Path) -> str:
    """SHA-256 of the manifest's rows (paths, labels, splits and file hashes), order-independent."""
    df = read_manifest(path, check_files=False).df
    cols = [c for c in sorted(df.columns)]
    rows = sorted(json.dumps([str(v) for v in r]) for r in df[cols].itertuples(index=False))
    return hashlib.sha256("\n".join([",".join(cols), *rows]).encode()).hexdigest()


def _jitter(rng: np.random.Generator, size: int) -> np.ndarray:
    angle = rng.uniform(-4, 4)
    scale = rng.uniform(0.97, 1.03)
    m = cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale)
    m[:, 2] += rng.uniform(-0.025, 0.025, 2) * size
    return m


def _warp(img: np.ndarray, lm: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    size = img.shape[0]
    out = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return out, lm @ m[:, :2].T + m[:, 2]


def _quality(rng: np.random.Generator) -> tuple[str, int]:
    w = np.array([q[2] for q in QUALITY])
    spec, level, _ = QUALITY[rng.choice(len(QUALITY), p=w / w.sum())]
    return spec, level


def _save(img: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, compress_level=1)


def make_synth_dataset(out: str | os.PathLike, params: SynthParams | None = None, *,
                       progress: Callable[[int, int], None] | None = None, force: bool = False,
                       **overrides) -> SynthReport:
    """Generate (or reuse) the embedded dataset under ``out``; see the module docstring."""
    p = params or SynthParams()
    if overrides:
        p = SynthParams(**{**asdict(p), **overrides})
    p = SynthParams(**{**asdict(p), "families": tuple(p.families)})
    p.check()
    out = Path(out)
    meta_path, manifest_path = out / "synth.json", out / "manifest.jsonl"
    wanted = asdict(p) | {"families": list(p.families)}
    if not force and meta_path.is_file() and manifest_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("params") == wanted:
            return SynthReport(manifest_path, meta["images"], 0.0, True, meta["counts"], meta["manifest_sha256"])
    if out.exists() and any(out.iterdir()):
        if not meta_path.is_file():
            raise ConfigError(f"{out} exists and is not a visec synth folder; pick an empty folder")
        for sub in ["real", "masks", "nir", *FAMILIES]:  # a different parameter set: start again
            shutil.rmtree(out / sub, ignore_errors=True)
    start = time.perf_counter()
    size = p.size

    faces = gan_faces(p.identities, p.seed)
    if size != GAN_SIZE:
        faces = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_CUBIC) for f in faces])
    lms = np.stack([landmarks68(f) for f in faces])
    ids = [f"g{i:05d}" for i in range(p.identities)]
    generator = {i: "dcgan" for i in ids}
    if p.photos:
        for name, face in photo_faces(lms.mean(0), size).items():
            faces = np.concatenate([faces, face[None]])
            lms = np.concatenate([lms, landmarks68(face)[None]])
            ids.append(f"photo-{name}")
            generator[ids[-1]] = "photo"
    index = {sid: k for k, sid in enumerate(ids)}
    split_of = seeded_split(ids, seed=p.seed)
    # family per identity: round-robin over a seeded order within each split (balanced families)
    family_of: dict[str, str] = {}
    rng = np.random.default_rng([p.seed, 7])
    for split in ("train", "val", "test"):
        members = [s for s in ids if split_of[s] == split]
        for rank, k in enumerate(rng.permutation(len(members))):
            family_of[members[k]] = p.families[rank % len(p.families)]

    rows: list[dict] = []
    total = len(ids) * 2 * p.frames
    for n, sid in enumerate(ids):
        rng = np.random.default_rng([p.seed, 1, index[sid]])  # per identity: order-independent
        fam = family_of[sid]
        pool = [s for s in ids if split_of[s] == split_of[sid] and s != sid]
        donor = pool[rng.integers(len(pool))]
        base, base_lm = faces[index[sid]], lms[index[sid]]
        for label, manip in ((0, "real"), (1, fam)):
            quality, level = _quality(rng)
            vid = f"{DATASET}/{manip}/{sid}"
            for k in range(p.frames):
                m = _jitter(np.random.default_rng([p.seed, 2, index[sid], k]), size)  # same motion for both
                frame, lm = _warp(base, base_lm, m)
                extra = {"source_id": sid, "generator": generator[sid], "quality": quality,
                         "quality_level": level}
                if label:
                    d_frame, d_lm = faces[index[donor]], lms[index[donor]]
                    frame, mask, info = FAMILIES[fam](frame, lm, d_frame, d_lm, rng)
                    mrel = Path("masks") / manip / f"{sid}_f{k}.png"
                    _save(np.round(mask * 255).astype(np.uint8), out / mrel)
                    extra |= {"donor_id": donor, "mask": mrel.as_posix(),
                              "edit": ";".join(f"{a}={b}" for a, b in info.items())}
                q_seed = int(rng.integers(2**31))
                img = corrupt(frame, quality, seed=q_seed)
                rel = Path(manip) / f"{sid}_f{k}.png"
                _save(img, out / rel)
                # the near-infrared twin of the same (manipulated) frame, degraded alike
                nir = nir_twin(frame, seed=q_seed)
                nir = corrupt(np.repeat(nir[..., None], 3, axis=2), quality, seed=q_seed)[..., 0]
                nrel = Path("nir") / manip / f"{sid}_f{k}.png"
                _save(np.ascontiguousarray(nir), out / nrel)
                extra["nir"] = nrel.as_posix()
                rows.append(make_record(out, rel, dataset=DATASET, split=split_of[sid], label=label,
                                        manipulation=manip, video_id=vid, frame_index=k, **extra))
        if progress:
            progress(min(total, (n + 1) * 2 * p.frames), total)
    write_manifest(rows, manifest_path)
    digest = manifest_hash(manifest_path)
    counts = {m: sum(r["manipulation"] == m for r in rows) for m in ["real", *p.families]}
    meta_path.write_text(json.dumps({"params": wanted, "images": len(rows), "counts": counts,
                                     "manifest_sha256": digest}, indent=2) + "\n")
    return SynthReport(manifest_path, len(rows), time.perf_counter() - start, False, counts, digest)
