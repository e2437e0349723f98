"""MI/DI/TI transfer attacks, C&W, APGD and the AutoAttack-style ensemble, Square and transfer."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import train_tiny
from torch import nn

from visec.attacks import (APGD, CWL2, PGD, AttackError, AutoAttack, Square, Transfer, TransferFGSM,
                           dlr_loss, dlr_targeted_loss, robust_evaluate, standard_suite)
from visec.attacks.autoattack import apgd_checkpoints
from visec.attacks.mifgsm import gaussian_kernel
from visec.registry import ATTACKS

EPS = 0.1


def _broken(net, x_adv, y):
    with torch.no_grad():
        return net(x_adv).argmax(1) != y


# -- transfer presets ----------------------------------------------------------------------------
def test_mifgsm_without_momentum_diversity_or_smoothing_is_iterative_fgsm(tiny_net, tiny_data):
    x, y = tiny_data
    plain = TransferFGSM(tiny_net, eps=EPS, steps=5, decay=0.0)(x, y)
    pgd = PGD(tiny_net, eps=EPS, alpha=EPS / 5, steps=5, random_start="none")(x, y)
    assert torch.allclose(plain, pgd, atol=1e-7)


@pytest.mark.parametrize("name", ["mifgsm", "di_fgsm", "ti_fgsm", "di_ti_mifgsm"])
def test_transfer_presets_break_the_tiny_model(tiny_net, tiny_data, name):
    x, y = tiny_data
    attack = ATTACKS.build(name, model=tiny_net, eps=0.15, steps=10)
    assert _broken(tiny_net, attack(x, y), y).float().mean() >= 0.5


def test_input_diversity_keeps_the_size_and_ti_kernel_is_a_normalised_gaussian(tiny_net, tiny_data):
    x, _ = tiny_data
    di = ATTACKS.build("di_fgsm", model=tiny_net, diversity_prob=1.0, resize_rate=1.5)
    out = di.diverse(x)
    assert out.shape == x.shape and not torch.equal(out, x)
    assert torch.equal(ATTACKS.build("di_fgsm", model=tiny_net, diversity_prob=0.0).diverse(x), x)
    k = gaussian_kernel(5)
    assert k.shape == (5, 5) and math.isclose(float(k.sum()), 1.0, rel_tol=1e-6)
    assert k[2, 2] == k.max() and torch.allclose(k, k.T)
    ti = ATTACKS.build("ti_fgsm", model=tiny_net, ti_kernel=3)
    const = torch.ones(1, 3, 6, 6)
    assert torch.allclose(ti.smooth(const)[..., 1:-1, 1:-1], const[..., 1:-1, 1:-1], atol=1e-6)


# -- C&W -----------------------------------------------------------------------------------------
def test_cw_l2_finds_small_successful_perturbations_and_returns_the_clean_image_on_failure(tiny_net, tiny_data):
    x, y = tiny_data
    cw = CWL2(tiny_net, steps=50, binary_search_steps=4, lr=0.05)
    x_adv = cw(x, y)
    ok = _broken(tiny_net, x_adv, y)
    assert ok.float().mean() >= 0.9
    l2_cw = (x_adv - x).flatten(1).norm(dim=1)
    # a successful fixed-budget attack needs more L2 than C&W's minimal perturbations
    pgd = PGD(tiny_net, eps=EPS, alpha=0.02, steps=20, random_start="none")(x, y)
    both = ok & _broken(tiny_net, pgd, y)
    assert both.sum() >= 10
    assert l2_cw[both].mean() < 0.8 * (pgd - x).flatten(1).norm(dim=1)[both].mean()
    # with a hopeless budget (one step, tiny c) nothing succeeds and the clean image comes back
    weak = CWL2(tiny_net, steps=1, binary_search_steps=1, initial_const=1e-6, lr=1e-4)(x, y)
    assert torch.allclose(weak, x, atol=1e-5)
    assert not _broken(tiny_net, weak, y).any()


def test_cw_l2_targeted_and_bounded(tiny_net, tiny_data):
    x, y = tiny_data
    target = (y + 2) % 4
    x_adv = CWL2(tiny_net, targeted=True, steps=50, binary_search_steps=4, lr=0.05)(x, target)
    with torch.no_grad():
        assert (tiny_net(x_adv).argmax(1) == target).float().mean() >= 0.8
    bounded = CWL2(tiny_net, norm="L2", eps=0.3, steps=20, binary_search_steps=2)(x, y)
    assert ((bounded - x).flatten(1).norm(dim=1) <= 0.3 + 1e-5).all()


def test_cw_linf_is_margin_pgd(tiny_net, tiny_data):
    x, y = tiny_data
    cw = ATTACKS.build("cw_linf", model=tiny_net, eps=EPS, random_start="none")
    assert cw.steps == 20 and cw.alpha == 0.007 and cw.loss_fn.__name__ == "margin_loss"
    assert _broken(tiny_net, cw(x, y), y).float().mean() >= 0.5


# -- APGD / AutoAttack ---------------------------------------------------------------------------
def test_apgd_checkpoints_and_dlr_known_answers():
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    z = torch.tensor([[3.0, 1.0, 0.0, -1.0]])
    y = torch.tensor([0])
    assert torch.allclose(dlr_loss(z, y), torch.tensor([-(3.0 - 1.0) / (3.0 - 0.0)]))
    assert torch.allclose(dlr_loss(2 * z + 5, y), dlr_loss(z, y))  # shift and scale invariant
    t = torch.tensor([2])
    assert torch.allclose(dlr_targeted_loss(z, y, t), torch.tensor([-(3.0 - 0.0) / (3.0 - 0.5 * (0.0 - 1.0))]))
    with pytest.raises(AttackError, match="at least 3 classes"):
        dlr_loss(torch.randn(4, 2), torch.zeros(4, dtype=torch.long))


def test_apgd_is_at_least_as_strong_as_pgd_with_the_same_budget(tiny_net, tiny_data):
    x, y = tiny_data
    eps, steps = 0.08, 20
    pgd = PGD(tiny_net, eps=eps, alpha=eps / 4, steps=steps)(x, y)
    apgd = APGD(tiny_net, eps=eps, steps=steps)(x, y)
    with torch.no_grad():
        assert _broken(tiny_net, apgd, y).sum() >= _broken(tiny_net, pgd, y).sum()
        ce = lambda z: F.cross_entropy(tiny_net(z), y, reduction="none")  # noqa: E731
        unbroken = ~_broken(tiny_net, apgd, y)
        if unbroken.any():  # where it failed, APGD returns its highest-loss point
            assert ce(apgd)[unbroken].mean() >= ce(x)[unbroken].mean()


@pytest.mark.parametrize("norm,eps", [("Linf", EPS), ("L2", 1.0)])
def test_autoattack_is_at_least_as_strong_as_each_component(tiny_net, tiny_data, norm, eps):
    x, y = tiny_data
    aa = AutoAttack(tiny_net, norm=norm, eps=eps, version="plus", steps=10, n_queries=50)
    x_aa = aa(x, y)
    broken = _broken(tiny_net, x_aa, y)
    for name, comp in aa.components.items():
        assert broken.sum() >= _broken(tiny_net, comp(x, y), y).sum(), name
    assert torch.equal(x_aa[~broken], x[~broken])  # robust samples come back clean
    if norm == "L2":
        assert "square" in aa.skipped
    assert aa.config()["components"] == list(aa.components)


def test_apgd_t_and_dlr_are_skipped_on_few_classes():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    x = torch.rand(8, 3, 2, 2)
    y = net(x).argmax(1).detach()
    aa = AutoAttack(net, version="plus", steps=3, n_queries=5)
    aa(x, y)
    assert "needs >= 4 classes" in aa.skipped["apgd_t"] and "apgd_dlr" not in aa.skipped


# -- black-box and transfer ----------------------------------------------------------------------
def test_square_attack_breaks_the_model_without_gradients(tiny_net, tiny_data):
    x, y = tiny_data
    sq = Square(tiny_net, eps=0.15, n_queries=300)
    with torch.no_grad():  # no gradient needed at all
        x_adv = sq(x, y)
    assert (x_adv - x).abs().amax() <= 0.15 + 1e-6
    assert _broken(tiny_net, x_adv, y).float().mean() >= 0.3
    assert sq.p_schedule(0) == 0.8 and sq.p_schedule(299) < 0.8


def test_transfer_crafts_on_the_surrogate(tiny_net, tiny_data):
    x, y = tiny_data
    surrogate = train_tiny(seed=5, steps=60)
    tr = Transfer(tiny_net, surrogate=surrogate, attack="pgd", eps=0.15,
                  attack_kwargs={"steps": 10, "alpha": 0.03})
    assert tr.access == "transfer" and tr.inner.model is surrogate
    x_adv = tr(x, y)
    assert torch.equal(x_adv, PGD(surrogate, eps=0.15, steps=10, alpha=0.03)(x, y))
    with pytest.raises(AttackError, match="exceeds"):
        Transfer(tiny_net, attack=PGD(surrogate, eps=0.3), eps=0.1)
    with pytest.raises(AttackError, match="target model itself"):
        Transfer(tiny_net, surrogate=tiny_net)


# -- binary detectors ----------------------------------------------------------------------------
class Binary(nn.Module):
    """A one-logit detector: mean brightness of the top half minus the bottom half, (B, 1)."""

    def forward(self, x):
        return (10 * (x[:, :, :4].mean((1, 2, 3)) - x[:, :, 4:].mean((1, 2, 3))))[:, None]


def test_binary_detectors_with_one_logit_and_float_labels():
    g = torch.Generator().manual_seed(0)
    x = 0.4 + 0.2 * torch.rand(16, 3, 8, 8, generator=g)
    y = torch.arange(16) % 2
    x[y == 1, :, :4] += 0.1
    x[y == 0, :, 4:] += 0.1
    net = Binary()
    loader = [{"image": x[:8], "label": y[:8].float()}, {"image": x[8:], "label": y[8:].float()}]
    suite = standard_suite(net, eps=0.15, steps=5, apgd_steps=5, num_classes=2)
    assert "apgd_dlr" not in suite and "3 classes" in suite.skipped["apgd_dlr"]
    rep = robust_evaluate(net, loader, suite)
    assert rep.clean_acc == 1.0 and rep.n == 16
    assert rep.acc("pgd5") == 0.0 and rep.worst_case_acc == 0.0
    assert "apgd_dlr" in rep.skipped
    # registered names with DLR are skipped at run time, with a reason
    rep = robust_evaluate(net, (x, y), ["apgd_dlr", "fgsm"], eps=0.01)
    assert "needs >= 3 classes" in rep.skipped["apgd_dlr"] and list(rep.outcomes) == ["fgsm"]
