"""Video manifest -> aligned face crops + image manifest + report, resumable and parallel.

For every video of the input manifest: sample ``n_frames`` evenly spaced frames, detect faces, keep
one face per frame (:func:`~visec.preprocess.detect.pick_face`), align it on the five-point template
and write ``out_dir/<video_id>/<frame:06d>.png``. Image rows are treated as single frames (all the
image rows of one ``video_id`` form one unit of work). Outputs:

* ``out_dir/manifest.jsonl`` -- one ``media="image"`` row per crop, with the real frame number,
  the source's dataset/split/label/manipulation/video_id (and any other columns of the source row
  except ``landmarks`` and ``mask``, which describe the uncropped frame), plus ``source_path`` (the
  source file relative to ``out_dir``), ``landmarks`` (5 x 2, crop pixels) and ``det_score``.
* ``out_dir/preprocess_report.json`` -- :class:`PreprocessReport`: every frame that could not be
  read and every frame without a face is counted *and* listed; videos that cannot be opened and
  videos where no frame has a face are listed by path, and every video file's decoded vs declared
  frame count is kept (``video_frames``): a truncated or scrambled video is sampled among the frames
  that decode, and one of which fewer than half decode gets a warning line in :meth:`summary`.
  Image rows naming anything but a regular file (a FIFO, a device, a dangling or looping link, a
  name too long for the file system) or a decompression bomb are never opened; they count as
  unreadable with the reason. Nothing is dropped silently, and a missing face is never an exception.
* ``out_dir/.done/<hash>.json`` -- one record per finished video, written atomically after its
  crops. A rerun skips a video whose record matches the current settings, the source file's size
  and modification time, and whose crops all still exist, so an interrupted run loses at most the
  videos in flight. Unreadable videos get no record and are retried on every run.

Invariants of the report: ``videos_total == videos_processed + videos_resumed +
len(videos_unreadable)``; ``frames_requested == frames_read + len(frames_unread)``;
``frames_read == frames_written + len(frames_without_face)``. Frame counts cover all videos in
the output (resumed ones included); an unreadable video contributes no requested frames because
its length is unknown.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from visec.data.manifest import Manifest, make_record, read_manifest, write_manifest
from visec.errors import DataError, ManifestError, VisecError
from visec.data.images import image_problem
from visec.paths import output_folder
from visec.preprocess.align import align_face, check_crop, transform_points
from visec.preprocess.detect import build_detector, pick_face
from visec.data.sampling import sample_indices
from visec.preprocess.video import PARTIAL_WARN_FRACTION, frame_counts, read_frames
from visec.utils import json_safe

__all__ = ["preprocess", "PreprocessReport", "DONE_DIR", "REPORT_NAME"]

DONE_DIR = ".done"
REPORT_NAME = "preprocess_report.json"
RECORD_VERSION = 1
_CROP_NAME = re.compile(r"^\d{6}(_\d+)?\.png$")
# Columns of the source row that are not carried over to the crop rows.
_NOT_CARRIED = {"path", "frame_index", "media", "sha256", "landmarks", "mask", "source_path",
                "det_score"}


@dataclass
class PreprocessReport:
    """What one :func:`preprocess` call produced. Paths are as written in the input manifest."""

    out_dir: str
    manifest: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    videos_total: int = 0
    videos_processed: int = 0
    videos_resumed: int = 0
    videos_unreadable: list[dict[str, str]] = field(default_factory=list)
    videos_without_face: list[str] = field(default_factory=list)
    frames_requested: int = 0
    frames_read: int = 0
    frames_unread: list[tuple[str, int]] = field(default_factory=list)
    frames_without_face: list[tuple[str, int]] = field(default_factory=list)
    frames_written: int = 0
    # per video file: {"video_id", "path", "frames_expected" (declared by the container),
    # "frames_decoded"}; a truncated or scrambled video has fewer decoded than expected
    video_frames: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def videos_partial(self) -> list[dict[str, Any]]:
        """The videos of which fewer frames decode than their container declares."""
        return [v for v in self.video_frames if v["frames_decoded"] < v["frames_expected"]]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["frames_unread"] = [list(x) for x in self.frames_unread]
        d["frames_without_face"] = [list(x) for x in self.frames_without_face]
        return d

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            _atomic_write(Path(path), text)
        return text

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PreprocessReport":
        d = dict(d)
        for key in ("frames_unread", "frames_without_face"):
            d[key] = [(str(p), int(i)) for p, i in d.get(key, [])]
        return cls(**d)

    def summary(self) -> str:
        lines = [
            f"videos: {self.videos_total} total, {self.videos_processed} processed, "
            f"{self.videos_resumed} resumed, {len(self.videos_unreadable)} unreadable, "
            f"{len(self.videos_without_face)} without any face",
            f"frames: {self.frames_requested} requested, {self.frames_read} read, "
            f"{len(self.frames_unread)} unreadable, {len(self.frames_without_face)} without a face, "
            f"{self.frames_written} crops written",
        ]
        partial = self.videos_partial
        if partial:
            lines.append(f"partly decodable videos: {len(partial)} (decoded vs declared frames of every "
                         f"video in {REPORT_NAME})")
        for v in self.videos_unreadable:
            lines.append(f"  unreadable: {v['path']}: {v['reason']}")
        for v in partial:
            if v["frames_decoded"] < PARTIAL_WARN_FRACTION * v["frames_expected"]:
                lines.append(f"  warning: {v['path']}: only {v['frames_decoded']} of the {v['frames_expected']} "
                             f"frames its container declares decode (truncated or damaged)")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------ helpers


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _done_path(out_dir: Path, video_id: str) -> Path:
    return out_dir / DONE_DIR / (hashlib.sha1(video_id.encode("utf-8")).hexdigest()[:24] + ".json")


def _safe_component(c: str) -> str:
    c = re.sub(r"[^A-Za-z0-9._+-]", "_", c)
    return "_" + c[1:] if c.startswith(".") else c


def _subdirs(video_ids: list[str]) -> dict[str, str]:
    """A distinct, safe relative folder per video id (``dataset/manipulation/name`` stays nested)."""
    out: dict[str, str] = {}
    for vid in video_ids:
        parts = [_safe_component(p) for p in re.split(r"[/\\]+", vid) if p not in ("", ".", "..")]
        out[vid] = "/".join(parts) or "_"
    seen: dict[str, list[str]] = {}
    for vid, sub in out.items():
        seen.setdefault(sub, []).append(vid)
    for sub, vids in seen.items():
        if len(vids) > 1:  # sanitising made two ids equal: disambiguate all of them
            for vid in vids:
                out[vid] = f"{sub}_{hashlib.sha1(vid.encode('utf-8')).hexdigest()[:8]}"
    return out


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def _source_stat(path: Path) -> list[Any]:
    try:
        st = path.stat()
        return [st.st_size, st.st_mtime_ns]
    except OSError:
        return [None, None]


def _jobs_from_manifest(m: Manifest, out_dir: Path) -> list[dict[str, Any]]:
    df = m.df
    jobs = []
    subdirs = _subdirs(sorted(df["video_id"].unique()))
    for vid, g in df.groupby("video_id", sort=True):
        g = g.sort_values(["frame_index", "path"], kind="stable")
        media = set(g["media"])
        if len(media) > 1:
            raise ManifestError(f"video_id '{vid}' mixes image and video rows; preprocessing "
                                f"writes one folder per video_id")
        kind = media.pop()
        first = g.iloc[0].to_dict()
        base = json_safe({k: v for k, v in first.items() if k not in _NOT_CARRIED and not _missing(v)})
        items = []
        if kind == "video":
            paths = sorted(set(g["path"]))
            if len(paths) > 1:
                raise ManifestError(f"video_id '{vid}' names {len(paths)} video files "
                                    f"({', '.join(paths[:3])}); a video_id must be one video")
            fidx = [int(i) for i in g["frame_index"]]
            if -1 in fidx and len(fidx) > 1:
                raise ManifestError(f"video '{paths[0]}' has a whole-video row (frame_index -1) "
                                    f"and rows for single frames")
            items.append({"path": paths[0], "frames": [] if fidx == [-1] else fidx})
        else:
            fidx = [int(i) for i in g["frame_index"]]
            unique = len(set(fidx)) == len(fidx)
            for k, (p, fi) in enumerate(zip(g["path"], fidx)):
                name = f"{fi:06d}.png" if unique else f"{fi:06d}_{k}.png"
                items.append({"path": p, "frame": fi, "name": name})
        sources = sorted({it["path"] for it in items})
        jobs.append({
            "video_id": vid,
            "kind": kind,
            "items": items,
            "base": base,
            "subdir": subdirs[vid],
            "sources": [[p, *_source_stat(m.root / p)] for p in sources],
        })
    return jobs


# ------------------------------------------------------------------------------ worker side

_WORKER: dict[str, Any] = {}


def _init_worker(factory: Any, kwargs: dict[str, Any], threads: int | None) -> None:
    """Pool initializer: build this worker's detector once."""
    import cv2

    if threads:
        cv2.setNumThreads(threads)
    _WORKER["detector"] = factory(**kwargs) if callable(factory) and not hasattr(
        factory, "detect") else factory
    if threads and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def _detect_all(detector: Any, frames: list[np.ndarray]) -> list[list[Any]]:
    if not frames:
        return []
    batch = getattr(detector, "detect_batch", None)
    if callable(batch):
        return list(batch(frames))
    return [detector.detect(f) for f in frames]


