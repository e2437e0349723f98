"""Metrics of sequential deepfake detection (Seq-DeepFake / SeqFakeFormer / MMNet), of face
recovery, and of face identity similarity.

Sequences
---------
A sample's ground truth ``y_i`` and prediction ``yhat_i`` are integer 5-vectors: the ids of the
manipulations in the order they were applied, ``0`` (no manipulation / padding) after the last one.
Arrays have shape ``(N, 5)``; lists, NumPy arrays and CPU tensors are accepted. Ids must be
non-negative integers (floats are accepted only when every value is whole); predictions may hold
any non-negative id (a decoder's special tokens included) and the number of classes is never
assumed.

* **Fixed-Acc**: micro-averaged per-slot accuracy over all 5 slots, padding included.
* **Adaptive-Acc**: with ``L_i = max(nnz(y_i), nnz(yhat_i))`` (``nnz`` counts *non-zero* entries,
  it is not the position of the end of the sequence), a sample adds the number of matching slots
  among its first ``L_i`` to the numerator and ``L_i`` to the denominator; a sample with
  ``L_i = 0`` (both sequences empty) adds 1 of 1. The metric is total correct / total ``L``.
* **CSM** (complete sequence matching): the fraction of samples whose whole 5-vector matches.
  **CSM@k**: the fraction whose first ``k`` slots all match (``CSM@5 == CSM``).

:func:`sequence_metrics` reports them all with percentile bootstrap intervals that resample
*groups* (identities, source videos): samples of one group share their errors, and resampling
them one by one would give intervals that are too narrow.

Recovery
--------
Images are **float ``(N, C, H, W)`` in ``[0, 1]``** (``C`` = 3, or 1 for grey), NumPy arrays or
tensors; ``uint8`` and channel-last arrays are refused with a hint. PSNR is per image over all
pixels and channels, capped at ``cap`` dB (identical images give exactly ``cap``); SSIM is the
standard one (Wang et al. 2004: 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03),
averaged over the valid region (no padding) and the channels, as scikit-image's
``structural_similarity(..., gaussian_weights=True, use_sample_covariance=False)``.

Identity
--------
:class:`DlibFaceEmbedder` maps aligned face crops (``uint8 (N, H, W, 3)`` RGB) to dlib's 128-d
face descriptors; two faces show the same person, by dlib's convention, when the euclidean
distance of their descriptors is below 0.6.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from visec.errors import DataError, MetricError

__all__ = [
    "SEQ_LEN",
    "fixed_accuracy",
    "adaptive_accuracy",
    "csm",
    "csm_at_k",
    "step_accuracy",
    "step_confusion",
    "sequence_metrics",
    "majority_sequence_baseline",
    "psnr",
    "ssim",
    "recovery_metrics",
    "DlibFaceEmbedder",
    "identity_similarity",
    "SAME_PERSON_THRESHOLD",
]

SEQ_LEN = 5  # slots per sequence in Seq-DeepFake
SAME_PERSON_THRESHOLD = 0.6  # dlib: descriptors closer than this are taken to be one person
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
# upper bound on the elements of one bootstrap chunk (the (b, G) resample-count matrix)
_CHUNK_ELEMENTS = 4_000_000
_SSIM_BATCH = 32


# --------------------------------------------------------------------------- sequence input
def _as_sequences(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged nested lists and the like
        raise MetricError(f"{name} cannot be read as an (N, {SEQ_LEN}) array: {exc}") from None
    if arr.dtype == object:
        raise MetricError(f"{name} must be an (N, {SEQ_LEN}) integer array; got a ragged or "
                          f"non-numeric input (rows of different lengths?)")
    if arr.ndim != 2 or arr.shape[1] != SEQ_LEN:
        raise MetricError(f"{name} must have shape (N, {SEQ_LEN}) -- one row of {SEQ_LEN} "
                          f"manipulation ids per sample -- got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise MetricError(f"{name} is empty: there are no samples to evaluate")
    if arr.dtype == bool:
        raise MetricError(f"{name} must hold integer manipulation ids, got booleans")
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise MetricError(f"{name} must hold integer manipulation ids; found {int(bad.sum())} "
                              f"non-integer value(s), the first {arr[i, j]!r} at row {i}, slot {j}")
    elif not np.issubdtype(arr.dtype, np.integer):
        raise MetricError(f"{name} must hold integer manipulation ids, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if (arr < 0).any():
        i, j = np.argwhere(arr < 0)[0]
        raise MetricError(f"{name} must hold non-negative ids; found {arr[i, j]} at row {i}, slot {j}")
    return arr


def _pair(y: Any, yhat: Any) -> tuple[np.ndarray, np.ndarray]:
    t = _as_sequences(y, "ground truth y")
    p = _as_sequences(yhat, "predictions yhat")
    if t.shape != p.shape:
        raise MetricError(f"ground truth and predictions differ in shape ({t.shape} vs {p.shape})")
    return t, p


def _per_sample(t: np.ndarray, p: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample counts behind every sequence metric (all int64, shape (N,) unless noted)."""
    match = t == p  # (N, 5)
    L = np.maximum((t != 0).sum(1), (p != 0).sum(1))
    in_prefix = np.arange(SEQ_LEN)[None, :] < L[:, None]
    adaptive_correct = np.where(L == 0, 1, (match & in_prefix).sum(1))
    prefix_ok = np.logical_and.accumulate(match, axis=1)  # (N, 5): first k+1 slots all match
    return {"match": match, "fixed_correct": match.sum(1), "adaptive_correct": adaptive_correct,
            "adaptive_len": np.maximum(L, 1), "prefix_ok": prefix_ok}


