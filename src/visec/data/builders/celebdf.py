"""Celeb-DF (v2, also v1) as released by Li et al. (CVPR 2020).

Layout::

    root/Celeb-real/id0_0000.mp4            real, celebrity id0
    root/YouTube-real/00000.mp4             real, one YouTube video (its own identity)
    root/Celeb-synthesis/id0_id16_0000.mp4  fake: target video id0_0000 with id16's face
    root/List_of_testing_videos.txt         official test list, lines "<label> <folder>/<file>"

Each category folder may also hold ``videos/``, ``frames/<video>/`` or ``<video>/`` frame folders.

**Label convention.** In ``List_of_testing_videos.txt`` 1 means REAL and 0 means SYNTHESIZED, the
opposite of visec (0 real, 1 fake). The builder converts, and checks the listed label against the
folder: a disagreement is an error, never a silent relabel.

Listed videos form the test split. The others are split into train and val with
:func:`~visec.data.manifest.seeded_split`, grouped by identity (``source_id``: ``id0`` for
``id0_0000`` and for the fakes made on id0's videos; the video itself for YouTube-real), so no
identity spans train and val.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from visec.data.builders.common import (Collector, check_options, group_split, layout_error,
                                        parse_fraction, require_root)
from visec.errors import ManifestError
from visec.registry import DATASETS

NAME = "celebdf"
FAKE = "celebdf-synthesis"
FOLDERS = {"Celeb-real": 0, "YouTube-real": 0, "Celeb-synthesis": 1}  # folder -> visec label
TEST_LIST = "List_of_testing_videos.txt"
_CELEB = re.compile(r"^(id\d+)_")


def identity(folder: str, name: str) -> str:
    """The identity a video is grouped by: ``idN`` (the target for fakes) or the YouTube video itself."""
    m = _CELEB.match(name)
    if folder != "YouTube-real" and m:
        return m.group(1)
    return f"{folder}/{name}"


def read_test_list(path: Path) -> dict[tuple[str, str], int]:
    """``{(folder, video name): visec label}`` from the official list (official 1 = real -> 0)."""
    out: dict[tuple[str, str], int] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in ("0", "1") or "/" not in parts[1]:
            raise ManifestError(f"{NAME}: {path}:{lineno}: expected '<0|1> <folder>/<video>', got {line!r}")
        official, rel = int(parts[0]), parts[1]
        folder, file = rel.split("/", 1)
        if folder not in FOLDERS:
            raise ManifestError(f"{NAME}: {path}:{lineno}: unknown folder '{folder}' "
                                f"(expected one of {', '.join(FOLDERS)})")
        label = 1 - official  # the list says 1 = real, 0 = synthesized
        if label != FOLDERS[folder]:
            said = "real" if official == 1 else "synthesized"
            raise ManifestError(f"{NAME}: {path}:{lineno}: '{rel}' is listed as {said} (label {official}; "
                                f"in this file 1 = real, 0 = synthesized) but lies in {folder}")
        out[(folder, Path(file).stem)] = label
    return out


@DATASETS.register(NAME, summary="Celeb-DF v2 (Celeb-real, YouTube-real, Celeb-synthesis; official test "
                                 "list, identity-grouped train/val)")
def build_celebdf(root: Path, *, seed: int = 0, hash: bool = True, val_fraction: float = 0.1,
                  prefer: str = "frames", **options: Any) -> pd.DataFrame:
    """Rows for Celeb-DF: official test list -> test; the rest -> train/val grouped by identity."""
    check_options(NAME, build_celebdf, options)
    val = parse_fraction(NAME, "val_fraction", val_fraction)
    root = require_root(NAME, root)
    if not any((root / f).is_dir() for f in FOLDERS):
        raise layout_error(NAME, root, f"folders {', '.join(FOLDERS)}")
    if not (root / TEST_LIST).is_file():
        raise layout_error(NAME, root, f"the official test list {root / TEST_LIST}")
    listed = read_test_list(root / TEST_LIST)
    col = Collector(NAME, root, hash=hash)

    found: list[tuple[str, Any]] = []
    for folder in FOLDERS:
        if (root / folder).is_dir():
            found += [(folder, v) for v in col.scan(root / folder, prefer=prefer, loose_frames=True,
                                                    layout="Celeb-DF")]
        else:
            col.miss(f"{folder}/", "category folder not found")
    rest = {f"{folder}/{v.name}": identity(folder, v.name) for folder, v in found
            if (folder, v.name) not in listed}
    train_val = group_split(rest, seed=seed, fractions=(1.0 - val, val, 0.0))
    for folder, video in found:
        label = FOLDERS[folder]
        split = "test" if (folder, video.name) in listed else train_val[f"{folder}/{video.name}"]
        manipulation = FAKE if label else "real"
        name = video.name if label else f"{folder}/{video.name}"  # two real folders: keep them apart
        col.add(video, split=split, label=label, manipulation=manipulation,
                video_id=f"{NAME}/{manipulation}/{name}", source_id=identity(folder, video.name))
    on_disk = {(folder, v.name) for folder, v in found}
    for folder, name in sorted(set(listed) - on_disk):
        col.miss(f"{folder}/{name}", f"listed in {TEST_LIST} but not found")
    return col.result("videos in Celeb-real/, YouTube-real/ and Celeb-synthesis/")
