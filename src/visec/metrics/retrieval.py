"""Ranking metrics for (sketch-based) image retrieval: AP, mAP@all, mAP@K and Prec@K.

Conventions
-----------
* A query ranks the whole gallery by **ascending distance** (smaller = closer). A gallery item is
  *relevant* to a query when it carries the query's label. ``n_pos`` is the number of relevant
  gallery items of a query.
* **Ties** in distance are broken by gallery index: of two items at the same distance, the one
  that comes first in the gallery ranks first (a stable sort). ``-0.0`` and ``+0.0`` are equal.
* **AP** (one query, ranking ``rel_1 .. rel_N``): with ``TP_r`` the relevant items among the first
  ``r``, ``prec_r = TP_r / r`` and ``recall_r = TP_r / n_pos``:

  - ``interpolation="voc"`` (SAKE, SBKA, ZSE-SBIR): precision is replaced by its running maximum
    from the right, ``P_r = max_{s >= r} prec_s``, and ``AP = sum_r (recall_r - recall_{r-1}) * P_r``.
    Recall only moves at relevant ranks, by ``1 / n_pos`` each time, so
    ``AP = sum_{r relevant} P_r / n_pos``. Example: ``[0, 1, 1]`` gives 0.6667.
  - ``interpolation="none"``: the plain mean of the precision at the relevant ranks,
    ``sum_{r relevant} prec_r / n_pos``; on a full ranking without ties it equals
    ``sklearn.metrics.average_precision_score``. Example: ``[0, 1, 1]`` gives 0.5833.

  Recall need not reach 1 (truncated rankings): relevant items that are not in the ranking
  contribute 0.
* **No relevant item** (``n_pos == 0``): AP, mAP@K and Prec@K of that query are **0** (not NaN),
  and the query still counts in the means. In ZS-SBIR this only happens when the gallery lacks a
  query's class, which is a data error worth checking.
* **mAP@K**: the ranking is truncated to its first ``K`` items and ``n_pos := min(K, n_pos)``.
* **Prec@K**: ``precision="sake"`` (SAKE, SBKA): relevant items in the top ``K`` divided by ``K``;
  ``precision="zse"`` (ZSE-SBIR): divided by ``min(K, n_pos)`` instead. When ``K`` exceeds the
  gallery size, ``"sake"`` still divides by ``K``.
* **Averaging over queries**: ``averaging="class"`` (SAKE, SBKA) takes the mean of the per-query
  values within each query class, then the mean over the classes that have queries;
  ``averaging="query"`` (ZSE-SBIR) takes the plain mean over queries. Every metric (mAP and
  Prec) is averaged the same way.

Implementation
--------------
Queries are processed in chunks of ``chunk`` rows; nothing of size ``Q x G`` is ever held when
embeddings are given (the chunk's distances are computed with one matrix product). Each chunk is
ranked in one vectorised sort, and every metric is computed from the ranks of the relevant items
only (a ``chunk x max(n_pos)`` table), without a Python loop over queries:

* ``float32`` distances (the default for ``float32`` embeddings) are sorted as packed 64-bit keys
  ``order(distance) << 32 | gallery_index << 8 | relevant``: the keys are distinct, so a plain
  (SIMD) integer sort gives exactly the stable order, and the relevance comes back in the lowest
  byte. Other dtypes (``float64``, integers), and galleries of ``2**23`` items or more, use
  ``numpy.argsort(kind="stable")``, which gives the same order several times more slowly.
* Memory per chunk is about ``13 * chunk * G`` bytes on the ``float32`` path (reused from chunk to
  chunk), e.g. 330 MB for 256 queries against 100,000 gallery items.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from visec.errors import MetricError

__all__ = [
    "average_precision",
    "ranked_average_precision",
    "retrieval_metrics",
    "retrieval_per_query",
]

_INTERPOLATIONS = ("voc", "none")
_PRECISIONS = ("sake", "zse")
_AVERAGINGS = ("class", "query")
_METRICS = ("euclidean", "cosine")


# --------------------------------------------------------------------------- input checking
def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise MetricError(f"{name} must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}")
    return value


def _cutoffs(name: str, values: Any) -> tuple[int, ...]:
    if values is None:
        return ()
    seq = [values] if isinstance(values, (int, np.integer)) else list(values)
    out = []
    for v in seq:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v <= 0:
            raise MetricError(f"{name} must hold positive integers, got {v!r}")
        out.append(int(v))
    return tuple(dict.fromkeys(out))  # drop repeats, keep order


def _labels(name: str, labels: Any) -> np.ndarray:
    try:
        arr = np.asarray(labels)
    except Exception as exc:
        raise MetricError(f"{name} cannot be read as an array: {exc}") from None
    if arr.ndim != 1:
        raise MetricError(f"{name} must be a 1-D array, got shape {arr.shape}")
    return arr


def _label_codes(query_labels: np.ndarray, gallery_labels: np.ndarray,
                 ) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer codes of the labels (common to both sides) and the number of distinct labels."""
    try:
        uniq, inv = np.unique(np.concatenate([query_labels, gallery_labels]), return_inverse=True)
    except TypeError as exc:
        raise MetricError(f"labels cannot be compared (mixed types?): {exc}") from None
    inv = inv.reshape(-1)
    code_dtype = np.int16 if uniq.shape[0] < 2**15 else np.int64
    nq = query_labels.shape[0]
    return inv[:nq].astype(code_dtype), inv[nq:].astype(code_dtype), int(uniq.shape[0])


