"""Attacks: one base class (:mod:`visec.attacks.base`), registered by name in ``ATTACKS``.

* gradient (white-box): ``fgsm``, ``pgd``, ``cw_linf``, ``cw_l2``, ``apgd``/``apgd_ce``/``apgd_dlr``/
  ``apgd_t`` and the ``autoattack`` ensemble;
* transfer presets: ``mifgsm``, ``di_fgsm``, ``ti_fgsm``, ``di_ti_mifgsm``, and ``transfer``
  (craft on a surrogate model);
* black-box: ``square``;
* evaluation: :func:`robust_evaluate` -> :class:`RobustReport` (clean / per-attack / worst-case
  accuracy with intervals, norms, timings, gradient-masking flags) and :func:`standard_suite`.
"""

from visec.attacks.base import (Attack, AttackError, cross_entropy, default_logits, lp_norm, margin_loss,
                                num_classes, predict_labels, project)
from visec.attacks.pgd import FGSM, PGD
from visec.attacks.mifgsm import DIFGSM, DITIMIFGSM, TIFGSM, TransferFGSM
from visec.attacks.cw import CWL2, CWLinf
from visec.attacks.autoattack import APGD, APGDCE, APGDDLR, APGDT, AutoAttack, dlr_loss, dlr_targeted_loss
from visec.attacks.blackbox import Square, Transfer
from visec.attacks.suite import SUITE_NAMES, Suite, attack_params, build_attack, standard_suite
from visec.attacks.report import AttackOutcome, MaskingFlag, RobustReport, wilson_interval, worst_case
from visec.attacks.masking import detect_gradient_masking
from visec.attacks.evaluate import robust_evaluate

__all__ = ["Attack", "AttackError", "cross_entropy", "margin_loss", "dlr_loss", "dlr_targeted_loss",
           "default_logits", "predict_labels", "num_classes", "project", "lp_norm",
           "PGD", "FGSM", "TransferFGSM", "DIFGSM", "TIFGSM", "DITIMIFGSM", "CWL2", "CWLinf",
           "APGD", "APGDCE", "APGDDLR", "APGDT", "AutoAttack", "Square", "Transfer",
           "robust_evaluate", "RobustReport", "AttackOutcome", "MaskingFlag", "standard_suite",
           "build_attack", "detect_gradient_masking", "worst_case", "wilson_interval", "Suite", "SUITE_NAMES",
           "attack_params"]
