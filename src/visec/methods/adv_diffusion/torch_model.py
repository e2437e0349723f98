"""Adv-Diffusion on diffusers components: the inpainting latent-diffusion model, the identity-sensitive
mask and the identity-guided DDIM loop.

Notation (README): images ``x`` in [0, 1] outside, ``[-1, 1]`` inside the autoencoder; latents
``z = k * E(x)`` with the scaling factor ``k``; the inpainting UNet predicts ``eps(z_t, t, [m, z_m])``
from the latent-resolution mask ``m`` (1 = repaint) and the latents ``z_m`` of the masked source
``x * (1 - M)``. One step at timestep ``t`` with previous ``t'`` (DDIM, ``eta = 1``)::

    x0_hat = (z_t - sqrt(1 - a_t) eps) / sqrt(a_t)
    g      = s * d/d x0_hat  sum_b mean_{f in surrogates} cos(f(D(x0_hat / k)), f(x_tgt))
    z_t'   = sqrt(a_t') x0_hat + sqrt(1 - a_t' - sigma_t^2) eps + sigma_t xi + sigma_t g

No gradient passes through the UNet: ``x0_hat`` is a detached leaf and only the decoder and the
surrogates are differentiated.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from visec.errors import ConfigError, VisecError

# CelebAMask-HQ's 19 parsing classes; the identity-sensitive set the paper keeps as the condition:
# skin, nose, eyeglasses, both eyes, both brows, mouth and both lips.
PARSING_CLASSES = ("background", "skin", "nose", "eyeglasses", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear",
                   "r_ear", "mouth", "u_lip", "l_lip", "hair", "hat", "earring", "necklace", "neck", "cloth")
IDENTITY_CLASSES = (1, 2, 3, 4, 5, 6, 7, 10, 11, 12)


class AdvDiffusionError(VisecError, ValueError):
    """Adv-Diffusion was given inputs or settings it cannot use."""


# -- the identity-sensitive mask -------------------------------------------------------------------------
def mask_from_parsing(labels: np.ndarray) -> np.ndarray:
    """The inpainting mask ``M`` of a CelebAMask-HQ label map ``(H, W)`` (ints 0..18): 1 outside the
    identity-sensitive classes (repainted), 0 on them (kept as the condition)."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise AdvDiffusionError(f"a parsing map must be a 2-D integer array, got {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(PARSING_CLASSES)):
        raise AdvDiffusionError(f"parsing labels must lie in 0..{len(PARSING_CLASSES) - 1} (CelebAMask-HQ), "
                                f"got {labels.min()}..{labels.max()}")
    return (~np.isin(labels, IDENTITY_CLASSES)).astype(np.float32)


def face_polygon(landmarks: np.ndarray, forehead: float = 0.35) -> np.ndarray:
    """The identity region of 68 dlib landmarks as a convex polygon: the jaw line (0-16) closed over
    the brows (17-26) raised by ``forehead`` x the brow-to-chin height, so the forehead skin, which
    the parsing model counts as identity-sensitive skin, is kept too."""
    lm = np.asarray(landmarks, np.float64)
    if lm.shape != (68, 2) or not np.isfinite(lm).all():
        raise AdvDiffusionError(f"expected 68 finite (x, y) landmarks, got shape {lm.shape}")
    brows = lm[17:27].copy()
    height = lm[8, 1] - brows[:, 1].mean()
    brows[:, 1] -= forehead * max(height, 0.0)
    return cv2.convexHull(np.concatenate([lm[:17], brows]).astype(np.float32)).reshape(-1, 2)


def mask_from_landmarks(landmarks: np.ndarray, size: tuple[int, int], forehead: float = 0.35) -> np.ndarray:
    """The inpainting mask ``(H, W)`` from 68 landmarks: 0 inside :func:`face_polygon`, 1 outside.

    A pixel is kept when its centre lies inside the polygon (pixel centres at integer + 0.5)."""
    h, w = size
    poly = face_polygon(landmarks, forehead)
    ys, xs = np.mgrid[0:h, 0:w]
    pts = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], 1)
    inside = _inside_convex(poly, pts).reshape(h, w)
    return (~inside).astype(np.float32)


