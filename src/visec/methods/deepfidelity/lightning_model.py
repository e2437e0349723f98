"""Training logic of DeepFidelity: stage A (SSAAFormer classifier) and stage B (fidelity SVR).

Stage A trains the SSAAFormer's class head with label-smoothed binary cross-entropy (smoothing
0.1, i.e. targets 0.05 / 0.95), optionally with MixToken (labels mixed by area) and a token-head
loss. Stage B is refitted from the current weights at the end of every training epoch -- in
``on_train_batch_end`` of the epoch's last batch, which runs *before* validation and before the
engine saves the epoch's checkpoint, so the validation AUC that selects the best checkpoint is the
final scorer's, and every saved checkpoint holds the SVR fitted to its own weights:

1. features ``f = mean + 0.5 * max`` of the post-BN tokens of up to ``svr_max_samples`` training
   images (no augmentation);
2. their face quality (:mod:`visec.methods.deepfidelity.quality`, or a manifest column);
3. per-class min-max mapping of quality to fidelity targets: fakes [0, 0.4], reals [0.6, 1];
4. an RBF SVR (sklearn ``SVR()`` defaults) on (f, target), copied into ``net.svr``'s buffers.

The card's probability of fake is ``clip(1 - s, 0, 1)`` with ``s`` the SVR's fidelity score; the
stage-A classifier's metrics are kept beside it as ``metrics["stage_a"]``.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator

from visec.config import TrainConfig
from visec.engine.method import Counterpart, Method
from visec.engine.module import BinaryDetector, make_optimizer
from visec.errors import ConfigError
from visec.methods.deepfidelity.quality import build_quality, fidelity_targets
from visec.methods.deepfidelity.torch_model import DeepFidelityNet, SSAAFormer
from visec.registry import METHODS


class DeepFidelityParams(BaseModel):
    """Defaults: the official code's SSAAFormer (UniFormer-L-LS sizes) and its two stages."""

    model_config = ConfigDict(extra="forbid")

    # -- SSAAFormer ------------------------------------------------------------------------------
    depths: list[int] = Field(default_factory=lambda: [5, 10, 24, 7])
    dims: list[int] = Field(default_factory=lambda: [128, 192, 448, 640])
    head_dim: int = Field(64, ge=1)
    mlp_ratio: float = Field(4.0, gt=0)
    patch_sizes: list[int] = Field(default_factory=lambda: [4, 2, 2, 2])
    drop_path: float = Field(0.4, ge=0, lt=1)  # stochastic depth, rising linearly over all blocks
    layer_scale: float | None = Field(1e-6, gt=0)  # initial layer-scale gamma (None: no layer scale)
    ssaa_stages: list[int] = Field(default_factory=lambda: [1])  # conv stages with the SSAA fusion
    normalize: bool = True  # ImageNet mean/std inside the model
    # -- stage A ---------------------------------------------------------------------------------
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    mix_token: bool = False  # the official code has it on but never mixes the labels; here they are
    aux_weight: float = Field(0.0, ge=0)  # token-head loss weight (0: the official code's untrained aux head)
    warmup_epochs: int = Field(0, ge=0)  # linear warm-up from warmup_lr (timm epoch semantics)
    warmup_lr: float = Field(1e-6, gt=0)
    min_lr: float = Field(0.0, ge=0)  # floor of the cosine schedule
    # -- stage B ---------------------------------------------------------------------------------
    quality: str = "sharpness_jpeg"  # a measure of visec.methods.deepfidelity.quality
    quality_column: str | None = None  # or a manifest column with precomputed quality (e.g. SER-FIQ)
    svr_C: float = Field(1.0, gt=0)
    svr_epsilon: float = Field(0.1, ge=0)
    svr_gamma: float | Literal["scale", "auto"] = "scale"
    svr_max_samples: int = Field(4096, ge=2)  # training images the SVR is fitted on (seeded subset)
    # what the card scores with: the fidelity SVR (the method) or the stage-A classifier's own
    # sigmoid(class logit) (the ablation's counterpart; stage B is then not fitted)
    scorer: Literal["svr", "stage_a"] = "svr"

    @field_validator("depths", "dims", "patch_sizes")
    @classmethod
    def _four(cls, v: list[int]) -> list[int]:
        if len(v) != 4 or min(v) < 1:
            raise ValueError("needs four positive entries, one per stage")
        return v

    @field_validator("ssaa_stages")
    @classmethod
    def _conv_stages(cls, v: list[int]) -> list[int]:
        if any(s not in (1, 2) for s in v):
            raise ValueError("SSAA applies to the convolutional stages 1 and 2 only")
        return v


