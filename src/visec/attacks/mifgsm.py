"""Transfer attacks: MI-FGSM (momentum), DI (input diversity) and TI (translation-invariant smoothing).

One class, :class:`TransferFGSM`, holds the three ideas as parameters; the registered names are
presets of it:

* ``mifgsm``: momentum ``g <- decay * g + grad / mean|grad|`` (Dong et al., 2018);
* ``di_fgsm``: iterative FGSM on randomly resized and padded inputs, with probability
  ``diversity_prob`` per step (Xie et al., 2019);
* ``ti_fgsm``: the gradient convolved with a Gaussian kernel before the sign (Dong et al., 2019);
* ``di_ti_mifgsm``: all three.

Every step has size ``alpha`` (default ``eps / steps``, so ``steps`` steps can reach the boundary);
the result is projected onto the ``eps`` ball and [0, 1] after every step. No random start.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from visec.attacks.base import Attack, AttackError
from visec.attacks.pgd import _l2_unit
from visec.config import DEFAULT_EPS
from visec.registry import ATTACKS


def gaussian_kernel(size: int, nsig: float = 3.0) -> torch.Tensor:
    """A normalised ``size x size`` Gaussian over ``[-nsig, nsig]`` standard deviations."""
    if size < 1:
        raise AttackError(f"Gaussian kernel size must be >= 1, got {size}")
    if size == 1:
        return torch.ones(1, 1)
    t = torch.linspace(-nsig, nsig, size, dtype=torch.float64)
    g = torch.exp(-0.5 * t ** 2)
    k = torch.outer(g, g)
    return (k / k.sum()).float()


@ATTACKS.register("mifgsm", summary="momentum iterative FGSM (transfer attack; decay mu)")
class TransferFGSM(Attack):
    """Iterative FGSM with optional momentum (MI), input diversity (DI) and gradient smoothing (TI).

    Parameters: ``steps``, ``alpha`` (default ``eps / steps``), ``decay`` (momentum ``mu``, 0 = off),
    ``diversity_prob`` (probability of the random resize-and-pad per step, 0 = off),
    ``resize_rate`` (the padded side is ``int(H * resize_rate)``), ``ti_kernel`` (odd Gaussian
    kernel side, 0 = off) and ``ti_nsig``. The diversity transform resizes to a random side in
    ``[H, R)`` with ``R = max(int(H * resize_rate), H + 1)``, pads at a random offset to ``R`` and, with
    ``keep_size=True`` (default), resizes back to ``H x W`` so any model accepts it. The TI presets
    use a 7 x 7 kernel (the paper's 15 x 15 was for 299 px images); pass ``ti_kernel`` to change it.
    """

    name = "mifgsm"

    def __init__(self, model, *, eps: float = DEFAULT_EPS, steps: int = 10, alpha: float | None = None,
                 decay: float = 1.0, diversity_prob: float = 0.0, resize_rate: float = 1.1,
                 ti_kernel: int = 0, ti_nsig: float = 3.0, keep_size: bool = True, **kwargs) -> None:
        super().__init__(model, eps=eps, **kwargs)
        if steps < 1:
            raise AttackError(f"{self.name}: steps must be >= 1, got {steps}")
        if decay < 0:
            raise AttackError(f"{self.name}: decay must be >= 0, got {decay}")
        if not 0 <= diversity_prob <= 1:
            raise AttackError(f"{self.name}: diversity_prob must be in [0, 1], got {diversity_prob}")
        if resize_rate < 1:
            raise AttackError(f"{self.name}: resize_rate must be >= 1, got {resize_rate}")
        if ti_kernel < 0 or (ti_kernel and ti_kernel % 2 == 0):
            raise AttackError(f"{self.name}: ti_kernel must be 0 (off) or an odd size, got {ti_kernel}")
        if alpha is not None and alpha < 0:
            raise AttackError(f"{self.name}: alpha must be >= 0, got {alpha}")
        if alpha is None and self.norm == "unbounded":
            raise AttackError(f"{self.name}: give alpha for an unbounded threat model")
        self.steps = int(steps)
        self.alpha = float(alpha) if alpha is not None else self.eps / self.steps
        self.decay, self.diversity_prob, self.resize_rate = float(decay), float(diversity_prob), float(resize_rate)
        self.ti_kernel, self.ti_nsig, self.keep_size = int(ti_kernel), float(ti_nsig), bool(keep_size)

    # -- the three ingredients ---------------------------------------------------------------------
    def diverse(self, x: torch.Tensor) -> torch.Tensor:
        """The DI transform (differentiable), applied with probability ``diversity_prob``."""
        if self.diversity_prob == 0 or x.ndim != 4:
            return x
        gen = self.generator(x.device)
        if torch.rand((), generator=gen, device=x.device).item() >= self.diversity_prob:
            return x
        h, w = x.shape[-2:]
        big_h, big_w = max(int(h * self.resize_rate), h + 1), max(int(w * self.resize_rate), w + 1)
        if big_h == h and big_w == w:
            return x
        side_h = int(torch.randint(h, big_h, (), generator=gen, device=x.device).item()) if big_h > h else h
        side_w = round(side_h * w / h) if big_h > h else w
        side_w = min(max(side_w, w), big_w)
        out = F.interpolate(x, size=(side_h, side_w), mode="nearest")
        pad_h, pad_w = big_h - side_h, big_w - side_w
        top = int(torch.randint(0, pad_h + 1, (), generator=gen, device=x.device).item())
        left = int(torch.randint(0, pad_w + 1, (), generator=gen, device=x.device).item())
        out = F.pad(out, (left, pad_w - left, top, pad_h - top), value=0.0)
        if self.keep_size:
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
        return out

    def smooth(self, grad: torch.Tensor) -> torch.Tensor:
        """The TI smoothing: a depthwise convolution of the gradient with a Gaussian kernel."""
        if not self.ti_kernel or grad.ndim != 4:
            return grad
        c = grad.shape[1]
        k = gaussian_kernel(self.ti_kernel, self.ti_nsig).to(grad)
        weight = k.expand(c, 1, *k.shape).contiguous()
        return F.conv2d(grad, weight, padding=self.ti_kernel // 2, groups=c)

    def input_gradient(self, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_adv = x_adv.detach().requires_grad_(True)
        loss = self.loss_fn(self.model(self.diverse(x_adv)), y)
        obj = -loss if self.targeted else loss
        (grad,) = torch.autograd.grad(obj.sum(), x_adv)
        return grad.detach()

    # -- the attack ---------------------------------------------------------------------------------
    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_adv = x.clone()
        momentum = torch.zeros_like(x)
        shape = (-1, *([1] * (x.ndim - 1)))
        for _ in range(self.steps):
            grad = self.smooth(self.input_gradient(x_adv, y))
            if self.decay > 0:
                grad = grad / grad.abs().flatten(1).mean(1).clamp_min(1e-12).view(shape)
                momentum = self.decay * momentum + grad
                grad = momentum
            step = grad.sign() if self.norm == "Linf" else _l2_unit(grad)
            x_adv = self.clip(x, x_adv + self.alpha * step)
        return x_adv


@ATTACKS.register("di_fgsm", summary="iterative FGSM with input diversity (random resize + pad), transfer attack")
class DIFGSM(TransferFGSM):
    name = "di_fgsm"

    def __init__(self, model, *, decay: float = 0.0, diversity_prob: float = 0.5, **kwargs) -> None:
        super().__init__(model, decay=decay, diversity_prob=diversity_prob, **kwargs)


@ATTACKS.register("ti_fgsm", summary="iterative FGSM with Gaussian-smoothed gradients (translation-invariant)")
class TIFGSM(TransferFGSM):
    name = "ti_fgsm"

    def __init__(self, model, *, decay: float = 0.0, ti_kernel: int = 7, **kwargs) -> None:
        super().__init__(model, decay=decay, ti_kernel=ti_kernel, **kwargs)


@ATTACKS.register("di_ti_mifgsm", summary="momentum + input diversity + gradient smoothing (strongest transfer preset)")
class DITIMIFGSM(TransferFGSM):
    name = "di_ti_mifgsm"

    def __init__(self, model, *, decay: float = 1.0, diversity_prob: float = 0.5, ti_kernel: int = 7,
                 **kwargs) -> None:
        super().__init__(model, decay=decay, diversity_prob=diversity_prob, ti_kernel=ti_kernel, **kwargs)
