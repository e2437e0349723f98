"""One engine for every method: fit, test and predict on Lightning, with honest run folders.

A run folder holds ``config.yaml`` (the resolved config), ``best.safetensors`` / ``last.safetensors``
with JSON sidecars, ``last.ckpt`` (Lightning's full training state, read back with
``weights_only=True``) for resuming, ``metrics.csv`` and the result cards of every test.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
import pickle
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback

from visec.config import DataConfig, RunConfig, load_config
from visec.data.datamodule import FaceDataModule
from visec.data.manifest import read_manifest
from visec.checkpoint import (load_into, load_state_dict_file, read_sidecar,
                                     save_checkpoint, sidecar_path)
from visec.engine.method import method_of
from visec.engine.module import BinaryDetector, MethodModule
from visec.errors import CheckpointError, ConfigError, DataError
from visec.cards import ResultCard, code_version

CONFIG_FILE = "config.yaml"


class _DropAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
    logging.getLogger(_name).addFilter(_DropAdverts())
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
warnings.filterwarnings("ignore", message=r".*all_gather is deprecated.*")
# Evaluation gathers every rank's predictions and drops the sampler's padding by sample index,
# so the "each sample evaluated once" advice does not apply.
warnings.filterwarnings("ignore", message=r".*it is recommended to use `Trainer\(devices=1.*")
# train.select_on=last has no validation loader (an empty list), which is what it means
warnings.filterwarnings("ignore", message=r".*Total length of `list` across ranks is zero.*")
# per-epoch values are logged every epoch whatever train.log_every_n_steps says
warnings.filterwarnings("ignore", message=r".*is smaller than the logging interval.*")
BEST, LAST, STATE = "best.safetensors", "last.safetensors", "last.ckpt"
FEDERATED_FILE = "federated.json"  # a federated run's rounds (written by visec.federated)


def build_module(cfg: RunConfig) -> MethodModule:
    """Instantiate the registered method for ``cfg`` (random or local backbone weights).

    Every method's LightningModule keeps its pure ``nn.Module`` as ``.net`` (what checkpoints hold)
    and, after ``trainer.test``, a ``test_results`` dict with ``metrics`` and optionally ``scores``.
    """
    module = method_of(cfg.method).build(cfg.method_params(), cfg.train)
    if cfg.train.channels_last:  # 4-D weights in NHWC; convolutions then keep activations NHWC too
        module.net.to(memory_format=torch.channels_last)
    return module


def card_name(cfg: RunConfig) -> str:
    """The model name on a result card: the method's name for its variant (``Method.card_name``,
    e.g. ``trades+ancra``), then the sharpness-aware optimiser rule when one is on (``+gcsam``) and
    the modality when it is not visible light (``hfc_mffd[nir]``)."""
    name = method_of(cfg.method).card_name(cfg.method_params())
    name += f"+{cfg.train.sam}" if cfg.train.sam != "none" else ""
    name += f"+{cfg.train.adversarial}" if cfg.train.adversarial != "none" else ""
    name += f"@{cfg.fed.label()}" if cfg.fed is not None else ""  # trained federated (visec fed run)
    return name + (f"[{cfg.data.modality}]" if cfg.data.modality != "vis" else "")


def surrogate_mismatch(surrogate: DataConfig, target: DataConfig) -> str | None:
    """Why a transfer surrogate trained on ``surrogate`` data cannot attack a run on ``target`` data
    (other face size or modality: "takes vis faces at 64 px, the target nir at 64 px"), or ``None``."""
    if (surrogate.image_size, surrogate.modality) == (target.image_size, target.modality):
        return None
    return (f"takes {surrogate.modality} faces at {surrogate.image_size} px, the target "
            f"{target.modality} at {target.image_size} px")


def build_datamodule(cfg: RunConfig, data: DataConfig | None = None) -> L.LightningDataModule:
    """The method's data module (``Method.build_datamodule``; by default the face manifest one)."""
    return method_of(cfg.method).build_datamodule(data or cfg.data, cfg.train, cfg.method_params())


