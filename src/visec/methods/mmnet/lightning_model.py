"""Sequential deepfake detection on the engine: SeqFakeFormer and MMNet (``model.variant``).

Training minimises the forward decoder's cross-entropy over the teacher-forced tokens (PAD
ignored); MMNet adds ``backward_weight`` x the reverse decoder's cross-entropy, ``multilabel_weight``
x a binary cross-entropy on which edits are present, and ``recovery_weight`` x the L1 distance of
the recovered face to the original (rows without an original carry no recovery loss).

Validation decodes greedily and logs ``val/adaptive_acc`` (the default selection metric),
``val/fixed_acc``, ``val/csm`` and, with recovery, ``val/recovery_psnr``. The test reports, from the
one selected checkpoint, Fixed-Acc, Adaptive-Acc, CSM and CSM@1..5 with bootstrap intervals over
identities, per-step accuracy and confusion, the majority-sequence baseline of the training split,
and recovery PSNR / SSIM (and dlib identity distance) of recovered and forged faces to the originals.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch.utils.data import Dataset

from visec.config import DataConfig, TrainConfig
from visec.data.datamodule import IMAGE_CACHE, SplitDataModule, SplitInfo, _as_float, resize_rgb
from visec.engine.method import Method
from visec.engine.module import MethodModule
from visec.errors import ConfigError, DataError, ManifestError
from visec.methods.mmnet.torch_model import (MMNet, PAD, Pyramid, SeqFakeFormer, encode, reverse_sequence)
from visec.registry import METHODS

EMBEDDED_ROOT = "data/seqsynth"
SUBSETS = ("facial_components", "facial_attributes")


class SequenceParams(BaseModel):
    """Parameters of ``mmnet`` (``model.*``)."""

    model_config = ConfigDict(extra="forbid")

    variant: Literal["mmnet", "seqfakeformer"] = "mmnet"
    arch: str = "resnet18"  # a timm ResNet, or "tiny" (tests)
    width: int = Field(16, ge=4)  # the tiny backbone's width
    output_stride: Literal[16, 32] = 32  # 16: the last stage dilated (SeqFakeFormer's R50 recipe)
    weights: str | None = None  # a local file of the backbone (timm key names); never downloaded
    d_model: int = Field(256, ge=8)
    heads: int = Field(4, ge=1)
    enc_layers: int = Field(2, ge=0)
    dec_layers: int = Field(2, ge=1)
    ffn: int = Field(512, ge=8)
    dropout: float = Field(0.1, ge=0, lt=1)
    smooth: float = Field(4.0, gt=0)  # the Gaussian bias' temperature (inf: plain cross-attention)
    backbone_lr: float = Field(0.1, gt=0)  # the backbone's learning rate, as a fraction of train.lr
    grad_clip: float | None = Field(0.1, gt=0)  # max global gradient norm (the recipe's 0.1)
    # MMNet's parts (each switchable for ablation; ignored by seqfakeformer)
    multiscale: bool = True
    backward: bool = True
    rerank: bool = True
    multilabel: bool = True
    recovery: bool = True
    recovery_width: int = Field(32, ge=4)
    backward_weight: float = Field(1.0, ge=0)
    multilabel_weight: float = Field(0.5, ge=0)
    recovery_weight: float = Field(1.0, ge=0)
    # the embedded data (when data.manifest is not given)
    subset: Literal["facial_components", "facial_attributes"] = "facial_components"
    embedded_root: str = EMBEDDED_ROOT
    synth: dict[str, Any] = Field(default_factory=dict)  # make_sequence_dataset options (identities, size...)
    identity_metric: bool = True  # dlib identity distance of recovered faces at test

    @model_validator(mode="after")
    def _check_widths(self) -> "SequenceParams":
        if self.d_model % self.heads:
            raise ValueError(f"model.d_model={self.d_model} must be divisible by model.heads={self.heads}")
        if self.d_model % 4:
            raise ValueError(f"model.d_model={self.d_model} must be a multiple of 4 (2-D sine positions)")
        return self

    @property
    def is_mmnet(self) -> bool:
        return self.variant == "mmnet"


def embedded_manifest(params: SequenceParams, root: str | Path | None = None) -> Path:
    """The embedded sequential set's manifest for ``params.subset`` (generated once, then cached)."""
    from visec.data.synthetic.sequences import make_sequence_dataset

    rep = make_sequence_dataset(Path(root or params.embedded_root), **params.synth)
    if params.subset not in rep.manifests:
        raise ConfigError(f"the embedded sequential data has no subset '{params.subset}' "
                          f"(generated: {', '.join(rep.manifests)})")
    return rep.manifests[params.subset]


