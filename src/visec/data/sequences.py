"""Sequential deepfakes: manipulation sequences as Seq-DeepFake labels them, and their manifests.

A sequentially manipulated face carries an ordered list of up to :data:`MAX_STEPS` edits. The
label is a vector of exactly five class ids in application order, padded with 0 ("NA"): the edits
``nose``, then ``eye``, then ``lip`` are ``(1, 2, 4, 0, 0)``; an untouched face is
``(0, 0, 0, 0, 0)``. The ids are those of the Seq-DeepFake dataset, per subset (:data:`SUBSETS`).

A *sequence manifest* is an ordinary manifest (:mod:`visec.data.manifest`) with extra columns:

============ ======= ==========================================================================
column       type    meaning
============ ======= ==========================================================================
sequence     list    the five ids (JSON list of ints); ``label`` is 1 exactly when one is non-zero
subset       str     ``facial_components`` or ``facial_attributes`` (optional)
original     str     optional: the untouched face the row was made from (path relative to the
                     manifest folder); an original row points at its own file
============ ======= ==========================================================================

:func:`read_sequence_manifest` reads one and checks these rules; the sequences come back as tuples.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from visec.data.manifest import Manifest, read_manifest
from visec.errors import ManifestError

MAX_STEPS = 5
NA = 0
SUBSETS: dict[str, tuple[str, ...]] = {
    "facial_components": ("nose", "eye", "eyebrow", "lip", "hair"),
    "facial_attributes": ("bangs", "eyeglasses", "beard", "smiling", "young"),
}
ORIGINAL = "original"  # the name of the empty sequence


def _where(where: str) -> str:
    return f"{where}: " if where else ""


def parse_sequence(value: Any, where: str = "") -> tuple[int, ...]:
    """Five manipulation ids from a list/tuple of ints or a string such as ``"[1, 2, 4, 0, 0]"``.

    The string is parsed as a Python/JSON literal (never by character position, so ``10`` stays
    ten). Refused with a one-line :class:`~visec.errors.ManifestError` naming ``where``: anything
    that is not a list of exactly five integers (bools and non-integral floats included), an id
    outside ``0..5``, and a non-zero id after a zero (padding comes last).
    """
    pre = _where(where)
    raw = value
    if isinstance(value, str):
        text = value.strip()
        try:
            value = ast.literal_eval(text) if text else None
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise ManifestError(f"{pre}sequence {raw!r} is not a list of {MAX_STEPS} integers") from None
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise ManifestError(f"{pre}sequence {raw!r} is not a list of {MAX_STEPS} integers")
    if len(value) != MAX_STEPS:
        raise ManifestError(f"{pre}sequence {raw!r} has {len(value)} entries; it must have exactly {MAX_STEPS}")
    out: list[int] = []
    for v in value:
        if isinstance(v, np.integer):
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            raise ManifestError(f"{pre}sequence {raw!r}: {v!r} is not an integer id")
        if not NA <= v <= MAX_STEPS:
            raise ManifestError(f"{pre}sequence {raw!r}: id {v} is outside 0..{MAX_STEPS}")
        out.append(v)
    n = steps(out)
    if any(v != NA for v in out[n:]):
        raise ManifestError(f"{pre}sequence {raw!r}: a manipulation id follows a 0 (NA); the padding "
                            f"zeros must come last")
    return tuple(out)


def steps(seq: Any) -> int:
    """The number of manipulation steps: the position of the first 0 (5 when there is none)."""
    for i, v in enumerate(seq):
        if v == NA:
            return i
    return len(seq)


def check_subset(subset: str) -> tuple[str, ...]:
    """The edit names of ``subset``; an unknown name raises a one-line error listing both."""
    try:
        return SUBSETS[subset]
    except (KeyError, TypeError):
        raise ManifestError(f"unknown Seq-DeepFake subset {subset!r}; choose one of "
                            f"{', '.join(SUBSETS)}") from None


def sequence_name(seq: Any, subset: str) -> str:
    """``"original"`` for the empty sequence, else the edit names in order joined by ``-``
    (``(1, 2, 4, 0, 0)`` of ``facial_components`` -> ``"nose-eye-lip"``)."""
    names = check_subset(subset)
    ids = parse_sequence(seq)
    n = steps(ids)
    return ORIGINAL if n == 0 else "-".join(names[i - 1] for i in ids[:n])


def pad_sequence(ids: Any) -> tuple[int, ...]:
    """Ids of the applied edits (1 to 5 of them, or none) padded with zeros to five."""
    ids = [int(i) for i in ids]
    if len(ids) > MAX_STEPS:
        raise ManifestError(f"a sequence has at most {MAX_STEPS} steps, got {len(ids)}")
    return parse_sequence(ids + [NA] * (MAX_STEPS - len(ids)))


def read_sequence_manifest(path: str | os.PathLike, *, check_files: bool = True) -> Manifest:
    """:func:`~visec.data.manifest.read_manifest` plus the rules of a sequence manifest.

    Every row needs a valid ``sequence`` (stored back as a tuple of five ints) whose emptiness
    agrees with ``label`` (1 exactly when some id is non-zero). The ``original`` column is optional;
    where present its paths are relative to the manifest folder and, with ``check_files``, must
    exist. ``subset``, when present, must be a known subset name.
    """
    m = read_manifest(path, check_files=check_files)
    name = str(m.source or path)
    df = m.df
    if "sequence" not in df.columns:
        raise ManifestError(f"{name}: no 'sequence' column; a sequential-deepfake manifest needs the five "
                            f"manipulation ids of every row")
    seqs = []
    for i, (value, label) in enumerate(zip(df["sequence"], df["label"])):
        where = f"{name}: row {i} ({df['path'].iloc[i]})"
        if value is None or (isinstance(value, float) and np.isnan(value)):
            raise ManifestError(f"{where}: no sequence")
        seq = parse_sequence(value, where)
        if int(label) != int(steps(seq) > 0):
            raise ManifestError(f"{where}: label {int(label)} disagrees with sequence {list(seq)} (label 1 "
                                f"exactly when the sequence has a manipulation)")
        seqs.append(seq)
    df = df.copy()
    df["sequence"] = pd.Series(seqs, index=df.index, dtype=object)
    if "subset" in df.columns:
        bad = df.loc[~df["subset"].isin(list(SUBSETS)), "subset"]
        if len(bad):
            raise ManifestError(f"{name}: row {df.index.get_loc(bad.index[0])} has subset {bad.iloc[0]!r}; "
                                f"allowed: {', '.join(SUBSETS)}")
    if "original" in df.columns:
        for i, rel in enumerate(df["original"]):
            if rel is None or (isinstance(rel, float) and np.isnan(rel)):
                continue
            if not isinstance(rel, str) or not rel or Path(rel).is_absolute():
                raise ManifestError(f"{name}: row {i} ({df['path'].iloc[i]}): original {rel!r} must be a "
                                    f"path relative to the manifest folder")
            if check_files and not (m.root / rel).is_file():
                raise ManifestError(f"{name}: row {i} ({df['path'].iloc[i]}): original {rel} does not "
                                    f"exist under {m.root}")
    return Manifest(df, m.root, m.source)
