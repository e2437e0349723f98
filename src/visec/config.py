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
from visec.utils import MAX_NESTING, did_you_mean, short_repr


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


def _devices_field(value: Any) -> Any:
    if value == "auto":
        return value
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ValueError("devices per node is a whole number >= 1 or 'auto'")


#: ``train.devices``: a count >= 1 or ``"auto"`` (Lightning's lists and -1 are not visec settings).
Devices = Annotated[int | Literal["auto"], BeforeValidator(_devices_field)]


def _batch_limit_field(value: Any) -> Any:
    if value is None:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    if isinstance(value, float) and 0 < value <= 1:
        return value
    raise ValueError("a count of batches >= 1 or a fraction of the epoch in (0, 1] (0 would train nothing)")


#: ``train.limit_train_batches``: Lightning's two forms, checked before Lightning sees them.
BatchLimit = Annotated[int | float | None, BeforeValidator(_batch_limit_field)]


#: The Lightning strategies a run may name: DDP (its launchers, with or without the search for unused
#: parameters) and FSDP. The others need packages (DeepSpeed) or hardware (TPU/XLA) visec does not set up.
STRATEGIES = ("auto", *(f"{d}{u}" for d in ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook")
                        for u in ("", "_find_unused_parameters_true", "_find_unused_parameters_false")),
              "fsdp", "fsdp_cpu_offload")


class TrainConfig(_Strict):
    """Optimisation, hardware and model-selection settings (shared by every method)."""

    seed: int = Field(0, ge=0, le=2**32 - 1)  # numpy's and Lightning's range (Lightning resets others to 0)
    max_epochs: int = Field(3, ge=1)
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    fused_optimizer: bool = True  # torch's fused step (CPU and GPU); false: the per-tensor loop
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    scheduler: Literal["none", "cosine", "step", "multistep"] = "cosine"
    milestones: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list)  # epochs where "multistep" multiplies lr by gamma
    gamma: float = Field(0.1, gt=0)
    # sharpness-aware wrappers around the optimiser (visec.engine.sam): two passes per step
    sam: Literal["none", "sam", "gcsam"] = "none"
    sam_rho: float = Field(0.05, ge=0)  # radius of the ascent step (global L2 norm)
    sam_beta1: float = Field(0.5, ge=-1, le=1)  # GCSAM: cos(g_sam, g) <= beta1 -> the ERM gradient
    sam_beta2: float = Field(0.8, ge=-1, le=1)  # GCSAM: cos >= beta2 -> the SAM gradient; between: projection
    # adversarial training of a binary detector (BinaryDetector.training_losses): PGD-AT or TRADES
    adversarial: Literal["none", "pgd_at", "trades"] = "none"
    adv_eps: Budget = Field(4 / 255, ge=0)  # L-inf budget of the training attack
    adv_steps: int = Field(3, ge=1)
    adv_alpha: Budget | None = None  # step size; default 2.5 * adv_eps / adv_steps
    trades_beta: float = Field(6.0, ge=0)
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: Devices = "auto"  # per node; a GPU count is checked when the trainer starts
    num_nodes: int = Field(1, ge=1)
    strategy: Literal[STRATEGIES] = "auto"  # type: ignore[valid-type]
    precision: Literal["32-true", "bf16-mixed", "16-mixed", "bf16-true", "64-true"] = "32-true"
    channels_last: bool = False  # convolutional weights (hence activations) in NHWC layout
    threads: int | None = Field(None, ge=1, le=4096)  # intra-op threads; None: the free cores (visec.runtime)
    deterministic: bool = True
    limit_train_batches: BatchLimit = None  # batches per epoch: a count >= 1 or a fraction in (0, 1]
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


#: Bounds on a YAML document (a config, an override value): its size in bytes and the number of
#: values it holds once every alias is expanded. The shipped configs hold under 100 values; a
#: "billion laughs" document (aliases of aliases) holds 10^9 in a few hundred bytes.
MAX_YAML_BYTES = 1 << 20
MAX_YAML_VALUES = 10_000


