"""SBKA's retrieval side: exact and approximate search, and one-to-many cluster cross-modality matching.

Notation. ``q_i`` is a sketch (query) feature and ``g_j`` a photo (gallery) feature, both in R^d and,
in SBKA, L2-normalised by the caller (:func:`l2_normalise`); nothing here normalises on its own.

* Plain one-to-one ranking (SBKA's "mode 1"): ``D_E(i, j) = ||q_i - g_j||_2`` (not squared).
* One-to-many cluster matching. Split every vector into ``M`` contiguous blocks of ``d / M`` dims,
  ``x = [x^(1), ..., x^(M)]``. For each block ``b``, fit a codebook of ``K`` centres
  ``mu_(b,1..K)`` on the *gallery* block vectors only (the means of a full-covariance Gaussian
  mixture, or k-means centres), and encode each photo by its nearest centre per block::

      c_b(j) = argmin_k ||g_j^(b) - mu_(b,k)||_2                       (nearest mean, not the posterior)
      D_PQ(i, j) = sum_b ||q_i^(b) - mu_(b, c_b(j))||_2^2              (asymmetric: raw query vs codeword)
      D(i, j)    = w * D_PQ(i, j) + (1 - w) * D_E(i, j),  w = 0.8 in SBKA

  Every photo of one cell (the same ``M``-tuple of codes) is at the same ``D_PQ`` from a query: the
  query is matched against cluster prototypes ("one query to many photos"), and the Euclidean term
  orders the photos inside a cell. The gallery is ranked by ascending ``D``.

Where it comes from. SBKA's public test code calls this step "GMM": it fits sklearn's
``GaussianMixture`` (full covariance, k-means initialisation, seed 123) per block on the gallery,
keeps the component means and assigns each photo to its nearest mean, i.e. product quantisation with
GMM codebooks and asymmetric distance computation. :class:`ClusterMatcher` implements that
(``codebook="gmm"``) and offers k-means centres (``codebook="kmeans"``) as a faster option.

What visec does differently. The original sweeps ``M in {2, 4}`` and ``K`` around the number of unseen
classes *on the test set* and prints every result. visec never chooses on test:
:func:`select_matching` picks ``(M, K / n_classes)`` on a validation split, and the caller applies
``K = cluster_count(k_ratio, number of test gallery classes)`` once on the test gallery. A sweep on
test, if ever reported, must be labelled as an oracle.

Conventions.

* Threads: faiss has one process-wide OpenMP pool. :func:`build_index` and every ``search`` set it
  (``faiss.omp_set_num_threads``) to ``threads`` when given, else to torch's intra-op thread count
  when torch is already imported (so a run limited to N torch threads also limits faiss), else to
  the number of CPUs this process may use.
* GMM failure: no silent fallback. When sklearn cannot fit a block (too few items for ``K``
  components, an ill-defined covariance) :meth:`ClusterMatcher.fit` raises a one-line
  :class:`~visec.errors.ConfigError` naming ``m``, ``k`` and the block; ``reg_covar`` (sklearn's
  default 1e-6, as in SBKA) is exposed so a user can raise it deliberately.
* Ties: nearest centre ties go to the lower centre index (``argmin``); :func:`select_matching` breaks
  score ties by the order of the grid (``ms`` outer, ``k_ratios`` inner).
* dtypes: distances come back in ``result_type(inputs, float32)`` (float32 for float32 features,
  float64 for float64 ones). ``euclidean`` uses ``|q|^2 + |g|^2 - 2 q.g`` with tiny negatives clamped
  to 0 before the square root, so near-duplicates in float32 are ~1e-3 from 0, not exactly 0.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from typing import Any, Callable, Sequence

import numpy as np

from visec.errors import ConfigError, DataError, MetricError

INDEX_KINDS = ("flat", "ivf", "hnsw")
CODEBOOKS = ("gmm", "kmeans")


# ----------------------------------------------------------------------------------------- helpers
def l2_normalise(x: Any) -> np.ndarray:
    """Rows of ``x`` (N, d) scaled to unit L2 norm, as float32; all-zero rows stay zero."""
    a = np.asarray(x, dtype=np.float32)
    if a.ndim != 2:
        raise DataError(f"l2_normalise expects a 2-d array (N, d), got shape {a.shape}")
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.maximum(norms, np.float32(1e-12))


def _matrix(x: Any, what: str) -> np.ndarray:
    """``x`` as a non-empty, finite, 2-d float array (float32 at least)."""
    a = np.asarray(x)
    if a.ndim != 2:
        raise DataError(f"{what} must be a 2-d array (N, d), got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise DataError(f"{what} is empty (shape {a.shape})")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise DataError(f"{what} must be real numbers, got dtype {a.dtype}")
    a = a.astype(np.result_type(a.dtype, np.float32), copy=False)
    if not np.all(np.isfinite(a)):
        raise DataError(f"{what} holds NaN or infinite values")
    return a


def _pair(queries: Any, gallery: Any) -> tuple[np.ndarray, np.ndarray, np.dtype]:
    q, g = _matrix(queries, "queries"), _matrix(gallery, "gallery")
    if q.shape[1] != g.shape[1]:
        raise DataError(f"queries have {q.shape[1]} dims but the gallery has {g.shape[1]}")
    dtype = np.result_type(q.dtype, g.dtype)
    return q.astype(dtype, copy=False), g.astype(dtype, copy=False), dtype


def euclidean(queries: Any, gallery: Any) -> np.ndarray:
    """The full (Q, G) matrix of non-squared Euclidean distances ``||q_i - g_j||_2``."""
    q, g, dtype = _pair(queries, gallery)
    sq = (q * q).sum(axis=1)[:, None] + (g * g).sum(axis=1)[None, :] - 2 * (q @ g.T)
    np.maximum(sq, 0, out=sq)
    return np.sqrt(sq, out=sq).astype(dtype, copy=False)


def cluster_count(k_ratio: float, n_classes: int) -> int:
    """The number of clusters for ``k_ratio`` times ``n_classes``: rounded half up, at least 1.

    The one rule both :func:`select_matching` (validation classes) and the caller (test classes) use."""
    if not (isinstance(k_ratio, (int, float)) and math.isfinite(k_ratio) and k_ratio > 0):
        raise ConfigError(f"k_ratio must be a positive number, got {k_ratio!r}")
    if int(n_classes) < 1:
        raise ConfigError(f"n_classes must be at least 1, got {n_classes!r}")
    return max(1, math.floor(k_ratio * int(n_classes) + 0.5 + 1e-9))


# -------------------------------------------------------------------------------------------- faiss
def _threads(threads: int | None) -> int:
    if threads is not None:
        if int(threads) < 1:
            raise ConfigError(f"threads must be at least 1, got {threads!r}")
        return int(threads)
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_num_threads"):
        return max(1, int(torch.get_num_threads()))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a dependency
        raise ConfigError("faiss is not installed (pip install faiss-cpu)") from exc
    return faiss


class FaissIndex:
    """A gallery held in a faiss index; :meth:`search` returns non-squared L2 distances and ids."""

    def __init__(self, index: Any, kind: str, dim: int, threads: int, nlist: int | None = None,
                 nprobe: int | None = None, hnsw_m: int | None = None):
        self.index, self.kind, self.dim, self.threads = index, kind, dim, threads
        self.nlist, self.nprobe, self.hnsw_m = nlist, nprobe, hnsw_m

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest gallery items of each query: ``(distances (Q, k), ids (Q, k))``, nearest
        first. Distances are ``||q - g||_2`` (faiss's squared values, clamped at 0, square-rooted); an
        approximate index that finds fewer than ``k`` items pads with id -1 and distance ``inf``."""
        q = _matrix(queries, "queries")
        if q.shape[1] != self.dim:
            raise DataError(f"queries have {q.shape[1]} dims but the index holds {self.dim}-d vectors")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"k must be a positive integer, got {k!r}")
        if k > self.ntotal:
            raise ConfigError(f"k={k} is more than the {self.ntotal} gallery items")
        faiss = _faiss()
        faiss.omp_set_num_threads(self.threads)
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = max(64, int(k))
        sq, ids = self.index.search(np.ascontiguousarray(q, dtype=np.float32), int(k))
        dist = np.sqrt(np.maximum(sq, 0, dtype=np.float32))
        dist[ids < 0] = np.inf
        return dist, ids.astype(np.int64, copy=False)


