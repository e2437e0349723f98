"""Dataset builders: published folder layouts -> manifests.

Each builder is registered in :data:`visec.registry.DATASETS` and called as
``builder(root, **options) -> pandas.DataFrame``; rows have paths relative to ``root``, and
``df.attrs`` holds ``skipped`` (files seen but not used, each ``(relative path, reason)``) and
``missing`` (what the layout promises but is not on disk). :func:`build_manifest` runs one, writes
the manifest and a report beside it (with ``warnings``: a manifest of one class only, and on a
re-run the files whose sha256 changed since the previous build)::

    from visec.data.builders import build_manifest
    build_manifest("ffpp", "/data/FaceForensics++", compression="c40")   # -> /data/FaceForensics++/manifest.jsonl

=============== ===================================================================================
name            layout
=============== ===================================================================================
``ffpp``        ``original_sequences/youtube/<comp>/videos`` + ``manipulated_sequences/<M>/<comp>/...``
``celebdf``     ``Celeb-real/``, ``YouTube-real/``, ``Celeb-synthesis/`` + ``List_of_testing_videos.txt``
``dfd``         FF++-style ``actors`` / ``DeepFakeDetection`` folders, or flat ``DFD_*_sequences/``
``wilddeepfake`` ``{real,fake}_{train,test}/.../<sequence>/<frame>.png``
``generic``     ``real/**`` and ``fake/<manipulation>/**`` (optionally under ``train|val|test/``)
``seqdeepfake`` ``<subset>/annotations/{train,val,test}.csv`` + ``<subset>/images/<split>/<sequence>/``
                (Seq-DeepFake; ``sequence`` and ``original`` columns, option ``subset``)
=============== ===================================================================================
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from visec.data.builders import celebdf, dfd, ffpp, generic, seqdeepfake, wilddeepfake  # noqa: F401  (registers them)
from visec.data.manifest import read_manifest, write_manifest
from visec.errors import VisecError
from visec.registry import DATASETS
from visec.utils import json_safe

__all__ = ["build_manifest", "report_path", "rebase_paths"]


def report_path(manifest: str | os.PathLike) -> Path:
    """The build report that sits beside a manifest: ``manifest.jsonl`` -> ``manifest.report.json``."""
    manifest = Path(manifest)
    return manifest.with_name(manifest.stem + ".report.json")


PATH_COLUMNS = ("path", "original")  # columns holding paths relative to the manifest folder


def rebase_paths(df: pd.DataFrame, root: str | os.PathLike, folder: str | os.PathLike) -> pd.DataFrame:
    """Rewrite ``df['path']`` (and ``df['original']`` where set) from relative-to-``root`` to
    relative-to-``folder`` (POSIX, may use ``..``).

    Both folders are resolved (symlinks followed) because :func:`~visec.data.manifest.read_manifest`
    resolves the manifest's folder before joining, so ``..`` steps land where they should.
    """
    src, dst = Path(root).resolve(), Path(folder).resolve()
    if src == dst:
        return df
    df = df.copy()
    for col in PATH_COLUMNS:
        if col in df.columns:
            df[col] = [Path(os.path.relpath(src / p, dst)).as_posix() if isinstance(p, str) and p else p
                       for p in df[col]]
    return df


def _changed_hashes(out: Path, df: pd.DataFrame) -> tuple[list[str], str | None]:
    """Paths of the manifest already at ``out`` whose recorded sha256 differs from the new build's
    (a file replaced or corrupted since the last build), and a note when none could be compared."""
    if not out.is_file():
        return [], None
    try:
        old = read_manifest(out, check_files=False).hashes()
    except VisecError as exc:
        return [], f"the previous manifest could not be read, so no hash was compared ({exc})"
    new = dict(zip(df["path"], df["sha256"]))
    if not any(new.values()):
        return [], "hashes were not computed (hash=false), so none was compared with the previous manifest"
    return sorted(p for p, h in new.items() if h and old.get(p) and old[p].lower() != h.lower()), None


def _report(name: str, root: Path, out: Path, df: pd.DataFrame, options: dict[str, Any],
            changed: list[str] | None = None, compare_note: str | None = None) -> dict[str, Any]:
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for (split, manipulation), part in df.groupby(["split", "manipulation"], sort=True):
        counts.setdefault(str(split), {})[str(manipulation)] = {
            "rows": int(len(part)), "videos": int(part["video_id"].nunique())}
    skipped = df.attrs.get("skipped", [])
    missing = df.attrs.get("missing", [])
    changed = changed or []
    warnings = []
    labels = sorted(df["label"].unique().tolist())
    if len(labels) < 2:
        warnings.append(f"only one class in the manifest (every row is {'real' if labels == [0] else 'fake'}): "
                        f"a detector trained or tested on it needs both real and fake samples")
    if changed:
        shown = ", ".join(changed[:3]) + (" ..." if len(changed) > 3 else "")
        warnings.append(f"{len(changed)} file(s) changed since the previous build of {out.name} "
                        f"(sha256 differs): {shown}")
    if compare_note:
        warnings.append(compare_note)
    return {
        "builder": name,
        "dataset": sorted(df["dataset"].unique().tolist()),
        "root": str(root.resolve()),
        "manifest": out.name,
        "options": json_safe(options, default=str),
        "rows": int(len(df)),
        "videos": int(df["video_id"].nunique()),
        "labels": {str(k): int(v) for k, v in df["label"].value_counts().sort_index().items()},
        "counts": counts,
        "skipped_count": len(skipped),
        "skipped": [{"path": p, "reason": r} for p, r in skipped],
        "missing_count": len(missing),
        "missing": [{"path": p, "reason": r} for p, r in missing],
        "notes": list(df.attrs.get("notes", [])),
        "hash_changed_count": len(changed),
        "hash_changed": changed,
        "warnings": warnings,
    }


def build_manifest(name: str, root: str | os.PathLike, out: str | os.PathLike | None = None,
                   **options: Any) -> Path:
    """Run the builder ``name`` on ``root`` and write the manifest (default ``root/manifest.jsonl``).

    ``out`` may lie anywhere: paths are rewritten relative to its folder. An existing folder as
    ``out`` means ``out/manifest.jsonl``. Also writes :func:`report_path` (counts per split and
    manipulation, skipped and missing files, and its ``warnings``: one class only; on a re-run, the
    files whose sha256 differs from the previous manifest at ``out``). Prints nothing; returns the
    manifest path.
    """
    entry = DATASETS.get(name)  # unknown names get "did you mean"
    df = entry.obj(Path(root), **options)
    root = Path(root).expanduser().absolute()
    out = root / "manifest.jsonl" if out is None else Path(out).expanduser().absolute()
    if out.is_dir():
        out = out / "manifest.jsonl"
    attrs = dict(df.attrs)
    df = rebase_paths(df, root, out.parent)
    df.attrs.update(attrs)
    changed, note = _changed_hashes(out, df)  # a re-run: files whose bytes changed since
    path = write_manifest(df, out)
    report = _report(name, root, path, df, options, changed, note)
    report_path(path).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return path
