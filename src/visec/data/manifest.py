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
they are. :class:`ManifestRow` is the schema of one line (strict types: a label ``1.5``, ``true`` or
``"1"`` is refused, never rounded or converted); :func:`validate` checks every row against it, then
the rules across rows; every builder and the preprocessing step write manifests through
:func:`write_manifest`, so no invalid manifest is ever written, and :func:`read_manifest` names the
file, line and field of the first bad value it reads.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from visec.errors import ManifestError
from visec.utils import json_safe, parse_json, short_repr

SPLITS = ("train", "val", "test")
MEDIA = ("image", "video")
REAL = "real"


class ManifestRow(BaseModel):
    """The required columns of one manifest row, with strict types (other columns pass unchecked)."""

    model_config = ConfigDict(strict=True, extra="ignore")

    # each description completes "FIELD must be ..." in the error naming a bad value
    path: str = Field(min_length=1, description="a non-empty string (a path relative to the manifest)")
    dataset: str = Field(min_length=1, description="a non-empty string")
    split: Literal[SPLITS] = Field(description=f"one of {', '.join(SPLITS)}")  # type: ignore[valid-type]
    label: int = Field(ge=0, le=1, description="0 (real) or 1 (fake), an integer")
    manipulation: str = Field(min_length=1, description="a non-empty string ('real' or the manipulation)")
    video_id: str = Field(min_length=1, description="a non-empty string")
    frame_index: int = Field(ge=-1, lt=2**63, description="an integer >= -1 (-1: a whole video) that fits 64 bits")
    media: Literal[MEDIA] = Field(description=f"one of {', '.join(MEDIA)}")  # type: ignore[valid-type]
    sha256: str = Field(pattern=r"^(?:[0-9a-fA-F]{64})?$", description="64 hexadecimal digits or empty")


_ROWS = TypeAdapter(list[ManifestRow])
REQUIRED: tuple[str, ...] = tuple(ManifestRow.model_fields)  # the columns every row has
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


def check_rows(rows: list[Any], where: Callable[[int], str]) -> None:
    """Check each row against :class:`ManifestRow`; the first bad one raises :class:`ManifestError`
    naming it (``where(i)``: file and line, or table and row), the field and what was found."""
    try:
        _ROWS.validate_python(rows)
    except ValidationError as exc:
        errors = exc.errors()
        err = errors[0]
        i, loc = err["loc"][0], [str(p) for p in err["loc"][1:]]
        bad = len({e["loc"][0] for e in errors})
        more = f" ({bad} bad rows in all)" if bad > 1 else ""
        if not loc:  # the row itself is not an object
            raise ManifestError(f"{where(i)}: expected a JSON object with the manifest columns, got "
                                f"{_kind(rows[i])}{more}") from None
        field = loc[0]
        if err["type"] == "missing":
            raise ManifestError(f"{where(i)}: field '{field}' is missing{more}") from None
        value = err.get("input")
        rule = ManifestRow.model_fields[field].description
        raise ManifestError(f"{where(i)}: {field} {_shown(value)} ({_kind(value)}): {field} must be "
                            f"{rule}{more}") from None


