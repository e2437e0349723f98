"""One-call inference: an image or a video in, per-frame and per-video fake probabilities out.

The same chain as training data went through: evenly spaced frames -> face detection -> 5-point
alignment -> crop -> the trained detector. Frames without a face are counted and listed, never
scored as if they had one::

    from visec.inference import detect

    result = detect("runs/xception-ffpp", "clip.mp4", n_frames=32, detector="mtcnn")
    result.video_prob, result.frames, result.frames_without_face
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from visec.data.datamodule import to_tensor
from visec.data.images import load_rgb
from visec.data.manifest import media_of
from visec.engine.module import BinaryDetector
from visec.errors import DataError, VisecError


@dataclass
class Detection:
    """Scores of one image or video. ``video_prob`` is the mean frame probability (None: no face).

    ``frames_expected`` is the number of frames the video's container declares and
    ``frames_decoded`` the number that decode (both 1 for an image): a truncated or scrambled
    video is scored on the frames that decode, and says so (``partial``, :meth:`summary`)."""

    path: str
    frames: list[dict[str, Any]] = field(default_factory=list)  # frame_index, prob, box, det_score
    frames_without_face: list[int] = field(default_factory=list)
    frames_unreadable: list[int] = field(default_factory=list)
    frames_expected: int = 1
    frames_decoded: int = 1

    @property
    def partial(self) -> bool:
        """Fewer frames decode than the container declares."""
        return self.frames_decoded < self.frames_expected

    @property
    def warning(self) -> str | None:
        """A one-line warning when fewer than half the declared frames decode, else ``None``."""
        from visec.preprocess.video import PARTIAL_WARN_FRACTION

        if self.frames_decoded < PARTIAL_WARN_FRACTION * self.frames_expected:
            return (f"{self.path}: only {self.frames_decoded} of the {self.frames_expected} frames its container "
                    f"declares decode (truncated or damaged); scored on those")
        return None

    @property
    def video_prob(self) -> float | None:
        return float(np.mean([f["prob"] for f in self.frames])) if self.frames else None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "video_prob": self.video_prob, "frames": self.frames,
                "frames_without_face": self.frames_without_face, "frames_unreadable": self.frames_unreadable,
                "frames_expected": self.frames_expected, "frames_decoded": self.frames_decoded}

    def summary(self) -> str:
        head = (f"{self.path}: P(fake) = {self.video_prob:.3f} over {len(self.frames)} face frame(s)"
                if self.frames else f"{self.path}: no face found in any sampled frame")
        extra = [f"{len(self.frames_without_face)} frame(s) without a face"] if self.frames_without_face else []
        extra += [f"{len(self.frames_unreadable)} unreadable frame(s)"] if self.frames_unreadable else []
        extra += ([f"partly decodable: {self.frames_decoded} of {self.frames_expected} declared frames decode"]
                  if self.partial else [])
        return head + (f" ({', '.join(extra)})" if extra else "")


def detect(run: str | os.PathLike | Any, path: str | os.PathLike, *, n_frames: int = 32,
           detector: str | Any = "mtcnn", size: int = 256, margin: float = 0.3,
           checkpoint: str | os.PathLike | None = None, batch_size: int = 32) -> Detection:
    """Score ``path`` (an image or a video) with a trained run (a run folder or an :class:`Engine`).

    ``size`` and ``margin`` should match the ``visec preprocess`` settings the model was trained on;
    the crop is then resized to the model's ``data.image_size`` exactly as in training.
    """
    from visec.engine import Engine
    from visec.preprocess.align import align_face, check_crop
    from visec.preprocess.detect import build_detector, pick_face
    from visec.data.sampling import sample_indices
    from visec.preprocess.video import frame_counts, read_frames

    if isinstance(n_frames, bool) or int(n_frames) != n_frames or n_frames < 1:
        raise VisecError(f"n_frames must be a whole number >= 1, got {n_frames!r}")
    check_crop(size, margin)  # before the run is loaded
    engine = run if isinstance(run, Engine) else Engine.from_run(run)
    module, _ = engine.load_module(checkpoint)
    if not isinstance(module, BinaryDetector):
        raise VisecError(f"detect scores face-forgery detectors; the run's method '{engine.cfg.method}' is not one")
    module.eval()
    face_detector = build_detector(detector)
    path = Path(path)
    expected = decoded = 1
    if media_of(path) == "image":
        frames = [(0, load_rgb(path))]
    else:
        counts = frame_counts(path)
        expected, decoded = counts.expected, counts.decoded
        frames = read_frames(path, sample_indices(decoded, n_frames))
    if not frames:
        raise DataError(f"{path}: no frames could be sampled")
    result = Detection(str(path), frames_expected=expected, frames_decoded=decoded)
    crops, meta = [], []
    for index, rgb in frames:
        if rgb is None:
            result.frames_unreadable.append(index)
            continue
        face = pick_face(face_detector.detect(rgb))
        if face is None:
            result.frames_without_face.append(index)
            continue
        crops.append(to_tensor(align_face(rgb, face.landmarks, size, margin), engine.cfg.data.image_size))
        meta.append({"frame_index": int(index), "box": [round(float(v), 1) for v in face.box],
                     "det_score": round(float(face.score), 4)})
    with torch.no_grad():
        for start in range(0, len(crops), batch_size):
            probs = torch.sigmoid(module(torch.stack(crops[start:start + batch_size])).float())
            for m, p in zip(meta[start:start + batch_size], probs.tolist()):
                result.frames.append({**m, "prob": p})
    return result


@dataclass
class SequenceDetection:
    """A sequential detector's answer for one face image: the predicted edits in order, and
    (MMNet with recovery) where the recovered face was written."""

    path: str
    sequence: list[int]
    names: list[str]
    score: float
    recovered: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sequence": self.sequence, "edits": self.names, "log_prob": self.score,
                "recovered": self.recovered}

    def summary(self) -> str:
        edits = " > ".join(self.names) if self.names else "no edit (original)"
        return f"{self.path}: {edits} (log p {self.score:.2f})" + (
            f"; recovered face: {self.recovered}" if self.recovered else "")


def edit_vocabulary(engine: Any) -> tuple[str, ...]:
    """The names of edit ids 1..5 of a sequential run: its manifest's subset, else ``model.subset``."""
    from visec.data.sequences import SUBSETS

    subset = engine.cfg.method_params().subset
    if engine.cfg.data.manifest is not None and Path(engine.cfg.data.manifest).is_file():
        from visec.data.sequences import read_sequence_manifest

        df = read_sequence_manifest(engine.cfg.data.manifest, check_files=False).df
        if "subset" in df and df["subset"].nunique() == 1:
            subset = str(df["subset"].iloc[0])
    return SUBSETS.get(subset, tuple(str(i) for i in range(1, 6)))


