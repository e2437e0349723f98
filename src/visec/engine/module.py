"""The Lightning base classes of every method: :class:`MethodModule`, and :class:`BinaryDetector`
for real/fake detectors.

A method's module takes ``(net, train_cfg, params)`` (see :class:`visec.engine.method.Method`),
overrides :meth:`MethodModule.losses` when it has more than the binary cross-entropy, and expresses
extra stages through the hooks below instead of re-wiring Lightning's. Evaluation, metric logging,
DDP gathering and optimiser set-up live here once.

Stage hooks (each a no-op by default):

* :meth:`MethodModule.prepare_fit` — once before the first training epoch (HFC-MFFD's DCT
  statistics pass);
* :meth:`MethodModule.epoch_stage` — on each epoch's trained weights, before they are validated
  and checkpointed (DeepFidelity's fidelity SVR refit);
* :meth:`MethodModule.prepare_test` — before a test run (ACMF's labelled source pool);
* :meth:`MethodModule.evaluation_attacks` — the attacks a robustness method is tested under
  (ANCRA's suite);
* :meth:`BinaryDetector.adapts_at_test` / ``adapted_probabilities`` —
  transductive test-time adaptation (ACMF's per-video forgery-attention consistency).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from visec.config import TrainConfig
from visec.errors import MetricError


def make_optimizer(params: list, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The configured optimiser (``train.optimizer``, ``lr``, ``weight_decay``, ``momentum``) over
    parameters or torch parameter groups (a group's own ``lr`` / ``weight_decay`` win), wrapped in
    SAM or GCSAM when ``train.sam`` says so (:mod:`visec.engine.sam`)."""
    if cfg.sam != "none":
        from visec.engine.sam import SAM

        return SAM(params, lambda groups: make_optimizer(groups, cfg.model_copy(update={"sam": "none"})),
                   rho=cfg.sam_rho, rule=cfg.sam, beta1=cfg.sam_beta1, beta2=cfg.sam_beta2)
    # fused: one kernel per step over all parameters instead of a Python loop of small ops per
    # tensor (an AdamW step on resnet18 took 5.3 ms instead of 31 ms here)
    fused = {"fused": True} if cfg.fused_optimizer else {}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **fused)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)


def configure_optimizers(module: nn.Module, cfg: TrainConfig, param_groups: list[dict] | None = None) -> Any:
    """Optimiser and epoch-wise LR schedule from a :class:`TrainConfig` (shared by every method).

    ``param_groups`` (torch's list of ``{"params": ..., "lr": ...}``) sets per-group learning
    rates; by default every trainable parameter of ``module`` shares ``cfg.lr``."""
    opt = make_optimizer(param_groups or [p for p in module.parameters() if p.requires_grad], cfg)
    if cfg.scheduler == "none":
        return opt
    if cfg.scheduler == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.max_epochs)
    elif cfg.scheduler == "multistep":
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=cfg.milestones, gamma=cfg.gamma)
    else:
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, cfg.max_epochs // 3), gamma=cfg.gamma)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


