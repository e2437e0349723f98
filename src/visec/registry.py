"""Name -> factory registries for methods, backbones, datasets, detectors and attacks.

Modelled on timm's decorator registry: register plain callables under a name, list them with a
glob pattern, and get a "did you mean" suggestion on a typo::

    from visec.registry import BACKBONES

    @BACKBONES.register("tiny_cnn", summary="4-layer CNN for tests")
    def tiny_cnn(**kwargs): ...

    BACKBONES.build("tiny_cnn", num_classes=1)
"""

from __future__ import annotations

import fnmatch
from importlib.metadata import entry_points
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from visec.errors import RegistryError
from visec.utils import unknown_name


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Any
    summary: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


class Registry:
    """A mapping of names to objects, with strict registration and helpful lookups."""

    def __init__(self, kind: str, group: str | None = None) -> None:
        self.kind = kind
        # the entry-point group whose modules register the entries (visec's own, and any
        # installed plugin's), loaded on first lookup
        self.group = group
        self._entries: dict[str, Entry] = {}
        self._loaded = group is None

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for ep in sorted(entry_points(group=self.group), key=lambda e: (e.value, e.name)):
                ep.load()
            if not self._entries:
                raise RegistryError(f"no {self.kind} is registered: the package's entry points "
                                    f"('{self.group}') are missing; install visec with pip "
                                    f"(`make install` or `pip install -e .`)")

    def register(self, name: str | None = None, *, summary: str = "", **meta: Any) -> Callable:
        """Decorator registering ``obj`` under ``name`` (default: its ``__name__``)."""

        def deco(obj: Any) -> Any:
            key = name or obj.__name__
            if key in self._entries and self._entries[key].obj is not obj:
                raise RegistryError(f"{self.kind} '{key}' is already registered")
            doc = summary or (obj.__doc__ or "").strip().splitlines()[0:1]
            text = doc if isinstance(doc, str) else (doc[0] if doc else "")
            if hasattr(obj, "registered"):  # a contract class checks itself and learns its name
                obj.registered(key)
            self._entries[key] = Entry(key, obj, text, dict(meta))
            return obj

        return deco

    def get(self, name: str) -> Entry:
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(self._unknown(name)) from None

    def build(self, name: str, /, **kwargs: Any) -> Any:
        return self.get(name).obj(**kwargs)

    def names(self, pattern: str = "*") -> list[str]:
        self._load()
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def entries(self, pattern: str = "*") -> list[Entry]:
        return [self._entries[n] for n in self.names(pattern)]

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def _unknown(self, name: str) -> str:
        return unknown_name(self.kind, name, self._entries)


# Each registry loads, on first use, the modules named by its entry-point group in the package
# metadata (pyproject.toml, ``[project.entry-points."visec.methods"]`` ...): the core never imports
# the layers above it, and an installed plugin package adds entries the same way. Heavy libraries
# (timm, facenet) are imported inside the registered factories, so a lookup stays cheap.
METHODS = Registry("method", "visec.methods")
BACKBONES = Registry("backbone", "visec.backbones")
DATASETS = Registry("dataset", "visec.datasets")
DETECTORS = Registry("face detector", "visec.face_detectors")
ATTACKS = Registry("attack", "visec.attacks")
CORRUPTIONS = Registry("corruption", "visec.corruptions")
BENCHES = Registry("bench job", "visec.bench_jobs")

REGISTRIES = {"methods": METHODS, "backbones": BACKBONES, "datasets": DATASETS,
              "face-detectors": DETECTORS, "attacks": ATTACKS, "corruptions": CORRUPTIONS,
              "bench-jobs": BENCHES}
