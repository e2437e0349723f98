"""Typed run configuration: YAML files under ``configs/`` + ``key=value`` overrides, validated at load.

Precedence (lowest first): the defaults of the classes below < the YAML file < CLI overrides. Every
key is checked: an unknown or mistyped key is an error naming the key (with a "did you mean"), and
the method's own parameters are validated by the method's parameter class. The resolved config is
saved into the run folder (``config.yaml``) so a run can be reproduced from it alone.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from visec.errors import ConfigError
from visec.utils import did_you_mean


#: The one default adversarial budget (L-inf 8/255, the CIFAR threat model): every attack, suite,
#: method parameter and CLI option without an explicit budget uses this constant.
DEFAULT_EPS: float = 8 / 255


def parse_budget(text: str | float, name: str = "budget") -> float:
    """An adversarial budget (``eps``, a step ``alpha``): a number, ``"0.0314"`` or a fraction like
    ``"8/255"`` -> a finite float >= 0. Anything else is a one-line :class:`ConfigError` naming
    ``name``. The one parser for budgets: CLI options, YAML configs and ``key=value`` overrides."""
    if isinstance(text, bool):
        raise ConfigError(f"{name} must be a number or a fraction like 8/255, got '{text}'")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        try:
            value = float(Fraction(str(text).strip()))
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"{name} must be a number or a fraction like 8/255, got '{text}'") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be finite and >= 0, got '{text}'")
    return value


def _budget_field(value: Any) -> Any:
    if value is None:  # left to the field's own type (``Budget | None``)
        return value
    try:
        return parse_budget(value)
    except ConfigError:  # the key and the value are named by the config error around it
        raise ValueError("a budget is a number or a fraction like 8/255, finite and >= 0") from None


#: A budget field of a parameter class: validates ``8/255`` (YAML or override text) to its float.
Budget = Annotated[float, BeforeValidator(_budget_field)]

_SNAP_RTOL = 1e-4


def budget_label(value: float) -> str:
    """The one name of a budget in card protocols and file names, from its parsed value.

    Rule: a value within ``1e-4`` (relative) of ``k/255`` for an integer ``1 <= k < 255`` is
    written ``"k-255"`` (so ``8/255``, ``0.03137254901960784`` and ``0.031372`` all give
    ``"8-255"``); any other value is written with ``format(value, "g")`` (6 significant digits:
    ``0.1`` -> ``"0.1"``, ``0.0314`` -> ``"0.0314"``, which is 8.007/255, 9e-4 away, so not snapped).
    """
    value = parse_budget(value)
    k = round(value * 255)
    if 1 <= k < 255 and abs(value * 255 - k) <= _SNAP_RTOL * k:
        return f"{k}-255"
    return format(value, "g")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    """Which manifest to read and how samples become tensors."""

    manifest: Path | None = None  # JSON Lines manifest (face methods)
    dataset: str | None = None  # a built-in non-manifest dataset of the method (e.g. digits, cifar10)
    root: Path | None = None  # where that dataset's files are (e.g. the CIFAR python-pickle folder)
    image_size: int = Field(64, ge=8, le=1024)
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int | None = Field(None, ge=1)
    num_workers: int = Field(0, ge=0)
    # decoded images (at image_size, uint8) kept in memory and reused across epochs and the runs of
    # one process, up to this many MiB (0: off); in-process loading only (num_workers=0)
    memory_cache_mb: int = Field(2048, ge=0)
    # the decode check of every image runs once per file list and is cached by the files' paths,
    # sizes, modification times and manifest hashes (false: decode-check on every run)
    scan_cache: bool = True
    frames_per_video: int | None = Field(None, ge=1)  # evenly spaced frames kept per video
    hflip: bool = True  # random horizontal flip while training
    on_bad_image: Literal["skip", "error"] = "skip"  # skip = counted, named, and reported in the card
    train_split: str = "train"
    val_split: str | None = "val"
    test_split: str = "test"
    val_fraction: float = Field(0.1, ge=0, lt=1)  # held out of train when a dataset has no val split
    # leave-one-manipulation-out: this manipulation is removed from train and val, and the test
    # split keeps only real samples and this manipulation
    holdout: str | None = None
    # a corruption spec (jpeg-70, blur-1, resize-0.5, noise-4) applied to evaluation images only
    corruption: str | None = None
    # which images a sample holds: vis (RGB), nir (the near-infrared twin in the manifest's `nir`
    # column, as 3 equal channels) or vis+nir (4 channels, for methods with a NIR branch)
    modality: Literal["vis", "nir", "vis+nir"] = "vis"

    @model_validator(mode="after")
    def _check_corruption(self) -> "DataConfig":
        corruption_spec(self.corruption)  # one-line error for an unknown name or bad value
        return self


def corruption_spec(spec: str | None) -> tuple[str, float] | None:
    """``"jpeg-70"`` -> ``("jpeg", 70.0)``, checked against the registered corruptions and their
    ranges; ``None`` / ``"none"`` -> ``None``. Raises :class:`ConfigError` (one line, with "did you
    mean") for an unknown name or a value outside the corruption's range."""
    from visec.registry import CORRUPTIONS

    if spec is None or spec == "none":
        return None
    name, sep, raw = spec.partition("-")
    entry = CORRUPTIONS.get(name)
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"corruption '{spec}': write NAME-VALUE, e.g. jpeg-70, blur-1.5, resize-0.5, "
                          f"noise-4") from None
    low, high = entry.meta["low"], entry.meta["high"]
    if not sep or not low <= value <= high:
        raise ConfigError(f"corruption '{spec}': {name} takes a value in [{low:g}, {high:g}]")
    return name, value