# --------------------------------------------------------------------------- sequence metrics
def fixed_accuracy(y: Any, yhat: Any) -> float:
    """Fraction of matching slots over all ``5 N`` slots, padding included."""
    t, p = _pair(y, yhat)
    return float((t == p).mean())


def adaptive_accuracy(y: Any, yhat: Any) -> float:
    """Matching slots within each sample's first ``L_i = max(nnz(y_i), nnz(yhat_i))`` slots,
    summed over samples and divided by ``sum_i L_i`` (a sample with ``L_i = 0`` counts 1 of 1)."""
    s = _per_sample(*_pair(y, yhat))
    return float(s["adaptive_correct"].sum() / s["adaptive_len"].sum())


def csm(y: Any, yhat: Any) -> float:
    """Complete sequence matching: the fraction of samples whose whole 5-vector is right."""
    t, p = _pair(y, yhat)
    return float((t == p).all(1).mean())


def csm_at_k(y: Any, yhat: Any, k: int) -> float:
    """The fraction of samples whose first ``k`` slots (``1 <= k <= 5``) all match."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= SEQ_LEN:
        raise MetricError(f"k must be an integer from 1 to {SEQ_LEN}, got {k!r}")
    t, p = _pair(y, yhat)
    return float((t[:, :k] == p[:, :k]).all(1).mean())


def step_accuracy(y: Any, yhat: Any) -> list[float]:
    """Accuracy of each slot on its own: a list of 5 floats."""
    t, p = _pair(y, yhat)
    return [float(v) for v in (t == p).mean(0)]


def step_confusion(y: Any, yhat: Any, n_classes: int | None = None) -> np.ndarray:
    """Per-slot confusion matrices, ``int64 (5, C, C)``: ``[j, a, b]`` counts samples whose slot
    ``j`` is ``a`` in the ground truth and ``b`` in the prediction. ``C`` defaults to the largest id
    in either array plus one."""
    t, p = _pair(y, yhat)
    top = int(max(t.max(), p.max())) + 1
    if n_classes is None:
        C = top
    else:
        if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 1:
            raise MetricError(f"n_classes must be a positive integer, got {n_classes!r}")
        C = int(n_classes)
        if top > C:
            raise MetricError(f"n_classes={C} but the sequences hold id {top - 1}; "
                              f"ids must be below n_classes")
    flat = (np.arange(SEQ_LEN)[None, :] * C + t) * C + p
    return np.bincount(flat.ravel(), minlength=SEQ_LEN * C * C).reshape(SEQ_LEN, C, C)


def majority_sequence_baseline(train_y: Any, test_y: Any) -> np.ndarray:
    """Predict the most frequent training sequence for every test row: ``int64 (N_test, 5)``.

    Ties go to the lexicographically smallest sequence. Only the number of test rows is used.
    """
    tr = _as_sequences(train_y, "training sequences train_y")
    te = _as_sequences(test_y, "test sequences test_y")
    rows, counts = np.unique(tr, axis=0, return_counts=True)  # rows in lexicographic order
    best = rows[int(np.argmax(counts))]  # argmax takes the first (smallest) of tied rows
    return np.tile(best, (te.shape[0], 1))


# --------------------------------------------------------------------------- bootstrap
_CI_NAMES = ("fixed_acc", "adaptive_acc", "csm")


def _group_index(groups: Any, n: int) -> tuple[np.ndarray, int]:
    if groups is None:
        return np.arange(n), n
    if hasattr(groups, "detach") and hasattr(groups, "cpu"):
        groups = groups.detach().cpu().numpy()
    try:
        g = np.asarray(groups)
    except Exception as exc:
        raise MetricError(f"groups cannot be read as an array: {exc}") from None
    if g.ndim != 1 or g.shape[0] != n:
        raise MetricError(f"groups must hold one label per sample: expected shape ({n},), "
                          f"got {g.shape}")
    try:
        ids, inverse = np.unique(g, return_inverse=True)
    except TypeError as exc:
        raise MetricError(f"groups cannot be sorted (mixed types?): {exc}") from None
    if ids.dtype.kind == "f" and np.isnan(ids).any():
        raise MetricError("groups hold NaN")
    return inverse.reshape(-1), int(ids.shape[0])


def _bootstrap(s: dict[str, np.ndarray], inverse: np.ndarray, G: int, n_bootstrap: int,
               level: float, seed: int) -> dict[str, list[float]]:
    """Percentile intervals of Fixed-Acc, Adaptive-Acc and CSM, resampling groups.

    Every metric is a ratio of sums over samples, so a resample is fully described by how often
    each group was drawn: with ``S`` the (G, 6) per-group sums of numerators and denominators,
    the sums of ``b`` resamples are ``counts (b, G) @ S``.
    """
    n_per_sample = np.ones_like(s["fixed_correct"])
    cols = [s["fixed_correct"], SEQ_LEN * n_per_sample, s["adaptive_correct"], s["adaptive_len"],
            s["prefix_ok"][:, -1].astype(np.int64), n_per_sample]
    S = np.stack([np.bincount(inverse, weights=c.astype(np.float64), minlength=G) for c in cols], 1)
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ELEMENTS // G)
    parts = []
    done = 0
    while done < n_bootstrap:
        b = min(chunk, n_bootstrap - done)
        draws = rng.integers(0, G, size=(b, G)) + (np.arange(b) * G)[:, None]
        counts = np.bincount(draws.ravel(), minlength=b * G).reshape(b, G).astype(np.float64)
        T = counts @ S  # (b, 6)
        parts.append(np.stack([T[:, 0] / T[:, 1], T[:, 2] / T[:, 3], T[:, 4] / T[:, 5]], 1))
        done += b
    vals = np.concatenate(parts)
    q = np.quantile(vals, [(1.0 - level) / 2.0, (1.0 + level) / 2.0], axis=0)  # (2, 3)
    return {name: [float(q[0, i]), float(q[1, i])] for i, name in enumerate(_CI_NAMES)}


def sequence_metrics(y: Any, yhat: Any, groups: Any = None, *, n_bootstrap: int = 1000,
                     level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Every sequence metric at once, with bootstrap intervals.

    Returns ``{"fixed_acc", "adaptive_acc", "csm", "csm@1", ..., "csm@5": float,
    "step_acc": [5 floats], "n": int, "n_groups": int, "ci": {"fixed_acc": [lo, hi],
    "adaptive_acc": [lo, hi], "csm": [lo, hi]}}``.

    The intervals are percentile bootstrap intervals at ``level`` from ``n_bootstrap`` resamples
    of the **groups** (``groups``: one label per sample, e.g. the identity or source video; each
    sample is its own group when ``None``); a resample holds every sample of each drawn group.
    ``n_bootstrap=0`` leaves out ``"ci"``. The same ``seed`` gives the same intervals.
    """
    t, p = _pair(y, yhat)
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, (int, np.integer)) \
            or n_bootstrap < 0:
        raise MetricError(f"n_bootstrap must be a non-negative integer, got {n_bootstrap!r}")
    if isinstance(level, bool) or not isinstance(level, (int, float, np.floating)) \
            or not 0.0 < float(level) < 1.0:
        raise MetricError(f"level must be a confidence level strictly between 0 and 1, got {level!r}")
    inverse, G = _group_index(groups, t.shape[0])
    s = _per_sample(t, p)
    out: dict[str, Any] = {
        "fixed_acc": float(s["fixed_correct"].sum() / (SEQ_LEN * t.shape[0])),
        "adaptive_acc": float(s["adaptive_correct"].sum() / s["adaptive_len"].sum()),
        "csm": float(s["prefix_ok"][:, -1].mean()),
    }
    for k in range(1, SEQ_LEN + 1):
        out[f"csm@{k}"] = float(s["prefix_ok"][:, k - 1].mean())
    out["step_acc"] = [float(v) for v in s["match"].mean(0)]
    out["n"] = int(t.shape[0])
    out["n_groups"] = G
    if n_bootstrap > 0:
        out["ci"] = _bootstrap(s, inverse, G, int(n_bootstrap), float(level), seed)
    return out