def _inside_convex(poly: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Points inside (or on) a convex polygon, whatever its winding."""
    a = poly.astype(np.float64)
    b = np.roll(a, -1, axis=0)
    cross = (b[:, 0] - a[:, 0])[None] * (pts[:, 1:2] - a[:, 1][None]) - \
        (b[:, 1] - a[:, 1])[None] * (pts[:, 0:1] - a[:, 0][None])
    return (cross >= -1e-9).all(1) | (cross <= 1e-9).all(1)


def landmark_masks(images: np.ndarray, forehead: float = 0.35) -> np.ndarray:
    """Masks ``float32 (N, 1, H, W)`` of uint8 RGB faces ``(N, H, W, 3)`` from dlib's 68 landmarks
    (predicted inside the aligned-face box; offline, the shipped model)."""
    from visec.data.synthetic.sources import landmarks68

    out = np.empty((len(images), 1, *images.shape[1:3]), np.float32)
    for i, img in enumerate(images):
        out[i, 0] = mask_from_landmarks(landmarks68(np.ascontiguousarray(img)), img.shape[:2], forehead)
    return out


# -- the DDIM schedule ---------------------------------------------------------------------------------
def scaled_linear_alphas(beta_start: float = 0.00085, beta_end: float = 0.012, steps: int = 1000) -> torch.Tensor:
    """``alpha_bar`` of Stable Diffusion's schedule (betas linear in their square root), float64."""
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0)


