"""Name -> factory registries for methods, backbones, datasets, detectors and attacks.

Modelled on timm's decorator registry: register plain callables under a name, list them with a
glob pattern, and get a "did you mean" suggestion on a typo::

    from visec.registry import BACKBONES

    @BACKBONES.register("tiny_cnn", summary="4-layer CNN for tests")
    def tiny_cnn(**kwargs): ...

    BACKBONES.build("tiny_cnn", num_classes=1)
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from visec.errors import RegistryError


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Any
    summary: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


class Registry:
    """A mapping of names to objects, with strict registration and helpful lookups."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str | None = None, *, summary: str = "", **meta: Any) -> Callable:
        """Decorator registering ``obj`` under ``name`` (default: its ``__name__``)."""

        def deco(obj: Any) -> Any:
            key = name or obj.__name__
            if key in self._entries and self._entries[key].obj is not obj:
                raise RegistryError(f"{self.kind} '{key}' is already registered")
            doc = summary or (obj.__doc__ or "").strip().splitlines()[0:1]
            text = doc if isinstance(doc, str) else (doc[0] if doc else "")
            self._entries[key] = Entry(key, obj, text, dict(meta))
            return obj

        return deco

    def get(self, name: str) -> Entry:
        load_builtins()
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(self._unknown(name)) from None

    def build(self, name: str, /, **kwargs: Any) -> Any:
        return self.get(name).obj(**kwargs)

    def names(self, pattern: str = "*") -> list[str]:
        load_builtins()
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def entries(self, pattern: str = "*") -> list[Entry]:
        return [self._entries[n] for n in self.names(pattern)]

    def __contains__(self, name: object) -> bool:
        load_builtins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def _unknown(self, name: str) -> str:
        return unknown_name(self.kind, name, self._entries)


def unknown_name(kind: str, name: str, known_names) -> str:
    """The one-line message for an unknown name, with "did you mean" or the list of known names."""
    known = sorted(known_names)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    listing = f"; known: {', '.join(known)}" if known and not close else ""
    return f"unknown {kind} '{name}'{hint}{listing}"


METHODS = Registry("method")
BACKBONES = Registry("backbone")
DATASETS = Registry("dataset")
DETECTORS = Registry("face detector")
ATTACKS = Registry("attack")

REGISTRIES = {"methods": METHODS, "backbones": BACKBONES, "datasets": DATASETS,
              "face-detectors": DETECTORS, "attacks": ATTACKS}

# Modules whose import registers the built-in entries. Heavy libraries (timm, facenet) are imported
# inside the registered factories, so loading these is cheap.
_BUILTIN_MODULES = (
    "visec.models.backbones",
    "visec.methods",
    "visec.data.builders",
    "visec.preprocess.detect",
    "visec.attacks",
)
_loaded = False


def load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in _BUILTIN_MODULES:
        importlib.import_module(mod)
