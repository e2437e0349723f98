"""Sharpness-aware minimisation as optimiser wrappers: SAM and GCSAM (GCSCoOp's gradient-constrained SAM).

Any method on the engine trains with them through ``train.sam=sam|gcsam`` (``train.sam_rho``,
``train.sam_beta1``, ``train.sam_beta2``): :func:`visec.engine.module.make_optimizer` wraps the
configured base optimiser (SGD, Adam, AdamW), and every step runs the closure Lightning passes
twice (two forward/backward passes):

1. ``g = grad L(theta)``; ``eps = rho * g / (||g||_2 + 1e-12)`` with the norm taken over *all*
   trainable tensors together;
2. ``g_s = grad L(theta + eps)``; the parameters are restored bit for bit from a copy;
3. SAM steps the base optimiser with ``g_s``. GCSAM replaces, per parameter tensor, the gradient
   by :func:`constrained_gradient` of ``(g_s, g)``, then steps the base optimiser.

The rule (GCSCoOp, ``dassl/optim/gcsam.py``): with ``c = cos(g_s, g)`` and ``z = g_s + g``,

* ``beta1 > 0``: ``c <= beta1`` -> ``g`` (ERM); ``c >= beta2`` -> ``g_s`` (SAM); otherwise the
  projection ``<g_s, z_hat> z_hat`` of the SAM gradient on the normalised sum;
* ``beta1 <= 0``: ``c < beta2`` -> projection, otherwise ``g_s``;
* a zero ``z`` (``g = -g_s``) falls back to ``g``.

Each step records ``last_stats``: per tensor the cosine and the branch taken (0 ERM, 1 projection,
2 SAM), which :class:`~visec.engine.module.MethodModule` logs as ``train/sam_cos`` and the branch
shares ``train/sam_erm`` / ``train/sam_proj`` / ``train/sam_sam`` (one row per step).

Mixed precision with a gradient *scaler* (``16-mixed``) is refused: the scaler calls the closure
itself before the step. ``bf16-mixed`` and ``32-true`` run the closure inside ``step``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Literal

import torch

ERM, PROJECTION, SAM_BRANCH = 0, 1, 2
BRANCH_NAMES = {ERM: "erm", PROJECTION: "proj", SAM_BRANCH: "sam"}


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine of two flattened float64 vectors (1 when either is zero)."""
    den = torch.linalg.vector_norm(a) * torch.linalg.vector_norm(b)
    return float(a @ b / den) if den > 0 else 1.0


def constrained_gradient(g_sam: torch.Tensor, g: torch.Tensor, beta1: float, beta2: float
                         ) -> tuple[torch.Tensor, float, int]:
    """GCSAM's rule for one tensor: ``(final gradient, cos(g_sam, g), branch)``."""
    a, b = g_sam.flatten().double(), g.flatten().double()
    cos = _cosine(a, b)
    z = a + b
    nz = torch.linalg.vector_norm(z)
    if nz == 0:  # g = -g_s: no direction between them
        return g, cos, ERM
    if beta1 > 0:
        if cos <= beta1:
            return g, cos, ERM
        if cos >= beta2:
            return g_sam, cos, SAM_BRANCH
    elif cos >= beta2:
        return g_sam, cos, SAM_BRANCH
    z_hat = z / nz
    proj = (a @ z_hat) * z_hat
    return proj.view_as(g_sam).to(g_sam.dtype), cos, PROJECTION


class SAM(torch.optim.Optimizer):
    """SAM (``rule="sam"``) or GCSAM (``rule="gcsam"``) around a base optimiser built by ``base`` from
    this optimiser's parameter groups; ``step(closure)`` needs the closure (it is called twice)."""

    def __init__(self, params: Iterable[Any], base: Callable[[list[dict]], torch.optim.Optimizer], *,
                 rho: float = 0.05, rule: Literal["sam", "gcsam"] = "sam", beta1: float = 0.5,
                 beta2: float = 0.8) -> None:
        if rho < 0:
            raise ValueError(f"rho must be >= 0 (got {rho})")
        if rule not in ("sam", "gcsam"):
            raise ValueError(f"rule must be 'sam' or 'gcsam' (got {rule!r})")
        if not beta1 < beta2:
            raise ValueError(f"beta1 must be below beta2 (got {beta1}, {beta2})")
        super().__init__(params, dict(rho=rho))
        self.base = base(self.param_groups)
        self.param_groups = self.base.param_groups  # one set of groups: schedulers move the base's lr
        self.state = self.base.state  # one state (momentum buffers), which Lightning moves between devices
        self.defaults.update(self.base.defaults)
        self.rho, self.rule, self.beta1, self.beta2 = float(rho), rule, float(beta1), float(beta2)
        self.last_stats: dict[str, list] = {"cos": [], "branch": []}

    def _trainable(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"] if p.grad is not None]

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        if closure is None:
            raise RuntimeError("SAM/GCSAM need the closure (two forward/backward passes per step); with manual "
                               "optimisation call optimizer.step(closure)")
        with torch.enable_grad():
            loss = closure()
        params = self._trainable()
        if not params:
            return loss
        g = [p.grad.detach().clone() for p in params]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(x.double()) for x in g]))
        scale = self.rho / (float(norm) + 1e-12)
        saved = [p.detach().clone() for p in params]
        for p, gi in zip(params, g):
            p.add_(gi, alpha=scale)
        with torch.enable_grad():
            closure()
        for p, s in zip(params, saved):  # restore exactly: theta + eps never reaches the base step
            p.copy_(s)
        cos_all, branch_all = [], []
        for p, gi in zip(params, g):
            gs = p.grad
            if gs is None:  # no gradient at theta + eps: keep the ERM one
                p.grad = gi
                continue
            if self.rule == "gcsam":
                final, cos, branch = constrained_gradient(gs, gi, self.beta1, self.beta2)
                p.grad = final.clone()
            else:
                cos, branch = _cosine(gs.flatten().double(), gi.flatten().double()), SAM_BRANCH
            cos_all.append(cos)
            branch_all.append(branch)
        self.last_stats = {"cos": cos_all, "branch": branch_all}
        self.base.step()
        return loss

    # zero_grad() and state_dict() need no override: state and param_groups are the base's own objects
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # torch's would replace them: re-share
        self.base.load_state_dict(state_dict)
        self.param_groups, self.state = self.base.param_groups, self.base.state
