"""ANCRA and the adversarial-training baselines (PGD-AT, TRADES, MART) as engine methods.

Importing this package registers the methods ``adversarial_training`` and ``ancra``. See
``README.md`` in this folder for the paper, the equations and what differs from the official code.
"""

from visec.methods.ancra.lightning_model import (AdversarialTrainer, AdversarialTrainingMethod,
                                                 AdversarialTrainingParams, AncraMethod, AncraParams)
from visec.methods.ancra.losses import (anc_loss, anc_similarity, anc_total, ce_total, mart_loss,
                                        negative_indices, trades_kl)
from visec.methods.ancra.torch_model import (ARCHS, RANet, ResNet18RA, SmallRACNN, WRNRA, build_net,
                                             reverse_attention)

__all__ = ["AdversarialTrainer", "AdversarialTrainingParams", "AncraParams", "AdversarialTrainingMethod",
           "AncraMethod", "anc_loss", "anc_similarity", "anc_total", "ce_total", "mart_loss",
           "negative_indices", "trades_kl", "ARCHS", "RANet", "ResNet18RA", "SmallRACNN", "WRNRA",
           "build_net", "reverse_attention"]