def detect_sequence(run: str | os.PathLike | Any, path: str | os.PathLike, *, out: str | os.PathLike | None = None,
                    checkpoint: str | os.PathLike | None = None) -> SequenceDetection:
    """Predict the ordered edits of one aligned face image with a sequential run (MMNet or
    SeqFakeFormer); with MMNet's recovery branch, write the recovered face to ``out`` (a folder,
    default ``RUN/recovered``) as ``<name>.recovered.png``.

    The image is taken as the face crop the model was trained on (Seq-DeepFake's images are aligned
    faces), resized to ``data.image_size``."""
    from PIL import Image

    from visec.engine import Engine
    from visec.methods.mmnet.lightning_model import SequenceModule

    engine = run if isinstance(run, Engine) else Engine.from_run(run)
    module, _ = engine.load_module(checkpoint)
    if not isinstance(module, SequenceModule):
        raise VisecError(f"the run's method '{engine.cfg.method}' is not a sequential detector")
    path = Path(path)
    if media_of(path) != "image":
        raise DataError(f"{path}: sequential detection takes face images, not videos")
    module.eval()
    x = to_tensor(load_rgb(path), engine.cfg.data.image_size)[None]
    with torch.no_grad():
        res = module.generate(x)
    seq = [int(v) for v in res["sequence"][0].tolist()]
    vocab = edit_vocabulary(engine)
    names = [vocab[v - 1] for v in seq if v]
    written = None
    if "recovered" in res:
        folder = Path(out) if out is not None else engine.run_dir / "recovered"
        if folder.exists() and not folder.is_dir():
            raise DataError(f"{folder}: exists and is not a folder (--out names a folder)")
        folder.mkdir(parents=True, exist_ok=True)
        img = (res["recovered"][0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        written = str(folder / f"{path.stem}.recovered.png")
        Image.fromarray(img).save(written)
    return SequenceDetection(str(path), seq, names, float(res["score"][0]), written)
