"""Attacks: one base class (:mod:`visec.attacks.base`), registered by name in ``ATTACKS``."""

from visec.attacks.base import Attack, AttackError, cross_entropy, margin_loss
from visec.attacks.pgd import FGSM, PGD

__all__ = ["Attack", "AttackError", "cross_entropy", "margin_loss", "PGD", "FGSM"]
