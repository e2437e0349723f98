"""ACMF training and testing.

Stage 1 (``fit``): binary cross-entropy on the MFR-masked input (training only; validation and
test see the plain image). Stage 2 (``test`` with ``model.fac=true``): forgery-attention
consistency, a per-video test-time adaptation of the stage-1 weights (transductive).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from visec.engine.method import Counterpart, Method, check_backbones, with_backbone
from visec.engine.module import BinaryDetector
from visec.methods.acmf.torch_model import (ACMFNet, ForgeryAttentionConsistency, MaskedFrequency,
                                            default_half_width)
from visec.registry import METHODS


class ACMFParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backbone: str = "xception"  # the paper's backbone; any name from `visec list backbones`
    weights: Path | None = None  # local backbone weights (mobilenetv2 also takes "imagenet")
    dropout: float = Field(0.0, ge=0, lt=1)  # the paper's Xception has a plain linear head
    normalize: bool = True  # ImageNet mean/std inside the model (the official code feeds [0, 1] as is)
    backbone_kwargs: dict[str, Any] = Field(default_factory=dict)
    # masked frequency forgery representation (stage 1, and FAC's source batches)
    mask_ratio: float = Field(0.1, ge=0, le=1)  # r: probability of dropping a pixel's high frequencies
    low_pass: int | None = Field(None, ge=1)  # d: half-width of the kept low box; None = round(5*H/224)
    mfr_mode: Literal["spatial", "spectral"] = "spatial"  # spatial = the official code
    absolute: bool = True  # |Re(.)| of the high-pass image (official torch variant); False = signed
    # forgery attention consistency (stage 2, test time only)
    fac: bool = False
    fac_steps: int = Field(2, ge=1)  # K
    fac_lr: float = Field(1e-3, gt=0)
    fac_betas: tuple[float, float] = (0.9, 0.95)
    fac_weight_decay: float = Field(0.01, ge=0)
    flood_level: float = Field(0.04, ge=0)  # b
    source_batch: int = Field(30, ge=1)  # labelled source frames per FAC step
    source_pool: int = Field(120, ge=2)  # fixed, class-balanced, seeded train frames: A_S and the source batches
    carry_optimizer_state: bool = False  # True = the official code's AdamW state shared across videos


class ACMF(BinaryDetector):
    """Single-logit detector trained on MFR-masked inputs; optional FAC at test time."""

    def __init__(self, net: ACMFNet, train_cfg, params: ACMFParams) -> None:
        super().__init__(net, train_cfg, params)
        self.mfr = MaskedFrequency(params.mask_ratio, params.low_pass, params.mfr_mode, params.absolute)
        self.fac_adapter: ForgeryAttentionConsistency | None = None

    # -- stage 1 ---------------------------------------------------------------------------------
    def losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        x = self.mfr(batch["image"]) if self.training else batch["image"]
        logits = self(x)
        return {"loss": F.binary_cross_entropy_with_logits(logits, batch["label"])}

    # -- stage 2 -----------------------------------------------------------------------------------
    def make_adapter(self) -> ForgeryAttentionConsistency:
        """A FAC adapter around ``self.net`` whose ``theta_0`` is the current weights."""
        p = self.params
        return ForgeryAttentionConsistency(
            self.net, self.mfr, steps=p.fac_steps, lr=p.fac_lr, betas=p.fac_betas,
            weight_decay=p.fac_weight_decay, flood_level=p.flood_level, source_batch=p.source_batch,
            carry_optimizer_state=p.carry_optimizer_state, seed=self.train_cfg.seed)

    def _source_pool(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed, seeded, class-balanced pool of unaugmented training frames."""
        from visec.data.datamodule import FaceDataset
        from visec.data.manifest import Manifest

        dm = self.trainer.datamodule
        train = dm.dataset(dm.cfg.train_split)
        df = train.df
        rng = np.random.default_rng(self.train_cfg.seed)
        half = self.params.source_pool // 2
        rows = []
        for label in (0, 1):
            idx = np.flatnonzero(df["label"].to_numpy() == label)
            if len(idx) == 0:
                raise ValueError(f"FAC needs real and fake training frames; split "
                                 f"'{dm.cfg.train_split}' has no label {label}")
            rows.extend(rng.choice(idx, size=min(half, len(idx)), replace=False).tolist())
        plain = FaceDataset(Manifest(df.iloc[sorted(rows)], train.root), train.image_size, train=False,
                            modality=train.modality, families=train.families)
        items = [plain[i] for i in range(len(plain))]
        return torch.stack([it["image"] for it in items]), torch.stack([it["label"] for it in items])

    def prepare_test(self) -> None:
        self.fac_adapter = None
        if self.params.fac:
            images, labels = self._source_pool()
            self.fac_adapter = self.make_adapter()
            self.fac_adapter.set_source(images.to(self.device), labels.to(self.device))

    def adapts_at_test(self) -> bool:
        return self.params.fac

    def attack_path(self) -> str | None:
        if not self.params.fac:
            return None
        return ("crafted on the stage-1 detector before adaptation (the per-video adaptation is a test-time "
                "optimisation, taken as the identity: BPDA); the attacked frames are then adapted on and scored")

    def adapted_probabilities(self, index: np.ndarray) -> torch.Tensor:
        """Adapt on every video this rank holds frames of (its whole video), score those frames."""
        assert self.fac_adapter is not None
        ds = self.trainer.datamodule.dataset(self.trainer.datamodule.cfg.test_split)
        videos = ds.df["video_id"].to_numpy()
        prob = np.zeros(len(index), dtype=np.float32)
        self._fac_log = []
        for vid in dict.fromkeys(videos[index]):  # first-seen order
            rows = np.flatnonzero(videos == vid)
            frames = torch.stack([self.test_image(ds, i) for i in rows]).to(self.device)
            before = self.fac_adapter._no_grad_logits(frames)
            logits = self.fac_adapter.adapt_and_predict(frames, key=str(vid))
            hist = self.fac_adapter.history
            self._fac_log.append((hist[0]["att"], hist[-1]["att"], hist[0]["cls"],
                                  float((torch.sigmoid(logits) - torch.sigmoid(before)).abs().mean())))
            by_row = dict(zip(rows.tolist(), torch.sigmoid(logits.float()).cpu().tolist()))
            mine = videos[index] == vid
            prob[mine] = [by_row[int(i)] for i in index[mine]]
        return torch.from_numpy(prob)

    def _evaluate(self, loader_split: str, n_bootstrap: int) -> dict[str, Any]:
        """With FAC, the card also says what the adaptation did (means over the test videos): the
        attention-consistency loss at the first and the last step, the source loss before flooding,
        and how far the frames' probabilities moved."""
        res = super()._evaluate(loader_split, n_bootstrap)
        log = getattr(self, "_fac_log", None)
        if self.params.fac and log:
            a = np.asarray(log, dtype=np.float64)
            res["metrics"]["fac"] = {"videos": len(a), "att_first_step": float(a[:, 0].mean()),
                                     "att_last_step": float(a[:, 1].mean()), "source_bce": float(a[:, 2].mean()),
                                     "mean_abs_prob_change": float(a[:, 3].mean())}
            self._fac_log = []
        return res

    def adapt_and_predict(self, frames: torch.Tensor, key: str | None = None) -> torch.Tensor:
        """FAC on one video outside the engine: probabilities of fake ``(N,)`` after adaptation.
        Needs a source pool (``module.fac_adapter.set_source`` or a test run with fac on)."""
        if self.fac_adapter is None:
            raise RuntimeError("no FAC source pool yet: `module.fac_adapter = module.make_adapter()` "
                               "then `module.fac_adapter.set_source(images, labels)`")
        return torch.sigmoid(self.fac_adapter.adapt_and_predict(frames, key))