def ldm_timesteps(t0: int, steps: int) -> list[int]:
    """The original code's DDIM grid: uniform stride ``(t0 + 1) // steps`` from 0, shifted by one, in
    descending order (45 steps from 999 give the 46 timesteps 991, 969, ..., 1); a step that would
    land above ``t0`` (the original code's off-by-one when the stride divides ``t0 + 1``) is dropped."""
    if steps < 1 or t0 < 1:
        raise AdvDiffusionError(f"need t0 >= 1 and steps >= 1, got t0={t0}, steps={steps}")
    stride = max((t0 + 1) // steps, 1)
    return [t + 1 for t in range(0, t0 + 1, stride) if t + 1 <= t0][::-1]  # never above the start level


@dataclass(frozen=True)
class DDIMStep:
    t: int
    alpha: float  # alpha_bar at t
    alpha_prev: float  # alpha_bar at the next (smaller) timestep, alpha_bar[0] after the last
    sigma: float  # the step's noise level for eta


def ddim_steps(alphas: torch.Tensor, timesteps: Sequence[int], eta: float = 1.0,
               final_alpha: float | None = None) -> list[DDIMStep]:
    """``sigma_t = eta * sqrt((1 - a') / (1 - a) * (1 - a / a'))`` for each descending timestep; the
    step after the last goes to ``final_alpha`` (the original code: ``alpha_bar[0]``)."""
    ts = [int(t) for t in timesteps]
    if any(b >= a for a, b in zip(ts, ts[1:])):
        raise AdvDiffusionError(f"timesteps must be strictly descending, got {ts[:5]}...")
    if not 0 <= min(ts) <= max(ts) < len(alphas):
        raise AdvDiffusionError(f"timesteps must lie in 0..{len(alphas) - 1}")
    final = float(alphas[0]) if final_alpha is None else float(final_alpha)
    out = []
    for i, t in enumerate(ts):
        a = float(alphas[t])
        ap = float(alphas[ts[i + 1]]) if i + 1 < len(ts) else final
        sigma = eta * math.sqrt(max((1 - ap) / (1 - a) * (1 - a / ap), 0.0))
        out.append(DDIMStep(t, a, ap, sigma))
    return out


# -- the inpainting latent-diffusion model -----------------------------------------------------------------
class InpaintLDM(nn.Module):
    """An inpainting latent-diffusion model from diffusers parts: ``vae`` (AutoencoderKL), ``unet``
    (UNet2DConditionModel with ``2 * latent + 1`` input channels: latents, mask, masked-image
    latents, in Stable Diffusion 2 inpainting's order) and a fixed cross-attention ``context``
    (the empty prompt's embedding; a learned null token for the embedded model).

    ``scaling`` (``k``) maps the autoencoder's latents to unit scale (0.18215 for SD2; for a model
    trained here, ``1 / std`` of the training latents, set when the autoencoder stage ends).
    """

    def __init__(self, vae: nn.Module, unet: nn.Module, context: torch.Tensor, scaling: float = 1.0,
                 learn_context: bool = True, alphas: torch.Tensor | None = None) -> None:
        super().__init__()
        self.vae, self.unet = vae, unet
        if learn_context:
            self.context = nn.Parameter(context.clone())
        else:
            self.register_buffer("context", context.clone())
        self.register_buffer("scaling", torch.tensor(float(scaling)))
        self.register_buffer("alphas", (scaled_linear_alphas() if alphas is None else alphas).float(),
                             persistent=False)
        lat = int(vae.config.latent_channels)
        if int(unet.config.in_channels) != 2 * lat + 1:
            raise AdvDiffusionError(f"an inpainting UNet takes {2 * lat + 1} channels (latents, mask, masked "
                                    f"latents) for a {lat}-channel autoencoder, this one {unet.config.in_channels}")

    @property
    def factor(self) -> int:
        """Pixels per latent cell."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def encode(self, x: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """Scaled latents of images in [0, 1] (the posterior mean unless ``sample``)."""
        dist = self.vae.encode(x * 2 - 1).latent_dist
        z = dist.sample(generator) if sample else dist.mean
        return z * self.scaling

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (unclamped) from scaled latents."""
        return (self.vae.decode(z / self.scaling).sample + 1) / 2

    def condition(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[m, z_m]``: the mask at latent size (nearest) and the latents of the source with the
        repainted region blanked to mid-grey (0 in [-1, 1])."""
        masked = x * (1 - mask) + 0.5 * mask
        m = F.interpolate(mask, size=(x.shape[-2] // self.factor, x.shape[-1] // self.factor), mode="nearest")
        return torch.cat([m, self.encode(masked)], 1)

    def eps(self, z: torch.Tensor, t: int | torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The UNet's noise prediction at timestep ``t``."""
        t = torch.as_tensor(t, device=z.device).expand(z.shape[0])
        ctx = self.context.expand(z.shape[0], *self.context.shape[1:])
        return self.unet(torch.cat([z, cond], 1), t, encoder_hidden_states=ctx).sample

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The autoencoder's reconstruction of images in [0, 1] (what the method's card checks)."""
        return self.decode(self.encode(images))


def build_tiny_ldm(image_size: int = 64, latent_channels: int = 4, ae_widths: Sequence[int] = (32, 64, 64),
                   unet_widths: Sequence[int] = (64, 128), context_dim: int = 32, norm_groups: int = 8,
                   attention_head_dim: int = 8, check_size: bool = True) -> InpaintLDM:
    """The small inpainting LDM visec trains on its embedded faces (diffusers classes, from config)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    if check_size and image_size % 2 ** (len(ae_widths) - 1 + len(unet_widths) - 1):
        raise ConfigError(f"model.image_size={image_size} must be divisible by "
                          f"{2 ** (len(ae_widths) - 1 + len(unet_widths) - 1)} for these widths")
    if any(w % norm_groups for w in (*ae_widths, *unet_widths)):
        raise ConfigError(f"every width must be divisible by norm_groups={norm_groups}")
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=latent_channels,
                        block_out_channels=tuple(ae_widths), down_block_types=("DownEncoderBlock2D",) * len(ae_widths),
                        up_block_types=("UpDecoderBlock2D",) * len(ae_widths), layers_per_block=1,
                        norm_num_groups=norm_groups, sample_size=image_size)
    n = len(unet_widths)
    unet = UNet2DConditionModel(sample_size=image_size // 2 ** (len(ae_widths) - 1),
                                in_channels=2 * latent_channels + 1, out_channels=latent_channels,
                                block_out_channels=tuple(unet_widths), layers_per_block=1,
                                down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
                                up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
                                cross_attention_dim=context_dim, attention_head_dim=attention_head_dim,
                                norm_num_groups=norm_groups)
    return InpaintLDM(vae, unet, torch.zeros(1, 1, context_dim), scaling=1.0, learn_context=True)


