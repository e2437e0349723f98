"""Face-quality measures for DeepFidelity's fidelity targets, and the per-class quality mapping.

DeepFidelity orders faces *inside* each class by perceptual quality: a sharp, clean real face gets a
fidelity near 1, a degraded real face near 0.6; a degraded fake near 0, a clean fake near 0.4. The
paper scores quality with SER-FIQ (an ArcFace-based face-quality model under a non-commercial
licence, not installable offline). visec ships a no-download, no-learning measure instead and keeps
the scorer a plug-in: anything with ``score(images) -> (B,)`` (higher = better quality) works, and
a per-image quality computed elsewhere (SER-FIQ, BRISQUE, ...) can come from a manifest column.

:class:`SharpnessJPEGQuality` combines three classic no-reference estimates on the luminance:

* **sharpness**: variance of the 4-neighbour Laplacian, minus what sensor-like noise of the
  estimated level contributes (20 sigma^2 for white noise), on a log scale;
* **JPEG blockiness**: how much larger the luminance steps across the 8x8 block grid are than the
  steps inside blocks (1 for an uncompressed image; its log excess is the penalty);
* **noise**: Immerkaer's fast noise-sigma estimate (the response to a mask that cancels smooth
  ramps and is small on edges), in grey levels.

``quality = log(sharpness) - w_block * log(blockiness) - w_noise * log1p(sigma)``.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from visec.errors import ConfigError

__all__ = ["QualityMeasure", "SharpnessJPEGQuality", "QUALITY_MEASURES", "build_quality",
           "fidelity_targets", "FAKE_RANGE", "REAL_RANGE"]

FAKE_RANGE = (0.0, 0.4)  # fidelity of fake faces, worst to best quality
REAL_RANGE = (0.6, 1.0)  # fidelity of real faces, worst to best quality


@runtime_checkable
class QualityMeasure(Protocol):
    """A face-quality scorer: ``score(images (B, C, H, W) in [0, 1]) -> (B,)``, higher = better."""

    def score(self, images: torch.Tensor) -> torch.Tensor: ...


def _luma(images: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` in [0, 1] -> ``(B, 1, H, W)`` luminance in grey levels (0-255)."""
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(images.shape)}")
    x = images.float()
    if x.shape[1] >= 3:  # RGB (a 4th NIR channel is ignored)
        y = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    else:
        y = x.mean(1, keepdim=True)
    return y * 255.0


_LAPLACE = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
_IMMERKAER = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])


class SharpnessJPEGQuality:
    """Laplacian sharpness, JPEG blockiness and noise combined into one quality score.

    ``w_block`` weighs the log blockiness excess, ``w_noise`` the log noise sigma; ``block`` is
    the JPEG block size. All pieces are available separately from :meth:`components`.
    """

    name = "sharpness_jpeg"

    def __init__(self, w_block: float = 4.0, w_noise: float = 1.0, block: int = 8) -> None:
        self.w_block, self.w_noise, self.block = float(w_block), float(w_noise), int(block)

    def components(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        y = _luma(images)
        b, _, h, w = y.shape
        if h < 3 or w < 3:
            raise ValueError(f"images must be at least 3x3 pixels, got {h}x{w}")
        lap = F.conv2d(y, _LAPLACE.to(y).view(1, 1, 3, 3))
        lap_var = lap.flatten(1).var(dim=1)
        imm = F.conv2d(y, _IMMERKAER.to(y).view(1, 1, 3, 3)).abs().flatten(1).sum(1)
        sigma = imm * math.sqrt(math.pi / 2.0) / (6.0 * (w - 2) * (h - 2))
        sharp = (lap_var - 20.0 * sigma.square()).clamp_min(0.0)
        return {"sharpness": sharp, "blockiness": self._blockiness(y), "noise": sigma}

    def _blockiness(self, y: torch.Tensor) -> torch.Tensor:
        """Mean |step| across block borders / mean |step| inside blocks (columns and rows)."""
        ratios = [self._border_ratio((y[..., :, 1:] - y[..., :, :-1]).abs()),
                  self._border_ratio((y[..., 1:, :] - y[..., :-1, :]).abs().transpose(-1, -2))]
        return torch.stack(ratios).mean(0)

    def _border_ratio(self, steps: torch.Tensor) -> torch.Tensor:
        """``steps (B, 1, H, W-1)``: step k is between pixels k and k+1 along the last axis."""
        n = self.block
        border = torch.zeros(steps.shape[-1], dtype=torch.bool, device=steps.device)
        border[n - 1::n] = True  # between pixels n-1 and n, 2n-1 and 2n, ...
        if not border.any() or border.all():  # image narrower than two blocks: no grid to see
            return torch.ones(steps.shape[0], device=steps.device)
        at = steps[..., border].flatten(1).mean(1)
        off = steps[..., ~border].flatten(1).mean(1)
        return (at + 1e-3) / (off + 1e-3)

    @torch.no_grad()
    def score(self, images: torch.Tensor) -> torch.Tensor:
        c = self.components(images)
        return (torch.log(c["sharpness"] + 1.0)
                - self.w_block * torch.log(c["blockiness"]).clamp_min(0.0)
                - self.w_noise * torch.log1p(c["noise"]))


QUALITY_MEASURES = {"sharpness_jpeg": SharpnessJPEGQuality}


def build_quality(name: str) -> QualityMeasure:
    """A quality measure by name (see :data:`QUALITY_MEASURES`)."""
    if name not in QUALITY_MEASURES:
        from visec.registry import unknown_name

        raise ConfigError(unknown_name("quality measure", name, QUALITY_MEASURES))
    return QUALITY_MEASURES[name]()


def _scale(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    vmin, vmax = float(values.min()), float(values.max())
    if not vmax > vmin:  # constant (or single) input: the middle of the range, by definition
        return np.full(values.shape, 0.5 * (lo + hi))
    return lo + (values - vmin) / (vmax - vmin) * (hi - lo)


def fidelity_targets(quality, labels, fake_range: tuple[float, float] = FAKE_RANGE,
                     real_range: tuple[float, float] = REAL_RANGE) -> np.ndarray:
    """Per-class min-max map of quality to fidelity: fakes (label 1) into ``fake_range``, reals
    (label 0) into ``real_range``; the best quality of a class gets the top of its range. A class
    whose qualities are all equal maps to the middle of its range."""
    q = np.asarray(quality, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if q.shape != y.shape:
        raise ValueError(f"quality and labels differ in length: {q.shape[0]} vs {y.shape[0]}")
    if not np.isfinite(q).all():
        raise ValueError("quality scores must be finite")
    out = np.empty_like(q)
    for cls, rng in ((1, fake_range), (0, real_range)):
        sel = y == cls
        if sel.any():
            out[sel] = _scale(q[sel], *rng)
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    return out
