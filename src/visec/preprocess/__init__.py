"""Preprocessing: video -> evenly spaced frames -> face + 5 landmarks -> aligned crops.

Importing this package is cheap: torch, facenet-pytorch and dlib are imported only when a detector
that needs them is built.

    from visec.preprocess import preprocess
    report = preprocess("data/manifest.jsonl", "data/faces", n_frames=32, detector="mtcnn")
    print(report.summary())
"""

from __future__ import annotations

from visec.preprocess.align import (
    REFERENCE_5PTS,
    align_face,
    alignment_matrix,
    similarity_transform,
    template_points,
    transform_points,
)
from visec.preprocess.detect import (
    DlibDetector,
    Face,
    FaceDetector,
    HaarDetector,
    MTCNNDetector,
    build_detector,
    pick_face,
)
from visec.preprocess.pipeline import PreprocessReport, preprocess
from visec.data.sampling import sample_indices
from visec.preprocess.video import count_frames, read_frames

__all__ = [
    "REFERENCE_5PTS",
    "align_face",
    "alignment_matrix",
    "similarity_transform",
    "template_points",
    "transform_points",
    "Face",
    "FaceDetector",
    "MTCNNDetector",
    "DlibDetector",
    "HaarDetector",
    "build_detector",
    "pick_face",
    "preprocess",
    "PreprocessReport",
    "sample_indices",
    "read_frames",
    "count_frames",
]
