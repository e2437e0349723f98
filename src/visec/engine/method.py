"""The method contract: what every registered method provides, in one place.

A method is one folder under ``visec/methods/<name>/`` with a pure ``nn.Module`` (``torch_model.py``),
its training logic as a :class:`~visec.engine.module.MethodModule` (``lightning_model.py``), a
``README.md`` and configs under ``configs/<name>/``. The folder registers one :class:`Method`
subclass per method name::

    @METHODS.register("mymethod")
    class MyMethod(Method):
        \"\"\"One line for `visec list methods`.\"\"\"

        family = "forgery detection"
        Params = MyParams            # pydantic model of the ``model.*`` config keys
        Module = MyModule            # MethodModule subclass: __init__(net, train_cfg, params)

        @classmethod
        def build_net(cls, params):  # the pure network, from its parameters only
            return MyNet(...)

Everything the engine, the bench, the CLI and the contract test need comes from that class:

* ``build_net(params)`` builds the network (what checkpoints hold, ``module.net``);
  ``build(params, train_cfg)`` wraps it in ``Module`` (one builder signature for every method);
* ``card_name(params)`` is the model name on result cards (``xception``, ``trades+ancra``);
* ``build_datamodule(data_cfg, train_cfg, params)`` is its data (default: the face manifest);
* ``config_name`` names its shipped default config (``configs/<config_name>/default.yaml``);
* ``test_protocols`` lists the ``(split, protocol)`` tests ``visec train`` runs after fitting
  (GCSCoOp: base and new classes);
* ``bench`` names the bench job ``visec bench --method NAME`` runs; ``bench_tests`` and
  ``bench_entrants`` add test-time variants and extra entrants to a forgery bench;
* ``counterpart`` (detectors) declares the plain model its paper claims to beat: the same backbone
  and recipe with the mechanism switched off (:class:`Counterpart`), trained beside it by
  ``visec bench --method NAME --ablation`` and ``visec bench --suite ablation``;
* ``readme()`` is the folder's README (paper, equations, departures, and the test guarding each
  core mechanism).

Extra stages go through hooks of :class:`~visec.engine.module.MethodModule` (``prepare_fit``,
``epoch_stage``, ``prepare_test``, ``evaluation_attacks``) and, for detectors with test-time
adaptation, :class:`~visec.engine.module.BinaryDetector` (``adapts_at_test``, ``adapted_probabilities``).
``docs/adding-a-method.md`` walks through adding one.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import lightning as L
from pydantic import BaseModel
from torch import nn

from visec.config import DataConfig, TrainConfig, config_dir
from visec.engine.module import BinaryDetector, MethodModule
from visec.errors import ConfigError, RegistryError


@dataclass(frozen=True)
class Counterpart:
    """The plain model a detector's paper compares against: its own config with ``overrides`` applied
    (same backbone, data, seed and schedule; the mechanism off).

    ``mechanism`` says what is switched off (for reports). ``removed`` lists the parameter names the
    counterpart lacks (``fnmatch`` patterns: ``dct.*``): every other parameter must exist in both
    with the same shape, which the contract test checks. ``test_only``: the overrides change only
    how a trained checkpoint scores (DeepFidelity's stage-A score instead of the SVR), so the
    counterpart is the method's own checkpoint tested again, not a second training.
    """

    overrides: tuple[str, ...]
    mechanism: str
    removed: tuple[str, ...] = ()
    test_only: bool = False


class Method:
    """Base class of every registered method (see the module docstring for the contract)."""

    name: ClassVar[str] = ""  # set by ``METHODS.register``
    family: ClassVar[str] = ""  # forgery detection, adversarial robustness, ...
    Params: ClassVar[type[BaseModel]]
    Module: ClassVar[type[MethodModule]]
    modalities: ClassVar[tuple[str, ...]] = ("vis", "nir")  # vis+nir only with a NIR branch
    config_name: ClassVar[str | None] = None  # default: the method's name
    bench: ClassVar[str | None] = None  # the bench job of `visec bench --method NAME`
    # forgery bench: test-time variants of the intra checkpoint (model overrides, one card each)
    bench_tests: ClassVar[tuple[tuple[str, ...], ...]] = ()
    # forgery bench: extra entrants ``(label suffix, overrides, leave-one-out?, sweep?[, attacked?])``
    bench_entrants: ClassVar[tuple[tuple[Any, ...], ...]] = ()
    # the paper's plain counterpart (detectors): what `--ablation` trains beside the method
    counterpart: ClassVar[Counterpart | None] = None
    # the tests `visec train` runs on the selected checkpoint: (split, protocol); None = the defaults
    test_protocols: ClassVar[tuple[tuple[str | None, str | None], ...]] = ((None, None),)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.name = ""  # a subclass is another method: it gets its own name when registered

    # ``build_net(params) -> nn.Module`` (a classmethod): the pure network for ``params`` (random or
    # local weights; never a download). Every method defines it; registration checks that it does.
    build_net: ClassVar[Callable[[Any], nn.Module]]

    @classmethod
    def registered(cls, name: str) -> None:
        """Called by the registry with the method's name: checks the contract, then takes the name."""
        missing = [m for m in ("Params", "Module", "build_net") if not hasattr(cls, m)]
        if missing:
            raise RegistryError(f"method '{name}' does not define {', '.join(missing)} (see visec.engine.method)")
        if (getattr(cls.Module, "adapts_at_test", None) not in (None, BinaryDetector.adapts_at_test)
                and not hasattr(cls.Module, "adapted_probabilities")):
            raise RegistryError(f"method '{name}': {cls.Module.__name__} adapts at test time but defines no "
                                f"adapted_probabilities")
        cls.name = name

    # -- the network and its module ------------------------------------------------------------
    @classmethod
    def build(cls, params: Any, train_cfg: TrainConfig) -> MethodModule:
        """The method's LightningModule around a new network."""
        return cls.Module(cls.build_net(params), train_cfg, params)

    @classmethod
    def card_name(cls, params: Any) -> str:
        """The model name on result cards for these parameters (variants named, e.g. ``acmf+fac``)."""
        return cls.name

    @classmethod
    def build_datamodule(cls, data_cfg: DataConfig, train_cfg: TrainConfig, params: Any) -> L.LightningDataModule:
        from visec.data.datamodule import FaceDataModule

        return FaceDataModule(data_cfg, train_cfg)

    # -- what ships with it --------------------------------------------------------------------
    @classmethod
    def default_config(cls) -> Path:
        """The shipped default config (``configs/<config_name>/default.yaml``)."""
        return config_dir() / (cls.config_name or cls.name) / "default.yaml"

    @classmethod
    def readme(cls) -> Path:
        """The README of the method's folder."""
        return Path(inspect.getfile(cls)).resolve().parent / "README.md"


def with_backbone(method: str, backbone: str, weights: Any, default_backbone: str | None = None) -> str:
    """A card name that says the backbone when it is not the method's own and how it started:
    ``xception``; ``classifier/mobilenetv2+imagenet``; ``acmf/resnet50+pretrained``."""
    name = method if backbone == (default_backbone or method) else f"{method}/{backbone}"
    if weights:
        name += "+imagenet" if str(weights) == "imagenet" else "+pretrained"
    return name


def check_backbones(*names: str) -> None:
    """Fail early, with "did you mean", on an unknown backbone name."""
    from visec.registry import BACKBONES

    for n in names:
        BACKBONES.get(n)


def method_of(name: str) -> type[Method]:
    """The registered :class:`Method` class of ``name`` ("did you mean" on a typo)."""
    from visec.registry import METHODS

    cls = METHODS.get(name).obj
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise ConfigError(f"method '{name}' is registered without the Method contract ({cls!r})")
    return cls
