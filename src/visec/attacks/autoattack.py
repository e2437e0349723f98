"""AutoAttack-style evaluation: APGD-CE, APGD-DLR, APGD-T and their ensemble, in plain PyTorch.

APGD (Croce & Hein, 2020) is PGD without a step-size to tune: it starts with ``eta = 2 eps``,
adds momentum (``x <- x + 0.75 (z - x) + 0.25 (x - x_prev)`` with ``z`` the projected gradient
step) and, at checkpoints ``w_j = ceil(p_j N)`` (``p_0 = 0, p_1 = 0.22,
p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``), halves the step size of a sample and
restarts it from its best point when (1) the objective rose in fewer than ``rho = 0.75`` of the
steps since the last checkpoint, or (2) neither the step size nor the best objective changed
since the last checkpoint. It returns, per sample, the first successful image found (or the
highest-objective one when none succeeded).

* ``apgd_ce``: APGD on cross-entropy (binary logits: BCE);
* ``apgd_dlr``: APGD on the difference-of-logits-ratio loss (needs >= 3 classes);
* ``apgd_t``: APGD on the targeted DLR loss towards the ``n_target_classes`` most likely wrong
  classes in turn (needs >= 4 classes); succeeds when the prediction leaves the true class;
* ``autoattack``: the components in order, each on the samples not yet broken, keeping the first
  success per sample. ``version="fast"`` runs APGD-CE then APGD-DLR; ``"standard"`` runs APGD-CE,
  APGD-T and a Square attack (the reference's "standard" list minus FAB-T).

This is an independent implementation from the paper's description: it is **not bit-identical**
to the reference AutoAttack (fra31/auto-attack) or to torchattacks' port, and its numbers should
be labelled "AutoAttack-style". Components that need more classes than the model has are skipped
and the reason is kept in ``skipped``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from visec.attacks.base import (Attack, AttackError, binary_logit, cross_entropy, default_logits,
                                num_classes, predict_labels)
from visec.attacks.pgd import _l2_unit
from visec.config import DEFAULT_EPS
from visec.registry import ATTACKS


# -- losses --------------------------------------------------------------------------------------
def _multiclass(z: torch.Tensor, need: int, what: str) -> torch.Tensor:
    z = binary_logit(z)
    if z.ndim != 2 or z.shape[1] < need:
        k = 2 if z.ndim == 1 else z.shape[1]
        raise AttackError(f"{what} needs logits of at least {need} classes, got {k}")
    return z


def dlr_loss(output: Any, y: torch.Tensor) -> torch.Tensor:
    """Difference of logits ratio ``-(z_y - max_{k != y} z_k) / (z_(1) - z_(3))`` (larger = more wrong).

    ``z_(i)`` is the ``i``-th largest logit; shift- and scale-invariant in the logits.
    """
    z = _multiclass(default_logits(output), 3, "the DLR loss")
    top = z.sort(dim=1, descending=True).values
    true = z.gather(1, y[:, None]).squeeze(1)
    other = z.masked_fill(F.one_hot(y, z.shape[1]).bool(), float("-inf")).amax(1)
    return -(true - other) / (top[:, 0] - top[:, 2] + 1e-12)


def dlr_targeted_loss(output: Any, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR ``-(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2)`` (larger = closer to target ``t``)."""
    z = _multiclass(default_logits(output), 4, "the targeted DLR loss")
    top = z.sort(dim=1, descending=True).values
    true = z.gather(1, y[:, None]).squeeze(1)
    tgt = z.gather(1, target[:, None]).squeeze(1)
    return -(true - tgt) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def apgd_checkpoints(steps: int) -> list[int]:
    """Iterations at which APGD may halve its step size: ``ceil(p_j * steps)`` for ``p_j <= 1``."""
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    its = (math.ceil(round(q * steps, 6)) for q in p[1:])  # round: 0.22 + 0.19 is 0.41000000000000003
    return sorted({w for w in its if 0 < w < steps})


