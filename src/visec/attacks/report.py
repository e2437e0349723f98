"""What a robust evaluation returns: per-attack outcomes, the worst case, Wilson intervals, and the
:class:`RobustReport` that becomes a result card."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import torch

from visec.metrics.multiclass import wilson_interval  # noqa: F401  (re-exported)


def worst_case(clean_correct: torch.Tensor, successes: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Per-sample robustness over attacks: clean-correct and broken by none of them."""
    robust = clean_correct.bool().clone()
    for s in successes.values():
        robust &= ~s.bool()
    return robust


@dataclass
class AttackOutcome:
    """One attack's per-sample results (``N`` samples; samples not attacked: no success, norm 0)."""

    name: str
    success: torch.Tensor
    linf: torch.Tensor
    l2: torch.Tensor
    seconds: float = 0.0
    attack: str = ""  # the registered attack name (e.g. "pgd" for the entry "pgd20")
    access: str = "white-box"
    norm: str = "Linf"
    eps: float = 0.0
    steps: int | None = None
    alpha: float | None = None  # step size, where the attack has one
    loss: str = ""
    config: dict[str, Any] = field(default_factory=dict)

    def mean_norm(self, which: str, mask: torch.Tensor | None = None) -> float | None:
        sel = self.success if mask is None else self.success & mask
        vals = (self.linf if which == "linf" else self.l2)[sel]
        return float(vals.mean()) if vals.numel() else None


@dataclass
class MaskingFlag:
    """A sign of gradient masking: which check, which attacks, and a readable reason."""

    check: str
    attacks: tuple[str, ...]
    reason: str


@dataclass
class RobustReport:
    """What :func:`robust_evaluate` measured; see the module docstring for the conventions."""

    clean_correct: torch.Tensor
    outcomes: dict[str, AttackOutcome]
    skipped: dict[str, str] = field(default_factory=dict)
    clean_seconds: float = 0.0
    masking_tol: float = 0.02
    notes: list[str] = field(default_factory=list)
    gradient_masking: list[MaskingFlag] = field(default_factory=list)

    @property
    def n(self) -> int:
        return int(self.clean_correct.numel())

    @property
    def worst_case_attacks(self) -> list[str]:
        return [k for k, o in self.outcomes.items() if o.norm != "unbounded"]

    @property
    def worst_case_correct(self) -> torch.Tensor:
        return worst_case(self.clean_correct, {k: self.outcomes[k].success for k in self.worst_case_attacks})

    def robust_correct(self, name: str) -> torch.Tensor:
        return self.clean_correct & ~self.outcomes[name].success

    @property
    def clean_acc(self) -> float:
        return int(self.clean_correct.sum()) / self.n if self.n else float("nan")

    def acc(self, name: str) -> float:
        return int(self.robust_correct(name).sum()) / self.n if self.n else float("nan")

    @property
    def worst_case_acc(self) -> float:
        return int(self.worst_case_correct.sum()) / self.n if self.n else float("nan")

    @property
    def masked(self) -> bool:
        return bool(self.gradient_masking)

    def to_metrics(self, level: float = 0.95) -> dict[str, Any]:
        """``{"robust": {"clean_acc": {"value", "ci"}, "<attack>_acc": ..., "worst_case_acc": ...,
        "<attack>_mean_linf"/"_mean_l2": {"value"}, "gradient_masking": bool, "n": N}}``."""

        def acc(mask: torch.Tensor) -> dict[str, Any]:
            k = int(mask.sum())
            return {"value": k / self.n if self.n else None, "ci": wilson_interval(k, self.n, level)}

        robust: dict[str, Any] = {"n": self.n, "n_clean_correct": int(self.clean_correct.sum()),
                                  "clean_acc": acc(self.clean_correct)}
        for name in self.outcomes:
            robust[f"{name}_acc"] = acc(self.robust_correct(name))
        for name, o in self.outcomes.items():
            robust[f"{name}_mean_linf"] = {"value": o.mean_norm("linf"), "ci": None}
            robust[f"{name}_mean_l2"] = {"value": o.mean_norm("l2"), "ci": None}
        if self.worst_case_attacks:
            robust["worst_case_acc"] = acc(self.worst_case_correct)
        robust["gradient_masking"] = self.masked
        return {"robust": robust}

    def summary(self) -> str:
        """One line: clean, per-attack and worst-case accuracy, and a masking warning if any."""
        parts = [f"clean {self.clean_acc:.3f}"]
        parts += [f"{k} {self.acc(k):.3f}" for k in self.outcomes]
        if self.worst_case_attacks and len(self.outcomes) > 1:
            parts.append(f"worst case {self.worst_case_acc:.3f}")
        line = " | ".join(parts) + f" (n={self.n})"
        if self.masked:
            line += f"; gradient masking suspected ({len(self.gradient_masking)} flag(s))"
        return line

    def per_sample(self):
        """A DataFrame: one row per sample, ``clean_correct``, ``<attack>_success``, ``worst_case_robust``."""
        import pandas as pd

        cols: dict[str, Any] = {"clean_correct": self.clean_correct.numpy()}
        for k, o in self.outcomes.items():
            cols[f"{k}_success"] = o.success.numpy()
            cols[f"{k}_linf"] = o.linf.numpy()
            cols[f"{k}_l2"] = o.l2.numpy()
        cols["worst_case_robust"] = self.worst_case_correct.numpy()
        return pd.DataFrame(cols)

    def to_card(self, method: str, data: str, *, train_data: str = "", protocol: str = "robust", seed: int = 0,
                config: dict[str, Any] | None = None, selection: str = "n/a", notes: Iterable[str] = (),
                extra: dict[str, Any] | None = None):
        """A :class:`~visec.cards.ResultCard` (metrics from :meth:`to_metrics`; attack settings
        under ``config["attacks"]``; masking flags and skipped attacks in ``notes`` and ``extra``)."""
        from visec.cards import ResultCard

        all_notes = list(notes) + list(self.notes)
        all_notes += [f"gradient masking suspected ({f.check}): {f.reason}" for f in self.gradient_masking]
        all_notes += [f"attack '{k}' skipped: {v}" for k, v in self.skipped.items()]
        timings = {"clean_seconds": round(self.clean_seconds, 4)}
        timings.update({f"{k}_seconds": round(o.seconds, 4) for k, o in self.outcomes.items()})
        cfg = dict(config or {})
        cfg["attacks"] = {k: o.config for k, o in self.outcomes.items()}
        info = {"worst_case_attacks": self.worst_case_attacks, "skipped_attacks": dict(self.skipped),
                "gradient_masking": [{"check": f.check, "attacks": list(f.attacks), "reason": f.reason}
                                     for f in self.gradient_masking],
                "implementation": "visec (AutoAttack-style components are not bit-identical to the reference)"}
        info.update(extra or {})
        return ResultCard(method=method, train_data=train_data, test_data=data, protocol=protocol, seed=seed,
                          metrics=self.to_metrics(), config=cfg, timings=timings, selection=selection,
                          notes=all_notes, extra=info)
