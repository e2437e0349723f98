"""Robust evaluation: worst case, intervals, gradient-masking flags, cards, input handling."""

import math

import pytest
import torch
from conftest import train_tiny
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from visec.attacks import (FGSM, PGD, Attack, AttackError, AttackOutcome, RobustReport, Square, Transfer,
                           build_attack, detect_gradient_masking, robust_evaluate, standard_suite,
                           wilson_interval, worst_case)
from visec.errors import RegistryError
from visec.cards import ResultCard, flatten_metrics
from visec.report.leaderboard import leaderboard


def _outcome(name, success, **kw):
    s = torch.tensor(success, dtype=torch.bool)
    return AttackOutcome(name, s, s.float() * kw.pop("size", 0.1), s.float(), **kw)


# -- known answers -------------------------------------------------------------------------------
def test_worst_case_known_answer():
    cc = torch.tensor([1, 1, 1, 1, 0, 1], dtype=torch.bool)
    succ = {"a": torch.tensor([0, 1, 0, 0, 0, 0]), "b": torch.tensor([0, 0, 1, 0, 1, 0]),
            "c": torch.tensor([0, 1, 0, 0, 0, 0])}
    assert worst_case(cc, succ).tolist() == [True, False, False, True, False, True]
    rep = RobustReport(cc, {k: _outcome(k, v.tolist()) for k, v in succ.items()})
    assert rep.clean_acc == 5 / 6
    assert [rep.acc(k) for k in "abc"] == [4 / 6, 4 / 6, 4 / 6]
    assert rep.worst_case_acc == 3 / 6
    # a minimal-norm (unbounded) attack is reported but kept out of the worst case
    rep.outcomes["cw_l2"] = _outcome("cw_l2", [1, 1, 1, 1, 0, 1], norm="unbounded")
    assert rep.acc("cw_l2") == 0 and rep.worst_case_acc == 3 / 6 and "cw_l2" not in rep.worst_case_attacks
    frame = rep.per_sample()
    assert frame["worst_case_robust"].tolist() == [True, False, False, True, False, True]


def test_wilson_interval_known_answers():
    lo, hi = wilson_interval(5, 10)
    assert math.isclose(lo, 0.2366, abs_tol=1e-4) and math.isclose(hi, 0.7634, abs_tol=1e-4)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0 and math.isclose(hi, 0.2775, abs_tol=1e-4)
    assert wilson_interval(0, 0) is None


def _flags(outcomes, cc=None):
    n = len(next(iter(outcomes.values())).success)
    cc = torch.ones(n, dtype=torch.bool) if cc is None else cc
    return detect_gradient_masking(RobustReport(cc, outcomes))


def test_masking_checks_on_hand_made_results():
    ten = lambda k: [1] * k + [0] * (10 - k)  # noqa: E731  (k of 10 samples broken)
    healthy = {"fgsm": _outcome("fgsm", ten(4), attack="fgsm", eps=0.03, steps=1, alpha=0.03),
               "pgd10": _outcome("pgd10", ten(6), attack="pgd", eps=0.03, steps=10, alpha=0.01),
               "pgd50": _outcome("pgd50", ten(7), attack="pgd", eps=0.03, steps=50, alpha=0.01),
               "pgd10_big": _outcome("pgd10_big", ten(9), attack="pgd", eps=0.06, steps=10, alpha=0.01),
               "square": _outcome("square", ten(5), attack="square", access="black-box", eps=0.03)}
    assert _flags(healthy) == []
    flags = _flags({**healthy, "pgd50": _outcome("pgd50", ten(5), attack="pgd", eps=0.03, steps=50, alpha=0.01)})
    assert [f.check for f in flags] == ["more-steps"] and flags[0].attacks == ("pgd10", "pgd50")
    flags = _flags({**healthy, "pgd10_big": _outcome("b", ten(5), attack="pgd", eps=0.06, steps=10, alpha=0.01)})
    assert [f.check for f in flags] == ["larger-eps"]
    flags = _flags({**healthy, "fgsm": _outcome("fgsm", ten(8), attack="fgsm", eps=0.03, steps=1, alpha=0.03)})
    assert {f.check for f in flags} == {"fgsm>iterative"} and {f.attacks[1] for f in flags} == {"pgd10", "pgd50"}
    # a black-box attack beating the union of white-box attacks of the same budget
    masked = {"fgsm": _outcome("fgsm", [0] * 10, attack="fgsm", eps=0.03, steps=1),
              "pgd10": _outcome("pgd10", ten(1), attack="pgd", eps=0.03, steps=10),
              "square": _outcome("square", ten(6), attack="square", access="black-box", eps=0.03)}
    flags = _flags(masked)
    assert [f.check for f in flags] == ["black-box>white-box"] and "60.0%" in flags[0].reason
    # ... but not against white-box attacks with a smaller budget, nor within the tolerance
    masked["square"] = _outcome("square", ten(6), attack="square", access="black-box", eps=0.06)
    assert _flags(masked) == []
    assert _flags({**masked, "square": _outcome("s", ten(1), access="black-box", eps=0.03)}) == []
    # rates are over clean-correct samples only
    cc = torch.tensor([0] * 6 + [1] * 4, dtype=torch.bool)
    masked["square"] = _outcome("square", ten(6), attack="square", access="black-box", eps=0.03)
    assert _flags(masked, cc) == []