class SequenceDataset(Dataset):
    """Rows of a sequence manifest as ``{"image", "sequence", "original", "has_original", "label",
    "index"}``; a horizontal flip (training) flips the face and its original together."""

    def __init__(self, df: pd.DataFrame, root: Path, image_size: int, train: bool, hflip: bool,
                 memory_cache_mb: int, corruption: str | None = None) -> None:
        from visec.data.corruptions import parse_corruption

        self.df = df.reset_index(drop=True)
        self.root, self.size = root, image_size
        self.train, self.hflip = train, hflip and train
        # a corruption (evaluation only) degrades the input face, never the original it is compared to
        self.corruption = parse_corruption(corruption)
        self.cache_mb = memory_cache_mb if self.corruption is None else 0
        self.seqs = torch.tensor(np.array([list(s) for s in self.df["sequence"]], dtype=np.int64).reshape(-1, 5))
        self.has_original = ("original" in self.df and self.df["original"].notna().to_numpy()
                             if len(self.df) else np.zeros(0, bool))
        if not isinstance(self.has_original, np.ndarray):
            self.has_original = np.zeros(len(self.df), bool)

    def __len__(self) -> int:
        return len(self.df)

    def _read(self, rel: str) -> torch.Tensor:
        from visec.data.images import load_rgb

        path = self.root / rel
        cached = IMAGE_CACHE.get(path, self.size) if self.cache_mb else None
        if cached is None:
            cached = resize_rgb(load_rgb(path), self.size)
            if self.cache_mb:
                IMAGE_CACHE.put(path, self.size, cached, self.cache_mb)
        return _as_float(cached)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self.corruption is not None:  # seeded by the row, so a sweep repeats exactly
            from visec.data.datamodule import to_tensor
            from visec.data.images import load_rgb

            img = to_tensor(self.corruption(load_rgb(self.root / self.df.at[i, "path"]), i), self.size)
        else:
            img = self._read(self.df.at[i, "path"])
        has = bool(self.has_original[i])
        orig = self._read(self.df.at[i, "original"]) if has else img
        if self.hflip and torch.rand(()) < 0.5:
            img, orig = img.flip(-1), orig.flip(-1)
        return {"image": img, "original": orig, "has_original": has, "sequence": self.seqs[i],
                "label": torch.tensor(float(self.seqs[i].any())), "index": i}


class SequenceDataModule(SplitDataModule):
    """A sequence manifest (``data.manifest``, e.g. from ``visec data build seqdeepfake``) or the
    embedded set (``model.subset``); unreadable images are skipped and reported like the face data."""

    no_val_message = ("model selection on the validation split needs a 'val' split in the manifest; "
                      "add one or set train.select_on=last")
    no_val_error = ManifestError

    def __init__(self, data: DataConfig, train: TrainConfig, params: SequenceParams) -> None:
        super().__init__(data, train)
        self.params = params
        self._manifest = None
        self.sets: dict[str, SequenceDataset] = {}
        self.info: dict[str, SplitInfo] = {}

    @property
    def manifest(self):
        if self._manifest is None:
            from visec.data.sequences import read_sequence_manifest

            path = self.cfg.manifest or embedded_manifest(self.params, self.cfg.root)
            self._manifest = read_sequence_manifest(path)
        return self._manifest

    def dataset(self, split: str) -> SequenceDataset:
        if split not in self.sets:
            from visec.data.images import scan_images_cached

            m = self.manifest
            df = m.df[m.df["split"] == split].reset_index(drop=True)
            if len(df) == 0:
                raise ManifestError(f"{m.source or 'manifest'}: split '{split}' is empty")
            paths = [m.root / p for p in df["path"]]
            origs = ([m.root / p for p in df["original"] if isinstance(p, str)] if "original" in df else [])
            report, _ = scan_images_cached(paths + sorted(set(origs) - set(paths)), use_cache=self.cfg.scan_cache)
            info = SplitInfo(split, len(df), report.bad)
            bad = self.bad_images(report, split)
            if bad:
                ok = [m.root / p not in bad and not (isinstance(o, str) and m.root / o in bad)
                      for p, o in zip(df["path"], df["original"] if "original" in df else [None] * len(df))]
                df = df[ok]
                if len(df) == 0:
                    raise DataError(f"split '{split}': all {info.rows} image(s) are unreadable")
            self.info[split] = info
            cache = self.cfg.memory_cache_mb if self.cfg.num_workers == 0 else 0
            train = split == self.cfg.train_split
            self.sets[split] = SequenceDataset(df, m.root, self.cfg.image_size, train=train, hflip=self.cfg.hflip,
                                               memory_cache_mb=cache, corruption=None if train else self.cfg.corruption)
        return self.sets[split]

    @property
    def skipped(self) -> dict[str, list[tuple[str, str]]]:
        return {k: v.skipped for k, v in self.info.items() if v.skipped}

    def has_val_split(self) -> bool:
        return self.cfg.val_split in set(self.manifest.df["split"])

    def train_sequences(self) -> np.ndarray:
        """The training split's sequences (for the majority-sequence baseline)."""
        df = self.manifest.df
        return np.array([list(s) for s in df.loc[df["split"] == self.cfg.train_split, "sequence"]], np.int64)


