"""SSAAFormer (UniFormer with symmetric spatial attention augmentation) and the fidelity scorer.

Shapes for the UniFormer-L-LS sizes at ``B x 3 x 224 x 224`` (patch sizes 4, 2, 2, 2):

=============  ==================================================  ==================
stage          blocks                                              map
=============  ==================================================  ==================
embed 1        conv 4x4/4 + LayerNorm over channels                B x 128 x 56 x 56
stage 1        5 x CBlock with the SSAA fusion (``ssaa_stages``)    B x 128 x 56 x 56
embed 2..4     conv 2x2/2 + LayerNorm                              halves, widens
stage 2        10 x CBlock                                         B x 192 x 28 x 28
stage 3, 4     24 / 7 x SABlock (global MHSA, head_dim 64)         B x 448 / 640 x ...
norm           BatchNorm2d, flattened to tokens                    B x 49 x 640
=============  ==================================================  ==================

Toolkit convention: one logit, positive = fake. ``head`` reads the token mean, ``aux_head`` every
token (token labelling). The fidelity stage reads ``f = mean + 0.5 * max`` of the post-BN tokens
and regresses a fidelity score ``s`` (high = real) with an RBF support-vector regressor whose
fitted parameters live in buffers, so they travel with ``state_dict()``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from visec.models.backbones import IMAGENET_MEAN, IMAGENET_STD


def _drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the whole residual branch of a sample with probability ``p``."""
    if p == 0.0 or not training:
        return x
    keep = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), device=x.device, dtype=x.dtype)
    return x * keep.bernoulli_(1.0 - p) / (1.0 - p)


class PatchEmbed(nn.Module):
    """Non-overlapping ``p x p`` conv with stride ``p``, then LayerNorm over channels."""

    def __init__(self, in_chans: int, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last throughout: depthwise convolutions are several times faster that way on CPU
        x = self.proj(x.contiguous(memory_format=torch.channels_last))
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class SymmetricFusion(nn.Module):
    """The SSAA step: ``a~ = alpha * a + (1 - alpha) * flip_W(a)`` with ``(alpha, 1-alpha) = softmax(w)``.

    ``w`` in R^2 is learnable and starts at (1, 1), so at initialisation ``alpha = 0.5`` and the
    fused map is exactly mirror-symmetric along the width axis.
    """

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(2))

    def weights(self) -> torch.Tensor:
        return torch.softmax(self.w, dim=0)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        alpha = self.weights()
        return alpha[0] * a + alpha[1] * a.flip(-1)


