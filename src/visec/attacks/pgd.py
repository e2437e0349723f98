"""FGSM and PGD (L-inf / L2, with or without a random start)."""

from __future__ import annotations

from typing import Literal

import torch

from visec.attacks.base import Attack, AttackError, project
from visec.config import DEFAULT_EPS
from visec.registry import ATTACKS

RandomStart = Literal["none", "uniform", "normal"]


def _l2_unit(g: torch.Tensor) -> torch.Tensor:
    return g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (g.ndim - 1)))


@ATTACKS.register("pgd", summary="projected gradient descent (Madry et al.), Linf/L2, optional random start")
class PGD(Attack):
    """``steps`` signed-gradient (Linf) or normalised-gradient (L2) steps of size ``alpha``, each
    followed by projection onto the ``eps`` ball and [0, 1].

    ``random_start``: ``"uniform"`` (uniform in the ball; the usual PGD), ``"normal"`` (``x +
    sigma * N(0, 1)``, as several adversarial-training codes use, ``sigma`` = ``start_sigma``) or
    ``"none"``.
    """

    name = "pgd"

    def __init__(self, model, *, eps: float = DEFAULT_EPS, alpha: float = 2 / 255, steps: int = 10,
                 random_start: RandomStart = "uniform", start_sigma: float = 0.001, **kwargs) -> None:
        super().__init__(model, eps=eps, **kwargs)
        if steps < 0 or alpha < 0:
            raise AttackError(f"{self.name}: steps and alpha must be >= 0 (got {steps}, {alpha})")
        if random_start not in ("none", "uniform", "normal"):
            raise AttackError(f"{self.name}: random_start must be none, uniform or normal")
        self.alpha, self.steps = float(alpha), int(steps)
        self.random_start, self.start_sigma = random_start, float(start_sigma)

    def start(self, x: torch.Tensor) -> torch.Tensor:
        if self.random_start == "none" or self.eps == 0:
            return x.clone()
        gen = self.generator(x.device)
        if self.random_start == "normal":
            noise = self.start_sigma * torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        elif self.norm == "Linf":
            noise = (torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) * 2 - 1) * self.eps
        else:  # uniform in the L2 ball: random direction, radius eps * U^(1/d)
            d = x[0].numel()
            direction = _l2_unit(torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype))
            radius = self.eps * torch.rand(x.shape[0], generator=gen, device=x.device, dtype=x.dtype) ** (1 / d)
            noise = direction * radius.view(-1, *([1] * (x.ndim - 1)))
        return (x + project(noise, self.norm, self.eps)).clamp(0.0, 1.0)

    def step(self, x_adv: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        if self.norm == "Linf":
            return x_adv + self.alpha * grad.sign()
        return x_adv + self.alpha * _l2_unit(grad)

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_adv = self.start(x)
        for _ in range(self.steps):
            grad, _ = self.gradient(x_adv, y)
            x_adv = self.clip(x, self.step(x_adv, grad))
        return x_adv


@ATTACKS.register("fgsm", summary="fast gradient sign method (one Linf step of size eps)")
class FGSM(PGD):
    """One step of size ``eps`` from ``x`` (``random_start`` may add a start, as in "FGSM-RS")."""

    name = "fgsm"
    norms = ("Linf",)
    ignored_params = ("alpha", "steps")  # fixed by the method: one step of size eps

    def __init__(self, model, *, eps: float = DEFAULT_EPS, random_start: RandomStart = "none", **kwargs) -> None:
        kwargs.pop("alpha", None)
        kwargs.pop("steps", None)
        super().__init__(model, eps=eps, alpha=eps, steps=1, random_start=random_start, **kwargs)