class TrainConfig(_Strict):
    """Optimisation, hardware and model-selection settings (shared by every method)."""

    seed: int = 0
    max_epochs: int = Field(3, ge=1)
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    fused_optimizer: bool = True  # torch's fused step (CPU and GPU); false: the per-tensor loop
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    scheduler: Literal["none", "cosine", "step", "multistep"] = "cosine"
    milestones: list[int] = Field(default_factory=list)  # epochs where "multistep" multiplies lr by gamma
    gamma: float = Field(0.1, gt=0)
    # sharpness-aware wrappers around the optimiser (visec.engine.sam): two passes per step
    sam: Literal["none", "sam", "gcsam"] = "none"
    sam_rho: float = Field(0.05, ge=0)  # radius of the ascent step (global L2 norm)
    sam_beta1: float = Field(0.5, le=1)  # GCSAM: cos(g_sam, g) <= beta1 -> the ERM gradient
    sam_beta2: float = Field(0.8, le=1)  # GCSAM: cos >= beta2 -> the SAM gradient; between: projection
    # adversarial training of a binary detector (BinaryDetector.training_losses): PGD-AT or TRADES
    adversarial: Literal["none", "pgd_at", "trades"] = "none"
    adv_eps: Budget = Field(4 / 255, ge=0)  # L-inf budget of the training attack
    adv_steps: int = Field(3, ge=1)
    adv_alpha: Budget | None = None  # step size; default 2.5 * adv_eps / adv_steps
    trades_beta: float = Field(6.0, ge=0)
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = Field(1, ge=1)
    strategy: str = "auto"
    precision: Literal["32-true", "bf16-mixed", "16-mixed", "bf16-true", "64-true"] = "32-true"
    channels_last: bool = False  # convolutional weights (hence activations) in NHWC layout
    threads: int | None = Field(None, ge=1)  # intra-op threads; None: the free cores (visec.runtime)
    deterministic: bool = True
    limit_train_batches: float | int | None = None
    val_every_n_epochs: int = Field(1, ge=1)  # validation (and so best-checkpoint selection) interval
    log_every_n_steps: int = Field(50, ge=1)  # per-step values (SAM statistics) are logged this often
    # the resume state (last.ckpt + last.safetensors) is written after the final epoch and after any
    # epoch that ends this many seconds after the previous write (0: after every epoch)
    state_every_s: float = Field(300.0, ge=0)
    # Model selection: "val" (default) keeps the checkpoint with the best monitored validation
    # metric; "last" keeps the final epoch; "test" selects on the test split and is recorded in
    # every card and report as such (it needs this explicit setting).
    select_on: Literal["val", "last", "test"] = "val"
    monitor: str = "auc"
    monitor_mode: Literal["max", "min"] = "max"
    bootstrap: int = Field(1000, ge=0)  # bootstrap resamples for confidence intervals

    @model_validator(mode="after")
    def _check_sam(self) -> "TrainConfig":
        if self.sam == "gcsam" and not self.sam_beta1 < self.sam_beta2:
            raise ValueError(f"train.sam_beta1 ({self.sam_beta1}) must be below train.sam_beta2 ({self.sam_beta2})")
        if self.sam != "none" and self.precision.startswith("16"):
            raise ValueError(f"train.sam={self.sam} cannot run with precision {self.precision} (its gradient scaler "
                             f"runs the closure itself); use bf16-mixed or 32-true")
        return self


