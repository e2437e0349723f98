"""Evaluation metrics (AUC, EER, AP, accuracy) with bootstrap confidence intervals; multi-class
accuracy and the base-to-new summary of prompt learning; ranking metrics of retrieval (mAP@all,
mAP@K, Prec@K)."""

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
from visec.metrics.multiclass import base_new_summary, harmonic_mean, topk_accuracy, wilson_interval
from visec.metrics.retrieval import ranked_average_precision, retrieval_metrics, retrieval_per_query

__all__ = [
    "base_new_summary",
    "harmonic_mean",
    "topk_accuracy",
    "wilson_interval",
    "accuracy",
    "average_precision",
    "binary_metrics",
    "eer",
    "format_metrics",
    "roc_auc",
    "video_scores",
    "ranked_average_precision",
    "retrieval_metrics",
    "retrieval_per_query",
]
