"""visec: a toolkit for visual information security research.

The Python API mirrors the ``visec`` command::

    import visec

    cfg = visec.load_config("classifier", ["data.manifest=data/toy/manifest.jsonl"])
    engine = visec.Engine(cfg)
    engine.fit()
    card = engine.test()
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from visec.errors import VisecError  # noqa: E402
from visec.registry import ATTACKS, BACKBONES, DATASETS, DETECTORS, METHODS  # noqa: E402

# Heavier parts (torch, Lightning) load on first use, so `import visec` and `visec --help` stay fast.
_LAZY = {
    "Engine": "visec.engine",
    "load_config": "visec.config",
    "read_manifest": "visec.data.manifest",
    "write_manifest": "visec.data.manifest",
    "binary_metrics": "visec.metrics",
    "ResultCard": "visec.cards",
}

__all__ = ["__version__", "VisecError", "METHODS", "BACKBONES", "DATASETS", "DETECTORS", "ATTACKS", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'visec' has no attribute '{name}'")