# --------------------------------------------------------------------------- recovery
def _as_images(x: Any, name: str, max_val: float = 1.0) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x)
    except Exception as exc:
        raise MetricError(f"{name} cannot be read as an image array: {exc}") from None
    layout = "float (N, C, H, W) in [0, 1] with C = 3 (or 1)"
    if arr.dtype == np.uint8:
        raise MetricError(f"{name} is uint8; the recovery metrics take {layout}: convert with "
                          f"x.astype(np.float32).transpose(0, 3, 1, 2) / 255 for (N, H, W, 3) uint8")
    if not np.issubdtype(arr.dtype, np.floating):
        raise MetricError(f"{name} must be {layout}, got dtype {arr.dtype}")
    if arr.ndim != 4:
        raise MetricError(f"{name} must be {layout}, got shape {arr.shape}"
                          + (" (add a batch axis for one image)" if arr.ndim == 3 else ""))
    if arr.shape[1] not in (1, 3):
        hint = " -- it looks channel-last; transpose it to (N, C, H, W)" if arr.shape[-1] in (1, 3) else ""
        raise MetricError(f"{name} must be {layout}, got shape {arr.shape}{hint}")
    if arr.shape[0] == 0:
        raise MetricError(f"{name} is empty: there are no images to evaluate")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise MetricError(f"{name} holds non-finite values (NaN or inf)")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1e-6 or hi > max_val + 1e-6:
        raise MetricError(f"{name} holds values in [{lo:.4g}, {hi:.4g}], outside [0, {max_val:g}]; "
                          f"clip the images first")
    return arr


