"""ANCRA's loss terms and the base adversarial-training objectives (PGD-AT, TRADES, MART).

Notation: ``o`` final logits, ``a_k`` auxiliary logits of RA block ``k`` (K blocks), ``p``/``q``
the softmax of an anchor's / its negative's logits, ``sg`` stop-gradient.

* ANC kernel: ``s(p, q) = 1[argmax p = argmax q] * sqrt(max p * max q)`` (in [0, 1]).
* ``L_ANC(p, q) = mean_i [alpha * s(sg p_i, q_i) + (1 - alpha) * s(sg q_i, p_i)]``; alpha = 1 (the
  default) freezes the natural anchor and pushes only the negative away from the anchor's class.
* Every "total" adds the auxiliary heads: ``T(o) + lambda_cr * mean_k T(a_k)``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from visec.errors import VisecError

Output = tuple[torch.Tensor, Sequence[torch.Tensor]]


class NegativeSamplingError(VisecError, ValueError):
    """A batch cannot provide negatives (fewer than two classes in it)."""


# -- ANC ------------------------------------------------------------------------------------------------
def anc_similarity(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Per-pair ANC kernel of two probability batches ``(B, C)``: shared top class -> sqrt(p_c q_c)."""
    p_max, p_arg = p.max(dim=1)
    q_max, q_arg = q.max(dim=1)
    same = (p_arg == q_arg).to(p.dtype)
    return same * torch.sqrt(p_max * q_max)