class Quantised(nn.Module):
    """A deliberately masked model: inputs are rounded to 8 levels, so input gradients are zero."""

    def __init__(self, net: nn.Module, levels: int = 8) -> None:
        super().__init__()
        self.net, self.levels = net, levels

    def forward(self, x):
        return self.net(torch.round(x * self.levels) / self.levels)


def _check_suite(model, surrogate, eps=0.15):
    return {"fgsm": FGSM(model, eps=eps), "pgd10": PGD(model, eps=eps, alpha=eps / 4, steps=10),
            "square": Square(model, eps=eps, n_queries=200),
            "transfer": Transfer(model, surrogate=surrogate, attack="pgd", eps=eps,
                                 attack_kwargs={"steps": 10, "alpha": eps / 4})}


def test_gradient_masking_flag_fires_on_a_quantised_model_and_not_on_a_plain_one(tiny_net, tiny_data):
    x, y = tiny_data
    surrogate = train_tiny(seed=5, steps=60)
    masked = Quantised(tiny_net)
    rep = robust_evaluate(masked, (x, y), _check_suite(masked, surrogate))
    assert rep.clean_acc == 1.0
    assert rep.acc("pgd10") == rep.acc("fgsm") == 1.0  # zero gradients: white-box attacks do nothing
    assert rep.masked and {f.check for f in rep.gradient_masking} == {"black-box>white-box", "transfer>white-box"}
    assert "gradient masking suspected" in rep.summary()
    card = rep.to_card("masked", "toy:test")
    assert card.metrics["robust"]["gradient_masking"] is True
    assert any("black-box attack 'square'" in n for n in card.notes)
    plain = robust_evaluate(tiny_net, (x, y), _check_suite(tiny_net, surrogate))
    assert not plain.masked and plain.gradient_masking == []
    assert plain.acc("pgd10") < plain.acc("square")


# -- reports and cards ---------------------------------------------------------------------------
def test_report_metrics_and_card(tiny_net, tiny_data, tmp_path):
    x, y = tiny_data
    suite = standard_suite(tiny_net, eps=0.1, steps=5, apgd_steps=5, num_classes=4)
    assert list(suite) == ["fgsm", "pgd5", "cw", "apgd_ce", "apgd_dlr"]
    assert suite["pgd5"].alpha == pytest.approx(2.5 * 0.1 / 5) and suite["cw"].name == "cw_linf"
    rep = robust_evaluate(tiny_net, (x, y), suite, batch_size=10)
    m = rep.to_metrics()["robust"]
    assert m["n"] == 32 and m["clean_acc"]["value"] == 1.0
    for key in ("clean_acc", "fgsm_acc", "pgd5_acc", "cw_acc", "apgd_ce_acc", "apgd_dlr_acc", "worst_case_acc"):
        lo, hi = m[key]["ci"]
        assert lo <= m[key]["value"] <= hi, key
    assert m["worst_case_acc"]["value"] <= min(m[f"{k}_acc"]["value"] for k in suite)
    assert 0 < m["pgd5_mean_linf"]["value"] <= 0.1 + 1e-6 and m["pgd5_mean_l2"]["value"] > 0
    card = rep.to_card("tiny", "quadrants:test", protocol="robust-linf", seed=0)
    path = card.save(tmp_path)
    loaded = ResultCard.load(path)
    assert loaded.metrics == card.metrics
    assert set(loaded.config["attacks"]) == set(suite) and loaded.config["attacks"]["pgd5"]["steps"] == 5
    assert set(loaded.timings) == {"clean_seconds", *(f"{k}_seconds" for k in suite)}
    assert "not bit-identical" in loaded.extra["implementation"]
    flat = flatten_metrics(loaded.metrics)
    assert flat["robust/pgd5_acc"] == rep.acc("pgd5") and "robust/pgd5_acc_ci" in flat
    assert "robust/worst_case_acc" in leaderboard([loaded]).columns


