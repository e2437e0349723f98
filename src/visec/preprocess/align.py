"""Five-point similarity alignment of faces.

A face is aligned by the similarity transform (rotation, uniform scale, translation; no shear, no
reflection) that maps its five landmarks onto a fixed template in least-squares sense, then warped
with :func:`cv2.warpAffine`. The template is the 112x112 five-point layout that ArcFace-style
recognition pipelines use; :func:`align_face` scales it to any output size and adds a margin of
context around it (``margin=0.3`` makes the crop 1.3 times the template's extent, as in the usual
deepfake preprocessing).

Landmark order everywhere in :mod:`visec.preprocess`: left eye, right eye, nose tip, left mouth
corner, right mouth corner, where "left" means the smaller x in the image (the subject's right).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "REFERENCE_5PTS",
    "REFERENCE_SIZE",
    "similarity_transform",
    "transform_points",
    "template_points",
    "alignment_matrix",
    "align_face",
]

#: Side of the square the reference template is defined in, in pixels.
REFERENCE_SIZE = 112

#: The crop sides (pixels) and margins visec accepts from users (``visec preprocess``, ``detect``,
#: ``analyze``): below 16 pixels no face survives, above 2048 a crop is a full photograph.
CROP_SIZE_MIN, CROP_SIZE_MAX = 16, 2048
MARGIN_MIN, MARGIN_MAX = 0.0, 2.0


def check_crop(size: int, margin: float) -> None:
    """A one-line :class:`~visec.errors.VisecError` naming ``size`` or ``margin`` when either lies
    outside the range above."""
    import math

    from visec.errors import VisecError

    if isinstance(size, bool) or int(size) != size or not CROP_SIZE_MIN <= size <= CROP_SIZE_MAX:
        raise VisecError(f"size must be a whole number of pixels in [{CROP_SIZE_MIN}, {CROP_SIZE_MAX}], got {size!r}")
    if not (math.isfinite(float(margin)) and MARGIN_MIN <= float(margin) <= MARGIN_MAX):
        raise VisecError(f"margin must be in [{MARGIN_MIN:g}, {MARGIN_MAX:g}], got {margin!r}")

#: Five-point template (x, y) in a 112x112 crop: the conventional ArcFace / InsightFace alignment
#: layout (left eye, right eye, nose tip, left mouth corner, right mouth corner).
REFERENCE_5PTS = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
REFERENCE_5PTS.setflags(write=False)


def _as_points(pts: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(pts, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 2 or a.shape[0] < 2:
        raise ValueError(f"{name} must be an (N, 2) array of points with N >= 2, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds non-finite coordinates")
    return a


def similarity_transform(src_pts: np.ndarray, dst_pts: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform mapping ``src_pts`` onto ``dst_pts`` (Umeyama, 1991).

    Returns the 2x3 matrix ``M`` with ``dst ~= M[:, :2] @ src + M[:, 2]``. Reflections are excluded,
    so a mirrored point set is fitted by the best proper rotation. Raises :class:`ValueError` when
    the source points are all the same point (no scale can be estimated).
    """
    src = _as_points(src_pts, "src_pts")
    dst = _as_points(dst_pts, "dst_pts")
    if src.shape != dst.shape:
        raise ValueError(f"src_pts and dst_pts differ in shape: {src.shape} vs {dst.shape}")
    n = src.shape[0]
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s_c, d_c = src - mu_s, dst - mu_d
    var_s = (s_c**2).sum() / n
    if var_s < 1e-12:
        raise ValueError("src_pts are degenerate (all points coincide); cannot fit a similarity")
    cov = d_c.T @ s_c / n
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = float((sig * d).sum() / var_s)
    m = np.empty((2, 3), dtype=np.float64)
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def transform_points(matrix: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to (N, 2) points."""
    m = np.asarray(matrix, dtype=np.float64)
    p = np.asarray(pts, dtype=np.float64)
    return p @ m[:, :2].T + m[:, 2]


def template_points(size: int = 256, margin: float = 0.3) -> np.ndarray:
    """The reference template scaled to a ``size`` x ``size`` crop with ``margin`` extra context.

    The 112-pixel template square covers ``size / (1 + margin)`` pixels, centred in the crop, so
    ``margin=0`` at ``size=112`` gives :data:`REFERENCE_5PTS` itself.
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    scale = size / (REFERENCE_SIZE * (1.0 + margin))
    half = REFERENCE_SIZE / 2.0
    return (REFERENCE_5PTS - half) * scale + size / 2.0


def alignment_matrix(landmarks: np.ndarray, size: int = 256, margin: float = 0.3) -> np.ndarray:
    """2x3 matrix taking image coordinates to aligned-crop coordinates for these 5 landmarks."""
    lm = _as_points(landmarks, "landmarks")
    if lm.shape != (5, 2):
        raise ValueError(f"landmarks must have shape (5, 2), got {lm.shape}")
    return similarity_transform(lm, template_points(size, margin))


def align_face(rgb: np.ndarray, landmarks: np.ndarray, size: int = 256, margin: float = 0.3,
               *, return_matrix: bool = False):
    """Aligned ``size`` x ``size`` face crop of ``rgb`` (borders filled by reflection).

    With ``return_matrix=True`` returns ``(crop, M)`` where ``M`` maps image to crop coordinates
    (use :func:`transform_points` to move landmarks or boxes into the crop).
    """
    import cv2

    img = np.asarray(rgb)
    if img.ndim not in (2, 3):
        raise ValueError(f"expected an HxW or HxWxC image, got shape {img.shape}")
    m = alignment_matrix(landmarks, size, margin)
    crop = cv2.warpAffine(img, m, (int(size), int(size)), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101)
    return (crop, m) if return_matrix else crop
