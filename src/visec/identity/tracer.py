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

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from visec.identity.encoding import MISSING, ConfusionModel, EncodedPopulation, encode_population
from visec.identity.entropy import attribute_entropies, core_identification_set
from visec.identity.errors import IdentityError
from visec.identity.posterior import TIE, Posterior
from visec.identity.results import Explanation, Trace, TraceStep
from visec.identity.schema import Schema
from visec.utils import json_safe

MODES = ("crisp", "noisy")
POLICIES = ("eig", "fixed", "random", "all")
DECISIONS = ("threshold", "argmax")


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

    def _stop_ok(self, st: Posterior) -> bool:
        if st.n == 0:
            return False
        _, pm, ties = st.top()
        if self.decision == "argmax":
            return ties == 1
        return st.H <= self.epsilon + 1e-12 and pm >= self.tau - 1e-12

    def _column(self, st: Posterior, j: int) -> np.ndarray:
        """Codes of attribute ``j`` over the current support (a view while nothing is eliminated)."""
        return self.enc.codes[:, j] if st.n == self.enc.N else self.enc.codes[st.idx, j]

    def _score(self, st: Posterior, j: int) -> tuple[float, float]:
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
        st = Posterior(enc.N, self.mode == "crisp")
        H0 = st.H
        steps: list[TraceStep] = []
        skipped: list[str] = []
        reason = "exhausted"
        raw = raw or {}

        def record(j: int, g: float, sc: float, hb: float) -> None:
            tp, pm, _ = st.top()
            v = raw.get(enc.names[j], enc.value_label(j, int(obs[j])))
            steps.append(TraceStep(step=len(steps) + 1, attribute=enc.names[j],
                                   value=json_safe(v, nan_as_none=True),
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
                    g, s, j = next(t for t in ranked if t[1] >= top - TIE)
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
                is_top = pt >= top_p * (1 - TIE)
                _, _, ties = st.top()
                credit = 1.0 / ties if is_top else 0.0
                if st.crisp:
                    rank = 1
                else:
                    rank = int((st.p > pt * (1 + TIE)).sum()) + 1
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