class DeepFidelity(BinaryDetector):
    """SSAAFormer classifier (stage A) + quality-aware fidelity SVR (stage B)."""

    def __init__(self, net: DeepFidelityNet, train_cfg: TrainConfig, params: DeepFidelityParams) -> None:
        super().__init__(net, train_cfg, params)
        self.quality = build_quality(params.quality)
        self._quality_cache: dict[int, float] = {}
        self._warned = False
        self._last: dict[str, np.ndarray] = {}
        self.fit_info: dict[str, Any] = {}  # what the last stage-B fit saw (sizes, target ranges)

    # -- stage A ---------------------------------------------------------------------------------
    def _smooth(self, t: torch.Tensor) -> torch.Tensor:
        eps = self.params.label_smoothing
        return t * (1.0 - eps) + 0.5 * eps

    def losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        x, y = batch["image"], batch["label"].float()
        bb = self.net.backbone
        fmap, box = bb.forward_map(self.net.normalize(x), mix=self.params.mix_token and self.training)
        logit, tokens = bb.forward_heads(fmap)
        target, token_target = y, y[:, None].expand_as(tokens)
        if box is not None:  # MixToken: the box's tokens come from the reversed batch
            y0, y1, x0, x1 = box
            gh, gw = fmap.shape[-2:]
            inside = torch.zeros(gh, gw, dtype=torch.bool, device=x.device)
            inside[y0:y1, x0:x1] = True
            area = inside.float().mean()
            other = y.flip(0)
            target = (1.0 - area) * y + area * other
            token_target = torch.where(inside.flatten()[None], other[:, None], y[:, None])
        cls = F.binary_cross_entropy_with_logits(logit, self._smooth(target))
        out = {"loss": cls, "cls": cls}
        if self.params.aux_weight > 0:
            aux = F.binary_cross_entropy_with_logits(tokens, self._smooth(token_target))
            out["aux"] = aux
            out["loss"] = cls + self.params.aux_weight * aux
        return out

    def configure_optimizers(self) -> Any:
        """The configured optimiser without weight decay on biases, norms, layer scales and SSAA ``w``
        (as timm does for the official run), and an epoch-wise schedule with optional warm-up."""
        cfg, p = self.train_cfg, self.params
        decay = [q for q in self.parameters() if q.requires_grad and q.ndim > 1]
        no_decay = [q for q in self.parameters() if q.requires_grad and q.ndim <= 1]
        groups = [{"params": decay, "weight_decay": cfg.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        opt = make_optimizer(groups, cfg)  # each group's weight_decay wins
        if cfg.scheduler in ("step", "multistep"):
            if p.warmup_epochs:
                raise ConfigError("model.warmup_epochs needs train.scheduler=cosine or none")
            sched = (torch.optim.lr_scheduler.MultiStepLR(opt, cfg.milestones, cfg.gamma)
                     if cfg.scheduler == "multistep" else
                     torch.optim.lr_scheduler.StepLR(opt, max(1, cfg.max_epochs // 3), cfg.gamma))
        elif cfg.scheduler == "none" and not p.warmup_epochs:
            return opt
        else:
            sched = torch.optim.lr_scheduler.LambdaLR(opt, self._lr_factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    def _lr_factor(self, epoch: int) -> float:
        """lr / base lr at ``epoch``: linear warm-up from ``warmup_lr``, then cosine to ``min_lr``
        over all ``max_epochs`` (timm's CosineLRScheduler without warm-up prefix), or constant."""
        cfg, p = self.train_cfg, self.params
        if epoch < p.warmup_epochs:
            return (p.warmup_lr + epoch * (cfg.lr - p.warmup_lr) / p.warmup_epochs) / cfg.lr
        if cfg.scheduler == "none":
            return 1.0
        t = min(epoch / cfg.max_epochs, 1.0)
        return (p.min_lr + 0.5 * (cfg.lr - p.min_lr) * (1.0 + math.cos(math.pi * t))) / cfg.lr

    # -- stage B ---------------------------------------------------------------------------------
    def epoch_stage(self) -> None:
        """Stage B on each epoch's weights, so the checkpoint saved after it carries its SVR."""
        if self.params.scorer == "svr":
            self.refit_fidelity()

    def _train_view(self, dm=None):
        dm = dm if dm is not None else self.trainer.datamodule
        ds = dm.dataset(dm.cfg.train_split)
        view = copy.copy(ds)  # the training rows without the random flip
        view.hflip, view.train = False, False
        return dm, view

    def _quality_of(self, batch: dict[str, Any], view) -> np.ndarray:
        index = batch["index"].tolist()
        missing = [k for k, i in enumerate(index) if i not in self._quality_cache]
        if missing:
            if self.params.quality_column is not None:
                col = self.params.quality_column
                if col not in view.df:
                    raise ConfigError(f"model.quality_column='{col}' is not a manifest column")
                values = view.df[col].to_numpy(dtype=np.float64)[[index[k] for k in missing]]
            else:
                values = self.quality.score(batch["image"][missing]).double().numpy()
            for k, v in zip(missing, values):
                self._quality_cache[index[k]] = float(v)
        return np.array([self._quality_cache[i] for i in index], dtype=np.float64)

    @torch.no_grad()
    def fidelity_training_set(self, datamodule=None) -> dict[str, np.ndarray]:
        """Features, quality, labels and fidelity targets of the (subsampled) training split of
        ``datamodule`` (default: the trainer's)."""
        from torch.utils.data import DataLoader, Subset

        dm, view = self._train_view(datamodule)
        n, cap = len(view), min(self.params.svr_max_samples, self.net.svr.capacity)
        rows = np.arange(n) if n <= cap else np.sort(
            np.random.default_rng(self.train_cfg.seed).choice(n, cap, replace=False))
        loader = DataLoader(Subset(view, rows.tolist()), batch_size=dm.cfg.eval_batch_size or dm.cfg.batch_size,
                            shuffle=False, num_workers=dm.cfg.num_workers)
        feats, quality, labels = [], [], []
        was_training = self.net.training
        self.net.eval()
        try:
            for batch in loader:
                feats.append(self.net.features(batch["image"].to(self.device)).double().cpu())
                quality.append(self._quality_of(batch, view))
                labels.append(batch["label"].numpy())
        finally:
            self.net.train(was_training)
        q, y = np.concatenate(quality), np.concatenate(labels).astype(int)
        return {"features": torch.cat(feats).numpy(), "quality": q, "label": y,
                "target": fidelity_targets(q, y)}

    def refit_fidelity(self) -> None:
        """Fit the fidelity SVR to the current weights (rank 0 fits, every rank gets its result)."""
        from sklearn.svm import SVR

        trainer = self.trainer
        payload = None
        if trainer.is_global_zero:
            data = self.fidelity_training_set()
            p = self.params
            svr = SVR(kernel="rbf", C=p.svr_C, epsilon=p.svr_epsilon, gamma=p.svr_gamma)
            svr.fit(data["features"], data["target"])
            train_s = svr.predict(data["features"])
            payload = {"svr": svr, "info": {
                "n": int(len(data["label"])), "n_support": int(svr.support_vectors_.shape[0]),
                "target": data["target"], "label": data["label"], "fidelity": train_s}}
        payload = trainer.strategy.broadcast(payload, src=0)
        self.net.svr.load_sklearn(payload["svr"])
        self.fit_info = payload["info"]
        info = self.fit_info
        if len(np.unique(info["label"])) == 2:  # how well stage B separates the set it was fitted on
            from visec.metrics.classification import roc_auc

            self.log_dict({"train/svr_auc": float(roc_auc(info["label"], -info["fidelity"])),
                           "train/svr_mae": float(np.abs(info["fidelity"] - info["target"]).mean()),
                           "train/svr_support": float(info["n_support"])}, prog_bar=False, on_step=False,
                          on_epoch=True)

    # -- evaluation ------------------------------------------------------------------------------
    def _scores(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        net = self.net
        fmap = net.backbone.forward_map(net.normalize(images))[0]
        prob_a = torch.sigmoid(net.backbone.forward_heads(fmap)[0].float())
        if self.params.scorer == "stage_a":
            return {"prob": prob_a, "prob_stage_a": prob_a}
        if not net.svr.is_fitted:
            if not self._warned:
                from lightning.pytorch.utilities import rank_zero_warn

                rank_zero_warn("DeepFidelity: no fidelity SVR is fitted in this model yet; scoring with "
                               "sigmoid(class logit), the stage-A classifier")
                self._warned = True
            return {"prob": prob_a, "prob_stage_a": prob_a}
        s = net.svr(SSAAFormer.pool(fmap)).float()
        return {"prob": net.fake_probability(s), "prob_stage_a": prob_a, "fidelity": s}

    def attack_logit(self, images: torch.Tensor) -> torch.Tensor:
        """The unclipped ``0.5 - s`` once the SVR is fitted (the card's probability ``clip(1 - s)``
        would give saturated faces no gradient), else the class logit. The RBF SVR runs in torch, so
        the attack follows the scorer itself."""
        net = self.net
        return 0.5 - net.fidelity(images) if self._svr_scores() else net.class_logit(images)

    def attack_offset(self, threshold: float) -> float:
        # prob = 1 - s >= t  <=>  0.5 - s >= t - 0.5
        return float(threshold) - 0.5 if self._svr_scores() else super().attack_offset(threshold)

    def _svr_scores(self) -> bool:
        """Whether the card's score is the fidelity SVR's (fitted, and model.scorer=svr)."""
        return self.params.scorer == "svr" and bool(self.net.svr.is_fitted)

    def _collect(self, batch: dict[str, Any]) -> None:
        for k, v in self._scores(batch["image"]).items():
            self._record(k, v)
        self._record("label", batch["label"])
        self._record("index", batch["index"])

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        return {"index": batch["index"], "prob": self._scores(batch["image"])["prob"]}

    def _gathered(self) -> dict[str, np.ndarray]:
        self._last = super()._gathered()
        return self._last

    def _evaluate(self, loader_split: str, n_bootstrap: int) -> dict[str, Any]:
        from visec.metrics import binary_metrics

        res = super()._evaluate(loader_split, n_bootstrap)
        got = self._last
        if "fidelity" in got:
            res["scores"]["fidelity"] = got["fidelity"].astype(np.float64)
            res["scores"]["prob_stage_a"] = got["prob_stage_a"].astype(np.float64)
            stage_a = binary_metrics(got["label"].astype(int), got["prob_stage_a"].astype(np.float64),
                                     res["scores"]["video_id"].to_numpy(), n_bootstrap=n_bootstrap,
                                     seed=self.train_cfg.seed)
            res["metrics"]["stage_a"] = stage_a["frame"]
        else:
            res["metrics"]["scorer"] = ("stage_a (model.scorer=stage_a)" if self.params.scorer == "stage_a"
                                        else "stage_a (no fidelity SVR fitted)")
        return res

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        stage_a = (self.val_results or {}).get("metrics", {}).get("stage_a")
        if stage_a:
            self.log("val/stage_a_auc", float(stage_a["auc"]["value"]), prog_bar=False)

    def saliency(self, images: torch.Tensor) -> torch.Tensor | None:
        """Grad-CAM at the final BatchNorm of the score the card uses: the unclipped ``0.5 - s``
        (positive = fake) once the SVR is fitted, else the class logit."""
        from visec.models.cam import grad_cam

        net = self.net

        def score(x: torch.Tensor) -> torch.Tensor:
            return 0.5 - net.fidelity(x) if self._svr_scores() else net.class_logit(x)

        was_training = self.training
        self.eval()
        try:
            return grad_cam(net.cam_layer(), score, images)
        finally:
            self.train(was_training)


@METHODS.register("deepfidelity")
class DeepFidelityMethod(Method):
    """SSAAFormer (mirror-symmetric local attention) + quality-aware fidelity SVR"""

    family = "forgery detection"
    Params = DeepFidelityParams
    Module = DeepFidelity
    bench = "forgery"
    # the paper's claim: the quality-aware fidelity SVR beats the SSAAFormer's own classifier score;
    # the same checkpoint scored both ways (no second training)
    counterpart = Counterpart(("model.scorer=stage_a",), "fidelity SVR (stage B) replaced by the "
                              "stage-A classifier's score", test_only=True)

    @classmethod
    def build_net(cls, params: DeepFidelityParams) -> DeepFidelityNet:
        backbone = SSAAFormer(params.depths, params.dims, params.head_dim, params.mlp_ratio,
                              drop_path=params.drop_path, layer_scale=params.layer_scale,
                              patch_sizes=params.patch_sizes, ssaa_stages=params.ssaa_stages,
                              in_chans=3, mix_token=params.mix_token)
        return DeepFidelityNet(backbone, svr_capacity=params.svr_max_samples, normalize=params.normalize)

    @classmethod
    def card_name(cls, params: DeepFidelityParams) -> str:
        return ("deepfidelity" + ("+mixtoken" if params.mix_token else "")
                + ("+stage-a" if params.scorer == "stage_a" else ""))


__all__ = ["DeepFidelity", "DeepFidelityMethod", "DeepFidelityParams"]