def _image_pair(a: Any, b: Any, max_val: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    x = _as_images(a, "first image batch", max_val)
    y = _as_images(b, "second image batch", max_val)
    if x.shape != y.shape:
        raise MetricError(f"the image batches differ in shape ({x.shape} vs {y.shape})")
    return x, y


def psnr(a: Any, b: Any, max_val: float = 1.0, cap: float = 100.0) -> np.ndarray:
    """Peak signal-to-noise ratio per image, ``float64 (N,)``, in dB.

    ``PSNR = 10 log10(max_val**2 / MSE)`` with the MSE over all channels and pixels of the image.
    Values are capped at ``cap`` (identical images, MSE = 0, give exactly ``cap``) so that means
    stay finite.
    """
    if not max_val > 0:
        raise MetricError(f"max_val must be positive, got {max_val!r}")
    x, y = _image_pair(a, b, max_val)
    mse = ((x - y) ** 2).reshape(x.shape[0], -1).mean(1)
    with np.errstate(divide="ignore"):
        val = 10.0 * np.log10(max_val ** 2 / mse)
    return np.minimum(val, float(cap))


def ssim(a: Any, b: Any) -> np.ndarray:
    """Structural similarity per image, ``float64 (N,)`` (11x11 Gaussian window, sigma 1.5, data
    range 1, mean over the valid region and the channels). Identical images give 1."""
    import kornia
    import torch

    x, y = _image_pair(a, b)
    if min(x.shape[2:]) < SSIM_WINDOW:
        raise MetricError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got "
                          f"{x.shape[2]}x{x.shape[3]}")
    out = np.empty(x.shape[0])
    with torch.no_grad():
        for s in range(0, x.shape[0], _SSIM_BATCH):
            m = kornia.metrics.ssim(torch.from_numpy(x[s:s + _SSIM_BATCH]),
                                    torch.from_numpy(y[s:s + _SSIM_BATCH]),
                                    SSIM_WINDOW, max_val=1.0, padding="valid")
            out[s:s + _SSIM_BATCH] = m.flatten(1).mean(1).numpy()
    return out