def _real_matrix(name: str, x: Any) -> np.ndarray:
    try:
        arr = np.asarray(x)
    except Exception as exc:
        raise MetricError(f"{name} cannot be read as an array: {exc}") from None
    if arr.ndim != 2:
        raise MetricError(f"{name} must be a 2-D array, got shape {arr.shape}")
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer)
                                 or np.issubdtype(arr.dtype, np.floating)):
        raise MetricError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr


# --------------------------------------------------------------------------- AP core
def _hit_table(rows: np.ndarray, ranks: np.ndarray, n_rows: int) -> np.ndarray:
    """``(n_rows, max hits)`` table of the 1-based ranks of each row's relevant items, in rank
    order, padded with 0. ``rows`` must be non-decreasing and ranks increasing within a row."""
    counts = np.bincount(rows, minlength=n_rows)
    width = int(counts.max()) if counts.size else 0
    table = np.zeros((n_rows, max(width, 1)), dtype=np.int64)
    if rows.size:
        starts = np.cumsum(counts) - counts
        table[rows, np.arange(rows.shape[0]) - starts[rows]] = ranks
    return table


def _ap_from_table(table: np.ndarray, n_pos: np.ndarray, interpolation: str,
                   top: int | None = None) -> np.ndarray:
    """AP of every row of a hit table (see :func:`_hit_table`); ``top`` truncates the ranking to
    its first ``top`` items and sets ``n_pos := min(top, n_pos)``."""
    valid = table > 0
    if top is not None:
        valid &= table <= top
        n_pos = np.minimum(n_pos, top)
    tp = np.arange(1, table.shape[1] + 1, dtype=np.float64)  # TP count at the j-th relevant item
    prec = np.divide(tp, table, out=np.zeros(table.shape), where=valid)
    if interpolation == "voc":
        # Running maximum from the right. Precision at an irrelevant rank never exceeds the
        # precision at the relevant rank just before it, so the maximum over the relevant ranks
        # alone is the VOC maximum over all ranks. Padding (0) sits at the right end of each row.
        prec = np.maximum.accumulate(prec[:, ::-1], axis=1)[:, ::-1]
    # A sequential sum (not numpy's pairwise one), so that the padding width, which depends on the
    # other rows of the chunk, cannot change the rounding: results do not depend on ``chunk``.
    total = np.cumsum(prec, axis=1)[:, -1]
    return np.divide(total, n_pos, out=np.zeros(total.shape), where=n_pos > 0)


