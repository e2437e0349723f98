"""FaceForensics++ (Rössler et al., ICCV 2019) as downloaded with the official script.

Layout (``<comp>`` is ``raw``, ``c23`` or ``c40``)::

    root/original_sequences/youtube/<comp>/videos/000.mp4
    root/manipulated_sequences/<M>/<comp>/videos/000_003.mp4      M = Deepfakes, Face2Face, FaceSwap,
                                                                    NeuralTextures, FaceShifter
    root/.../<comp>/frames/<video>/<n>.png  (or images/<video>/)  already extracted frames
    root/splits/{train,val,test}.json       (or directly in root) the official splits

A split file is a list of pairs ``[["071", "054"], ...]``: the originals 071 and 054 and the fakes
071_054 and 054_071 of every manipulation belong to that split. A fake ``A_B`` shows identity ``B``'s
face on target video ``A``; ``source_id`` is the target ``A`` (for an original, the video itself).
Videos not in any split file are skipped and reported; split members that are not on disk are
reported as missing (an incomplete test set is why numbers do not reproduce). Other compression
levels are not read. Inside ``<comp>/`` only ``videos/``, ``frames/`` and ``images/`` are read; other
folders (``masks/``, ``landmarks/``...), ``original_sequences/actors`` and
``manipulated_sequences/DeepFakeDetection`` (the DFD dataset) are reported as skipped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from visec.data.builders.common import (Collector, check_choice, check_options, entries, layout_error,
                                        require_root)
from visec.errors import ManifestError
from visec.registry import DATASETS

NAME = "ffpp"
MANIPULATIONS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter")
COMPRESSIONS = ("raw", "c23", "c40")
SPLIT_FILES = ("train", "val", "test")
ELSEWHERE = {
    "DeepFakeDetection": "DeepFakeDetection fakes are the DFD dataset; build them with the 'dfd' builder",
    "actors": "DeepFakeDetection originals are the DFD dataset; build them with the 'dfd' builder",
}


def read_pair_splits(dataset: str, root: Path) -> tuple[dict[str, str], dict[str, str]]:
    """``({identity: split}, {"A_B": split})`` from the official ``{train,val,test}.json`` pair lists.

    Looks in ``root/splits/`` first, then in ``root``; all three files must be present.
    """
    folder = next((d for d in (root / "splits", root)
                   if all((d / f"{s}.json").is_file() for s in SPLIT_FILES)), None)
    if folder is None:
        raise layout_error(dataset, root, f"the official split files {root / 'splits'}/"
                                          f"{{train,val,test}}.json (or the same names in {root})")
    ids: dict[str, str] = {}
    pairs: dict[str, str] = {}
    for split in SPLIT_FILES:
        path = folder / f"{split}.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ManifestError(f"{dataset}: cannot read split file {path} ({exc})") from None
        ok = isinstance(data, list) and all(
            isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(x, str) and x for x in p)
            for p in data)
        if not ok:
            raise ManifestError(f"{dataset}: split file {path} must be a JSON list of pairs of video "
                                f"names, e.g. [[\"071\", \"054\"], ...]")
        for a, b in data:
            for key, table in ((a, ids), (b, ids), (f"{a}_{b}", pairs), (f"{b}_{a}", pairs)):
                if table.setdefault(key, split) != split:
                    raise ManifestError(f"{dataset}: video '{key}' is in both the {table[key]} and the "
                                        f"{split} split files ({folder})")
    return ids, pairs


def _manipulation_list(value: Any) -> tuple[str, ...]:
    if value is None:
        return MANIPULATIONS
    names = [v.strip() for v in value.split(",")] if isinstance(value, str) else [str(v) for v in value]
    for n in names:
        check_choice(NAME, "manipulations", n, MANIPULATIONS)
    return tuple(n for n in names if n)


@DATASETS.register(NAME, summary="FaceForensics++ (original + Deepfakes, Face2Face, FaceSwap, "
                                 "NeuralTextures; c23/c40; official splits)")
def build_ffpp(root: Path, *, compression: str = "c23", seed: int = 0, hash: bool = True,
               manipulations: Any = None, prefer: str = "frames", **options: Any) -> pd.DataFrame:
    """Rows for FaceForensics++ at one compression level, split by the official pair lists.

    ``manipulations`` restricts the fake folders (list or comma-separated string; default all five
    that are present); ``prefer`` picks frames or video files when a video has both; ``seed`` is
    accepted for a uniform CLI but unused (the official splits are fixed).
    """
    check_options(NAME, build_ffpp, options)
    check_choice(NAME, "compression", compression, COMPRESSIONS)
    selected = _manipulation_list(manipulations)
    root = require_root(NAME, root)
    youtube = root / "original_sequences" / "youtube"
    if not (youtube / compression).is_dir():
        levels = [e.name for e in entries(youtube) if e.is_dir()] if youtube.is_dir() else []
        note = f" (found: {', '.join(levels)})" if levels else ""
        raise layout_error(NAME, root, f"folder original_sequences/youtube/{compression}{note}")
    ids, pairs = read_pair_splits(NAME, root)
    col = Collector(NAME, root, hash=hash)

    for e in col.entries(root / "original_sequences"):
        if e.name != "youtube":
            col.skip_folder(e.path, ELSEWHERE.get(e.name, "not a FaceForensics++ folder"))
    bases = [("real", youtube / compression)]
    fakes = root / "manipulated_sequences"
    present = set()
    if fakes.is_dir():
        for e in col.entries(fakes):
            if not e.is_dir():
                col.skip(e.path, "not a manipulation folder")
            elif e.name in ELSEWHERE:
                col.skip_folder(e.path, ELSEWHERE[e.name])
            elif e.name not in MANIPULATIONS:
                col.skip_folder(e.path, "not a FaceForensics++ manipulation")
            elif e.name not in selected:
                col.skip_folder(e.path, "not selected (option manipulations)")
            elif not (Path(e.path) / compression).is_dir():
                present.add(e.name)
                col.miss(f"manipulated_sequences/{e.name}/{compression}/", f"no {compression} folder")
            else:
                present.add(e.name)
                bases.append((e.name, Path(e.path) / compression))
    if manipulations is not None:
        for m in selected:
            if m not in present:
                col.miss(f"manipulated_sequences/{m}/", "selected manipulation folder not found")

    for manipulation, base in bases:
        real = manipulation == "real"
        official = ids if real else pairs
        found = set()
        for video in col.scan(base, prefer=prefer, layout="FaceForensics++"):
            split = official.get(video.name)
            if split is None:
                col.skip_video(video, "not in the official splits")
                continue
            found.add(video.name)
            col.add(video, split=split, label=0 if real else 1, manipulation=manipulation,
                    video_id=f"{NAME}/{manipulation}/{video.name}", compression=compression,
                    source_id=video.name.split("_")[0])
        for name in sorted(set(official) - found):
            col.miss(f"{col.rel(base)}/{name}", f"in the official {official[name]} split but not found")
    return col.result(f"videos under original_sequences/youtube/{compression}/videos or "
                      f"frames/<video>/ named as in the split files")