def recovery_metrics(recovered: Any, original: Any, forged: Any = None, *,
                     cap: float = 100.0) -> dict[str, Any]:
    """Mean PSNR and SSIM of recovered faces against the originals.

    Returns ``{"psnr", "ssim": float, "n": int}``; with ``forged`` also ``"psnr_forged"`` and
    ``"ssim_forged"`` (forged vs original: the identity-map baseline, a recoverer that returns its
    input), ``"psnr_gain"`` (mean per-image PSNR difference, recovered minus forged) and
    ``"improved_frac"`` (fraction of images whose PSNR recovery raises *strictly*; a forged image
    that equals its original is at the cap and cannot be improved).
    """
    p_rec = psnr(recovered, original, cap=cap)
    out: dict[str, Any] = {"psnr": float(p_rec.mean()), "ssim": float(ssim(recovered, original).mean()),
                           "n": int(p_rec.shape[0])}
    if forged is not None:
        p_forged = psnr(forged, original, cap=cap)
        if p_forged.shape != p_rec.shape:  # pragma: no cover - shapes are checked against original
            raise MetricError("forged and recovered batches differ in size")
        out["psnr_forged"] = float(p_forged.mean())
        out["ssim_forged"] = float(ssim(forged, original).mean())
        out["psnr_gain"] = float((p_rec - p_forged).mean())
        out["improved_frac"] = float((p_rec > p_forged).mean())
    return out


# --------------------------------------------------------------------------- identity (dlib)
def _model_file(name: str) -> Path:
    install = "pip install face-recognition-models==0.3.0"
    # find_spec locates the package without importing it (its __init__ imports pkg_resources)
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"dlib's face models ship in the package 'face_recognition_models': {install}")
    path = Path(spec.submodule_search_locations[0], "models", name)
    if not path.is_file():
        raise DataError(f"{path} is missing; reinstall the package: {install}")
    return path


@lru_cache(maxsize=1)
def _dlib_models():
    """``(dlib, 5-point shape predictor, face recognition network)``, loaded once."""
    try:
        import dlib
    except ImportError:
        raise DataError("face identity similarity uses dlib's face recogniser: "
                        "pip install dlib-bin face-recognition-models (or visec[faces])") from None
    shape = dlib.shape_predictor(str(_model_file("shape_predictor_5_face_landmarks.dat")))
    net = dlib.face_recognition_model_v1(str(_model_file("dlib_face_recognition_resnet_model_v1.dat")))
    return dlib, shape, net


def _as_faces(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise MetricError(f"{name} must be uint8 RGB face crops (N, H, W, 3), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise MetricError(f"{name} must be uint8 RGB face crops (N, H, W, 3), got dtype {arr.dtype}; "
                          f"for float NCHW in [0, 1] use (x.transpose(0, 2, 3, 1) * 255).round()"
                          f".astype(np.uint8)")
    if arr.shape[0] == 0:
        raise MetricError(f"{name} is empty: there are no faces to embed")
    return arr


def _upsample(img: np.ndarray, scale: float) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    h, w = img.shape[:2]
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].double()
    t = F.interpolate(t, size=(round(h * scale), round(w * scale)), mode="bicubic", align_corners=False)
    return np.ascontiguousarray(t[0].permute(1, 2, 0).clamp(0, 255).round().to(torch.uint8).numpy())


