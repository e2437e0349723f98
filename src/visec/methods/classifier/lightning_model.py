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


class Classifier(BinaryDetector):
    """Backbone + linear head trained with binary cross-entropy (the baseline of every paper)."""


@METHODS.register("classifier", params=ClassifierParams, family="forgery detection",
                  summary="backbone + linear head, BCE; the plain baseline (tiny_cnn, xception, resnet18, ...)")
def build_classifier(params: ClassifierParams, train_cfg) -> Classifier:
    from visec.registry import BACKBONES

    BACKBONES.get(params.backbone)  # fail early with "did you mean"
    net = BinaryClassifier(params.backbone, str(params.weights) if params.weights else None,
                           params.dropout, params.normalize, **params.backbone_kwargs)
    return Classifier(net, train_cfg)
