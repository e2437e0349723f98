"""visec: a toolkit for visual information security research.

The Python API mirrors the ``visec`` command::

    import visec

    cfg = visec.load_config("classifier", ["data.manifest=data/toy/manifest.jsonl"])
    engine = visec.Engine(cfg)
    engine.fit()
    card = engine.test()
"""

from __future__ import annotations

import os as _os
from typing import Any

from visec.runtime import GOMP_SPINCOUNT as _SPIN

# Before torch loads: idle OpenMP threads spin briefly, then sleep, so visec processes sharing cores
# do not starve each other (visec.runtime says why and what it measured); a user's setting wins.
if not {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(_os.environ):
    _os.environ["GOMP_SPINCOUNT"] = _SPIN

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
