"""visec: a toolkit for visual information security research."""

from __future__ import annotations

__version__ = "0.1.0"

from visec.errors import VisecError  # noqa: E402
from visec.registry import ATTACKS, BACKBONES, DATASETS, DETECTORS, METHODS  # noqa: E402

__all__ = ["__version__", "VisecError", "METHODS", "BACKBONES", "DATASETS", "DETECTORS", "ATTACKS"]