FED_STRATEGIES = ("fedavg", "fedprox", "fedavgm", "fedmedian", "fedtrimmedavg", "krum")


class FedConfig(_Strict):
    """Federated training on Flower (``visec fed run``; :mod:`visec.federated`): clients, rounds, the
    strategy by name, how the training split is partitioned, and the fault and poison injections."""

    clients: int = Field(3, ge=1)
    rounds: int = Field(5, ge=1)
    local_epochs: int = Field(1, ge=1)
    strategy: Literal[FED_STRATEGIES] = "fedavg"  # type: ignore[valid-type]
    weighted: bool = True  # FedAvg weights by the clients' sample counts (false: unweighted, the template's)
    bn: Literal["average", "local"] = "average"  # local: every client keeps its BatchNorm (FedBN)
    proximal_mu: float = Field(0.01, ge=0)  # FedProx
    server_momentum: float = Field(0.9, ge=0, lt=1)  # FedAvgM
    trim_beta: float = Field(0.2, ge=0, lt=0.5)  # FedTrimmedAvg: fraction cut at each end
    krum_malicious: int = Field(1, ge=0)  # Krum: the number of malicious clients it tolerates
    min_clients: int | None = Field(None, ge=1)  # fewest replies a round needs (default: all clients)
    client_eval: bool = True  # each client also evaluates the global model on its validation share
    round_timeout: float = Field(3600.0, gt=0)  # seconds a round waits for replies (a dead node costs this)
    partition: Literal["iid", "family", "dirichlet"] = "family"
    alpha: float = Field(0.5, gt=0)  # Dirichlet concentration (partition=dirichlet)
    # fault and poison injection (tests, the bench's robustness rows)
    poison: Literal["none", "scale", "flip"] = "none"
    poison_client: int = Field(0, ge=0)  # partition id of the poisoned client
    poison_scale: float = Field(100.0, gt=0)  # scale: the update sent is scale * (local - global)
    fail_client: int | None = Field(None, ge=0)  # partition id of a client that crashes ...
    fail_round: int = Field(2, ge=1)  # ... in this round

    @model_validator(mode="after")
    def _check(self) -> "FedConfig":
        if self.min_clients is not None and self.min_clients > self.clients:
            raise ValueError(f"min_clients={self.min_clients} exceeds clients={self.clients}")
        for key in ("poison_client", "fail_client"):
            k = getattr(self, key)
            if k is not None and k >= self.clients and (key == "fail_client" or self.poison != "none"):
                raise ValueError(f"{key}={k} is not a client id (0..{self.clients - 1})")
        return self

    def label(self) -> str:
        """The federated part of a card name: ``fedavg-family``, ``fedprox-iid+bnlocal``,
        ``krum-family+poison-scale``."""
        name = f"{self.strategy}{'' if self.weighted else '-unweighted'}-{self.partition}"
        name += f"{self.alpha:g}" if self.partition == "dirichlet" else ""
        name += "+bnlocal" if self.bn == "local" else ""
        return name + (f"+poison-{self.poison}" if self.poison != "none" else "")


