"""Run tracers over a query set: per-query outcomes, summary metrics, baselines, regimes.

Metrics (over all queries; numbers on simulated data are not comparable to the paper):

``top1_accuracy``
    mean over queries of the top-1 credit: ``1/k`` when the true object is among the ``k`` objects
    tied at the top of the final posterior, else 0 (whether or not the tracer decided).
``identification_accuracy``
    fraction of queries identified as the right object.
``false_identification_rate``
    fraction of queries identified as the **wrong** object (the trustworthiness number);
    ``false_identification_given_identified`` divides by the identified queries instead.
``rejection_rate``
    fraction not identified. ``identification_accuracy + false_identification_rate +
    rejection_rate = 1``.
``mean_attributes_used`` / ``mean_cost`` / ``mean_final_entropy``
    attributes queried (observed) per query, their cost, and the final identity entropy (bits).
``truth_lost_rate``
    fraction of queries whose final posterior gives the true object zero probability.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from visec.identity.encoding import encode_population
from visec.identity.entropy import core_identification_sets
from visec.identity.errors import IdentityError
from visec.identity.schema import Schema
from visec.identity.baselines import BASELINES, make_tracer
from visec.identity.results import Trace
from visec.identity.tracer import Tracer

DEFAULT_METHODS = ("tit",) + BASELINES


@dataclass
class Evaluation:
    """Outcomes of one method on one query set."""

    method: str
    outcomes: pd.DataFrame
    summary: dict[str, Any]
    traces: list[Trace] = field(default_factory=list)

    @property
    def curve(self) -> np.ndarray:
        """Mean identity entropy after each step (see :func:`entropy_curve`)."""
        return entropy_curve(self.traces)


def _same(a: Any, b: Any) -> bool:
    return a is not None and b is not None and str(a) == str(b)


def outcome_row(trace: Trace, query_id: Any = None, truth: Any = None) -> dict[str, Any]:
    t = trace.truth or {}
    truth = truth if truth is not None else t.get("truth_id")
    has_truth = truth is not None
    identified = trace.identified
    return {
        "query_id": query_id, "true_id": truth, "method": trace.method, "status": trace.status,
        "reason": trace.reason, "identity": trace.identity,
        "correct": bool(identified and _same(trace.identity, truth)) if has_truth else None,
        "false_identification": bool(identified and not _same(trace.identity, truth)) if has_truth else None,
        "top1_credit": t.get("top1_credit") if has_truth else None,
        "truth_probability": t.get("truth_probability") if has_truth else None,
        "truth_rank": t.get("truth_rank") if has_truth else None,
        "attributes_used": len(trace.steps), "cost": trace.cost_used,
        "final_entropy": trace.final_entropy, "top_probability": trace.top_probability,
        "n_candidates": trace.n_candidates, "attributes": "+".join(trace.attributes_used),
    }


def summarize(outcomes: pd.DataFrame) -> dict[str, Any]:
    """Summary metrics (see the module docstring) of an outcome table; JSON-serialisable."""
    n = len(outcomes)
    if n == 0:
        raise IdentityError("no queries to summarise")

    def mean(col: str) -> float | None:
        v = pd.to_numeric(outcomes[col], errors="coerce")
        return None if v.isna().all() else float(v.mean())

    identified = outcomes["status"] == "identified"
    out: dict[str, Any] = {"n_queries": n}
    has_truth = outcomes["true_id"].notna().all()
    if has_truth:
        correct = outcomes["correct"].astype(bool)
        wrong = outcomes["false_identification"].astype(bool)
        out["top1_accuracy"] = float(pd.to_numeric(outcomes["top1_credit"]).mean())
        out["identification_accuracy"] = float(correct.mean())
        out["false_identification_rate"] = float(wrong.mean())
        out["false_identification_given_identified"] = (float(wrong.sum() / identified.sum())
                                                        if identified.any() else None)
        out["truth_lost_rate"] = float((pd.to_numeric(outcomes["truth_probability"]) <= 0).mean())
    else:
        for k in ("top1_accuracy", "identification_accuracy", "false_identification_rate",
                  "false_identification_given_identified", "truth_lost_rate"):
            out[k] = None
    out["identified_rate"] = float(identified.mean())
    out["rejection_rate"] = float((~identified).mean())
    out["mean_attributes_used"] = mean("attributes_used")
    out["mean_cost"] = mean("cost")
    out["mean_final_entropy"] = mean("final_entropy")
    return out


def entropy_curve(traces: Sequence[Trace], steps: int | None = None) -> np.ndarray:
    """Mean identity entropy (bits) at step 0..``steps`` over traces; a finished trace keeps its
    final entropy (so the curve shows where the population of queries stands after t queries)."""
    if not traces:
        return np.zeros(0)
    longest = max(len(t.steps) for t in traces)
    steps = longest if steps is None else int(steps)
    mat = np.empty((len(traces), steps + 1))
    for i, t in enumerate(traces):
        e = t.entropies[: steps + 1]
        mat[i, : len(e)] = e
        mat[i, len(e):] = e[-1]
    return mat.mean(axis=0)


def evaluate(tracer: Tracer, queries: pd.DataFrame, *, truth_column: str = "true_id",
             keep_traces: bool = True) -> Evaluation:
    """Trace every query (rows of ``queries``; ``truth_column`` optional) and summarise."""
    if not isinstance(queries, pd.DataFrame):
        raise IdentityError(f"queries must be a pandas DataFrame, got {type(queries).__name__}")
    enc = tracer.enc
    codes = enc.encode_queries(queries)
    truths = queries[truth_column].to_numpy(dtype=object) if truth_column in queries.columns else [None] * len(queries)
    attr_cols = [c for c in queries.columns if c != truth_column]
    records = queries[attr_cols].to_dict("records")
    rows, traces = [], []
    for q, (qid, truth) in enumerate(zip(queries.index, truths)):
        raw = records[q]
        has_truth = truth is not None and not (isinstance(truth, float) and math.isnan(truth))
        tp = enc.position_of(truth) if has_truth else None
        tr = tracer.trace_codes(codes[q], raw=raw, truth_pos=tp, key=q)
        rows.append(outcome_row(tr, qid, truth if has_truth else None))
        if keep_traces:
            traces.append(tr)
    outcomes = pd.DataFrame(rows)
    return Evaluation(method=tracer.name, outcomes=outcomes, summary=summarize(outcomes), traces=traces)


def run_baselines(population: Any, queries: pd.DataFrame, schema: Schema | None = None, *,
                  methods: Iterable[str] = DEFAULT_METHODS, mode: str = "noisy",
                  epsilon: float | None = None, tau: float | None = None, face_attribute: str = "face_id",
                  seed: int = 0, keep_traces: bool = True) -> dict[str, Evaluation]:
    """TIT and its baselines on the same queries: ``{method: Evaluation}`` (summary has ``seconds``).

    ``face_only`` is skipped (with a note in no result) when the population has no ``face_attribute``.
    """
    enc = encode_population(population, schema)
    out: dict[str, Evaluation] = {}
    for m in methods:
        if m == "face_only" and face_attribute not in enc.names:
            continue
        t0 = time.perf_counter()
        tr = make_tracer(m, enc, mode=mode, epsilon=epsilon, tau=tau, seed=seed, face_attribute=face_attribute)
        ev = evaluate(tr, queries, keep_traces=keep_traces)
        ev.summary["seconds"] = time.perf_counter() - t0
        out[m] = ev
    return out


def summary_table(evaluations: Mapping[str, Evaluation]) -> pd.DataFrame:
    """One row per method with the summary metrics."""
    return pd.DataFrame({m: e.summary for m, e in evaluations.items()}).T


def core_set_summary(population: Any, schema: Schema | None = None,
                     attributes: Sequence[str] | None = None) -> dict[str, Any]:
    """Exact versus greedy core identification sets over all objects (crisp model)."""
    enc = encode_population(population, schema)
    t0 = time.perf_counter()
    ex = core_identification_sets(enc, exact=True, attributes=attributes)
    t1 = time.perf_counter()
    gr = core_identification_sets(enc, exact=False, attributes=attributes)
    t2 = time.perf_counter()
    ratio = gr["size"] / ex["size"].where(ex["size"] > 0)
    return {"objects": enc.N, "identifiable_rate": float(ex["identifiable"].mean()),
            "mean_exact_size": float(ex["size"].mean()), "max_exact_size": int(ex["size"].max()),
            "mean_greedy_size": float(gr["size"].mean()), "max_greedy_size": int(gr["size"].max()),
            "mean_greedy_over_exact": None if ratio.isna().all() else float(ratio.mean()),
            "greedy_larger_rate": float((gr["size"] > ex["size"]).mean()),
            "seconds_exact": t1 - t0, "seconds_greedy": t2 - t1}


def run_regimes(objects: int = 1000, attributes: int = 20, seed: int = 0, n_queries: int | None = None, *,
                regimes: Iterable[str] = ("clean", "realistic", "harsh"),
                methods: Iterable[str] = DEFAULT_METHODS, epsilon: float | None = None,
                tau: float | None = None, keep_traces: bool = True) -> dict[str, dict[str, Evaluation]]:
    """Simulate each regime (same population) and run TIT plus baselines: ``{regime: {method: ...}}``."""
    from visec.identity.simulate import simulate

    methods = tuple(methods)
    out: dict[str, dict[str, Evaluation]] = {}
    for regime in regimes:
        sim = simulate(objects, attributes, seed, regime, n_queries)
        out[regime] = run_baselines(sim.population, sim.queries, sim.schema, methods=methods,
                                    epsilon=epsilon, tau=tau, seed=seed, keep_traces=keep_traces)
    return out
