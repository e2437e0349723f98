from visec.methods.classifier.lightning_model import Classifier, ClassifierParams, build_classifier

__all__ = ["Classifier", "ClassifierParams", "build_classifier"]
