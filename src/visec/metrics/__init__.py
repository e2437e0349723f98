"""Evaluation metrics (AUC, EER, AP, accuracy) with bootstrap confidence intervals; multi-class
accuracy and the base-to-new summary of prompt learning; ranking metrics of retrieval (mAP@all,
mAP@K, Prec@K); sequential deepfake detection (Fixed-Acc, Adaptive-Acc, CSM), face recovery (PSNR,
SSIM) and dlib face identity similarity."""

from __future__ import annotations

from visec.metrics.classification import (
    accuracy,
    average_precision,
    binary_metrics,
    eer,
    format_metrics,
    paired_difference,
    roc_auc,
    video_scores,
)
from visec.metrics.multiclass import base_new_summary, harmonic_mean, topk_accuracy, wilson_interval
from visec.metrics.retrieval import ranked_average_precision, retrieval_metrics, retrieval_per_query
from visec.metrics.sequence import (
    DlibFaceEmbedder,
    adaptive_accuracy,
    csm,
    csm_at_k,
    fixed_accuracy,
    identity_similarity,
    majority_sequence_baseline,
    psnr,
    recovery_metrics,
    sequence_metrics,
    ssim,
    step_accuracy,
    step_confusion,
)

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
    "paired_difference",
    "roc_auc",
    "video_scores",
    "ranked_average_precision",
    "retrieval_metrics",
    "retrieval_per_query",
    "DlibFaceEmbedder",
    "adaptive_accuracy",
    "csm",
    "csm_at_k",
    "fixed_accuracy",
    "identity_similarity",
    "majority_sequence_baseline",
    "psnr",
    "recovery_metrics",
    "sequence_metrics",
    "ssim",
    "step_accuracy",
    "step_confusion",
]
