"""Gradient-masking checks in the spirit of Carlini et al.'s checklist (see
:func:`detect_gradient_masking`)."""

from __future__ import annotations

import math

import torch

from visec.attacks.report import MaskingFlag, RobustReport

def detect_gradient_masking(report: RobustReport, tol: float | None = None) -> list[MaskingFlag]:
    """Flags (see the module docstring); differences must exceed ``tol`` (a fraction of samples,
    default ``report.masking_tol``) to count. Only clean-correct samples enter the rates."""
    tol = report.masking_tol if tol is None else tol
    cc = report.clean_correct.bool()
    n_cc = int(cc.sum())
    if n_cc == 0:
        return []
    outs = report.outcomes
    rate = {k: int((o.success & cc).sum()) / n_cc for k, o in outs.items()}
    acc = {k: report.acc(k) for k in outs}
    flags: list[MaskingFlag] = []
    white = {k: o for k, o in outs.items() if o.access == "white-box"}

    def same(a: float, b: float) -> bool:
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)

    for k, o in outs.items():
        if o.access == "white-box" or o.norm == "unbounded":
            continue
        peers = [w for w, wo in white.items() if wo.norm == o.norm and wo.eps >= o.eps * (1 - 1e-6)]
        if not peers:
            continue
        union = torch.zeros_like(cc)
        for w in peers:
            union = union | outs[w].success.bool()
        r_white = int((union & cc).sum()) / n_cc
        if rate[k] > r_white + tol:
            flags.append(MaskingFlag(f"{o.access}>white-box", (k, *peers),
                                     f"{o.access} attack '{k}' broke {rate[k]:.1%} of clean-correct samples, "
                                     f"white-box attacks ({', '.join(peers)}) with the same budget together "
                                     f"only {r_white:.1%}"))
    names = list(white)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            oa, ob = white[a], white[b]
            if oa.attack != ob.attack or oa.norm != ob.norm or oa.loss != ob.loss or oa.norm == "unbounded":
                continue
            if same(oa.eps, ob.eps) and oa.steps is not None and ob.steps is not None and oa.steps != ob.steps:
                few, many = (a, b) if oa.steps < ob.steps else (b, a)
                if acc[many] > acc[few] + tol:
                    flags.append(MaskingFlag("more-steps", (few, many),
                                             f"accuracy rises with more steps: '{few}' ({white[few].steps} steps) "
                                             f"{acc[few]:.1%} < '{many}' ({white[many].steps} steps) {acc[many]:.1%}"))
            if oa.steps == ob.steps and not same(oa.eps, ob.eps):
                small, large = (a, b) if oa.eps < ob.eps else (b, a)
                if acc[large] > acc[small] + tol:
                    flags.append(MaskingFlag("larger-eps", (small, large),
                                             f"accuracy rises with a larger eps: '{small}' (eps {white[small].eps:.4g}) "
                                             f"{acc[small]:.1%} < '{large}' (eps {white[large].eps:.4g}) {acc[large]:.1%}"))
    for f, of in white.items():
        if of.attack != "fgsm":
            continue
        for p, op in white.items():
            if p == f or op.norm != of.norm or not (op.steps or 0) > 1 or op.eps < of.eps * (1 - 1e-6):
                continue
            if op.alpha is not None and op.alpha * op.steps < of.eps * (1 - 1e-6):
                continue  # its steps cannot even reach FGSM's perturbation size
            if acc[f] + tol < acc[p]:
                flags.append(MaskingFlag("fgsm>iterative", (f, p),
                                         f"single-step '{f}' ({acc[f]:.1%} accuracy) is stronger than iterative "
                                         f"'{p}' ({acc[p]:.1%}) with at least the same budget"))
    return flags
