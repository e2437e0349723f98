"""Carlini-Wagner attacks: C&W-L2 (minimal-norm, tanh space + Adam + binary search) and "CW-inf".

* :class:`CWL2` (``cw_l2``, Carlini & Wagner, 2017) minimises ``||delta||_2^2 + c * f(x + delta)``
  with ``f = max(-objective, -kappa)``, where the objective is the (per-sample) CW margin
  ``max_{k != y} z_k - z_y`` (targeted: ``z_t - max_{k != t} z_k``). The image is parametrised
  as ``x_adv = (tanh(w) + 1) / 2`` so it always stays in [0, 1]; ``w`` is optimised with Adam for
  ``steps`` steps, for each of ``binary_search_steps`` values of ``c`` chosen per sample (halving
  the interval after a success, x10 until the first success). It returns, per sample, the
  smallest-L2 successful image found, or the clean image when none was found. Its threat model is
  ``unbounded`` (a minimal-norm attack; report the norms), or ``L2`` with a budget, in which case
  the result is projected onto the ``eps`` ball.
* :class:`CWLinf` (``cw_linf``) is PGD on the CW margin loss in the Linf ball: what adversarial
  training papers (ANCRA among them) report as "CW-inf" (defaults: 20 steps of 0.007, uniform
  random start).
"""

from __future__ import annotations

import torch

from visec.attacks.base import Attack, AttackError, margin_loss
from visec.attacks.pgd import PGD
from visec.registry import ATTACKS


@ATTACKS.register("cw_l2", summary="Carlini-Wagner L2 (tanh space, Adam, binary search over c); minimal-norm")
class CWL2(Attack):
    """C&W-L2. Parameters: ``steps`` (Adam steps per ``c``), ``lr``, ``initial_const`` (first ``c``),
    ``binary_search_steps``, ``kappa`` (confidence: the margin term stops pulling at ``-kappa``).

    Success is judged on predictions (``logits_fn``), so a custom ``loss_fn`` only changes the
    pull term. Deterministic (no randomness).
    """

    name = "cw_l2"
    norms = ("unbounded", "L2")

    def __init__(self, model, *, norm="unbounded", eps: float = float("inf"), steps: int = 100,
                 lr: float = 0.01, initial_const: float = 0.1, binary_search_steps: int = 5,
                 kappa: float = 0.0, loss_fn=None, **kwargs) -> None:
        if norm == "L2" and eps == float("inf"):
            raise AttackError(f"{self.name}: give eps for the L2 threat model (or use norm='unbounded')")
        super().__init__(model, norm=norm, eps=eps, loss_fn=loss_fn or margin_loss, **kwargs)
        if steps < 1 or binary_search_steps < 1:
            raise AttackError(f"{self.name}: steps and binary_search_steps must be >= 1 "
                              f"(got {steps}, {binary_search_steps})")
        if not lr > 0 or not initial_const > 0:
            raise AttackError(f"{self.name}: lr and initial_const must be > 0 (got {lr}, {initial_const})")
        if kappa < 0:
            raise AttackError(f"{self.name}: kappa must be >= 0, got {kappa}")
        self.steps, self.lr, self.initial_const = int(steps), float(lr), float(initial_const)
        self.binary_search_steps, self.kappa = int(binary_search_steps), float(kappa)

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        dev, dt = x.device, x.dtype
        w0 = torch.atanh((2 * x - 1).clamp(-1 + 1e-6, 1 - 1e-6))
        const = torch.full((n,), self.initial_const, device=dev, dtype=dt)
        lower = torch.zeros(n, device=dev, dtype=dt)
        upper = torch.full((n,), float("inf"), device=dev, dtype=dt)
        best_l2 = torch.full((n,), float("inf"), device=dev, dtype=dt)
        best = x.clone()
        for _ in range(self.binary_search_steps):
            w = w0.clone().requires_grad_(True)
            opt = torch.optim.Adam([w], lr=self.lr)
            found = torch.zeros(n, dtype=torch.bool, device=dev)
            for it in range(self.steps + 1):
                x_adv = (torch.tanh(w) + 1) / 2
                out = self.model(x_adv)
                loss = self.loss_fn(out, y)
                obj = -loss if self.targeted else loss
                l2sq = (x_adv - x).flatten(1).pow(2).sum(1)
                with torch.no_grad():
                    ok = self.is_success(self.logits_fn(out).detach(), y)
                    better = ok & (l2sq < best_l2)
                    best_l2 = torch.where(better, l2sq.detach(), best_l2)
                    best[better] = x_adv.detach()[better]
                    found |= ok
                if it == self.steps:  # the last iterate is only checked, not stepped from
                    break
                total = (l2sq + const * obj.neg().clamp_min(-self.kappa)).sum()
                opt.zero_grad(set_to_none=True)
                total.backward()
                opt.step()
            upper = torch.where(found, torch.minimum(upper, const), upper)
            lower = torch.where(found, lower, torch.maximum(lower, const))
            const = torch.where(torch.isinf(upper), const * 10, (lower + upper) / 2)
        return best


@ATTACKS.register("cw_linf", summary="'CW-inf': PGD on the CW margin loss in the Linf ball (20 x 0.007)")
class CWLinf(PGD):
    """PGD with :func:`~visec.attacks.base.margin_loss`; defaults as adversarial-training papers
    evaluate "CW-inf": ``eps = 8/255``, 20 steps of 0.007, uniform random start."""

    name = "cw_linf"
    norms = ("Linf",)

    def __init__(self, model, *, steps: int = 20, alpha: float = 0.007, loss_fn=None, **kwargs) -> None:
        super().__init__(model, steps=steps, alpha=alpha, loss_fn=loss_fn or margin_loss, **kwargs)
