"""Grad-CAM with an explicit hook lifecycle (registered on entry, removed on exit).

Used for the report's saliency maps and inside training losses (ACMF's attention consistency):
the channel weights are the spatial mean of the gradients, taken as constants (no
``create_graph``), while the returned map keeps its graph through the layer's activations, so a
loss on the map trains the network through those activations.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn


class GradCAM:
    """``with GradCAM(layer) as cam: maps = cam(fn, images)``.

    ``fn(images)`` returns one logit per image (``(B,)``, probability of fake = sigmoid). The target
    is the predicted class (``"pred"``: the logit when it says fake, minus the logit when it says
    real), ``"fake"`` or ``"real"``. Maps are ``(B, H, W)`` at the input size (bilinear,
    ``align_corners=True``), min-max normalised per image to [0, 1]; ``relu`` clips negative
    evidence first (the original Grad-CAM; ACMF uses none).
    """

    def __init__(self, layer: nn.Module, *, relu: bool = False) -> None:
        self.layer = layer
        self.relu = relu
        self._act: torch.Tensor | None = None
        self._handle = None

    def __enter__(self) -> "GradCAM":
        self._handle = self.layer.register_forward_hook(self._keep)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _keep(self, module: nn.Module, inputs, output: torch.Tensor) -> None:
        self._act = output

    def __call__(self, fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                 target: Literal["pred", "fake", "real"] = "pred") -> torch.Tensor:
        if self._handle is None:
            raise RuntimeError("GradCAM is used outside its `with` block (its hook is not registered)")
        with torch.enable_grad():
            logits = fn(images)
            act = self._act
            if act is None or not act.requires_grad:
                raise RuntimeError("GradCAM: the layer produced no activation with a gradient; "
                                   "is it part of fn and are its parameters trainable?")
            sign = {"fake": torch.ones_like(logits), "real": -torch.ones_like(logits),
                    "pred": torch.where(logits.detach() >= 0, 1.0, -1.0)}[target]
            grads, = torch.autograd.grad((sign * logits).sum(), act, retain_graph=True)
        weights = grads.mean(dim=(2, 3), keepdim=True).detach()
        cam = (weights * act).sum(1, keepdim=True)
        if self.relu:
            cam = cam.clamp_min(0)
        cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=True)[:, 0]
        lo = cam.amin(dim=(1, 2), keepdim=True)
        hi = cam.amax(dim=(1, 2), keepdim=True)
        return (cam - lo) / (hi - lo).clamp_min(1e-8)


def grad_cam(layer: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
             target: Literal["pred", "fake", "real"] = "pred", relu: bool = False) -> torch.Tensor:
    """One-shot Grad-CAM maps (detached), for reports and inspection."""
    with GradCAM(layer, relu=relu) as cam:
        return cam(fn, images, target).detach()