class DlibFaceEmbedder:
    """dlib's 128-d face descriptor (ResNet, LFW 99.38 %) for **aligned** face crops.

    No face detector runs: the 5 landmarks are predicted inside a fixed ``box`` (fractions of the
    crop's width and height: left, top, right, bottom; by default the face box of the aligned
    synthetic faces, :data:`visec.data.synthetic.sources.FACE_BOX`), then dlib aligns the face
    chip from them and embeds it. Crops whose shorter side is below ``min_size`` pixels are first
    upsampled (bicubic) to it, since both models were trained on larger faces. ``num_jitters > 0``
    averages the descriptor over that many randomly jittered chips (slower, slightly better).
    The models are loaded once per process.
    """

    def __init__(self, box: tuple[float, float, float, float] | None = None, min_size: int = 150,
                 num_jitters: int = 0, padding: float = 0.25):
        if box is None:
            from visec.data.synthetic.sources import FACE_BOX
            box = FACE_BOX
        box = tuple(float(v) for v in box)
        if len(box) != 4 or not (0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1):
            raise MetricError(f"box must be (left, top, right, bottom) fractions of the crop with "
                              f"0 <= left < right <= 1 and 0 <= top < bottom <= 1, got {box}")
        self.box = box
        self.min_size = int(min_size)
        self.num_jitters = int(num_jitters)
        self.padding = float(padding)

    def embed(self, images: Any) -> np.ndarray:
        """Descriptors ``float64 (N, 128)`` of ``uint8 (N, H, W, 3)`` RGB face crops (one
        ``(H, W, 3)`` crop is taken as ``N = 1``)."""
        dlib, shape_predictor, net = _dlib_models()
        faces = _as_faces(images, "images")
        out = np.empty((faces.shape[0], 128))
        for i, img in enumerate(faces):
            h, w = img.shape[:2]
            scale = max(1.0, self.min_size / min(h, w))
            if scale > 1.0:
                img = _upsample(img, scale)
            else:
                img = np.ascontiguousarray(img)
            H, W = img.shape[:2]
            rect = dlib.rectangle(int(round(self.box[0] * W)), int(round(self.box[1] * H)),
                                  int(round(self.box[2] * W)) - 1, int(round(self.box[3] * H)) - 1)
            shape = shape_predictor(img, rect)
            out[i] = np.asarray(net.compute_face_descriptor(img, shape, self.num_jitters, self.padding))
        return out

    def identity_similarity(self, a: Any, b: Any) -> dict[str, Any]:
        """Compare face ``a[i]`` with face ``b[i]`` for every ``i``.

        Returns ``{"distances": float64 (N,) euclidean descriptor distances, "mean_distance",
        "match_frac": fraction of pairs closer than 0.6 (dlib: same person), "threshold": 0.6,
        "n"}``.
        """
        fa, fb = _as_faces(a, "first face batch"), _as_faces(b, "second face batch")
        if fa.shape[0] != fb.shape[0]:
            raise MetricError(f"the face batches hold different numbers of faces "
                              f"({fa.shape[0]} vs {fb.shape[0]})")
        d = np.linalg.norm(self.embed(fa) - self.embed(fb), axis=1)
        return {"distances": d, "mean_distance": float(d.mean()),
                "match_frac": float((d < SAME_PERSON_THRESHOLD).mean()),
                "threshold": SAME_PERSON_THRESHOLD, "n": int(d.shape[0])}


def identity_similarity(a: Any, b: Any, embedder: DlibFaceEmbedder | None = None) -> dict[str, Any]:
    """:meth:`DlibFaceEmbedder.identity_similarity` with a default embedder."""
    return (embedder or DlibFaceEmbedder()).identity_similarity(a, b)
