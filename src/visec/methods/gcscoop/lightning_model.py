"""GCSCoOp and its baselines on the engine: one method, ``gcscoop``, whose ``model.learner`` picks the
prompt learner (zero-shot CLIP, CoOp, CoCoOp, KgCoOp) and whose ``train.sam`` picks the optimiser
rule (plain, SAM, GCSAM; :mod:`visec.engine.sam`). GCSCoOp = CoOp + GCSAM (the shipped default).

* training: cross-entropy of ``exp(s) <v, w_k>`` over the base classes (few-shot), plus for KgCoOp
  ``kg_weight * mean_k ||w_k - w_k^clip||^2`` (normalised features of the learnt and the hand-crafted
  prompts);
* validation: top-1 accuracy on the few-shot base validation shots (``val/acc``);
* test: top-1 accuracy with a Wilson interval on the test split's classes; ``test`` holds the base
  classes, ``test_new`` the new ones (the module takes the split's class names before testing), so
  one checkpoint gives both halves of the base-to-new protocol.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator

from visec.config import TrainConfig
from visec.data.synthetic.captions import CATEGORIES
from visec.engine.method import Method
from visec.engine.module import MethodModule
from visec.errors import ConfigError
from visec.methods.gcscoop.torch_model import LEARNERS, PromptCLIP, load_clip
from visec.registry import METHODS

# the frozen CLIP stays in eval mode on purpose (no dropout, no statistics updates)
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
EMBEDDED_BASE = list(CATEGORIES[:(len(CATEGORIES) + 1) // 2])


class GCSCoOpParams(BaseModel):
    """Parameters of ``gcscoop`` (``model.*``)."""

    model_config = ConfigDict(extra="forbid")

    learner: Literal["zeroshot", "coop", "cocoop", "kgcoop"] = "coop"
    clip: str = "tiny"  # "tiny" (the embedded demo's CLIP) or an open_clip name: ViT-B-16, ViT-B-32
    # a local weights file; "embedded": the tiny CLIP pre-trained on the embedded captions (cached
    # under embedded_root, by clip_seed); "random": untrained (tests only)
    clip_weights: str | None = "embedded"
    embedded_root: str = "data/captions"
    clip_seed: int = 0
    tiny: dict[str, Any] = Field(default_factory=dict)  # tiny CLIP sizes (visec...torch_model.tiny_clip)
    pretrain: dict[str, Any] = Field(default_factory=dict)  # its pre-training: epochs, batch_size, lr, weight_decay
    ctx_init: str | None = "a photo of a"  # GCSCoOp's configs: 4 tokens from this phrase
    n_ctx: int | None = Field(None, ge=1, le=64)  # only with ctx_init: null (random context)
    meta_hidden: int | None = Field(None, ge=1)  # CoCoOp's meta-net width (default D/16)
    kg_weight: float = Field(8.0, ge=0)  # KgCoOp's lambda
    shots: int = Field(16, ge=1)  # training images per base class
    val_shots: int = Field(4, ge=0)  # validation images per base class
    crop_scale: tuple[float, float] = (0.5, 1.0)  # random resized crop (CoOp: 0.08-1 on 224 px photos)
    classnames: list[str] = Field(default_factory=lambda: list(EMBEDDED_BASE), min_length=1)

    @model_validator(mode="after")
    def _check(self) -> "GCSCoOpParams":
        from visec.methods.gcscoop.pretrain import DEFAULTS

        unknown = sorted(set(self.pretrain) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"unknown pretrain setting(s) {unknown} (known: {', '.join(DEFAULTS)})")
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1 (got {self.crop_scale})")
        return self


class PromptLearnerModule(MethodModule):
    """``self.net`` is a :class:`PromptCLIP` (frozen CLIP + prompt context; what checkpoints hold)."""

    def __init__(self, net: PromptCLIP, train_cfg: TrainConfig, params: GCSCoOpParams) -> None:
        super().__init__(net, train_cfg, params)
        self.net: PromptCLIP
        self._features: tuple[torch.Tensor, int, torch.Tensor] | None = None  # (images, version, features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def _use_classnames(self, split: str | None) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and hasattr(dm, "classnames") and split is not None:
            names = dm.classnames(split)
            if names != self.net.classnames:
                self.net.set_classnames(names)

    def setup(self, stage: str) -> None:
        if stage in ("fit", "validate"):
            self._use_classnames(self.trainer.datamodule.cfg.train_split)

    def prepare_test(self) -> None:
        self._use_classnames(self.trainer.datamodule.cfg.test_split)

    def kg_term(self) -> torch.Tensor:
        """KgCoOp: mean squared distance of the learnt class features to the hand-crafted ones."""
        w = self.net.text_features()
        return (w - self.net.handcrafted_features()).pow(2).sum(-1).mean()

    def batch_features(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen encoder's features of this training batch, encoded once per batch: SAM / GCSAM's
        second pass (same images, perturbed context) reuses them. Keyed on the batch tensor itself (a
        held reference, so its memory cannot be reused by the next batch) and its in-place version."""
        held = self._features
        if held is None or held[0] is not images or held[1] != images._version:
            with torch.no_grad():
                held = (images, images._version, self.net.image_features(images))
            self._features = held
        return held[2]

    def on_train_epoch_end(self) -> None:
        self._features = None

    def losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        logits = self.net.logits_from_features(self.batch_features(batch["image"]))
        y = batch["label"]
        terms = {"ce": F.cross_entropy(logits, y)}
        if self.params.learner == "kgcoop" and self.params.kg_weight > 0:
            terms["kg"] = self.params.kg_weight * self.kg_term()
        loss = torch.stack(list(terms.values())).sum()
        with torch.no_grad():
            terms["acc"] = (logits.argmax(1) == y).float().mean()
        return {"loss": loss, **terms}

    def configure_optimizers(self) -> Any:
        if not any(p.requires_grad for p in self.parameters()):
            raise ConfigError("model.learner=zeroshot has nothing to train (zero-shot CLIP); evaluate it with "
                              "`visec bench --method gcscoop`, or pick coop, cocoop or kgcoop")
        return super().configure_optimizers()

    # -- evaluation ----------------------------------------------------------------------------
    def _collect(self, batch: dict[str, Any]) -> None:
        with torch.no_grad():
            pred = self(batch["image"]).argmax(1)
        self._record("index", batch["index"])
        self._record("label", batch["label"])
        self._record("pred", pred)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._collect(batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._collect(batch)

    def on_validation_epoch_end(self) -> None:
        if not self._eval:
            return
        d = self._gathered()
        acc = float((d["pred"] == d["label"]).mean())
        self.val_results = {"acc": acc, "n": len(d["index"])}
        self.log("val/acc", acc, prog_bar=True)

    def on_test_epoch_end(self) -> None:
        import pandas as pd

        from visec.metrics import topk_accuracy

        d = self._gathered()
        names = self.net.classnames
        metrics = {"classify": topk_accuracy(d["label"], d["pred"])}
        metrics["classify"]["classes"] = len(names)
        scores = pd.DataFrame({"index": d["index"].astype(np.int64), "label": d["label"].astype(np.int64),
                               "pred": d["pred"].astype(np.int64),
                               "class": [names[int(i)] for i in d["label"]]})
        self.test_results = {"metrics": metrics, "scores": scores, "n": len(scores)}


@METHODS.register("gcscoop")
class GCSCoOpMethod(Method):
    """GCSCoOp (CoOp + gradient-constrained SAM) and CLIP / CoOp / CoCoOp / KgCoOp; base-to-new accuracy"""

    family = "prompt learning"
    Params = GCSCoOpParams
    Module = PromptLearnerModule
    modalities = ("vis",)
    bench = "gcscoop"
    test_protocols = (("test", "base"), ("test_new", "new"))

    @classmethod
    def build_net(cls, params: GCSCoOpParams) -> PromptCLIP:
        weights: str | Path | None = params.clip_weights
        if weights == "embedded":
            if params.clip != "tiny":
                raise ConfigError("model.clip_weights=embedded is the tiny CLIP of the embedded data; give a "
                                  f"weights file for model.clip={params.clip}")
            from visec.methods.gcscoop.pretrain import pretrain_tiny_clip

            weights = pretrain_tiny_clip(params.embedded_root, params.clip_seed, params.tiny, params.pretrain)
        clip = load_clip(params.clip, weights, params.tiny)
        return PromptCLIP(clip, params.classnames, learner=params.learner, ctx_init=params.ctx_init,
                          n_ctx=params.n_ctx, meta_hidden=params.meta_hidden)

    @classmethod
    def card_name(cls, params: GCSCoOpParams) -> str:
        """``gcscoop/<learner>`` (``gcscoop/zeroshot`` is plain CLIP); the CLIP when it is not the tiny one.
        The engine adds ``+sam`` / ``+gcsam`` for the optimiser rule (``gcscoop/coop+gcsam`` is GCSCoOp)."""
        name = f"gcscoop/{params.learner}"
        return name if params.clip == "tiny" else f"{name}@{params.clip}"

    @classmethod
    def build_datamodule(cls, data_cfg, train_cfg, params):
        from visec.data.prompt_datasets import PromptDataModule

        return PromptDataModule(data_cfg, train_cfg, params)


__all__ = ["GCSCoOpMethod", "GCSCoOpParams", "PromptLearnerModule", "LEARNERS"]