def average_precision(relevance: Any, n_pos: Any = None, *, interpolation: str = "voc") -> np.ndarray:
    """Average precision of rankings that are already in rank order: ``(Q,)`` float64.

    ``relevance`` is a ``(Q, N)`` array of bools or 0/1 (``relevance[q, r]``: the item at rank
    ``r + 1`` of query ``q`` is relevant); a 1-D array is one query. ``n_pos`` (``(Q,)``, default
    ``relevance.sum(1)``) is the number of relevant items of each query, which may exceed the
    relevant items shown when the ranking is truncated; it may not be smaller.

    ``interpolation="voc"``: VOC-style interpolated AP (precision replaced by its running maximum
    from the right); ``"none"``: the plain mean of the precision at the relevant ranks, equal to
    ``sklearn.metrics.average_precision_score`` on untied scores. A query with ``n_pos == 0``
    gets AP 0. Known answers (VOC): ``[1,0,1,0]`` 0.8333, ``[0,1,1]`` 0.6667 (plain 0.5833),
    ``[0,0,1]`` 0.3333, ``[0,1]`` with ``n_pos=2`` (``[0,1,1]`` truncated at 2) 0.25.
    """
    _choice("interpolation", interpolation, _INTERPOLATIONS)
    try:
        rel = np.asarray(relevance)
    except Exception as exc:
        raise MetricError(f"relevance cannot be read as an array: {exc}") from None
    if rel.ndim == 1:
        rel = rel[None, :]
    if rel.ndim != 2:
        raise MetricError(f"relevance must be a (Q, N) array, got shape {rel.shape}")
    if rel.dtype != bool:
        if not (np.issubdtype(rel.dtype, np.integer) or np.issubdtype(rel.dtype, np.floating)):
            raise MetricError(f"relevance must hold bools or 0/1, got dtype {rel.dtype}")
        if not ((rel == 0) | (rel == 1)).all():
            raise MetricError("relevance must hold only 0 and 1 (or bools)")
        rel = rel != 0
    hits = rel.sum(axis=1)
    if n_pos is None:
        npos = hits.astype(np.int64)
    else:
        npos = np.asarray(n_pos)
        if npos.ndim == 0:
            npos = np.full(rel.shape[0], npos)
        if npos.shape != (rel.shape[0],):
            raise MetricError(f"n_pos must have shape ({rel.shape[0]},), got {npos.shape}")
        if not np.issubdtype(npos.dtype, np.number) or npos.dtype == bool or (npos != np.round(npos)).any():
            raise MetricError("n_pos must hold whole numbers")
        npos = npos.astype(np.int64)
        short = npos < hits
        if short.any():
            i = int(np.argmax(short))
            raise MetricError(f"n_pos[{i}] = {int(npos[i])} is smaller than the {int(hits[i])} "
                              f"relevant items of row {i}")
    rows, cols = np.nonzero(rel)
    return _ap_from_table(_hit_table(rows, cols + 1, rel.shape[0]), npos, interpolation)


#: The same function under a name that does not clash with :func:`visec.metrics.average_precision`
#: (the binary-classification AP of forgery detection).
ranked_average_precision = average_precision


# --------------------------------------------------------------------------- ranking chunks
# The packed key keeps the gallery index in bits 8..30, so the fast path needs G < 2**23.
_MAX_PACKED_GALLERY = 2**23


