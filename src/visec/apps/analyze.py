"""One-call forensic analysis: every trained detector on an image or a video, with the evidence.

``visec analyze`` and ``visec serve`` both call :class:`Analyzer`::

    from visec.apps.analyze import Analyzer

    analyzer = Analyzer.from_runs("runs/bench/forgery")   # models load once
    result = analyzer.analyze("clip.mp4")                  # an Analysis (pydantic; JSON schema below)
    result.ensemble.verdict, [d.prob for d in result.detector_verdicts]

What one analysis does:

1. **Input.** The file's type is sniffed from its first bytes (never from its extension). Images
   whose header declares more than ``max_pixels`` pixels are refused before decoding (a
   decompression bomb); videos are sampled at ``frames`` evenly spaced frames.
2. **Faces.** Every face of every sampled frame is detected (``faces="detect"``: the face detector
   with five landmarks, then the same similarity alignment as ``visec preprocess``), or the whole
   image is taken as one aligned face crop (``faces="whole"``, for inputs that already are crops,
   like ``visec preprocess`` output and the embedded data). ``faces="auto"`` (the default) takes a
   square image no larger than the detectors' training crops (their ``visec preprocess`` size, or
   their input size when they were trained on images as given) as a crop and detects faces in
   everything else; the analysis records the mode used and says when it chose ``whole``. Faces are tracked across frames by box
   overlap (greedy IoU >= 0.3 with the track's last box); frames without a face and frames that do
   not decode are listed, never scored.
3. **Detectors.** Every face-forgery run found under the runs folder scores every face. A run's
   crop follows its training data: the size and margin of the ``visec preprocess`` report beside
   its manifest when there is one, the defaults otherwise (said in the notes). Its decision
   threshold is its validation-EER threshold stored at training time (in its result card, else its
   checkpoint's sidecar); nothing is tuned on the analysed file.
4. **Scores.** Per track, a detector's score is the mean frame probability (``visec detect``'s
   per-video score); per input, it is the highest track score (a file is as fake as its most fake
   face), decided at the run's threshold. The ensemble verdict is the majority of the detectors'
   decisions (``split`` on a tie) and its agreement the share of detectors in the majority.
5. **Evidence.** For each track's most suspicious frame, the aligned face and every detector's
   saliency map (the detector's own :meth:`~visec.engine.module.BinaryDetector.saliency`).

Leave-one-manipulation-out runs (``data.holdout`` set) saw fewer manipulations than their
intra-dataset twins; they are left out unless ``all_runs=True`` and the notes count them. Runs of
other families (adversarial training, identity tracing, prompt learning) are not detectors and are
named in the notes. A sequential-deepfake run (MMNet, SeqFakeFormer) found under the runs folder
answers ``sequence`` for the main face (the first track's key frame): the edits in order and, with
MMNet's recovery branch, the recovered face; without one, the notes say that edit sequences and
face recovery are not part of the analysis.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import numpy as np
from pydantic import BaseModel, Field

from visec.data.images import MAX_PIXELS
from visec.errors import DataError, VisecError

SCHEMA_NAME = "visec.analysis"
#: Bumped whenever a field of :class:`Analysis` changes meaning or is removed (adding an optional
#: field keeps the version); ``docs/analysis.schema.json`` is the published schema of this version.
SCHEMA_VERSION = 1
DEFAULT_MAX_PIXELS = MAX_PIXELS  # visec.data.images: the one decompression-bomb rule of every reader
TRACK_IOU = 0.3
MAP_SIZE = 128  # pixels of the crops and saliency maps shown
FACE_MODES = ("auto", "detect", "whole")


# -- the result schema ---------------------------------------------------------------------------
class DetectorInfo(BaseModel):
    name: str = Field(description="the run's card name (method and variant), unique in one analysis")
    run: str = Field(description="the run folder")
    method: str
    threshold: float = Field(description="decision threshold on P(fake): the run's validation EER")
    threshold_source: str
    image_size: int = Field(description="the model's input size in pixels")
    crop: dict[str, Any] = Field(description="face crop settings: size, margin and where they come from")
    test_auc: Optional[float] = Field(None, description="frame AUC of the run's intra-dataset test card")
    saliency: bool = Field(description="whether the detector provides saliency maps")


class InputInfo(BaseModel):
    path: str
    name: str
    media: Literal["image", "video"]
    bytes: int
    sha256: str
    width: int
    height: int
    frames_total: int = Field(description="frames in the file (1 for an image)")
    frames_sampled: list[int]


class FaceScore(BaseModel):
    frame_index: int
    track: int
    box: list[float] = Field(description="x0, y0, x1, y1 in the frame's pixels")
    det_score: Optional[float] = Field(None, description="the face detector's confidence (None: whole image)")
    probs: dict[str, float] = Field(description="P(fake) per detector name")


class TrackResult(BaseModel):
    track: int
    frames: list[int]
    probs: dict[str, float] = Field(description="mean frame P(fake) per detector")
    fake: dict[str, bool] = Field(description="decision per detector at its threshold")
    key_frame: int = Field(description="the frame shown as evidence: highest mean P(fake) over detectors")


class DetectorVerdict(BaseModel):
    detector: str
    prob: Optional[float] = Field(description="highest track score (None: no face)")
    threshold: float
    fake: Optional[bool]


class Ensemble(BaseModel):
    verdict: Literal["fake", "real", "split", "no face"]
    fake_votes: int
    voters: int
    agreement: Optional[float] = Field(description="share of detectors in the majority")
    mean_prob: Optional[float]


class Evidence(BaseModel):
    track: int
    frame_index: int
    face_png: str = Field(description="the aligned face, base64 PNG")
    maps_png: dict[str, Optional[str]] = Field(description="saliency overlay per detector, base64 PNG (None: no maps)")


class Sequence(BaseModel):
    """A sequential-deepfake run's answer (edit sequence and the recovered face)."""

    detector: str
    edits: list[str]
    recovered_png: Optional[str] = None


