"""Reverse-attention (RA) networks for ANCRA and their plain twins, as pure ``nn.Module`` s.

Reverse attention: at the end of the network, each of the last ``K = 2`` blocks produces post-
activation features ``z`` (B, C, H, W) whose channel count equals the input size of the network's
single linear classifier ``fc`` (weight ``W`` (classes, C), bias ``b``). The block then

1. computes auxiliary logits ``a = W GAP(z) + b`` with the *shared* classifier;
2. chooses one class per sample, ``c = labels`` when labels are given, else ``c = argmax a``;
3. re-weights the channels, ``z' = z * W[c]`` (the raw, signed weight row; no softmax or
   normalisation), and hands ``z'`` to the next block.

The final logits are ``W GAP(z'_K) + b``. With ``ra=False`` the same layers give a plain network
(no re-weighting, no auxiliary logits): the baselines' twin.

The interface is explicit. ``forward(x)`` returns the final logits with RA classes predicted by the
auxiliary heads: what attacks and evaluation see. ``forward_all(x, labels=None)`` returns
``(logits, [a_1, ..., a_K])``; training passes ``labels`` so the masks use the true class. Nothing
in the forward pass switches ``train()``/``eval()`` (the official code flips the mode as a side
effect of its ``_eval`` flag, which also silently changes BatchNorm behaviour; here the caller owns
the mode and the class source is an argument).

``soft_tau`` (adaptive evaluation only) replaces the hard class choice by the differentiable mask
``softmax(a / tau) @ W``, so gradient attacks can see through the argmax (a BPDA-style surrogate).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from visec.errors import ConfigError


def reverse_attention(z: torch.Tensor, fc: nn.Linear, labels: torch.Tensor | None = None,
                      soft_tau: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z * W[c] broadcast over H x W, aux logits W GAP(z) + b)`` for one RA block."""
    aux = fc(z.mean(dim=(2, 3)))
    if labels is not None:
        mask = fc.weight[labels]
    elif soft_tau is not None:
        mask = torch.softmax(aux / soft_tau, dim=1) @ fc.weight
    else:
        mask = fc.weight[aux.argmax(dim=1)]
    return z * mask[:, :, None, None], aux


