"""Binary classification metrics for forgery detection, with bootstrap confidence intervals.

Conventions
-----------
* ``labels``: 0 = real, 1 = fake (bool or any numeric dtype holding only 0 and 1).
* ``scores``: the detector's belief that a sample is fake, usually a probability in ``[0, 1]``;
  AUC, AP and EER accept any finite real score (only the order matters to them).
* A sample is *predicted fake* when ``score >= threshold``.

Every function returns plain Python floats (or arrays for :func:`video_scores`) and raises
:class:`visec.errors.MetricError` -- never returns NaN -- when a metric is undefined for its input
(no samples, one class only, non-finite scores, labels other than 0/1, length mismatch).

Implementation
--------------
All ranking metrics are computed from the same compact representation: the distinct scores
sorted in *descending* order ("tie groups") and, for each group, the total weight of fake
samples ``P[g]`` and of real samples ``N[g]`` that hold that score. With unit weights this gives
the usual metrics; with bootstrap multiplicities as weights it gives the metric on a resample,
so that ``B`` resamples are evaluated as a few operations on ``B x G`` arrays (no Python loop
over samples or resamples, no sklearn call per resample):

* AUC is the Mann-Whitney U statistic with ties counted 1/2 (equivalently, midranks)::

      AUC = sum_g P[g] * (N[below g] + N[g] / 2) / (P_total * N_total)

  which equals the trapezoidal area under the ROC curve and ``sklearn.metrics.roc_auc_score``.
* AP is the step-wise sum ``sum_g (R_g - R_{g-1}) * Prec_g`` over the distinct thresholds, as in
  ``sklearn.metrics.average_precision_score`` (tied samples enter or leave together).
* EER: see :func:`eer` for the exact definition.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from visec.errors import MetricError

__all__ = [
    "roc_auc",
    "average_precision",
    "eer",
    "accuracy",
    "video_scores",
    "binary_metrics",
    "format_metrics",
]

_CLASS_NAMES = {0: "0 (real)", 1: "1 (fake)"}
# Upper bound on the number of array elements one bootstrap chunk works on (memory stays ~100 MB).
_CHUNK_ELEMENTS = 2_000_000
_METRIC_NAMES = ("auc", "eer", "ap", "acc", "acc_eer")
_DISPLAY = {"auc": "AUC", "eer": "EER", "ap": "AP", "acc": "ACC", "acc_eer": "ACC@EER"}


# --------------------------------------------------------------------------- input checking
def _as_labels(labels: Any, n_expected: int | None = None) -> np.ndarray:
    try:
        arr = np.asarray(labels)
    except Exception as exc:  # ragged lists and the like
        raise MetricError(f"labels cannot be read as an array: {exc}") from None
    if arr.ndim != 1:
        raise MetricError(f"labels must be a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise MetricError("empty input: there are no samples to evaluate")
    if arr.dtype == bool:
        return arr.astype(np.int64)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise MetricError(f"labels must be numeric 0 (real) / 1 (fake), got dtype {arr.dtype}")
    bad = ~((arr == 0) | (arr == 1))
    if bad.any():
        examples = ", ".join(repr(v) for v in np.unique(arr[bad])[:5].tolist())
        raise MetricError(f"labels must be 0 (real) or 1 (fake); found {int(bad.sum())} other "
                          f"value(s): {examples}")
    return arr.astype(np.int64)


def _as_scores(scores: Any) -> np.ndarray:
    try:
        arr = np.asarray(scores)
    except Exception as exc:
        raise MetricError(f"scores cannot be read as an array: {exc}") from None
    if arr.ndim != 1:
        raise MetricError(f"scores must be a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise MetricError("empty input: there are no samples to evaluate")
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer)
                                 or np.issubdtype(arr.dtype, np.floating)):
        raise MetricError(f"scores must be real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise MetricError(f"scores hold {int(bad.sum())} non-finite value(s) (NaN or inf); "
                          f"the first is at index {int(np.argmax(bad))}")
    return arr


def _check(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y = _as_labels(labels)
    s = _as_scores(scores)
    if y.shape[0] != s.shape[0]:
        raise MetricError(f"labels and scores differ in length ({y.shape[0]} vs {s.shape[0]})")
    return y, s


def _require_both_classes(y: np.ndarray, what: str) -> None:
    n_fake = int(y.sum())
    if n_fake == 0 or n_fake == y.shape[0]:
        only = _CLASS_NAMES[1 if n_fake else 0]
        raise MetricError(f"{what} is undefined: the labels hold only class {only}; "
                          f"evaluation needs both real and fake samples")


# --------------------------------------------------------------------------- core statistics
def _tie_groups(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct scores in descending order, and each sample's group index into them."""
    uniq, inverse = np.unique(scores, return_inverse=True)
    n_groups = uniq.shape[0]
    return uniq[::-1], (n_groups - 1) - inverse.reshape(-1)