def load_diffusers_inpainting(folder: str | Path, prompt: str = "") -> InpaintLDM:
    """Stable Diffusion 2 inpainting (or any diffusers inpainting folder: ``vae/``, ``unet/``,
    ``text_encoder/``, ``tokenizer/``, ``scheduler/``) from a local folder; the prompt's embedding
    (empty, as in the paper) becomes the fixed context. Nothing is downloaded."""
    folder = Path(folder)
    missing = [p for p in ("vae", "unet", "text_encoder", "tokenizer") if not (folder / p).is_dir()]
    if not folder.is_dir() or missing:
        raise AdvDiffusionError(f"{folder}: not a local diffusers inpainting folder (missing "
                                f"{', '.join(missing) or 'the folder'}); e.g. stabilityai/stable-diffusion-2-inpainting "
                                f"saved with save_pretrained")
    try:
        from transformers import CLIPTextModel, CLIPTokenizer
    except ImportError:
        raise AdvDiffusionError("a diffusers folder needs transformers for its text encoder: "
                                "pip install transformers==5.24.0") from None
    from diffusers import AutoencoderKL, UNet2DConditionModel

    kw = dict(local_files_only=True)
    vae = AutoencoderKL.from_pretrained(folder / "vae", **kw)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", **kw)
    tok = CLIPTokenizer.from_pretrained(folder / "tokenizer", **kw)
    enc = CLIPTextModel.from_pretrained(folder / "text_encoder", **kw).eval()
    ids = tok([prompt], padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids
    with torch.no_grad():
        context = enc(ids)[0]
    alphas = None
    sched = folder / "scheduler" / "scheduler_config.json"
    if sched.is_file():
        cfg = json.loads(sched.read_text())
        if cfg.get("prediction_type", "epsilon") != "epsilon":
            raise AdvDiffusionError(f"{folder}: the scheduler predicts {cfg['prediction_type']}; Adv-Diffusion's "
                                    f"x0 estimate needs an epsilon-prediction model")
        alphas = scaled_linear_alphas(cfg.get("beta_start", 0.00085), cfg.get("beta_end", 0.012),
                                      cfg.get("num_train_timesteps", 1000))
    return InpaintLDM(vae, unet, context, scaling=float(vae.config.scaling_factor), learn_context=False,
                      alphas=alphas)


# -- the guided loop ----------------------------------------------------------------------------------------
class IdentityObjective(nn.Module):
    """``J_b = mean_f cos(f(x_b), f(target_b))`` over an ensemble of differentiable recognisers."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        if not models:
            raise AdvDiffusionError("the identity guidance needs at least one surrogate recogniser")
        self.models = nn.ModuleList(models)

    def target_embeddings(self, target: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            return [F.normalize(m(target), dim=1) for m in self.models]

    def forward(self, images: torch.Tensor, targets: list[torch.Tensor]) -> torch.Tensor:
        cos = [(F.normalize(m(images), dim=1) * e).sum(1) for m, e in zip(self.models, targets)]
        return torch.stack(cos).mean(0)


def sample_noise(shape: tuple[int, ...], seeds: Sequence[int], step: int, device: torch.device) -> torch.Tensor:
    """Noise for each sample from its own seed and the step, so a sample's result never depends on
    the batch it runs in."""
    out = [torch.randn(shape, generator=torch.Generator().manual_seed(int(s) * 1_000_003 + step)) for s in seeds]
    return torch.stack(out).to(device)


@dataclass
class GuidedResult:
    images: torch.Tensor  # (B, 3, H, W) in [0, 1]
    cosine: list[torch.Tensor]  # per step: (B,) surrogate cosine of the decoded x0 estimate to the target
    sigmas: list[float]
    updates: list[torch.Tensor] | None = None  # per step: sigma_t * g (when recorded)


class AdvDiffusion:
    """Identity-guided DDIM inpainting (the attack). ``scale`` is ``s``; ``t0`` the SDEdit start;
    ``steps`` the DDIM steps on the original code's grid; ``strength`` how the guidance is scaled per
    step (``"sigma"``: by the step's noise level, the code's adaptive strength; ``"constant"``: not);
    ``reduction`` ``"sum"`` (each image's own gradient, independent of the batch; the default) or
    ``"mean"`` (the original code's batch mean: ``s`` acts as ``s / B``). ``blend`` (not in the paper)
    pastes the kept face back, ``M D(.) + (1 - M) x_src``, both in the guidance and in the output, so
    only the repainted surroundings change."""

    def __init__(self, ldm: InpaintLDM, surrogates: Sequence[nn.Module], *, scale: float = 300.0, t0: int = 999,
                 steps: int = 45, eta: float = 1.0, strength: str = "sigma", reduction: str = "sum",
                 blend: bool = False) -> None:
        if strength not in ("sigma", "constant"):
            raise AdvDiffusionError(f"strength must be 'sigma' or 'constant', got {strength!r}")
        if reduction not in ("sum", "mean"):
            raise AdvDiffusionError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        if not (scale >= 0 and math.isfinite(scale)):
            raise AdvDiffusionError(f"the guidance scale must be a finite number >= 0, got {scale}")
        if not 0 < t0 < len(ldm.alphas):
            raise AdvDiffusionError(f"t0 must lie in 1..{len(ldm.alphas) - 1}, got {t0}")
        self.ldm, self.objective = ldm, IdentityObjective(surrogates)
        self.scale, self.t0, self.steps, self.eta = float(scale), int(t0), int(steps), float(eta)
        self.strength, self.reduction, self.blend = strength, reduction, bool(blend)
        self.schedule = ddim_steps(ldm.alphas.double(), ldm_timesteps(self.t0, self.steps), self.eta)

    def config(self) -> dict[str, Any]:
        return {"scale": self.scale, "t0": self.t0, "ddim_steps": self.steps, "timesteps": len(self.schedule),
                "eta": self.eta, "strength": self.strength, "reduction": self.reduction, "blend": self.blend}

    def _output(self, decoded: torch.Tensor, source: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        img = decoded.clamp(0, 1)
        return mask * img + (1 - mask) * source if self.blend else img

    def _guidance(self, x0: torch.Tensor, targets: list[torch.Tensor], source: torch.Tensor | None = None,
                  mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        leaf = x0.detach().requires_grad_(True)
        with torch.enable_grad():
            decoded = self.ldm.decode(leaf)
            img = self._output(decoded, source, mask) if self.blend else decoded.clamp(0, 1)
            cos = self.objective(img, targets)
            total = cos.sum() if self.reduction == "sum" else cos.mean()
            (grad,) = torch.autograd.grad(total, leaf)
        return grad, cos.detach()

    @torch.no_grad()
    def __call__(self, source: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, *,
                 seeds: Sequence[int] | None = None, record: bool = False,
                 callback: Callable[[int, torch.Tensor], None] | None = None) -> GuidedResult:
        """Adversarial images for sources and targets ``(B, 3, H, W)`` in [0, 1] and masks
        ``(B, 1, H, W)`` (1 = repaint). ``seeds`` (one per sample; default 0..B-1) fix each sample's
        noise."""
        b = source.shape[0]
        if target.shape[0] != b or mask.shape[0] != b:
            raise AdvDiffusionError(f"{b} sources, {target.shape[0]} targets and {mask.shape[0]} masks: "
                                    f"pair them one to one")
        seeds = list(range(b)) if seeds is None else list(seeds)
        if len(seeds) != b:
            raise AdvDiffusionError(f"{len(seeds)} seeds for {b} sources")
        ldm = self.ldm
        params = [p for m in (ldm, self.objective) for p in m.parameters()]
        flags = [p.requires_grad for p in params]
        modes = [(m, m.training) for m in (*ldm.modules(), *self.objective.modules())]
        try:
            for p in params:  # only the x0 leaf is differentiated
                p.requires_grad_(False)
            ldm.eval(), self.objective.eval()
            return self._run(source, target, mask, seeds, record, callback)
        finally:
            for p, f in zip(params, flags):
                p.requires_grad_(f)
            for m, mode in modes:
                m.training = mode

    def _run(self, source, target, mask, seeds, record, callback) -> GuidedResult:
        ldm = self.ldm
        cond = ldm.condition(source, mask)
        z0 = ldm.encode(source)
        targets = self.objective.target_embeddings(target) if self.scale > 0 else []
        a0 = float(ldm.alphas[self.t0])
        z = math.sqrt(a0) * z0 + math.sqrt(1 - a0) * sample_noise(tuple(z0.shape[1:]), seeds, -1, z0.device)
        cosines, updates = [], []
        for i, st in enumerate(self.schedule):
            eps = ldm.eps(z, st.t, cond)
            x0 = (z - math.sqrt(1 - st.alpha) * eps) / math.sqrt(st.alpha)
            direction = math.sqrt(max(1 - st.alpha_prev - st.sigma ** 2, 0.0)) * eps
            z_next = math.sqrt(st.alpha_prev) * x0 + direction
            if st.sigma > 0:
                z_next = z_next + st.sigma * sample_noise(tuple(z.shape[1:]), seeds, i, z.device)
            if self.scale > 0:
                grad, cos = self._guidance(x0, targets, source, mask)
                update = self.scale * (st.sigma if self.strength == "sigma" else 1.0) * grad
                z_next = z_next + update
                cosines.append(cos)
                if record:
                    updates.append(update)
            z = z_next
            if callback is not None:
                callback(i, z)
        images = self._output(ldm.decode(z), source, mask)
        return GuidedResult(images, cosines, [s.sigma for s in self.schedule], updates if record else None)
