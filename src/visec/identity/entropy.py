"""The TIT identity model: identity entropy, (individual) conditional identity entropy, core sets.

Definitions (all in bits, uniform prior ``pi(u) = 1/N`` unless a prior is given)::

    H(ID)            = -sum_u pi(u) log2 pi(u)                     (= log2 N when uniform)
    C_u(S)           = {v : for all a in S, x_a(v) "matches" x_a(u)}
    h_u(S)           = log2 |C_u(S)|                                individual conditional identity entropy
    H(ID | A_S)      = (1/N) sum_u h_u(S)                           conditional identity entropy
                     = sum_g (n_g / N) log2 n_g = log2 N - H(A_S)   (no missing values)
    CIS(u)           = a minimum-cardinality S with h_u(S) = min_S' h_u(S')   core identification set

**Matching and missing values.** Attribute values are compared after encoding (numeric values by
bin, see :mod:`visec.identity.encoding`). A missing population value means "unknown" and matches
every value, so ``v`` is in ``C_u(S)`` unless some ``a`` in ``S`` has both ``x_a(u)`` and ``x_a(v)``
present and different. With missing values the compatibility relation is not transitive, so
``log2 N - H(A_S)`` no longer equals ``H(ID | A_S)``; :func:`joint_attribute_entropy` then counts
"missing" as a value of its own. Everything else uses the wildcard rule, the same rule the crisp
tracer uses.

**Core identification set.** ``S`` is valid for ``u`` when it separates ``u`` from every object that
any attribute can separate it from, i.e. ``h_u(S) = h_u(A)``; for an object with a unique full
value vector that is ``h_u(S) = 0``. Object ``u`` is *identifiable* when ``h_u(A) = 0`` (a twin
that shares every value with another object is not). Finding ``CIS(u)`` is set cover: attribute
``a`` covers ``D_a(u) = {v : x_a(v) != x_a(u)}``. ``exact=True`` searches subsets in increasing
size (lexicographic order inside a size, so the answer is deterministic; exponential in
``|CIS(u)|``, fine for 20 attributes); ``exact=False`` is greedy set cover (each step takes the
attribute that separates the most not-yet-separated objects, per unit cost when costs are given;
ties go to the earlier attribute), a ``(1 + ln N)``-approximation.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from visec.identity.encoding import EncodedPopulation, encode_population
from visec.identity.errors import IdentityError
from visec.identity.schema import Schema
from visec.utils import json_safe

_PAIRWISE_LIMIT = 200_000  # objects; the wildcard path with many missing-value patterns is O(N^2)


# ------------------------------------------------------------------------------------- helpers
def entropy_bits(p: np.ndarray) -> float:
    """Shannon entropy (bits) of a probability vector (zeros allowed; renormalised if needed)."""
    p = np.asarray(p, dtype=float)
    p = p[p > 0]
    if len(p) == 0:
        return 0.0
    p = p / p.sum()
    return float(max(0.0, -(p * np.log2(p)).sum()))


def _combine(gid: np.ndarray | None, col: np.ndarray) -> np.ndarray:
    """Group ids of (previous groups, next column); codes may be -1 (treated as a value)."""
    c = col.astype(np.int64) + 1
    if gid is None:
        return pd.factorize(c)[0].astype(np.int64)
    key = gid.astype(np.int64) * (int(c.max()) + 1) + c
    return pd.factorize(key)[0].astype(np.int64)


def group_ids(codes: np.ndarray) -> np.ndarray:
    """Dense group ids (0..G-1) of the rows of an ``N x k`` code matrix (``-1`` is its own value)."""
    N = codes.shape[0]
    gid = np.zeros(N, dtype=np.int64) if codes.shape[1] == 0 else None
    for j in range(codes.shape[1]):
        gid = _combine(gid, codes[:, j])
    return gid


def _compatible_counts(codes: np.ndarray) -> np.ndarray:
    """``|C_u(S)|`` for every object ``u`` under the wildcard rule (``codes``: N x |S|)."""
    N, k = codes.shape
    if k == 0:
        return np.full(N, N, dtype=np.int64)
    present = codes >= 0
    if present.all():
        gid = group_ids(codes)
        return np.bincount(gid)[gid]
    pat = pd.factorize(group_ids(present.astype(np.int64)))[0]
    n_pat = int(pat.max()) + 1
    counts = np.zeros(N, dtype=np.int64)
    if n_pat <= 24:  # group by missingness pattern pairs: exact and vectorised
        members = [np.nonzero(pat == p)[0] for p in range(n_pat)]
        masks = [present[m[0]] for m in members]
        for p in range(n_pat):
            rp = members[p]
            for q in range(n_pat):
                rq = members[q]
                common = np.nonzero(masks[p] & masks[q])[0]
                if len(common) == 0:
                    counts[rp] += len(rq)
                    continue
                g = group_ids(codes[np.concatenate([rp, rq])][:, common])
                cnt_q = np.bincount(g[len(rp):], minlength=int(g.max()) + 1)
                counts[rp] += cnt_q[g[: len(rp)]]
        return counts
    if N > _PAIRWISE_LIMIT:
        raise IdentityError(f"too many missing-value patterns for {N} objects (pairwise check limited to "
                            f"{_PAIRWISE_LIMIT})")
    block = max(1, 4_000_000 // max(N, 1))
    for start in range(0, N, block):
        sl = slice(start, min(N, start + block))
        ok = np.ones((sl.stop - sl.start, N), dtype=bool)
        for j in range(k):
            a = codes[sl, j][:, None]
            b = codes[:, j][None, :]
            ok &= (a == b) | (a < 0) | (b < 0)
        counts[sl] = ok.sum(axis=1)
    return counts


def _compatible_mask(enc: EncodedPopulation, i: int, cols: Sequence[int]) -> np.ndarray:
    ok = np.ones(enc.N, dtype=bool)
    for j in cols:
        x = enc.codes[i, j]
        if x < 0:
            continue
        col = enc.codes[:, j]
        ok &= (col == x) | (col < 0)
    return ok


# ------------------------------------------------------------------------------------- entropies
def identity_entropy(population: Any, prior: Sequence[float] | np.ndarray | None = None) -> float:
    """``H(ID)`` in bits: ``log2 N`` for the uniform prior, else the entropy of ``prior`` (length N)."""
    if isinstance(population, EncodedPopulation):
        N = population.N
    else:
        if not isinstance(population, pd.DataFrame):
            raise IdentityError(f"population must be a pandas DataFrame, got {type(population).__name__}")
        N = len(population)
    if N == 0:
        raise IdentityError("population is empty (no objects)")
    if prior is None:
        return float(math.log2(N))
    p = np.asarray(prior, dtype=float)
    if p.shape != (N,) or np.any(p < 0) or not np.isfinite(p).all() or p.sum() <= 0:
        raise IdentityError(f"prior must be {N} non-negative finite weights with a positive sum")
    return entropy_bits(p)


def joint_attribute_entropy(population: Any, attributes: Sequence[str] | str,
                            schema: Schema | None = None) -> float:
    """``H(A_S)``: entropy (bits) of the joint value distribution of ``attributes`` over the objects
    (a missing value counts as a value of its own)."""
    enc = encode_population(population, schema)
    cols = enc.positions(attributes)
    gid = group_ids(enc.codes[:, cols])
    return entropy_bits(np.bincount(gid).astype(float))


def attribute_entropies(population: Any, schema: Schema | None = None) -> pd.Series:
    """``H(A_a)`` for every attribute (its identification capacity on the whole population)."""
    enc = encode_population(population, schema)
    return pd.Series([joint_attribute_entropy(enc, [n]) for n in enc.names], index=enc.names, dtype=float)


def individual_conditional_entropies(population: Any, attributes: Sequence[str] | str | None = None,
                                     schema: Schema | None = None) -> np.ndarray:
    """``h_u(S)`` for every object ``u`` at once (bits, shape ``(N,)``); ``attributes=None`` is all."""
    enc = encode_population(population, schema)
    cols = enc.positions(attributes)
    return np.log2(_compatible_counts(enc.codes[:, cols]).astype(float))


def individual_conditional_entropy(population: Any, index: int, attributes: Sequence[str] | str | None,
                                   schema: Schema | None = None) -> float:
    """``h_u(S) = log2 |C_u(S)|`` for the object at row position ``index`` (bits)."""
    enc = encode_population(population, schema)
    i = enc.check_index(index)
    cols = enc.positions(attributes)
    return float(math.log2(int(_compatible_mask(enc, i, cols).sum())))


def conditional_identity_entropy(population: Any, attributes: Sequence[str] | str | None,
                                 schema: Schema | None = None) -> float:
    """``H(ID | A_S) = (1/N) sum_u h_u(S)`` in bits (``= log2 N - H(A_S)`` without missing values)."""
    enc = encode_population(population, schema)
    cols = enc.positions(attributes)
    codes = enc.codes[:, cols]
    if (codes >= 0).all():  # closed form through group sizes
        n = np.bincount(group_ids(codes)).astype(float)
        return float(max(0.0, (n * np.log2(n)).sum() / enc.N))
    return float(np.log2(_compatible_counts(codes).astype(float)).mean())


# ------------------------------------------------------------------------------------- core sets
@dataclass(frozen=True)
class CoreSet:
    """A core identification set of one object."""

    index: int
    object_id: Any
    attributes: tuple[str, ...]
    residual_entropy: float
    identifiable: bool
    method: str
    cost: float

    @property
    def size(self) -> int:
        return len(self.attributes)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "object_id": json_safe(self.object_id), "attributes": list(self.attributes),
                "size": self.size, "residual_entropy": self.residual_entropy,
                "identifiable": self.identifiable, "method": self.method, "cost": self.cost}


def _popcount(a: np.ndarray) -> np.ndarray:
    return np.bitwise_count(a).sum(axis=-1)


def _separation_bits(enc: EncodedPopulation, i: int, cols: Sequence[int]) -> np.ndarray:
    """Packed ``D_a(u)`` per attribute: shape ``(len(cols), W)`` uint64."""
    x = enc.codes[:, cols]
    xi = enc.codes[i, cols]
    D = (x != xi[None, :]) & (x >= 0) & (xi[None, :] >= 0)
    packed = np.packbits(D.T, axis=1)
    pad = (-packed.shape[1]) % 8
    if pad:
        packed = np.concatenate([packed, np.zeros((packed.shape[0], pad), np.uint8)], axis=1)
    return np.ascontiguousarray(packed).view(np.uint64)


def _resolve_costs(enc: EncodedPopulation, cols: Sequence[int],
                   costs: Mapping[str, float] | Sequence[float] | bool | None) -> np.ndarray | None:
    if costs is None or costs is False:
        return None
    if costs is True:
        return enc.costs[list(cols)].astype(float)
    if isinstance(costs, Mapping):
        out = np.array([float(costs.get(enc.names[j], enc.costs[j])) for j in cols])
    else:
        out = np.asarray(costs, dtype=float)
        if out.shape != (len(cols),):
            raise IdentityError(f"costs must have one value per attribute ({len(cols)}), got {out.shape}")
    if np.any(~(out > 0)):
        raise IdentityError("costs must be positive")
    return out


def _greedy_cover(bits: np.ndarray, target: np.ndarray, costs: np.ndarray | None) -> list[int]:
    covered = np.zeros_like(target)
    chosen: list[int] = []
    avail = np.ones(bits.shape[0], dtype=bool)
    while not np.array_equal(covered, target):
        gain = _popcount(bits & ~covered[None, :]).astype(float)
        score = gain / costs if costs is not None else gain
        score[~avail] = -1.0
        best = float(score.max())
        if best <= 0:  # cannot happen while covered != target; defensive
            break
        a = int(np.nonzero(score >= best * (1 - 1e-12))[0][0])
        chosen.append(a)
        avail[a] = False
        covered |= bits[a]
    return chosen


def _exact_cover(bits: np.ndarray, target: np.ndarray, upper: int, costs: np.ndarray | None,
                 chunk: int = 16384) -> list[int]:
    m = bits.shape[0]
    if not target.any():
        return []
    for k in range(1, min(upper, m) + 1):
        best: tuple[float, tuple[int, ...]] | None = None
        it = itertools.combinations(range(m), k)
        while True:
            block = list(itertools.islice(it, chunk))
            if not block:
                break
            combos = np.asarray(block, dtype=np.int64)
            union = np.bitwise_or.reduce(bits[combos], axis=1)
            valid = np.nonzero((union == target[None, :]).all(axis=1))[0]
            if len(valid) == 0:
                continue
            if costs is None:
                return list(block[int(valid[0])])
            tot = costs[combos[valid]].sum(axis=1)
            v = int(valid[int(np.argmin(tot))])
            if best is None or tot.min() < best[0] - 1e-12:
                best = (float(tot.min()), block[v])
        if best is not None:
            return list(best[1])
    raise AssertionError("exact cover search exceeded the greedy upper bound")  # pragma: no cover


def core_identification_set(population: Any, index: int, exact: bool = True, *,
                            attributes: Sequence[str] | None = None, schema: Schema | None = None,
                            costs: Mapping[str, float] | Sequence[float] | bool | None = None) -> CoreSet:
    """``CIS(u)`` of the object at row position ``index`` (see the module docstring).

    ``exact=True``: a minimum-cardinality valid set (among those, the cheapest when ``costs`` is
    given, then the lexicographically first). ``exact=False``: greedy set cover (per unit cost when
    ``costs`` is given). ``costs=True`` uses the schema's costs. ``attributes`` restricts the search.
    """
    enc = encode_population(population, schema)
    i = enc.check_index(index)
    cols = enc.positions(attributes)
    cost_arr = _resolve_costs(enc, cols, costs)
    bits = _separation_bits(enc, i, cols)
    useful = np.nonzero(bits.any(axis=1))[0]
    ub = bits[useful]
    target = np.bitwise_or.reduce(ub, axis=0) if len(useful) else np.zeros(bits.shape[1], np.uint64)
    uc = cost_arr[useful] if cost_arr is not None else None
    greedy = _greedy_cover(ub, target, uc)
    chosen = _exact_cover(ub, target, len(greedy), uc) if exact else greedy
    sel = [cols[int(useful[a])] for a in chosen]
    separated = int(_popcount(target))
    resid = float(math.log2(enc.N - separated))
    all_costs = cost_arr if cost_arr is not None else enc.costs[list(cols)]
    tot_cost = float(sum(all_costs[int(useful[a])] for a in chosen))
    return CoreSet(index=i, object_id=enc.ids[i], attributes=tuple(enc.names[j] for j in sel),
                   residual_entropy=resid, identifiable=resid == 0.0,
                   method="exact" if exact else "greedy", cost=tot_cost)


def _exact_all_objects(codes: np.ndarray, store_bytes: int = 200_000_000) -> list[tuple[int, ...]]:
    """Exact CIS of every object of a table without missing values, by enumerating subsets in
    increasing size once for the whole population (vectorised over objects)."""
    N, m = codes.shape
    full = group_ids(codes)
    t = np.bincount(full)[full]
    result: list[tuple[int, ...] | None] = [None] * N
    done = t == N
    for u in np.nonzero(done)[0]:
        result[u] = ()
    prev: dict[tuple[int, ...], np.ndarray] = {}
    for k in range(1, m + 1):
        if done.all():
            break
        store = k < m and math.comb(m, k) * N * 8 <= store_bytes
        cur: dict[tuple[int, ...], np.ndarray] = {}
        for combo in itertools.combinations(range(m), k):
            g_prev = prev.get(combo[:-1]) if k > 1 else None
            if g_prev is None and k > 1:
                g_prev = group_ids(codes[:, list(combo[:-1])])
            gid = _combine(g_prev, codes[:, combo[-1]])
            counts = np.bincount(gid)[gid]
            newly = ~done & (counts == t)
            if newly.any():
                for u in np.nonzero(newly)[0]:
                    result[u] = combo
                done |= newly
                if done.all():
                    break
            if store:
                cur[combo] = gid
        prev = cur
    return [r if r is not None else () for r in result]


def core_identification_sets(population: Any, exact: bool = True, *,
                             attributes: Sequence[str] | None = None,
                             schema: Schema | None = None) -> pd.DataFrame:
    """Core identification sets of all objects, one row per object (index = object ids).

    Columns: ``position``, ``size``, ``attributes`` (tuple of names), ``residual_entropy`` (bits),
    ``identifiable``, ``cost``. Without missing values the exact sets come from one subset
    enumeration over the whole population (vectorised over objects); otherwise, and for greedy,
    each object is solved with packed bitsets. Both give the same sets as
    :func:`core_identification_set`.
    """
    enc = encode_population(population, schema)
    cols = enc.positions(attributes)
    codes = enc.codes[:, cols]
    rows: list[dict[str, Any]] = []
    if exact and (codes >= 0).all():
        sets = _exact_all_objects(codes)
        resid = np.log2(_compatible_counts(codes).astype(float))
        for u, combo in enumerate(sets):
            sel = [cols[a] for a in combo]
            rows.append({"position": u, "size": len(sel), "attributes": tuple(enc.names[j] for j in sel),
                         "residual_entropy": float(resid[u]), "identifiable": bool(resid[u] == 0.0),
                         "cost": float(enc.costs[sel].sum())})
    else:
        for u in range(enc.N):
            cs = core_identification_set(enc, u, exact=exact, attributes=[enc.names[j] for j in cols])
            rows.append({"position": u, "size": cs.size, "attributes": cs.attributes,
                         "residual_entropy": cs.residual_entropy, "identifiable": cs.identifiable,
                         "cost": cs.cost})
    out = pd.DataFrame(rows, index=pd.Index(enc.ids, name="object_id"))
    return out


def population_core_set(population: Any, exact: bool = True, *, attributes: Sequence[str] | None = None,
                        schema: Schema | None = None) -> tuple[tuple[str, ...], float]:
    """A population-level core set (minimal key / rough-set reduct): a smallest ``S`` with
    ``H(ID | A_S) = H(ID | A)``; returns ``(attributes, H(ID | A_S))``. Greedy adds the attribute
    lowering ``H(ID | A_S)`` most (ties: earlier attribute)."""
    enc = encode_population(population, schema)
    cols = enc.positions(attributes)
    names = [enc.names[j] for j in cols]
    floor = conditional_identity_entropy(enc, names)

    def h(sel: Sequence[int]) -> float:
        return conditional_identity_entropy(enc, [names[a] for a in sel])

    tol = 1e-9
    if exact:
        for k in range(0, len(cols) + 1):
            for combo in itertools.combinations(range(len(cols)), k):
                val = h(combo)
                if val <= floor + tol:
                    return tuple(names[a] for a in combo), val
    chosen: list[int] = []
    val = h(chosen)
    while val > floor + tol:
        cand = [(h(chosen + [a]), a) for a in range(len(cols)) if a not in chosen]
        best = min(v for v, _ in cand)
        a = next(a for v, a in cand if v <= best + 1e-12)
        chosen.append(a)
        val = best
    return tuple(names[a] for a in chosen), val
