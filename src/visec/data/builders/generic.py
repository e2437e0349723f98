"""Your own data: real and fake images or videos in folders.

Layout::

    root/real/**                      pristine media (label 0, manipulation "real")
    root/fake/<manipulation>/**       fakes of one manipulation (label 1); every sub-folder of fake/
                                      is a manipulation name
    root/fake/<file>                  fakes directly in fake/ get manipulation "fake"
    root/{train,val,test}/real|fake/  optional: the same, already split (the folder is the split)
    root/sources.csv                  optional: columns path,source_id (path relative to root; a
                                      folder entry covers everything below it)

What is a video (inside ``real/`` or ``fake/<m>/``):

* a video file is one video;
* with ``folder_is_video=True`` (default) all images directly inside one sub-folder are the frames
  of one video (``real/clip7/0001.png`` -> video ``clip7``, ``frame_index`` from the digits);
* an image lying directly in ``real/`` or ``fake/<m>/`` -- and every image when
  ``folder_is_video=False`` (a plain image dataset sorted into folders) -- is its own one-frame
  video, named with its extension.

Without split folders the split is seeded (``fractions``, ``seed``): grouped by ``source_id`` when
``sources.csv`` exists, so one identity never spans two splits (videos it does not cover are their
own group); otherwise grouped by video and stratified by manipulation.
"""

from __future__ import annotations

import csv
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from visec.data.builders.common import (Collector, Video, check_options, group_split, layout_error,
                                        parse_fractions, require_root)
from visec.data.manifest import REAL, SPLITS
from visec.errors import ManifestError
from visec.registry import DATASETS

NAME = "generic"
LOOSE_FAKE = "fake"
SOURCES = "sources.csv"


def read_sources(dataset: str, path: Path) -> dict[str, str]:
    """``{relative path: source_id}`` from ``sources.csv``."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"path", "source_id"} <= {f.strip() for f in reader.fieldnames}:
            raise ManifestError(f"{dataset}: {path} must have a header with columns path,source_id")
        out: dict[str, str] = {}
        for lineno, row in enumerate(reader, 2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            rel = PurePosixPath(row["path"].replace("\\", "/")).as_posix().strip("/")
            if not rel or rel == "." or not row["source_id"]:
                raise ManifestError(f"{dataset}: {path}:{lineno}: empty path or source_id")
            if out.setdefault(rel, row["source_id"]) != row["source_id"]:
                raise ManifestError(f"{dataset}: {path}:{lineno}: '{rel}' has two source ids")
    return out


def _source_of(col: Collector, video: Video, sources: dict[str, str], used: set[str]) -> str | None:
    found: set[str] = set()
    for f in video.files:
        rel = PurePosixPath(col.rel(f))
        for cand in (rel, *rel.parents):  # the file, then its folders, innermost first
            key = cand.as_posix()
            if key in sources:
                found.add(sources[key])
                used.add(key)
                break
    if len(found) > 1:
        raise ManifestError(f"{col.dataset}: the files of video {col.rel(video.source)} have different "
                            f"source ids in {SOURCES}: {', '.join(sorted(found))}")
    return found.pop() if found else None


@DATASETS.register(NAME, summary="Your own data: root/real/** and root/fake/<manipulation>/** (images or "
                                 "videos; optional train/val/test folders and sources.csv)")
def build_generic(root: Path, *, seed: int = 0, hash: bool = True, fractions: Any = (0.7, 0.15, 0.15),
                  folder_is_video: bool = True, prefer: str = "frames", dataset: str = NAME,
                  **options: Any) -> pd.DataFrame:
    """Rows for a real/ + fake/<manipulation>/ tree; ``dataset`` sets the dataset column and id prefix."""
    check_options(NAME, build_generic, options)
    fr = parse_fractions(NAME, fractions)
    if not isinstance(folder_is_video, bool):
        raise ManifestError(f"{NAME}: option folder_is_video={folder_is_video!r} must be true or false")
    if not isinstance(dataset, str) or not dataset or "/" in dataset:
        raise ManifestError(f"{NAME}: option dataset={dataset!r} must be a non-empty name without '/'")
    root = require_root(NAME, root)
    split_dirs = [s for s in SPLITS if (root / s).is_dir()]
    class_dirs = [c for c in (REAL, "fake") if (root / c).is_dir()]
    if split_dirs and class_dirs:
        raise ManifestError(f"{NAME}: {root} has both split folders ({', '.join(split_dirs)}) and class "
                            f"folders ({', '.join(class_dirs)}); use one layout")
    if not split_dirs and not class_dirs:
        raise layout_error(NAME, root, "folders real/ and/or fake/ (or train/, val/, test/ holding them)")
    col = Collector(dataset, root, hash=hash)
    used_top = set(split_dirs or class_dirs)
    for e in col.entries(root):
        if e.is_dir() and e.name not in used_top:
            col.skip_folder(e.path, "not part of the generic layout")

    found: list[tuple[str | None, str, Video]] = []  # (split folder, manipulation, video)
    for split, base in ([(s, root / s) for s in split_dirs] or [(None, root)]):
        if split is not None:
            for e in col.entries(base):
                if e.name not in (REAL, "fake"):
                    (col.skip_folder if e.is_dir() else col.skip)(e.path, "not a real/ or fake/ folder")
        if (base / REAL).is_dir():
            found += [(split, REAL, v) for v in col.leaves(base / REAL, folder_is_video=folder_is_video,
                                                            prefer=prefer)]
        fake = base / "fake"
        if not fake.is_dir():
            continue
        loose = [Path(e.path) for e in col.entries(fake) if not e.is_dir()]
        found += [(split, LOOSE_FAKE, v) for v in col.dedupe(col.loose(loose, fake), prefer)]
        for e in col.entries(fake):
            if e.is_dir():
                if e.name == REAL:
                    raise ManifestError(f"{NAME}: {e.path}: a manipulation cannot be called '{REAL}'")
                found += [(split, e.name, v) for v in col.leaves(Path(e.path), folder_is_video=folder_is_video,
                                                                 prefer=prefer)]

    def vid(split: str | None, manipulation: str, video: Video) -> str:
        return "/".join([dataset, manipulation, *([split] if split else []), video.name])

    ids: dict[str, Video] = {}
    for split, manipulation, video in found:
        key = vid(split, manipulation, video)
        if key in ids:
            raise ManifestError(f"{NAME}: {col.rel(ids[key].source)} and {col.rel(video.source)} would both "
                                f"be video '{key}'; rename one")
        ids[key] = video

    sources = read_sources(NAME, root / SOURCES) if (root / SOURCES).is_file() else None
    used: set[str] = set()
    source_ids = {key: _source_of(col, v, sources, used) for key, v in ids.items()} if sources else {}
    if sources:
        for key in sorted(set(sources) - used):
            col.miss(key, f"listed in {SOURCES} but matches no file")
    assigned: dict[str, str] = {}
    if not split_dirs:
        if sources:
            groups = {k: f"source:{source_ids[k]}" if source_ids[k] else f"video:{k}" for k in ids}
            assigned = group_split(groups, seed=seed, fractions=fr)
        else:
            manip = {vid(s, m, v): m for s, m, v in found}
            assigned = group_split({k: k for k in ids}, seed=seed, fractions=fr, strata=manip)

    for split, manipulation, video in found:
        key = vid(split, manipulation, video)
        extra = {"source_id": source_ids[key]} if sources else {}
        col.add(video, split=split or assigned[key], label=int(manipulation != REAL), manipulation=manipulation,
                video_id=key, **extra)
    return col.result("images or videos under real/ and fake/")