def _clear_old_crops(folder: Path) -> None:
    if folder.is_dir():
        for p in folder.iterdir():
            if p.is_file() and _CROP_NAME.match(p.name):
                p.unlink()


def _process_job(job: dict[str, Any], ctx: dict[str, Any], detector: Any = None) -> dict[str, Any]:
    """Process one video (or image group); write its crops and done record; return the record."""
    import cv2

    detector = detector if detector is not None else _WORKER["detector"]
    root, out_dir = Path(ctx["root"]), Path(ctx["out_dir"])
    folder = out_dir / job["subdir"]
    result: dict[str, Any] = {
        "version": RECORD_VERSION, "video_id": job["video_id"], "fingerprint": ctx["fingerprint"],
        "sources": job["sources"], "status": "ok", "reason": "", "path": job["items"][0]["path"],
        "frames_requested": 0, "frames_read": 0, "frames_unread": [], "frames_without_face": [],
        "rows": [],
    }
    # (manifest path, frame index, output name, rgb or None)
    frames: list[tuple[str, int, str, np.ndarray | None]] = []
    try:
        if job["kind"] == "video":
            item = job["items"][0]
            src = root / item["path"]
            counts = frame_counts(src)
            result["frames_expected"], result["frames_decoded"] = counts.expected, counts.decoded
            if item["frames"]:
                indices = sorted(set(item["frames"]))
            else:
                indices = sample_indices(counts.decoded, ctx["n_frames"])
            for idx, rgb in read_frames(src, indices):
                frames.append((item["path"], idx, f"{idx:06d}.png", rgb))
        else:
            first_problem = None
            for item in job["items"]:
                # never opened: a FIFO, a device, a dangling or looping link, a decompression bomb
                problem = image_problem(root / item["path"])
                bgr = None if problem else cv2.imread(str(root / item["path"]), cv2.IMREAD_COLOR)
                rgb = None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                first_problem = first_problem or problem
                frames.append((item["path"], item["frame"], item["name"], rgb))
            if all(f[3] is None for f in frames):
                raise DataError(f"cannot read image {root / job['items'][0]['path']}"
                                + (f": {first_problem}" if first_problem else "")
                                + (f" (nor the {len(frames) - 1} other image(s) of this video_id)"
                                   if len(frames) > 1 else ""))
    except (DataError, cv2.error) as exc:
        result.update(status="unreadable", reason=str(exc).strip(), rows=[])
        _done_path(out_dir, job["video_id"]).unlink(missing_ok=True)
        return result

    result["frames_requested"] = len(frames)
    readable = [f for f in frames if f[3] is not None]
    result["frames_read"] = len(readable)
    result["frames_unread"] = [[p, i] for p, i, _, rgb in frames if rgb is None]
    detections = _detect_all(detector, [f[3] for f in readable])

    _clear_old_crops(folder)
    base = job["base"]
    for (path, idx, name, rgb), faces in zip(readable, detections):
        face = pick_face(faces, ctx["policy"])
        if face is None:
            result["frames_without_face"].append([path, idx])
            continue
        crop, m = align_face(rgb, face.landmarks, ctx["size"], ctx["margin"], return_matrix=True)
        folder.mkdir(parents=True, exist_ok=True)
        crop_path = folder / name
        if not cv2.imwrite(str(crop_path), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)):
            raise DataError(f"cannot write face crop {crop_path}")
        lm = np.round(transform_points(m, face.landmarks), 2).tolist()
        src_abs = (root / path).resolve()
        try:
            source_path = Path(os.path.relpath(src_abs, out_dir.resolve())).as_posix()
        except ValueError:  # another drive (Windows)
            source_path = src_abs.as_posix()
        extra = {k: v for k, v in base.items()
                 if k not in ("dataset", "split", "label", "manipulation", "video_id", "root",
                              "hash")}
        row = make_record(out_dir, crop_path, dataset=base["dataset"], split=base["split"],
                          label=base["label"], manipulation=base["manipulation"],
                          video_id=base["video_id"], frame_index=idx, hash=True, **extra,
                          source_path=source_path, landmarks=lm,
                          det_score=round(float(face.score), 4))
        result["rows"].append(row)
    if not result["rows"]:
        result["status"] = "no_face" if result["frames_read"] else "unreadable"
        if result["status"] == "unreadable":
            result["reason"] = "no frame could be decoded"
            _done_path(out_dir, job["video_id"]).unlink(missing_ok=True)
            return result
    _atomic_write(_done_path(out_dir, job["video_id"]), json.dumps(result))
    return result


