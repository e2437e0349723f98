"""What a TIT tracing run returns: the :class:`Trace` of one query (its :class:`TraceStep` s) and
the :class:`Explanation` of one object. Plain records: to_dict (JSON-safe) and a text table."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

from visec.utils import json_safe

# an id or attribute value as plain JSON (numpy scalars unwrapped, NaN = missing = None)
_plain = partial(json_safe, nan_as_none=True)


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