def binary_kl(nat: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """``KL(Bern(sigmoid(nat)) || Bern(sigmoid(adv)))`` per sample, from two logits (TRADES' term)."""
    p = torch.sigmoid(nat)
    return (p * (F.logsigmoid(nat) - F.logsigmoid(adv))
            + (1 - p) * (F.logsigmoid(-nat) - F.logsigmoid(-adv)))


class MethodModule(L.LightningModule):
    """What every method's LightningModule shares.

    The pure network lives in ``self.net`` (what checkpoints hold); :meth:`losses` returns all
    training losses with ``"loss"`` the one minimised; evaluation steps :meth:`_record` tensors that
    :meth:`_gathered` joins across DDP ranks, dropping the sampler's padding by sample index.
    """

    def __init__(self, net: nn.Module, train_cfg: TrainConfig, params: Any = None) -> None:
        super().__init__()
        self.net = net
        self.train_cfg = train_cfg
        self.params = params  # the method's Params (its ``model.*`` config)
        self._eval: dict[str, list[torch.Tensor]] = {}
        self._stage_step: int | None = None  # global step of the last epoch_stage
        self.val_results: dict[str, Any] | None = None
        self.test_results: dict[str, Any] | None = None

    @abstractmethod
    def losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """All training losses; ``"loss"`` is the one to minimise."""

    # -- stage hooks (the contract's extra stages) -------------------------------------------------
    def prepare_fit(self) -> None:
        """Once before the first training epoch, with the data module attached."""

    def epoch_stage(self) -> None:
        """On the weights of each finished epoch, before validation and the checkpoint save."""

    def prepare_test(self) -> None:
        """Before a test run, with the data module attached."""

    def evaluation_attacks(self) -> dict[str, Any] | None:
        """The attacks this method is evaluated under (name -> attack), or ``None``."""
        return None

    def on_fit_start(self) -> None:
        self.prepare_fit()

    def on_test_start(self) -> None:
        self.prepare_test()

    def _run_epoch_stage(self) -> None:
        self.epoch_stage()
        self._stage_step = self.trainer.global_step

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._log_sam_stats()
        # last batch of the epoch: before validation and before the engine's checkpoint save
        if batch_idx + 1 >= self.trainer.num_training_batches:
            self._run_epoch_stage()

    def on_validation_epoch_start(self) -> None:
        # a validation in the middle of an epoch (val_check_interval < 1) sees current weights too
        trainer = self.trainer
        if trainer.state.fn == "fit" and not trainer.sanity_checking and self._stage_step != trainer.global_step:
            self._run_epoch_stage()

    def _log_sam_stats(self) -> None:
        """With ``train.sam``: this step's gradient cosine and GCSAM branch shares (one row per step)."""
        if self.train_cfg.sam == "none" or self._trainer is None:
            return
        stats = getattr(self.trainer.optimizers[0], "last_stats", None) if self.trainer.optimizers else None
        if not stats or not stats["cos"]:
            return
        from visec.engine.sam import BRANCH_NAMES

        n = len(stats["branch"])
        values = {"train/sam_cos": float(np.mean(stats["cos"]))}
        values.update({f"train/sam_{name}": sum(b == k for b in stats["branch"]) / n
                       for k, name in BRANCH_NAMES.items()})
        self.log_dict(values, on_step=True, on_epoch=False, batch_size=1)

    def training_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The losses of one training step (``losses``; adversarially trained detectors attack first)."""
        return self.losses(batch)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        losses = self.training_losses(batch)
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()},
                      prog_bar=True, on_step=False, on_epoch=True, batch_size=len(batch["label"]))
        return losses["loss"]

    def configure_optimizers(self) -> Any:
        return configure_optimizers(self, self.train_cfg)

    def _record(self, key: str, value: torch.Tensor) -> None:
        self._eval.setdefault(key, []).append(value.detach())

    def _gathered(self) -> dict[str, np.ndarray]:
        """The recorded tensors of this evaluation as arrays, one entry per sample index."""
        data = {k: torch.cat(v) for k, v in self._eval.items()}
        self._eval = {}
        if self.trainer.world_size > 1:  # DDP: gather every rank's share
            data = {k: self.all_gather(v).reshape(-1) for k, v in data.items()}
        arrays = {k: v.cpu().numpy() for k, v in data.items()}
        _, first = np.unique(arrays["index"], return_index=True)
        return {k: v[first] for k, v in arrays.items()}


class _AttackLogit(nn.Module):
    """A detector's :meth:`BinaryDetector.attack_logit` as a module (what attacks take)."""

    def __init__(self, detector: "BinaryDetector") -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.detector.attack_logit(images)


class BinaryDetector(MethodModule):
    """``forward(images in [0,1]) -> logits (B,)``; probability of fake = ``sigmoid(logit)``.

    Attacked tests (``Engine.test(attack=...)``) attack :meth:`attack_logit`, the differentiable
    score the decision is taken on, at the threshold :meth:`attack_offset` puts on it; a detector
    whose scored path is not differentiable end to end says how it is attacked in :meth:`attack_path`.
    With ``train.adversarial`` (``pgd_at`` or ``trades``) every training batch is attacked first.
    """

    #: the value range of the images the network takes; attacks are defined on [0, 1] only
    input_range: tuple[float, float] = (0.0, 1.0)
    test_attack: Any = None  # a visec.attacks.detector.DetectorAttacker, set by Engine.test(attack=...)
    _attacked_images: dict[int, torch.Tensor] = {}  # index -> attacked image (set per attacked test)

    # -- model ---------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.net(images)
        return out.squeeze(-1) if out.ndim == 2 and out.shape[-1] == 1 else out

    def losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """All training losses; ``"loss"`` is the one to minimise."""
        logits = self(batch["image"])
        return {"loss": F.binary_cross_entropy_with_logits(logits, batch["label"])}

    # -- attacks -------------------------------------------------------------------------------
    def attack_logit(self, images: torch.Tensor) -> torch.Tensor:
        """The differentiable score ``(B,)`` attacks follow (positive = fake); default: the logit."""
        return self(images)

    def attack_offset(self, threshold: float) -> float:
        """Where the probability threshold ``threshold`` lies on :meth:`attack_logit` (``logit(t)``)."""
        from visec.attacks.detector import logit_offset

        return logit_offset(threshold)

    def attack_path(self) -> str | None:
        """``None`` when :meth:`attack_logit` is the scored path itself; else how the attack reaches
        a scorer it cannot differentiate (written on the card)."""
        return None

    def attack_view(self) -> nn.Module:
        """:meth:`attack_logit` as an ``nn.Module`` (what the attack classes take)."""
        return _AttackLogit(self)

    def test_image(self, dataset: Any, i: int) -> torch.Tensor:
        """Test image ``i`` as this test sees it: the attacked version during an attacked test
        (for detectors that re-read test frames to adapt), else the dataset's."""
        attacked = self._attacked_images.get(int(i))
        return attacked if attacked is not None else dataset[int(i)]["image"]

    def training_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``train.adversarial``: PGD-AT trains on the attacked batch; TRADES adds ``beta`` times the
        KL between the clean and attacked predictions to the clean losses. The training attack is PGD
        (``adv_steps`` steps of ``adv_alpha``, uniform start) on the cross-entropy, model in eval mode."""
        cfg = self.train_cfg
        if cfg.adversarial == "none":
            return self.losses(batch)
        from visec.attacks import PGD

        steps = cfg.adv_steps
        alpha = cfg.adv_alpha if cfg.adv_alpha is not None else 2.5 * cfg.adv_eps / steps
        attack = PGD(self.attack_view(), eps=cfg.adv_eps, alpha=alpha, steps=steps, random_start="uniform",
                     seed=cfg.seed + int(self.global_step))
        x, y = batch["image"], batch["label"]
        x_adv = attack(x, y.round().long())
        if cfg.adversarial == "pgd_at":
            return self.losses({**batch, "image": x_adv})
        losses = dict(self.losses(batch))
        kl = binary_kl(self.attack_logit(x), self.attack_logit(x_adv)).mean()
        losses["trades_kl"] = kl
        losses["loss"] = losses["loss"] + cfg.trades_beta * kl
        return losses

    # -- evaluation ----------------------------------------------------------------------------
    def _collect(self, batch: dict[str, Any]) -> None:
        self._record("prob", torch.sigmoid(self(batch["image"]).float()))
        self._record("label", batch["label"])
        self._record("index", batch["index"])

    def adapts_at_test(self) -> bool:
        """Whether test scores come from ``adapted_probabilities(index) -> probabilities (N,)``, which
        a module that adapts at test time defines (registration checks it): the probabilities of fake
        for this rank's test samples ``index`` after its transductive adaptation."""
        return False

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._collect(batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if self.test_attack is not None:  # attacked test: the direction's faces replaced first
            batch = {**batch, "image": self.test_attack(batch["image"], batch["label"])}
            if self.adapts_at_test():  # the adaptation re-reads the (attacked) frames by index
                if "_attacked_images" not in self.__dict__:  # never the class-level empty default
                    self._attacked_images = {}
                self._attacked_images.update({int(i): img.detach().cpu() for i, img in zip(batch["index"], batch["image"])})
        if not self.adapts_at_test():
            return self._collect(batch)
        self._record("label", batch["label"])  # scores come from adapted_probabilities at epoch end
        self._record("index", batch["index"])

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        return {"index": batch["index"], "prob": torch.sigmoid(self(batch["image"]).float())}

    def saliency(self, images: torch.Tensor) -> torch.Tensor | None:
        """Where the detector looks: ``(B, H, W)`` maps in [0, 1] for the report, or ``None``.

        The default is Grad-CAM of the fake class (where the evidence for "fake" lies, also on real
        images) at ``net.cam_layer()`` when the network names one; a method with its own attention
        (patch scores, attention maps) overrides this.
        """
        layer_of = getattr(self.net, "cam_layer", None)
        if layer_of is None:
            return None
        from visec.models.cam import grad_cam

        was_training = self.training
        self.eval()
        try:
            return grad_cam(layer_of(), self, images, target="fake")
        finally:
            self.train(was_training)

    def _evaluate(self, loader_split: str, n_bootstrap: int) -> dict[str, Any]:
        """Metrics plus a per-image score table (``path, video_id, label, prob``)."""
        import pandas as pd

        from visec.metrics import binary_metrics

        got = self._gathered()
        index, labels, probs = (got["index"].astype(np.int64), got["label"].astype(int),
                                got["prob"].astype(np.float64))
        df = self.trainer.datamodule.dataset(loader_split).df.iloc[index]
        video_ids = df["video_id"].to_numpy()
        metrics = binary_metrics(labels, probs, video_ids, n_bootstrap=n_bootstrap,
                                 seed=self.train_cfg.seed)
        scores = pd.DataFrame({"path": df["path"].to_numpy(), "video_id": video_ids, "label": labels,
                               "prob": probs})
        return {"metrics": metrics, "scores": scores}

    def on_validation_epoch_end(self) -> None:
        if not self._eval:
            return
        split = self.trainer.datamodule.selection_split
        try:
            res = self._evaluate(split, n_bootstrap=0)
        except MetricError as exc:
            raise MetricError(f"validation on split '{split}': {exc}") from None
        self.val_results = res
        flat = {f"val/{k}": float(v["value"]) for k, v in res["metrics"]["frame"].items()
                if isinstance(v, dict)}
        flat.update({f"val/video_{k}": float(v["value"]) for k, v in res["metrics"].get("video", {}).items()
                     if isinstance(v, dict)})
        self.log_dict(flat, prog_bar=False)
        self.log("val_auc", flat["val/auc"], prog_bar=True, logger=False)  # shown on the progress bar

    def on_test_epoch_end(self) -> None:
        if self.adapts_at_test() and self._eval:
            index = torch.cat(self._eval["index"]).cpu().numpy()
            with torch.enable_grad():
                self._eval["prob"] = [self.adapted_probabilities(index).to(self.device)]
        split = self.trainer.datamodule.cfg.test_split
        self.test_results = self._evaluate(split, n_bootstrap=self.train_cfg.bootstrap)