class CBlock(nn.Module):
    """UniFormer's local block on ``(B, C, H, W)``; with ``ssaa=True`` the CBlock_flip (SSAA) variant.

    1. ``x = x + DW3x3(x)`` (conv position encoding)
    2. ``a = DW5x5(PW1(BN(x)))``; SSAA: ``a = fuse(a)``; ``x = x + drop(gamma1 * PW2(a))``
    3. ``x = x + drop(gamma2 * CMLP(BN(x)))``, CMLP = 1x1 conv (C -> rC), GELU, 1x1 conv (rC -> C)
    """

    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 layer_scale: float | None = 1e-6, ssaa: bool = False) -> None:
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.BatchNorm2d(dim)
        self.conv1 = nn.Conv2d(dim, dim, 1)
        self.attn = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.fuse = SymmetricFusion() if ssaa else None
        self.conv2 = nn.Conv2d(dim, dim, 1)
        self.norm2 = nn.BatchNorm2d(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.Conv2d(hidden, dim, 1))
        self.drop_path = drop_path
        scale = 1.0 if layer_scale is None else layer_scale
        self.gamma1 = nn.Parameter(torch.full((dim, 1, 1), scale), requires_grad=layer_scale is not None)
        self.gamma2 = nn.Parameter(torch.full((dim, 1, 1), scale), requires_grad=layer_scale is not None)

    def local_map(self, x: torch.Tensor) -> torch.Tensor:
        """``a = DW5x5(PW1(BN(x)))``: the local aggregation map before any fusion."""
        return self.attn(self.conv1(self.norm1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed(x)
        a = self.local_map(x)
        if self.fuse is not None:
            a = self.fuse(a)
        x = x + _drop_path(self.gamma1 * self.conv2(a), self.drop_path, self.training)
        return x + _drop_path(self.gamma2 * self.mlp(self.norm2(x)), self.drop_path, self.training)


class SABlock(nn.Module):
    """Conv position encoding, then a pre-norm transformer block (global MHSA, MLP) with layer scale."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path: float = 0.0, layer_scale: float | None = 1e-6) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop_path = drop_path
        scale = 1.0 if layer_scale is None else layer_scale
        self.gamma1 = nn.Parameter(torch.full((dim,), scale), requires_grad=layer_scale is not None)
        self.gamma2 = nn.Parameter(torch.full((dim,), scale), requires_grad=layer_scale is not None)

    def _attention(self, t: torch.Tensor) -> torch.Tensor:
        b, n, c = t.shape
        q, k, v = self.qkv(t).view(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed(x)
        b, c, h, w = x.shape
        t = x.permute(0, 2, 3, 1).reshape(b, h * w, c)  # a view for channels-last maps
        t = t + _drop_path(self.gamma1 * self._attention(self.norm1(t)), self.drop_path, self.training)
        t = t + _drop_path(self.gamma2 * self.mlp(self.norm2(t)), self.drop_path, self.training)
        return t.reshape(b, h, w, c).permute(0, 3, 1, 2)


class SSAAFormer(nn.Module):
    """Four stages (two of CBlocks, two of SABlocks), final BatchNorm, class and token heads.

    ``ssaa_stages`` (1-based, among the convolutional stages 1 and 2) use the SSAA fusion;
    stochastic depth rises linearly from 0 to ``drop_path`` over all blocks; ``mix_token``
    enables MixToken in training (see :meth:`forward_map`).
    """

    def __init__(self, depths: Sequence[int] = (5, 10, 24, 7), dims: Sequence[int] = (128, 192, 448, 640),
                 head_dim: int = 64, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path: float = 0.0, layer_scale: float | None = 1e-6,
                 patch_sizes: Sequence[int] = (4, 2, 2, 2), ssaa_stages: Sequence[int] = (1,),
                 in_chans: int = 3, mix_token: bool = False) -> None:
        super().__init__()
        if not (len(depths) == len(dims) == len(patch_sizes) == 4):
            raise ValueError("depths, dims and patch_sizes need one entry per stage (4)")
        bad = [s for s in ssaa_stages if s not in (1, 2)]
        if bad:
            raise ValueError(f"ssaa_stages must name convolutional stages (1 or 2), got {bad}")
        self.dims, self.ssaa_stages, self.mix_token = tuple(dims), tuple(ssaa_stages), mix_token
        self.reduction = int(np.prod(patch_sizes))
        rates = torch.linspace(0, drop_path, sum(depths)).tolist()
        self.embeds = nn.ModuleList()
        self.stages = nn.ModuleList()
        start = 0
        for i, (depth, dim, patch) in enumerate(zip(depths, dims, patch_sizes)):
            self.embeds.append(PatchEmbed(in_chans if i == 0 else dims[i - 1], dim, patch))
            dpr = rates[start:start + depth]
            start += depth
            if i < 2:
                blocks = [CBlock(dim, mlp_ratio, dpr[j], layer_scale, ssaa=(i + 1) in ssaa_stages)
                          for j in range(depth)]
            else:
                if dim % head_dim:
                    raise ValueError(f"stage {i + 1}: dim {dim} is not a multiple of head_dim {head_dim}")
                blocks = [SABlock(dim, dim // head_dim, mlp_ratio, qkv_bias, dpr[j], layer_scale)
                          for j in range(depth)]
            self.stages.append(nn.Sequential(*blocks))
        self.norm = nn.BatchNorm2d(dims[-1])
        self.head = nn.Linear(dims[-1], 1)
        self.aux_head = nn.Linear(dims[-1], 1)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @property
    def num_features(self) -> int:
        return self.dims[-1]

    def fusions(self) -> list[SymmetricFusion]:
        """The SSAA fusion steps of the network, in order."""
        return [m for m in self.modules() if isinstance(m, SymmetricFusion)]

    def _mix_box(self, gh: int, gw: int, lam: float) -> tuple[int, int, int, int]:
        """A random box on the final ``gh x gw`` token grid covering about ``1 - lam`` of it."""
        cut = math.sqrt(1.0 - lam)
        bh, bw = max(1, int(gh * cut)), max(1, int(gw * cut))
        cy, cx = int(torch.randint(gh, ())), int(torch.randint(gw, ()))
        y0, x0 = min(max(cy - bh // 2, 0), gh - 1), min(max(cx - bw // 2, 0), gw - 1)
        return y0, min(y0 + bh, gh), x0, min(x0 + bw, gw)

    def forward_map(self, x: torch.Tensor, mix: bool = False
                    ) -> tuple[torch.Tensor, tuple[int, int, int, int] | None]:
        """Post-BN feature map ``(B, C, h, w)`` and the MixToken box (token grid coordinates) or None.

        MixToken (``mix=True``): after the first patch embedding, a box that lands on whole final
        tokens is replaced by the same region of the batch's reversed order (sample ``B-1-i``).
        """
        box = None
        for i, (embed, stage) in enumerate(zip(self.embeds, self.stages)):
            x = embed(x)
            if i == 0 and mix:
                scale = self.reduction // self.embeds[0].proj.stride[0]  # final token -> stage-1 pixels
                gh, gw = x.shape[-2] // scale, x.shape[-1] // scale
                if gh > 0 and gw > 0:
                    lam = float(np.random.beta(1.0, 1.0))
                    box = self._mix_box(gh, gw, lam)
                    y0, y1, x0, x1 = (v * scale for v in box)
                    x = x.clone()
                    x[..., y0:y1, x0:x1] = x.flip(0)[..., y0:y1, x0:x1]
            x = stage(x)
        return self.norm(x), box

    def forward_heads(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logit ``(B,)`` from the token mean and token logits ``(B, h*w)``."""
        tokens = fmap.permute(0, 2, 3, 1).flatten(1, 2)
        return self.head(tokens.mean(1))[:, 0], self.aux_head(tokens)[..., 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logit ``(B,)`` (positive = fake)."""
        return self.forward_heads(self.forward_map(x)[0])[0]

    @staticmethod
    def pool(fmap: torch.Tensor) -> torch.Tensor:
        """The fidelity feature of the official code: ``mean + 0.5 * max`` over tokens, ``(B, C)``."""
        tokens = fmap.flatten(2)
        return tokens.mean(-1) + 0.5 * tokens.amax(-1)


class RBFSVR(nn.Module):
    """An epsilon-SVR with an RBF kernel, fitted by scikit-learn and evaluated in torch.

    ``s(f) = sum_i coef_i * exp(-gamma * ||f - sv_i||^2) + intercept``. The support vectors sit in
    a buffer of ``capacity`` rows (the first ``n_support`` used, the rest zero with zero
    coefficient), so a checkpoint has the same tensor shapes before and after fitting and loads
    strictly. Loading a state dict of another capacity resizes the buffers.
    """

    def __init__(self, dim: int, capacity: int) -> None:
        super().__init__()
        self.register_buffer("support", torch.zeros(capacity, dim, dtype=torch.float64))
        self.register_buffer("coef", torch.zeros(capacity, dtype=torch.float64))
        self.register_buffer("intercept", torch.zeros((), dtype=torch.float64))
        self.register_buffer("gamma", torch.zeros((), dtype=torch.float64))
        self.register_buffer("n_support", torch.zeros((), dtype=torch.int64))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted)

    @property
    def capacity(self) -> int:
        return self.support.shape[0]

    def fit(self, features: np.ndarray, targets: np.ndarray, C: float = 1.0, epsilon: float = 0.1,
            gamma: float | str = "scale") -> "RBFSVR":
        """Fit ``sklearn.svm.SVR(kernel="rbf")`` and copy its parameters into the buffers."""
        from sklearn.svm import SVR

        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.support.shape[1]:
            raise ValueError(f"features must be (N, {self.support.shape[1]}), got {x.shape}")
        if x.shape[0] > self.capacity:
            raise ValueError(f"{x.shape[0]} samples exceed the SVR capacity {self.capacity}")
        svr = SVR(kernel="rbf", C=C, epsilon=epsilon, gamma=gamma).fit(x, np.asarray(targets, np.float64))
        self.load_sklearn(svr)
        return self

    @torch.no_grad()
    def load_sklearn(self, svr) -> None:
        """Copy a fitted sklearn RBF ``SVR`` into the buffers."""
        if svr.kernel != "rbf":
            raise ValueError(f"only the RBF kernel is supported, got {svr.kernel!r}")
        sv = torch.as_tensor(np.asarray(svr.support_vectors_), dtype=torch.float64)
        n = sv.shape[0]
        if n > self.capacity:
            raise ValueError(f"{n} support vectors exceed the SVR capacity {self.capacity}")
        dev = self.support.device
        self.support.zero_()
        self.coef.zero_()
        self.support[:n] = sv.to(dev)
        self.coef[:n] = torch.as_tensor(np.asarray(svr.dual_coef_)[0], dtype=torch.float64, device=dev)
        self.intercept.fill_(float(np.asarray(svr.intercept_).reshape(-1)[0]))
        self.gamma.fill_(float(svr._gamma))
        self.n_support.fill_(n)
        self.fitted.fill_(True)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """Decision function ``(B,)`` (float64, differentiable in ``f``) for features ``(B, dim)``."""
        n = int(self.n_support)
        sv, coef = self.support[:n], self.coef[:n]
        with torch.autocast(device_type=f.device.type, enabled=False):
            x = f.to(torch.float64)
            d2 = (x.square().sum(1, keepdim=True) - 2.0 * x @ sv.T + sv.square().sum(1)[None]).clamp_min(0.0)
            return torch.exp(-self.gamma * d2) @ coef + self.intercept

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        # a checkpoint fitted with another capacity: take its buffer sizes
        for name in ("support", "coef"):
            key = prefix + name
            if key in state_dict and state_dict[key].shape != getattr(self, name).shape:
                incoming = state_dict[key]
                setattr(self, name, torch.zeros(incoming.shape, dtype=getattr(self, name).dtype,
                                                device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


class Normalize(nn.Module):
    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


PROB_EPS = 1e-6  # P(fake) is clipped to [eps, 1 - eps] before the logit, so logits stay finite


class DeepFidelityNet(nn.Module):
    """Images in [0, 1] -> SSAAFormer -> class logit (stage A) and fidelity score ``s`` (stage B).

    ``forward`` gives the logit of the final scorer's probability of fake: once the SVR is
    fitted, ``P(fake) = clip(1 - s, 0, 1)`` (the logit of that value clipped to
    ``[1e-6, 1 - 1e-6]``, so ``sigmoid(forward(x))`` is the card's probability); before, the
    stage-A class logit.
    """

    def __init__(self, backbone: SSAAFormer, svr_capacity: int = 4096, normalize: bool = True) -> None:
        super().__init__()
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD) if normalize else nn.Identity()
        self.backbone = backbone
        self.svr = RBFSVR(backbone.num_features, svr_capacity)

    def class_logit(self, x: torch.Tensor) -> torch.Tensor:
        """Stage A: the class head's logit ``(B,)`` (positive = fake)."""
        return self.backbone(self.normalize(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Stage B input: ``mean + 0.5 * max`` of the post-BN tokens, ``(B, C)``."""
        return SSAAFormer.pool(self.backbone.forward_map(self.normalize(x))[0])

    def fidelity(self, x: torch.Tensor) -> torch.Tensor:
        """The fidelity score ``s (B,)`` (high = real); needs a fitted SVR."""
        if not self.svr.is_fitted:
            raise RuntimeError("the fidelity SVR is not fitted yet (train the model first)")
        return self.svr(self.features(x)).to(x.dtype if x.is_floating_point() else torch.float32)

    @staticmethod
    def fake_probability(s: torch.Tensor) -> torch.Tensor:
        """The card's probability of fake from a fidelity score: ``clip(1 - s, 0, 1)``."""
        return (1.0 - s).clamp(0.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.svr.is_fitted:
            return self.class_logit(x)
        p = self.fake_probability(self.fidelity(x)).clamp(PROB_EPS, 1.0 - PROB_EPS)
        return torch.logit(p)

    def cam_layer(self) -> nn.Module:
        """Grad-CAM layer: the final BatchNorm, whose output the heads and the fidelity stage read."""
        return self.backbone.norm
