"""Mechanism guard for how ANCRA builds and uses its negatives (README "Negatives", notes §3.3).

* The negative's own forward pass uses the negative's **own true label** for its reverse-attention
  masks (not the anchor's label).
* The negative is pushed by targeted PGD **toward the anchor's label** (a hard negative).
* The asymmetric negative contrast (alpha = 1) pushes the **negative** away from the anchor's top
  class: the anchor side is a stop-gradient, and descending the loss lowers the negative's
  probability of that class.

These tests fail if the negative's mask uses the anchor's label, if the targeted push goes toward
the negative's own label (or away from the anchor's), or if the contrast's direction is flipped
(sign, or anchor and negative swapped).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import visec.methods.ancra as ancra
from visec.config import TrainConfig
from visec.methods.ancra import AncraParams

ZETA, LAMBDA_CR = 3.0, 2.0


def _trainer(**kw):
    torch.manual_seed(0)
    params = AncraParams(arch="small_ra_cnn", arch_kwargs={"width": 4}, num_classes=3, zeta=ZETA,
                         lambda_cr=LAMBDA_CR, anc_alpha=1.0, **kw)
    cfg = TrainConfig(seed=0)
    module = ancra.AncraMethod.build(params, cfg)
    module.net.train()
    return module


def _batch(seed: int = 0):
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    return x, torch.tensor([0, 1, 2, 0, 1, 2])


def _record_forward_all(net) -> list:
    calls = []
    forward_all = net.forward_all

    def recording(x, labels=None, soft_tau=None):
        out = forward_all(x, labels, soft_tau)
        calls.append({"x": x, "labels": labels, "out": out})
        return out

    net.forward_all = recording
    return calls


def _rows_of(x_neg: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Index of the row of ``x`` nearest to each row of ``x_neg`` (L-inf)."""
    d = (x_neg[:, None] - x[None]).flatten(2).abs().amax(2)
    return d.argmin(1)