class YAMLSyntaxError(ConfigError):
    """A text that is not YAML (an override value falls back to being a plain string)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key written twice in one mapping is an error (YAML says
    keys are unique; PyYAML silently keeps the last). Keys merged in with ``<<`` may be overridden."""

    source = "YAML"
    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        self._depth += 1  # refused here, before PyYAML's recursion runs out of stack
        try:
            if self._depth > MAX_NESTING:
                raise ConfigError(f"{self.source}:{self.peek_event().start_mark.line + 1}: values nested "
                                  f"deeper than {MAX_NESTING} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: the base class says so
                continue
            if first is not key_node:
                raise ConfigError(f"{self.source}:{key_node.start_mark.line + 1}: duplicate key "
                                  f"{short_repr(key)} (first on line {first.start_mark.line + 1}); "
                                  f"a key may appear once per mapping")
        return super().construct_mapping(node, deep=deep)


def _expanded_size(root: yaml.Node, source: str) -> int:
    """How many values the node graph holds with every alias expanded (each node counted once per
    path that reaches it), refusing cycles and nesting deeper than :data:`MAX_NESTING`; stops
    counting past :data:`MAX_YAML_VALUES`. No recursion, linear in the distinct nodes."""
    size: dict[int, int] = {}
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    open_nodes: set[int] = set()
    while stack:
        node, depth, done = stack.pop()
        key = id(node)
        if done:
            open_nodes.discard(key)
            children = _children(node)
            size[key] = min(1 + sum(size[id(c)] for c in children), MAX_YAML_VALUES + 1)
            continue
        if key in size:
            continue
        if key in open_nodes:
            raise ConfigError(f"{source}: an alias refers to a value that contains it (a recursive structure)")
        if depth > MAX_NESTING:
            raise ConfigError(f"{source}: values nested deeper than {MAX_NESTING} levels")
        open_nodes.add(key)
        stack.append((node, depth, True))
        stack.extend((c, depth + 1, False) for c in _children(node) if id(c) not in size)
    return size[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def load_yaml(text: str | bytes, source: str) -> Any:
    """Parse one YAML document the way visec reads every config: safe tags only, unique keys, at
    most :data:`MAX_YAML_BYTES` bytes and :data:`MAX_YAML_VALUES` values with aliases expanded.
    Every refusal is a one-line :class:`ConfigError` naming ``source`` (and the line), without
    echoing the input; text that is not YAML raises :class:`YAMLSyntaxError`."""
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"{source}: {len(text)} bytes; a config holds at most {MAX_YAML_BYTES}")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{source}: not UTF-8 text (byte 0x{text[exc.start]:02x} at offset "
                              f"{exc.start})") from None
    loader = None
    try:
        loader = _UniqueKeyLoader(text)  # the reader refuses control characters here
        loader.source = source
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, source) > MAX_YAML_VALUES:
            raise ConfigError(f"{source}: holds more than {MAX_YAML_VALUES} values once its aliases are "
                              f"expanded (anchors and aliases that repeat each other); refused")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = str(getattr(exc, "problem", None) or getattr(exc, "context", None) or type(exc).__name__)
        if isinstance(exc, yaml.reader.ReaderError):  # the character's code point, or a byte
            code = exc.character if isinstance(exc.character, int) else ord(exc.character[:1] or "\0")
            problem = f"special character #x{code:04x} at offset {exc.position}"
        problem = problem.replace("\n", " ")
        raise YAMLSyntaxError(f"{where}: not valid YAML ({problem[:120]})") from None
    except RecursionError:
        raise ConfigError(f"{source}: values nested deeper than {MAX_NESTING} levels") from None
    finally:
        if loader is not None:
            loader.dispose()


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
            value = load_yaml(raw, f"override {short_repr(key, 40)}") if raw != "" else ""
        except YAMLSyntaxError:  # not YAML: the text as it is
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
            text = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
        loaded = load_yaml(text, str(path)) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        raw = loaded
    if fields:
        raw = deep_merge(raw, fields)
    if overrides:
        raw = deep_merge(raw, parse_overrides(overrides))
    try:
        return _validate(RunConfig, raw)
    except ConfigError as exc:
        if name_or_path is None:
            raise
        origin = f"{path} (with overrides)" if overrides or fields else str(path)
        raise type(exc)(f"{origin}: {exc}") from None


def _validate(cls: type[BaseModel], raw: dict[str, Any], prefix: str = "") -> BaseModel:
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, cls, prefix)) from None


def _explain(exc: ValidationError, cls: type[BaseModel], prefix: str) -> str:
    err = exc.errors()[0]
    loc = [str(p)[:60] for p in err["loc"]]  # a key read from a file is shown, never a long one
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
    shown = f" (got {short_repr(value)})" if not isinstance(value, dict) else ""
    return f"config key '{key}': {err['msg']}{shown}{more}"


def _known_keys(cls: type[BaseModel], loc: list[str]) -> list[str]:
    model: Any = cls
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
    return sorted(getattr(model, "model_fields", {}))
