"""HFC-MFFD as a pure ``nn.Module``: patch-wise RGB and DCT branches, intra-attention image heads,
hierarchical (real/fake, then forgery type) outputs and branch fusion.

Shapes per image: ``x (C, H, W)`` in [0, 1] -> 3x3 grid of ``k x k`` patches (row-major) ->
each branch gives per-patch features ``(N, F)`` -> tokens ``(N, d)`` -> a patch MLP (per-patch
logits) and an intra-attention image head (a transformer layer over the N patch tokens, flatten,
MLP) for each task: binary (2 logits) and forgery type (K logits over the manifest's fake
families). Branch logits are fused with softmax weights (or summed).
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from visec.models.classifier import Normalize
from visec.models.backbones import IMAGENET_MEAN, IMAGENET_STD
from visec.preprocess.frequency import WelfordStats, dct2

BRANCHES = ("rgb", "dct")
GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma, as PIL's convert("L")


# -- patches ---------------------------------------------------------------------------------------
def cal_stride(size: int, k: int, per_side: int = 3) -> tuple[int, int]:
    """``(number of patches, stride)`` of a ``per_side x per_side`` grid of ``k``-pixel patches
    spanning an image side of ``size`` pixels: ``cal_stride(224, 128) == (9, 48)``."""
    if per_side < 1 or k < 1 or k > size:
        raise ValueError(f"cannot place {per_side}x{per_side} patches of {k} px in {size} px")
    if per_side == 1:
        return 1, size
    stride = (size - k) // (per_side - 1)
    if stride < 1:
        raise ValueError(f"{per_side} patches of {k} px per side need an image side > {k + per_side - 2} "
                         f"px, got {size}")
    n = (size - k) // stride + 1
    return n * n, stride


def extract_patches(x: torch.Tensor, k: int, per_side: int = 3) -> torch.Tensor:
    """``(B, C, H, W) -> (B, N, C, k, k)`` in the canonical **row-major** order (top row left to
    right, then the next row). The one function that cuts patches, for training and testing."""
    _, sh = cal_stride(x.shape[-2], k, per_side)
    _, sw = cal_stride(x.shape[-1], k, per_side)
    p = x.unfold(2, k, sh).unfold(3, k, sw)  # (B, C, nh, nw, k, k)
    b, c, nh, nw = p.shape[:4]
    return p.permute(0, 2, 3, 1, 4, 5).reshape(b, nh * nw, c, k, k)


def patch_offsets(size: int, k: int, per_side: int = 3,
                  order: Literal["row", "column"] = "row") -> list[tuple[int, int]]:
    """Top-left ``(top, left)`` of every patch; ``order="column"`` is ForgeryNIR's nine-crop layout
    (left column top to bottom, then the middle column, then the right one)."""
    _, s = cal_stride(size, k, per_side)
    pos = [i * s for i in range((size - k) // s + 1)]
    if order == "row":
        return [(t, left) for t in pos for left in pos]
    return [(t, left) for left in pos for t in pos]


def nine_crops(x: torch.Tensor, k: int, order: Literal["row", "column"] = "column") -> torch.Tensor:
    """The fixed crops of ForgeryNIR (corners, edge centres, centre) by slicing, ``(B, 9, C, k, k)``."""
    if x.shape[-1] != x.shape[-2]:
        raise ValueError("nine_crops expects square images")
    return torch.stack([x[..., t:t + k, left:left + k] for t, left in patch_offsets(x.shape[-1], k, 3, order)],
                       dim=1)


def column_to_row_major(per_side: int = 3) -> list[int]:
    """Index list ``perm`` with ``row_major = column_major[:, perm]`` (a transpose of the grid; its
    own inverse for a square grid)."""
    return [c * per_side + r for r in range(per_side) for c in range(per_side)]


def patches_column_to_row(patches: torch.Tensor, per_side: int = 3) -> torch.Tensor:
    """Reorder ``(B, N, ...)`` patches (or per-patch features/logits) from column-major to row-major."""
    return patches[:, column_to_row_major(per_side)]


def image_head_weight_column_to_row(weight: torch.Tensor, per_side: int = 3) -> torch.Tensor:
    """Adapt the first image-head layer of a model trained on **column-major** patches (released
    ForgeryNIR weights, WDF test-time order) to visec's row-major order: ``(out, N*d)`` weight
    whose N input blocks are permuted, so ``W' @ flat(row) == W @ flat(column)``."""
    n = per_side * per_side
    out, nd = weight.shape
    blocks = weight.reshape(out, n, nd // n)
    return blocks[:, column_to_row_major(per_side)].reshape(out, nd)


def paint_patches(values: torch.Tensor, size: tuple[int, int], k: int, per_side: int = 3) -> torch.Tensor:
    """Per-patch values ``(B, N)`` painted back on the image grid ``(B, H, W)``, overlaps averaged
    (pixels no patch covers take the image's mean patch value)."""
    h, w = size
    _, sh = cal_stride(h, k, per_side)
    _, sw = cal_stride(w, k, per_side)
    nh, nw = (h - k) // sh + 1, (w - k) // sw + 1
    total = values.new_zeros(values.shape[0], h, w)
    count = values.new_zeros(1, h, w)
    for i in range(nh):
        for j in range(nw):
            total[:, i * sh:i * sh + k, j * sw:j * sw + k] += values[:, i * nw + j, None, None]
            count[:, i * sh:i * sh + k, j * sw:j * sw + k] += 1
    mean = values.mean(1)[:, None, None].expand_as(total)
    return torch.where(count > 0, total / count.clamp_min(1), mean)


# -- inputs of the two branches --------------------------------------------------------------------
def split_modalities(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rgb, gray)`` inputs of the branches. 3 channels (vis, or nir as 3 equal channels): RGB
    branch on them, DCT branch on their luma (equal to the NIR image for nir). 4 channels
    (vis+nir): RGB branch on channels 0..2, DCT branch on the NIR channel 3."""
    if x.ndim != 4 or x.shape[1] not in (3, 4):
        raise ValueError(f"HFC-MFFD takes (B, 3, H, W) vis/nir or (B, 4, H, W) vis+nir images, got "
                         f"{tuple(x.shape)}")
    if x.shape[1] == 4:
        return x[:, :3], x[:, 3:4]
    wts = torch.tensor(GRAY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return x, (x * wts).sum(1, keepdim=True)


def one_channel_stem(model: nn.Module) -> nn.Module:
    """Replace the first 3-channel convolution of ``model`` by a freshly initialised 1-channel one
    with the same geometry (the paper's DCT ResNet-50: ImageNet weights everywhere else)."""
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d):
            if mod.in_channels != 3:
                raise TypeError(f"first convolution '{name}' takes {mod.in_channels} channels, not 3")
            new = nn.Conv2d(1, mod.out_channels, mod.kernel_size, mod.stride, mod.padding, mod.dilation,
                            bias=mod.bias is not None)
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            setattr(parent, name.rsplit(".", 1)[-1], new)
            return model
    raise TypeError(f"{type(model).__name__} has no convolution to adapt to one channel")


def build_backbone(name: str, weights: str | None, in_chans: int, **kwargs) -> nn.Module:
    from visec.registry import BACKBONES

    if in_chans == 1 and weights:  # pretrained 3-channel trunk, then a fresh 1-channel stem
        return one_channel_stem(BACKBONES.build(name, in_chans=3, weights=weights, **kwargs))
    return BACKBONES.build(name, in_chans=in_chans, weights=weights, **kwargs)


def mlp(sizes: Sequence[int], dropout: float) -> nn.Sequential:
    """Linear layers ``sizes[0] -> ... -> sizes[-1]`` with ReLU and dropout between them."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers += [nn.ReLU(inplace=True), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


# -- heads -----------------------------------------------------------------------------------------
class IntraAttentionHead(nn.Module):
    """A transformer encoder layer over the patch tokens, flatten (order-sensitive), MLP
    (``attention=False``: no encoder layer, the MLP sees the tokens themselves).

    ``legacy_batch_axis_attention`` reproduces the official code: the layer is built with
    ``batch_first=False`` yet receives ``(B, N, d)``, so attention mixes the *images of the batch*
    at each patch index instead of the patches of one image.
    """

    def __init__(self, d: int, n_tokens: int, n_out: int, hidden: Sequence[int], nhead: int, ffn: int,
                 attn_dropout: float, dropout: float, legacy_batch_axis_attention: bool = False,
                 attention: bool = True) -> None:
        super().__init__()
        self.legacy = legacy_batch_axis_attention
        # attention=False (the ablation's counterpart): the same flatten + MLP on the raw tokens
        self.encoder = (nn.TransformerEncoderLayer(d, nhead, dim_feedforward=ffn, dropout=attn_dropout,
                                                   batch_first=not legacy_batch_axis_attention)
                        if attention else nn.Identity())
        self.mlp = mlp([n_tokens * d, *hidden, n_out], dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, N, d) -> (B, n_out)
        return self.mlp(self.encoder(tokens).flatten(1))


class PatchBranch(nn.Module):
    """One branch: patches -> backbone -> (optional projection to ``d``) tokens -> for each task a
    patch MLP (``(B, N, n)``) and an intra-attention image head (``(B, n)``)."""

    def __init__(self, backbone: nn.Module, n_tokens: int, n_families: int, d_model: int | None,
                 nhead: int, ffn: int, patch_hidden: Sequence[int], image_hidden: Sequence[int],
                 attn_dropout: float, dropout: float, legacy_batch_axis_attention: bool,
                 attention: bool = True) -> None:
        super().__init__()
        self.backbone = backbone
        feat = backbone.num_features
        d = d_model or feat
        if d % nhead:
            from visec.errors import ConfigError

            raise ConfigError(f"the token width {d} ({'model.d_model' if d_model else 'the backbone feature width'}) "
                              f"must be divisible by model.nhead={nhead}")
        self.proj = nn.Identity() if d == feat else nn.Sequential(nn.Linear(feat, d), nn.ReLU(inplace=True))
        self.n_tokens = n_tokens
        self.patch_binary = mlp([d, *patch_hidden, 2], dropout)
        self.image_binary = IntraAttentionHead(d, n_tokens, 2, image_hidden, nhead, ffn, attn_dropout, dropout,
                                               legacy_batch_axis_attention, attention)
        self.patch_family = mlp([d, *patch_hidden, n_families], dropout)
        self.image_family = IntraAttentionHead(d, n_tokens, n_families, image_hidden, nhead, ffn, attn_dropout,
                                               dropout, legacy_batch_axis_attention, attention)

    def tokens(self, patches: torch.Tensor) -> torch.Tensor:  # (B, N, C, k, k) -> (B, N, d)
        b, n = patches.shape[:2]
        return self.proj(self.backbone(patches.flatten(0, 1))).view(b, n, -1)

    def heads(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"patch": self.patch_binary(tokens), "image": self.image_binary(tokens),
                "patch_family": self.patch_family(tokens), "image_family": self.image_family(tokens)}

    def forward(self, patches: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.heads(self.tokens(patches))


# -- losses and decisions --------------------------------------------------------------------------
def hfc_loss(patch_logits: torch.Tensor, image_logits: torch.Tensor, target: torch.Tensor,
             alpha: float = 0.6) -> torch.Tensor:
    """``α·CE(patch logits, label copied to every patch) + (1−α)·CE(image logits, label)``;
    ``patch_logits (B, N, n)``, ``image_logits (B, n)``, ``target (B,)`` class indices."""
    b, n, c = patch_logits.shape
    patch_ce = F.cross_entropy(patch_logits.reshape(b * n, c), target.repeat_interleave(n))
    return alpha * patch_ce + (1 - alpha) * F.cross_entropy(image_logits, target)


def hierarchical_decision(binary_logits: torch.Tensor, family_logits: torch.Tensor) -> torch.Tensor:
    """``0`` (real) where the binary head says real, else ``1 + argmax`` of the family logits; the
    family logits of images judged real are never read."""
    fake = binary_logits.argmax(-1) == 1
    out = torch.zeros(binary_logits.shape[0], dtype=torch.long, device=binary_logits.device)
    if fake.any():
        out[fake] = 1 + family_logits[fake].argmax(-1)
    return out


def fit_fusion_logits(branch_logits: Sequence[torch.Tensor], target: torch.Tensor, steps: int = 200,
                      lr: float = 0.05) -> torch.Tensor:
    """Raw fusion weights ``w̃`` (softmax gives the weights) minimising the cross-entropy of
    ``Σ softmax(w̃)_m z_m`` on held-out logits ``z_m (n, C)``; starts from equal weights."""
    z = torch.stack([b.detach().double() for b in branch_logits])  # (M, n, C)
    w = torch.zeros(len(branch_logits), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([w], lr=lr)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a few thousand numbers: extra threads only cost synchronisation
    try:
        with torch.enable_grad():
            for _ in range(steps):
                fused = (torch.softmax(w, 0)[:, None, None] * z).sum(0)
                loss = F.cross_entropy(fused, target)
                opt.zero_grad()
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    return w.detach().float()


# -- the network -----------------------------------------------------------------------------------
class HFCMFFDNet(nn.Module):
    """``forward(x in [0,1] (B, 3|4, H, W)) -> (B,)`` the fused binary logit margin
    ``s_fake − s_real`` (``sigmoid`` of it is the fused probability of fake).

    Buffers that travel with the checkpoint: the DCT statistics ``dct_mean``/``dct_std`` (k x k,
    from a Welford pass over the training patches; ``dct_count`` patches seen, 0 = not computed)
    and the raw fusion weights ``fusion_binary``/``fusion_family`` (one per branch).
    """

    def __init__(self, *, patch_size: int = 32, per_side: int = 3, num_families: int = 3,
                 rgb_backbone: str = "mobilenetv2", rgb_weights: str | None = None,
                 dct_backbone: str = "mobilenetv2", dct_weights: str | None = None,
                 rgb_backbone_kwargs: dict | None = None, dct_backbone_kwargs: dict | None = None,
                 normalize: bool = True, d_model: int | None = None, nhead: int = 8, ffn_dim: int = 2048,
                 patch_hidden: Sequence[int] = (512, 512), image_hidden: Sequence[int] = (2048, 512),
                 attn_dropout: float = 0.1, dropout: float = 0.5, fusion: Literal["learned", "sum"] = "learned",
                 legacy_batch_axis_attention: bool = False, branches: Sequence[str] = BRANCHES,
                 patch_attention: bool = True) -> None:
        super().__init__()
        if num_families < 1:
            raise ValueError("num_families must be at least 1")
        branches = tuple(b for b in BRANCHES if b in branches)  # canonical order
        if not branches or "rgb" not in branches:
            raise ValueError(f"branches must include 'rgb' (and optionally 'dct'), got {list(branches)}")
        self.branches = branches
        self.k, self.per_side, self.num_families = patch_size, per_side, num_families
        self.n_tokens = per_side * per_side
        self.fusion = fusion
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD) if normalize else nn.Identity()
        common = dict(n_tokens=self.n_tokens, n_families=num_families, d_model=d_model, nhead=nhead, ffn=ffn_dim,
                      patch_hidden=tuple(patch_hidden), image_hidden=tuple(image_hidden), attn_dropout=attn_dropout,
                      dropout=dropout, legacy_batch_axis_attention=legacy_batch_axis_attention,
                      attention=patch_attention)
        self.rgb = PatchBranch(build_backbone(rgb_backbone, rgb_weights, 3, **(rgb_backbone_kwargs or {})),
                               **common)
        if "dct" in branches:
            self.dct = PatchBranch(build_backbone(dct_backbone, dct_weights, 1, **(dct_backbone_kwargs or {})),
                                   **common)
        self.register_buffer("dct_mean", torch.zeros(patch_size, patch_size))
        self.register_buffer("dct_std", torch.ones(patch_size, patch_size))
        self.register_buffer("dct_count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("fusion_binary", torch.zeros(len(branches)))
        self.register_buffer("fusion_family", torch.zeros(len(branches)))

    # -- inputs ---------------------------------------------------------------------------------
    def patches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(rgb patches (B, N, 3, k, k), raw DCT of gray patches (B, N, k, k))`` in row-major order;
        the DCT is ``None`` without a DCT branch."""
        rgb, gray = split_modalities(x)
        rgb = extract_patches(self.normalize(rgb), self.k, self.per_side)
        if "dct" not in self.branches:
            return rgb, None
        return rgb, dct2(extract_patches(gray, self.k, self.per_side)[:, :, 0])

    def standardise(self, coeffs: torch.Tensor) -> torch.Tensor:
        return (coeffs - self.dct_mean) / self.dct_std

    @torch.no_grad()
    def set_dct_stats(self, stats: WelfordStats, eps: float = 1e-6) -> None:
        if stats.mean is None or stats.mean.shape != self.dct_mean.shape:
            raise ValueError(f"DCT statistics must have shape {tuple(self.dct_mean.shape)}")
        self.dct_mean.copy_(stats.mean.to(self.dct_mean))
        self.dct_std.copy_(stats.var.sqrt().clamp_min(eps).to(self.dct_std))
        self.dct_count.fill_(stats.count)

    # -- outputs --------------------------------------------------------------------------------
    def forward_branches(self, x: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
        """Every head of both branches: ``patch (B, N, 2)``, ``image (B, 2)``, ``patch_family (B, N, K)``,
        ``image_family (B, K)``."""
        rgb, coeffs = self.patches(x)
        if coeffs is None:
            return {"rgb": self.rgb(rgb)}
        return {"rgb": self.rgb(rgb), "dct": self.dct(self.standardise(coeffs)[:, :, None])}

    def fusion_weights(self, task: Literal["binary", "family"]) -> torch.Tensor:
        raw = self.fusion_binary if task == "binary" else self.fusion_family
        return torch.ones_like(raw) if self.fusion == "sum" else torch.softmax(raw, 0)

    def fuse(self, logits: Sequence[torch.Tensor], task: Literal["binary", "family"]) -> torch.Tensor:
        w = self.fusion_weights(task)
        return sum(w[i] * z for i, z in enumerate(logits))

    def fused(self, out: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Fused ``binary (B, 2)``, ``family (B, K)``, ``patch (B, N, 2)`` logits of branch outputs."""
        return {"binary": self.fuse([out[b]["image"] for b in self.branches], "binary"),
                "family": self.fuse([out[b]["image_family"] for b in self.branches], "family"),
                "patch": self.fuse([out[b]["patch"] for b in self.branches], "binary")}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.fused(self.forward_branches(x))["binary"]
        return z[:, 1] - z[:, 0]

    def predict_classes(self, x: torch.Tensor) -> torch.Tensor:
        """Hierarchical (1+K)-way prediction: 0 real, 1 + family index for fakes."""
        f = self.fused(self.forward_branches(x))
        return hierarchical_decision(f["binary"], f["family"])

    def patch_fake_probability(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` fused per-patch probability of fake from the patch MLPs."""
        return torch.softmax(self.fused(self.forward_branches(x))["patch"], -1)[..., 1]
