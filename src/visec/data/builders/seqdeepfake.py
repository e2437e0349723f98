"""Seq-DeepFake (Shao et al., ECCV 2022): faces edited by sequences of up to five manipulations.

Layout (as released; one subset per build, option ``subset``)::

    root/<subset>/annotations/{train,val,test}.csv     columns file_path,label
    root/<subset>/images/<split>/<SeqName>/xxx.jpg     e.g. nose-eyebrow-lip-eye-hair/, Young-Smiling/
    root/<subset>/images/<split>/original/xxx.jpg      the untouched faces

``subset`` is ``facial_components`` (default) or ``facial_attributes``; ``root`` may also be the
subset folder itself when its name is the subset. ``label`` is the manipulation sequence as a
string, e.g. ``"[1, 2, 4, 0, 0]"`` (parsed as a list, so multi-digit values are never misread; see
:func:`visec.data.sequences.parse_sequence`). ``file_path`` is taken relative to the subset folder,
and failing that relative to ``root`` (the research notes read it as relative to the data root);
an absolute path from the authors' machine is re-rooted at its ``<subset>/`` or ``images/`` part.

Rows: split from the CSV, ``sequence`` (five ints), ``subset``, label 1 when the sequence has an edit,
manipulation ``real`` for ``[0, 0, 0, 0, 0]`` and otherwise the sequence name in the visec spelling
(``nose-eye-lip``, ``bangs-young``), ``video_id`` ``seqdeepfake/<subset>/<manipulation>/<path>``
(one per image; ``<path>`` below the subset folder, without the extension). ``original`` links a
forged image to the untouched face with the same file stem in ``images/<split>/original/`` where
there is one (original rows link to themselves); the report's notes say how many were linked. A CSV row whose file is missing or whose label does not parse is
skipped with its reason, as is every image under ``images/`` that no CSV lists.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from visec.data.builders.common import Collector, Video, check_options, layout_error, require_root, walk_files
from visec.data.manifest import REAL, SPLITS, media_kind
from visec.data.sequences import SUBSETS, check_subset, parse_sequence, sequence_name, steps
from visec.errors import ManifestError
from visec.registry import DATASETS

NAME = "seqdeepfake"
ORIGINAL_DIR = "original"


def _subset_base(root: Path, subset: str) -> Path:
    if (root / subset / "annotations").is_dir():
        return root / subset
    if root.name == subset and (root / "annotations").is_dir():
        return root
    there = [s for s in SUBSETS if (root / s / "annotations").is_dir()]
    hint = f" (found: {', '.join(there)}; choose it with -o subset=...)" if there else ""
    raise layout_error(NAME, root, f"{subset}/annotations/{{train,val,test}}.csv and {subset}/images/"
                                   f"<split>/<sequence>/*.jpg{hint}")


def _resolve(fp: str, root: Path, base: Path, subset: str) -> Path | None:
    """The file a CSV ``file_path`` names: below the subset folder, below ``root``, or an absolute
    path re-rooted at its ``<subset>/`` or ``images/`` part."""
    p = PurePosixPath(fp.replace("\\", "/"))
    parts = [x for x in p.parts if x not in ("/", ".")]
    cands: list[Path] = []
    if not p.is_absolute():
        cands += [base.joinpath(*parts), root.joinpath(*parts)]
    if subset in parts:
        i = len(parts) - 1 - parts[::-1].index(subset)
        cands.append(base.joinpath(*parts[i + 1:]))
    if "images" in parts:
        cands.append(base.joinpath(*parts[parts.index("images"):]))
    if p.is_absolute():
        cands.append(Path(fp))
    return next((c for c in cands if parts and os.path.isfile(c)), None)  # isfile: never raises (long names)


def _read_csv(path: Path, col: Collector) -> list[tuple[int, str, str]]:
    """``(line number, file_path, label)`` for every data row of one annotation CSV."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = {(f or "").strip().lower(): f for f in (reader.fieldnames or [])}
        if "file_path" not in fields or "label" not in fields:
            raise ManifestError(f"{NAME}: {col.rel(path)} must have a header with columns file_path,label "
                                f"(found: {', '.join(reader.fieldnames or []) or 'none'})")
        fp_key, label_key = fields["file_path"], fields["label"]
        return [(lineno, (row.get(fp_key) or "").strip(), (row.get(label_key) or "").strip())
                for lineno, row in enumerate(reader, 2) if any((v or "").strip() for v in row.values()
                                                               if isinstance(v, str))]


