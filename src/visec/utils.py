"""Small helpers every layer shares: JSON-safe values and "did you mean" hints.

Part of the core layer: it imports the standard library only, and no other visec module. numpy
and torch objects are recognised by their ``tolist`` method, so neither is imported here.
"""

from __future__ import annotations

import difflib
import json
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


#: How deep a JSON or YAML value read from a user's file may nest (visec's own files nest < 10 deep).
MAX_NESTING = 64


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (one line, bounded time for any size of value):
    error messages show what they got without echoing a whole file."""
    import reprlib

    r = reprlib.Repr()
    r.maxstring = r.maxother = r.maxlong = limit
    text = r.repr(value).replace("\n", "\\n")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def nesting_depth(obj: Any, limit: int = MAX_NESTING) -> int:
    """How deep lists and dicts nest in ``obj`` (0 for a scalar), counted without recursion and
    stopping once past ``limit``."""
    deepest, stack = 0, [(obj, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            stack.extend((v, depth) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {short_repr(key)}")
        out[key] = value
    return out


def parse_json(data: str | bytes) -> Any:
    """``json.loads`` for files users hand in: duplicate keys, nesting deeper than
    :data:`MAX_NESTING` and bytes that are not UTF-8 are refused instead of taken silently (or
    crashing). Every refusal is a :class:`ValueError` whose message is one short line, without
    the input, for the caller to prefix with the file (and line)."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None
    data = data.removeprefix("\ufeff")  # a byte-order mark some editors write
    try:
        obj = json.loads(data, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise ValueError(f"not usable JSON (nested deeper than {MAX_NESTING} levels)") from None
    except ValueError as exc:  # duplicate keys, integers of thousands of digits
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"not usable JSON ({reason[:160]})") from None
    if nesting_depth(obj) > MAX_NESTING:
        raise ValueError(f"not usable JSON (nested deeper than {MAX_NESTING} levels)")
    return obj