class _Ranker:
    """Ranks chunks of distance rows against one gallery, reusing its work buffers (fresh
    buffers of this size cost more in page faults than the work done in them)."""

    def __init__(self, gcodes: np.ndarray, chunk: int) -> None:
        g = gcodes.shape[0]
        self.gcodes = gcodes
        self.packed = g < _MAX_PACKED_GALLERY
        self.relevant = np.empty((chunk, g), dtype=bool)
        self.keys = np.empty((chunk, g), dtype=np.int64) if self.packed else None
        self.low = np.arange(g, dtype=np.int32) << 8

    def ranks(self, d: np.ndarray, qcodes: np.ndarray, squared: bool = False,
              ) -> tuple[np.ndarray, np.ndarray]:
        """Rows and 1-based ranks of the relevant items when each row of ``d`` is sorted by
        ascending distance, ties broken by gallery index (rows ascending, ranks ascending within
        a row). ``squared``: ``d`` holds non-negative squared distances and the ranking is that
        of their square roots (``d`` is then overwritten); otherwise ``d`` is not modified."""
        n = d.shape[0]
        relevant = self.relevant[:n]
        np.equal(self.gcodes[None, :], qcodes[:, None], out=relevant)
        if d.dtype == np.float32 and self.keys is not None:
            # key = order(d) << 32 | gallery_index << 8 | relevant: distinct keys, so an unstable
            # integer sort gives the stable distance order, and the relevance rides along in the
            # lowest byte.
            keys = self.keys[:n]
            halves = keys.view(np.int32)
            lo, hi, flag = (0, 1, 0) if np.little_endian else (1, 0, 7)
            high = halves[:, hi::2]
            if squared:
                np.sqrt(d, out=high.view(np.float32))
                negative_any = False  # sqrt of a value >= +0.0 (np.maximum(x, 0.0) gives +0.0)
            else:
                bits = np.ascontiguousarray(d).view(np.int32)
                np.copyto(high, bits)
                negative_any = bits.min() < 0
            if negative_any:
                # IEEE bits of a negative float grow with its magnitude: use -magnitude instead,
                # which also makes -0.0 equal to +0.0.
                negative = high < 0
                np.negative(np.bitwise_and(high, np.int32(0x7FFFFFFF)), out=high, where=negative)
                del negative
            np.bitwise_or(self.low[None, :], relevant, out=halves[:, lo::2])
            keys.sort(axis=1)
            np.copyto(relevant, keys.view(np.bool_)[:, flag::8])
        else:
            if squared:
                np.sqrt(d, out=d)
            order = np.argsort(d, axis=1, kind="stable")
            relevant[...] = np.take_along_axis(relevant, order, axis=1)
        flat = np.flatnonzero(relevant)  # much faster than a 2-D nonzero
        rows = flat // relevant.shape[1]
        cols = flat - rows * relevant.shape[1]
        return rows, cols + 1


def _chunk_distances(q: np.ndarray, gallery_t: np.ndarray, metric: str, out: np.ndarray,
                     ) -> np.ndarray:
    """Distances of the query rows ``q`` to the gallery, written to ``out[:len(q)]``; for
    ``"euclidean"`` the *squared* distances, clipped at +0.0 (the ranker takes the square root).
    ``gallery_t`` comes from :func:`_prepare_gallery`; for the cosine distance ``q`` is unit-norm."""
    d = out[: q.shape[0]]
    if metric == "euclidean":
        # [q, 1, |q|^2] . [-2g, |g|^2, 1] = |q - g|^2 in one matrix product
        aug = np.empty((q.shape[0], q.shape[1] + 2), dtype=gallery_t.dtype)
        aug[:, :-2] = q
        aug[:, -2] = 1.0
        aug[:, -1] = np.einsum("ij,ij->i", q, q)
        np.matmul(aug, gallery_t, out=d)
        np.maximum(d, 0.0, out=d)
        d += 0.0  # -0.0 -> +0.0, whatever np.maximum returns for equal arguments
    else:
        np.matmul(q, gallery_t, out=d)
        np.subtract(1.0, d, out=d)
    return d


def _unit_rows(x: np.ndarray, name: str) -> np.ndarray:
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    if (norms == 0).any():
        raise MetricError(f"{name} hold {int((norms == 0).sum())} all-zero row(s); the cosine "
                          f"distance is undefined for them (the first is row {int(np.argmax(norms == 0))})")
    return x / norms[:, None]


def _prepare_gallery(gallery: np.ndarray, metric: str) -> np.ndarray:
    if metric == "euclidean":
        aug = np.empty((gallery.shape[0], gallery.shape[1] + 2), dtype=gallery.dtype)
        aug[:, :-2] = gallery
        aug[:, :-2] *= -2.0
        aug[:, -2] = np.einsum("ij,ij->i", gallery, gallery)
        aug[:, -1] = 1.0
        return aug.T
    return _unit_rows(gallery, "gallery").T