def _hand_anc(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """alpha = 1: ``mean_i 1[argmax p_i = argmax q_i] sqrt(max p_i * max q_i)`` with ``p`` frozen."""
    p = p_logits.detach().softmax(1)
    q = q_logits.softmax(1)
    same = (p.argmax(1) == q.argmax(1)).to(q.dtype)
    return (same * torch.sqrt(p.amax(1) * q.amax(1))).mean()


def _hand_anc_total(anchor, negative) -> torch.Tensor:
    (o, aux), (on, auxn) = anchor, negative
    return _hand_anc(o, on) + LAMBDA_CR * torch.stack([_hand_anc(a, b) for a, b in zip(aux, auxn)]).mean()


def test_the_negatives_reverse_attention_mask_uses_its_own_label(one_torch_thread):
    module = _trainer(procedure="standard", negatives="random")  # unperturbed negatives: x_neg = x[idx]
    x, y = _batch()
    calls = _record_forward_all(module.net)
    terms = module.losses({"image": x, "label": y})
    neg_calls = [c for c in calls if c["x"] is not x]
    nat_calls = [c for c in calls if c["x"] is x]
    assert len(neg_calls) == 1 and len(nat_calls) == 1
    neg = neg_calls[0]
    idx = _rows_of(neg["x"], x)
    assert torch.equal(neg["x"], x[idx])
    assert (y[idx] != y).all()  # every negative is of another class than its anchor
    # the mask label of the negative's pass: the negative's own true label, never the anchor's
    assert neg["labels"] is not None
    assert torch.equal(neg["labels"], y[idx]), (neg["labels"], y[idx], y)
    assert torch.equal(nat_calls[0]["labels"], y)

    # known answer of the ANC term from that pass (recomputed here with the negative's own label);
    # masks from the anchor's label would give another value
    plain = type(module.net).forward_all.__get__(module.net)
    with torch.no_grad():
        expected = ZETA * _hand_anc_total(nat_calls[0]["out"], plain(x[idx], y[idx]))
        wrong = ZETA * _hand_anc_total(nat_calls[0]["out"], plain(x[idx], y))
    assert abs(terms["anc"].item() - expected.item()) < 1e-6
    assert abs(wrong.item() - expected.item()) > 1e-3


def test_the_contrast_pushes_the_negative_away_from_the_anchors_class(one_torch_thread):
    module = _trainer(procedure="standard", negatives="random")
    x, y = _batch(1)
    calls = _record_forward_all(module.net)
    terms = module.losses({"image": x, "label": y})
    nat = next(c for c in calls if c["x"] is x)["out"]
    neg = next(c for c in calls if c["x"] is not x)["out"]
    p, q = nat[0].detach().softmax(1), neg[0].detach().softmax(1)
    shared = p.argmax(1) == q.argmax(1)
    assert shared.any()  # some pairs share their top class: the contrast is active there

    # value: zeta * (L_ANC(o) + lambda_cr * mean_k L_ANC(a_k)), positive
    expected = ZETA * _hand_anc_total(nat, neg)
    assert abs(terms["anc"].item() - expected.item()) < 1e-6 and terms["anc"].item() > 0

    # gradients: none to the (stop-gradient) anchor, the hand formula's to the negative
    anc_grads = torch.autograd.grad(terms["anc"], [nat[0], *nat[1], neg[0], *neg[1]], retain_graph=True,
                                    allow_unused=True)
    k = 1 + len(nat[1])
    assert all(g is None or bool((g == 0).all()) for g in anc_grads[:k])
    hand_grads = torch.autograd.grad(expected, [neg[0], *neg[1]])
    for got, want in zip(anc_grads[k:], hand_grads):
        assert got is not None and torch.allclose(got, want, atol=1e-6)
    g_neg = anc_grads[k]
    assert g_neg[shared].abs().sum() > 0 and bool((g_neg[~shared] == 0).all())

    # direction: a descent step on the negative's logits lowers its probability of the shared class
    c = p.argmax(1)
    before = q.gather(1, c[:, None]).squeeze(1)
    after = (neg[0].detach() - 0.5 * g_neg).softmax(1).gather(1, c[:, None]).squeeze(1)
    assert (after[shared] < before[shared]).all()


class _RecordingAttack:
    """Stands in for the negative attack: records what it is asked, then runs the real attack."""

    def __init__(self, attack) -> None:
        self.attack, self.calls = attack, []

    def __getattr__(self, name):
        return getattr(self.attack, name)

    def __call__(self, x, target):
        self.calls.append(target.clone())
        return self.attack(x, target)


def test_the_negative_is_pushed_toward_the_anchors_label(one_torch_thread):
    module = _trainer(procedure="standard", negatives="random_adv", eps=0.3, alpha=0.05, steps=5)
    with torch.no_grad():  # a sharper random classifier, so the push shows clearly in the losses
        module.net.fc.weight.mul_(5)
    recorder = _RecordingAttack(module.negative_attack)
    module.negative_attack = recorder
    x, y = _batch(2)
    x_neg, y_neg = module.negatives(x, y)
    idx = _rows_of(x_neg, x)
    assert (x_neg - x[idx]).abs().max() <= 0.3 + 1e-6 and not torch.equal(x_neg, x[idx])
    assert torch.equal(y_neg, y[idx]) and (y_neg != y).all()
    # a targeted attack whose target is each anchor's label
    assert recorder.attack.targeted is True
    assert len(recorder.calls) == 1 and torch.equal(recorder.calls[0], y)

    def ce_tot(images, target):  # the attack's objective: eval mode, predicted RA masks
        module.net.eval()
        with torch.no_grad():
            o, aux = module.net.forward_all(images)
        module.net.train()
        return F.cross_entropy(o, target, reduction="none") + LAMBDA_CR * torch.stack(
            [F.cross_entropy(a, target, reduction="none") for a in aux]).mean(0)

    # toward the anchor's label y_i: its loss falls for every negative ...
    to_anchor = ce_tot(x_neg, y) - ce_tot(x[idx], y)
    to_own = ce_tot(x_neg, y_neg) - ce_tot(x[idx], y_neg)
    assert (to_anchor < 0).all(), to_anchor
    # ... by more, on average, than the loss of the negative's own label (not pushed toward it)
    assert to_anchor.mean() < to_own.mean() - 5e-3, (to_anchor, to_own)