# -- APGD ----------------------------------------------------------------------------------------
@ATTACKS.register("apgd", summary="auto-PGD (step-size halving at checkpoints, momentum 0.75) on any loss")
class APGD(Attack):
    """Auto-PGD with a pluggable loss (default cross-entropy). Parameters: ``steps`` (100),
    ``n_restarts`` (1), ``rho`` (0.75), ``momentum`` (0.75), ``random_start`` (True: uniform in the
    Linf ball / a random L2 direction at radius ``eps``; False: start at ``x``)."""

    name = "apgd"

    def __init__(self, model, *, eps: float = DEFAULT_EPS, steps: int = 100, n_restarts: int = 1,
                 rho: float = 0.75, momentum: float = 0.75, random_start: bool = True, **kwargs) -> None:
        super().__init__(model, eps=eps, **kwargs)
        if steps < 1 or n_restarts < 1:
            raise AttackError(f"{self.name}: steps and n_restarts must be >= 1 (got {steps}, {n_restarts})")
        if not 0 < rho <= 1 or not 0 <= momentum <= 1:
            raise AttackError(f"{self.name}: rho must be in (0, 1] and momentum in [0, 1] (got {rho}, {momentum})")
        self.steps, self.n_restarts = int(steps), int(n_restarts)
        self.rho, self.momentum, self.random_start = float(rho), float(momentum), bool(random_start)

    # the objective (ascended) and the success test, overridable by APGD-T
    def _objective(self, out: Any, y: torch.Tensor, extra: Any) -> torch.Tensor:
        loss = self.loss_fn(out, y)
        return -loss if self.targeted else loss

    def _start(self, x: torch.Tensor) -> torch.Tensor:
        if not self.random_start or self.eps == 0:
            return x.clone()
        gen = self.generator(x.device)
        if self.norm == "Linf":
            noise = (torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) * 2 - 1) * self.eps
        else:
            noise = self.eps * _l2_unit(torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype))
        return self.clip(x, x + noise)

    def _eval(self, x_adv: torch.Tensor, y: torch.Tensor, extra: Any):
        x_adv = x_adv.detach().requires_grad_(True)
        out = self.model(x_adv)
        obj = self._objective(out, y, extra)
        (grad,) = torch.autograd.grad(obj.sum(), x_adv)
        return grad.detach(), obj.detach(), self.is_success(self.logits_fn(out).detach(), y)

    def _direction(self, grad: torch.Tensor) -> torch.Tensor:
        return grad.sign() if self.norm == "Linf" else _l2_unit(grad)

    def run_once(self, x: torch.Tensor, y: torch.Tensor, extra: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One APGD run from a (random) start: ``(x_adv, success)`` per sample."""
        n = x.shape[0]
        shape = (-1, *([1] * (x.ndim - 1)))
        eta = torch.full((n,), 2 * self.eps, device=x.device, dtype=x.dtype)
        x_cur = self._start(x)
        g, f, ok = self._eval(x_cur, y, extra)
        found, x_found = ok.clone(), torch.where(ok.view(shape), x_cur, x)
        x_best, f_best, g_best = x_cur.clone(), f.clone(), g.clone()
        x_prev = x_cur
        x_cur = self.clip(x, x_cur + eta.view(shape) * self._direction(g))
        checkpoints = set(apgd_checkpoints(self.steps))
        rises = torch.zeros(n, device=x.device)
        last_cp, eta_cp, fbest_cp = 0, eta.clone(), f_best.clone()
        for k in range(1, self.steps):
            g_new, f_new, ok = self._eval(x_cur, y, extra)
            x_found = torch.where((ok & ~found).view(shape), x_cur, x_found)
            found |= ok
            rises += (f_new > f).float()
            up = f_new > f_best
            x_best = torch.where(up.view(shape), x_cur, x_best)
            g_best = torch.where(up.view(shape), g_new, g_best)
            f_best = torch.where(up, f_new, f_best)
            f, g = f_new, g_new
            if bool(found.all()):
                break
            if k in checkpoints:
                cond1 = rises < self.rho * (k - last_cp)
                cond2 = (eta_cp == eta) & (fbest_cp == f_best)
                reduce = cond1 | cond2
                eta_cp, fbest_cp = eta.clone(), f_best.clone()
                eta = torch.where(reduce, eta / 2, eta)
                x_cur = torch.where(reduce.view(shape), x_best, x_cur)
                x_prev = torch.where(reduce.view(shape), x_best, x_prev)
                g = torch.where(reduce.view(shape), g_best, g)
                rises.zero_()
                last_cp = k
            z = self.clip(x, x_cur + eta.view(shape) * self._direction(g))
            x_next = self.clip(x, x_cur + self.momentum * (z - x_cur) + (1 - self.momentum) * (x_cur - x_prev))
            x_prev, x_cur = x_cur, x_next
        if not bool(found.all()):  # the last iterate is evaluated too
            with torch.no_grad():
                ok = self.is_success(self.logits_fn(self.model(x_cur)), y)
            x_found = torch.where((ok & ~found).view(shape), x_cur, x_found)
            found |= ok
        return torch.where(found.view(shape), x_found, x_best), found

    def perturb(self, x: torch.Tensor, y: torch.Tensor, extra: Any = None) -> torch.Tensor:
        x_adv = x.clone()
        done = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for r in range(self.n_restarts):
            idx = (~done).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            sub_extra = extra[idx] if torch.is_tensor(extra) else extra
            adv, ok = self.run_once(x[idx], y[idx], sub_extra)
            keep = ok | torch.full_like(ok, r == 0)  # first run: keep its best point everywhere
            x_adv[idx[keep]] = adv[keep]
            done[idx[ok]] = True
        return x_adv


@ATTACKS.register("apgd_ce", summary="APGD on cross-entropy (AutoAttack's first component)")
class APGDCE(APGD):
    name = "apgd_ce"

    def __init__(self, model, *, loss_fn=None, **kwargs) -> None:
        super().__init__(model, loss_fn=loss_fn or cross_entropy, **kwargs)


@ATTACKS.register("apgd_dlr", summary="APGD on the difference-of-logits-ratio loss (needs >= 3 classes)")
class APGDDLR(APGD):
    name = "apgd_dlr"
    min_classes = 3
    supports_targeted = False

    def __init__(self, model, *, loss_fn=None, **kwargs) -> None:
        super().__init__(model, loss_fn=loss_fn or dlr_loss, **kwargs)


@ATTACKS.register("apgd_t", summary="APGD on the targeted DLR loss over the top wrong classes (needs >= 4 classes)")
class APGDT(APGD):
    """Untargeted in effect: for ``i = 1 .. n_target_classes`` it targets the ``(i+1)``-th most likely
    clean class of each sample not broken yet, with ``n_restarts`` runs per target."""

    name = "apgd_t"
    min_classes = 4
    supports_targeted = False

    def __init__(self, model, *, n_target_classes: int = 9, **kwargs) -> None:
        super().__init__(model, **kwargs)
        if n_target_classes < 1:
            raise AttackError(f"{self.name}: n_target_classes must be >= 1, got {n_target_classes}")
        self.n_target_classes = int(n_target_classes)

    def _objective(self, out: Any, y: torch.Tensor, extra: Any) -> torch.Tensor:
        return dlr_targeted_loss(out, y, extra)

    def perturb(self, x: torch.Tensor, y: torch.Tensor, extra: Any = None) -> torch.Tensor:
        with torch.no_grad():
            logits = _multiclass(self.logits_fn(self.model(x)), 4, self.name)
        order = logits.argsort(dim=1, descending=True)
        x_adv = x.clone()
        done = self.is_success(logits, y)
        for i in range(1, min(self.n_target_classes, logits.shape[1] - 1) + 1):
            idx = (~done).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            target = order[idx, i]
            # a sample whose clean top class is wrong is already done, so order[:, i] != y here
            adv = APGD.perturb(self, x[idx], y[idx], target)
            with torch.no_grad():
                ok = self.is_success(self.logits_fn(self.model(adv)), y[idx])
            x_adv[idx[ok]] = adv[ok]
            if i == 1:
                x_adv[idx[~ok]] = adv[~ok]
            done[idx[ok]] = True
        return x_adv


# -- the ensemble --------------------------------------------------------------------------------
AUTOATTACK_VERSIONS: dict[str, tuple[str, ...]] = {
    "fast": ("apgd_ce", "apgd_dlr"),
    "standard": ("apgd_ce", "apgd_t", "square"),
    "plus": ("apgd_ce", "apgd_dlr", "apgd_t", "square"),
}


@ATTACKS.register("autoattack", summary="AutoAttack-style ensemble: APGD-CE, APGD-DLR (+ APGD-T, Square), "
                                       "first success per sample")
class AutoAttack(Attack):
    """Runs ``components`` (default: the ``version``'s list) in order on the samples no earlier one
    broke; returns the first successful image per sample and the clean image for robust samples.

    ``steps``, ``n_restarts`` apply to the APGD components, ``n_queries`` to Square; ``skipped``
    (name -> reason) and ``last_counts`` (name -> newly broken samples in the last call) record
    what happened. Not bit-identical to the reference AutoAttack (see the module docstring).
    """

    name = "autoattack"
    supports_targeted = False

    def __init__(self, model, *, eps: float = DEFAULT_EPS, version: str = "fast",
                 components: list[str] | tuple[str, ...] | None = None, steps: int = 100,
                 n_restarts: int = 1, n_queries: int = 5000, **kwargs) -> None:
        super().__init__(model, eps=eps, **kwargs)
        if components is None:
            if version not in AUTOATTACK_VERSIONS:
                raise AttackError(f"{self.name}: unknown version '{version}' (known: {', '.join(AUTOATTACK_VERSIONS)})")
            components = AUTOATTACK_VERSIONS[version]
        if not components:
            raise AttackError(f"{self.name}: no components")
        self.version = version if tuple(components) == AUTOATTACK_VERSIONS.get(version) else "custom"
        self.steps, self.n_restarts, self.n_queries = int(steps), int(n_restarts), int(n_queries)
        shared = dict(norm=self.norm, eps=self.eps, logits_fn=self.logits_fn, seed=self.seed,
                      model_mode=self.model_mode)
        self.components: dict[str, Attack] = {}
        self.skipped: dict[str, str] = {}
        for comp in components:
            if comp not in ATTACKS:
                raise AttackError(f"{self.name}: unknown component '{comp}'")
            cls = ATTACKS.get(comp).obj
            if self.norm not in getattr(cls, "norms", ()):
                self.skipped[comp] = f"no {self.norm} version"
                continue
            extra = ({"steps": self.steps, "n_restarts": self.n_restarts} if issubclass(cls, APGD)
                     else {"n_queries": self.n_queries} if comp == "square" else {})
            self.components[comp] = cls(model, **shared, **extra)
        self.last_counts: dict[str, int] = {}

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            logits = self.logits_fn(self.model(x))
        k = num_classes(logits)
        done = predict_labels(logits) != y
        x_adv = x.clone()
        self.last_counts = {}
        for name, attack in self.components.items():
            if k < attack.min_classes:
                self.skipped[name] = f"needs >= {attack.min_classes} classes, the model has {k}"
                continue
            idx = (~done).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            adv = attack(x[idx], y[idx])
            with torch.no_grad():
                ok = predict_labels(self.logits_fn(self.model(adv))) != y[idx]
            x_adv[idx[ok]] = adv[ok]
            done[idx[ok]] = True
            self.last_counts[name] = int(ok.sum())
        return x_adv

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg["components"] = list(self.components)
        if self.skipped:
            cfg["skipped"] = dict(self.skipped)
        return cfg