# --------------------------------------------------------------------------- public API
def retrieval_per_query(query_labels: Any, gallery_labels: Any, *, dist: Any = None,
                        queries: Any = None, gallery: Any = None, metric: str = "euclidean",
                        ks: Sequence[int] | int | None = (100, 200),
                        map_at: Sequence[int] | int | None = (200,), precision: str = "sake",
                        interpolation: str = "voc", chunk: int = 256) -> dict[str, np.ndarray]:
    """Per-query retrieval metrics: ``{"ap@all", "ap@K" for K in map_at, "p@K" for K in ks:
    (Q,) float64, "n_pos": (Q,) int64}``.

    Give either ``dist`` (a ``(Q, G)`` distance matrix, smaller = closer) or ``queries``
    (``(Q, D)``) and ``gallery`` (``(G, D)``) embeddings; with embeddings the distances are
    computed one chunk of ``chunk`` queries at a time (``metric="euclidean"``: ``|q - g|_2``, not
    squared; ``"cosine"``: ``1 - cos(q, g)``), in ``float32`` when both are ``float32`` (or
    smaller), else in ``float64``. See the module docstring for the definitions and conventions
    (ties by gallery index, AP 0 for a query without relevant items).
    """
    _choice("interpolation", interpolation, _INTERPOLATIONS)
    _choice("precision", precision, _PRECISIONS)
    _choice("metric", metric, _METRICS)
    ks_t, map_t = _cutoffs("ks", ks), _cutoffs("map_at", map_at)
    if isinstance(chunk, (bool, np.bool_)) or not isinstance(chunk, (int, np.integer)) or chunk <= 0:
        raise MetricError(f"chunk must be a positive integer, got {chunk!r}")
    ql, gl = _labels("query_labels", query_labels), _labels("gallery_labels", gallery_labels)
    if ql.shape[0] == 0:
        raise MetricError("query_labels is empty: there are no queries to evaluate")
    if gl.shape[0] == 0:
        raise MetricError("gallery_labels is empty: the gallery holds no items")
    nq, ng = ql.shape[0], gl.shape[0]

    if dist is not None:
        if queries is not None or gallery is not None:
            raise MetricError("give either dist or queries and gallery, not both")
        d_all = _real_matrix("dist", dist)
        if d_all.shape != (nq, ng):
            raise MetricError(f"dist must have shape (n_queries, n_gallery) = ({nq}, {ng}), "
                              f"got {d_all.shape}")
        if d_all.dtype == np.float16:
            d_all = d_all.astype(np.float32)
        gallery_t = None
    else:
        if queries is None or gallery is None:
            raise MetricError("give either dist or both queries and gallery")
        qx, gx = _real_matrix("queries", queries), _real_matrix("gallery", gallery)
        if qx.shape[0] != nq:
            raise MetricError(f"queries has {qx.shape[0]} rows but query_labels has {nq}")
        if gx.shape[0] != ng:
            raise MetricError(f"gallery has {gx.shape[0]} rows but gallery_labels has {ng}")
        if qx.shape[1] != gx.shape[1]:
            raise MetricError(f"queries and gallery differ in dimension ({qx.shape[1]} vs {gx.shape[1]})")
        dtype = np.result_type(qx.dtype, gx.dtype, np.float32)
        qx, gx = qx.astype(dtype, copy=False), gx.astype(dtype, copy=False)
        for name, x in (("queries", qx), ("gallery", gx)):
            if not np.isfinite(x).all():
                raise MetricError(f"{name} hold non-finite values (NaN or inf)")
        with np.errstate(over="ignore"):
            big = 2.0 * (np.einsum("ij,ij->i", qx, qx).max() + np.einsum("ij,ij->i", gx, gx).max())
        if not np.isfinite(big):
            raise MetricError(f"queries or gallery are too large for {dtype} distances (squared norms overflow)")
        gallery_t = _prepare_gallery(gx, metric)
        if metric == "cosine":
            qx = _unit_rows(qx, "queries")

    qcodes, gcodes, n_labels = _label_codes(ql, gl)
    n_pos = np.bincount(gcodes, minlength=n_labels)[qcodes].astype(np.int64)
    out = {"ap@all": np.zeros(nq)}
    out.update({f"ap@{k}": np.zeros(nq) for k in map_t})
    out.update({f"p@{k}": np.zeros(nq) for k in ks_t})

    chunk = min(chunk, nq)
    ranker = _Ranker(gcodes, chunk)
    dbuf = None if gallery_t is None else np.empty((chunk, ng), dtype=gallery_t.dtype)
    for start in range(0, nq, chunk):
        sl = slice(start, min(start + chunk, nq))
        if gallery_t is None:
            d = d_all[sl]
            if d.dtype.kind == "f" and np.isnan(d).any():
                raise MetricError(f"dist holds NaN (first in row {start + int(np.argmax(np.isnan(d).any(1)))})")
        else:
            d = _chunk_distances(qx[sl], gallery_t, metric, dbuf)
        rows, ranks = ranker.ranks(d, qcodes[sl], squared=gallery_t is not None and metric == "euclidean")
        del d
        table = _hit_table(rows, ranks, sl.stop - sl.start)
        npos = n_pos[sl]
        out["ap@all"][sl] = _ap_from_table(table, npos, interpolation)
        for k in map_t:
            out[f"ap@{k}"][sl] = _ap_from_table(table, npos, interpolation, top=k)
        for k in ks_t:
            hits = ((table > 0) & (table <= k)).sum(axis=1)
            denom = np.full(npos.shape, k) if precision == "sake" else np.minimum(npos, k)
            out[f"p@{k}"][sl] = np.divide(hits, denom, out=np.zeros(hits.shape), where=denom > 0)
    out["n_pos"] = n_pos
    return out