@METHODS.register("acmf")
class ACMFMethod(Method):
    """masked frequency forgery representation on Xception; optional per-video forgery-attention-consistency test-time adaptation (model.fac=true)"""

    family = "forgery detection"
    Params = ACMFParams
    Module = ACMF
    bench = "forgery"
    # `visec bench --method acmf` also tests the intra checkpoint with FAC (transductive)
    bench_tests = (("model.fac=true",),)
    # the paper's claim: MFR (and FAC) beat the same backbone trained plainly; r = 0 makes the MFR
    # the identity, FAC is off by default: the counterpart is the plain backbone classifier
    counterpart = Counterpart(("model.mask_ratio=0", "model.fac=false"),
                              "masked frequency representation (r = 0) and FAC (off)")

    @classmethod
    def build_net(cls, params: ACMFParams) -> ACMFNet:
        check_backbones(params.backbone)  # fail early with "did you mean"
        return ACMFNet(params.backbone, str(params.weights) if params.weights else None, params.dropout,
                       params.normalize, **params.backbone_kwargs)

    @classmethod
    def card_name(cls, params: ACMFParams) -> str:
        """``acmf`` / ``acmf+fac`` (``+no-mfr`` with r = 0); ``acmf/<backbone>[+imagenet|+pretrained][+fac]`` off the paper's backbone."""
        return (with_backbone("acmf", params.backbone, params.weights, "xception")
                + ("+no-mfr" if params.mask_ratio == 0 else "") + ("+fac" if params.fac else ""))


__all__ = ["ACMF", "ACMFMethod", "ACMFParams", "default_half_width"]
