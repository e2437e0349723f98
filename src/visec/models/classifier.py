"""Shared model parts: input normalisation inside the model, and backbone + linear head (the plain
baseline every detector is compared to, and the body of ACMF)."""

from __future__ import annotations

import torch
from torch import nn

from visec.models.backbones import IMAGENET_MEAN, IMAGENET_STD
from visec.registry import BACKBONES


class Normalize(nn.Module):
    """Per-channel normalisation inside the model, so inputs (and attacks) stay in [0, 1] pixels."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class BinaryClassifier(nn.Module):
    """``x in [0,1] (B,3,H,W)`` -> normalise -> backbone features ``(B,F)`` -> dropout -> logit ``(B,1)``."""

    def __init__(self, backbone: str = "tiny_cnn", weights: str | None = None, dropout: float = 0.0,
                 normalize: bool = True, **backbone_kwargs) -> None:
        super().__init__()
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD) if normalize else nn.Identity()
        self.backbone = BACKBONES.build(backbone, weights=weights, **backbone_kwargs)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.backbone.num_features, 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.forward_features(x)))

    def cam_layer(self) -> nn.Module:
        from visec.models.backbones import cam_layer

        return cam_layer(self.backbone)
