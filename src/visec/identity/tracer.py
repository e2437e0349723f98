"""TIT tracer: query identity attributes one at a time until the identity entropy converges.

Algorithm (reconstructed TITF, see the module docs of :mod:`visec.identity`):

1. Start from the uniform posterior over the population, ``H_0 = log2 N``.
2. Score every attribute that is not used yet and not known to be missing by its expected
   information gain ``EIG(a) = H_t - sum_o P_t(o) H(p_t(. | o))`` (per unit cost with
   ``use_cost=True``). In crisp mode this is the entropy of ``a``'s value distribution over the
   candidates (with missing population values, see below).
3. Take the best attribute (ties: the earlier attribute in schema order). If its score is
   ``<= min_gain`` no remaining attribute can change the posterior: stop, reason ``no_gain``.
4. Query it. A missing query value marks it unobtainable (listed under ``skipped``): back to 3.
5. Update the posterior (crisp: keep the matching candidates; noisy: multiply by ``L(o | u)``)
   and record a :class:`TraceStep`.
6. Stop **identified** when ``H <= epsilon`` and ``max_u p(u) >= tau``; stop **not identified**
   when no attribute is left (``exhausted``), when an observation contradicts every candidate
   (``contradiction``: only possible with reliability 1; the step is recorded with the posterior
   left unchanged) or after ``max_steps``. The trace keeps
   the ranked candidates, so a rejection is an honest "cannot decide" with the remaining options.

**Modes.** ``crisp``: exact matching, posterior uniform on the candidate set, ``H = log2 |C|``;
defaults ``epsilon = 0``, ``tau = 1``. ``noisy``: the per-attribute confusion model of
:mod:`visec.identity.encoding`; defaults ``epsilon = 0.05`` bits, ``tau = 0.95``. With every
reliability equal to 1 the noisy mode reproduces the crisp mode (tested).

**Missing values.** A missing *query* value means the attribute is unobtainable (skipped). A
missing *population* value is "unknown": the object matches any observation (likelihood ``r_a``;
``1`` in crisp mode). For the expected gain, the outcome distribution is predicted from the
objects whose value is known (the unknown ones are assumed to follow the same distribution).

**Policies** (the baselines use the same posterior machinery): ``eig`` (the TIT tracer), ``fixed``
(a given order, default most-unique-first: decreasing ``H(A_a)`` on the population), ``random``
(a seeded permutation per query), ``all`` (naive Bayes over every available attribute, decision
at the end). **Decisions**: ``threshold`` (the epsilon/tau rule above) or ``argmax`` (identify the
top candidate whenever it is unique: a classic recogniser without a reject threshold).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from visec.identity.encoding import MISSING, ConfusionModel, EncodedPopulation, encode_population
from visec.identity.entropy import attribute_entropies, core_identification_set
from visec.identity.errors import IdentityError
from visec.identity.schema import Schema

MODES = ("crisp", "noisy")
POLICIES = ("eig", "fixed", "random", "all")
DECISIONS = ("threshold", "argmax")
_TIE = 1e-9


# ---------------------------------------------------------------------------------- trace records
def _plain(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, (np.generic,)):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


@dataclass
class TraceStep:
    """One queried attribute: what was observed and what it did to the identity entropy."""

    step: int
    attribute: str
    value: Any
    value_label: Any
    expected_gain: float
    score: float
    entropy_before: float
    entropy_after: float
    candidates_left: int
    top_candidate: Any
    top_probability: float
    cost: float

    @property
    def gain(self) -> float:
        """Realised entropy reduction (may be negative in noisy mode after a contradictory value)."""
        return self.entropy_before - self.entropy_after

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "attribute": self.attribute, "value": _plain(self.value),
                "value_label": _plain(self.value_label), "expected_gain": self.expected_gain,
                "score": self.score, "entropy_before": self.entropy_before,
                "entropy_after": self.entropy_after, "gain": self.gain,
                "candidates_left": self.candidates_left, "top_candidate": _plain(self.top_candidate),
                "top_probability": self.top_probability, "cost": self.cost}


@dataclass
class Trace:
    """The interpretable output of one tracing run."""

    status: str  # "identified" | "not_identified"
    reason: str  # identified | exhausted | no_gain | contradiction | max_steps | undecided
    identity: Any
    mode: str
    policy: str
    method: str
    epsilon: float
    tau: float
    initial_entropy: float
    final_entropy: float
    top_probability: float
    n_candidates: int
    candidates: list[tuple[Any, float]]
    steps: list[TraceStep] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    truth: dict[str, Any] | None = None
    decision: str = "threshold"

    @property
    def identified(self) -> bool:
        return self.status == "identified"

    @property
    def attributes_used(self) -> list[str]:
        return [s.attribute for s in self.steps]

    @property
    def cost_used(self) -> float:
        return float(sum(s.cost for s in self.steps))

    @property
    def entropies(self) -> list[float]:
        """Identity entropy before the first step and after every step."""
        return [self.initial_entropy] + [s.entropy_after for s in self.steps]

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason, "identity": _plain(self.identity),
                "mode": self.mode, "policy": self.policy, "method": self.method,
                "decision": self.decision, "epsilon": self.epsilon, "tau": self.tau, "initial_entropy": self.initial_entropy,
                "final_entropy": self.final_entropy, "top_probability": self.top_probability,
                "n_candidates": self.n_candidates, "attributes_used": self.attributes_used,
                "cost_used": self.cost_used,
                "candidates": [[_plain(c), float(p)] for c, p in self.candidates],
                "steps": [s.to_dict() for s in self.steps], "skipped": list(self.skipped),
                "truth": None if self.truth is None else {k: _plain(v) for k, v in self.truth.items()}}

    def format(self, max_candidates: int = 5) -> str:
        """A plain-text table of the tracing process (the interpretable explanation)."""
        rule = (f"epsilon={self.epsilon:g}, tau={self.tau:g}" if self.decision == "threshold"
                else "decision=argmax (unique top candidate, no threshold)")
        head = f"TIT trace [{self.method}: mode={self.mode}, policy={self.policy}, {rule}]"
        if self.identified:
            verdict = (f"IDENTIFIED {_plain(self.identity)} (p={self.top_probability:.4f}, "
                       f"H={self.final_entropy:.4f} bits)")
        else:
            verdict = (f"NOT IDENTIFIED ({self.reason}); H={self.final_entropy:.4f} bits, "
                       f"{self.n_candidates} candidate(s) left")
        lines = [head, f"{verdict} after {len(self.steps)} attribute(s), cost {self.cost_used:g}",
                 f"start: H={self.initial_entropy:.4f} bits"]
        rows = [("#", "attribute", "value", "E[gain]", "H before", "H after", "gain", "cands", "top (p)")]
        for s in self.steps:
            val = str(_plain(s.value))
            if s.value_label is not None and str(s.value_label) != val:
                val = f"{val} -> {s.value_label}"
            rows.append((str(s.step), s.attribute, val[:28], f"{s.expected_gain:.3f}",
                         f"{s.entropy_before:.3f}", f"{s.entropy_after:.3f}", f"{s.gain:+.3f}",
                         str(s.candidates_left), f"{_plain(s.top_candidate)} ({s.top_probability:.3f})"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if self.skipped:
            lines.append("skipped (not observed): " + ", ".join(self.skipped))
        if self.candidates:
            cands = ", ".join(f"{_plain(c)} ({p:.4f})" for c, p in self.candidates[:max_candidates])
            more = f" (+{self.n_candidates - max_candidates} more)" if self.n_candidates > max_candidates else ""
            lines.append(f"candidates: {cands}{more}")
        if self.truth is not None:
            lines.append(f"truth: {_plain(self.truth.get('truth_id'))} "
                         f"p={self.truth.get('truth_probability', 0.0):.4f} rank={self.truth.get('truth_rank')}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


# ---------------------------------------------------------------------------------- gains
def crisp_gain(x: np.ndarray, may_miss: bool = True) -> float:
    """Expected entropy reduction (bits) of observing an attribute whose codes over the current
    candidates are ``x`` (uniform posterior; ``-1`` = unknown value, matches everything).
    ``may_miss=False`` promises there is no ``-1`` (skips a pass)."""
    n = len(x)
    if n <= 1:
        return 0.0
    present = x[x >= 0] if may_miss else x
    n_p = len(present)
    if n_p == 0:
        return 0.0
    n_miss = n - n_p
    counts = np.unique(present, return_counts=True)[1] if n_p * 4 < int(present.max()) else np.bincount(present)
    counts = counts[counts > 0].astype(float)
    eh = float((counts * np.log2(counts + n_miss)).sum() / n_p)
    return max(0.0, math.log2(n) - eh)


def noisy_gain(x: np.ndarray, p: np.ndarray, plogp: np.ndarray, H: float, model: ConfusionModel) -> float:
    """Expected information gain (bits) of one attribute under the confusion ``model``, for a
    posterior ``p`` over objects whose codes are ``x`` (``plogp = p * log2 p``, ``H`` its entropy).
    Vectorised over the ``K + 1`` outcomes through the sparse model (see encoding)."""
    pres = x >= 0
    if pres.all():
        xp, pp, sp, mm, sm = x, p, plogp, 0.0, 0.0
    else:
        xp, pp, sp = x[pres], p[pres], plogp[pres]
        mm, sm = float(p[~pres].sum()), float(plogp[~pres].sum())
    Mp = float(pp.sum())
    if Mp <= 0.0:
        return 0.0
    K, c, r = model.K, model.c, model.r
    m = np.bincount(xp, weights=pp, minlength=K)
    s = np.bincount(xp, weights=sp, minlength=K)
    keep = m[model.cols] > 0
    rows, cols, vals = model.rows[keep], model.cols[keep], model.vals[keep]
    mc, sc = m[cols], s[cols]
    if c > 0:
        lc = math.log2(c)
        Sp = float(sp.sum())
        Zb, Wb = c * Mp, c * (Sp + Mp * lc)
        dZ = (vals - c) * mc
        dW = vals * (sc + mc * np.log2(vals)) - c * (sc + mc * lc)
    else:
        Zb = Wb = 0.0
        pos = vals > 0
        dZ = vals * mc
        dW = np.where(pos, vals * (sc + mc * np.log2(np.where(pos, vals, 1.0))), 0.0)
    Zp = Zb + np.bincount(rows, weights=dZ, minlength=K + 1)
    Wp = Wb + np.bincount(rows, weights=dW, minlength=K + 1)
    if mm > 0:
        Z = Zp + r * mm
        W = Wp + r * (sm + mm * math.log2(r))
    else:
        Z, W = Zp, Wp
    weight = Zp / Mp
    ok = (weight > 0) & (Z > 0)
    Ho = np.log2(Z[ok]) - W[ok] / Z[ok]
    return float(H - (weight[ok] * Ho).sum())


# ---------------------------------------------------------------------------------- posterior state
class _State:
    """Support (positions with p > 0, ascending) and, in noisy mode, their probabilities."""

    def __init__(self, N: int, crisp: bool) -> None:
        self.crisp = crisp
        self.fresh = True  # no observation applied yet
        self.idx = np.arange(N, dtype=np.int64)
        self.p: np.ndarray | None = None if crisp else np.full(N, 1.0 / N)
        self._refresh()

    def _refresh(self) -> None:
        if self.crisp:
            self.plogp = None
            self.H = math.log2(len(self.idx)) if len(self.idx) else 0.0
        else:
            self.plogp = self.p * np.log2(self.p)
            self.H = float(max(0.0, -self.plogp.sum()))

    @property
    def n(self) -> int:
        return len(self.idx)

    def top(self) -> tuple[int, float, int]:
        """(position of the top candidate, its probability, number tied at the top)."""
        if self.n == 0:
            return -1, 0.0, 0
        if self.crisp:
            return int(self.idx[0]), 1.0 / self.n, self.n
        a = int(np.argmax(self.p))
        pm = float(self.p[a])
        ties = int((self.p >= pm * (1 - _TIE)).sum())
        return int(self.idx[a]), pm, ties

    def gain(self, x: np.ndarray, model: Callable[[], ConfusionModel], may_miss: bool = True) -> float:
        if self.crisp:
            return crisp_gain(x, may_miss)
        return noisy_gain(x, self.p, self.plogp, self.H, model())

    def update(self, x: np.ndarray, o: int, model: Callable[[], ConfusionModel]) -> bool:
        """Apply observation code ``o`` given the support's codes ``x``; False on contradiction."""
        self.fresh = False
        if self.crisp:
            keep = (x == o) | (x < 0)
            if not keep.any():
                return False
            self.idx = self.idx[keep]
        else:
            mdl = model()
            lik = np.where(x >= 0, mdl.likelihood_row(o)[np.maximum(x, 0)], mdl.r)
            q = self.p * lik
            z = float(q.sum())
            if not z > 0:
                return False
            q /= z
            keep = q > 0
            if not keep.all():
                self.idx, q = self.idx[keep], q[keep]
            self.p = q
        self._refresh()
        return True

    def prob_of(self, pos: int) -> float:
        k = int(np.searchsorted(self.idx, pos))
        if k >= self.n or self.idx[k] != pos:
            return 0.0
        return 1.0 / self.n if self.crisp else float(self.p[k])

    def ranked(self, k: int) -> list[tuple[int, float]]:
        n = self.n
        if n == 0 or k <= 0:
            return []
        if self.crisp:
            return [(int(i), 1.0 / n) for i in self.idx[:k]]
        p = self.p
        if n > k:
            kth = np.partition(p, n - k)[n - k]
            cand = np.nonzero(p >= kth)[0]
        else:
            cand = np.arange(n)
        order = cand[np.lexsort((self.idx[cand], -p[cand]))][:k]
        return [(int(self.idx[i]), float(p[i])) for i in order]