class RANet(nn.Module):
    """Base: ``features`` -> ``ra_blocks`` (each followed by ``post`` and, with RA, re-weighting) -> ``fc``.

    Subclasses set ``features`` (everything before the RA stage), ``ra_blocks`` (``ModuleList`` of
    the last ``K`` blocks), ``post`` (the activation that turns a block's output into classifier
    features: identity for ReLU-ended blocks, the shared final BN+ReLU for pre-activation WRNs) and
    ``fc``. Without RA, ``post`` is applied once after the last block, as in the plain network.
    """

    features: nn.Module
    ra_blocks: nn.ModuleList
    post: nn.Module
    fc: nn.Linear

    def __init__(self, ra: bool = True) -> None:
        super().__init__()
        self.ra = bool(ra)

    @property
    def num_aux(self) -> int:
        return len(self.ra_blocks) if self.ra else 0

    def forward_all(self, x: torch.Tensor, labels: torch.Tensor | None = None,
                    soft_tau: float | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(final logits, auxiliary logits per RA block)``; ``labels`` drive the RA masks."""
        h = self.features(x)
        aux: list[torch.Tensor] = []
        for block in self.ra_blocks:
            h = block(h)
            if self.ra:
                h, a = reverse_attention(self.post(h), self.fc, labels, soft_tau)
                aux.append(a)
        if not self.ra:
            h = self.post(h)
        return self.fc(h.mean(dim=(2, 3))), aux

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_all(x)[0]


# -- small CNN (digits) -----------------------------------------------------------------------------
def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class SmallRACNN(RANet):
    """4 conv layers + 2 RA conv blocks sharing the final FC: for 8-32 px inputs (digits)."""

    def __init__(self, num_classes: int = 10, ra: bool = True, width: int = 32, in_channels: int = 3) -> None:
        super().__init__(ra)
        w = width
        self.features = nn.Sequential(_conv_bn_relu(in_channels, w), _conv_bn_relu(w, w), nn.MaxPool2d(2),
                                      _conv_bn_relu(w, 2 * w), nn.MaxPool2d(2))
        self.ra_blocks = nn.ModuleList([_conv_bn_relu(2 * w, 4 * w), _conv_bn_relu(4 * w, 4 * w)])
        self.post = nn.Identity()
        self.fc = nn.Linear(4 * w, num_classes)


# -- ResNet-18 (CIFAR) -------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18RA(RANet):
    """CIFAR ResNet-18 (3x3 stem, no max-pool); layer4 = 2 RA BasicBlocks (512 ch) sharing the FC."""

    def __init__(self, num_classes: int = 10, ra: bool = True, width: int = 64, in_channels: int = 3) -> None:
        super().__init__(ra)
        w = width

        def layer(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1))

        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            layer(w, w, 1), layer(w, 2 * w, 2), layer(2 * w, 4 * w, 2))
        self.ra_blocks = nn.ModuleList([BasicBlock(4 * w, 8 * w, 2), BasicBlock(8 * w, 8 * w, 1)])
        self.post = nn.Identity()
        self.fc = nn.Linear(8 * w, num_classes)


# -- WideResNet-34-10 (CIFAR) --------------------------------------------------------------------------
class WideBasic(nn.Module):
    """Pre-activation wide unit: BN-ReLU-conv-BN-ReLU-conv plus (projected) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.project = stride != 1 or cin != cout
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if self.project else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.relu(self.bn1(x))
        out = self.conv1(act)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return out + self.shortcut(act if self.project else x)


class WRNRA(RANet):
    """WideResNet-``depth``-``widen`` (pre-activation); the last two units of block 3 are RA units.

    The RA units share the network's final BN+ReLU (``post``) and FC: a unit's residual output goes
    through that BN+ReLU, is re-weighted, and is the next unit's input; the final logits are
    ``fc(GAP(...))`` of the last re-weighted features.
    """

    def __init__(self, num_classes: int = 10, ra: bool = True, depth: int = 34, widen_factor: int = 10,
                 dropout: float = 0.0, in_channels: int = 3) -> None:
        super().__init__(ra)
        if (depth - 4) % 6 or depth < 16:
            raise ConfigError(f"WideResNet depth must be 6n+4 with n >= 2 (got {depth})")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]

        def group(cin: int, cout: int, stride: int, units: int) -> list[nn.Module]:
            return [WideBasic(cin if i == 0 else cout, cout, stride if i == 0 else 1, dropout) for i in range(units)]

        block3 = group(widths[2], widths[3], 2, n)
        self.features = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                                      *group(widths[0], widths[1], 1, n), *group(widths[1], widths[2], 2, n),
                                      *block3[:-2])
        self.ra_blocks = nn.ModuleList(block3[-2:])
        self.post = nn.Sequential(nn.BatchNorm2d(widths[3]), nn.ReLU(inplace=False))
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)


ARCHS: dict[str, Callable[..., RANet]] = {
    "small_ra_cnn": SmallRACNN,
    "resnet18_ra": ResNet18RA,
    "wrn34_10_ra": WRNRA,
}


def build_net(arch: str, num_classes: int, ra: bool = True, **kwargs) -> RANet:
    """An RA network (``ra=True``) or its plain twin (``ra=False``) by architecture name."""
    if arch not in ARCHS:
        raise ConfigError(f"unknown architecture '{arch}' (known: {', '.join(ARCHS)})")
    try:
        return ARCHS[arch](num_classes=num_classes, ra=ra, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"{arch}: bad model.arch_kwargs ({exc})") from None


# -- views for attacks --------------------------------------------------------------------------------
class _NetView(nn.Module):
    """A wrapper whose train/eval flag *is* the wrapped network's.

    Attacks save ``model.training`` and restore it afterwards; a plain wrapper has its own flag
    (True from construction), so restoring it would silently switch the wrapped network to train
    mode after an attack in eval mode. Here the flag is read from the network and never stored.
    """

    def __init__(self, net: RANet) -> None:
        super().__init__()
        self.net = net

    @property
    def training(self) -> bool:  # type: ignore[override]
        net = self.__dict__.get("_modules", {}).get("net")
        return True if net is None else net.training

    @training.setter
    def training(self, mode: bool) -> None:  # nn.Module.train() sets children itself
        pass


class WithAux(_NetView):
    """``x -> (logits, aux list)`` with predicted RA classes: what training-time attacks ascend."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.net.forward_all(x)


class SoftMaskSurrogate(_NetView):
    """``x -> logits`` with the differentiable mask ``softmax(a / tau) @ W`` (adaptive attacks only)."""

    def __init__(self, net: RANet, tau: float = 1.0) -> None:
        super().__init__(net)
        self.tau = float(tau)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_all(x, soft_tau=self.tau)[0]