def retrieval_metrics(query_labels: Any, gallery_labels: Any, *, dist: Any = None,
                      queries: Any = None, gallery: Any = None, metric: str = "euclidean",
                      ks: Sequence[int] | int | None = (100, 200),
                      map_at: Sequence[int] | int | None = (200,), averaging: str = "class",
                      precision: str = "sake", interpolation: str = "voc",
                      chunk: int = 256) -> dict[str, float]:
    """mAP@all, mAP@K and Prec@K of a retrieval run, averaged over queries.

    Returns ``{"map@all", "map@K" for K in map_at, "p@K" for K in ks: float, "n_queries": int}``.
    ``averaging="class"`` (default; SAKE/SBKA): mean over query classes of the mean over the
    class's queries; ``"query"`` (ZSE-SBIR): mean over queries. The other arguments are those of
    :func:`retrieval_per_query`, which gives the per-query values. Defaults reproduce the
    SAKE/SBKA protocol (VOC-interpolated AP, Prec@K = hits / K, class-balanced means).
    """
    _choice("averaging", averaging, _AVERAGINGS)
    per = retrieval_per_query(query_labels, gallery_labels, dist=dist, queries=queries,
                              gallery=gallery, metric=metric, ks=ks, map_at=map_at,
                              precision=precision, interpolation=interpolation, chunk=chunk)
    n_pos = per.pop("n_pos")
    if averaging == "class":
        _, cls = np.unique(np.asarray(query_labels), return_inverse=True)
        cls = cls.reshape(-1)
        size = np.bincount(cls).astype(np.float64)

        def mean(v: np.ndarray) -> float:
            return float(np.mean(np.bincount(cls, weights=v) / size))
    else:
        def mean(v: np.ndarray) -> float:
            return float(np.mean(v))

    result: dict[str, Any] = {"map" + key[2:]: mean(v) for key, v in per.items() if key.startswith("ap@")}
    result.update({key: mean(v) for key, v in per.items() if key.startswith("p@")})
    result["n_queries"] = int(n_pos.shape[0])
    return result