class SafetensorsCheckpoint(Callback):
    """``best.*`` when the monitored validation metric improves; ``last.*`` with the resume state.

    * ``best.safetensors`` (+ sidecar): written on each validation that improves on the best so far
      (``train.select_on=val`` / ``test``); with ``select_on=last``, once, from the final epoch.
    * ``last.safetensors`` and ``last.ckpt`` (Lightning's full training state, for ``--resume``):
      after the final epoch, and after any epoch that ends ``train.state_every_s`` seconds or more
      after the previous write (every epoch with 0). An interrupted run resumes from the last write.

    Its state (best score and epoch) travels in Lightning's checkpoint, so a resumed run keeps
    selecting against the true best so far.
    """

    def __init__(self, run_dir: Path, cfg: RunConfig) -> None:
        self.run_dir, self.cfg = run_dir, cfg
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self.writes = {"best": 0, "last": 0, "state": 0}  # how often each was written (this session)
        self._validated_epoch: int | None = None
        self._state_written = time.monotonic()

    def _meta(self, trainer: L.Trainer, metrics: dict[str, float], module: L.LightningModule) -> dict[str, Any]:
        from visec.runtime import runtime_info

        meta = {"config": self.cfg.to_dict(), "code": code_version(), "epoch": trainer.current_epoch,
                "global_step": trainer.global_step, "selection": self.cfg.train.select_on,
                "metrics": metrics,
                "runtime": runtime_info(self.cfg.train),
                "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        frame = ((getattr(module, "val_results", None) or {}).get("metrics") or {}).get("frame") or {}
        if "eer_threshold" in frame:  # a detector's decision threshold, for attacked tests
            meta["val_eer_threshold"] = float(frame["eer_threshold"])
        return meta

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._validated_epoch = trainer.current_epoch

    def _save(self, kind: str, trainer: L.Trainer, module: L.LightningModule, metrics: dict[str, float]) -> None:
        if trainer.is_global_zero:
            save_checkpoint(module.net, self.run_dir / (BEST if kind == "best" else LAST),
                            self._meta(trainer, metrics, module))
        self.writes[kind] += 1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        train = self.cfg.train
        final = trainer.should_stop or (trainer.max_epochs is not None
                                        and trainer.current_epoch + 1 >= trainer.max_epochs)
        if train.select_on == "last":
            if final:  # best.* is the final epoch's last.*: linked to it below
                self.best_epoch = trainer.current_epoch
        elif self._validated_epoch == trainer.current_epoch:  # selection only where validation ran
            key = f"val/{train.monitor}"
            if key not in metrics:
                raise ConfigError(f"train.monitor='{train.monitor}' is not a logged validation metric; "
                                  f"available: {', '.join(k[4:] for k in metrics if k.startswith('val/'))}")
            score = metrics[key]
            better = (self.best_score is None or (score > self.best_score if train.monitor_mode == "max"
                                                  else score < self.best_score))
            if better and not math.isnan(score):
                self.best_score, self.best_epoch = score, trainer.current_epoch
                self._save("best", trainer, pl_module, metrics)
        if final or time.monotonic() - self._state_written >= train.state_every_s:
            self._save("last", trainer, pl_module, metrics)
            trainer.save_checkpoint(self.run_dir / STATE, weights_only=False)  # full state, for resume
            self.writes["state"] += 1
            self._state_written = time.monotonic()
        if final and train.select_on == "last" and trainer.is_global_zero:
            for name in (LAST, sidecar_path(LAST).name):  # the same bytes: a hard link (else a copy)
                _link_or_copy(self.run_dir / name, self.run_dir / name.replace("last", "best", 1))
            self.writes["best"] += 1

    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self.best_score, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_score, self.best_epoch = state.get("best_score"), state.get("best_epoch")


class _ThreadShare(Callback):
    """Every few seconds of training or evaluation, the thread count follows the cores other
    processes leave free (:func:`visec.runtime.retune_threads`; automatic mode only)."""

    @staticmethod
    def _look(*_: Any) -> None:
        from visec.runtime import retune_threads

        retune_threads()

    on_train_batch_start = on_validation_batch_start = on_test_batch_start = on_predict_batch_start = _look


def _link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` becomes the file ``src`` is (a hard link where the file system allows), atomically."""
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        import shutil

        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


class _FileCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint writer, streaming to a temporary file that replaces the target.

    Lightning's own writer serialises the whole state (weights and optimiser moments) into memory
    first, a second copy of the model that raised the training peak memory by the checkpoint's size.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(checkpoint, tmp)
        os.replace(tmp, path)

    def load_checkpoint(self, path: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Lightning's reader of ``last.ckpt`` (resume), whose refusals (a truncated file, another
        kind of file, an object ``weights_only=True`` will not unpickle) become one-line
        :class:`CheckpointError` naming the file."""
        try:
            state = super().load_checkpoint(path, *args, **kwargs)
        except Exception as exc:  # zip and pickle errors, EOF, unsupported globals ...
            text = str(exc)
            why = ("it holds objects other than tensors and plain values, which visec never unpickles"
                   if "Weights only load failed" in text else
                   "truncated, or not a file torch.save wrote" if "PytorchStreamReader" in text or
                   isinstance(exc, (EOFError, KeyError, pickle.UnpicklingError))
                   else f"{type(exc).__name__}: {_first_line(exc, 120)}")
            raise CheckpointError(f"cannot resume from {path}: not a training state visec can load "
                                  f"with weights_only=True ({why})") from None
        missing = [k for k in ("state_dict", "optimizer_states", "epoch", "global_step")
                   if not isinstance(state, dict) or k not in state]
        if missing:
            raise CheckpointError(f"cannot resume from {path}: not a Lightning training state "
                                  f"(no {', '.join(missing)})")
        return state


def _first_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's first line without terminal colour codes, at most ``limit`` characters."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[:limit - 3] + "..."


class Engine:
    """Fit, test and predict any registered method from a :class:`RunConfig`."""

    def __init__(self, cfg: RunConfig, run_dir: str | Path | None = None, *, progress: bool = False) -> None:
        self.cfg = cfg
        if run_dir is None:
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            run_dir = Path(cfg.output_dir) / (cfg.name or f"{cfg.method}-{stamp}")
        self.run_dir = Path(run_dir)
        self.progress = progress
        from visec.runtime import configure_threads

        configure_threads(cfg.train.threads)

    @classmethod
    def from_run(cls, run_dir: str | Path, overrides: list[str] | None = None, **kw: Any) -> "Engine":
        """Re-open a run folder with its saved config (for resume or test)."""
        run_dir = Path(run_dir)
        cfg_path = run_dir / CONFIG_FILE
        if not cfg_path.is_file():
            raise ConfigError(f"{run_dir} is not a visec run folder (no {CONFIG_FILE})")
        return cls(load_config(cfg_path, overrides), run_dir, **kw)

    # -- helpers -----------------------------------------------------------------------------------
    def _trainer(self, callbacks: list[Callback] | None = None, **overrides: Any) -> L.Trainer:
        t = self.cfg.train
        kwargs: dict[str, Any] = dict(
            max_epochs=t.max_epochs, accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes,
            strategy=t.strategy, precision=t.precision, deterministic=t.deterministic,
            default_root_dir=str(self.run_dir), enable_checkpointing=False, logger=False,
            enable_progress_bar=self.progress, enable_model_summary=False, num_sanity_val_steps=0,
            callbacks=[*(callbacks or []), _ThreadShare()], log_every_n_steps=t.log_every_n_steps,
            check_val_every_n_epoch=t.val_every_n_epochs, plugins=[_FileCheckpointIO()],
            # no_grad instead of inference_mode for evaluation, so methods may run gradient-based
            # attacks inside validation/test steps (under torch.enable_grad()).
            inference_mode=False,
        )
        if t.limit_train_batches is not None:
            kwargs["limit_train_batches"] = t.limit_train_batches
        if self.progress:
            kwargs["callbacks"] = [*kwargs["callbacks"], _progress_bar()]
        kwargs.update(overrides)
        from visec.runtime import check_accelerator

        check_accelerator(kwargs["accelerator"], kwargs["devices"])  # in visec's words, before Lightning's
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
            try:
                trainer = L.Trainer(**kwargs)
            except MisconfigurationException as exc:  # settings no config check could foresee
                raise ConfigError(f"train: Lightning refuses these settings: {_first_line(exc)}") from None
        # Deterministic algorithms, but without torch's debugging aid of filling every new tensor's
        # memory with NaN (which correct code never reads): that fill cost 15 % of a resnet18
        # training step here and changes no result.
        torch.utils.deterministic.fill_uninitialized_memory = False
        return trainer

    # -- fit ---------------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train; with ``resume`` continue from ``last.ckpt`` in the run folder."""
        state = self.run_dir / STATE
        if resume and not state.is_file():
            raise CheckpointError(f"cannot resume: {state} does not exist")
        if not resume and any((self.run_dir / f).exists() for f in (LAST, BEST, STATE)):
            raise ConfigError(f"run folder {self.run_dir} already holds a run; use --resume to "
                              f"continue it or pick another name")
        if self.cfg.fed is not None:  # central training: a config's federated section does not apply
            self.cfg = self.cfg.model_copy(update={"fed": None})
        L.seed_everything(self.cfg.train.seed, workers=True, verbose=False)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.cfg.save(self.run_dir / CONFIG_FILE)
        dm = build_datamodule(self.cfg)
        dm.selection_split  # every data module validates the selection protocol before training
        module = build_module(self.cfg)
        if self.cfg.train.adversarial != "none" and not isinstance(module, BinaryDetector):
            raise ConfigError(f"train.adversarial={self.cfg.train.adversarial} trains forgery detectors; "
                              f"'{self.cfg.method}' is {method_of(self.cfg.method).family or 'another kind of method'}"
                              f" (adversarial_training and ancra have their own procedures)")
        ckpt = SafetensorsCheckpoint(self.run_dir, self.cfg)
        from lightning.pytorch.loggers import CSVLogger

        # each fit session logs into its own folder, so resuming never overwrites earlier logs
        version = "logs" if not resume else next(f"logs-resume{k}" for k in range(1, 10_000)
                                                 if not (self.run_dir / f"logs-resume{k}").exists())
        trainer = self._trainer([ckpt], logger=CSVLogger(str(self.run_dir), name="", version=version))
        start = time.perf_counter()
        try:
            trainer.fit(module, datamodule=dm, ckpt_path=str(state) if resume else None, weights_only=True)
        except MisconfigurationException as exc:  # e.g. a limit_train_batches fraction under one batch
            raise ConfigError(f"Lightning refused the run: {_first_line(exc)}") from None
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            if "Expected more than 1 value per channel" in str(exc):  # BatchNorm on a batch of one image
                raise DataError(f"a training batch held a single image, which BatchNorm cannot train on "
                                f"(split '{self.cfg.data.train_split}', data.batch_size="
                                f"{self.cfg.data.batch_size}); change data.batch_size") from None
            # the state read, but does not fit this model or optimiser (another method or override)
            if resume and _raised_in(exc, "checkpoint_connector"):
                raise CheckpointError(f"cannot resume from {state}: it does not match this run's model "
                                      f"or optimiser ({_first_line(exc)})") from None
            raise
        if trainer.num_training_batches == 0:
            raise DataError(f"training ran on no batch: the '{self.cfg.data.train_split}' split gave "
                            f"0 batches; nothing was trained")
        return {"run_dir": self.run_dir, "best": self.run_dir / BEST, "last": self.run_dir / LAST,
                "best_epoch": ckpt.best_epoch, "best_score": ckpt.best_score,
                "fit_seconds": time.perf_counter() - start, "skipped": dm.skipped,
                "checkpoint_writes": dict(ckpt.writes)}

    def training_log(self) -> pd.DataFrame:
        """Every logged training/validation value of the run, resumed sessions included, in order."""
        paths = sorted(self.run_dir.glob("logs*/metrics.csv"), key=lambda p: p.stat().st_mtime)
        frames = [pd.read_csv(p) for p in paths]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    # -- test --------------------------------------------------------------------------------------
    def load_module(self, checkpoint: str | Path | None = None) -> tuple[L.LightningModule, dict[str, Any]]:
        path = Path(checkpoint) if checkpoint else self.run_dir / BEST
        module = build_module(self.cfg)
        load_into(module.net, load_state_dict_file(path, "checkpoint"), source=str(path))
        meta = read_sidecar(path) if path.with_suffix(".json").is_file() else {}
        return module, meta

    def test(self, checkpoint: str | Path | None = None, manifest: str | Path | None = None,
             protocol: str | None = None, split: str | None = None,
             corruption: str | None = None, attack: Any = None) -> ResultCard:
        """Evaluate a checkpoint (default: the run's best) and write one result card.

        ``corruption`` (e.g. ``jpeg-70``) degrades every test image first; the default protocol
        name is ``intra`` (``cross`` with another manifest, ``leave-out:M`` for a run trained with
        ``data.holdout=M``), followed by ``+corruption`` when one is applied.

        ``attack`` (a forgery detector only; text like ``pgd,eps=4/255`` or a
        :class:`~visec.attacks.detector.DetectorAttackSpec`) attacks the test faces of its direction
        (fakes towards real by default) at the run's validation-EER threshold, after any corruption;
        the protocol gains ``+pgd-linf-4/255`` and the card an ``attack`` block (success rate at the
        threshold, perturbation norms, gradient-masking checks).
        """
        module, meta = self.load_module(checkpoint)
        attacker = self._attacker(module, meta, attack) if attack is not None else None
        data_cfg = self.cfg.data.model_copy(update={k: v for k, v in
                                                     (("manifest", Path(manifest) if manifest else None),
                                                      ("test_split", split),
                                                      ("corruption", corruption)) if v is not None})
        data_cfg = DataConfig.model_validate(data_cfg.model_dump())  # re-check the corruption spec
        if protocol is None:
            protocol = (f"leave-out:{data_cfg.holdout}" if data_cfg.holdout else "cross" if manifest
                        else "intra")
            if data_cfg.corruption:
                protocol += f"+{data_cfg.corruption}"
            if attacker is not None:
                protocol += f"+{attacker.label}"
        dm = build_datamodule(self.cfg, data_cfg)
        trainer = self._trainer()
        start = time.perf_counter()
        if attacker is not None:
            module.test_attack, module._attacked_images = attacker, {}
        try:
            trainer.test(module, datamodule=dm, verbose=False, weights_only=True)
        finally:
            module.test_attack, module._attacked_images = None, {}
        seconds = time.perf_counter() - start
        res = module.test_results
        selection = meta.get("selection", self.cfg.train.select_on)
        skipped = getattr(dm, "skipped", {})
        notes = []
        if selection == "test":
            notes.append("model selected on the test split (train.select_on=test)")
        if skipped:
            notes.append(f"{sum(len(v) for v in skipped.values())} unreadable image(s) skipped")
        n = len(res["scores"]) if res.get("scores") is not None else res.get("n", 0)
        extra_attack = {}
        if attacker is not None:
            from visec.attacks.detector import attack_rate

            scores = res["scores"]
            block = attacker.summary(scores["prob"].to_numpy(), scores["label"].to_numpy())
            res["metrics"]["attack"] = block
            notes.append(f"attacked ({attacker.label}): {block['n_attacked']} "
                         f"{'fake' if attacker.target == 1 else 'real'} faces, success "
                         f"{attack_rate(block):.1%} at threshold {attacker.threshold:.4g}")
            if attacker.path:
                notes.append(f"attacked through a stand-in path: {attacker.path}")
            extra_attack = {"attack": attacker.spec.model_dump(mode="json")}
        card = ResultCard(
            method=card_name(self.cfg), train_data=_data_name(self.cfg.data),
            test_data=f"{_data_name(data_cfg)}:{data_cfg.test_split}", protocol=protocol,
            seed=self.cfg.train.seed, metrics=res["metrics"], config=self.cfg.to_dict(),
            timings={"test_seconds": round(seconds, 3), "images_per_second": round(n / max(seconds, 1e-9), 2)},
            selection=selection, notes=notes,
            extra={"checkpoint": str(checkpoint or self.run_dir / BEST), "epoch": meta.get("epoch"),
                   # the decision threshold fixed at training (visec analyze decides with it)
                   **({"val_eer_threshold": meta["val_eer_threshold"]} if "val_eer_threshold" in meta else {}),
                   "skipped": {k: [list(x) for x in v] for k, v in skipped.items()}, **extra_attack,
                   **self._federated()},
            runtime=self._runtime(meta),
        )
        if not trainer.is_global_zero:  # under DDP every rank holds the gathered results; one writes
            return card
        card.save(self.run_dir / "cards")
        if res.get("scores") is not None:
            res["scores"].to_csv(self.run_dir / "cards" / f"{card.slug()}.scores.csv", index=False)
        return card

    def _runtime(self, meta: dict[str, Any]) -> dict[str, Any]:
        """This test's threads, precision and layout, and those its checkpoint was trained with."""
        from visec.runtime import runtime_info

        info = runtime_info(self.cfg.train)
        if meta.get("runtime"):
            info["fit"] = meta["runtime"]
        return info

    def _federated(self) -> dict[str, Any]:
        """A federated run's rounds (``federated.json``, written by :mod:`visec.federated`), for its cards."""
        path = self.run_dir / FEDERATED_FILE
        if self.cfg.fed is None or not path.is_file():
            return {}
        import json

        return {"federated": json.loads(path.read_text())}

    def _attacker(self, module: L.LightningModule, meta: dict[str, Any], attack: Any):
        """The attacker of an attacked test: spec, threshold, stand-in path, surrogate (transfer)."""
        from visec.attacks.detector import DetectorAttacker, DetectorAttackSpec

        spec = DetectorAttackSpec.parse(attack)
        if not isinstance(module, BinaryDetector):
            raise ConfigError(f"attacked tests are for forgery detectors; '{self.cfg.method}' is "
                              f"{method_of(self.cfg.method).family or 'another kind of method'}")
        if tuple(module.input_range) != (0.0, 1.0):
            raise ConfigError(f"attacked tests need a network that takes images in [0, 1]; "
                              f"'{self.cfg.method}' takes {tuple(module.input_range)}")
        threshold, source = meta.get("val_eer_threshold"), "validation EER (stored at training)"
        if threshold is None:
            threshold, source = self._validation_threshold(module)
        surrogate, source_name = None, None
        if spec.source is not None:
            other = Engine.from_run(spec.source)
            why = surrogate_mismatch(other.cfg.data, self.cfg.data)
            if why:
                raise ConfigError(f"transfer: the surrogate {spec.source} {why}")
            sur, _ = other.load_module()
            if not isinstance(sur, BinaryDetector):
                raise ConfigError(f"transfer: the surrogate {spec.source} is not a forgery detector")
            surrogate, source_name = sur.attack_view(), card_name(other.cfg)
        return DetectorAttacker(spec, module.attack_view(), threshold, module.attack_offset(threshold),
                                surrogate, source_name=source_name, threshold_source=source,
                                path=module.attack_path())

    def _validation_threshold(self, module: L.LightningModule) -> tuple[float, str]:
        """The EER threshold on the selection split, for runs saved before thresholds were stored."""
        if self.cfg.train.select_on == "last":
            return 0.5, "0.5 (the run has no validation split: train.select_on=last)"
        self._trainer().validate(module, datamodule=build_datamodule(self.cfg), verbose=False, weights_only=True)
        return (float(module.val_results["metrics"]["frame"]["eer_threshold"]),
                "validation EER (recomputed: the run predates stored thresholds)")

    # -- predict -----------------------------------------------------------------------------------
    def predict(self, manifest: str | Path, checkpoint: str | Path | None = None,
                split: str | None = None) -> pd.DataFrame:
        """Per-image fake probabilities for a manifest (all splits unless ``split`` is given).

        Unreadable images are skipped and reported as ``visec test`` reports them: the frame's
        ``attrs["skipped"]`` holds ``{split: [(path, reason), ...]}`` (``data.on_bad_image=error``
        stops at the first instead)."""
        module, _ = self.load_module(checkpoint)
        if not isinstance(module, BinaryDetector):
            raise ConfigError(f"predict scores forgery detectors (P(fake) per image); '{self.cfg.method}' is "
                              f"{method_of(self.cfg.method).family or 'another kind of method'}"
                              + ("; use visec detect (one face) or visec test (a manifest)"
                                 if self.cfg.method == "mmnet" else ""))
        m = read_manifest(manifest)
        if split:
            m = m.split(split)
        m.df = m.df.assign(split="test")
        dm = FaceDataModule(self.cfg.data.model_copy(update={"manifest": Path(manifest)}), self.cfg.train, m)
        out = self._trainer().predict(module, datamodule=dm, weights_only=True)
        index = torch.cat([o["index"] for o in out]).numpy()
        probs = torch.cat([o["prob"] for o in out]).numpy()
        df = dm.dataset("test").df.iloc[index]
        out = pd.DataFrame({"path": df["path"].to_numpy(), "video_id": df["video_id"].to_numpy(),
                            "label": df["label"].to_numpy(), "prob": probs})
        # the rows were all relabelled "test" above: report them under the split that was asked for
        bad = [tuple(x) for items in dm.skipped.values() for x in items]
        out.attrs["skipped"] = {split or "all splits": bad} if bad else {}
        return out


def _raised_in(exc: BaseException, module_name: str) -> bool:
    """Whether ``exc`` was raised inside a file named ``module_name`` (``.py``), at any depth."""
    import traceback

    return any(Path(f.filename).stem == module_name for f in traceback.extract_tb(exc.__traceback__))


def _progress_bar() -> Callback:
    """Lightning's rich progress bar without the logger's version number (always ``logs`` here)."""
    from lightning.pytorch.callbacks import RichProgressBar

    class Bar(RichProgressBar):
        def get_metrics(self, trainer, pl_module):
            items = super().get_metrics(trainer, pl_module)
            items.pop("v_num", None)
            return items

    return Bar(leave=True)


def _data_name(data: DataConfig) -> str:
    return str(data.manifest or data.dataset or "none")
