"""Attacks on binary face-forgery detectors: what the attacked test protocol runs.

A detector maps faces in [0, 1] to one logit (positive = fake). Two attacker goals, each its own
protocol:

* ``evade`` (the default): every **fake** test face is pushed towards "real", reals stay clean:
  the forger who wants a fake to pass;
* ``frame``: every **real** face is pushed towards "fake", fakes stay clean: the attacker who wants
  a genuine face called forged.

The decision boundary is the run's own validation-EER threshold ``t``, so an attack "succeeds" on a
face exactly when the run's decision on it flips: the attacked model is the detector's logit minus
``offset(t)`` (``logit(t)`` for a sigmoid detector). An attack is written as ``NAME[,key=value...]``::

    pgd                                  # L-inf 4/255, 10 steps of 2.5 eps / 10, evasion
    pgd,eps=8/255,steps=20
    pgd,norm=l2,eps=0.5
    apgd_ce,eps=4/255                    # APGD on the cross-entropy (20 iterations)
    square,eps=4/255,n_queries=200       # score-based: the detector's outputs only
    transfer,source=runs/xception/intra  # crafted by PGD on another run (the surrogate), replayed here
    pgd,direction=frame                  # reals pushed towards fake

Its protocol name follows the corruption protocols: ``intra+pgd-linf-4/255``,
``intra+transfer@xception-linf-4/255``, ``intra+pgd-linf-4/255+frame``.

Every card carries the evaluator's gradient-masking checks (:func:`detect_gradient_masking`): an
iterative L-inf attack runs beside FGSM of the same budget on the same faces (single-step stronger
than iterative is a warning sign). Transfer and score-based attacks never touch the target's
gradients, so their check (beating the white-box attack of the same budget) is made across cards,
by :func:`cross_card_flags` in the bench.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from torch import nn

from visec.attacks.base import Attack, AttackError, lp_norm
from visec.attacks.evaluate import _check_threat_model
from visec.attacks.masking import detect_gradient_masking
from visec.attacks.report import AttackOutcome, RobustReport
from visec.attacks.suite import build_attack
from visec.config import Budget
from visec.metrics import wilson_interval

#: the label of the faces each direction attacks (1 = fake, 0 = real)
DIRECTIONS = {"evade": 1, "frame": 0}
#: the card's name for the fraction of attacked faces whose decision flipped, per attacked label
RATE_NAMES = {1: "evasion_rate", 0: "framing_rate"}
DETECTOR_ATTACKS = ("pgd", "fgsm", "apgd_ce", "apgd_dlr", "square", "transfer")
#: the budgets of the bench's attacked columns (L-inf) and its L2 point
LINF_BUDGETS = (1 / 255, 2 / 255, 4 / 255, 8 / 255)
L2_BUDGET = 0.5


def format_budget(eps: float) -> str:
    """``4/255`` for whole multiples of 1/255, else the number (``0.5``)."""
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 and round(k) > 0 else f"{eps:g}"


class DetectorAttackSpec(BaseModel):
    """One attack on a detector (see the module docstring for the text form)."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["pgd", "fgsm", "apgd_ce", "apgd_dlr", "square", "transfer"]
    norm: Literal["Linf", "L2"] = "Linf"
    eps: Budget = 4 / 255
    steps: int | None = Field(None, ge=1)  # default: 10 (PGD, transfer's crafting), 20 (APGD)
    alpha: Budget | None = None  # PGD step; default 2.5 * eps / steps
    n_queries: int | None = Field(None, ge=1)  # Square; default 200
    direction: Literal["evade", "frame"] = "evade"
    source: Path | None = None  # transfer: the surrogate's run folder
    seed: int = Field(0, ge=0)

    @field_validator("norm", mode="before")
    @classmethod
    def _norm(cls, v: Any) -> Any:
        return {"linf": "Linf", "l2": "L2"}.get(str(v).lower(), v)

    @classmethod
    def parse(cls, text: "str | DetectorAttackSpec") -> "DetectorAttackSpec":
        """``NAME[,key=value...]`` -> spec; a one-line :class:`AttackError` on anything else."""
        if isinstance(text, DetectorAttackSpec):
            return text
        name, *pairs = [p.strip() for p in str(text).split(",")]
        fields: dict[str, Any] = {"name": name}
        for pair in pairs:
            key, eq, value = pair.partition("=")
            if not eq or not key.strip():
                raise AttackError(f"attack '{text}': '{pair}' is not key=value")
            fields[key.strip()] = value.strip()
        try:
            spec = cls.model_validate(fields)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "name"
            allowed = f" (attacks: {', '.join(DETECTOR_ATTACKS)})" if where == "name" else ""
            raise AttackError(f"attack '{text}': {where}: {err['msg']}{allowed}") from None
        spec.check()
        return spec

    def check(self) -> None:
        if self.name in ("fgsm", "square") and self.norm != "Linf":
            raise AttackError(f"attack '{self.name}' is defined for norm Linf only")
        if self.name == "apgd_dlr":
            raise AttackError("attack 'apgd_dlr': the DLR loss needs >= 3 classes and a detector has 2 "
                              "(one logit); use apgd_ce")
        if self.name == "transfer" and self.source is None:
            raise AttackError("attack 'transfer' needs source=RUN (the surrogate detector's run folder)")
        if self.name != "transfer" and self.source is not None:
            raise AttackError(f"attack '{self.name}' takes no source (only transfer does)")
        if self.name != "square" and self.n_queries is not None:
            raise AttackError(f"attack '{self.name}' takes no n_queries (only square does)")

    def label(self, source_name: str | None = None) -> str:
        """The protocol suffix: ``pgd-linf-4/255``, ``transfer@xception-linf-4/255``, ``...+frame``."""
        name = self.name + (f"@{source_name}" if self.name == "transfer" and source_name else "")
        return f"{name}-{self.norm.lower()}-{format_budget(self.eps)}" + (
            "+frame" if self.direction == "frame" else "")

    def build(self, model: nn.Module, surrogate: nn.Module | None = None) -> Attack:
        """The attack on ``model`` (the thresholded logit), for the label the direction attacks."""
        common: dict[str, Any] = {"eps": self.eps, "norm": self.norm, "seed": self.seed}
        if self.name in ("pgd", "transfer"):
            steps = self.steps or 10
            pgd = dict(steps=steps, alpha=self.alpha if self.alpha is not None else 2.5 * self.eps / steps,
                       random_start="uniform")
            if self.name == "pgd":
                return build_attack("pgd", model, **pgd, **common)
            return build_attack("transfer", model, surrogate=surrogate, attack="pgd", attack_kwargs=pgd, **common)
        if self.name == "fgsm":
            return build_attack("fgsm", model, **common)
        if self.name == "apgd_ce":
            return build_attack("apgd_ce", model, steps=self.steps or 20, **common)
        return build_attack("square", model, n_queries=self.n_queries or 200, **common)