def build_index(gallery: Any, kind: str = "flat", *, nlist: int | None = None, nprobe: int = 8,
                hnsw_m: int = 32, seed: int = 0, threads: int | None = None) -> FaissIndex:
    """A faiss index over ``gallery`` (G, d), searched in float32.

    * ``"flat"``: exact (``IndexFlatL2``).
    * ``"ivf"``: ``IndexIVFFlat`` whose coarse quantiser is trained (k-means, ``seed``) on the gallery.
      Default ``nlist = min(round(4 sqrt(G)), G // 39)``, at least 1: faiss's usual 4 sqrt(G) rule,
      capped so every list trains on at least 39 items (faiss's own minimum). ``nprobe`` lists are
      visited per query (capped at ``nlist``).
    * ``"hnsw"``: ``IndexHNSWFlat`` with ``hnsw_m`` links per node; ``efSearch = max(64, k)``.

    ``threads`` sets faiss's process-wide OpenMP thread count (default: see the module docstring)."""
    if kind not in INDEX_KINDS:
        raise ConfigError(f"unknown index kind {kind!r}; choose one of {', '.join(INDEX_KINDS)}")
    g = np.ascontiguousarray(_matrix(gallery, "gallery"), dtype=np.float32)
    n, d = g.shape
    faiss = _faiss()
    n_threads = _threads(threads)
    faiss.omp_set_num_threads(n_threads)
    if kind == "flat":
        index = faiss.IndexFlatL2(d)
        index.add(g)
        return FaissIndex(index, kind, d, n_threads)
    if kind == "ivf":
        if nlist is None:
            nlist = max(1, min(round(4 * math.sqrt(n)), n // 39))
        if isinstance(nlist, bool) or not isinstance(nlist, (int, np.integer)) or not 1 <= nlist <= n:
            raise ConfigError(f"nlist must be an integer in [1, {n}] (the gallery size), got {nlist!r}")
        if isinstance(nprobe, bool) or not isinstance(nprobe, (int, np.integer)) or nprobe < 1:
            raise ConfigError(f"nprobe must be a positive integer, got {nprobe!r}")
        quantiser = faiss.IndexFlatL2(d)
        index = faiss.IndexIVFFlat(quantiser, d, int(nlist), faiss.METRIC_L2)
        index.cp.seed = int(seed)
        index.cp.min_points_per_centroid = 1  # an explicit small nlist is the caller's choice
        index.train(g)
        index.add(g)
        index.nprobe = min(int(nprobe), int(nlist))
        out = FaissIndex(index, kind, d, n_threads, nlist=int(nlist), nprobe=int(index.nprobe))
        out.quantiser = quantiser  # keep the Python wrapper of the quantiser alive with the index
        return out
    if isinstance(hnsw_m, bool) or not isinstance(hnsw_m, (int, np.integer)) or hnsw_m < 2:
        raise ConfigError(f"hnsw_m must be an integer >= 2, got {hnsw_m!r}")
    index = faiss.IndexHNSWFlat(d, int(hnsw_m))
    index.add(g)
    return FaissIndex(index, kind, d, n_threads, hnsw_m=int(hnsw_m))


# ------------------------------------------------------------------------------ cluster matching
def _nearest(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre (squared L2) of every row of ``x``; ties go to the lower index."""
    sq = (x * x).sum(1)[:, None] - 2 * x @ centres.T + (centres * centres).sum(1)[None, :]
    return np.argmin(sq, axis=1).astype(np.int64)


class ClusterMatcher:
    """One-to-many cluster cross-modality matching (product quantisation with GMM or k-means
    codebooks, asymmetric distance, fused with the Euclidean distance); see the module docstring.

    ``m`` blocks, ``k`` centres per block, ``weight`` = ``w`` of ``D = w D_PQ + (1 - w) D_E``,
    ``seed`` = sklearn's ``random_state``, ``n_init`` restarts of either codebook (1 = sklearn's GMM
    default, as in SBKA), ``reg_covar`` added to the GMM covariances' diagonal (sklearn's 1e-6)."""

    def __init__(self, m: int = 2, k: int = 25, codebook: str = "gmm", weight: float = 0.8, seed: int = 123,
                 *, n_init: int = 1, reg_covar: float = 1e-6):
        for name, value in (("m", m), ("k", k), ("n_init", n_init)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if codebook not in CODEBOOKS:
            raise ConfigError(f"unknown codebook {codebook!r}; choose one of {', '.join(CODEBOOKS)}")
        if not (isinstance(weight, (int, float, np.floating)) and 0.0 <= float(weight) <= 1.0):
            raise ConfigError(f"weight must be in [0, 1], got {weight!r}")
        if not (isinstance(reg_covar, (int, float, np.floating)) and float(reg_covar) >= 0):
            raise ConfigError(f"reg_covar must be >= 0, got {reg_covar!r}")
        self.m, self.k, self.codebook, self.weight = int(m), int(k), codebook, float(weight)
        self.seed, self.n_init, self.reg_covar = int(seed), int(n_init), float(reg_covar)
        self.centres: np.ndarray | None = None  # (m, k, d/m) float64
        self.codes: np.ndarray | None = None  # (G, m) int64
        self.gallery: np.ndarray | None = None  # (G, d), kept for the Euclidean term

    def __repr__(self) -> str:
        return (f"ClusterMatcher(m={self.m}, k={self.k}, codebook={self.codebook!r}, weight={self.weight}, "
                f"seed={self.seed})")

    @property
    def dim(self) -> int | None:
        return None if self.gallery is None else int(self.gallery.shape[1])

    def _fit_block(self, x: np.ndarray, block: int) -> np.ndarray:
        from sklearn.cluster import KMeans
        from sklearn.mixture import GaussianMixture

        if self.codebook == "kmeans":
            with warnings.catch_warnings():
                # fewer distinct points than k: sklearn warns and duplicates centres; the codes stay valid
                warnings.filterwarnings("ignore", message="Number of distinct clusters")
                model = KMeans(n_clusters=self.k, n_init=self.n_init, random_state=self.seed).fit(x)
            return np.asarray(model.cluster_centers_, dtype=np.float64)
        model = GaussianMixture(n_components=self.k, covariance_type="full", reg_covar=self.reg_covar,
                                n_init=self.n_init, random_state=self.seed)
        try:
            model.fit(x)
        except (ValueError, np.linalg.LinAlgError) as exc:
            reason = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"the GMM codebook cannot be fit with m={self.m}, k={self.k} (block {block}): "
                              f"{reason}; lower k or m, or raise reg_covar") from exc
        means = np.asarray(model.means_, dtype=np.float64)
        if not np.all(np.isfinite(means)):
            raise ConfigError(f"the GMM codebook with m={self.m}, k={self.k} (block {block}) has non-finite means; "
                              "lower k or m, or raise reg_covar")
        return means

    def fit(self, gallery: Any) -> "ClusterMatcher":
        """Fit one codebook per block on ``gallery`` (G, d) and encode every item by its nearest
        centre per block. Returns ``self``."""
        g = _matrix(gallery, "gallery")
        n, d = g.shape
        if d % self.m:
            raise ConfigError(f"m={self.m} does not divide the feature dimension {d}")
        if self.k > n:
            raise ConfigError(f"k={self.k} clusters is more than the {n} gallery items")
        sub = d // self.m
        g64 = g.astype(np.float64)
        centres = np.empty((self.m, self.k, sub), dtype=np.float64)
        codes = np.empty((n, self.m), dtype=np.int64)
        for b in range(self.m):
            block = np.ascontiguousarray(g64[:, b * sub:(b + 1) * sub])
            centres[b] = self._fit_block(block, b)
            codes[:, b] = _nearest(block, centres[b])
        self.centres, self.codes, self.gallery = centres, codes, g
        return self

    def _queries(self, queries: Any) -> np.ndarray:
        if self.gallery is None:
            raise ConfigError("ClusterMatcher is not fitted: call fit(gallery) first")
        q = _matrix(queries, "queries")
        if q.shape[1] != self.gallery.shape[1]:
            raise DataError(f"queries have {q.shape[1]} dims but the matcher was fit on {self.gallery.shape[1]}")
        return q

    def pq_distances(self, queries: Any) -> np.ndarray:
        """``D_PQ`` (Q, G): the sum over blocks of ``||q^(b) - mu_(b, c_b(j))||^2`` (asymmetric)."""
        q = self._queries(queries)
        dtype = np.result_type(q.dtype, self.gallery.dtype)
        sub = q.shape[1] // self.m
        out = np.zeros((q.shape[0], self.codes.shape[0]), dtype=dtype)
        for b in range(self.m):
            qb, mu = q[:, b * sub:(b + 1) * sub].astype(np.float64), self.centres[b]
            # (Q, k) squared distances to the codewords, in float64 (small: k columns)
            table = (qb * qb).sum(1)[:, None] - 2 * qb @ mu.T + (mu * mu).sum(1)[None, :]
            np.maximum(table, 0, out=table)
            out += table.astype(dtype)[:, self.codes[:, b]]
        return out

    def _fuse(self, d_pq: np.ndarray, d_e: np.ndarray) -> np.ndarray:
        dtype = np.result_type(d_pq.dtype, d_e.dtype)
        return (self.weight * d_pq + (1.0 - self.weight) * d_e).astype(dtype, copy=False)

    def distances(self, queries: Any) -> np.ndarray:
        """The fused distance ``weight * D_PQ + (1 - weight) * D_E`` (Q, G); rank by ascending value."""
        q = self._queries(queries)
        return self._fuse(self.pq_distances(q), euclidean(q, self.gallery))


# ------------------------------------------------------------------------------------- selection
def _labels(y: Any, n: int, what: str) -> np.ndarray:
    a = np.asarray(y)
    if a.ndim != 1 or a.shape[0] != n:
        raise DataError(f"{what} must be a 1-d array of {n} labels, got shape {a.shape}")
    return a


def _score(score_fn: Callable[..., float], dist: np.ndarray, yq: np.ndarray, yg: np.ndarray) -> float:
    value = score_fn(dist, yq, yg)
    try:
        value = float(value)
    except (TypeError, ValueError) as exc:
        raise MetricError(f"score_fn returned {value!r}, not a number") from exc
    if not math.isfinite(value):
        raise MetricError(f"score_fn returned a non-finite score ({value})")
    return value


def select_matching(val_queries: Any, val_query_labels: Any, val_gallery: Any, val_gallery_labels: Any, *,
                    ms: Sequence[int] = (1, 2, 4), k_ratios: Sequence[float] = (0.8, 0.9, 1.0, 1.1, 1.2),
                    score_fn: Callable[[np.ndarray, np.ndarray, np.ndarray], float], codebook: str = "gmm",
                    weight: float = 0.8, seed: int = 123) -> dict[str, Any]:
    """Choose ``(m, k_ratio)`` for cluster matching on a validation split, never on test.

    For every ``m`` of ``ms`` that divides the feature dimension and every ``k_ratio``, fits a
    :class:`ClusterMatcher` with ``k = cluster_count(k_ratio, distinct validation gallery classes)``
    on ``val_gallery`` and scores the fused distances with ``score_fn(dist (Q, G), query_labels,
    gallery_labels)`` (higher is better, e.g. mAP). Pairs that cannot run (``m`` not a divisor,
    ``k`` above the gallery size, a GMM that cannot be fit) are kept in the table with their reason.
    The best score wins; ties go to the first pair in grid order (``ms`` outer, ``k_ratios`` inner).

    Returns ``{"m", "k_ratio", "k", "score", "euclidean_score", "n_classes", "codebook", "weight",
    "seed", "table"}``, ``table`` being one ``{"m", "k_ratio", "k", "score", "skipped"}`` row per
    pair (``score`` None and ``skipped`` the reason for a pair that did not run). Apply the choice on
    test as ``ClusterMatcher(m, cluster_count(k_ratio, test gallery classes), ...)``."""
    if not callable(score_fn):
        raise ConfigError("score_fn must be a callable score_fn(dist, query_labels, gallery_labels) -> float")
    if codebook not in CODEBOOKS:
        raise ConfigError(f"unknown codebook {codebook!r}; choose one of {', '.join(CODEBOOKS)}")
    if not (isinstance(weight, (int, float, np.floating)) and 0.0 <= float(weight) <= 1.0):
        raise ConfigError(f"weight must be in [0, 1], got {weight!r}")
    ms, k_ratios = tuple(ms), tuple(k_ratios)
    if not ms or not k_ratios:
        raise ConfigError("ms and k_ratios must each hold at least one value")
    for m in ms:
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
            raise ConfigError(f"every m must be a positive integer, got {m!r}")
    if len(set(ms)) != len(ms) or len(set(k_ratios)) != len(k_ratios):
        raise ConfigError("ms and k_ratios must not repeat values")
    q, g, _ = _pair(val_queries, val_gallery)
    yq = _labels(val_query_labels, q.shape[0], "val_query_labels")
    yg = _labels(val_gallery_labels, g.shape[0], "val_gallery_labels")
    n_classes = int(np.unique(yg).size)
    ks = {r: cluster_count(r, n_classes) for r in k_ratios}  # validates every ratio before any fitting
    dim = q.shape[1]

    d_e = euclidean(q, g)
    euclidean_score = _score(score_fn, d_e, yq, yg)
    table: list[dict[str, Any]] = []
    done: dict[tuple[int, int], tuple[float | None, str | None]] = {}  # two ratios may give the same k
    for m in ms:
        for r in k_ratios:
            k = ks[r]
            if dim % m:
                score, skipped = None, f"m={m} does not divide the dimension {dim}"
            elif k > g.shape[0]:
                score, skipped = None, f"k={k} is more than the {g.shape[0]} gallery items"
            elif (int(m), k) in done:
                score, skipped = done[(int(m), k)]
            else:
                matcher = ClusterMatcher(int(m), k, codebook=codebook, weight=weight, seed=seed)
                try:
                    matcher.fit(g)
                except ConfigError as exc:
                    score, skipped = None, str(exc)
                else:
                    score, skipped = _score(score_fn, matcher._fuse(matcher.pq_distances(q), d_e), yq, yg), None
                done[(int(m), k)] = (score, skipped)
            table.append({"m": int(m), "k_ratio": float(r), "k": k, "score": score, "skipped": skipped})
    ran = [row for row in table if row["score"] is not None]
    if not ran:
        raise ConfigError(f"no (m, k_ratio) pair could run on the validation split: {table[0]['skipped']}")
    best = max(ran, key=lambda row: row["score"])  # max keeps the first of equal scores
    return {"m": best["m"], "k_ratio": best["k_ratio"], "k": best["k"], "score": best["score"],
            "euclidean_score": euclidean_score, "n_classes": n_classes, "codebook": codebook,
            "weight": float(weight), "seed": int(seed), "table": table}