def _cut(text: Any, limit: int = 80) -> str:
    text = str(text).replace("\n", "\\n")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _shown(value: Any) -> str:
    """``true``, ``null``, ``1.5`` as JSON writes them; strings and anything else as a short repr."""
    try:
        if value is None or isinstance(value, (bool, int, float)):
            return _cut(json.dumps(value), 60)
        return short_repr(value)
    except ValueError:  # an integer of thousands of digits
        return "(too long to show)"


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def validate(df: pd.DataFrame, name: str = "manifest", *,
             where: Callable[[Any], str] | None = None) -> pd.DataFrame:
    """Check the manifest rules; return ``df`` with normalised dtypes or raise :class:`ManifestError`.

    Each row must match :class:`ManifestRow`; then labels must agree with manipulations, a
    ``video_id`` must keep one label, manipulation, split and dataset, and (path, frame) pairs must
    be unique. ``where`` names a row from its index label (default ``"NAME: row I"``).
    """
    at = where or (lambda i: f"{name}: row {i}")
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ManifestError(f"{name}: missing column(s) {', '.join(missing)}")
    if len(df) == 0:
        raise ManifestError(f"{name}: no rows")
    df = df.copy()
    for col in REQUIRED:  # before the types: one missing value turns a column of integers into floats
        gap = df[col].isna().to_numpy()
        if gap.any():
            raise ManifestError(f"{at(df.index[gap][0])}: field '{col}' is missing ({int(gap.sum())} row(s))")
    for col in ("label", "frame_index"):
        if df[col].dtype.kind == "f":  # one float among integers makes the column float: name that value
            df[col] = pd.Series([int(v) if v.is_integer() else v for v in df[col].tolist()],
                                index=df.index, dtype=object)
    records = df[list(REQUIRED)].to_dict(orient="records")
    check_rows(records, lambda i: at(df.index[i]))
    return _check_table(df, name, at)


def _check_table(df: pd.DataFrame, name: str, at: Callable[[Any], str]) -> pd.DataFrame:
    """The rules across rows (each row already matches :class:`ManifestRow`)."""
    for col in ("label", "frame_index"):
        df[col] = df[col].astype(np.int64)
    inconsistent = (df["label"] == 0) != (df["manipulation"] == REAL)
    if inconsistent.any():
        i = df.index[inconsistent.to_numpy()][0]
        raise ManifestError(f"{at(i)} ({_cut(df.at[i, 'path'])}): label 0 must go with "
                            f"manipulation '{REAL}' and label 1 with a manipulation name")
    per_video = df.groupby("video_id")[["label", "manipulation", "split", "dataset"]].nunique()
    mixed = per_video[(per_video > 1).any(axis=1)]
    if len(mixed):
        vid = mixed.index[0]
        cols = [c for c in mixed.columns if mixed.at[vid, c] > 1]
        raise ManifestError(f"{name}: video_id '{_cut(vid)}' mixes several values of {', '.join(cols)}; "
                            f"video ids must be unique across manipulations and splits "
                            f"({len(mixed)} such video(s))")
    dup = df.duplicated(["path", "frame_index"])
    if dup.any():
        i = df.index[dup.to_numpy()][0]
        raise ManifestError(f"{at(i)}: duplicate row for {_cut(df.at[i, 'path'])} frame {df.at[i, 'frame_index']}")
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

    def hashes(self) -> dict[str, str]:
        """``{path: sha256}``, one entry per file (the rows of a video's frames share its file)."""
        return dict(zip(self.df["path"], self.df["sha256"]))

    def verify(self) -> int:
        """Check every file's bytes against the SHA-256 the manifest records for it; files that
        differ or are gone raise :class:`ManifestError` with their count and the first names.
        Returns how many files the manifest records no hash for (``""``: nothing to check)."""
        hashes = self.hashes()
        bad = [p for p, h in hashes.items()
               if h and (not (self.root / p).is_file() or file_sha256(self.root / p) != h.lower())]
        if bad:
            shown = ", ".join(_cut(p) for p in bad[:3]) + (" ..." if len(bad) > 3 else "")
            raise ManifestError(f"{self.source or self.root}: {len(bad)} of {len(hashes)} file(s) differ from "
                                f"the sha256 the manifest records (changed or missing): {shown}")
        return sum(1 for h in hashes.values() if not h)

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
    rows, lines = [], []
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(parse_json(line))
            except ValueError as exc:
                raise ManifestError(f"{path}:{lineno}: {exc}") from None
            lines.append(lineno)
    if not rows:
        raise ManifestError(f"{path}: no rows")
    check_rows(rows, lambda i: f"{path}:{lines[i]}")
    df = _check_table(pd.DataFrame(rows, index=lines), str(path), lambda i: f"{path}:{i}")
    df = df.reset_index(drop=True)
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
