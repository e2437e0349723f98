"""Xception baseline on CPU: visec against naive references, speed and peak memory, in one run.

Every visec number is printed next to a naive reference measured in the same run, with the ratio
visec / reference (> 1: visec faster for img/s and frames/s, larger for MiB):

1. **training images/s** -- ``visec.engine.Engine.fit`` (config ``classifier``,
   ``model.backbone=xception``, ``--size`` px, ``--epochs``, batch ``--batch-size``, AdamW, no LR
   schedule, no validation) against a plain PyTorch loop over the same network, images, loader,
   optimiser (fused AdamW, as the engine's) and loss. Both are timed with the same scope: the
   engine's whole ``fit()`` call (model, trainer, decode check, checkpoints) against the plain
   script from building the model to its weights on disk; a second row times Lightning's
   ``trainer.fit`` against the bare loop.
2. **inference images/s** -- ``Engine.predict`` on every row of the manifest against a plain
   script that builds the model, loads the trained weights and runs a ``torch.no_grad()`` loop
   over the same rows.
3. **peak resident memory** (``ru_maxrss``, training + inference) of each side. Each side runs in
   its own spawned child process per repeat, so each peak is its own; the training code and the
   child-process runner are those of ``bench_engine.py``.
4. **frame extraction frames/s** -- what ``visec preprocess`` does per video,
   ``count_frames`` + ``read_frames(path, sample_indices(n, --frames))`` (the default: seek across
   long gaps, grab forward over short ones), always seeking (``seek=True``) and its sequential
   path (``seek=False``), each against a plain OpenCV loop that trusts the container's
   frame count, decodes every frame and keeps the wanted ones. On synthetic 256 px videos written
   here (the astronaut photo of scikit-image, panned), with each codec OpenCV can write and read
   back (mp4v/.mp4, MJPG/.avi). The frames of both sides are checked to be identical.
5. **preprocessing frames/s** -- the whole ``visec.preprocess.preprocess`` (Haar detector,
   alignment, PNG crops, manifest, report) against a naive decode-every-frame + Haar cascade +
   box crop + PNG loop, on the same mp4v (else MJPG) videos, ``--frames`` frames per video.

Throughputs are the fastest of ``--repeat`` runs, the two sides interleaved (as with ``timeit``,
the fastest run is the one the rest of the machine disturbed least); the memory is the median
peak. CUDA is hidden. Data
for 1-3: ``--manifest`` (any visec image manifest) or the toy face set (``visec.data.toy``,
``--size`` px) generated in a temporary folder. On Linux the CPU time other processes took during
each measurement is read from ``/proc/stat``; a row whose number comes from a run where they took
more than a fifth of a core is starred, since on 2 cores that alone can halve a throughput.

    python benchmarks/bench_baseline.py [--quick] [--manifest PATH] [--epochs 1] [--size 64]
        [--backbone xception] [--batch-size 32] [--repeat 3] [--videos 4] [--video-frames 600]
        [--frames 32]

On an idle 2-core machine ``--quick`` (half the toy set, one training run per side, two videos)
takes about 45 s, the full run about 2.5 minutes.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # a CPU benchmark, also in the child processes
# Quiet Lightning's start-up lines; the spawned children import this module too, so it holds there.
logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=r".*across ranks is zero.*")  # no validation loader

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import engine_run, plain_run, run_in_child  # noqa: E402

from visec.data.sampling import sample_indices  # noqa: E402
from visec.preprocess.video import count_frames, read_frames  # noqa: E402

CODECS = (("mp4v", ".mp4"), ("MJPG", ".avi"))
FPS = 25
CROP = 128  # face crop size of both preprocessing pipelines
MARGIN = 0.3
BUSY = 0.2  # cores used by other processes above which a measurement is reported as disturbed


class OtherLoad:
    """``with OtherLoad() as load:`` -- ``load.cores``: CPU cores other processes used meanwhile.

    Machine-wide busy time from ``/proc/stat`` minus this process's and its finished children's
    CPU time, over the wall time (0 where ``/proc/stat`` is missing).
    """

    @staticmethod
    def _busy() -> float:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        except (OSError, ValueError):
            return 0.0
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def __enter__(self) -> "OtherLoad":
        self.cores = 0.0
        self._start = (time.perf_counter(), self._busy(), self._own())
        return self

    def __exit__(self, *exc: Any) -> None:
        wall, busy, own = (now - then for now, then in
                           zip((time.perf_counter(), self._busy(), self._own()), self._start))
        self.cores = max(0.0, busy - own) / max(wall, 1e-9) if busy else 0.0


# ------------------------------------------------------------------------ model: train, infer


def bench_model(manifest: Path, work: Path, args) -> dict[str, dict[str, list[float]]]:
    """``{"visec"|"naive": {"train_ips"|"infer_ips"|"peak_mib"|"busy"|...: [one per repeat]}}``."""
    runs: dict[str, dict[str, list[float]]] = {"visec": {}, "naive": {}}
    for r in range(args.repeat):
        for side, fn in (("naive", plain_run), ("visec", engine_run)):
            out = work / f"runs-{side}-{r}"
            with OtherLoad() as load:
                result = run_in_child(fn, manifest, out, args)
            print(f"  training + inference run {r + 1}/{args.repeat}, {side}: "
                  f"{result['train_ips']:.1f} / {result['infer_ips']:.1f} img/s, "
                  f"{result['peak_mib']:.0f} MiB; other processes {load.cores:.2f} cores", flush=True)
            for key, value in {**result, "busy": load.cores}.items():
                runs[side].setdefault(key, []).append(value)
            shutil.rmtree(out, ignore_errors=True)  # the engine's checkpoints are ~300 MB a run
    return runs


# ------------------------------------------------------------------------------------- videos


def write_videos(folder: Path, n_videos: int, n_frames: int, size: int = 256) -> dict[str, list[Path]]:
    """``n_videos`` videos of ``n_frames`` frames for each codec OpenCV can write and read back here.

    Each frame is a ``size`` px window panned smoothly over the astronaut photo (512 px; her face,
    about 90 px high, stays inside every window), a different path per video.
    """
    from skimage.data import astronaut

    photo = astronaut()
    videos: dict[str, list[Path]] = {}
    for fourcc, ext in CODECS:
        paths = []
        for v in range(n_videos):
            path = folder / f"{fourcc.lower()}_{v}{ext}"
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, (size, size))
            if not writer.isOpened():
                break
            for i in range(n_frames):
                t = i / FPS + 2 * v
                x, y = 90 + round(40 * math.sin(t)), 20 + round(15 * math.cos(0.7 * t))
                writer.write(cv2.cvtColor(np.ascontiguousarray(photo[y:y + size, x:x + size]),
                                          cv2.COLOR_RGB2BGR))
            writer.release()
            if count_frames(path) != n_frames:
                break
            paths.append(path)
        if len(paths) == n_videos:
            videos[fourcc] = paths
        else:
            print(f"  {fourcc}: OpenCV cannot write and read back {ext} video here; skipped")
    return videos


def visec_extract(path: Path, n: int, seek: bool | None = None) -> list[tuple[int, np.ndarray | None]]:
    """What ``visec preprocess`` does per video: verified frame count, evenly spaced frames."""
    return read_frames(path, sample_indices(count_frames(path), n), seek=seek)


def naive_extract(path: Path, n: int) -> list[tuple[int, np.ndarray]]:
    """The reference: trust the container's frame count, decode every frame, keep the wanted ones."""
    cap = cv2.VideoCapture(str(path))
    wanted = set(sample_indices(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), n))
    frames, i = [], 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        if i in wanted:
            frames.append((i, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
        i += 1
    cap.release()
    return frames


def naive_preprocess(videos: list[Path], out: Path, n: int) -> int:
    """The reference pipeline: decode every frame, Haar cascade, largest box + margin, PNG crop."""
    cascade = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"))
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for video in videos:
        for idx, rgb in naive_extract(video, n):
            boxes = cascade.detectMultiScale(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), scaleFactor=1.1,
                                             minNeighbors=5, minSize=(30, 30))
            if len(boxes) == 0:
                continue
            x, y, w, h = max(boxes, key=lambda b: b[2] * b[3])
            m = int(MARGIN * max(w, h))
            crop = cv2.resize(rgb[max(0, y - m):y + h + m, max(0, x - m):x + w + m], (CROP, CROP),
                              interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(out / f"{video.stem}_{idx:06d}.png"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
            written += 1
    return written


def visec_preprocess(manifest: Path, out: Path, n: int) -> int:
    from visec.preprocess import preprocess

    return preprocess(manifest, out, n_frames=n, detector="haar", size=CROP, margin=MARGIN,
                      resume=False).frames_written


def _identical(a: list[tuple[int, Any]], b: list[tuple[int, Any]]) -> bool:
    return [i for i, _ in a] == [i for i, _ in b] and all(np.array_equal(x, y) for (_, x), (_, y) in zip(a, b))


def fastest(fns: dict[str, Callable[[], Any]], repeat: int) -> tuple[dict[str, float], bool]:
    """Fewest seconds of each function over ``repeat`` interleaved rounds (after a warm-up round),
    and whether other processes took over ``BUSY`` cores meanwhile."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    with OtherLoad() as load:
        for r in range(repeat + 1):
            for key, fn in fns.items():
                start = time.perf_counter()
                fn()
                if r:
                    times[key].append(time.perf_counter() - start)
    return {k: min(v) for k, v in times.items()}, load.cores > BUSY


def bench_video(work: Path, args) -> tuple[list[tuple[str, float, float, bool]], list[str]]:
    """Table rows ``(measurement, visec frames/s, naive frames/s, disturbed)`` and notes."""
    from visec.data.manifest import make_record, write_manifest

    rows, notes = [], []
    videos = write_videos(work, args.videos, args.video_frames)
    n_out = args.videos * min(args.frames, args.video_frames)  # frames extracted per pass
    for codec, paths in videos.items():
        same = all(_identical(visec_extract(p, args.frames), naive_extract(p, args.frames)) for p in paths)
        notes.append(f"{codec}: visec and the reference extract identical frames: {'yes' if same else 'NO'}")
        t, busy = fastest({"auto": lambda: [visec_extract(p, args.frames) for p in paths],
                           "seek": lambda: [visec_extract(p, args.frames, seek=True) for p in paths],
                           "sequential": lambda: [visec_extract(p, args.frames, seek=False) for p in paths],
                           "naive": lambda: [naive_extract(p, args.frames) for p in paths]},
                          args.video_repeat)
        rows.append((f"extract frames/s, {codec} (default)", n_out / t["auto"], n_out / t["naive"], busy))
        rows.append((f"extract frames/s, {codec}, seek=True", n_out / t["seek"], n_out / t["naive"], busy))
        rows.append((f"extract frames/s, {codec}, seek=False", n_out / t["sequential"], n_out / t["naive"],
                     busy))
    if not videos:
        return rows, notes
    codec, paths = next(iter(videos.items()))
    manifest = write_manifest([make_record(work, p, dataset="bench", split="test", label=0,
                                           manipulation="real", video_id=p.stem, hash=False)
                               for p in paths], work / "videos.jsonl")
    found = {"visec": visec_preprocess(manifest, work / "faces-visec", args.frames),
             "naive": naive_preprocess(paths, work / "faces-naive", args.frames)}
    t, busy = fastest({"visec": lambda: visec_preprocess(manifest, work / "faces-visec", args.frames),
                       "naive": lambda: naive_preprocess(paths, work / "faces-naive", args.frames)},
                      args.video_repeat)
    rows.append((f"preprocess frames/s, {codec}, haar", n_out / t["visec"], n_out / t["naive"], busy))
    notes.append(f"preprocess: faces cropped in {found['visec']}/{n_out} frames by visec, "
                 f"{found['naive']}/{n_out} by the reference")
    return rows, notes


# -------------------------------------------------------------------------------------- main


def model_row(name: str, runs: dict[str, dict[str, list[float]]], naive_key: str,
              visec_key: str | None = None) -> tuple[str, float, float, bool]:
    """The fastest run of each side, starred when either was disturbed by other processes."""
    best = {}
    for side, key in (("visec", visec_key or naive_key), ("naive", naive_key)):
        values = runs[side][key]
        i = max(range(len(values)), key=values.__getitem__)
        best[side] = (values[i], runs[side]["busy"][i] > BUSY)
    return name, best["visec"][0], best["naive"][0], best["visec"][1] or best["naive"][1]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, help="image manifest for 1-3 (default: the toy face set)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--backbone", default="xception")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeat", type=int, help="training runs per side (default 3, --quick 1)")
    ap.add_argument("--videos", type=int, help="synthetic videos per codec (default 4, --quick 2)")
    ap.add_argument("--video-frames", type=int, default=600, help="frames per synthetic video")
    ap.add_argument("--frames", type=int, default=32, help="frames extracted per video")
    ap.add_argument("--quick", action="store_true", help="half the toy set, 1 training run, 2 videos")
    args = ap.parse_args(argv)
    args.repeat = args.repeat or (1 if args.quick else 3)
    args.videos = args.videos or (2 if args.quick else 4)
    args.video_repeat = 3 if args.quick else 5
    load0 = os.getloadavg()[0]
    started = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        manifest = args.manifest
        if manifest is None:
            from visec.data.toy import make_toy_dataset

            manifest = make_toy_dataset(work / "toy", seed=0, size=args.size, sources=50 if args.quick else 100)
        from visec.data.manifest import read_manifest

        m = read_manifest(manifest)
        n_train, n_all = len(m.split("train")), len(m)
        print(f"model: {args.backbone}, {args.size} px, batch {args.batch_size}, {args.epochs} epoch(s), "
              f"{n_train} training / {n_all} images, {args.repeat} run(s) per side", flush=True)
        runs = bench_model(Path(manifest), work, args)
        video_dir = work / "video"
        video_dir.mkdir()
        print(f"video: {args.videos} video(s) per codec, {args.video_frames} frames of 256 px, "
              f"{args.frames} extracted per video", flush=True)
        video_rows, notes = bench_video(video_dir, args)

    import torch

    rows = [model_row("train img/s", runs, "train_ips"),
            model_row("train img/s, trainer.fit vs loop only", runs, "loop_ips"),
            model_row("infer img/s", runs, "infer_ips"),
            ("peak RSS MiB (train + infer)", statistics.median(runs["visec"]["peak_mib"]),
             statistics.median(runs["naive"]["peak_mib"]), False),  # contention barely moves memory
            *video_rows]
    print(f"\nCPU: {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads, "
          f"OpenCV {cv2.__version__}; load average {load0:.2f} at start, {os.getloadavg()[0]:.2f} at end; "
          f"{time.perf_counter() - started:.0f} s")
    print(f"{'measurement':34s} {'visec':>9s} {'naive ref':>10s} {'ratio':>7s}")
    for name, visec, naive, busy in rows:
        print(f"{name:34s} {visec:9.1f} {naive:10.1f} {visec / naive:7.2f}{' *' if busy else ''}")
    print("ratio = visec / naive reference: > 1 is faster (img/s, frames/s) or larger (MiB)")
    print("naive references: train/infer/RSS = plain PyTorch loop on the same model and data; "
          "extract = cv2 loop decoding every frame; preprocess = that loop + Haar cascade + box crop + PNG")
    for note in notes:
        print(note)
    if any(row[3] for row in rows):
        print(f"* measured while other processes took over {BUSY} cores: unreliable; rerun on an idle machine")


if __name__ == "__main__":
    main()