class ThresholdedLogit(nn.Module):
    """``fn(x) - offset``: the detector's logit with its decision threshold moved to 0."""

    def __init__(self, fn: nn.Module, offset: float = 0.0) -> None:
        super().__init__()
        self.fn, self.offset = fn, float(offset)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fn(x)
        out = out.squeeze(-1) if out.ndim == 2 and out.shape[-1] == 1 else out
        return out.float() - self.offset


class DetectorAttacker:
    """Runs one :class:`DetectorAttackSpec` on test batches and keeps what the card needs.

    ``model``: the detector's differentiable logit (``BinaryDetector.attack_logit``) as a module;
    ``threshold``: the run's decision threshold on its probability of fake, ``offset`` the same
    threshold on ``model``'s logit; ``surrogate``: another detector's logit (transfer), named
    ``source_name``; ``path``: how the attack reaches a scorer it cannot differentiate (or ``None``).
    ``__call__(images, labels)`` returns the batch with the direction's faces attacked.
    """

    def __init__(self, spec: DetectorAttackSpec, model: nn.Module, threshold: float = 0.5, offset: float = 0.0,
                 surrogate: nn.Module | None = None, *, source_name: str | None = None,
                 threshold_source: str = "given", path: str | None = None, masking_tol: float = 0.02) -> None:
        self.spec = spec
        self.threshold, self.threshold_source, self.path = float(threshold), threshold_source, path
        self.label = spec.label(source_name)
        self.source_name = source_name
        self.model = ThresholdedLogit(model, offset)
        self.surrogate = ThresholdedLogit(surrogate) if surrogate is not None else None
        self.attack = spec.build(self.model, self.surrogate)
        self.target = DIRECTIONS[spec.direction]
        self.masking_tol = masking_tol
        # the reference the masking checks compare against (same faces, same budget)
        # (transfer and square get none: they must never touch the target's gradients; the bench
        # compares them with the white-box card of the same budget instead)
        self.reference: Attack | None = None
        if spec.norm == "Linf" and spec.name in ("pgd", "apgd_ce"):
            self.reference = build_attack("fgsm", self.model, eps=spec.eps, seed=spec.seed)
        self._parts: dict[str, list[torch.Tensor]] = {}
        self.seconds = 0.0

    def _keep(self, key: str, value: torch.Tensor) -> None:
        self._parts.setdefault(key, []).append(value.detach().cpu())

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        sel = labels.round().long() == self.target
        if not bool(sel.any()):
            return images
        x = images[sel].detach().float()
        y = torch.full((x.shape[0],), self.target, dtype=torch.long, device=x.device)
        with torch.enable_grad():
            with torch.no_grad():
                right = (self.model(x) > 0).long() == y
            start = time.perf_counter()
            x_adv = self.attack(x, y)
            self.seconds += time.perf_counter() - start
            _check_threat_model(self.spec.name, self.attack, x, x_adv)
            with torch.no_grad():
                flipped = (self.model(x_adv) > 0).long() != y
            self._keep("right", right)
            self._keep("flipped", flipped)
            self._keep("linf", lp_norm(x_adv - x, "Linf"))
            self._keep("l2", lp_norm(x_adv - x, "L2"))
            if self.reference is not None:
                x_ref = self.reference(x, y)
                with torch.no_grad():
                    self._keep("ref_flipped", (self.model(x_ref) > 0).long() != y)
                    delta = x_ref - x
                self._keep("ref_linf", lp_norm(delta, "Linf"))
                self._keep("ref_l2", lp_norm(delta, "L2"))
        out = images.clone()
        out[sel] = x_adv.to(images.dtype)
        return out

    @property
    def n_attacked(self) -> int:
        return sum(len(p) for p in self._parts.get("right", []))

    def _masking_report(self, cat: dict[str, torch.Tensor]) -> RobustReport:
        """The attacked faces (``cat``: the kept parts, concatenated) as a robust evaluation:
        clean-correct = on the right side of the threshold before the attack, success = flipped;
        the main attack and its reference."""
        right = cat["right"].bool()
        atk = self.attack

        def outcome(name: str, a: Attack, prefix: str) -> AttackOutcome:
            return AttackOutcome(name=name, success=cat[f"{prefix}flipped"].bool() & right,
                                 linf=cat[f"{prefix}linf"], l2=cat[f"{prefix}l2"], attack=a.name,
                                 access=a.access, norm=a.norm, eps=a.eps, steps=getattr(a, "steps", None),
                                 alpha=getattr(a, "alpha", None),
                                 loss=getattr(a.loss_fn, "__name__", ""), config=a.config())

        outcomes = {self.spec.name: outcome(self.spec.name, atk, "")}
        if self.reference is not None:
            outcomes[f"{self.reference.name}-reference"] = outcome(f"{self.reference.name}-reference",
                                                                   self.reference, "ref_")
        report = RobustReport(right, outcomes, masking_tol=self.masking_tol)
        report.gradient_masking = detect_gradient_masking(report)
        return report

    def summary(self, probs: Any, labels: Any) -> dict[str, Any]:
        """The card's ``attack`` block from the attacked faces' final probabilities of fake
        (``probs``, the method's own scorer) and labels, for the whole test split."""
        import numpy as np

        threshold = self.threshold
        probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels).astype(int)
        mine = labels == self.target
        n = int(mine.sum())
        # evade: a fake now called real (prob < t); frame: a real now called fake (prob >= t)
        hits = int((probs[mine] < threshold).sum() if self.target == 1 else (probs[mine] >= threshold).sum())
        ci = wilson_interval(hits, n)
        cat = {k: torch.cat(v) for k, v in self._parts.items()} if self._parts else {}
        block: dict[str, Any] = {
            "attack": self.spec.name, "direction": self.spec.direction, "norm": self.spec.norm,
            "eps": self.spec.eps, "threshold": threshold, "threshold_source": self.threshold_source,
            "attack_path": self.path, "source": str(self.spec.source) if self.spec.source else None,
            "source_model": self.source_name,
            RATE_NAMES[self.target]: {"value": hits / n if n else float("nan"), "ci": ci},
            "n_attacked": n,
            "mean_linf": {"value": float(cat["linf"].mean()) if cat else 0.0},
            "mean_l2": {"value": float(cat["l2"].mean()) if cat else 0.0},
            "attack_seconds": round(self.seconds, 3),
            "images_per_second": round(n / self.seconds, 2) if self.seconds > 0 else None,
            "config": self.attack.config(),
        }
        if cat:
            report = self._masking_report(cat)
            block["gradient_masking"] = bool(report.gradient_masking)
            block["masking_flags"] = [f"{f.check}: {f.reason}" for f in report.gradient_masking]
            block["masking_checks"] = sorted(report.outcomes)
            if self.reference is not None:
                # FGSM's flips among the faces on the right side first, beside the attack's own
                ref = report.outcomes[f"{self.reference.name}-reference"].success
                block["fgsm_flip_rate"] = {"value": float(ref.sum()) / max(int(report.clean_correct.sum()), 1)}
        return block


