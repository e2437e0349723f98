"""The plain baselines: ``classifier`` (any backbone + linear head) and ``xception`` (FaceForensics++).

The network is the shared :class:`visec.models.classifier.BinaryClassifier` (ACMF's body too)."""

from visec.methods.classifier.lightning_model import (Classifier, ClassifierMethod, ClassifierParams,
                                                      XceptionMethod, XceptionParams)

__all__ = ["Classifier", "ClassifierMethod", "ClassifierParams", "XceptionMethod", "XceptionParams"]
