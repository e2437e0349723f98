"""Building attacks by name and the standard evaluation suite (one builder for every caller:
``visec attack --method suite``, ANCRA's test attacks, the robustness benches)."""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from torch import nn

from visec.attacks.base import Attack, AttackError, default_logits
from visec.config import DEFAULT_EPS
from visec.registry import ATTACKS

SUITE_NAMES = ("suite", "standard_suite")


def attack_params(cls: type) -> set[str]:
    """Keyword parameters an attack class accepts (its ``__init__`` and those it forwards to)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        forwards = False
        for p in inspect.signature(init).parameters.values():
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                forwards = True
            elif p.name not in ("self", "model") and p.kind is not inspect.Parameter.VAR_POSITIONAL:
                names.add(p.name)
        if not forwards:
            break
    return names - set(getattr(cls, "ignored_params", ()))


def build_attack(name: str, model: nn.Module, **params: Any) -> Attack:
    """Build a registered attack; ``None`` values are left at the attack's default, and a parameter
    the attack does not take is an :class:`AttackError` (one line, naming the accepted ones)."""
    cls = ATTACKS.get(name).obj
    params = {k: v for k, v in params.items() if v is not None}
    accepted = attack_params(cls)
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise AttackError(f"attack '{name}' does not take {', '.join(unknown)} "
                          f"(it takes: {', '.join(sorted(accepted))})")
    return cls(model, **params)


class Suite(dict):
    """``name -> Attack`` plus ``skipped`` (name -> reason) for attacks left out of the suite."""

    def __init__(self, *args: Any, skipped: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.skipped: dict[str, str] = dict(skipped or {})


def standard_suite(model: nn.Module, eps: float = DEFAULT_EPS, norm: str = "Linf", steps: int = 20, seed: int = 0,
                   num_classes: int | None = None, *, apgd_steps: int = 100, alpha: float | None = None,
                   logits_fn: Callable[[Any], torch.Tensor] = default_logits,
                   model_mode: str = "eval") -> Suite:
    """The evaluation list: ``fgsm`` (Linf only), ``pgd{steps}`` (uniform random start, step
    ``alpha`` = ``2.5 eps / steps`` unless given), ``cw`` (Linf: PGD on the CW margin, ``cw_linf``;
    L2: C&W-L2 within the ball), ``apgd_ce`` and ``apgd_dlr`` (``apgd_steps`` each; DLR is skipped,
    with the reason kept in ``suite.skipped``, when ``num_classes`` < 3, e.g. binary detectors)."""
    if norm not in ("Linf", "L2"):
        raise AttackError(f"standard suite: norm must be Linf or L2, got '{norm}'")
    if steps < 1 or apgd_steps < 1:
        raise AttackError(f"standard suite: steps must be >= 1 (got {steps}, {apgd_steps})")
    step = float(alpha) if alpha is not None else 2.5 * eps / steps
    common = dict(eps=eps, norm=norm, seed=seed, logits_fn=logits_fn, model_mode=model_mode)
    suite = Suite()
    if norm == "Linf":
        suite["fgsm"] = build_attack("fgsm", model, **common)
    else:
        suite.skipped["fgsm"] = "FGSM is defined for Linf"
    suite[f"pgd{steps}"] = build_attack("pgd", model, steps=steps, alpha=step, random_start="uniform", **common)
    if norm == "Linf":
        suite["cw"] = build_attack("cw_linf", model, steps=steps, alpha=step, **common)
    else:
        suite["cw"] = build_attack("cw_l2", model, **common)
    suite["apgd_ce"] = build_attack("apgd_ce", model, steps=apgd_steps, **common)
    if num_classes is not None and num_classes < 3:
        suite.skipped["apgd_dlr"] = f"the DLR loss needs >= 3 classes, the model has {num_classes}"
    else:
        suite["apgd_dlr"] = build_attack("apgd_dlr", model, steps=apgd_steps, **common)
    return suite
