"""The attack base class shared by every attack, adversarial training and robust evaluation.

Conventions (the same for every attack):

* inputs are images in [0, 1] (normalisation lives inside the model), any shape ``(B, ...)``;
* the threat model is declared and validated: ``norm`` is ``"Linf"``, ``"L2"`` or ``"unbounded"``
  and ``eps`` its budget; every returned image lies in the ``eps`` ball around ``x`` and in [0, 1];
* ``targeted=False`` maximises the loss for the true label ``y``; ``targeted=True`` minimises it
  for the target label passed as ``y``;
* the loss is pluggable: ``loss_fn(model_output, y) -> per-sample loss (B,)``; ``model_output`` is
  whatever the model returns (e.g. a tuple of final and auxiliary logits), and ``logits_fn``
  picks the logits used for success checks;
* the model's train/eval mode (and ``requires_grad`` of its parameters) is restored afterwards;
  attacks run the model in eval mode unless ``model_mode="train"`` is asked for;
* randomness (random starts) comes from a seeded generator, so an attack is reproducible.

Logits may be multi-class ``(B, K)`` or a binary detector's single logit ``(B,)`` / ``(B, 1)``
(``logit > 0`` means class 1); the losses and success checks here handle all three.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Literal

import torch
import torch.nn.functional as F
from torch import nn

from visec.errors import VisecError
from visec.config import DEFAULT_EPS

Norm = Literal["Linf", "L2", "unbounded"]
LossFn = Callable[[Any, torch.Tensor], torch.Tensor]


class AttackError(VisecError, ValueError):
    """An attack was configured with an invalid threat model or parameters."""


def default_logits(output: Any) -> torch.Tensor:
    """The logits inside a model output: the tensor itself, or the first item of a tuple/list."""
    return output[0] if isinstance(output, (tuple, list)) else output


def binary_logit(logits: torch.Tensor) -> torch.Tensor:
    """A binary detector's ``(B, 1)`` logit as ``(B,)``; anything else unchanged."""
    return logits.squeeze(1) if logits.ndim == 2 and logits.shape[1] == 1 else logits


def is_binary(logits: torch.Tensor) -> bool:
    """True for a single-logit binary output ``(B,)`` or ``(B, 1)``."""
    return binary_logit(logits).ndim == 1


def num_classes(logits: torch.Tensor) -> int:
    """Classes the logits decide between (2 for a single binary logit)."""
    return 2 if is_binary(logits) else int(logits.shape[1])


def predict_labels(logits: torch.Tensor) -> torch.Tensor:
    """Predicted class per sample: ``argmax`` for ``(B, K)``, ``logit > 0`` for a binary logit."""
    logits = binary_logit(logits)
    return (logits > 0).long() if logits.ndim == 1 else logits.argmax(1)