def anc_loss(p_logits: torch.Tensor, q_logits: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Asymmetric negative contrast of anchors' and negatives' logits, averaged over the batch."""
    p, q = p_logits.softmax(dim=1), q_logits.softmax(dim=1)
    loss = p.new_zeros(p.shape[0])
    if alpha != 0:
        loss = loss + alpha * anc_similarity(p.detach(), q)
    if alpha != 1:
        loss = loss + (1 - alpha) * anc_similarity(q.detach(), p)
    return loss.mean()


def anc_total(anchor: Output, negative: Output, alpha: float = 1.0, lambda_cr: float = 2.0) -> torch.Tensor:
    """``L_ANC(o) + lambda_cr * mean_k L_ANC(a_k)`` for anchor and negative outputs."""
    return _with_aux(lambda u, v: anc_loss(u, v, alpha), anchor, negative, lambda_cr)


# -- negatives -----------------------------------------------------------------------------------------
def negative_indices(labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """For every anchor, the index of a random sample of a random *other* class present in the batch.

    Class first (uniform over the batch's classes other than the anchor's), then a sample of that
    class (uniform). Works for any number of classes; needs at least two in the batch.
    """
    y = labels.detach().cpu().long()
    classes, inverse, counts = torch.unique(y, return_inverse=True, return_counts=True)
    n_cls = len(classes)
    if n_cls < 2:
        only = f" (only class {int(classes[0])})" if n_cls else ""
        raise NegativeSamplingError(f"negative sampling needs at least two classes in a batch{only}; "
                                    f"use a larger data.batch_size")
    r = torch.randint(0, n_cls - 1, (len(y),), generator=generator)
    neg_cls = r + (r >= inverse).long()  # skip the anchor's own class
    order = torch.argsort(inverse, stable=True)  # samples grouped by class
    starts = torch.cumsum(counts, 0) - counts
    u = torch.rand(len(y), generator=generator)
    pick = starts[neg_cls] + (u * counts[neg_cls]).long().clamp_max(counts[neg_cls] - 1)
    return order[pick].to(labels.device)


# -- helpers ---------------------------------------------------------------------------------------------
def _with_aux(term, first: Output, second: Output | None, lambda_cr: float, *extra) -> torch.Tensor:
    o1, aux1 = first
    if second is None:
        total = term(o1, *extra)
        if aux1 and lambda_cr:
            total = total + lambda_cr * torch.stack([term(a, *extra) for a in aux1]).mean()
        return total
    o2, aux2 = second
    total = term(o1, o2, *extra)
    if aux1 and lambda_cr:
        total = total + lambda_cr * torch.stack([term(a, b, *extra) for a, b in zip(aux1, aux2)]).mean()
    return total


def aux_ce_per_sample(lambda_cr: float = 2.0):
    """``loss_fn(output, y)`` for attacks: per-sample ``CE(o, y) + lambda_cr * mean_k CE(a_k, y)``."""

    def loss_fn(output, y: torch.Tensor) -> torch.Tensor:
        if not isinstance(output, (tuple, list)):
            return F.cross_entropy(output, y, reduction="none")
        o, aux = output
        loss = F.cross_entropy(o, y, reduction="none")
        if aux and lambda_cr:
            loss = loss + lambda_cr * torch.stack([F.cross_entropy(a, y, reduction="none") for a in aux]).mean(0)
        return loss

    loss_fn.__name__ = f"ce+{lambda_cr:g}*aux_ce"
    return loss_fn


def kl_per_sample(nat_logits: torch.Tensor, adv_logits: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(nat) || softmax(adv))`` per sample (summed over classes)."""
    return F.kl_div(F.log_softmax(adv_logits, dim=1), F.log_softmax(nat_logits, dim=1),
                    reduction="none", log_target=True).sum(dim=1)


def kl_to_clean_per_sample(nat_logits: torch.Tensor, lambda_cr: float = 0.0,
                           nat_aux: Sequence[torch.Tensor] = ()):
    """``loss_fn(output, y)`` for TRADES' KL attack: KL from the (fixed) clean prediction; ``y`` unused."""
    nat_logits = nat_logits.detach()
    nat_aux = [a.detach() for a in nat_aux]

    def loss_fn(output, y: torch.Tensor) -> torch.Tensor:
        o, aux = output if isinstance(output, (tuple, list)) else (output, [])
        loss = kl_per_sample(nat_logits, o)
        if aux and nat_aux and lambda_cr:
            loss = loss + lambda_cr * torch.stack([kl_per_sample(n, a) for n, a in zip(nat_aux, aux)]).mean(0)
        return loss

    loss_fn.__name__ = "kl_to_clean"
    return loss_fn


# -- base objectives ---------------------------------------------------------------------------------------
def ce_total(output: Output, y: torch.Tensor, lambda_cr: float = 2.0) -> torch.Tensor:
    """``CE(o, y) + lambda_cr * mean_k CE(a_k, y)`` (batch means)."""
    return _with_aux(lambda z, t: F.cross_entropy(z, t), output, None, lambda_cr, y)


def trades_kl(nat_logits: torch.Tensor, adv_logits: torch.Tensor) -> torch.Tensor:
    """TRADES' robust term: ``KL(p(x) || p(x_adv))`` summed over classes, divided by the batch size.

    The natural side is *not* detached (as in TRADES), so the term also moves the clean prediction.
    """
    return kl_per_sample(nat_logits, adv_logits).sum() / nat_logits.shape[0]


def trades_kl_total(nat: Output, adv: Output, lambda_cr: float = 2.0) -> torch.Tensor:
    return _with_aux(trades_kl, nat, adv, lambda_cr)


def mart_loss(nat_logits: torch.Tensor, adv_logits: torch.Tensor, y: torch.Tensor,
              lam: float = 6.0) -> torch.Tensor:
    """MART (Wang et al., 2020): boosted CE on ``x_adv`` + ``lam`` * KL weighted by ``1 - p_y(x)``.

    ``BCE = -log p_y(x_adv) - log(1 - max_{k != y} p_k(x_adv))``;
    ``robust = mean_i KL(p(x_i) || p(x_adv_i)) * (1 - p_y(x_i))``.
    """
    p_adv = adv_logits.softmax(dim=1)
    other = p_adv.masked_fill(F.one_hot(y, p_adv.shape[1]).bool(), float("-inf")).amax(dim=1)
    bce = F.cross_entropy(adv_logits, y) - torch.log((1.0 - other).clamp_min(1e-12)).mean()
    p_nat_true = nat_logits.softmax(dim=1).gather(1, y[:, None]).squeeze(1)
    robust = (kl_per_sample(nat_logits, adv_logits) * (1.0 - p_nat_true)).mean()
    return bce + lam * robust


def mart_total(nat: Output, adv: Output, y: torch.Tensor, lam: float = 6.0, lambda_cr: float = 2.0) -> torch.Tensor:
    return _with_aux(lambda u, v: mart_loss(u, v, y, lam), nat, adv, lambda_cr)
