"""Multi-class accuracy and the base-to-new summary of prompt learning (CoOp / CoCoOp protocol)."""

from __future__ import annotations

import math
import statistics
from typing import Any, Sequence

import numpy as np

from visec.errors import MetricError


def wilson_interval(k: int, n: int, level: float = 0.95) -> list[float] | None:
    """Wilson score interval for ``k`` successes out of ``n`` (``None`` when ``n == 0``)."""
    if n <= 0:
        return None
    z = statistics.NormalDist().inv_cdf(0.5 + level / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return [lo, hi]


def topk_accuracy(labels: Any, preds: Any) -> dict[str, Any]:
    """Top-1 accuracy of predicted class ids with its Wilson interval: ``{"acc": {"value", "ci"}, "n"}``."""
    y, p = np.asarray(labels), np.asarray(preds)
    if y.shape != p.shape or y.ndim != 1:
        raise MetricError(f"labels and predictions must be two 1-D arrays of one length (got {y.shape}, {p.shape})")
    if len(y) == 0:
        raise MetricError("accuracy of an empty set")
    k = int((y == p).sum())
    return {"acc": {"value": k / len(y), "ci": wilson_interval(k, len(y))}, "n": int(len(y))}


def harmonic_mean(base: float, new: float) -> float:
    """H = 2BN / (B + N) (0 when both are 0)."""
    if base < 0 or new < 0:
        raise MetricError(f"accuracies must be >= 0 (got {base}, {new})")
    return 0.0 if base + new == 0 else 2 * base * new / (base + new)


def base_new_summary(base: Sequence[float], new: Sequence[float]) -> dict[str, float]:
    """Seeds (or datasets) of base and new accuracy -> their means, sample spreads and H of the means
    (CoOp's convention for averaged rows: H is taken of the mean accuracies, not averaged)."""
    b, n = np.asarray(base, float), np.asarray(new, float)
    if len(b) == 0 or len(b) != len(n):
        raise MetricError(f"need as many base as new accuracies, at least one (got {len(b)}, {len(n)})")
    sd = (lambda a: float(a.std(ddof=1)) if len(a) > 1 else 0.0)
    return {"base": float(b.mean()), "new": float(n.mean()), "hm": harmonic_mean(float(b.mean()), float(n.mean())),
            "base_sd": sd(b), "new_sd": sd(n), "n": int(len(b))}