@DATASETS.register(NAME, summary="Seq-DeepFake (facial_components or facial_attributes: annotation CSVs "
                                 "with 5-step manipulation sequences; originals linked by file stem)")
def build_seqdeepfake(root: Path, *, subset: str = "facial_components", hash: bool = True,
                      **options: Any) -> pd.DataFrame:
    """Rows for one Seq-DeepFake subset, with the ``sequence`` and ``original`` columns."""
    check_options(NAME, build_seqdeepfake, options)
    check_subset(subset)
    root = require_root(NAME, root)
    base = _subset_base(root, subset)
    col = Collector(NAME, root, hash=hash)
    listed: set[Path] = set()  # every file a CSV row names (used or skipped)
    link_targets: set[Path] = set()
    linked = forged = 0
    for split in SPLITS:
        ann = base / "annotations" / f"{split}.csv"
        if not ann.is_file():
            col.miss(col.rel(ann), "annotation file not found")
            continue
        originals: dict[str, Path] = {}
        orig_dir = base / "images" / split / ORIGINAL_DIR
        if orig_dir.is_dir():
            for f in sorted(orig_dir.iterdir()):
                if os.path.isfile(f) and media_kind(f.name) == "image":
                    originals.setdefault(f.stem, f)
        where_csv = col.rel(ann)
        for lineno, fp, raw in _read_csv(ann, col):
            where = f"{where_csv}:{lineno}"
            path = _resolve(fp, root, base, subset) if fp else None
            if path is not None and path in listed:
                col.skip(path, f"listed again in {where}; the first row is kept")
                continue
            if path is not None:
                listed.add(path)
            try:
                seq = parse_sequence(raw, where)
            except ManifestError as exc:
                shown = col.rel(path) if path is not None else fp or where
                col.skipped.append((shown, f"label does not parse ({exc})"))
                continue
            if path is None:
                col.skipped.append((fp or where, f"listed in {where} but not found under {col.rel(base)}/ "
                                                 f"or the dataset root"))
                continue
            if media_kind(path.name) != "image":
                col.skip(path, f"listed in {where} but not an image file")
                continue
            fake = steps(seq) > 0
            manipulation = sequence_name(seq, subset) if fake else REAL
            extra: dict[str, Any] = {"sequence": list(seq), "subset": subset}
            if not fake:
                extra["original"] = col.rel(path)
            else:
                forged += 1
                orig = originals.get(path.stem)
                if orig is not None:
                    extra["original"] = col.rel(orig)
                    link_targets.add(orig)
                    linked += 1
            rel_below = Path(os.path.relpath(path, base)).with_suffix("").as_posix()
            col.add(Video.single(path.stem, path), split=split, label=int(fake), manipulation=manipulation,
                    video_id=f"{NAME}/{subset}/{manipulation}/{rel_below}", **extra)
    images = base / "images"
    if images.is_dir():
        for f in walk_files(images, col.skip):
            if media_kind(f.name) == "image" and f not in listed:
                col.skip(f, "image not listed in any annotations CSV" +
                         (" (linked as an original)" if f in link_targets else ""))
    df = col.result(f"rows in {subset}/annotations/{{train,val,test}}.csv naming images that exist")
    if "original" not in df.columns:
        df["original"] = None
    df.attrs["linked_originals"] = linked
    df.attrs["notes"] = [f"original linked for {linked} of {forged} forged image(s) (same file stem in "
                         f"images/<split>/{ORIGINAL_DIR}/); original rows link to themselves"]
    return df
