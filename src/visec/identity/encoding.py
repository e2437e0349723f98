"""Integer encoding of a population and the per-attribute observation (confusion) model.

Every attribute ``a`` gets a value domain ``V_a`` of ``K_a`` known values: the distinct labels
present in the population (categorical / id), the ``levels`` (ordinal) or the bins (numeric with
``bins``: ``len(bins) + 1`` bins, open at both ends). Population values become codes
``0 .. K_a - 1`` and a missing value becomes ``-1``. An observed value outside ``V_a`` (a phone
number with a typo, an unseen label) becomes the extra outcome ``other`` with code ``K_a``, so the
outcome space has ``K_a + 1`` elements.

**Observation model** (noisy mode). For an object whose true code is ``x`` the observed outcome is
``o`` with probability::

    L(o | x) = r                                            if o == x
             = (1 - r) * [(1 - leak) * qs(o | x) + leak / K] if o != x   (K = K_a other outcomes)

``r`` is the attribute's reliability and ``qs(. | x)`` the structured part of the confusion, a
distribution over the outcomes ``!= x``: ``uniform`` (``leak`` is taken as 1, i.e. ``(1-r)/K``
everywhere), ``adjacent`` (the neighbouring codes ``x-1``, ``x+1``, equally), ``neighbours`` (the
look-alike values listed in the schema, equally; unknown listed values are dropped) and
``gaussian`` (bins ``o`` weighted by the chance that ``value + N(0, noise_sd)`` lands in bin ``o``
when the value is uniform in bin ``x``; the outer bins are as wide as their neighbours). When the
structured part is empty for some ``x`` its mass goes to ``other``. Each row sums to one.

**Missing population values** (code ``-1``) mean "unknown": the object is treated as matching any
observation, i.e. its likelihood is ``r`` for every outcome (``1`` in crisp mode).

The model is stored sparsely: a constant base ``c = (1 - r) * leak / K`` for every ``(o, x)`` plus
explicit entries (diagonal and structured confusions) in row-sorted (CSR) order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.special import ndtr

from visec.identity.errors import IdentityError, ObjectIndexError, SchemaError, unknown_attribute
from visec.identity.schema import AttributeSpec, Schema, check_population, resolve_schema

MISSING = -1


def _is_missing(values: np.ndarray) -> np.ndarray:
    miss = pd.isna(values)
    if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
        miss = miss | np.asarray([isinstance(v, str) and v == "" for v in values], dtype=bool)
    return np.asarray(miss, dtype=bool)


@dataclass
class ConfusionModel:
    """Sparse ``L(o | x)`` for one attribute (see the module docstring)."""

    K: int
    r: float
    c: float
    rows: np.ndarray  # outcome o of each explicit entry (sorted)
    cols: np.ndarray  # true value x
    vals: np.ndarray  # L(o | x)
    row_ptr: np.ndarray  # CSR pointers into rows/cols/vals, length K + 2

    def likelihood_row(self, o: int) -> np.ndarray:
        """``L(o | x)`` for every known value ``x`` (length ``K``)."""
        out = np.full(self.K, self.c, dtype=float)
        a, b = self.row_ptr[o], self.row_ptr[o + 1]
        out[self.cols[a:b]] = self.vals[a:b]
        return out


def _gaussian_band(edges: Sequence[float], sd: float) -> np.ndarray:
    """``G[o, x]`` = P(value + N(0, sd) in bin o | value uniform in bin x) for open-ended bins."""
    e = np.asarray(edges, dtype=float)
    K = len(e) + 1
    if len(e) == 1:
        width = np.array([1.0, 1.0]) * max(sd, 1.0)
    else:
        inner = np.diff(e)
        width = np.concatenate([[inner[0]], inner, [inner[-1]]])
    lo = np.concatenate([[e[0] - width[0]], e])
    hi = np.concatenate([e, [e[-1] + width[-1]]])

    def gfun(t: np.ndarray) -> np.ndarray:  # integral of Phi
        return t * ndtr(t) + np.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)

    def below(b: float) -> np.ndarray:  # P(v + eps < b) for v ~ U(lo_x, hi_x), per x
        if b == math.inf:
            return np.ones(K)
        if b == -math.inf:
            return np.zeros(K)
        return (sd / (hi - lo)) * (gfun((b - lo) / sd) - gfun((b - hi) / sd))

    bounds = np.concatenate([[-math.inf], e, [math.inf]])
    G = np.empty((K, K))
    for o in range(K):
        G[o] = below(bounds[o + 1]) - below(bounds[o])
    return np.clip(G, 0.0, None)


def build_confusion(spec: AttributeSpec, domain: pd.Index, leak: float,
                    lookup: "callable[[np.ndarray], np.ndarray] | None" = None) -> ConfusionModel:
    """The sparse observation model of one attribute over its ``domain`` (see module docstring)."""
    K = len(domain)
    r = float(spec.reliability)
    kind = spec.confusion
    lam = 1.0 if kind == "uniform" else float(leak)
    c = (1.0 - r) * lam / K if K > 0 else 0.0
    rows = [np.arange(K)]
    cols = [np.arange(K)]
    vals = [np.full(K, r)]
    struct = (1.0 - r) * (1.0 - lam)
    if struct > 0 and K > 0:
        nb_rows: list[np.ndarray] = []
        nb_cols: list[np.ndarray] = []
        nb_w: list[np.ndarray] = []
        if kind == "adjacent":
            x = np.arange(K)
            for d in (-1, 1):
                o = x + d
                ok = (o >= 0) & (o < K)
                nb_rows.append(o[ok])
                nb_cols.append(x[ok])
                nb_w.append(np.ones(ok.sum()))
        elif kind == "gaussian":
            G = _gaussian_band(spec.bins or (), float(spec.noise_sd or 1.0))
            np.fill_diagonal(G, 0.0)
            o, x = np.nonzero(G > 1e-12)
            nb_rows.append(o)
            nb_cols.append(x)
            nb_w.append(G[o, x])
        elif kind == "neighbours":
            keys = list((spec.neighbours or {}).keys())
            if keys:
                lengths = np.array([len(spec.neighbours[k]) for k in keys])
                flat = [v for k in keys for v in spec.neighbours[k]]
                kcode = lookup(np.asarray(keys, dtype=object)) if lookup else domain.get_indexer(keys)
                ncode = lookup(np.asarray(flat, dtype=object)) if lookup else domain.get_indexer(flat)
                x = np.repeat(kcode, lengths)
                o = np.asarray(ncode)
                ok = (x >= 0) & (x < K) & (o >= 0) & (o < K) & (o != x)
                key = pd.unique(o[ok].astype(np.int64) * (K + 1) + x[ok])  # drop duplicate pairs
                nb_rows.append(key // (K + 1))
                nb_cols.append(key % (K + 1))
                nb_w.append(np.ones(len(key)))
        if nb_rows:
            o = np.concatenate(nb_rows).astype(np.int64)
            x = np.concatenate(nb_cols).astype(np.int64)
            w = np.concatenate(nb_w).astype(float)
        else:
            o = x = np.zeros(0, np.int64)
            w = np.zeros(0)
        tot = np.bincount(x, weights=w, minlength=K)
        w = w / np.where(tot[x] > 0, tot[x], 1.0)
        rows.append(o)
        cols.append(x)
        vals.append(c + struct * w)
        empty = np.nonzero(tot <= 0)[0]  # no structured confusion: that mass goes to "other"
        rows.append(np.full(len(empty), K))
        cols.append(empty)
        vals.append(np.full(len(empty), c + struct))
    rows_a = np.concatenate(rows).astype(np.int64)
    cols_a = np.concatenate(cols).astype(np.int64)
    vals_a = np.concatenate(vals).astype(float)
    order = np.argsort(rows_a * (K + 1) + cols_a, kind="stable")
    rows_a, cols_a, vals_a = rows_a[order], cols_a[order], vals_a[order]
    row_ptr = np.searchsorted(rows_a, np.arange(K + 2), side="left")
    return ConfusionModel(K=K, r=r, c=c, rows=rows_a, cols=cols_a, vals=vals_a, row_ptr=row_ptr)


class EncodedPopulation:
    """A population as an ``N x M`` int64 code matrix (``-1`` = missing) plus value domains.

    Build it once with :func:`encode_population` and pass it to the entropy functions and the
    tracer to avoid re-encoding. ``ids`` are the population's index labels.
    """

    def __init__(self, population: pd.DataFrame, schema: Schema | None = None) -> None:
        population = check_population(population)
        if population.shape[1] == 0:
            raise IdentityError("population has no attribute columns")
        self.frame = population
        self.schema = resolve_schema(population, schema)
        self.names: list[str] = self.schema.names
        self.ids = population.index.to_numpy()
        self.N = len(population)
        self.M = len(self.names)
        self._pos: dict[str, int] = {n: j for j, n in enumerate(self.names)}
        self.domains: list[pd.Index] = []
        codes = np.empty((self.N, self.M), dtype=np.int64)
        for j, spec in enumerate(self.schema.attributes):
            col = population[spec.name].to_numpy()
            codes[:, j], dom = self._encode_column(spec, col)
            self.domains.append(dom)
        self.codes = np.asfortranarray(codes)  # column-major: attribute columns are contiguous
        self.K = np.array([len(d) for d in self.domains], dtype=np.int64)
        self.costs = np.array([a.cost for a in self.schema.attributes], dtype=float)
        self.has_missing = (codes < 0).any(axis=0)
        self._str_domains: dict[int, pd.Index] = {}
        self._models: dict[int, ConfusionModel] = {}
        self._id_pos: dict[Any, int] | None = None

    # ---------------------------------------------------------------------------- encoding
    @staticmethod
    def _encode_column(spec: AttributeSpec, col: np.ndarray) -> tuple[np.ndarray, pd.Index]:
        miss = _is_missing(col)
        out = np.full(len(col), MISSING, dtype=np.int64)
        if spec.kind == "numeric":
            try:
                vals = pd.to_numeric(pd.Series(col[~miss]), errors="raise").to_numpy(dtype=float)
            except (ValueError, TypeError):
                raise SchemaError(f"attribute '{spec.name}' is numeric but has non-numeric values") from None
            if spec.bins is not None:
                edges = np.asarray(spec.bins)
                out[~miss] = np.searchsorted(edges, vals, side="right")
                return out, pd.Index(_bin_labels(edges))
            codes, uniq = pd.factorize(vals, sort=True)
            out[~miss] = codes
            return out, pd.Index(uniq)
        present = col[~miss]
        if spec.kind == "ordinal":
            levels = spec.levels
            if levels is None:
                levels = tuple(pd.unique(pd.Series(present)).tolist())
                try:
                    levels = tuple(sorted(levels))
                except TypeError:
                    pass
            dom = pd.Index(list(levels), dtype=object)
            codes = dom.get_indexer(present)
            if (codes < 0).any():
                bad = present[codes < 0][0]
                raise SchemaError(f"attribute '{spec.name}': value {bad!r} is not one of its levels")
            out[~miss] = codes
            return out, dom
        codes, uniq = pd.factorize(pd.Series(present, dtype=object), sort=False)
        out[~miss] = codes
        return out, pd.Index(uniq, dtype=object)

    def position(self, name: str) -> int:
        """Column position of an attribute name (raises :class:`UnknownAttributeError`)."""
        try:
            return self._pos[name]
        except (KeyError, TypeError):
            raise unknown_attribute(name, self.names) from None

    def positions(self, names: Sequence[str] | str | None) -> list[int]:
        if names is None:
            return list(range(self.M))
        if isinstance(names, str):
            names = [names]
        pos = [self.position(n) for n in names]
        if len(set(pos)) != len(pos):
            raise IdentityError("attribute list contains duplicates")
        return pos

    def check_index(self, index: Any) -> int:
        """A valid object position ``0 .. N-1`` (negative positions count from the end)."""
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise ObjectIndexError(f"object index must be an integer position, got {index!r}")
        i = int(index)
        if i < 0:
            i += self.N
        if not 0 <= i < self.N:
            raise ObjectIndexError(f"object index {index} out of range for a population of {self.N}")
        return i

    def position_of(self, object_id: Any) -> int:
        """Row position of an object id (index label)."""
        if self._id_pos is None:
            self._id_pos = {}
            for i, v in enumerate(self.ids):
                self._id_pos.setdefault(v, i)
                self._id_pos.setdefault(str(v), i)
        if object_id in self._id_pos:
            return self._id_pos[object_id]
        if str(object_id) in self._id_pos:
            return self._id_pos[str(object_id)]
        raise ObjectIndexError(f"object id {object_id!r} is not in the population")

    def encode_values(self, j: int, values: Sequence[Any] | np.ndarray) -> np.ndarray:
        """Codes of observed values of attribute ``j``: ``-1`` missing, ``K_j`` for an unseen value."""
        spec = self.schema.attributes[j]
        arr = np.asarray(values, dtype=object)
        if arr.ndim == 0:
            arr = arr.reshape(1)
        miss = _is_missing(arr)
        out = np.full(len(arr), MISSING, dtype=np.int64)
        present = arr[~miss]
        if len(present) == 0:
            return out
        K = int(self.K[j])
        if spec.kind == "numeric":
            nums = pd.to_numeric(pd.Series(present, dtype=object), errors="coerce").to_numpy(dtype=float)
            if spec.bins is not None:
                codes = np.searchsorted(np.asarray(spec.bins), nums, side="right").astype(np.int64)
                codes[np.isnan(nums)] = K
            else:
                codes = self.domains[j].get_indexer(nums)
        else:
            codes = self._lookup(j, present)
        codes = np.where(codes < 0, K, codes)
        out[~miss] = codes
        return out

    def _lookup(self, j: int, values: np.ndarray) -> np.ndarray:
        dom = self.domains[j]
        codes = np.asarray(dom.get_indexer(pd.Index(values, dtype=object)), dtype=np.int64)
        bad = codes < 0
        if bad.any():  # tolerate 1 vs "1": compare string forms
            if j not in self._str_domains:
                self._str_domains[j] = pd.Index([str(v) for v in dom], dtype=object)
            sdom = self._str_domains[j]
            if sdom.is_unique:
                codes[bad] = sdom.get_indexer(pd.Index([str(v) for v in values[bad]], dtype=object))
        return codes

    def encode_observation(self, observation: Mapping[str, Any] | pd.Series | None) -> np.ndarray:
        """``(M,)`` codes of one observation record; attributes it does not mention are missing."""
        out = np.full(self.M, MISSING, dtype=np.int64)
        if observation is None:
            return out
        items = observation.items()
        for name, value in items:
            if name in ("true_id", "query_id"):
                continue
            j = self.position(str(name))
            out[j] = self.encode_values(j, [value])[0]
        return out

    def encode_queries(self, queries: pd.DataFrame) -> np.ndarray:
        """``(Q, M)`` codes of a query table (columns other than attributes and ``true_id`` rejected)."""
        out = np.full((len(queries), self.M), MISSING, dtype=np.int64)
        for name in queries.columns:
            if name in ("true_id", "query_id"):
                continue
            j = self.position(str(name))
            out[:, j] = self.encode_values(j, queries[name].to_numpy(dtype=object))
        return out

    def value_label(self, j: int, code: int) -> Any:
        if code == MISSING:
            return None
        if code >= self.K[j]:
            return "<other>"
        v = self.domains[j][code]
        return v.item() if hasattr(v, "item") else v

    def model(self, j: int) -> ConfusionModel:
        """The (cached) confusion model of attribute ``j``."""
        if j not in self._models:
            spec = self.schema.attributes[j]
            self._models[j] = build_confusion(spec, self.domains[j], self.schema.leak,
                                              lookup=lambda v, j=j: self._lookup(j, v))
        return self._models[j]


def encode_population(population: pd.DataFrame | EncodedPopulation, schema: Schema | None = None) -> EncodedPopulation:
    """Encode (or pass through) a population."""
    if isinstance(population, EncodedPopulation):
        if schema is not None and schema.names != population.names:
            return EncodedPopulation(population.frame, schema)
        return population
    return EncodedPopulation(population, schema)


def _bin_labels(edges: np.ndarray) -> list[str]:
    def f(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else f"{x:g}"

    labels = [f"<{f(edges[0])}"]
    labels += [f"[{f(a)}, {f(b)})" for a, b in zip(edges[:-1], edges[1:])]
    labels.append(f">={f(edges[-1])}")
    return labels
