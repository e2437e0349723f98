"""ACMF in plain PyTorch: the masked frequency forgery representation (MFR), the detector, and
forgery-attention consistency (FAC), the per-video test-time adaptation.

Nothing here depends on Lightning; :class:`ForgeryAttentionConsistency` is the plain API
(``set_source`` once, then ``adapt_and_predict(frames)`` per video).
"""

from __future__ import annotations

import copy
import zlib
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from visec.models.classifier import BinaryClassifier
from visec.models.cam import GradCAM
from visec.preprocess.frequency import fft_highpass, low_frequency_box

MFRMode = Literal["spatial", "spectral"]


def default_half_width(size: int) -> int:
    """The low-pass half-width scaled with the image side: ``round(5 * size / 224)``, at least 1
    (5 at 224 px, the official value; 1 at 64 px)."""
    return max(1, round(5 * size / 224))


def _symmetric(mask: torch.Tensor) -> torch.Tensor:
    """Make a boolean ``(H, W)`` mask over *unshifted* FFT indices Hermitian-symmetric:
    every pair ``(k, -k)`` takes the value of the member with the smaller linear index, so each
    coefficient keeps its own drop probability and the masked spectrum stays that of a real image."""
    h, w = mask.shape
    partner = torch.roll(mask.flip(0, 1), shifts=(1, 1), dims=(0, 1))  # mask[(-i) % h, (-j) % w]
    lin = torch.arange(h * w, device=mask.device).view(h, w)
    lin_partner = torch.roll(lin.flip(0, 1), shifts=(1, 1), dims=(0, 1))
    return torch.where(lin <= lin_partner, mask, partner)