def _load_done(out_dir: Path, job: dict[str, Any], fingerprint: dict[str, Any]) -> dict | None:
    path = _done_path(out_dir, job["video_id"])
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if (rec.get("version") != RECORD_VERSION or rec.get("video_id") != job["video_id"]
            or rec.get("fingerprint") != fingerprint or rec.get("sources") != job["sources"]):
        return None
    if not all((out_dir / r["path"]).is_file() for r in rec.get("rows", [])):
        return None
    return rec


# ------------------------------------------------------------------------------- main entry


def preprocess(
    manifest: str | os.PathLike | Manifest,
    out_dir: str | os.PathLike,
    *,
    n_frames: int = 32,
    detector: Any = "mtcnn",
    detector_kwargs: dict[str, Any] | None = None,
    size: int = 256,
    margin: float = 0.3,
    face_policy: str = "largest",
    workers: int = 1,
    resume: bool = True,
    progress: Callable[[int, int], Any] | None = None,
) -> PreprocessReport:
    """Turn a manifest of videos (and/or images) into aligned face crops; see the module docs.

    ``detector`` is a registry name (``mtcnn``, ``dlib``, ``haar``; options in
    ``detector_kwargs``) or a detector object (it must be picklable when ``workers > 1``).
    ``workers > 1`` processes videos in parallel processes (spawned, one detector per process).
    ``resume=False`` ignores done records and redoes every video. ``progress(done, total)`` is
    called once with the number of resumed videos, then after every finished video.
    Raises :class:`DataError` after writing the report when no crop at all was produced.
    """
    t0 = time.perf_counter()
    if int(n_frames) <= 0:
        raise VisecError(f"n_frames must be positive, got {n_frames}")
    if int(workers) < 1:
        raise VisecError(f"workers must be >= 1, got {workers}")
    check_crop(size, margin)
    output_folder(out_dir, "out_dir")
    if face_policy not in ("largest", "score"):
        raise VisecError(f"face_policy must be 'largest' or 'score', got {face_policy!r}")
    m = manifest if isinstance(manifest, Manifest) else read_manifest(manifest, check_files=False)
    out = Path(out_dir).resolve()
    out_manifest = out / "manifest.jsonl"
    if m.source is not None and Path(m.source).resolve() == out_manifest:
        raise VisecError(f"output folder {out} holds the input manifest; choose another out_dir")
    kwargs = dict(detector_kwargs or {})

    if isinstance(detector, str):
        from visec.registry import DETECTORS

        factory: Any = DETECTORS.get(detector).obj
        det_name = detector
    else:
        factory = build_detector(detector)
        det_name = getattr(detector, "name", type(detector).__name__)
    fingerprint = {"n_frames": int(n_frames), "detector": det_name,
                   "detector_kwargs": json.loads(json.dumps(kwargs, default=str)),
                   "size": int(size), "margin": float(margin), "face_policy": face_policy}
    ctx = {"root": str(m.root), "out_dir": str(out), "n_frames": int(n_frames), "size": int(size),
           "margin": float(margin), "policy": face_policy, "fingerprint": fingerprint}

    jobs = _jobs_from_manifest(m, out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    resumed: set[str] = set()
    todo = []
    for job in jobs:
        rec = _load_done(out, job, fingerprint) if resume else None
        if rec is not None:
            results[job["video_id"]] = rec
            resumed.add(job["video_id"])
        else:
            todo.append(job)
    total = len(jobs)
    done_count = len(resumed)
    if progress is not None:
        progress(done_count, total)

    if todo and (workers == 1 or len(todo) == 1):
        det = factory(**kwargs) if isinstance(detector, str) else factory
        for job in todo:
            results[job["video_id"]] = _process_job(job, ctx, det)
            done_count += 1
            if progress is not None:
                progress(done_count, total)
    elif todo:
        import multiprocessing as mp

        n_workers = min(int(workers), len(todo))
        threads = max(1, (os.cpu_count() or 1) // n_workers)
        init_args = (factory, kwargs if isinstance(detector, str) else {}, threads)
        pool = ProcessPoolExecutor(max_workers=n_workers, mp_context=mp.get_context("spawn"),
                                   initializer=_init_worker, initargs=init_args)
        try:
            pending = {pool.submit(_process_job, job, ctx): job["video_id"] for job in todo}
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    vid = pending.pop(fut)
                    results[vid] = fut.result()
                    done_count += 1
                    if progress is not None:
                        progress(done_count, total)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    report = PreprocessReport(out_dir=str(out), config=dict(fingerprint, workers=int(workers)))
    rows: list[dict[str, Any]] = []
    for job in jobs:
        vid = job["video_id"]
        res = results[vid]
        report.videos_total += 1
        if res["status"] == "unreadable":
            report.videos_unreadable.append({"video_id": vid, "path": res["path"],
                                             "reason": res["reason"]})
            continue
        if vid in resumed:
            report.videos_resumed += 1
        else:
            report.videos_processed += 1
        if res["status"] == "no_face":
            report.videos_without_face.append(res["path"])
        if res.get("frames_expected") is not None:
            report.video_frames.append({"video_id": vid, "path": res["path"],
                                        "frames_expected": int(res["frames_expected"]),
                                        "frames_decoded": int(res["frames_decoded"])})
        report.frames_requested += res["frames_requested"]
        report.frames_read += res["frames_read"]
        report.frames_unread.extend((p, int(i)) for p, i in res["frames_unread"])
        report.frames_without_face.extend((p, int(i)) for p, i in res["frames_without_face"])
        report.frames_written += len(res["rows"])
        rows.extend(res["rows"])
    report.seconds = round(time.perf_counter() - t0, 3)
    report_path = out / REPORT_NAME
    if rows:
        write_manifest(rows, out_manifest)
        report.manifest = str(out_manifest)
    elif out_manifest.exists():
        out_manifest.unlink()  # a stale manifest from an earlier run would be misleading
    report.to_json(report_path)
    if not rows:
        raise DataError(f"preprocessing produced no face crop from {report.videos_total} "
                        f"video(s); see {report_path}")
    return report