class SequenceModule(MethodModule):
    """``self.net`` is a :class:`SeqFakeFormer` or an :class:`MMNet`."""

    def __init__(self, net, train_cfg: TrainConfig, params: SequenceParams) -> None:
        super().__init__(net, train_cfg, params)
        self.params: SequenceParams

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The log-probability ``(B,)`` of each image's greedily decoded sequence (its edits and EOS;
        with MMNet's rescoring, of both decoders together); :meth:`generate` gives the sequences."""
        return self.generate(images)["score"]

    def generate(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``sequence (B, 5)``, ``score (B,)`` and, with MMNet's recovery, ``recovered (B, 3, H, W)``."""
        if isinstance(self.net, MMNet):
            return self.net.generate(images, rerank=self.params.rerank)
        return self.net.generate(images)

    # -- training --------------------------------------------------------------------------------
    def losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        seq = batch["sequence"]
        _, dec_in, target = encode(seq)
        mm = isinstance(self.net, MMNet)
        dec_back = back_target = None
        if mm and self.net.backward_decoder is not None:
            _, dec_back, back_target = encode(reverse_sequence(seq))
        out = self.net(batch["image"], dec_in, dec_back) if mm else self.net(batch["image"], dec_in)
        terms = {"ce": F.cross_entropy(out["logits"].flatten(0, 1), target.flatten(), ignore_index=PAD)}
        p = self.params
        if "logits_backward" in out and p.backward_weight > 0:
            terms["ce_backward"] = p.backward_weight * F.cross_entropy(
                out["logits_backward"].flatten(0, 1), back_target.flatten(), ignore_index=PAD)
        if "multilabel" in out and p.multilabel_weight > 0:
            # which edit types occur (order-free); id 0 (NA) is not a class
            present = F.one_hot(seq, out["multilabel"].shape[1] + 1)[..., 1:].amax(1).float()
            terms["multilabel"] = p.multilabel_weight * F.binary_cross_entropy_with_logits(out["multilabel"], present)
        if "recovered" in out and p.recovery_weight > 0:
            has = batch["has_original"].to(out["recovered"].device)
            if bool(has.any()):
                err = (out["recovered"] - batch["original"]).square().mean((1, 2, 3))
                terms["recovery"] = p.recovery_weight * err[has].mean()
        loss = torch.stack(list(terms.values())).sum()
        return {"loss": loss, **terms}

    def on_before_optimizer_step(self, optimizer) -> None:
        if self.params.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.parameters(), self.params.grad_clip)

    def configure_optimizers(self) -> Any:
        """``train.lr`` for the transformer and heads, ``backbone_lr`` x that for the backbone (the
        recipe's 1e-3 / 1e-4), with ``train.scheduler`` over epochs."""
        from visec.engine.module import configure_optimizers

        backbone = [p for p in self.net.backbone.parameters() if p.requires_grad]
        ids = {id(p) for p in backbone}
        rest = [p for p in self.net.parameters() if p.requires_grad and id(p) not in ids]
        groups = [{"params": rest, "lr": self.train_cfg.lr},
                  {"params": backbone, "lr": self.train_cfg.lr * self.params.backbone_lr}]
        return configure_optimizers(self, self.train_cfg, groups)

    # -- evaluation ------------------------------------------------------------------------------
    def _eval_step(self, batch: dict[str, Any]) -> None:
        out = self.generate(batch["image"])
        self._record("index", torch.as_tensor(batch["index"]))
        self._record("pred", out["sequence"])
        self._record("true", batch["sequence"])
        if "recovered" in out:
            from visec.metrics.sequence import psnr

            has = batch["has_original"]
            self._record("has", torch.as_tensor(has))
            self._record("psnr_rec", torch.as_tensor(psnr(out["recovered"].float(), batch["original"].float())))
            self._record("psnr_in", torch.as_tensor(psnr(batch["image"].float(), batch["original"].float())))
            if getattr(self, "_keep_images", False):
                self._images.append((batch["index"], out["recovered"].cpu(), batch["image"].cpu()))

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        if not self._eval:
            return
        from visec.metrics.sequence import sequence_metrics

        data = self._gathered()
        m = sequence_metrics(data["true"].reshape(-1, 5), data["pred"].reshape(-1, 5), n_bootstrap=0)
        values = {"adaptive_acc": m["adaptive_acc"], "fixed_acc": m["fixed_acc"], "csm": m["csm"]}
        if "psnr_rec" in data and data["has"].any():
            values["recovery_psnr"] = float(data["psnr_rec"][data["has"].astype(bool)].mean())
        self.val_results = {"metrics": values, "n": int(len(data["index"]))}
        self.log_dict({f"val/{k}": float(v) for k, v in values.items()}, prog_bar=True)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def on_test_epoch_start(self) -> None:
        self._keep_images = self.params.is_mmnet and self.params.recovery  # for SSIM and identity
        self._images = []

    def on_test_epoch_end(self) -> None:
        dm = self.trainer.datamodule
        data = self._gathered()
        df = dm.dataset(dm.cfg.test_split).df
        self.test_results = sequence_results(data, df, dm.train_sequences(), self.train_cfg.bootstrap,
                                             self.train_cfg.seed, recovered=self._recovered_images(len(df)),
                                             root=dm.manifest.root, image_size=dm.cfg.image_size,
                                             identity=self.params.identity_metric)
        self._images = []

    def _recovered_images(self, n: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The recovered faces and the (possibly corrupted) inputs they came from, by row."""
        if not getattr(self, "_images", None):
            return None
        idx = torch.cat([torch.as_tensor(i) for i, _, _ in self._images]).numpy()
        out = []
        for k in (1, 2):
            imgs = torch.cat([item[k] for item in self._images])
            arr = np.zeros((n, *imgs.shape[1:]), np.float32)
            arr[idx] = imgs.float().numpy()
            out.append(arr)
        return out[0], out[1]


def _seq_text(rows: np.ndarray) -> list[str]:
    return ["-".join(str(int(v)) for v in r if v) or "0" for r in rows]


def sequence_results(data: dict[str, np.ndarray], df: pd.DataFrame, train_seqs: np.ndarray, n_bootstrap: int,
                     seed: int, recovered: tuple[np.ndarray, np.ndarray] | None = None, root: Path | None = None,
                     image_size: int = 64, identity: bool = False) -> dict[str, Any]:
    """The test card's metrics and per-image scores from the recorded predictions."""
    from visec.metrics.sequence import majority_sequence_baseline, sequence_metrics, step_confusion

    idx = data["index"]
    true, pred = data["true"].reshape(-1, 5), data["pred"].reshape(-1, 5)
    rows = df.iloc[idx]
    groups = rows["source_id"].astype(str).to_numpy() if "source_id" in rows else rows["video_id"].astype(str).to_numpy()
    metrics: dict[str, Any] = {"sequence": sequence_metrics(true, pred, groups, n_bootstrap=n_bootstrap, seed=seed)}
    base = majority_sequence_baseline(train_seqs, true)
    metrics["majority_baseline"] = sequence_metrics(true, base, groups, n_bootstrap=n_bootstrap, seed=seed)
    metrics["majority_baseline"]["sequence"] = _seq_text(base[:1])[0] if len(base) else ""
    metrics["step_confusion"] = step_confusion(true, pred, n_classes=8).tolist()
    scores = pd.DataFrame({"index": idx, "path": rows["path"].to_numpy(), "true": _seq_text(true),
                           "pred": _seq_text(pred), "exact": (true == pred).all(1).astype(int)})
    if "psnr_rec" in data:
        has = data["has"].astype(bool)
        scores["psnr_recovered"] = data["psnr_rec"]
        scores["psnr_forged"] = data["psnr_in"]
        forged = has & (true != 0).any(1)  # recovery matters on forged faces (an original is its own target)
        rec: dict[str, Any] = {"n": int(forged.sum())}
        if forged.any():
            rec.update(psnr_recovered=float(data["psnr_rec"][forged].mean()),
                       psnr_forged=float(data["psnr_in"][forged].mean()),
                       improved=float((data["psnr_rec"][forged] > data["psnr_in"][forged]).mean()))
            if recovered is not None and root is not None:
                rec.update(_recovery_extras(recovered[0][idx][forged], recovered[1][idx][forged], rows[forged],
                                            root, image_size, identity))
        metrics["recovery"] = rec
    return {"metrics": metrics, "scores": scores, "n": int(len(idx))}


def _recovery_extras(recovered: np.ndarray, forged: np.ndarray, rows: pd.DataFrame, root: Path, size: int,
                     identity: bool) -> dict:
    """SSIM of the recovered faces and of the inputs (forged, degraded if the test corrupts them) to
    the originals, and dlib's identity distance."""
    from visec.data.datamodule import to_tensor
    from visec.data.images import load_rgb
    from visec.metrics.sequence import ssim

    orig = torch.stack([to_tensor(load_rgb(root / p), size) for p in rows["original"]]).numpy()
    if min(orig.shape[-2:]) >= 11:  # SSIM's 11x11 window
        out = {"ssim_recovered": float(np.mean(ssim(recovered, orig))),
               "ssim_forged": float(np.mean(ssim(forged, orig)))}
    else:
        out = {"ssim": f"not computed: {orig.shape[-1]} px images are smaller than SSIM's 11 px window"}
    if identity:
        from visec.metrics.sequence import DlibFaceEmbedder

        def u8(x: np.ndarray) -> np.ndarray:
            return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8).transpose(0, 2, 3, 1)

        emb = DlibFaceEmbedder()
        out["identity_recovered"] = emb.identity_similarity(u8(recovered), u8(orig))["mean_distance"]
        out["identity_forged"] = emb.identity_similarity(u8(forged), u8(orig))["mean_distance"]
    return out