def spatial_keep_mask(h: int, w: int, r: float, generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> torch.Tensor:
    """``M`` with ``M_ij ~ Bernoulli(1 - r)`` as a float ``(H, W)`` tensor (1 = keep the pixel's
    high-frequency part, 0 = drop it)."""
    u = torch.rand(h, w, generator=generator, device=generator.device if generator is not None else device)
    return (u >= r).float().to(device)


def masked_frequency(x: torch.Tensor, r: float, d: int | None = None, *, mode: MFRMode = "spatial",
                     absolute: bool = True, generator: torch.Generator | None = None,
                     return_mask: bool = False):
    """The masked frequency forgery representation ``x~`` of a batch ``x`` (B, C, H, W) in [0, 1].

    ``spatial`` (the official code): ``H = |Re IFFT((1 - P_low) * FFT x)|`` per channel,
    ``L = x - H``, one pixel mask ``M ~ Bernoulli(1 - r)`` shared by the whole batch and every
    channel, and ``x~ = M * H + L = x - (1 - M) * H``. ``absolute=False`` uses the signed high-pass
    (then ``L`` is the true low-pass image).

    ``spectral`` (the ablation the abstract's wording suggests): every FFT coefficient outside
    the centred low box of half-width ``d`` is dropped with probability ``r`` (one mask shared by
    the batch and the channels, Hermitian-symmetric so the result is real); the box, and the
    partners of its coefficients, are kept exactly. ``absolute`` has no meaning there.

    ``r = 0`` returns ``x`` itself. ``d=None`` means :func:`default_half_width` of the height.
    With ``return_mask`` the keep mask (spatial ``(H, W)`` or spectral, shifted ``(H, W)``) is
    returned too.
    """
    if not 0.0 <= r <= 1.0:
        raise ValueError(f"mask ratio r must be in [0, 1], got {r}")
    h, w = x.shape[-2:]
    d = default_half_width(h) if d is None else d
    if r == 0:
        keep = torch.ones(h, w, device=x.device)
        return (x, keep) if return_mask else x
    if mode == "spatial":
        keep = spatial_keep_mask(h, w, r, generator, x.device)
        high = fft_highpass(x, d, absolute=absolute)
        out = x - (1.0 - keep) * high
    elif mode == "spectral":
        u = torch.rand(h, w, generator=generator,
                       device=generator.device if generator is not None else x.device).to(x.device)
        box = torch.fft.ifftshift(low_frequency_box(h, w, d, x.device), dim=(-2, -1))  # unshifted
        box = box | torch.roll(box.flip(0, 1), shifts=(1, 1), dims=(0, 1))  # plus the box's partners
        keep_unshifted = _symmetric(u >= r) | box
        spec = torch.fft.fft2(x.float()) * keep_unshifted
        out = torch.fft.ifft2(spec).real.to(x.dtype)
        keep = torch.fft.fftshift(keep_unshifted, dim=(-2, -1)).float()
    else:
        raise ValueError(f"unknown MFR mode '{mode}' (spatial or spectral)")
    return (out, keep) if return_mask else out


class MaskedFrequency(nn.Module):
    """MFR as a module (a training-time augmentation: identity in eval mode)."""

    def __init__(self, r: float = 0.1, d: int | None = None, mode: MFRMode = "spatial",
                 absolute: bool = True) -> None:
        super().__init__()
        if mode not in ("spatial", "spectral"):
            raise ValueError(f"unknown MFR mode '{mode}' (spatial or spectral)")
        self.r, self.d, self.mode, self.absolute = r, d, mode, absolute

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.training:
            return x
        return masked_frequency(x, self.r, self.d, mode=self.mode, absolute=self.absolute,
                                generator=generator)

    def extra_repr(self) -> str:
        return f"r={self.r}, d={self.d or 'auto'}, mode={self.mode}, absolute={self.absolute}"


def flood(loss: torch.Tensor, b: float) -> torch.Tensor:
    """Flooding (Ishida et al. 2020): ``|L - b| + b``; below the flood level ``b`` the gradient
    flips sign, so descent turns into ascent."""
    return (loss - b).abs() + b


def attention_consistency(target_maps: torch.Tensor, source_mean: torch.Tensor) -> torch.Tensor:
    """``L_att = MSE(mean_i A_T(i), A_S)``: target maps ``(N, H, W)``, source mean map ``(H, W)``."""
    return F.mse_loss(target_maps.mean(0), source_mean)


class ACMFNet(BinaryClassifier):
    """The detector: ``x in [0,1]`` -> (optional ImageNet normalisation) -> backbone (Xception by
    default) -> dropout -> one logit. MFR is applied outside, to the training input; the state
    dict has the classifier's layout, so a plain Xception checkpoint loads into it."""

    def __init__(self, backbone: str = "xception", weights: str | None = None, dropout: float = 0.0,
                 normalize: bool = True, **backbone_kwargs) -> None:
        super().__init__(backbone, weights, dropout, normalize, **backbone_kwargs)

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        return self(x).squeeze(-1)


def video_seed(seed: int, key: str | int | None) -> int:
    """A stable per-video seed (same video -> same source batches and masks in any order, on any rank)."""
    return (seed * 1_000_003 + zlib.crc32(str(key).encode())) % (2**63 - 1)


class ForgeryAttentionConsistency:
    """Test-time adaptation of a trained detector, one video at a time (transductive).

    For every video: reset ``theta <- theta_0`` (bit-for-bit), a fresh AdamW (unless
    ``carry_optimizer_state``), then ``steps`` updates of

        ``L = flood(BCE(f_theta(MFR(x_S)), y_S), b) + MSE(mean_i CAM_theta(x_T,i), A_S)``

    with ``S`` a labelled source batch drawn from the source pool and ``A_S`` the mean Grad-CAM of
    the (unmasked) source pool under the frozen ``theta_0``, computed once in :meth:`set_source`.
    Then the video's frames are scored by the adapted network and the weights restored.

    The network stays in eval mode throughout (BatchNorm keeps the stage-1 statistics, dropout
    is off): a test video may hold a handful of frames. Grad-CAM targets the predicted class at
    ``net.cam_layer()``, with no ReLU, bilinear upsampling and per-image min-max normalisation.
    """

    def __init__(self, net: ACMFNet, mfr: MaskedFrequency, *, steps: int = 2, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.95), weight_decay: float = 0.01,
                 flood_level: float = 0.04, source_batch: int = 30, carry_optimizer_state: bool = False,
                 seed: int = 0) -> None:
        self.net = net
        self.mfr = copy.deepcopy(mfr).train()  # masking is on for the source batches
        self.steps, self.lr, self.betas, self.weight_decay = steps, lr, tuple(betas), weight_decay
        self.flood_level, self.source_batch = flood_level, source_batch
        self.carry_optimizer_state, self.seed = carry_optimizer_state, seed
        self.theta0 = {k: v.detach().clone() for k, v in net.state_dict().items()}
        self._optimizer: torch.optim.Optimizer | None = None
        self.source_images: torch.Tensor | None = None
        self.source_labels: torch.Tensor | None = None
        self.source_map: torch.Tensor | None = None
        self.history: list[dict[str, float]] = []  # losses of the last adapted video, per step

    # -- theta_0 -----------------------------------------------------------------------------------
    def reset(self) -> None:
        """``theta <- theta_0`` exactly (parameters and BatchNorm buffers, in place)."""
        with torch.no_grad():
            for k, v in self.net.state_dict().items():
                v.copy_(self.theta0[k])

    def _cams(self, images: torch.Tensor, chunk: int = 64) -> torch.Tensor:
        layer = self.net.cam_layer()
        with GradCAM(layer) as cam:
            return torch.cat([cam(self.net.logit, images[i:i + chunk])
                              for i in range(0, len(images), chunk)])

    @torch.no_grad()
    def _no_grad_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.logit(images)

    # -- source --------------------------------------------------------------------------------------
    def set_source(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Keep the labelled source pool and cache ``A_S``: the mean Grad-CAM of the unmasked pool
        under ``theta_0`` (detached). Returns ``A_S`` ``(H, W)``."""
        if len(images) == 0 or len(images) != len(labels):
            raise ValueError("set_source needs a non-empty pool with one label per image")
        device = self.theta0[next(iter(self.theta0))].device
        self.source_images = images.to(device)
        self.source_labels = labels.float().to(device)
        self.reset()
        was = self.net.training
        self.net.eval()
        try:
            self.source_map = self._cams(self.source_images).mean(0).detach()
        finally:
            self.net.train(was)
        return self.source_map

    # -- adaptation ----------------------------------------------------------------------------------
    def _new_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW([p for p in self.net.parameters() if p.requires_grad], lr=self.lr,
                                 betas=self.betas, weight_decay=self.weight_decay)

    def _step(self, frames: torch.Tensor, opt: torch.optim.Optimizer, gen: torch.Generator) -> dict[str, float]:
        assert self.source_images is not None and self.source_labels is not None and self.source_map is not None
        n = len(self.source_images)
        pick = torch.randperm(n, generator=gen)[:min(self.source_batch, n)].to(self.source_images.device)
        xs = self.mfr(self.source_images[pick], generator=gen)
        cls = F.binary_cross_entropy_with_logits(self.net.logit(xs), self.source_labels[pick])
        cls_flooded = flood(cls, self.flood_level)
        att = attention_consistency(self._cams(frames), self.source_map)
        loss = cls_flooded + att
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.item(), "cls": cls.item(), "att": att.item()}

    def adapt(self, frames: torch.Tensor, key: str | int | None = None) -> list[dict[str, float]]:
        """Reset to ``theta_0`` and adapt on one video's frames ``(N, C, H, W)``; the network is left
        adapted (call :meth:`reset` or use :meth:`adapt_and_predict`). ``key`` (e.g. the video id)
        seeds the source batches and masks, so a video's result does not depend on the order."""
        if self.source_map is None:
            raise RuntimeError("FAC needs a labelled source pool first: call set_source(images, labels)")
        self.reset()
        if self._optimizer is None or not self.carry_optimizer_state:
            self._optimizer = self._new_optimizer()
        gen = torch.Generator().manual_seed(video_seed(self.seed, key))
        was = self.net.training
        self.net.eval()
        frames = frames.to(self.source_images.device)
        try:
            with torch.enable_grad():
                self.history = [self._step(frames, self._optimizer, gen) for _ in range(self.steps)]
        finally:
            self.net.train(was)
        return self.history

    def adapt_and_predict(self, frames: torch.Tensor, key: str | int | None = None) -> torch.Tensor:
        """Adapt on one video and return its frames' logits ``(N,)`` under the adapted weights;
        the network is restored to ``theta_0`` afterwards."""
        self.adapt(frames, key)
        was = self.net.training
        self.net.eval()
        try:
            return self._no_grad_logits(frames.to(self.source_images.device))
        finally:
            self.net.train(was)
            self.reset()
