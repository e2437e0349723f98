"""Evaluation metrics (AUC, EER, AP, accuracy) with bootstrap confidence intervals."""

from __future__ import annotations

from visec.metrics.classification import (
    accuracy,
    average_precision,
    binary_metrics,
    eer,
    format_metrics,
    roc_auc,
    video_scores,
)

__all__ = [
    "accuracy",
    "average_precision",
    "binary_metrics",
    "eer",
    "format_metrics",
    "roc_auc",
    "video_scores",
]
