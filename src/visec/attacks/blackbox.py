"""Attacks that do not use the target model's gradients: Square (score-based) and transfer.

They are what the gradient-masking checks of :mod:`visec.attacks.evaluate` compare white-box
attacks against: if a black-box or transfer attack breaks more samples than every white-box
attack with the same budget, the white-box gradients are probably uninformative (masked).

* :class:`Square` (``square``, Andriushchenko et al., 2020, Linf): random search over
  perturbations made of squares with values ``+-eps`` per channel, accepting a candidate when the
  margin objective rises. Starts from random vertical stripes of ``+-eps``; the square side
  follows ``p`` (fraction of pixels changed), halved at fixed fractions of the query budget. An
  independent implementation, not bit-identical to the reference.
* :class:`Transfer` (``transfer``): crafts with any attack on a ``surrogate`` model and returns
  those images for the target model.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from visec.attacks.base import Attack, AttackError, margin_loss
from visec.config import DEFAULT_EPS
from visec.registry import ATTACKS

# Fractions of a 10 000-query budget after which Square halves p (from the paper's schedule).
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


@ATTACKS.register("square", summary="Square attack (score-based random search, Linf): black-box check")
class Square(Attack):
    """Score-based random search. Parameters: ``n_queries`` (model calls per sample, including
    the first), ``p_init`` (0.8). The objective is ``loss_fn`` (default: the CW margin), ascended;
    a sample stops as soon as it is misclassified (or hits the target). Images ``(B, C, H, W)``."""

    name = "square"
    norms = ("Linf",)
    access = "black-box"

    def __init__(self, model, *, eps: float = DEFAULT_EPS, n_queries: int = 1000, p_init: float = 0.8,
                 loss_fn=None, **kwargs) -> None:
        super().__init__(model, eps=eps, loss_fn=loss_fn or margin_loss, **kwargs)
        if n_queries < 1:
            raise AttackError(f"{self.name}: n_queries must be >= 1, got {n_queries}")
        if not 0 < p_init <= 1:
            raise AttackError(f"{self.name}: p_init must be in (0, 1], got {p_init}")
        self.n_queries, self.p_init = int(n_queries), float(p_init)
        self.last_queries: float = 0.0

    def p_schedule(self, i: int) -> float:
        scaled = i * 10000 / self.n_queries
        return self.p_init / 2 ** sum(scaled > t for t in _HALVINGS)

    @torch.no_grad()
    def _query(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(x)
        loss = self.loss_fn(out, y)
        return (-loss if self.targeted else loss), self.is_success(self.logits_fn(out), y)

    @torch.no_grad()
    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise AttackError(f"{self.name}: needs images (B, C, H, W), got shape {tuple(x.shape)}")
        n, c, h, w = x.shape
        dev, dt = x.device, x.dtype
        gen = self.generator(dev)

        def signs(*shape: int) -> torch.Tensor:
            return torch.randint(0, 2, shape, generator=gen, device=dev).to(dt) * 2 - 1

        x_adv = (x + self.eps * signs(n, c, 1, w)).clamp(0, 1)
        obj, done = self._query(x_adv, y)
        queries = torch.ones(n, device=dev)
        rows = torch.arange(h, device=dev).view(1, 1, h, 1)
        cols = torch.arange(w, device=dev).view(1, 1, 1, w)
        for i in range(1, self.n_queries):
            idx = (~done).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            m = idx.numel()
            side = max(1, min(h, w, int(round(math.sqrt(self.p_schedule(i) * h * w)))))
            top = torch.randint(0, h - side + 1, (m, 1, 1, 1), generator=gen, device=dev)
            left = torch.randint(0, w - side + 1, (m, 1, 1, 1), generator=gen, device=dev)
            inside = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
            x_i = x[idx]
            delta = torch.where(inside, self.eps * signs(m, c, 1, 1), x_adv[idx] - x_i)
            cand = (x_i + delta).clamp(0, 1)
            obj_new, ok = self._query(cand, y[idx])
            accept = obj_new > obj[idx]
            x_adv[idx[accept]] = cand[accept]
            obj[idx[accept]] = obj_new[accept]
            done[idx[accept & ok]] = True
            queries[idx] += 1
        self.last_queries = float(queries.mean())
        return x_adv


@ATTACKS.register("transfer", summary="transfer attack: craft on a surrogate model, evaluate on the target")
class Transfer(Attack):
    """Crafts with ``attack`` (a registered name, default ``mifgsm``, built on ``surrogate`` with this
    attack's threat model, seed and ``attack_kwargs``; or a ready :class:`Attack` whose model is the
    surrogate) and returns its images. ``model`` is the target (only used for success checks)."""

    name = "transfer"
    access = "transfer"

    def __init__(self, model, *, surrogate: nn.Module | None = None, attack: str | Attack = "mifgsm",
                 attack_kwargs: dict[str, Any] | None = None, **kwargs) -> None:
        super().__init__(model, **kwargs)
        if isinstance(attack, Attack):
            if attack.model is model:
                raise AttackError(f"{self.name}: the crafting attack runs on the target model itself; "
                                  f"give it the surrogate")
            self.inner = attack
        else:
            if surrogate is None:
                raise AttackError(f"{self.name}: give a surrogate model to craft on")
            if surrogate is model:
                raise AttackError(f"{self.name}: the surrogate is the target model itself")
            if attack not in ATTACKS or attack == self.name:
                raise AttackError(f"{self.name}: unknown crafting attack '{attack}'")
            self.inner = ATTACKS.build(attack, model=surrogate, norm=self.norm, eps=self.eps,
                                       targeted=self.targeted, seed=self.seed, **(attack_kwargs or {}))
        if self.inner.norm != self.norm or (self.norm != "unbounded" and self.inner.eps > self.eps + 1e-12):
            raise AttackError(f"{self.name}: the crafting attack's threat model ({self.inner.norm}, "
                              f"eps {self.inner.eps:.5g}) exceeds this one ({self.norm}, eps {self.eps:.5g})")
        self.crafting = self.inner.name

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.inner(x, y)
