"""DeepFakeDetection (DFD, Google/Jigsaw 2019), shipped with FaceForensics++ or as a flat copy.

Either layout is accepted::

    root/original_sequences/actors/<comp>/videos/01__exit_phone_room.mp4
    root/manipulated_sequences/DeepFakeDetection/<comp>/videos/01_02__exit_phone_room__YVGY8LOK.mp4
    (or .../<comp>/frames/<video>/<n>.png)

    root/DFD_original_sequences/*.mp4        flat copy (a space instead of the last underscore and
    root/DFD_manipulated_sequences/*.mp4     a repeated wrapper folder are accepted too)

There is no official split. DFD is mostly a cross-dataset test set, so by default every row is in
``test``; ``split="seeded"`` makes a seeded train/val/test split (``fractions``) grouped by actor:
the leading number of an original, and for a fake the *target* actor (the first number), so an
actor's originals and the fakes made on them never span splits. ``source_id`` holds the actor.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from visec.data.builders.common import (Collector, check_choice, check_options, group_split, layout_error,
                                        parse_fractions, require_root, unwrap)
from visec.data.builders.ffpp import COMPRESSIONS
from visec.data.manifest import SPLITS
from visec.registry import DATASETS

NAME = "dfd"
FAKE = "DeepFakeDetection"
FLAT = {0: ("DFD_original_sequences", "DFD_original sequences"),
        1: ("DFD_manipulated_sequences", "DFD_manipulated sequences")}
_ACTOR = re.compile(r"^(\d+)_")


def actor(name: str) -> str:
    """The (target) actor of a DFD video name: ``01__walking`` and ``01_02__walking__X`` -> ``01``."""
    m = _ACTOR.match(name)
    return m.group(1) if m else name


@DATASETS.register(NAME, summary="DeepFakeDetection (FF++-style or flat DFD_* folders; all test by "
                                 "default, or an actor-grouped seeded split)")
def build_dfd(root: Path, *, compression: str = "c23", split: str = "test", seed: int = 0,
              fractions: Any = (0.7, 0.15, 0.15), hash: bool = True, prefer: str = "frames",
              **options: Any) -> pd.DataFrame:
    """Rows for DFD. ``split``: ``test`` (default), ``train`` or ``val`` puts every row there;
    ``seeded`` splits by actor. ``compression`` applies to the FF++-style layout only."""
    check_options(NAME, build_dfd, options)
    check_choice(NAME, "compression", compression, COMPRESSIONS)
    check_choice(NAME, "split", split, (*SPLITS, "seeded"))
    fr = parse_fractions(NAME, fractions)
    root = require_root(NAME, root)
    col = Collector(NAME, root, hash=hash)

    ff_real = root / "original_sequences" / "actors"
    ff_fake = root / "manipulated_sequences" / FAKE
    bases: list[tuple[int, Path, bool]] = []  # (label, folder, loose frame folders?)
    extra: dict[str, Any] = {}
    if ff_real.is_dir() or ff_fake.is_dir():
        extra = {"compression": compression}
        for label, top in ((0, ff_real), (1, ff_fake)):
            if (top / compression).is_dir():
                bases.append((label, top / compression, False))
            else:
                col.miss(f"{col.rel(top)}/{compression}/", f"no {compression} folder")
        expected = (f"original_sequences/actors/{compression}/videos and "
                    f"manipulated_sequences/{FAKE}/{compression}/videos")
    else:
        for label, names in FLAT.items():
            folder = next((root / n for n in names if (root / n).is_dir()), None)
            if folder is not None:
                bases.append((label, unwrap(folder), True))
        expected = "DFD_original_sequences/ and DFD_manipulated_sequences/"
        if not bases:
            raise layout_error(NAME, root, f"folders original_sequences/actors and manipulated_sequences/"
                                           f"{FAKE} (FaceForensics++ download) or {expected}")

    videos = [(label, v) for label, base, loose in bases
              for v in col.scan(base, prefer=prefer, loose_frames=loose, layout="DFD")]
    assigned: dict[str, str] = {}
    if split == "seeded":
        keys = {f"{label}/{v.name}": actor(v.name) for label, v in videos}
        assigned = group_split(keys, seed=seed, fractions=fr)
    for label, video in videos:
        manipulation = FAKE if label else "real"
        col.add(video, split=assigned[f"{label}/{video.name}"] if split == "seeded" else split,
                label=label, manipulation=manipulation, video_id=f"{NAME}/{manipulation}/{video.name}",
                source_id=actor(video.name), **extra)
    return col.result(expected)