def logit_offset(threshold: float) -> float:
    """``logit(t)``: where a sigmoid detector's probability threshold ``t`` lies on its logit."""
    t = min(max(float(threshold), 1e-6), 1 - 1e-6)
    return math.log(t / (1 - t))


def cross_card_flags(blocks: dict[str, dict[str, Any]], tol: float = 0.02) -> list[str]:
    """Gradient-masking checks across one detector's attacked cards (``protocol -> attack block``,
    one direction): a transfer or score-based attack that beats the white-box PGD card of the same
    threat model, and a white-box attack whose success falls as its budget grows."""
    flags: list[str] = []
    rate = {p: attack_rate(b) for p, b in blocks.items()}
    white = {p: b for p, b in blocks.items() if b["attack"] in ("pgd", "apgd_ce")}
    for p, b in blocks.items():
        if b["attack"] not in ("transfer", "square"):
            continue
        peers = [w for w, wb in white.items() if wb["norm"] == b["norm"] and wb["eps"] >= b["eps"] * (1 - 1e-6)]
        best = max((rate[w] for w in peers), default=None)
        if best is not None and rate[p] > best + tol:
            flags.append(f"{b['attack']}>white-box: '{p}' succeeds on {rate[p]:.1%}, white-box "
                         f"({', '.join(peers)}) at most {best:.1%}")
    for attack in {b["attack"] for b in white.values()}:
        for norm in ("Linf", "L2"):
            chain = sorted((b["eps"], p) for p, b in white.items() if b["attack"] == attack and b["norm"] == norm)
            for (e1, p1), (e2, p2) in zip(chain, chain[1:]):
                if e2 > e1 * (1 + 1e-6) and rate[p1] > rate[p2] + tol:
                    flags.append(f"larger-eps: '{p2}' ({rate[p2]:.1%}) succeeds less often than '{p1}' "
                                 f"({rate[p1]:.1%})")
    return flags


def attack_rate(block: dict[str, Any]) -> float:
    """An attacked card's success rate (``evasion_rate`` or ``framing_rate``)."""
    return float(block[RATE_NAMES[DIRECTIONS[block["direction"]]]]["value"])
