"""ACMF: masked frequency forgery representation + forgery-attention consistency (arXiv 2307.11438)."""

from visec.methods.acmf.lightning_model import ACMF, ACMFMethod, ACMFParams
from visec.methods.acmf.torch_model import (ACMFNet, ForgeryAttentionConsistency, MaskedFrequency,
                                            attention_consistency, default_half_width, flood,
                                            masked_frequency)

__all__ = ["ACMF", "ACMFNet", "ACMFParams", "ForgeryAttentionConsistency", "MaskedFrequency",
           "attention_consistency", "ACMFMethod", "default_half_width", "flood",
           "masked_frequency"]
