"""SBKA, SAKE and plain fine-tuning for zero-shot sketch-based image retrieval, on the engine.

One method, ``sbka``, whose ``model.variant`` picks the training:

* ``sbka``: phase 1 (epochs ``< phase1_epochs``): the student learns ``L_S = L_cls + kd_weight L_kd1 +
  reg_weight L_reg`` from a frozen teacher; phase 2: the same, and the teacher's head learns
  ``L_T = L_kd2 = SCE(t, y_kd)`` from the student (symmetric, bidirectional alignment);
* ``sake``: frozen-teacher distillation throughout, ``L_cls + kd_weight L_kd1`` (SAKE);
* ``finetune``: ``L_cls`` only (the student fine-tuned from the teacher's weights, no distillation).

A training batch holds seen-class sketches and photos (``sketch_fraction`` of the batch sketches);
validation is the seen-class top-1 accuracy of the validation sketches (``val/acc``, the paper's
selection rule); the test encodes the unseen query sketches and gallery photos and reports the
retrieval metrics for the one-to-one Euclidean ranking and for the one-to-many cluster matching,
whose (M, K) is chosen on the seen-class validation sketches against the validation photos (never
on the test set) and recorded on the card.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch.utils.data import DataLoader

from visec.config import TrainConfig
from visec.data.datamodule import SplitDataModule
from visec.engine.method import Method
from visec.engine.module import MethodModule
from visec.errors import ConfigError, DataError
from visec.methods.sbka.torch_model import (Encoder, SBKANet, Teacher, epoch_lr, gaussian_alignment,
                                            soft_cross_entropy)
from visec.registry import METHODS

# the teacher stays in eval mode on purpose (frozen body: no dropout, no statistics updates)
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
EMBEDDED_ROOT = "data/sketch"


class SBKAParams(BaseModel):
    """Parameters of ``sbka`` (``model.*``)."""

    model_config = ConfigDict(extra="forbid")

    variant: Literal["sbka", "sake", "finetune"] = "sbka"
    arch: str = "convnextv2_atto"  # a timm ConvNeXt-V2 (the paper: convnextv2_tiny)
    timm: dict[str, Any] = Field(default_factory=dict)  # extra timm kwargs (tests: depths, dims)
    # a local file of the teacher (the ConvNeXt-V2 with its classification head, timm's key names, the
    # head as head.fc.*), "embedded": pre-trained on the embedded seen photos (cached), or "random" (tests)
    teacher_weights: str = "embedded"
    teacher_pretrain: dict[str, Any] = Field(default_factory=dict)  # epochs, batch_size, lr, weight_decay
    embedded_root: str = EMBEDDED_ROOT
    seen: int | None = Field(None, ge=2)  # seen classes (None: read from the embedded data)
    teacher_classes: int | None = Field(None, ge=2)  # the teacher's head (None: 1000 from a file, seen embedded)
    split: str | None = None  # Sketchy's zero-shot split: zeroshot1 (100/25) or zeroshot2 (104/21)
    phase1_epochs: int = Field(10, ge=0)  # sbka: epochs with a frozen teacher before the bidirectional phase
    kd_weight: float = Field(1.0, ge=0)
    reg_weight: float = Field(0.1, ge=0)
    mask_scale: float = Field(0.3, ge=0)
    use_cid_mask: bool = True
    kd_on: Literal["photos", "all"] = "photos"
    faithful: bool = True  # phase 2 as the official code: soft targets not detached
    teacher_lr: float | None = Field(None, gt=0)  # the teacher head's lr0 (default: train.lr)
    sketch_fraction: float = Field(1 / 3, gt=0, lt=1)
    matching_ms: tuple[int, ...] = (1, 2, 4)
    matching_k_ratios: tuple[float, ...] = (0.8, 0.9, 1.0, 1.1, 1.2)
    codebook: Literal["gmm", "kmeans"] = "gmm"
    fusion_weight: float = Field(0.8, ge=0, le=1)
    augment: bool = True

    @model_validator(mode="after")
    def _check(self) -> "SBKAParams":
        from visec.methods.sbka.pretrain import DEFAULTS

        unknown = sorted(set(self.teacher_pretrain) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"unknown teacher_pretrain setting(s) {unknown} (known: {', '.join(DEFAULTS)})")
        return self


def _data(data_cfg, params: SBKAParams):
    from visec.data.sbir import ensure_sketch_dataset, read_sbir

    name = data_cfg.dataset or "synth"
    root = data_cfg.root or Path(params.embedded_root)
    if name == "synth":
        ensure_sketch_dataset(root)
    return read_sbir(name, root, split=params.split)


class SbirDataModule(SplitDataModule):
    """Seen-class sketches and photos for training, seen-class validation sketches for selection, and
    at test the unseen queries and gallery plus the validation sketches and photos (for choosing the
    cluster matching's M and K)."""

    TEST_SPLITS = ("query", "gallery", "val_sketch", "val_photo")

    def __init__(self, data_cfg, train_cfg: TrainConfig, params: SBKAParams) -> None:
        super().__init__(data_cfg, train_cfg)
        self.params = params
        self._sbir = None
        self._sets: dict[str, Any] = {}

    @property
    def sbir(self):
        if self._sbir is None:
            self._sbir = _data(self.cfg, self.params)
        return self._sbir

    def dataset(self, split: str):
        if split not in self._sets:
            from visec.data.sbir import PHOTO, SKETCH, SbirImages

            part = getattr(self.sbir, split)
            if part is None:
                raise DataError(f"{self.sbir.name}: no {split} split")
            modality = SKETCH if "sketch" in split or split == "query" else PHOTO
            self._sets[split] = SbirImages.of(part, modality, self.cfg.image_size,
                                              augment=split.startswith("train") and self.params.augment)
        return self._sets[split]

    def has_val_split(self) -> bool:
        return self.sbir.val_sketch is not None

    def _plain(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        gen = torch.Generator().manual_seed(self.train_cfg.seed)
        return DataLoader(self.dataset(split), batch_size=batch_size, shuffle=shuffle, generator=gen,
                          num_workers=self.cfg.num_workers, drop_last=False)

    def train_dataloader(self):
        bs = self.cfg.batch_size
        n_sketch = max(1, round(bs * self.params.sketch_fraction))
        return {"sketch": self._plain("train_sketch", n_sketch, True),
                "photo": self._plain("train_photo", max(1, bs - n_sketch), True)}

    def val_dataloader(self):
        if self.selection_split is None:
            return []
        return self._plain("val_sketch", self.cfg.eval_batch_size or self.cfg.batch_size, False)

    def test_dataloader(self):
        bs = self.cfg.eval_batch_size or self.cfg.batch_size
        return [self._plain(s, bs, False) for s in self.TEST_SPLITS if getattr(self.sbir, s) is not None]

    def test_splits(self) -> list[str]:
        return [s for s in self.TEST_SPLITS if getattr(self.sbir, s) is not None]


class SBKAModule(MethodModule):
    """``self.net`` is an :class:`SBKANet`; manual optimisation (student, then the teacher's head)."""

    def __init__(self, net: SBKANet, train_cfg: TrainConfig, params: SBKAParams) -> None:
        super().__init__(net, train_cfg, params)
        self.net: SBKANet
        self.automatic_optimization = False
        self._noise = torch.Generator().manual_seed(train_cfg.seed)
        self._feats: dict[int, list[torch.Tensor]] = {}
        self._labels: dict[int, list[torch.Tensor]] = {}
        self.cid_mask: torch.Tensor | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def phase(self) -> int:
        if self.params.variant != "sbka":
            return 1
        return 2 if self.current_epoch >= self.params.phase1_epochs else 1

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None or not isinstance(dm, SbirDataModule):
            return
        sbir = dm.sbir
        if len(sbir.seen) != self.net.student.cls.out_features:
            raise ConfigError(f"the data has {len(sbir.seen)} seen classes but the model was built for "
                              f"{self.net.student.cls.out_features} (model.seen)")
        if self.params.use_cid_mask and sbir.cid_mask is not None:
            mask = torch.as_tensor(np.asarray(sbir.cid_mask), dtype=torch.float32)
            if tuple(mask.shape) != (len(sbir.seen), self.net.teacher.head.out_features):
                raise DataError(f"class-id mask of shape {tuple(mask.shape)} does not fit {len(sbir.seen)} seen "
                                f"classes x {self.net.teacher.head.out_features} teacher classes")
            self.cid_mask = mask

    # -- training ------------------------------------------------------------------------------
    def losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Student losses and (phase 2) the teacher head's; ``loss`` is the student's objective."""
        x, y = batch["image"], batch["label"]
        # modality 1 = photo, 0 = sketch; a batch without the tag is all photos
        photo = batch["modality"].float() if "modality" in batch else torch.ones(len(y), device=x.device)
        y_cls, y_kd, f = self.net.student(x)
        terms: dict[str, torch.Tensor] = {"cls": F.cross_entropy(y_cls, y)}
        out: dict[str, torch.Tensor] = {}
        if self.params.variant != "finetune":
            mask = self.cid_mask[y].to(x.device) if self.cid_mask is not None else None
            kd_rows = photo if self.params.kd_on == "photos" else torch.ones_like(photo)
            with torch.set_grad_enabled(self.phase() == 2):
                t = self.net.teacher(x)
            if self.phase() == 1:
                t = t.detach()
            terms["kd"] = self.params.kd_weight * soft_cross_entropy(y_kd, t, kd_rows, mask, self.params.mask_scale)
            if self.params.variant == "sbka" and self.params.reg_weight > 0:
                terms["reg"] = self.params.reg_weight * gaussian_alignment(f, self._noise)
            if self.phase() == 2:
                target = y_kd if self.params.faithful else y_kd.detach()
                out["teacher"] = soft_cross_entropy(t, target, kd_rows, mask, self.params.mask_scale)
        loss = torch.stack(list(terms.values())).sum()
        with torch.no_grad():
            terms["acc"] = (y_cls.argmax(1) == y).float().mean()
        return {"loss": loss, **terms, **out}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        merged = {k: torch.cat([batch["sketch"][k], batch["photo"][k]]) for k in ("image", "label", "modality")}
        opt = self.optimizers()
        losses = self.losses(merged)
        opt.zero_grad(set_to_none=True)
        # the student's backward first (keeping the graph in phase 2); the teacher head's gradients are
        # then cleared, so it learns from its own loss only; with faithful=True that loss's gradient
        # also reaches the student through the undetached soft target, as in the official code
        self.manual_backward(losses["loss"], retain_graph="teacher" in losses)
        for p in self.net.teacher_head_parameters():
            p.grad = None  # phase 1: frozen (Adam skips parameters without a gradient)
        if "teacher" in losses:
            self.manual_backward(losses["teacher"])
        opt.step()
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()}, prog_bar=True, on_step=False,
                      on_epoch=True, batch_size=len(merged["label"]))
        return losses["loss"].detach()

    def on_train_epoch_start(self) -> None:
        opt = self.optimizers()
        student, teacher = opt.param_groups
        student["lr"] = epoch_lr(self.train_cfg.lr, self.current_epoch, self.train_cfg.max_epochs)
        teacher["lr"] = epoch_lr(self.params.teacher_lr or self.train_cfg.lr, self.current_epoch,
                                 self.train_cfg.max_epochs)
        self.net.teacher.eval()  # the frozen body stays in eval mode in both phases

    def configure_optimizers(self) -> Any:
        """One Adam, two groups: the student, and the teacher's head (which receives a gradient only in
        SBKA's phase 2; Adam's state is per parameter, so this is the official code's two optimisers)."""
        t = self.train_cfg
        return torch.optim.Adam([{"params": list(self.net.student.parameters()), "lr": t.lr},
                                 {"params": self.net.teacher_head_parameters(), "lr": self.params.teacher_lr or t.lr}],
                                lr=t.lr, weight_decay=t.weight_decay)

    # -- evaluation ------------------------------------------------------------------------------
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        with torch.no_grad():
            pred = self.net.student(batch["image"])[0].argmax(1)
        self._record("correct", (pred == batch["label"]).long())

    def on_validation_epoch_end(self) -> None:
        if not self._eval:
            return
        correct = torch.cat(self._eval.pop("correct"))
        self._eval = {}
        acc = float(correct.float().mean())
        self.val_results = {"acc": acc, "n": int(len(correct))}
        self.log("val/acc", acc, prog_bar=True)

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        with torch.no_grad():
            f = F.normalize(self.net(batch["image"]).float(), dim=1)
        self._feats.setdefault(dataloader_idx, []).append(f.cpu())
        self._labels.setdefault(dataloader_idx, []).append(batch["label"].cpu())

    def on_test_epoch_start(self) -> None:
        if self.trainer.world_size > 1:
            raise ConfigError("sbka's retrieval test runs on one device (--devices 1)")
        self._feats, self._labels = {}, {}

    def on_test_epoch_end(self) -> None:
        splits = self.trainer.datamodule.test_splits()
        feats = {s: torch.cat(self._feats[i]).numpy() for i, s in enumerate(splits)}
        labels = {s: torch.cat(self._labels[i]).numpy() for i, s in enumerate(splits)}
        self._feats, self._labels = {}, {}
        self.test_results = retrieval_results(feats, labels, self.params, seed=self.train_cfg.seed)


def _map_all(dist: np.ndarray, q: np.ndarray, g: np.ndarray) -> float:
    from visec.metrics.retrieval import retrieval_metrics

    return float(retrieval_metrics(q, g, dist=dist, ks=(), map_at=())["map@all"])


def retrieval_results(feats: dict[str, np.ndarray], labels: dict[str, np.ndarray], params: SBKAParams,
                      seed: int = 0) -> dict[str, Any]:
    """Both matchings on the unseen query/gallery, (M, K) chosen on the validation sketches/photos."""
    import pandas as pd

    from visec.methods.sbka.matching import ClusterMatcher, cluster_count, euclidean, select_matching
    from visec.metrics.retrieval import retrieval_metrics

    q, g = feats["query"], feats["gallery"]
    ql, gl = labels["query"], labels["gallery"]
    classes = len(np.unique(gl))
    dim = q.shape[1]
    if "val_sketch" in feats and "val_photo" in feats:
        chosen = select_matching(feats["val_sketch"], labels["val_sketch"], feats["val_photo"], labels["val_photo"],
                                 ms=tuple(m for m in params.matching_ms if dim % m == 0) or (1,),
                                 k_ratios=params.matching_k_ratios, score_fn=_map_all, codebook=params.codebook,
                                 weight=params.fusion_weight, seed=seed)
        m, ratio = int(chosen["m"]), float(chosen["k_ratio"])
        how = "chosen on the seen-class validation sketches vs photos (mAP@all)"
    else:
        chosen, m, ratio = {}, 2 if dim % 2 == 0 else 1, 1.0
        how = "default M=2, K = gallery classes (no validation photos to choose on)"
    k = min(len(g), cluster_count(ratio, classes))
    matcher = ClusterMatcher(m=m, k=k, codebook=params.codebook, weight=params.fusion_weight, seed=seed).fit(g)
    d_e = euclidean(q, g)
    d_c = matcher.distances(q)
    metrics = {"euclidean": retrieval_metrics(ql, gl, dist=d_e), "cluster": retrieval_metrics(ql, gl, dist=d_c)}
    metrics["matching"] = {"m": m, "k": k, "k_ratio": ratio, "codebook": params.codebook,
                           "fusion_weight": params.fusion_weight, "selection": how,
                           "val_score": chosen.get("score"), "val_euclidean": chosen.get("euclidean_score"),
                           "val_table": chosen.get("table")}
    metrics["data"] = {"queries": int(len(q)), "gallery": int(len(g)), "unseen_classes": int(classes),
                       "chance_map": float(np.mean([(gl == c).mean() for c in ql]))}
    top = np.argsort(d_c, axis=1, kind="stable")[:, :10]
    scores = pd.DataFrame({"index": np.arange(len(q)), "label": ql,
                           "top10": [" ".join(map(str, row)) for row in top],
                           "hits10": [int((gl[row] == c).sum()) for row, c in zip(top, ql)]})
    return {"metrics": metrics, "scores": scores, "n": int(len(q))}


@METHODS.register("sbka")
class SBKAMethod(Method):
    """SBKA (bidirectional teacher-student alignment + one-to-many cluster matching), SAKE, fine-tuning; ZS-SBIR"""

    family = "sketch-based retrieval"
    Params = SBKAParams
    Module = SBKAModule
    modalities = ("vis",)
    bench = "sbka"

    @classmethod
    def build_net(cls, params: SBKAParams) -> SBKANet:
        from visec.checkpoint import load_into, load_state_dict_file

        if params.teacher_weights == "random":  # untrained (tests only)
            if params.seen is None:
                raise ConfigError("model.teacher_weights=random needs model.seen")
            teacher = Teacher(Encoder(params.arch, **params.timm), params.teacher_classes or params.seen)
            return SBKANet(teacher, params.seen)
        if params.teacher_weights == "embedded":
            from visec.data.sbir import ensure_sketch_dataset, read_sbir
            from visec.methods.sbka.pretrain import pretrain_teacher

            from visec.data.synthetic.sketches import META_FILE

            root = ensure_sketch_dataset(Path(params.embedded_root))
            data = read_sbir("synth", root)
            digest = json.loads((root / META_FILE).read_text())["digest"]
            seen = params.seen or len(data.seen)
            path = pretrain_teacher(data, digest, arch=params.arch, timm_kwargs=params.timm, seed=0,
                                    settings=params.teacher_pretrain)
            teacher = Teacher(Encoder(params.arch, **params.timm), params.teacher_classes or len(data.seen))
            load_into(teacher, load_state_dict_file(path, "teacher weights"), source=str(path))
        else:
            if params.seen is None:
                raise ConfigError("model.seen (the number of seen classes) is required with a teacher weights file")
            path = Path(params.teacher_weights)
            if not path.is_file():
                raise ConfigError(f"teacher weights not found: {path} (model.teacher_weights: a local file of the "
                                  f"ConvNeXt-V2 with its head, or 'embedded')")
            teacher = Teacher(Encoder(params.arch, **params.timm), params.teacher_classes or 1000)
            state = load_state_dict_file(path, "teacher weights")
            state = {(f"head.{k[len('head.fc.'):]}" if k.startswith("head.fc.") else f"encoder.body.{k}"): v
                     for k, v in state.items()}
            load_into(teacher, state, source=str(path))
            seen = params.seen
        return SBKANet(teacher, seen)

    @classmethod
    def card_name(cls, params: SBKAParams) -> str:
        return {"sbka": "sbka", "sake": "sbka/sake", "finetune": "sbka/finetune"}[params.variant]

    @classmethod
    def build_datamodule(cls, data_cfg, train_cfg, params):
        return SbirDataModule(data_cfg, train_cfg, params)


__all__ = ["SBKAMethod", "SBKAParams", "SBKAModule", "SbirDataModule", "retrieval_results"]
