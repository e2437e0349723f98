"""Training logic of HFC-MFFD: the α-weighted patch/image losses of both branches for both tasks
(real/fake, forgery type), DCT statistics by a Welford pass at fit start, fusion weights fitted
on the validation split, hierarchical metrics and patch saliency."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from visec.engine.method import Counterpart, Method, check_backbones
from visec.engine.module import BinaryDetector, configure_optimizers
from visec.errors import ConfigError
from visec.methods.hfc_mffd.torch_model import (HFCMFFDNet, extract_patches, fit_fusion_logits,
                                                hfc_loss, hierarchical_decision, paint_patches,
                                                split_modalities)
from visec.preprocess.frequency import WelfordStats, dct2
from visec.registry import METHODS


class HFCParams(BaseModel):
    """Defaults are the official code's ResNet-50 sizes; the embedded config shrinks them."""

    model_config = ConfigDict(extra="forbid")

    patch_size: int = Field(128, ge=4)  # k; the stride follows from cal_stride(image_size, k)
    patches_per_side: int = Field(3, ge=1)
    num_families: int = Field(3, ge=1)  # K fake families of the manifest (checked at fit start)
    rgb_backbone: str = "resnet50"
    rgb_weights: str | None = None  # local file, or "imagenet" (mobilenetv2 only, offline)
    dct_backbone: str = "resnet50"
    dct_weights: str | None = None  # pretrained 3-channel trunk whose stem becomes a fresh 1-channel conv
    rgb_backbone_kwargs: dict[str, Any] = Field(default_factory=dict)
    dct_backbone_kwargs: dict[str, Any] = Field(default_factory=dict)
    normalize: bool = False  # ImageNet normalisation of the RGB branch (the code feeds ToTensor only)
    d_model: int | None = None  # token width; None = the backbone's feature width (2048, the paper)
    nhead: int = Field(8, ge=1)
    ffn_dim: int = Field(2048, ge=1)
    patch_hidden: list[int] = Field(default_factory=lambda: [512, 512])
    image_hidden: list[int] = Field(default_factory=lambda: [2048, 512])
    attn_dropout: float = Field(0.1, ge=0, lt=1)
    dropout: float = Field(0.5, ge=0, lt=1)
    alpha: float = Field(0.6, ge=0, le=1)  # weight of the patch-level loss
    family_weight: float = Field(1.0, ge=0)  # weight of the forgery-type loss (fakes only)
    fusion: Literal["learned", "sum"] = "learned"
    legacy_batch_axis_attention: bool = False  # reproduce the official batch-axis attention bug
    # learning rates relative to train.lr (code: backbone 1e-4, patch MLP 1e-4, attention head 1e-5)
    patch_head_lr_scale: float = Field(1.0, gt=0)
    image_head_lr_scale: float = Field(0.1, gt=0)
    welford_max_images: int | None = Field(None, ge=1)  # cap on training images for the DCT statistics
    # the ablation's switches (the paper's claim is that both help): the DCT branch and the
    # intra-attention encoder of the image heads
    branches: list[Literal["rgb", "dct"]] = Field(default_factory=lambda: ["rgb", "dct"], min_length=1)
    patch_attention: bool = True

    @field_validator("branches")
    @classmethod
    def _rgb_branch(cls, v: list[str]) -> list[str]:
        if "rgb" not in v:
            raise ValueError("the RGB branch is the detector's base: branches must include rgb")
        return [b for b in ("rgb", "dct") if b in v]


@torch.no_grad()
def dct_statistics(loader, k: int, per_side: int = 3, max_images: int | None = None) -> WelfordStats:
    """Per-coefficient mean and variance of the orthonormal DCT of every gray training patch."""
    stats, seen = WelfordStats(), 0
    for batch in loader:
        x = batch["image"] if isinstance(batch, dict) else batch
        if max_images is not None:
            x = x[:max_images - seen]
        _, gray = split_modalities(x.float())
        stats.update(dct2(extract_patches(gray, k, per_side)[:, :, 0]).flatten(0, 1))
        seen += x.shape[0]
        if max_images is not None and seen >= max_images:
            break
    return stats