class Analysis(BaseModel):
    schema_name: str = Field(SCHEMA_NAME, alias="schema")
    schema_version: int = SCHEMA_VERSION
    visec: str
    created: str
    input: InputInfo
    faces_mode: Literal["detect", "whole"] = Field(description="how faces were found in this input: detected "
                                                 "and aligned, or the whole image taken as the face crop")
    detectors: list[DetectorInfo]
    faces: list[FaceScore]
    frames_without_face: list[int]
    frames_unreadable: list[int]
    tracks: list[TrackResult]
    detector_verdicts: list[DetectorVerdict]
    ensemble: Ensemble
    evidence: list[Evidence]
    sequence: Optional[Sequence] = Field(None, description="present when a sequential-deepfake run is")
    seconds: float
    notes: list[str]

    model_config = {"populate_by_name": True}

    def to_json(self, indent: int | None = None) -> str:
        return self.model_dump_json(by_alias=True, indent=indent)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of :class:`Analysis` (what ``visec analyze --schema`` prints)."""
    return Analysis.model_json_schema(by_alias=True)


# -- input sniffing ------------------------------------------------------------------------------
_IMAGE_MAGIC = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"), (b"GIF87a", "gif"),
                (b"GIF89a", "gif"), (b"BM", "bmp"), (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"))


def sniff(head: bytes) -> tuple[str, str] | None:
    """``(media, format)`` from a file's first bytes (at least 16), or ``None`` when it is neither an
    image nor a video visec reads."""
    for magic, fmt in _IMAGE_MAGIC:
        if head.startswith(magic):
            return "image", fmt
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image", "webp"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video", "avi"
    if head[4:8] == b"ftyp":
        return "video", "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "video", "mkv"
    return None


def _read_image(path: Path, max_pixels: int, label: str) -> np.ndarray:
    from PIL import Image

    from visec.data.images import check_pixels, load_rgb

    try:
        with Image.open(path) as im:
            w, h = im.size
    except Image.DecompressionBombError as exc:
        raise DataError(f"{label}: refused as a decompression bomb ({str(exc).splitlines()[0]})") from None
    except Exception as exc:  # PIL raises many types for a broken header
        raise DataError(f"{label}: cannot decode image ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    check_pixels(w, h, label, max_pixels)
    if min(w, h) < 8:
        raise DataError(f"{label}: the image is {w} x {h} pixels; too small to hold a face")
    return load_rgb(path, max_pixels=max_pixels)


def _iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def assign_tracks(frames: list[list[list[float]]], iou: float = TRACK_IOU) -> list[list[int]]:
    """Track ids for the boxes of consecutive frames: each box joins the unclaimed track whose last
    box overlaps it most (IoU >= ``iou``), largest boxes first; otherwise it opens a new track."""
    last: dict[int, list[float]] = {}
    out: list[list[int]] = []
    for boxes in frames:
        ids = [-1] * len(boxes)
        claimed: set[int] = set()
        order = sorted(range(len(boxes)), key=lambda i: -(boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1]))
        for i in order:
            best, best_iou = None, iou
            for t, box in last.items():
                overlap = _iou(boxes[i], box)
                if t not in claimed and overlap >= best_iou:
                    best, best_iou = t, overlap
            if best is None:
                best = len(last)
            ids[i] = best
            claimed.add(best)
            last[best] = boxes[i]
        out.append(ids)
    return out


def _png(rgb: np.ndarray) -> str:
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise VisecError("could not encode a PNG")
    return base64.b64encode(buf.tobytes()).decode("ascii")


def overlay(face: np.ndarray, saliency: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """A saliency map in [0, 1] as a jet overlay on the face (both at the face's size), uint8 RGB."""
    import cv2

    sal = cv2.resize(saliency.astype(np.float32), face.shape[1::-1], interpolation=cv2.INTER_LINEAR)
    heat = cv2.applyColorMap(np.clip(sal * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)
    return np.clip((1 - alpha) * face + alpha * heat, 0, 255).astype(np.uint8)


# -- the detectors under a runs folder ------------------------------------------------------------
@dataclass
class LoadedDetector:
    info: DetectorInfo
    module: Any  # BinaryDetector in eval mode


@dataclass
class LoadedSequential:
    name: str
    module: Any  # a visec.methods.mmnet SequenceModule
    image_size: int
    vocabulary: tuple[str, ...]


def _run_dirs(root: Path) -> list[Path]:
    from visec.engine.engine import BEST, CONFIG_FILE

    if (root / CONFIG_FILE).is_file():
        return [root]
    return sorted(p.parent for p in root.rglob(CONFIG_FILE) if (p.parent / BEST).is_file())


def _threshold(run: Path) -> tuple[float | None, str, float | None]:
    """(validation-EER threshold, where it was read, intra test AUC) from the run's cards, else the
    best checkpoint's sidecar (both written at training time)."""
    from visec.cards import CARD_SUFFIX
    from visec.checkpoint import read_sidecar
    from visec.engine.engine import BEST

    threshold, source, auc = None, "", None
    for card in sorted((run / "cards").glob(f"*{CARD_SUFFIX}")):
        try:
            data = json.loads(card.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        extra = data.get("extra") if isinstance(data.get("extra"), dict) else {}
        frame = ((data.get("metrics") or {}).get("frame") or {}) if isinstance(data.get("metrics"), dict) else {}
        clean = "+" not in str(data.get("protocol", "")) and "attack" not in extra
        value = frame.get("auc")
        value = value.get("value") if isinstance(value, dict) else value  # {"value", "ci"} on cards
        if clean and auc is None and isinstance(value, (int, float)):
            auc = float(value)
        if threshold is None and isinstance(extra.get("val_eer_threshold"), (int, float)):
            threshold, source = float(extra["val_eer_threshold"]), f"validation EER, card {card.name}"
    if threshold is None:
        try:
            meta = read_sidecar(run / BEST)
        except (VisecError, OSError):
            meta = {}
        if isinstance(meta.get("val_eer_threshold"), (int, float)):
            threshold, source = float(meta["val_eer_threshold"]), f"validation EER, {BEST} sidecar"
    return threshold, source, auc


def _crop_settings(cfg: Any, size: int, margin: float) -> dict[str, Any]:
    manifest = getattr(cfg.data, "manifest", None)
    if manifest:
        report = Path(manifest).parent / "preprocess_report.json"
        try:
            config = json.loads(report.read_text(encoding="utf-8")).get("config", {})
            return {"size": int(config["size"]), "margin": float(config["margin"]), "from_report": True,
                    "source": f"visec preprocess report of the training data ({report})"}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
    return {"size": int(size), "margin": float(margin), "from_report": False,
            "source": "defaults (the training data has no visec preprocess report)"}


def load_detectors(runs: str | os.PathLike, *, all_runs: bool = False, size: int = 256,
                   margin: float = 0.3) -> tuple[list[LoadedDetector], list[str]]:
    """Every face-forgery detector under ``runs`` (loaded once, eval mode) and notes on what was
    left out and why."""
    from visec.engine import Engine
    from visec.engine.engine import card_name
    from visec.engine.method import method_of
    from visec.engine.module import BinaryDetector

    root = Path(runs)
    if not root.exists():
        raise VisecError(f"runs folder not found: {root} (train one with `make demo`, `visec bench` "
                         f"or `visec train`, or name another with --runs)")
    found: list[LoadedDetector] = []
    notes: list[str] = []
    holdout, other, broken = [], [], []
    sequential = []
    for run in _run_dirs(root):
        try:
            engine = Engine.from_run(run)
        except VisecError as exc:
            broken.append(f"{run}: {exc}")
            continue
        cfg = engine.cfg
        family = getattr(method_of(cfg.method), "family", "")
        if family == "sequential deepfake detection":
            sequential.append(run)
            continue
        if cfg.data.holdout and not all_runs:
            holdout.append(run)
            continue
        if cfg.data.modality != "vis":
            other.append(f"{run.relative_to(root) if run != root else run.name} (needs {cfg.data.modality} input)")
            continue
        try:
            module, _ = engine.load_module()
        except VisecError as exc:
            broken.append(f"{run}: {exc}")
            continue
        if not isinstance(module, BinaryDetector):
            other.append(f"{run.relative_to(root) if run != root else run.name} ({cfg.method}: not a face-forgery detector)")
            continue
        module.eval()
        threshold, source, auc = _threshold(run)
        if threshold is None:
            threshold, source = 0.5, "0.5: no stored validation threshold (re-test the run with `visec test`)"
            notes.append(f"{run}: no stored validation-EER threshold; decisions at 0.5")
        name = card_name(cfg)
        if any(d.info.name == name for d in found):
            name = f"{name} ({run.relative_to(root) if run != root else run.name})"
        found.append(LoadedDetector(DetectorInfo(
            name=name, run=str(run), method=cfg.method, threshold=threshold, threshold_source=source,
            image_size=int(cfg.data.image_size), crop=_crop_settings(cfg, size, margin), test_auc=auc,
            saliency=getattr(module.net, "cam_layer", None) is not None
            or type(module).saliency is not BinaryDetector.saliency), module))
    if holdout:
        notes.append(f"{len(holdout)} leave-one-manipulation-out run(s) left out (they saw fewer manipulations; "
                     f"--all-runs includes them)")
    if other:
        notes.append("not analysed: " + "; ".join(other))
    if broken:
        notes.append("unreadable runs: " + "; ".join(broken))
    if not sequential:
        notes.append("no sequential-deepfake run found: edit sequences and face recovery are not part of "
                     "this analysis")
    return found, notes


def load_sequential(runs: str | os.PathLike) -> tuple[list[LoadedSequential], list[str]]:
    """The sequential-deepfake runs (MMNet, SeqFakeFormer) under ``runs``; the first one found answers
    the analysis' ``sequence`` (the edits in order, and MMNet's recovered face)."""
    from visec.engine import Engine
    from visec.engine.engine import card_name
    from visec.engine.method import method_of
    from visec.inference import edit_vocabulary

    root = Path(runs)
    found, notes = [], []
    for run in _run_dirs(root) if root.exists() else []:
        try:
            engine = Engine.from_run(run)
            if getattr(method_of(engine.cfg.method), "family", "") != "sequential deepfake detection":
                continue
            module, _ = engine.load_module()
        except VisecError as exc:
            notes.append(f"unreadable sequential run {run}: {exc}")
            continue
        found.append(LoadedSequential(f"{card_name(engine.cfg)} ({run.relative_to(root) if run != root else run.name})",
                                      module.eval(), int(engine.cfg.data.image_size), edit_vocabulary(engine)))
    if len(found) > 1:
        notes.append(f"{len(found)} sequential-deepfake runs found; the edit sequence is {found[0].name}'s")
    return found, notes


# -- the analyser ---------------------------------------------------------------------------------
class Analyzer:
    """Loaded detectors and a face detector, shared by every analysis (thread-safe: model calls are
    serialised, decoding runs in parallel)."""

    def __init__(self, detectors: list[LoadedDetector], notes: list[str] | None = None, *,
                 face_detector: str = "mtcnn", faces: Literal["auto", "detect", "whole"] = "auto",
                 frames: int = 16, max_pixels: int = DEFAULT_MAX_PIXELS, maps: bool = True,
                 sequential: list[LoadedSequential] | None = None) -> None:
        if not detectors:
            raise VisecError("no trained face-forgery detector found" + (f" ({'; '.join(notes)})" if notes else "")
                             + "; train one with `make demo` or `visec train`")
        if faces not in FACE_MODES:
            raise VisecError(f"faces must be one of {', '.join(FACE_MODES)}, not {faces!r}")
        if frames < 1:
            raise VisecError(f"frames must be at least 1, not {frames}")
        self.detectors = detectors
        self.notes = list(notes or [])
        self.faces_mode = faces
        self.frames = int(frames)
        self.max_pixels = int(max_pixels)
        self.maps = maps
        self.sequential = list(sequential or [])
        self._face_detector_name = face_detector
        self._face_detector = None
        self._model_lock = threading.Lock()
        self._face_lock = threading.Lock()
        if faces != "whole":
            self._get_face_detector()  # load now (a server loads its models once, at start-up)

    @classmethod
    def from_runs(cls, runs: str | os.PathLike, *, all_runs: bool = False, size: int = 256,
                  margin: float = 0.3, **kw: Any) -> "Analyzer":
        detectors, notes = load_detectors(runs, all_runs=all_runs, size=size, margin=margin)
        sequential, more = load_sequential(runs)
        return cls(detectors, notes + more, sequential=sequential, **kw)

    def _get_face_detector(self):
        if self._face_detector is None:
            from visec.preprocess.detect import build_detector

            self._face_detector = build_detector(self._face_detector_name)
        return self._face_detector

    # -- reading ----------------------------------------------------------------------------------
    def _frames(self, path: Path, media: str, label: str) -> tuple[list[tuple[int, np.ndarray | None]], int]:
        if media == "image":
            return [(0, _read_image(path, self.max_pixels, label))], 1
        from visec.data.sampling import sample_indices
        from visec.preprocess.video import count_frames, read_frames

        total = count_frames(path)
        if total < 1:
            raise DataError(f"{label}: the video has no decodable frame")
        frames = read_frames(path, sample_indices(total, self.frames))
        if not any(rgb is not None for _, rgb in frames):
            raise DataError(f"{label}: none of the {len(frames)} sampled frames decodes")
        return frames, total

    def crop_side(self) -> int:
        """The largest face crop the detectors were trained on: a square image no larger than this is
        taken as an aligned crop in ``auto`` mode."""
        return max(d.info.crop["size"] if d.info.crop.get("from_report") else d.info.image_size
                   for d in self.detectors)

    def _mode_for(self, media: str, first: np.ndarray) -> str:
        if self.faces_mode != "auto":
            return self.faces_mode
        h, w = first.shape[:2]
        return "whole" if media == "image" and h == w and h <= self.crop_side() else "detect"

    def _faces(self, rgb: np.ndarray, mode: str) -> list[tuple[list[float], float | None, np.ndarray | None]]:
        """(box, detector score, landmarks) of every face, largest first."""
        h, w = rgb.shape[:2]
        if mode == "whole":
            return [([0.0, 0.0, float(w), float(h)], None, None)]
        with self._face_lock:
            faces = self._get_face_detector().detect(rgb)
        faces = sorted(faces, key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
        return [([round(float(v), 1) for v in f.box], float(f.score), f.landmarks) for f in faces]

    @staticmethod
    def _crop(rgb: np.ndarray, landmarks: np.ndarray | None, crop: dict[str, Any]) -> np.ndarray:
        if landmarks is None:
            return rgb
        from visec.preprocess.align import align_face

        return align_face(rgb, landmarks, crop["size"], crop["margin"])

    # -- one input --------------------------------------------------------------------------------
    def analyze(self, path: str | os.PathLike, *, name: str | None = None,
                progress: Callable[[int, int], None] | None = None) -> Analysis:
        """Analyse one image or video file (its type sniffed from its content)."""
        import time

        import torch

        import visec
        from visec.data.datamodule import to_tensor

        start = time.perf_counter()
        from visec.paths import file_problem, shown

        path = Path(path)
        problem = file_problem(path)  # before opening: a FIFO or a device would never end
        if problem is not None:
            raise DataError(f"{shown(path)}: {'file not found' if problem == 'not found' else problem}")
        size = path.stat().st_size
        if size == 0:
            raise DataError(f"{name or path.name}: empty file (0 bytes)")
        with open(path, "rb") as fh:
            head = fh.read(32)
        kind = sniff(head)
        if kind is None:
            raise DataError(f"{name or path.name}: not an image or video visec reads (PNG, JPEG, GIF, BMP, "
                            f"TIFF, WebP; MP4/MOV, AVI, MKV/WebM), judged by its content")
        media = kind[0]
        frames, total = self._frames(path, media, name or path.name)
        first = next(rgb for _, rgb in frames if rgb is not None)
        notes = list(self.notes)
        mode = self._mode_for(media, first)
        if mode == "whole" and self.faces_mode == "auto":
            notes.append(f"taken as an aligned face crop (a square image of {first.shape[0]} px, no larger than "
                         f"the detectors' training crops of {self.crop_side()} px); --faces detect finds faces in it")
        unreadable = [int(i) for i, rgb in frames if rgb is None]
        without: list[int] = []
        per_frame: list[tuple[int, np.ndarray, list[tuple[list[float], float | None, np.ndarray | None]]]] = []
        for k, (index, rgb) in enumerate(frames):
            if rgb is not None:
                faces = self._faces(rgb, mode)
                if faces:
                    per_frame.append((int(index), rgb, faces))
                else:
                    without.append(int(index))
            if progress is not None:
                progress(k + 1, len(frames))
        tracks_of = assign_tracks([[f[0] for f in faces] for _, _, faces in per_frame])

        # every face through every detector, in batches per crop setting
        faces_out: list[FaceScore] = []
        crops_for_maps: dict[tuple[int, int], dict[str, np.ndarray]] = {}  # (frame, track) -> crop per detector
        for (index, rgb, faces), ids in zip(per_frame, tracks_of):
            for (box, score, lm), track in zip(faces, ids):
                faces_out.append(FaceScore(frame_index=index, track=track, box=box,
                                           det_score=None if score is None else round(score, 4), probs={}))
        with self._model_lock, torch.no_grad():
            for det in self.detectors:
                crops: list[np.ndarray] = []
                for (index, rgb, faces), ids in zip(per_frame, tracks_of):
                    for (box, score, lm), track in zip(faces, ids):
                        crop = self._crop(rgb, lm, det.info.crop)
                        crops.append(crop)
                        crops_for_maps.setdefault((index, track), {})[det.info.name] = crop
                for s in range(0, len(crops), 32):
                    batch = torch.stack([to_tensor(c, det.info.image_size) for c in crops[s:s + 32]])
                    probs = torch.sigmoid(det.module(batch).float()).tolist()
                    for face, p in zip(faces_out[s:s + 32], probs):
                        face.probs[det.info.name] = round(float(p), 6)

        names = [d.info.name for d in self.detectors]
        thresholds = {d.info.name: d.info.threshold for d in self.detectors}
        tracks: list[TrackResult] = []
        for t in sorted({f.track for f in faces_out}):
            mine = [f for f in faces_out if f.track == t]
            probs = {n: float(np.mean([f.probs[n] for f in mine])) for n in names}
            key = max(mine, key=lambda f: float(np.mean(list(f.probs.values()))))
            tracks.append(TrackResult(track=t, frames=[f.frame_index for f in mine], probs=probs,
                                      fake={n: probs[n] >= thresholds[n] for n in names},
                                      key_frame=key.frame_index))
        verdicts = []
        for n in names:
            prob = max((tr.probs[n] for tr in tracks), default=None)
            verdicts.append(DetectorVerdict(detector=n, prob=prob, threshold=thresholds[n],
                                            fake=None if prob is None else prob >= thresholds[n]))
        ensemble = _ensemble(verdicts)

        evidence: list[Evidence] = []
        if self.maps:
            with self._model_lock:
                for tr in tracks:
                    crops = crops_for_maps[(tr.key_frame, tr.track)]
                    shown = next(iter(crops.values()))
                    face = _resize(shown, MAP_SIZE)
                    maps: dict[str, str | None] = {}
                    for det in self.detectors:
                        sal = det.module.saliency(to_tensor(crops[det.info.name], det.info.image_size)[None])
                        maps[det.info.name] = None if sal is None else _png(
                            overlay(_resize(crops[det.info.name], MAP_SIZE), sal[0].detach().float().cpu().numpy()))
                    evidence.append(Evidence(track=tr.track, frame_index=tr.key_frame, face_png=_png(face),
                                             maps_png=maps))
        sequence = None
        if self.sequential and tracks:  # the edits of the main face (the first track's key frame)
            seq_run, tr = self.sequential[0], tracks[0]
            crop = next(iter(crops_for_maps[(tr.key_frame, tr.track)].values()))
            with self._model_lock, torch.no_grad():
                res = seq_run.module.generate(to_tensor(crop, seq_run.image_size)[None])
            rec = res.get("recovered")
            sequence = Sequence(detector=seq_run.name,
                                edits=[seq_run.vocabulary[int(v) - 1] for v in res["sequence"][0].tolist() if v],
                                recovered_png=None if rec is None else _png(
                                    (rec[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)))
        if without:
            notes.append(f"{len(without)} of {len(frames)} sampled frame(s) without a face")
        if unreadable:
            notes.append(f"{len(unreadable)} of {len(frames)} sampled frame(s) could not be decoded")
        if not faces_out:
            notes.append("no face found" + (" (if the input is already a face crop, use --faces whole)"
                                            if mode == "detect" else ""))
        info = InputInfo(path=str(path), name=name or path.name, media=media, bytes=size,
                         sha256=_sha256(path), width=int(first.shape[1]), height=int(first.shape[0]),
                         frames_total=int(total), frames_sampled=[int(i) for i, _ in frames])
        return Analysis(visec=visec.__version__,
                        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                        input=info, faces_mode=mode, detectors=[d.info for d in self.detectors],
                        faces=faces_out, frames_without_face=without, frames_unreadable=unreadable,
                        tracks=tracks, detector_verdicts=verdicts, ensemble=ensemble, evidence=evidence,
                        sequence=sequence, seconds=round(time.perf_counter() - start, 3), notes=notes)


def _resize(rgb: np.ndarray, size: int) -> np.ndarray:
    import cv2

    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA if min(rgb.shape[:2]) > size
                      else cv2.INTER_LINEAR)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _ensemble(verdicts: list[DetectorVerdict]) -> Ensemble:
    votes = [v for v in verdicts if v.fake is not None]
    if not votes:
        return Ensemble(verdict="no face", fake_votes=0, voters=0, agreement=None, mean_prob=None)
    fake = sum(v.fake for v in votes)
    real = len(votes) - fake
    verdict = "fake" if fake > real else "real" if real > fake else "split"
    return Ensemble(verdict=verdict, fake_votes=int(fake), voters=len(votes),
                    agreement=max(fake, real) / len(votes),
                    mean_prob=float(np.mean([v.prob for v in votes])))
