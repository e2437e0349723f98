"""Adv-Diffusion on the engine: the inpainting latent-diffusion model it guides.

The attack itself needs no training (``visec attack --method adv_diffusion``); what trains here is
the small inpainting LDM visec uses when the user has no Stable Diffusion 2 inpainting folder
(``model.ldm``). Two stages in one run:

* epochs ``< ae_epochs``: the autoencoder, ``|D(E(x)) - x|_1 + ||D(E(x)) - x||^2 + kl_weight KL``;
  when the stage ends the scaling factor ``k = 1 / std`` of the training latents is set (SD's 0.18215
  plays this role);
* then the UNet alone (autoencoder frozen), epsilon prediction on ``z_t = sqrt(a_t) k E(x) +
  sqrt(1 - a_t) eps`` conditioned on ``[m, k E(x (1 - M))]`` for training masks ``M``: the complement of
  a random face ellipse (the shape of the attack's identity mask), random boxes, or everything.

Validation logs ``val/denoise_mse`` (the selection metric, fixed timesteps and noise) and
``val/recon_psnr``; the test card reports both on the test faces.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator

from visec.config import DataConfig, TrainConfig
from visec.engine.method import Method
from visec.engine.module import MethodModule
from visec.errors import ConfigError
from visec.methods.adv_diffusion.torch_model import InpaintLDM, build_tiny_ldm, load_diffusers_inpainting
from visec.registry import METHODS

EMBEDDED_ROOT = "data/advfaces"
FACES_VERSION = 1


class AdvDiffusionParams(BaseModel):
    """Parameters of ``adv_diffusion`` (``model.*``): the LDM and the attack's defaults."""

    model_config = ConfigDict(extra="forbid")

    # "tiny": the small LDM trained here; or a local diffusers inpainting folder (SD2 inpainting)
    ldm: str = "tiny"
    latent_channels: int = Field(4, ge=1)
    ae_widths: list[int] = Field(default_factory=lambda: [16, 32, 32], min_length=2)
    unet_widths: list[int] = Field(default_factory=lambda: [32, 64], min_length=2)
    context_dim: int = Field(32, ge=1)
    norm_groups: int = Field(8, ge=1)
    attention_head_dim: int = Field(8, ge=1)
    ae_epochs: int = Field(4, ge=1)  # the autoencoder stage; the UNet trains after it
    kl_weight: float = Field(1e-6, ge=0)
    # the embedded training faces (GAN faces, identity-disjoint from the attack's faces)
    faces: int = Field(2000, ge=8)
    embedded_root: str = EMBEDDED_ROOT
    # the attack (the paper's defaults; `visec attack --set` or the bench may change them)
    guidance_scale: float = Field(300.0, ge=0)
    t0: int = Field(999, ge=1, le=999)
    ddim_steps: int = Field(45, ge=1, le=1000)
    eta: float = Field(1.0, ge=0)
    strength: Literal["sigma", "constant"] = "sigma"
    reduction: Literal["sum", "mean"] = "sum"
    forehead: float = Field(0.35, ge=0, le=2)
    blend: bool = False  # not in the paper: paste the kept face back (output and guidance)

    @field_validator("ae_widths", "unet_widths")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(w < 1 for w in v):
            raise ValueError("every width must be >= 1")
        return v

    @property
    def tiny(self) -> bool:
        return self.ldm == "tiny"