class RunConfig(_Strict):
    """A whole run: which method, its parameters, the data and the training settings."""

    method: str
    model: dict[str, Any] = Field(default_factory=dict)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    output_dir: Path = Path("runs")
    name: str | None = None
    fed: FedConfig | None = None  # federated training (`visec fed run`); absent for central training

    @model_validator(mode="after")
    def _check_method(self) -> "RunConfig":
        from visec.registry import METHODS

        method = METHODS.get(self.method).obj  # raises with "did you mean"
        if self.data.modality == "vis+nir" and "vis+nir" not in method.modalities:
            takes = [e.name for e in METHODS.entries() if "vis+nir" in e.obj.modalities]
            raise ConfigError(f"method '{self.method}' takes one image per sample (data.modality=vis "
                              f"or nir); vis+nir needs a method with a NIR branch: {', '.join(takes) or 'none'}")
        validated = _validate(method.Params, self.model, prefix="model")
        object.__setattr__(self, "model", validated.model_dump(mode="json"))
        return self

    def method_params(self) -> BaseModel:
        """The method's own parameters (its ``Params`` class) from ``model.*``."""
        from visec.registry import METHODS

        return METHODS.get(self.method).obj.Params(**self.model)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"fed"} if self.fed is None else None)

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path


def config_dir() -> Path:
    """Where the shipped YAML configs live (``$VISEC_CONFIG_DIR`` or the repository's ``configs/``)."""
    env = os.environ.get("VISEC_CONFIG_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "configs"


def resolve_config_path(name_or_path: str | os.PathLike) -> Path:
    """A path to an existing YAML file, or ``method`` / ``method/variant`` under :func:`config_dir`."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        return p
    parts = str(name_or_path).split("/")
    method, variant = parts[0], (parts[1] if len(parts) > 1 else "default")
    candidate = config_dir() / method / f"{variant}.yaml"
    if not candidate.is_file():
        raise ConfigError(f"no config '{name_or_path}' (looked for {candidate})")
    return candidate


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["train.lr=0.01", "data.manifest=x.jsonl"]`` -> nested dict, values parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        key, raw = item.split("=", 1)
        keys = key.strip().split(".")
        if not all(keys):
            raise ConfigError(f"override '{item}' has an empty key")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}' conflicts with another override of '{k}'")
        node[keys[-1]] = value
    return out


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = deep_merge(merged[k], v)
        else:
            merged[k] = v
    return merged


def load_config(name_or_path: str | os.PathLike | None = None, overrides: list[str] | None = None,
                **fields: Any) -> RunConfig:
    """Load a YAML config (optional), apply overrides and keyword fields, validate, return it."""
    raw: dict[str, Any] = {}
    if name_or_path is not None:
        path = resolve_config_path(name_or_path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        raw = loaded
    if fields:
        raw = deep_merge(raw, fields)
    if overrides:
        raw = deep_merge(raw, parse_overrides(overrides))
    return _validate(RunConfig, raw)


def _validate(cls: type[BaseModel], raw: dict[str, Any], prefix: str = "") -> BaseModel:
    try:
        return cls(**raw)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, cls, prefix)) from None


def _explain(exc: ValidationError, cls: type[BaseModel], prefix: str) -> str:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    key = ".".join(([prefix] if prefix else []) + loc)
    more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    if err["type"] == "extra_forbidden":
        known = _known_keys(cls, loc[:-1])
        hint = did_you_mean(loc[-1], known, cutoff=0.5) or (f"; known keys: {', '.join(known)}"
                                                             if known else "")
        return f"unknown config key '{key}'{hint}{more}"
    if err["type"] == "missing":
        return f"missing config key '{key}'{more}"
    value = err.get("input")
    shown = f" (got {value!r})" if not isinstance(value, dict) else ""
    return f"config key '{key}': {err['msg']}{shown}{more}"


def _known_keys(cls: type[BaseModel], loc: list[str]) -> list[str]:
    model: Any = cls
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
    return sorted(getattr(model, "model_fields", {}))
