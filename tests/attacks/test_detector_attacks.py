"""Attacks on binary detectors (visec.attacks.detector): specs, directions, budgets, thresholds,
transfer without the target's gradients, and the cross-card masking checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from visec.attacks import AttackError
from visec.attacks.detector import (DetectorAttacker, DetectorAttackSpec, attack_rate, cross_card_flags,
                                    format_budget, logit_offset)


class LinearDetector(nn.Module):
    """A seeded linear detector on 3x8x8 faces: logit = w . (x - 0.5) + b."""

    def __init__(self, seed: int = 0, bias: float = 0.0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(3 * 8 * 8, generator=g) / 8)
        self.b = nn.Parameter(torch.tensor(bias))
        self.calls: list[bool] = []  # per call: did the input carry a gradient?

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(torch.is_grad_enabled() and x.requires_grad)
        return (x - 0.5).flatten(1) @ self.w + self.b


def _faces(n: int = 16, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 8, 8, generator=g), (torch.arange(n) % 2).float()


def test_spec_text_and_protocol_labels():
    assert DetectorAttackSpec.parse("pgd").label() == "pgd-linf-4/255"
    assert DetectorAttackSpec.parse("pgd,eps=8/255,steps=20").label() == "pgd-linf-8/255"
    assert DetectorAttackSpec.parse("pgd, norm=l2, eps=0.5").label() == "pgd-l2-0.5"
    assert DetectorAttackSpec.parse("pgd,direction=frame").label() == "pgd-linf-4/255+frame"
    spec = DetectorAttackSpec.parse("transfer,source=runs/x,eps=2/255")
    assert spec.label("xception") == "transfer@xception-linf-2/255"
    assert format_budget(1 / 255) == "1/255" and format_budget(0.03) == "0.03"
    assert DetectorAttackSpec.parse("apgd_ce,eps=0.01").eps == pytest.approx(0.01)


@pytest.mark.parametrize("text, words", [
    ("apgd_dlr", "needs >= 3 classes"),
    ("square,norm=l2", "Linf only"),
    ("fgsm,norm=l2", "Linf only"),
    ("transfer", "needs source"),
    ("pgd,source=runs/x", "takes no source"),
    ("pgd,n_queries=10", "takes no n_queries"),
    ("pgd,eps=-1", "eps"),
    ("pgd,eps=8/0", "eps"),
    ("pgd,steps=0", "steps"),
    ("pgd,direction=sideways", "direction"),
    ("pgd,colour=red", "colour"),
    ("pgd,eps", "not key=value"),
    ("fog", "attacks: pgd"),
])
def test_bad_specs_are_one_line_errors(text, words):
    with pytest.raises(AttackError, match=words) as err:
        DetectorAttackSpec.parse(text)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["pgd", "apgd_ce", "square", "fgsm"])
def test_evasion_pushes_fakes_only_and_stays_in_budget(name):
    torch.manual_seed(0)
    model = LinearDetector()
    x, y = _faces()
    spec = DetectorAttackSpec.parse(f"{name},eps=4/255" + (",n_queries=50" if name == "square" else ""))
    attacker = DetectorAttacker(spec, model)
    x_adv = attacker(x, y)
    real, fake = y == 0, y == 1
    assert torch.equal(x_adv[real], x[real])  # reals untouched in the evasion protocol
    assert (x_adv[fake] - x[fake]).abs().max() <= 4 / 255 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        assert torch.sigmoid(model(x_adv[fake])).mean() < torch.sigmoid(model(x[fake])).mean() - 0.01
    assert attacker.n_attacked == int(fake.sum())


def test_framing_pushes_reals_towards_fake_and_leaves_fakes():
    model = LinearDetector()
    x, y = _faces()
    x_adv = DetectorAttacker(DetectorAttackSpec.parse("pgd,eps=4/255,direction=frame"), model)(x, y)
    assert torch.equal(x_adv[y == 1], x[y == 1])
    with torch.no_grad():
        assert model(x_adv[y == 0]).mean() > model(x[y == 0]).mean() + 0.05


def test_l2_budget_is_respected():
    model = LinearDetector()
    x, y = _faces()
    x_adv = DetectorAttacker(DetectorAttackSpec.parse("pgd,norm=l2,eps=0.25"), model)(x, y)
    assert (x_adv - x).flatten(1).norm(dim=1).max() <= 0.25 + 1e-5


def test_success_is_counted_at_the_runs_threshold():
    """Known answer: with eps = 0 nothing moves, so the evasion rate is the fraction of fakes whose
    probability is already below the threshold; the rate depends on that threshold."""
    model = LinearDetector()
    x, y = _faces(40)
    with torch.no_grad():
        probs = torch.sigmoid(model(x))
    t = float(probs[y == 1].median())
    attacker = DetectorAttacker(DetectorAttackSpec.parse("pgd,eps=0"), model, t, logit_offset(t))
    x_adv = attacker(x, y)
    assert torch.equal(x_adv, x)
    block = attacker.summary(probs.numpy(), y.numpy())
    expected = float((probs[y == 1] < t).float().mean())
    assert block["evasion_rate"]["value"] == pytest.approx(expected)
    assert block["threshold"] == t and block["n_attacked"] == 20
    # the attack's own notion of success uses the same threshold: offset logit(t) on the logit
    flipped = torch.cat(attacker._parts["flipped"])
    assert flipped.float().mean() == pytest.approx(expected)


def test_threshold_offset_moves_the_boundary_the_attack_aims_at():
    """Square stops a face as soon as it crosses the boundary; with the run's threshold moved low,
    fewer fakes are already across it before any query."""
    model = LinearDetector(bias=0.0)
    x, y = _faces(40)
    low = DetectorAttacker(DetectorAttackSpec.parse("pgd,eps=0"), model, 0.05, logit_offset(0.05))
    high = DetectorAttacker(DetectorAttackSpec.parse("pgd,eps=0"), model, 0.95, logit_offset(0.95))
    low(x, y), high(x, y)
    assert torch.cat(low._parts["flipped"]).sum() < torch.cat(high._parts["flipped"]).sum()


def test_transfer_never_touches_the_targets_gradients():
    target, surrogate = LinearDetector(seed=0), LinearDetector(seed=3)
    x, y = _faces()
    spec = DetectorAttackSpec.parse("transfer,source=somewhere,eps=4/255")
    attacker = DetectorAttacker(spec, target, surrogate=surrogate, source_name="sur")
    target.calls.clear()
    x_adv = attacker(x, y)
    assert target.calls and not any(target.calls)  # scored, never differentiated
    assert any(surrogate.calls)  # the crafting ran on the surrogate's gradients
    assert target.w.grad is None and target.b.grad is None
    assert not torch.equal(x_adv[y == 1], x[y == 1])
    assert attacker.label == "transfer@sur-linf-4/255"
    block = attacker.summary(torch.sigmoid(target(x_adv)).detach().numpy(), y.numpy())
    assert block["masking_checks"] == ["transfer"]  # no white-box reference on the target


def test_white_box_cards_carry_the_fgsm_check():
    model = LinearDetector()
    x, y = _faces(32)
    attacker = DetectorAttacker(DetectorAttackSpec.parse("pgd,eps=2/255"), model)
    x_adv = attacker(x, y)
    block = attacker.summary(torch.sigmoid(model(x_adv)).detach().numpy(), y.numpy())
    assert block["masking_checks"] == ["fgsm-reference", "pgd"]
    assert block["gradient_masking"] is False  # a linear model: PGD at least as strong as FGSM
    assert 0 <= block["fgsm_flip_rate"]["value"] <= 1


def _block(attack, eps, rate, norm="Linf"):
    return {"attack": attack, "norm": norm, "eps": eps, "direction": "evade", "evasion_rate": {"value": rate}}


def test_cross_card_flags_known_answers():
    clean = {"a": _block("pgd", 1 / 255, 0.4), "b": _block("pgd", 4 / 255, 0.8),
             "c": _block("transfer", 4 / 255, 0.5), "d": _block("square", 4 / 255, 0.79)}
    assert cross_card_flags(clean) == []
    flags = cross_card_flags({**clean, "c": _block("transfer", 4 / 255, 0.9)})
    assert len(flags) == 1 and flags[0].startswith("transfer>white-box")
    flags = cross_card_flags({**clean, "a": _block("pgd", 1 / 255, 0.9)})
    assert len(flags) == 1 and flags[0].startswith("larger-eps")
    # a black-box attack with a larger budget than every white-box card has nothing to compare with
    assert cross_card_flags({"s": _block("square", 8 / 255, 1.0), "p": _block("pgd", 4 / 255, 0.1)}) == []
    assert attack_rate(_block("pgd", 0.1, 0.25)) == 0.25