@METHODS.register("mmnet")
class MMNetMethod(Method):
    """MMNet (multi-scale, forward/backward, multi-supervised, face recovery; reconstructed) and SeqFakeFormer"""

    family = "sequential deepfake detection"
    Params = SequenceParams
    Module = SequenceModule
    modalities = ("vis",)
    bench = "mmnet"
    test_protocols = ((None, None),)

    @classmethod
    def build_net(cls, params: SequenceParams):
        backbone = Pyramid(params.arch, output_stride=params.output_stride, width=params.width)
        if params.weights:
            from visec.checkpoint import load_into, load_state_dict_file

            state = load_state_dict_file(params.weights, "backbone weights")
            load_into(backbone.body, state, source=params.weights,
                      ignore=tuple(k.rsplit(".", 1)[0] + "." for k in state if k.split(".")[0] in ("fc", "head")))
        kw = dict(d=params.d_model, heads=params.heads, enc_layers=params.enc_layers, dec_layers=params.dec_layers,
                  ffn=params.ffn, dropout=params.dropout, smooth=params.smooth)
        if not params.is_mmnet:
            return SeqFakeFormer(backbone, **kw)
        return MMNet(backbone, multiscale=params.multiscale, backward=params.backward, multilabel=params.multilabel,
                     recovery=params.recovery, recovery_width=params.recovery_width, **kw)

    @classmethod
    def card_name(cls, params: SequenceParams) -> str:
        if not params.is_mmnet:
            return "seqfakeformer"
        off = [n for n in ("multiscale", "backward", "multilabel", "recovery") if not getattr(params, n)]
        if params.backward and not params.rerank:
            off.append("rerank")
        return "mmnet" + "".join(f"-{n}" for n in off)

    @classmethod
    def build_datamodule(cls, data_cfg, train_cfg, params):
        return SequenceDataModule(data_cfg, train_cfg, params)


__all__ = ["MMNetMethod", "SequenceParams", "SequenceModule", "SequenceDataModule", "SequenceDataset",
           "sequence_results", "embedded_manifest"]
