"""SBKA's networks and losses (pure PyTorch; the training schedule lives in ``lightning_model``).

* :class:`Encoder`: a timm ConvNeXt-V2 (``num_classes=0``: global average pool + LayerNorm) with
  ImageNet normalisation inside; ``f in R^D`` (D = 768 for the Tiny model of the paper).
* :class:`Student`: the encoder plus the seen-class head ``y_cls = W_c f + b_c`` (truncated normal,
  std 2e-5, bias 0) and the distillation head ``y_kd = W_h f + b_h`` with as many outputs as the
  teacher has classes (1000 for ImageNet), initialised from the teacher's head.
* :class:`Teacher`: the same encoder and its classification head ``t``. Only the head ever trains.
* :class:`SBKANet`: both, what checkpoints hold; ``forward(x)`` is the student's retrieval embedding.

Losses, with ``m_i`` = 1 for photos and 0 for sketches and ``c_i`` the class-id mask row of the
sample's seen class:

* :func:`soft_cross_entropy`: ``SCE(p, q) = (1 / sum_i m_i) sum_i m_i sum_k softmax(q_i + s c_i)_k
  (-log softmax(p_i)_k)`` (s = 0.3; 0 when the batch has no photo);
* :func:`gaussian_alignment`: ``KL(softmax(z) || softmax(f))`` with ``z ~ N(0, I_D)`` drawn per step.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Encoder(nn.Module):
    """A timm ConvNeXt-V2 body returning pooled, normalised features ``(B, D)`` from images in [0, 1]."""

    def __init__(self, arch: str = "convnextv2_atto", **timm_kwargs) -> None:
        super().__init__()
        import timm

        self.body = timm.create_model(arch, pretrained=False, num_classes=0, **timm_kwargs)
        self.dim = int(self.body.num_features)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - self.mean) / self.std)


class Teacher(nn.Module):
    def __init__(self, encoder: Encoder, classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


class Student(nn.Module):
    def __init__(self, encoder: Encoder, seen: int, teacher_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.cls = nn.Linear(encoder.dim, seen)
        nn.init.trunc_normal_(self.cls.weight, std=2e-5)
        nn.init.zeros_(self.cls.bias)
        self.kd = nn.Linear(encoder.dim, teacher_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f = self.encoder(x)
        return self.cls(f), self.kd(f), f


class SBKANet(nn.Module):
    """Student and teacher; the student starts as a copy of the teacher (encoder and head)."""

    def __init__(self, teacher: Teacher, seen: int) -> None:
        super().__init__()
        self.teacher = teacher
        self.student = Student(copy.deepcopy(teacher.encoder), seen, teacher.head.out_features)
        self.student.kd.load_state_dict(teacher.head.state_dict())
        for p in self.teacher.encoder.parameters():  # the teacher's body never trains
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The retrieval embedding ``f`` (not normalised; retrieval L2-normalises it)."""
        return self.student.encoder(x)

    def teacher_head_parameters(self) -> list[nn.Parameter]:
        return list(self.teacher.head.parameters())


def soft_cross_entropy(pred: torch.Tensor, target: torch.Tensor, photo: torch.Tensor,
                       cid_mask: torch.Tensor | None = None, scale: float = 0.3) -> torch.Tensor:
    """SAKE's masked soft cross-entropy from the target logits (shifted by ``scale`` x the class-id
    mask rows) to the predicted logits, averaged over the photos of the batch (``photo`` = 1)."""
    weight = photo.to(pred.dtype)
    if float(weight.sum()) == 0:
        return pred.sum() * 0.0  # no photo in the batch: nothing to distil (and no division by zero)
    q = target if cid_mask is None else target + scale * cid_mask
    per_sample = -(F.softmax(q, dim=1) * F.log_softmax(pred, dim=1)).sum(1)
    return (weight * per_sample).sum() / weight.sum()


def gaussian_alignment(f: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``KL(softmax(z) || softmax(f))`` averaged over the batch, ``z ~ N(0, I)`` drawn fresh."""
    z = torch.randn(f.shape, generator=generator, device="cpu").to(f.device, f.dtype)
    return F.kl_div(F.log_softmax(f, dim=1), F.log_softmax(z, dim=1), log_target=True, reduction="batchmean")


def epoch_lr(lr0: float, epoch: int, epochs: int) -> float:
    """SAKE's and SBKA's schedule, set once per epoch: ``lr0 * 0.001 ** (epoch / epochs)``."""
    return lr0 * 0.001 ** (epoch / epochs)