def test_l2_suite(tiny_net, tiny_data):
    x, y = tiny_data
    suite = standard_suite(tiny_net, eps=1.0, norm="L2", steps=5, apgd_steps=5)
    assert "fgsm" in suite.skipped and suite["cw"].name == "cw_l2" and suite["cw"].norm == "L2"
    rep = robust_evaluate(tiny_net, (x, y), suite)
    assert all(o.l2[o.success].max() <= 1.0 + 1e-5 for o in rep.outcomes.values() if o.success.any())
    assert "fgsm" in rep.skipped


# -- inputs ---------------------------------------------------------------------------------------
def test_loaders_max_samples_and_names(tiny_net, tiny_data):
    x, y = tiny_data
    tuples = DataLoader(TensorDataset(x, y), batch_size=7)
    rep = robust_evaluate(tiny_net, tuples, ["fgsm", "pgd"], eps=0.05, max_samples=20)
    assert rep.n == 20 and list(rep.outcomes) == ["fgsm", "pgd"]
    dicts = [{"image": x[i:i + 8], "label": y[i:i + 8].float()} for i in range(0, 32, 8)]
    a = robust_evaluate(tiny_net, dicts, "fgsm", eps=0.05)
    b = robust_evaluate(tiny_net, (x, y), {"fgsm": FGSM(tiny_net, eps=0.05)})
    assert a.n == b.n == 32 and torch.equal(a.outcomes["fgsm"].success, b.outcomes["fgsm"].success)
    rep = robust_evaluate(tiny_net, (x, y), ["suite"], eps=0.05)
    assert {"fgsm", "pgd20", "cw", "apgd_ce", "apgd_dlr"} == set(rep.outcomes)


def test_evaluation_errors_are_one_line(tiny_net, tiny_data):
    x, y = tiny_data
    cases = [
        (lambda: robust_evaluate(tiny_net, (x, y + 0.5), ["fgsm"]), AttackError, "class indices"),
        (lambda: robust_evaluate(tiny_net, (x * 3, y), ["fgsm"]), AttackError, r"\[0, 1\]"),
        (lambda: robust_evaluate(tiny_net, (x, y), {"t": PGD(tiny_net, targeted=True)}), AttackError, "targeted"),
        (lambda: robust_evaluate(tiny_net, (x, y), []), AttackError, "no attacks"),
        (lambda: robust_evaluate(tiny_net, [42], ["fgsm"]), AttackError, "cannot read a batch"),
        (lambda: robust_evaluate(tiny_net, (x, y), ["pgdd"]), RegistryError, "did you mean 'pgd'"),
        (lambda: build_attack("fgsm", tiny_net, steps=5), AttackError, "does not take steps"),
        (lambda: standard_suite(tiny_net, norm="unbounded"), AttackError, "norm must be Linf or L2"),
    ]
    for call, exc, message in cases:
        with pytest.raises(exc, match=message) as err:
            call()
        assert "\n" not in str(err.value)


class Rogue(Attack):
    """Breaks the contract: ignores its ball (bypassing the base class's final clip)."""

    name = "rogue"

    def __call__(self, x, y):
        return (x + 0.5).clamp(0, 1)

    def perturb(self, x, y):
        raise NotImplementedError


def test_an_attack_leaving_its_threat_model_is_caught(tiny_net, tiny_data):
    x, y = tiny_data
    with pytest.raises(AttackError, match="left its Linf ball"):
        robust_evaluate(tiny_net, (x, y), {"rogue": Rogue(tiny_net, eps=0.1)})
