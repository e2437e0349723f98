from visec.methods.classifier.lightning_model import (Classifier, ClassifierParams, XceptionParams,
                                                      build_classifier, build_xception)

__all__ = ["Classifier", "ClassifierParams", "XceptionParams", "build_classifier", "build_xception"]
