"""DeepFidelity: SSAAFormer + quality-aware fidelity scoring (arXiv 2312.04961)."""

from visec.methods.deepfidelity.lightning_model import (DeepFidelity, DeepFidelityMethod, DeepFidelityParams)
from visec.methods.deepfidelity.quality import (QualityMeasure, SharpnessJPEGQuality, build_quality,
                                                fidelity_targets)
from visec.methods.deepfidelity.torch_model import (CBlock, DeepFidelityNet, RBFSVR, SABlock, SSAAFormer,
                                                    SymmetricFusion)

__all__ = ["CBlock", "DeepFidelity", "DeepFidelityNet", "DeepFidelityParams", "QualityMeasure", "RBFSVR",
           "SABlock", "SSAAFormer", "SharpnessJPEGQuality", "SymmetricFusion", "DeepFidelityMethod",
           "build_quality", "fidelity_targets"]
