"""FedForgery's network: a residual generator G (VQ codebook or Gaussian VAE) and a classifier on the
residual ``r = x - G(x)``.

Shapes for ``x (B, 3, H, W)`` with ``H, W`` multiples of 4 and width ``C`` (64 in the paper):

* encoder: Conv4x4/2 -> BN -> LReLU(0.01) -> Conv4x4/2 -> BN -> LReLU -> ResBlock -> BN -> ResBlock
  -> BN gives ``z_e (B, C, H/4, W/4)`` (the VAE variant gives ``2C`` channels: mean and log-variance);
* codebook: ``K`` code vectors of size ``C`` (the columns of ``codebook``); every latent position is
  replaced by its nearest code in L2, with a straight-through gradient to the encoder;
* decoder: ResBlock -> BN -> ResBlock -> ConvT4x4/2 -> BN -> LReLU -> ConvT4x4/2 -> tanh -> BN(3)
  gives ``G(x) (B, 3, H, W)``;
* classifier: any registered backbone + linear head on ``r``, one logit (positive = fake).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from visec.models.backbones import IMAGENET_MEAN, IMAGENET_STD
from visec.models.classifier import BinaryClassifier, Normalize


class ResBlock(nn.Module):
    """``x + Conv1x1(LReLU(Conv3x3(LReLU(x))))`` (all convolutions with bias)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv3 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1(F.leaky_relu(self.conv3(F.leaky_relu(x, 0.01)), 0.01))


def nearest_codes(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index ``(B, h, w)`` of the code (a column of ``codebook (C, K)``) nearest in L2 to each
    latent vector of ``z (B, C, h, w)``."""
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    dist = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codebook + codebook.pow(2).sum(0, keepdim=True))
    return dist.argmin(1).view(z.shape[0], z.shape[2], z.shape[3])


class VectorQuantizer(nn.Module):
    """The codebook: ``forward(z_e) -> (z_q, e, index)``.

    ``e`` is the chosen code of every position with its gradient going to the codebook only (for the
    codebook term ``||sg[z_e] - e||^2``); ``z_q`` has the value of ``e`` and the gradient of ``z_e``
    (straight-through), so the decoder path trains the encoder and never the codebook.
    """

    def __init__(self, num_codes: int, dim: int) -> None:
        super().__init__()
        self.codebook = nn.Parameter(torch.randn(dim, num_codes) * 0.02)

    def forward(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        index = nearest_codes(z_e.detach(), self.codebook.detach())
        e = self.codebook.t()[index].permute(0, 3, 1, 2)  # (B, C, h, w)
        z_q = e.detach() + (z_e - z_e.detach())  # exactly the code's value, z_e's gradient
        return z_q, e, index


class ResidualGenerator(nn.Module):
    """``G``: encoder, VQ codebook (``kind="vq"``, the released model) or Gaussian latent
    (``kind="vae"``), decoder. ``forward(x) -> dict`` with ``recon`` and the latent terms."""

    def __init__(self, width: int = 64, num_codes: int = 128, kind: Literal["vq", "vae"] = "vq",
                 in_chans: int = 3) -> None:
        super().__init__()
        self.kind = kind
        latent = width * (2 if kind == "vae" else 1)
        self.encoder = nn.Sequential(
            nn.Conv2d(in_chans, width, 4, 2, 1), nn.BatchNorm2d(width), nn.LeakyReLU(0.01),
            nn.Conv2d(width, width, 4, 2, 1), nn.BatchNorm2d(width), nn.LeakyReLU(0.01),
            ResBlock(width), nn.BatchNorm2d(width), ResBlock(width), nn.BatchNorm2d(width),
            *( [nn.Conv2d(width, latent, 1)] if kind == "vae" else [] ))
        self.quantizer = VectorQuantizer(num_codes, width) if kind == "vq" else None
        self.decoder = nn.Sequential(
            ResBlock(width), nn.BatchNorm2d(width), ResBlock(width),
            nn.ConvTranspose2d(width, width, 4, 2, 1), nn.BatchNorm2d(width), nn.LeakyReLU(0.01),
            nn.ConvTranspose2d(width, in_chans, 4, 2, 1), nn.Tanh(), nn.BatchNorm2d(in_chans))
        self._init()

    def _init(self) -> None:
        """The released model's initialisation: Conv2d weights ~ N(0, 0.02) and zero biases (not the
        transposed convolutions), the last encoder BN's scale 1/40."""
        for m in self.modules():
            if type(m) is nn.Conv2d:
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)
        last_bn = [m for m in self.encoder if isinstance(m, nn.BatchNorm2d)][-1]
        nn.init.constant_(last_bn.weight, 1 / 40)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"the residual generator needs sides that are multiples of 4, got {tuple(x.shape[-2:])}")
        h = self.encoder(x)
        if self.quantizer is not None:
            z_q, e, index = self.quantizer(h)
            return {"recon": self.decoder(z_q), "z_e": h, "e": e, "index": index}
        mean, logvar = h.chunk(2, dim=1)
        logvar = logvar.clamp(-10, 10)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp() if self.training else mean
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(1).mean()
        return {"recon": self.decoder(z), "z_e": mean, "kl": kl}


class FedForgeryNet(nn.Module):
    """``x in [0,1] -> normalise -> r = x - G(x) -> classifier -> logit (B, 1)`` (positive = fake).

    :meth:`parts` returns every intermediate the local loss needs; ``forward`` is the logit only, so
    inference and attacks see the detector as any other.
    """

    def __init__(self, backbone: str = "resnet50", weights: str | None = None, width: int = 64,
                 num_codes: int = 128, generator: Literal["vq", "vae", "none"] = "vq", dropout: float = 0.0,
                 normalize: bool = True, **backbone_kwargs) -> None:
        super().__init__()
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD) if normalize else nn.Identity()
        # "none" (the ablation's counterpart): no generator, the classifier sees the image itself
        self.generator = ResidualGenerator(width, num_codes, generator) if generator != "none" else None
        self.classifier = BinaryClassifier(backbone, weights, dropout, normalize=False, **backbone_kwargs)

    def parts(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        xn = self.normalize(x)
        if self.generator is None:
            return {"input": xn, "residual": xn, "logit": self.classifier(xn)}
        out = self.generator(xn)
        residual = xn - out["recon"]
        return {**out, "input": xn, "residual": residual, "logit": self.classifier(residual)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.parts(x)["logit"]

    def cam_layer(self) -> nn.Module:
        return self.classifier.cam_layer()
