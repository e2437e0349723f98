"""The manifest: one table describing every sample of a face dataset.

A manifest is a JSON Lines file; each line is one sample (an image, a video frame already extracted,
or a whole video waiting for preprocessing). Paths are relative to the manifest's own folder, so a
dataset folder can be moved or mounted elsewhere. Columns:

========== ======= ============================================================================
column     type    meaning
========== ======= ============================================================================
path       str     file path relative to the manifest folder (POSIX separators)
dataset    str     dataset name, e.g. ``ffpp``, ``celebdf``, ``generic``
split      str     ``train``, ``val`` or ``test``
label      int     0 real, 1 fake
manipulation str   ``real`` for pristine samples, else the manipulation name (``Deepfakes``...)
video_id   str     unique across datasets and manipulation types: ``dataset/manipulation/name``
frame_index int    frame number inside the video; 0 for a still image; -1 for a whole video
media      str     ``image`` or ``video``
sha256     str     content hash of the file (hex), or "" when hashing was switched off
========== ======= ============================================================================

Optional columns (``landmarks``, ``mask``, ``quality``, ``source_id``, ``modality``...) are kept as
they are. :func:`validate` enforces the rules above; every builder and the preprocessing step write
manifests through :func:`write_manifest`, so no invalid manifest is ever written.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from visec.errors import ManifestError
from visec.utils import json_safe

SPLITS = ("train", "val", "test")
MEDIA = ("image", "video")
REAL = "real"
REQUIRED: dict[str, type] = {
    "path": str,
    "dataset": str,
    "split": str,
    "label": int,
    "manipulation": str,
    "video_id": str,
    "frame_index": int,
    "media": str,
    "sha256": str,
}
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def media_kind(path: str | os.PathLike) -> str | None:
    """``image``, ``video`` or ``None`` (not a media file) from the extension."""
    ext = Path(path).suffix.lower()
    return "image" if ext in IMAGE_EXTS else "video" if ext in VIDEO_EXTS else None


def media_of(path: str | os.PathLike) -> str:
    """``image`` or ``video`` from the file extension; raises for anything else."""
    kind = media_kind(path)
    if kind is None:
        raise ManifestError(f"{path}: not an image or video file (extension '{Path(path).suffix.lower()}')")
    return kind


def make_record(
    root: str | os.PathLike,
    path: str | os.PathLike,
    *,
    dataset: str,
    split: str,
    label: int,
    manipulation: str,
    video_id: str,
    frame_index: int | None = None,
    hash: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """One manifest row for ``path``; ``root`` is the folder the path is made relative to.

    ``frame_index`` defaults to 0 for an image and -1 (whole video) for a video.
    """
    root, p = Path(root), Path(path)
    absolute = p if p.is_absolute() else root / p
    media = media_of(absolute)
    if frame_index is None:
        frame_index = -1 if media == "video" else 0
    rel = os.path.relpath(absolute, root)
    return {
        "path": Path(rel).as_posix(),
        "dataset": dataset,
        "split": split,
        "label": int(label),
        "manipulation": manipulation,
        "video_id": video_id,
        "frame_index": int(frame_index),
        "media": media,
        "sha256": file_sha256(absolute) if hash else "",
        **extra,
    }


def validate(df: pd.DataFrame, name: str = "manifest") -> pd.DataFrame:
    """Check the manifest rules; return ``df`` with normalised dtypes or raise :class:`ManifestError`."""
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ManifestError(f"{name}: missing column(s) {', '.join(missing)}")
    if len(df) == 0:
        raise ManifestError(f"{name}: no rows")
    df = df.copy()
    for col in ("label", "frame_index"):
        try:
            df[col] = pd.to_numeric(df[col], errors="raise").astype(np.int64)
        except (ValueError, TypeError) as exc:
            raise ManifestError(f"{name}: column '{col}' must hold integers ({exc})") from None
    for col, allowed in (("split", SPLITS), ("media", MEDIA)):
        bad = df.loc[~df[col].isin(allowed), col]
        if len(bad):
            raise ManifestError(
                f"{name}: {len(bad)} row(s) with {col} {bad.iloc[0]!r} (row {bad.index[0]}); "
                f"allowed: {', '.join(allowed)}")
    bad = df.loc[~df["label"].isin([0, 1])]
    if len(bad):
        raise ManifestError(f"{name}: label must be 0 (real) or 1 (fake); row {bad.index[0]} has "
                            f"{bad['label'].iloc[0]}")
    inconsistent = (df["label"] == 0) != (df["manipulation"] == REAL)
    if inconsistent.any():
        i = df.index[inconsistent.to_numpy()][0]
        raise ManifestError(f"{name}: row {i} ({df.at[i, 'path']}): label 0 must go with "
                            f"manipulation '{REAL}' and label 1 with a manipulation name")
    per_video = df.groupby("video_id")[["label", "manipulation", "split", "dataset"]].nunique()
    mixed = per_video[(per_video > 1).any(axis=1)]
    if len(mixed):
        vid = mixed.index[0]
        cols = [c for c in mixed.columns if mixed.at[vid, c] > 1]
        raise ManifestError(f"{name}: video_id '{vid}' mixes several values of {', '.join(cols)}; "
                            f"video ids must be unique across manipulations and splits "
                            f"({len(mixed)} such video(s))")
    dup = df.duplicated(["path", "frame_index"])
    if dup.any():
        i = df.index[dup.to_numpy()][0]
        raise ManifestError(f"{name}: duplicate row for {df.at[i, 'path']} frame {df.at[i, 'frame_index']}")
    return df


@dataclass
class Manifest:
    """A validated manifest table and the folder its paths are relative to."""

    df: pd.DataFrame
    root: Path
    source: Path | None = None

    def __len__(self) -> int:
        return len(self.df)

    def split(self, *names: str) -> "Manifest":
        for n in names:
            if n not in SPLITS:
                raise ManifestError(f"unknown split '{n}'; allowed: {', '.join(SPLITS)}")
        part = self.df[self.df["split"].isin(names)].reset_index(drop=True)
        return Manifest(part, self.root, self.source)

    def paths(self) -> list[Path]:
        return [self.root / p for p in self.df["path"]]

    def missing_files(self) -> list[str]:
        return [p for p in self.df["path"] if not (self.root / p).is_file()]

    def counts(self) -> pd.DataFrame:
        """Rows per split x manipulation (a quick summary for the CLI)."""
        return self.df.pivot_table(index="manipulation", columns="split", values="path",
                                   aggfunc="count", fill_value=0)


def write_manifest(records: Iterable[dict[str, Any]] | pd.DataFrame, out: str | os.PathLike) -> Path:
    """Validate and write rows as JSON Lines, sorted by (split, video_id, frame_index)."""
    out = Path(out)
    df = records.copy() if isinstance(records, pd.DataFrame) else pd.DataFrame(list(records))
    df = validate(df, name=str(out))
    df = df.sort_values(["split", "video_id", "frame_index", "path"], kind="stable")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in df.to_dict(orient="records"):
            clean = json_safe({k: v for k, v in row.items() if not _is_missing(v)})
            fh.write(json.dumps(clean, sort_keys=False) + "\n")
    os.replace(tmp, out)
    return out


def read_manifest(path: str | os.PathLike, *, check_files: bool = True) -> Manifest:
    """Read and validate a manifest; with ``check_files`` every named file must exist."""
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.jsonl"
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ManifestError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
    df = validate(pd.DataFrame(rows), name=str(path))
    m = Manifest(df, path.parent.resolve(), path)
    if check_files:
        missing = m.missing_files()
        if missing:
            shown = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
            raise ManifestError(f"{path}: {len(missing)} file(s) named in the manifest do not exist "
                                f"under {m.root}: {shown}")
    return m


def seeded_split(groups: Sequence[str], seed: int = 0,
                 fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> dict[str, str]:
    """Assign each distinct group (identity, source video...) to train/val/test, reproducibly.

    Groups are sorted first, so the result depends only on the set of groups and the seed. Every
    split gets at least one group when there are three or more groups.
    """
    uniq = sorted(set(groups))
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ManifestError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    order = np.random.default_rng(seed).permutation(len(uniq))
    n = len(uniq)
    n_test = int(round(fractions[2] * n))
    n_val = int(round(fractions[1] * n))
    if n >= 3:
        n_test = max(n_test, 1 if fractions[2] > 0 else 0)
        n_val = max(n_val, 1 if fractions[1] > 0 else 0)
    out: dict[str, str] = {}
    for rank, idx in enumerate(order):
        split = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
        out[uniq[idx]] = split
    return out


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))