def _group_stats(P: np.ndarray, N: np.ndarray, k_half: int | None = None) -> dict[str, np.ndarray]:
    """All ranking metrics for ``B`` weightings at once.

    ``P`` and ``N`` have shape ``(B, G)``: weight of fake / real samples in each tie group, groups
    in descending score order. Rows where either class has zero weight are flagged invalid (their
    metric values are meaningless and must be discarded). ``k_half``, if given, is the number of
    groups whose score is ``>= 0.5``: the accuracy at threshold 0.5 is returned as ``acc``.
    """
    B, G = P.shape
    cP = np.zeros((B, G + 1))  # cP[:, k] = fake weight among the k highest groups (= TP at point k)
    cN = np.zeros((B, G + 1))
    np.cumsum(P, axis=1, out=cP[:, 1:])
    np.cumsum(N, axis=1, out=cN[:, 1:])
    Pt, Nt = cP[:, -1].copy(), cN[:, -1].copy()
    valid = (Pt > 0) & (Nt > 0)
    Pt_safe = np.where(valid, Pt, 1.0)
    Nt_safe = np.where(valid, Nt, 1.0)
    total = Pt_safe + Nt_safe

    # AUC, Mann-Whitney U with ties counted one half:
    #   sum_g P[g] * (Nt - cN[g] + N[g] / 2) = Pt * Nt - sum_g P[g] * cN[g] + sum_g P[g] * N[g] / 2
    pcn = np.einsum("ij,ij->i", P, cN[:, 1:])
    pn = np.einsum("ij,ij->i", P, N)
    auc = (Pt * Nt - pcn + 0.5 * pn) / (Pt_safe * Nt_safe)

    # AP: sum over groups of (recall increment) * (precision at that threshold). Where nothing is
    # predicted fake yet (cP + cN == 0) the increment P[g] is 0 too, so any finite precision will do.
    pred = cP[:, 1:] + cN[:, 1:]
    np.maximum(pred, 1e-300, out=pred)
    np.divide(cP[:, 1:], pred, out=pred)
    ap = np.einsum("ij,ij->i", P, pred) / Pt_safe
    del pred

    # EER. D is proportional to FNR - FPR but exact for integer weights (no rounding near 0).
    D = cN * Pt[:, None]
    D *= -1.0
    D += (Pt[:, None] - cP) * Nt[:, None]  # D[:, 0] > 0, D[:, G] < 0 on valid rows
    k = np.argmax(D <= 0, axis=1)  # first ROC point with FNR <= FPR; k >= 1 on valid rows
    k = np.where(valid, np.maximum(k, 1), 1)
    rows = np.arange(B)
    d_prev, d_k = D[rows, k - 1], D[rows, k]
    del D
    denom = d_prev - d_k
    frac = np.divide(d_prev, denom, out=np.ones_like(denom), where=denom > 0)
    fpr_prev, fpr_k = cN[rows, k - 1] / Nt_safe, cN[rows, k] / Nt_safe
    eer_val = fpr_prev + frac * (fpr_k - fpr_prev)
    acc_eer = (cP[rows, k] + Nt - cN[rows, k]) / total

    out = {"valid": valid, "auc": auc, "ap": ap, "eer": eer_val, "eer_group": k - 1,
           "acc_eer": acc_eer}
    if k_half is not None:
        out["acc"] = (cP[:, k_half] + Nt - cN[:, k_half]) / total
    return out