class HFCMFFD(BinaryDetector):
    """The detector: ``forward`` gives the fused binary logit margin (``sigmoid`` = P(fake))."""

    net: HFCMFFDNet

    def __init__(self, net: HFCMFFDNet, train_cfg, params: HFCParams) -> None:
        super().__init__(net, train_cfg, params)
        self._last: dict[str, np.ndarray] = {}

    # -- set-up ---------------------------------------------------------------------------------
    def _families(self) -> list[str] | None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        fams = getattr(dm, "families", None)
        return list(fams) if fams is not None else None

    def setup(self, stage: str) -> None:
        fams = self._families()
        if stage == "fit" and fams is not None and len(fams) != self.net.num_families:
            raise ConfigError(f"the manifest has {len(fams)} fake families ({', '.join(fams) or 'none'}) but "
                              f"model.num_families={self.net.num_families}; set model.num_families={len(fams)}")

    def prepare_fit(self) -> None:
        """Welford pass over the training patches, once (skipped when the statistics came with a
        resumed checkpoint)."""
        if float(self.net.dct_count) > 0 or "dct" not in self.net.branches:
            return
        dm = self.trainer.datamodule
        ds = dm.dataset(dm.cfg.train_split)
        flip = getattr(ds, "hflip", False)
        ds.hflip = False  # statistics of the images themselves, without random flips
        try:
            loader = torch.utils.data.DataLoader(ds, batch_size=dm.cfg.eval_batch_size or dm.cfg.batch_size,
                                                 shuffle=False, num_workers=dm.cfg.num_workers)
            stats = dct_statistics(loader, self.net.k, self.net.per_side, self.params.welford_max_images)
        finally:
            if hasattr(ds, "hflip"):
                ds.hflip = flip
        self.net.set_dct_stats(stats)

    def configure_optimizers(self) -> Any:
        """One optimiser, three learning rates: backbones and projections at ``train.lr``, patch
        MLPs at ``patch_head_lr_scale·lr``, intra-attention heads at ``image_head_lr_scale·lr``."""
        cfg, p = self.train_cfg, self.params
        groups: dict[str, list] = {"backbone": [], "patch": [], "image": []}
        for name, param in self.net.named_parameters():
            if not param.requires_grad:
                continue
            part = name.split(".")[1]
            groups["patch" if part.startswith("patch_") else "image" if part.startswith("image_") else
                   "backbone"].append(param)
        scale = {"backbone": 1.0, "patch": p.patch_head_lr_scale, "image": p.image_head_lr_scale}
        param_groups = [{"params": v, "lr": cfg.lr * scale[k]} for k, v in groups.items() if v]
        return configure_optimizers(self, cfg, param_groups)

    # -- training -------------------------------------------------------------------------------
    def losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = self.net.forward_branches(batch["image"])
        label = batch["label"].long()
        family = torch.as_tensor(batch["family"], device=label.device).long()
        fake = family >= 0
        if fake.any() and int(family.max()) >= self.net.num_families:
            raise ConfigError(f"family index {int(family.max())} >= model.num_families={self.net.num_families}")
        a, total, logs = self.params.alpha, 0.0, {}
        for b in self.net.branches:
            o = out[b]
            lb = hfc_loss(o["patch"], o["image"], label, a)
            if fake.any():
                lf = hfc_loss(o["patch_family"][fake], o["image_family"][fake], family[fake], a)
            else:  # no fake in the batch: a zero that keeps every head in the graph
                lf = 0.0 * (o["patch_family"].sum() + o["image_family"].sum())
            logs[f"{b}_binary"], logs[f"{b}_family"] = lb, lf
            total = total + lb + self.params.family_weight * lf
        logs["loss"] = total
        return logs

    # -- evaluation -----------------------------------------------------------------------------
    def _collect(self, batch: dict[str, Any]) -> None:
        out = self.net.forward_branches(batch["image"])
        for b in self.net.branches:
            z = out[b]["image"].float()
            self._record(f"margin_{b}", z[:, 1] - z[:, 0])
            for j in range(self.net.num_families):
                self._record(f"fam{j}_{b}", out[b]["image_family"][:, j].float())
        self._record("label", batch["label"])
        self._record("family", torch.as_tensor(batch["family"], device=batch["label"].device).long())
        self._record("index", batch["index"])

    def _branch_logits(self, got: dict[str, np.ndarray]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per branch: binary logits ``[0, margin]`` (n, 2) and family logits (n, K)."""
        binary, family = [], []
        for b in self.net.branches:
            m = torch.from_numpy(got[f"margin_{b}"]).float()
            binary.append(torch.stack([torch.zeros_like(m), m], 1))
            family.append(torch.stack([torch.from_numpy(got[f"fam{j}_{b}"]).float()
                                       for j in range(self.net.num_families)], 1))
        return binary, family

    def _gathered(self) -> dict[str, np.ndarray]:
        got = super()._gathered()
        binary, _ = self._branch_logits(got)
        w = self.net.fusion_weights("binary").detach().cpu().float()
        margin = sum(w[i] * z[:, 1] for i, z in enumerate(binary))
        got["prob"] = torch.sigmoid(margin).numpy()
        self._last = got
        return got

    def fit_fusion(self, got: dict[str, np.ndarray]) -> None:
        """Fit the softmax fusion weights of both tasks on held-out (validation) branch logits."""
        binary, family = self._branch_logits(got)
        label = torch.from_numpy(got["label"]).long()
        fam = torch.from_numpy(got["family"]).long()
        if len(torch.unique(label)) == 2:
            self.net.fusion_binary.copy_(fit_fusion_logits(binary, label))
        ok = (label == 1) & (fam >= 0) & (fam < self.net.num_families)
        if ok.sum() > 0:
            self.net.fusion_family.copy_(fit_fusion_logits([f[ok] for f in family], fam[ok]))

    def on_validation_epoch_end(self) -> None:
        if self._eval and self.net.fusion == "learned":
            kept = {k: list(v) for k, v in self._eval.items()}
            got = super()._gathered()  # clears self._eval; restored below for the metrics
            self._eval = kept
            self.fit_fusion(got)
            w = self.net.fusion_weights("binary")
            self.log_dict({f"val/fusion_{b}": float(w[i]) for i, b in enumerate(self.net.branches)}, prog_bar=False)
        super().on_validation_epoch_end()

    def _evaluate(self, loader_split: str, n_bootstrap: int) -> dict[str, Any]:
        from visec.metrics.classification import roc_auc

        res = super()._evaluate(loader_split, n_bootstrap)
        got = self._last
        binary, family = self._branch_logits(got)
        fb = self.net.fusion_weights("binary").detach().cpu().float()
        ff = self.net.fusion_weights("family").detach().cpu().float()
        if len(np.unique(got["label"])) == 2:  # each branch alone, and the weight fusion gives it
            res["metrics"]["branches"] = {b: {"auc": float(roc_auc(got["label"].astype(int), got[f"margin_{b}"])),
                                              "fusion_weight": float(fb[i])}
                                          for i, b in enumerate(self.net.branches)}
        pred = hierarchical_decision(sum(fb[i] * z for i, z in enumerate(binary)),
                                     sum(ff[i] * z for i, z in enumerate(family))).numpy()
        label, fam = got["label"].astype(int), got["family"].astype(int)
        fams = self._families()
        if fams is not None and len(fams) != self.net.num_families:
            res["metrics"]["hierarchical"] = {"skipped": f"the test manifest has {len(fams)} fake families, "
                                                         f"the model {self.net.num_families}"}
            return res
        truth = np.where(label == 1, 1 + fam, 0)
        names = fams or [f"family{j}" for j in range(self.net.num_families)]
        hier: dict[str, Any] = {"acc": {"value": float((pred == truth).mean()), "ci": None},
                                "classes": "|".join(["real", *names])}
        fakes = (label == 1) & (fam >= 0)
        if fakes.any():
            fam_pred = sum(ff[i] * z for i, z in enumerate(family)).argmax(1).numpy()
            hier["type_acc"] = {"value": float((fam_pred[fakes] == fam[fakes]).mean()), "ci": None}
            hier["n_fake"] = int(fakes.sum())
        res["metrics"]["hierarchical"] = hier
        return res

    # -- explanations ---------------------------------------------------------------------------
    def saliency(self, images: torch.Tensor) -> torch.Tensor:
        """The patch MLPs' fused per-patch probabilities of fake painted back on the image
        (overlaps averaged): ``(B, H, W)`` in [0, 1]."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                probs = self.net.patch_fake_probability(images)
            return paint_patches(probs, images.shape[-2:], self.net.k, self.net.per_side).clamp(0, 1)
        finally:
            self.train(was_training)


@METHODS.register("hfc_mffd")
class HFCMethod(Method):
    """HFC-MFFD: patch RGB + DCT branches, intra-attention, hierarchical real/fake -> forgery type; VIS, NIR and VIS+NIR"""

    family = "forgery detection"
    Params = HFCParams
    Module = HFCMFFD
    modalities = ("vis", "nir", "vis+nir")
    bench = "forgery"
    # `visec bench --method hfc_mffd` also trains on the NIR twin and on VIS+NIR (intra only)
    bench_entrants = (("nir", ("data.modality=nir",), False, False),
                      ("vis+nir", ("data.modality=vis+nir",), False, False))
    # the paper's claim: the DCT branch and the intra-attention heads beat the RGB patch branch alone
    counterpart = Counterpart(("model.branches=[rgb]", "model.patch_attention=false"),
                              "DCT branch (off) and patch intra-attention (off)",
                              removed=("dct.*", "*.encoder.*"))

    @classmethod
    def build_net(cls, params: HFCParams) -> HFCMFFDNet:
        check_backbones(params.rgb_backbone, params.dct_backbone)  # "did you mean" before anything is built
        p = params
        return HFCMFFDNet(patch_size=p.patch_size, per_side=p.patches_per_side, num_families=p.num_families,
                          rgb_backbone=p.rgb_backbone, rgb_weights=p.rgb_weights, dct_backbone=p.dct_backbone,
                          dct_weights=p.dct_weights, rgb_backbone_kwargs=p.rgb_backbone_kwargs,
                          dct_backbone_kwargs=p.dct_backbone_kwargs, normalize=p.normalize, d_model=p.d_model,
                          nhead=p.nhead, ffn_dim=p.ffn_dim, patch_hidden=p.patch_hidden,
                          image_hidden=p.image_hidden, attn_dropout=p.attn_dropout, dropout=p.dropout,
                          fusion=p.fusion, legacy_batch_axis_attention=p.legacy_batch_axis_attention,
                          branches=p.branches, patch_attention=p.patch_attention)

    @classmethod
    def card_name(cls, params: HFCParams) -> str:
        name = "hfc_mffd"
        if params.legacy_batch_axis_attention:
            name += "+legacy-attention"
        if params.fusion == "sum":
            name += "+sum-fusion"
        if "dct" not in params.branches:
            name += "+rgb-only"
        if not params.patch_attention:
            name += "+no-attention"
        return name
