"""Small helpers every layer shares: JSON-safe values and "did you mean" hints.

Part of the core layer: it imports the standard library only, and no other visec module. numpy
and torch objects are recognised by their ``tolist`` method, so neither is imported here.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any, Callable, Iterable


def json_safe(obj: Any, *, nan_as_none: bool = False, default: Callable[[Any], Any] | None = None) -> Any:
    """``obj`` made of plain JSON types, recursively.

    numpy / torch scalars and arrays become Python numbers and (nested) lists (their ``tolist``),
    paths become strings, tuples and sets become lists, mapping keys become strings. With
    ``nan_as_none`` a NaN float becomes ``None`` (a missing value). Anything else is returned as it
    is, or as ``default(obj)`` when ``default`` is given (e.g. ``str``, as ``json.dumps`` takes it).
    """
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v, nan_as_none=nan_as_none, default=default) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [json_safe(v, nan_as_none=nan_as_none, default=default) for v in obj]
    if isinstance(obj, PurePath):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy / torch scalar or array
        return json_safe(obj.tolist(), nan_as_none=nan_as_none, default=default)
    if isinstance(obj, float) and nan_as_none and math.isnan(obj):
        return None
    if obj is None or isinstance(obj, (str, int, float)) or default is None:
        return obj
    return default(obj)


def did_you_mean(name: Any, known: Iterable[str], *, n: int = 1, cutoff: float = 0.6) -> str:
    """``"; did you mean 'x'?"`` (``'x' or 'y'`` with ``n`` > 1) for the known names close to
    ``name``, or ``""`` when none is close (``cutoff`` as in :func:`difflib.get_close_matches`)."""
    close = difflib.get_close_matches(str(name), list(known), n=n, cutoff=cutoff)
    return "; did you mean " + " or ".join(f"'{c}'" for c in close) + "?" if close else ""


def unknown_name(kind: str, name: Any, known_names: Iterable[str]) -> str:
    """The one-line message for an unknown name, with "did you mean" or the list of known names."""
    known = sorted(known_names)
    hint = did_you_mean(name, known, n=3, cutoff=0.5)
    listing = f"; known: {', '.join(known)}" if known and not hint else ""
    return f"unknown {kind} '{name}'{hint}{listing}"


def cache_dir(kind: str) -> "Path":
    """visec's cache folder for ``kind`` (e.g. ``scans``): ``$VISEC_CACHE_DIR/kind``, else
    ``$XDG_CACHE_HOME/visec/kind``, else ``~/.cache/visec/kind``. Not created here."""
    import os
    from pathlib import Path

    base = os.environ.get("VISEC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "visec")
    return Path(base) / kind
