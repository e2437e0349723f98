"""WildDeepfake (Zi et al., ACM MM 2020): face sequences collected from the internet, as frames.

Layout (the released archives, extracted in place)::

    root/{real_train,fake_train,real_test,fake_test}/<archive>/.../<sequence>/<frame>.png

Every folder that holds frame images directly is one face sequence, i.e. one video in the
manifest (``video_id`` = its path below the split folder). Sequences cut from the same source video
share a parent folder (the archive), recorded as ``source_id``. ``*_test`` -> test. ``*_train`` ->
train, with a seeded validation split (``val_fraction``) carved out by source folder, separately
for real and fake, so no source video spans train and val. Fakes get manipulation ``wild``.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any

import pandas as pd

from visec.data.builders.common import (Collector, check_options, group_split, layout_error,
                                        parse_fraction, require_root)
from visec.registry import DATASETS

NAME = "wilddeepfake"
FAKE = "wild"
FOLDERS = {"real_train": (0, "train"), "fake_train": (1, "train"),
           "real_test": (0, "test"), "fake_test": (1, "test")}


@DATASETS.register(NAME, summary="WildDeepfake (real/fake x train/test frame sequences; seeded val "
                                 "carved from train by source)")
def build_wilddeepfake(root: Path, *, seed: int = 0, hash: bool = True, val_fraction: float = 0.1,
                       **options: Any) -> pd.DataFrame:
    """Rows for WildDeepfake; ``val_fraction`` of the train sources (per class) become val."""
    check_options(NAME, build_wilddeepfake, options)
    val = parse_fraction(NAME, "val_fraction", val_fraction)
    root = require_root(NAME, root)
    present = [f for f in FOLDERS if (root / f).is_dir()]
    if not present:
        raise layout_error(NAME, root, f"folders {', '.join(FOLDERS)}")
    col = Collector(NAME, root, hash=hash)
    for f in FOLDERS:
        if f not in present:
            col.miss(f"{f}/", "folder not found")

    found = []  # (folder, video, source group)
    for folder in present:
        for video in col.leaves(root / folder, folder_is_video=True):
            found.append((folder, video, f"{folder}/{posixpath.dirname(video.name) or video.name}"))
    train = {f"{folder}/{v.name}": group for folder, v, group in found if FOLDERS[folder][1] == "train"}
    strata = {key: key.split("/", 1)[0] for key in train}
    assigned = group_split(train, seed=seed, fractions=(1.0 - val, val, 0.0), strata=strata)
    for folder, video, group in found:
        label, part = FOLDERS[folder]
        manipulation = FAKE if label else "real"
        col.add(video, split=assigned.get(f"{folder}/{video.name}", part), label=label,
                manipulation=manipulation, video_id=f"{NAME}/{manipulation}/{part}/{video.name}",
                source_id=group)
    return col.result("frame folders under real_train/, fake_train/, real_test/, fake_test/")