def cross_entropy(output: Any, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy on the final logits (binary logits ``(B,)``/``(B, 1)`` use BCE)."""
    logits = binary_logit(default_logits(output))
    if logits.ndim == 1:
        return F.binary_cross_entropy_with_logits(logits, y.float(), reduction="none")
    return F.cross_entropy(logits, y, reduction="none")


def margin_loss(output: Any, y: torch.Tensor) -> torch.Tensor:
    """CW margin: ``max_{k != y} z_k - z_y`` per sample (larger = more wrong).

    A binary logit ``z`` is read as the two logits ``[0, z]``: the margin is ``z`` for ``y = 0``
    and ``-z`` for ``y = 1``.
    """
    z = binary_logit(default_logits(output))
    if z.ndim == 1:
        return z * (1 - 2 * y.to(z.dtype))
    true = z.gather(1, y[:, None]).squeeze(1)
    other = z.masked_fill(F.one_hot(y, z.shape[1]).bool(), float("-inf")).amax(1)
    return other - true


def project(delta: torch.Tensor, norm: Norm, eps: float) -> torch.Tensor:
    """Project a perturbation onto the ``norm`` ball of radius ``eps``."""
    if norm == "Linf":
        return delta.clamp(-eps, eps)
    if norm == "L2":
        flat = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        factor = (eps / flat).clamp(max=1.0)
        return delta * factor.view(-1, *([1] * (delta.ndim - 1)))
    return delta


def lp_norm(delta: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Per-sample size of a perturbation in the attack's norm (L2 for ``unbounded``)."""
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "Linf" else flat.norm(dim=1)


class Attack(ABC):
    """Base class: subclasses implement :meth:`perturb`; call the attack as ``attack(x, y)``."""

    name = "attack"
    norms: tuple[str, ...] = ("Linf", "L2")
    #: what the attack needs of the model: "white-box" (gradients), "black-box" (scores only) or
    #: "transfer" (gradients of another, surrogate model); the masking checks compare them.
    access: str = "white-box"
    #: fewest classes the attack's loss is defined for (DLR needs 3, targeted DLR 4).
    min_classes: int = 2
    supports_targeted: bool = True

    def __init__(self, model: nn.Module, *, norm: Norm = "Linf", eps: float = DEFAULT_EPS,
                 targeted: bool = False, loss_fn: LossFn | None = None,
                 logits_fn: Callable[[Any], torch.Tensor] = default_logits, seed: int = 0,
                 model_mode: Literal["eval", "train"] = "eval") -> None:
        if norm not in self.norms:
            raise AttackError(f"{self.name}: norm '{norm}' not supported (supported: {', '.join(self.norms)})")
        if norm != "unbounded" and not (eps >= 0):
            raise AttackError(f"{self.name}: eps must be >= 0, got {eps}")
        if model_mode not in ("eval", "train"):
            raise AttackError(f"{self.name}: model_mode must be 'eval' or 'train'")
        if targeted and not self.supports_targeted:
            raise AttackError(f"{self.name}: has no targeted mode")
        if not isinstance(model, nn.Module):
            raise AttackError(f"{self.name}: model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.norm: Norm = norm
        self.eps = float(eps) if norm != "unbounded" else float("inf")
        self.targeted = bool(targeted)
        self.loss_fn = loss_fn or cross_entropy
        self.logits_fn = logits_fn
        self.seed = seed
        self.model_mode = model_mode
        self._generator: torch.Generator | None = None

    @abstractmethod
    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The adversarial images for clean ``x`` and labels (or targets) ``y``."""

    # -- shared machinery --------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self._check_inputs(x, y)
        with self._model_state():
            x_adv = self.perturb(x.detach(), y.detach())
        return self._finish(x, x_adv)

    def generator(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        return self._generator

    def objective(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample objective the attack *ascends*: the loss, or minus the loss when targeted."""
        loss = self.loss_fn(self.model(x), y)
        return -loss if self.targeted else loss

    def gradient(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(d objective.sum() / dx, objective)`` at ``x``."""
        x = x.detach().requires_grad_(True)
        obj = self.objective(x, y)
        (grad,) = torch.autograd.grad(obj.sum(), x)
        return grad.detach(), obj.detach()

    def is_success(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample success for already computed logits (see :meth:`success`)."""
        pred = predict_labels(logits)
        return pred == y if self.targeted else pred != y

    def clip(self, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        """Back into the ``eps`` ball around ``x`` and into [0, 1]."""
        return (x + project(x_adv - x, self.norm, self.eps)).clamp(0.0, 1.0)

    def success(self, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample success: misclassified (untargeted) or classified as the target (targeted)."""
        with torch.no_grad(), self._model_state():
            logits = self.logits_fn(self.model(x_adv))
        return self.is_success(logits, y)

    def _check_inputs(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if not torch.is_floating_point(x):
            raise AttackError(f"{self.name}: images must be float tensors in [0, 1], got {x.dtype}")
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise AttackError(f"{self.name}: images must lie in [0, 1] (got range "
                              f"[{x.min().item():.3g}, {x.max().item():.3g}]); normalise inside the model")
        if y.shape[0] != x.shape[0]:
            raise AttackError(f"{self.name}: {x.shape[0]} images but {y.shape[0]} labels")

    def _finish(self, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        return self.clip(x, x_adv.detach())

    @contextmanager
    def _model_state(self) -> Iterator[None]:
        # every sub-module's own flag: a wrapper's flag says nothing about the network it wraps
        modes = [(m, m.training) for m in self.model.modules()]
        flags = [p.requires_grad for p in self.model.parameters()]
        try:
            self.model.train(self.model_mode == "train")
            for p in self.model.parameters():
                p.requires_grad_(False)
            yield
        finally:
            for m, mode in modes:
                m.training = mode
            for p, flag in zip(self.model.parameters(), flags):
                p.requires_grad_(flag)

    def config(self) -> dict[str, Any]:
        """The attack's settings as plain values (for result cards)."""
        skip = {"model", "logits_fn", "loss_fn", "_generator"}
        cfg: dict[str, Any] = {"attack": self.name, "class": type(self).__name__, "access": self.access,
                               "loss": getattr(self.loss_fn, "__name__", type(self.loss_fn).__name__)}
        for key, val in vars(self).items():
            if key in skip or key.startswith("_"):
                continue
            if isinstance(val, (bool, int, float, str)) or val is None:
                cfg[key] = val
            elif isinstance(val, (tuple, list)) and all(isinstance(v, (bool, int, float, str)) for v in val):
                cfg[key] = list(val)
        if cfg.get("eps") == float("inf"):
            cfg["eps"] = None
        return cfg

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(norm={self.norm}, eps={self.eps:.5g}, targeted={self.targeted}, "
                f"loss={getattr(self.loss_fn, '__name__', type(self.loss_fn).__name__)})")