def training_masks(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Training masks ``(n, 1, size, size)`` (1 = repaint): half the complement of a random face
    ellipse (the attack's mask shape), a third random boxes, the rest everything."""
    g = generator
    u = torch.rand(n, 6, generator=g)
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    masks = torch.ones(n, 1, size, size)
    for i in range(n):
        kind = u[i, 0].item()
        if kind < 0.5:  # outside a face ellipse (centre and radii jittered around the aligned face)
            cx, cy = size * (0.45 + 0.1 * u[i, 1]), size * (0.45 + 0.15 * u[i, 2])
            rx, ry = size * (0.22 + 0.12 * u[i, 3]), size * (0.3 + 0.12 * u[i, 4])
            inside = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1
            masks[i, 0] = (~inside).float()
        elif kind < 0.83:  # a random box
            w, h = int(size * (0.25 + 0.5 * u[i, 1])), int(size * (0.25 + 0.5 * u[i, 2]))
            x0, y0 = int((size - w) * u[i, 3]), int((size - h) * u[i, 4])
            masks[i, 0] = 0
            masks[i, 0, y0:y0 + h, x0:x0 + w] = 1
    return masks


class AdvDiffusionModule(MethodModule):
    """Trains the inpainting LDM in two stages (see the module docstring)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    @property
    def stage(self) -> str:
        return "ae" if self.current_epoch < self.params.ae_epochs else "unet"

    def losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        x = batch["image"].float()
        if self.stage == "ae":
            return self.ae_losses(x)
        return self.unet_losses(x, torch.Generator().manual_seed(int(self.global_step)))

    def ae_losses(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        vae = self.net.vae
        post = vae.encode(x * 2 - 1).latent_dist
        rec = vae.decode(post.sample()).sample
        l1 = (rec - (x * 2 - 1)).abs().mean()
        l2 = (rec - (x * 2 - 1)).square().mean()
        kl = post.kl().mean()
        return {"loss": l1 + l2 + self.params.kl_weight * kl, "ae_l1": l1, "ae_kl": kl}

    def unet_losses(self, x: torch.Tensor, g: torch.Generator) -> dict[str, torch.Tensor]:
        ldm: InpaintLDM = self.net
        masks = training_masks(x.shape[0], x.shape[-1], g).to(x)
        with torch.no_grad():
            z0 = ldm.encode(x)
            cond = ldm.condition(x, masks)
        t = torch.randint(0, len(ldm.alphas), (x.shape[0],), generator=g).to(x.device)
        noise = torch.randn(z0.shape, generator=g).to(x)
        a = ldm.alphas[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        mse = (ldm.eps(zt, t, cond) - noise).square().mean()
        return {"loss": mse, "denoise_mse": mse}

    def configure_optimizers(self) -> Any:
        from visec.engine.module import configure_optimizers

        params = self.net.parameters() if self.params.tiny else self.net.unet.parameters()
        return configure_optimizers(self, self.train_cfg, [{"params": [p for p in params if p.requires_grad]}])

    def prepare_fit(self) -> None:
        if not self.params.tiny:
            raise ConfigError(f"model.ldm={self.params.ldm}: a pretrained LDM is used as it is; "
                              f"`visec train adv_diffusion` trains the tiny one (model.ldm=tiny)")

    def epoch_stage(self) -> None:
        """When the autoencoder stage ends: the latent scaling ``k = 1 / std`` of the training latents."""
        if self.current_epoch == self.params.ae_epochs - 1:
            self.net.scaling.fill_(1.0 / latent_std(self.net, self.trainer.datamodule.train_dataloader()))

    # -- evaluation -----------------------------------------------------------------------------
    @torch.no_grad()
    def _eval_step(self, batch: dict[str, Any]) -> None:
        x = batch["image"].float()
        g = torch.Generator().manual_seed(int(batch["index"][0]))
        ldm: InpaintLDM = self.net
        from visec.metrics.sequence import psnr

        rec = ldm(x).clamp(0, 1)
        self._record("index", torch.as_tensor(batch["index"]))
        self._record("psnr", torch.as_tensor(psnr(rec.float(), x.float())))
        masks = training_masks(x.shape[0], x.shape[-1], g).to(x)
        z0, cond = ldm.encode(x), ldm.condition(x, masks)
        errs = []
        for t in (100, 400, 700):  # fixed timesteps, seeded noise: comparable across epochs
            noise = torch.randn(z0.shape, generator=g).to(x)
            a = float(ldm.alphas[t])
            pred = ldm.eps(a ** 0.5 * z0 + (1 - a) ** 0.5 * noise, t, cond)
            errs.append((pred - noise).square().mean((1, 2, 3)))
        self._record("mse", torch.stack(errs).mean(0))

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def _summary(self) -> dict[str, Any]:
        d = self._gathered()
        return {"denoise_mse": float(d["mse"].mean()), "recon_psnr": float(d["psnr"].mean()), "n": int(len(d["index"]))}

    def on_validation_epoch_end(self) -> None:
        if not self._eval:
            return
        s = self._summary()
        self.val_results = {"metrics": {k: s[k] for k in ("denoise_mse", "recon_psnr")}, "n": s["n"]}
        self.log_dict({f"val/{k}": v for k, v in self.val_results["metrics"].items()}, prog_bar=True)

    def on_test_epoch_end(self) -> None:
        s = self._summary()
        self.test_results = {"metrics": {"ldm": {"denoise_mse": s["denoise_mse"], "recon_psnr": s["recon_psnr"],
                                                 "scaling": float(self.net.scaling)}}, "n": s["n"]}


@torch.no_grad()
def latent_std(ldm: InpaintLDM, loader, max_batches: int = 8) -> float:
    """Standard deviation of the (unscaled) posterior-mean latents over the first batches."""
    vals = []
    for i, batch in enumerate(loader):
        if i >= max_batches:
            break
        vals.append(ldm.vae.encode(batch["image"].float().to(ldm.scaling.device) * 2 - 1).latent_dist.mean.flatten())
    return float(torch.cat(vals).std().clamp_min(1e-6))


def embedded_faces(root: str | Path, n: int, seed: int) -> Path:
    """The embedded training faces: ``n`` GAN faces (``gan_faces(n, seed)``) as PNGs with a manifest
    (80/10/10 train/val/test), written once per ``(n, seed)`` and reused."""
    from visec.data.manifest import make_record, write_manifest
    from visec.data.synthetic.sources import gan_faces

    out = Path(root) / f"faces-n{n}-s{seed}-v{FACES_VERSION}"
    manifest = out / "manifest.jsonl"
    meta = out / "meta.json"
    want = {"n": n, "seed": seed, "version": FACES_VERSION}
    if manifest.is_file() and meta.is_file() and json.loads(meta.read_text()) == want:
        return manifest
    from PIL import Image

    faces = gan_faces(n, seed)
    rows = []
    for i, face in enumerate(faces):
        split = "train" if i < int(0.8 * n) else "val" if i < int(0.9 * n) else "test"
        rel = Path(split) / f"{i:05d}.png"
        (out / split).mkdir(parents=True, exist_ok=True)
        Image.fromarray(face).save(out / rel)
        rows.append(make_record(out, rel, dataset="advfaces", split=split, label=0, manipulation="real",
                                video_id=f"advfaces/{i}", frame_index=0))
    write_manifest(rows, manifest)
    meta.write_text(json.dumps(want))
    return manifest


# the attack's faces are drawn from this seed offset, identity-disjoint from the LDM's training faces
ATTACK_FACE_SEED = 500_000
LDM_FACE_SEED = 200_000


@METHODS.register("adv_diffusion")
class AdvDiffusionMethod(Method):
    """Adv-Diffusion: identity impersonation by identity-guided latent-diffusion inpainting (trains its small LDM)"""

    family = "identity attack"
    Params = AdvDiffusionParams
    Module = AdvDiffusionModule
    modalities = ("vis",)
    bench = "adv_diffusion"

    @classmethod
    def build_net(cls, params: AdvDiffusionParams) -> InpaintLDM:
        if not params.tiny:
            return load_diffusers_inpainting(params.ldm)
        return build_tiny_ldm(64, params.latent_channels, params.ae_widths, params.unet_widths, params.context_dim,
                              params.norm_groups, params.attention_head_dim, check_size=False)

    @classmethod
    def card_name(cls, params: AdvDiffusionParams) -> str:
        return "adv_diffusion" if params.tiny else "adv_diffusion/sd2"

    @classmethod
    def build_datamodule(cls, data_cfg: DataConfig, train_cfg: TrainConfig, params: AdvDiffusionParams):
        from visec.data.datamodule import FaceDataModule

        if data_cfg.manifest is None:
            path = embedded_faces(data_cfg.root or params.embedded_root, params.faces,
                                  LDM_FACE_SEED + train_cfg.seed)
            data_cfg = data_cfg.model_copy(update={"manifest": path})
        return FaceDataModule(data_cfg, train_cfg)


__all__ = ["AdvDiffusionMethod", "AdvDiffusionParams", "AdvDiffusionModule", "training_masks", "embedded_faces",
           "latent_std", "ATTACK_FACE_SEED", "LDM_FACE_SEED"]