def _weighted_stats(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray,
                    ) -> dict[str, np.ndarray]:
    """Metrics of ``B`` weightings (``weights`` has shape ``(B, n)``) of one sample.

    With integer weights, row ``b`` gives the metrics of the data set in which sample ``i`` is
    repeated ``weights[b, i]`` times. Used by the tests to check the vectorised formulas.
    """
    y, s = _check(labels, scores)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    uniq, grp = _tie_groups(s)
    G = uniq.shape[0]
    A = sp.csr_matrix((np.ones_like(s), (np.arange(s.shape[0]), y * G + grp)),
                      shape=(s.shape[0], 2 * G))
    W = np.ascontiguousarray(np.asarray(A.T @ w.T).T)  # (B, 2G): real groups, then fake groups
    stats = _group_stats(W[:, G:], W[:, :G], int((uniq >= 0.5).sum()))
    stats["eer_threshold"] = uniq[stats["eer_group"]]
    return stats


def _point_stats(y: np.ndarray, s: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    uniq, grp = _tie_groups(s)
    G = uniq.shape[0]
    P = np.bincount(grp, weights=y.astype(np.float64), minlength=G)[None, :]
    N = np.bincount(grp, weights=(1 - y).astype(np.float64), minlength=G)[None, :]
    st = _group_stats(P, N, int((uniq >= 0.5).sum()))
    out = {name: float(st[name][0]) for name in _METRIC_NAMES}
    out["eer_threshold"] = float(uniq[st["eer_group"][0]])
    return out, uniq


# --------------------------------------------------------------------------- public metrics
def roc_auc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve; ties between a fake and a real score count 1/2.

    Equal to ``sklearn.metrics.roc_auc_score(labels, scores)``. Raises :class:`MetricError` when
    the labels hold a single class.
    """
    y, s = _check(labels, scores)
    _require_both_classes(y, "AUC")
    return _point_stats(y, s)[0]["auc"]


def average_precision(labels: Any, scores: Any) -> float:
    """Average precision (fake = positive class), step-wise, as ``sklearn.metrics.average_precision_score``.

    ``AP = sum_k (R_k - R_{k-1}) * P_k`` over the distinct score thresholds in descending order,
    where ``P_k``/``R_k`` are precision/recall when every sample with ``score >= t_k`` is called
    fake (tied samples are called together). Raises :class:`MetricError` for a single class.
    """
    y, s = _check(labels, scores)
    _require_both_classes(y, "AP")
    return _point_stats(y, s)[0]["ap"]


def eer(labels: Any, scores: Any) -> tuple[float, float]:
    """Equal error rate and its threshold: ``(eer, threshold)``.

    Definition (exact, deterministic):

    1. Let ``t_1 > t_2 > ... > t_G`` be the distinct scores. ROC point ``k`` (``k = 1..G``) is
       obtained by calling fake every sample with ``score >= t_k``; point ``0`` calls nothing
       fake (threshold ``+inf``: FPR = 0, FNR = 1). ``FPR_k`` = fraction of real samples called
       fake, ``FNR_k = 1 - TPR_k`` = fraction of fake samples called real. Along ``k``,
       ``FNR_k - FPR_k`` decreases from ``+1`` (``k = 0``) to ``-1`` (``k = G``).
    2. Let ``k*`` be the **first** point with ``FNR_k <= FPR_k`` (always ``k* >= 1``).
    3. The EER is where the straight ROC segment from point ``k*-1`` to point ``k*`` crosses
       ``FNR = FPR``: with ``d_k = FNR_k - FPR_k`` and ``a = d_{k*-1} / (d_{k*-1} - d_{k*})``,
       ``EER = FPR_{k*-1} + a * (FPR_{k*} - FPR_{k*-1})`` (equal to the FNR there). If
       ``FNR_{k*} == FPR_{k*}`` exactly, ``a = 1`` and ``EER = FPR_{k*}``.
    4. The returned threshold is ``t_{k*}``: the largest score threshold at which the false
       negative rate no longer exceeds the false positive rate (predict fake when
       ``score >= threshold``). It is always one of the observed scores.

    Consequences: perfectly separated scores (every fake above every real) give ``EER = 0`` with
    threshold = the lowest fake score; perfectly inverted scores give ``EER = 1`` with threshold =
    the lowest real score; all-equal scores give ``EER = 0.5``. Raises :class:`MetricError` for a
    single class.
    """
    y, s = _check(labels, scores)
    _require_both_classes(y, "EER")
    st, _ = _point_stats(y, s)
    return st["eer"], st["eer_threshold"]


def accuracy(labels: Any, scores: Any, threshold: float = 0.5) -> float:
    """Fraction of samples classified correctly, predicting fake when ``score >= threshold``.

    Defined for a single class too (it is then the true positive or true negative rate).
    """
    y, s = _check(labels, scores)
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise MetricError(f"threshold must be a number, got {threshold!r}") from None
    if np.isnan(t):
        raise MetricError("threshold is NaN")
    return float(np.mean((s >= t) == (y == 1)))


def video_scores(labels: Any, scores: Any, video_ids: Any,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Aggregate frame predictions to videos: ``(labels_v, scores_v, ids_v)``.

    A video's score is the mean of its frame scores and its label is the (common) label of its
    frames; ``ids_v`` are the distinct ids in sorted order and the other two arrays follow that
    order. Raises :class:`MetricError` if a video's frames carry both labels.
    """
    y, s = _check(labels, scores)
    ids, inverse = _video_index(video_ids, y.shape[0])
    V = ids.shape[0]
    counts = np.bincount(inverse, minlength=V).astype(np.float64)
    n_fake = np.bincount(inverse, weights=y.astype(np.float64), minlength=V)
    mixed = (n_fake > 0) & (n_fake < counts)
    if mixed.any():
        names = ", ".join(repr(v) for v in ids[mixed][:3].tolist())
        more = f" and {int(mixed.sum()) - 3} more" if mixed.sum() > 3 else ""
        raise MetricError(f"{int(mixed.sum())} video(s) hold both real and fake frames: "
                          f"{names}{more}; a video must have one label")
    score_v = np.bincount(inverse, weights=s, minlength=V) / counts
    return (n_fake > 0).astype(np.int64), score_v, ids


def _video_index(video_ids: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        v = np.asarray(video_ids)
    except Exception as exc:
        raise MetricError(f"video_ids cannot be read as an array: {exc}") from None
    if v.ndim != 1:
        raise MetricError(f"video_ids must be a 1-D array, got shape {v.shape}")
    if v.shape[0] != n:
        raise MetricError(f"video_ids and labels differ in length ({v.shape[0]} vs {n})")
    try:
        ids, inverse = np.unique(v, return_inverse=True)
    except TypeError as exc:
        raise MetricError(f"video_ids cannot be sorted (mixed types?): {exc}") from None
    if ids.dtype.kind == "f" and np.isnan(ids).any():
        raise MetricError("video_ids hold NaN")
    if ids.dtype == object and any(i is None for i in ids.tolist()):
        raise MetricError("video_ids hold None")
    return ids, inverse.reshape(-1)


# --------------------------------------------------------------------------- bootstrap
def _bootstrap(y: np.ndarray, s: np.ndarray, clusters: np.ndarray, n_clusters: int,
               n_bootstrap: int, ci: float, seed: int) -> tuple[dict[str, list[float] | None], int]:
    """Percentile bootstrap intervals for all metrics, resampling whole clusters.

    Each resample draws ``n_clusters`` cluster indices with replacement; a sample's weight is the
    number of times its cluster was drawn. Resamples holding a single class are excluded (their
    count is returned). With ``clusters = arange(n)`` this is the ordinary i.i.d. bootstrap.
    """
    uniq, grp = _tie_groups(s)
    G = uniq.shape[0]
    k_half = int((uniq >= 0.5).sum())
    # A_T[label * G + g, c] = number of samples of cluster c in tie group g with that label.
    A_T = sp.csr_matrix((np.ones(s.shape[0]), (y * G + grp, clusters)), shape=(2 * G, n_clusters))
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ELEMENTS // max(n_clusters, 2 * G + 2))
    values: dict[str, list[np.ndarray]] = {name: [] for name in _METRIC_NAMES}
    skipped = 0
    done = 0
    while done < n_bootstrap:
        b = min(chunk, n_bootstrap - done)
        idx = rng.integers(0, n_clusters, size=(b, n_clusters))
        flat = (idx + (np.arange(b) * n_clusters)[:, None]).ravel()
        counts = np.bincount(flat, minlength=b * n_clusters).reshape(b, n_clusters)
        W = np.ascontiguousarray(np.asarray(A_T @ counts.T.astype(np.float64)).T)  # (b, 2G)
        st = _group_stats(W[:, G:], W[:, :G], k_half)
        ok = st["valid"]
        skipped += int((~ok).sum())
        for name in _METRIC_NAMES:
            values[name].append(st[name][ok])
        done += b
    lo_q, hi_q = (1.0 - ci) / 2.0, (1.0 + ci) / 2.0
    intervals: dict[str, list[float] | None] = {}
    for name in _METRIC_NAMES:
        vals = np.concatenate(values[name])
        if vals.size == 0:
            intervals[name] = None
        else:
            lo, hi = np.quantile(vals, [lo_q, hi_q])
            intervals[name] = [float(lo), float(hi)]
    return intervals, skipped


def _level(y: np.ndarray, s: np.ndarray, clusters: np.ndarray, n_clusters: int, what: str,
           n_bootstrap: int, ci: float, seed: int) -> dict[str, Any]:
    _require_both_classes(y, what)
    point, _ = _point_stats(y, s)
    if n_bootstrap > 0:
        intervals, skipped = _bootstrap(y, s, clusters, n_clusters, n_bootstrap, ci, seed)
    else:
        intervals, skipped = {name: None for name in _METRIC_NAMES}, 0
    out: dict[str, Any] = {name: {"value": point[name], "ci": intervals[name]}
                           for name in _METRIC_NAMES}
    n_fake = int(y.sum())
    out.update({"eer_threshold": point["eer_threshold"], "n": int(y.shape[0]),
                "n_real": int(y.shape[0]) - n_fake, "n_fake": n_fake,
                "bootstrap_skipped": skipped})
    return out


def binary_metrics(labels: Any, scores: Any, video_ids: Any = None, *, n_bootstrap: int = 1000,
                   ci: float = 0.95, seed: int = 0) -> dict[str, dict[str, Any]]:
    """AUC, EER, AP, accuracy at 0.5 and at the EER threshold, with bootstrap intervals.

    Returns ``{"frame": level, "video": level}`` (``"video"`` only when ``video_ids`` is given;
    video scores are frame-score means, see :func:`video_scores`). Each level maps

    * ``auc``, ``eer``, ``ap``, ``acc`` (threshold 0.5), ``acc_eer`` (accuracy at the EER
      threshold of that level) to ``{"value": float, "ci": [lo, hi] or None}``;
    * ``eer_threshold`` (float), ``n``, ``n_real``, ``n_fake`` and ``bootstrap_skipped`` (ints).

    Confidence intervals are percentile bootstrap intervals at level ``ci`` from ``n_bootstrap``
    resamples (``n_bootstrap=0``: ``ci`` is ``None``). Every statistic is recomputed on each
    resample, including ``acc_eer`` with that resample's own EER threshold. Resampling unit:

    * frame level without ``video_ids``: frames, i.i.d.;
    * frame level with ``video_ids``: **whole videos** (cluster bootstrap) -- frames of one video
      are correlated, so resampling frames would give intervals that are too narrow;
    * video level: videos.

    Resamples that contain a single class are excluded and counted in ``bootstrap_skipped``.
    Each level uses a generator seeded with ``seed``: the same seed gives the same intervals.
    """
    y, s = _check(labels, scores)
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, (int, np.integer)) \
            or n_bootstrap < 0:
        raise MetricError(f"n_bootstrap must be a non-negative integer, got {n_bootstrap!r}")
    if not isinstance(ci, (int, float, np.floating)) or not 0.0 < float(ci) < 1.0:
        raise MetricError(f"ci must be a confidence level strictly between 0 and 1, got {ci!r}")
    n_bootstrap, ci = int(n_bootstrap), float(ci)
    result: dict[str, dict[str, Any]] = {}
    if video_ids is None:
        result["frame"] = _level(y, s, np.arange(y.shape[0]), y.shape[0], "frame-level AUC",
                                 n_bootstrap, ci, seed)
        return result
    y_v, s_v, ids = video_scores(y, s, video_ids)
    _, inverse = _video_index(video_ids, y.shape[0])
    V = ids.shape[0]
    result["frame"] = _level(y, s, inverse, V, "frame-level AUC", n_bootstrap, ci, seed)
    result["video"] = _level(y_v, s_v, np.arange(V), V, "video-level AUC",
                             n_bootstrap, ci, seed)
    return result


# --------------------------------------------------------------------------- paired comparison
def _resample_stats(y: np.ndarray, s: np.ndarray, clusters: np.ndarray, n_clusters: int,
                    counts: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric on each resample given by ``counts`` (b, n_clusters: draws per cluster)."""
    uniq, grp = _tie_groups(s)
    G = uniq.shape[0]
    A_T = sp.csr_matrix((np.ones(s.shape[0]), (y * G + grp, clusters)), shape=(2 * G, n_clusters))
    W = np.ascontiguousarray(np.asarray(A_T @ counts.T.astype(np.float64)).T)
    return _group_stats(W[:, G:], W[:, :G], int((uniq >= 0.5).sum()))


def paired_difference(labels: Any, scores_a: Any, scores_b: Any, video_ids: Any = None, *,
                      n_bootstrap: int = 1000, ci: float = 0.95, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Model A minus model B on the same test images: every metric of :func:`binary_metrics` with a
    **paired** percentile bootstrap interval of the difference.

    Both models are scored on the same resample each time (whole videos when ``video_ids`` is given,
    frames otherwise), so what the two share (which videos are hard) cancels in the difference: the
    interval is that of the difference, narrower than the two separate intervals suggest when the
    models err on the same videos. Returns ``{"frame": {metric: {"a", "b", "diff", "ci"}}, "video":
    ...}`` (``video`` only with ``video_ids``; video scores are frame-score means) plus
    ``bootstrap_skipped`` per level (resamples with a single class)."""
    y, sa = _check(labels, scores_a)
    _, sb = _check(labels, scores_b)
    if sa.shape != sb.shape:
        raise MetricError(f"the two models' scores differ in length ({sa.shape[0]} vs {sb.shape[0]})")
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 0:
        raise MetricError(f"n_bootstrap must be a non-negative integer, got {n_bootstrap!r}")
    levels = []
    if video_ids is None:
        levels.append(("frame", y, sa, sb, np.arange(y.shape[0]), y.shape[0]))
    else:
        ids, inverse = _video_index(video_ids, y.shape[0])
        y_v, sa_v, _ = video_scores(y, sa, video_ids)
        _, sb_v, _ = video_scores(y, sb, video_ids)
        levels += [("frame", y, sa, sb, inverse, ids.shape[0]),
                   ("video", y_v, sa_v, sb_v, np.arange(ids.shape[0]), ids.shape[0])]
    out: dict[str, dict[str, Any]] = {}
    for level, yl, a, b, clusters, n_clusters in levels:
        _require_both_classes(yl, f"{level}-level comparison")
        pa, _ = _point_stats(yl, a)
        pb, _ = _point_stats(yl, b)
        diffs: dict[str, list[np.ndarray]] = {name: [] for name in _METRIC_NAMES}
        rng = np.random.default_rng(seed)
        skipped, done = 0, 0
        chunk = max(1, _CHUNK_ELEMENTS // max(n_clusters, 2 * yl.shape[0] + 2))
        while done < n_bootstrap:
            k = min(chunk, n_bootstrap - done)
            idx = rng.integers(0, n_clusters, size=(k, n_clusters))
            flat = (idx + (np.arange(k) * n_clusters)[:, None]).ravel()
            counts = np.bincount(flat, minlength=k * n_clusters).reshape(k, n_clusters)
            st_a = _resample_stats(yl, a, clusters, n_clusters, counts)  # the same resample for both
            st_b = _resample_stats(yl, b, clusters, n_clusters, counts)
            ok = st_a["valid"] & st_b["valid"]
            skipped += int((~ok).sum())
            for name in _METRIC_NAMES:
                diffs[name].append(st_a[name][ok] - st_b[name][ok])
            done += k
        block: dict[str, Any] = {}
        for name in _METRIC_NAMES:
            vals = np.concatenate(diffs[name]) if n_bootstrap else np.zeros(0)
            interval = ([float(v) for v in np.quantile(vals, [(1 - ci) / 2, (1 + ci) / 2])]
                        if vals.size else None)
            block[name] = {"a": pa[name], "b": pb[name], "diff": pa[name] - pb[name], "ci": interval}
        block["bootstrap_skipped"] = skipped
        out[level] = block
    return out


# --------------------------------------------------------------------------- formatting
def _fmt(x: Any) -> str:
    return f"{float(x):.3f}"


def format_metrics(d: dict[str, Any]) -> str:
    """One short line per level, levels joined by ``" | "``.

    Example: ``frame AUC 0.912 [0.880, 0.940]  EER 0.101 [0.080, 0.120] ... (n=900: 450 real,
    450 fake) | video AUC ...``. Metrics without an interval are printed without brackets.
    """
    parts = []
    for level, vals in d.items():
        if not isinstance(vals, dict):
            continue
        items = []
        # the classification metrics in their usual order, then any other named values (e.g. the
        # robust accuracies of an adversarial evaluation) in the order they were recorded
        names = [n for n in _METRIC_NAMES if n in vals] + [n for n in vals if n not in _METRIC_NAMES]
        cis = vals.get("ci") if isinstance(vals.get("ci"), dict) else {}
        for name in names:
            m = vals.get(name)
            if isinstance(m, (int, float)) and not isinstance(m, bool) and not name.startswith("n"):
                # a plain value, its interval (if any) under "ci" (the sequence metrics' layout)
                ci = cis.get(name)
                items.append(f"{name} {_fmt(m)}" + (f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else ""))
                continue
            if not isinstance(m, dict) or m.get("value") is None or isinstance(m["value"], (list, dict, str)):
                continue
            text = f"{_DISPLAY.get(name, name)} {_fmt(m['value'])}"
            if m.get("ci") is not None:
                lo, hi = m["ci"]
                text += f" [{_fmt(lo)}, {_fmt(hi)}]"
            items.append(text)
        line = f"{level} " + "  ".join(items)
        if "n" in vals:
            line += f" (n={vals['n']}"
            if "n_real" in vals and "n_fake" in vals:
                line += f": {vals['n_real']} real, {vals['n_fake']} fake"
            line += ")"
        parts.append(line)
    return " | ".join(parts)
