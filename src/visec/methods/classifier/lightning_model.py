"""Training logic of the plain classifier: binary cross-entropy on the backbone's logit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from visec.engine.module import BinaryDetector
from visec.methods.classifier.torch_model import BinaryClassifier
from visec.registry import METHODS


class ClassifierParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backbone: str = "tiny_cnn"  # any name from `visec list backbones`
    weights: Path | None = None  # local backbone weights (safetensors or weights_only torch file)
    dropout: float = Field(0.0, ge=0, lt=1)
    normalize: bool = True  # ImageNet mean/std inside the model
    backbone_kwargs: dict[str, Any] = Field(default_factory=dict)


class XceptionParams(ClassifierParams):
    """The FaceForensics++ baseline's defaults: Xception with dropout 0.5 before the head."""

    backbone: str = "xception"
    dropout: float = Field(0.5, ge=0, lt=1)


class Classifier(BinaryDetector):
    """Backbone + linear head trained with binary cross-entropy (the baseline of every paper)."""


def card_name(method: str, params: ClassifierParams, default_backbone: str | None = None) -> str:
    """``xception``; ``classifier/mobilenetv2+imagenet`` (the backbone when it is not the method's own,
    by default the backbone of the method's name, and whether it started from pretrained weights)."""
    name = method if params.backbone == (default_backbone or method) else f"{method}/{params.backbone}"
    if params.weights:
        name += "+imagenet" if str(params.weights) == "imagenet" else "+pretrained"
    return name


def _build(method: str):
    def build(params: ClassifierParams, train_cfg) -> Classifier:
        from visec.registry import BACKBONES

        BACKBONES.get(params.backbone)  # fail early with "did you mean"
        net = BinaryClassifier(params.backbone, str(params.weights) if params.weights else None,
                               params.dropout, params.normalize, **params.backbone_kwargs)
        module = Classifier(net, train_cfg)
        module.card_method = card_name(method, params)
        return module

    build.__name__ = f"build_{method}"
    return build


build_classifier = METHODS.register(
    "classifier", params=ClassifierParams, family="forgery detection",
    summary="backbone + linear head, BCE; the plain baseline (tiny_cnn, xception, mobilenetv2, ...)",
)(_build("classifier"))
build_xception = METHODS.register(
    "xception", params=XceptionParams, family="forgery detection",
    summary="Xception baseline of FaceForensics++ (timm legacy_xception, dropout 0.5, linear head, BCE)",
)(_build("xception"))
