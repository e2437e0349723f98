"""Training logic of the plain classifier: binary cross-entropy on the backbone's logit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from visec.engine.method import Method, check_backbones, with_backbone
from visec.engine.module import BinaryDetector
from visec.models.classifier import BinaryClassifier
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


@METHODS.register("classifier")
class ClassifierMethod(Method):
    """backbone + linear head, BCE; the plain baseline (tiny_cnn, xception, mobilenetv2, ...)"""

    family = "forgery detection"
    Params = ClassifierParams
    Module = Classifier
    bench = "forgery"
    default_backbone: str | None = None  # the backbone a card name leaves unsaid (default: the name)

    @classmethod
    def build_net(cls, params: ClassifierParams) -> BinaryClassifier:
        check_backbones(params.backbone)
        return BinaryClassifier(params.backbone, str(params.weights) if params.weights else None,
                                params.dropout, params.normalize, **params.backbone_kwargs)

    @classmethod
    def card_name(cls, params: ClassifierParams) -> str:
        """``xception``; ``classifier/mobilenetv2+imagenet`` (the backbone when it is not the
        method's own, and whether it started from pretrained weights)."""
        return with_backbone(cls.name, params.backbone, params.weights, cls.default_backbone)


@METHODS.register("xception")
class XceptionMethod(ClassifierMethod):
    """Xception baseline of FaceForensics++ (timm legacy_xception, dropout 0.5, linear head, BCE)"""

    Params = XceptionParams
    # `visec bench --method xception` also trains the baseline adversarially (train.adversarial):
    # PGD-AT and TRADES at L-inf 4/255, tested clean and attacked beside the plain one
    bench_entrants = (("pgd_at", ("train.adversarial=pgd_at",), False, False),
                      ("trades", ("train.adversarial=trades",), False, False))