# ---------------------------------------------------------------------------------- tracer
class Tracer:
    """Multi-attribute identity tracer over a population (see the module docstring).

    ``trace(observation)`` takes a mapping / Series attribute -> observed value (missing: absent,
    ``None``, NaN or ``""``) and returns a :class:`Trace`.
    """

    def __init__(self, population: pd.DataFrame | EncodedPopulation, schema: Schema | None = None, *,
                 mode: str = "noisy", policy: str = "eig", epsilon: float | None = None,
                 tau: float | None = None, use_cost: bool = False,
                 attributes: Sequence[str] | None = None, order: Sequence[str] | None = None,
                 decision: str = "threshold", min_gain: float = 1e-9, max_steps: int | None = None,
                 seed: int = 0, top_k: int = 10, name: str | None = None) -> None:
        if mode not in MODES:
            raise IdentityError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if policy not in POLICIES:
            raise IdentityError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        if decision not in DECISIONS:
            raise IdentityError(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
        self.enc = encode_population(population, schema)
        self.mode, self.policy, self.decision = mode, policy, decision
        crisp = mode == "crisp"
        self.epsilon = float(epsilon if epsilon is not None else (0.0 if crisp else 0.05))
        self.tau = float(tau if tau is not None else (1.0 if crisp else 0.95))
        if self.epsilon < 0 or not 0.0 <= self.tau <= 1.0:
            raise IdentityError("epsilon must be >= 0 and tau in [0, 1]")
        self.use_cost = bool(use_cost)
        self.min_gain = float(min_gain)
        if max_steps is not None and max_steps < 0:
            raise IdentityError("max_steps must be >= 0")
        self.max_steps = max_steps
        self.seed = int(seed)
        self.top_k = int(top_k)
        self.cols = self.enc.positions(attributes)
        if order is not None:
            self.order = self.enc.positions(order)
            extra = [self.enc.names[j] for j in self.order if j not in self.cols]
            if extra:
                raise IdentityError(f"order names attributes outside the allowed set: {', '.join(extra)}")
        elif policy == "fixed":
            ent = attribute_entropies(self.enc)
            self.order = sorted(self.cols, key=lambda j: (-round(float(ent.iloc[j]), 12), j))
        else:
            self.order = list(self.cols)
        self.name = name or f"tit-{policy}-{mode}"
        self._initial: dict[int, tuple[float, float]] = {}  # scores at the (query-independent) start

    # --------------------------------------------------------------------------------------
    def _model(self, j: int) -> Callable[[], ConfusionModel]:
        return lambda: self.enc.model(j)

    def _stop_ok(self, st: _State) -> bool:
        if st.n == 0:
            return False
        _, pm, ties = st.top()
        if self.decision == "argmax":
            return ties == 1
        return st.H <= self.epsilon + 1e-12 and pm >= self.tau - 1e-12

    def _column(self, st: _State, j: int) -> np.ndarray:
        """Codes of attribute ``j`` over the current support (a view while nothing is eliminated)."""
        return self.enc.codes[:, j] if st.n == self.enc.N else self.enc.codes[st.idx, j]

    def _score(self, st: _State, j: int) -> tuple[float, float]:
        fresh = st.n == self.enc.N and st.fresh  # the uniform start: same for every query
        if fresh and j in self._initial:
            return self._initial[j]
        g = st.gain(self._column(st, j), self._model(j), bool(self.enc.has_missing[j]))
        out = (g, g / self.enc.costs[j] if self.use_cost else g)
        if fresh:
            self._initial[j] = out
        return out

    def _sequence(self, obs: np.ndarray, key: int) -> list[int]:
        if self.policy == "random":
            rng = np.random.default_rng([self.seed, int(key)])
            return [self.cols[i] for i in rng.permutation(len(self.cols))]
        return list(self.order)

    def trace(self, observation: Mapping[str, Any] | pd.Series | None, *, truth: Any = None,
              key: int = 0) -> Trace:
        """Trace one observation record. ``truth`` (an object id) adds truth diagnostics;
        ``key`` seeds the random policy."""
        obs = self.enc.encode_observation(observation)
        raw = dict(observation.items()) if observation is not None else {}
        truth_pos = self.enc.position_of(truth) if truth is not None else None
        return self.trace_codes(obs, raw=raw, truth_pos=truth_pos, key=key)

    def trace_object(self, index: int) -> Trace:
        """Offline variant: trace the object at row ``index`` from its own population values."""
        i = self.enc.check_index(index)
        row = {n: self.enc.frame[n].iloc[i] for n in self.enc.names}
        return self.trace_codes(self.enc.codes[i].copy(), raw=row, truth_pos=i)

    def trace_codes(self, obs: np.ndarray, *, raw: Mapping[str, Any] | None = None,
                    truth_pos: int | None = None, key: int = 0) -> Trace:
        enc = self.enc
        st = _State(enc.N, self.mode == "crisp")
        H0 = st.H
        steps: list[TraceStep] = []
        skipped: list[str] = []
        reason = "exhausted"
        raw = raw or {}

        def record(j: int, g: float, sc: float, hb: float) -> None:
            tp, pm, _ = st.top()
            v = raw.get(enc.names[j], enc.value_label(j, int(obs[j])))
            steps.append(TraceStep(step=len(steps) + 1, attribute=enc.names[j], value=_plain(v),
                                   value_label=enc.value_label(j, int(obs[j])), expected_gain=float(g),
                                   score=float(sc), entropy_before=hb, entropy_after=st.H,
                                   candidates_left=st.n, top_candidate=enc.ids[tp] if tp >= 0 else None,
                                   top_probability=pm, cost=float(enc.costs[j])))

        if self.policy != "all" and self.decision == "threshold" and self._stop_ok(st):
            reason = "identified"
        elif self.policy == "eig":
            remaining = list(self.cols)
            while remaining:
                if self.max_steps is not None and len(steps) >= self.max_steps:
                    reason = "max_steps"
                    break
                scored = [(self._score(st, j), j) for j in remaining]
                best = max(s for (_, s), _ in scored)
                if best <= self.min_gain:
                    reason = "no_gain"
                    break
                ranked = [(g, s, j) for (g, s), j in scored]
                chosen = None
                while ranked:  # best first; missing ones are skipped without rescoring
                    top = max(s for _, s, _ in ranked)
                    if top <= self.min_gain:
                        break
                    g, s, j = next(t for t in ranked if t[1] >= top - _TIE)
                    ranked.remove((g, s, j))
                    remaining.remove(j)
                    if obs[j] == MISSING:
                        skipped.append(enc.names[j])
                        continue
                    chosen = (g, s, j)
                    break
                if chosen is None:
                    reason = "no_gain" if remaining else "exhausted"
                    break
                g, s, j = chosen
                hb = st.H
                if not st.update(self._column(st, j), int(obs[j]), self._model(j)):
                    reason = "contradiction"
                    record(j, g, s, hb)  # queried (and paid for), posterior left unchanged
                    break
                record(j, g, s, hb)
                if self._stop_ok(st):
                    reason = "identified"
                    break
        else:
            seq = self._sequence(obs, key)
            for j in seq:
                if self.max_steps is not None and len(steps) >= self.max_steps:
                    reason = "max_steps"
                    break
                if obs[j] == MISSING:
                    skipped.append(enc.names[j])
                    continue
                g, s = self._score(st, j)
                hb = st.H
                if not st.update(self._column(st, j), int(obs[j]), self._model(j)):
                    reason = "contradiction"
                    record(j, g, s, hb)
                    break
                record(j, g, s, hb)
                if self.policy != "all" and self._stop_ok(st):
                    reason = "identified"
                    break
            if self.policy == "all" and reason != "contradiction":
                reason = "identified" if (steps and self._stop_ok(st)) else "undecided"
        if reason == "max_steps" and self._stop_ok(st):
            reason = "identified"
        tp, pm, _ = st.top()
        identified = reason == "identified" and st.n > 0 and (self.decision == "threshold" or steps)
        if not identified and reason == "identified":
            reason = "undecided"
        cands = [(enc.ids[i], p) for i, p in st.ranked(self.top_k)]
        truth = None
        if truth_pos is not None:
            pt = st.prob_of(truth_pos)
            if st.n and pt > 0:
                top_p = pm
                is_top = pt >= top_p * (1 - _TIE)
                _, _, ties = st.top()
                credit = 1.0 / ties if is_top else 0.0
                if st.crisp:
                    rank = 1
                else:
                    rank = int((st.p > pt * (1 + _TIE)).sum()) + 1
            else:
                credit, rank = 0.0, None
            truth = {"truth_id": enc.ids[truth_pos], "truth_probability": pt, "truth_rank": rank,
                     "top1_credit": credit}
        return Trace(status="identified" if identified else "not_identified", reason=reason,
                     identity=enc.ids[tp] if identified else None, mode=self.mode, policy=self.policy,
                     method=self.name, epsilon=self.epsilon, tau=self.tau, initial_entropy=H0,
                     final_entropy=st.H, top_probability=pm, n_candidates=st.n, candidates=cands,
                     steps=steps, skipped=skipped, truth=truth, decision=self.decision)


def trace(population: pd.DataFrame | EncodedPopulation, observation: Mapping[str, Any] | pd.Series,
          schema: Schema | None = None, **kwargs: Any) -> Trace:
    """One-shot :class:`Tracer` (``kwargs`` go to the constructor, except ``truth``)."""
    truth = kwargs.pop("truth", None)
    return Tracer(population, schema, **kwargs).trace(observation, truth=truth)


# ---------------------------------------------------------------------------------- baselines
def _tit(pop: Any, schema: Schema | None, **kw: Any) -> Tracer:
    return Tracer(pop, schema, policy="eig", name=kw.pop("name", "tit"), **kw)


def _tit_cost(pop: Any, schema: Schema | None, **kw: Any) -> Tracer:
    return Tracer(pop, schema, policy="eig", use_cost=True, name=kw.pop("name", "tit_cost"), **kw)


def _face_only(pop: Any, schema: Schema | None, *, face_attribute: str = "face_id", **kw: Any) -> Tracer:
    kw.pop("epsilon", None)
    kw.pop("tau", None)
    return Tracer(pop, schema, policy="fixed", attributes=[face_attribute], order=[face_attribute],
                  decision="argmax", name=kw.pop("name", "face_only"), **kw)


def _random_order(pop: Any, schema: Schema | None, **kw: Any) -> Tracer:
    return Tracer(pop, schema, policy="random", name=kw.pop("name", "random_order"), **kw)


def _most_unique_first(pop: Any, schema: Schema | None, **kw: Any) -> Tracer:
    return Tracer(pop, schema, policy="fixed", name=kw.pop("name", "most_unique_first"), **kw)


def _naive_bayes_all(pop: Any, schema: Schema | None, **kw: Any) -> Tracer:
    return Tracer(pop, schema, policy="all", name=kw.pop("name", "naive_bayes_all"), **kw)


#: method name -> factory ``(population, schema, **tracer_kwargs) -> Tracer``
METHODS: dict[str, Callable[..., Tracer]] = {
    "tit": _tit,
    "tit_cost": _tit_cost,
    "face_only": _face_only,
    "random_order": _random_order,
    "most_unique_first": _most_unique_first,
    "naive_bayes_all": _naive_bayes_all,
}
BASELINES = ("face_only", "random_order", "most_unique_first", "naive_bayes_all")


def make_tracer(method: str, population: Any, schema: Schema | None = None, **kwargs: Any) -> Tracer:
    """Build the tracer of a named method (``tit``, ``tit_cost`` or one of :data:`BASELINES`)."""
    try:
        factory = METHODS[method]
    except KeyError:
        raise IdentityError(f"unknown TIT method '{method}'; known: {', '.join(METHODS)}") from None
    if method != "face_only":
        kwargs.pop("face_attribute", None)
    return factory(population, schema, **kwargs)


# ---------------------------------------------------------------------------------- explanation
@dataclass
class Explanation:
    """Why an object is identifiable: its exact and greedy core sets and its crisp trace."""

    object_id: Any
    index: int
    exact: Any
    greedy: Any
    trace: Trace

    def to_dict(self) -> dict[str, Any]:
        return {"object_id": _plain(self.object_id), "index": self.index,
                "core_set_exact": self.exact.to_dict(), "core_set_greedy": self.greedy.to_dict(),
                "trace": self.trace.to_dict()}

    def format(self) -> str:
        lines = [f"object {_plain(self.object_id)} (row {self.index})",
                 f"core identification set (exact, {self.exact.size}): {', '.join(self.exact.attributes) or '-'}"
                 f"  residual H={self.exact.residual_entropy:.4f} bits"
                 + ("" if self.exact.identifiable else "  [not identifiable: shares all values]"),
                 f"core identification set (greedy, {self.greedy.size}): {', '.join(self.greedy.attributes) or '-'}",
                 self.trace.format()]
        return "\n".join(lines)


def explain(population: pd.DataFrame | EncodedPopulation, object_id: Any = None, *, index: int | None = None,
            schema: Schema | None = None, mode: str = "crisp") -> Explanation:
    """Core identification sets (exact and greedy) of one object plus the trace of its own values."""
    enc = encode_population(population, schema)
    if (object_id is None) == (index is None):
        raise IdentityError("give exactly one of object_id or index")
    i = enc.position_of(object_id) if object_id is not None else enc.check_index(index)
    exact = core_identification_set(enc, i, exact=True)
    greedy = core_identification_set(enc, i, exact=False)
    tr = Tracer(enc, mode=mode, name="tit").trace_object(i)
    return Explanation(object_id=enc.ids[i], index=i, exact=exact, greedy=greedy, trace=tr)
