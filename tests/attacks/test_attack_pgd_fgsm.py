"""The base-class contract, checked on PGD/FGSM and on every registered attack: threat model,
[0, 1], loss rises, targeted mode, eps 0, restored model state, seeds, one-line errors."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from visec.attacks import (FGSM, PGD, AttackError, cross_entropy, margin_loss, robust_evaluate,
                           standard_suite)
from visec.registry import ATTACKS

EPS = 0.1


def _quick(name, model, **kw):
    """Every registered attack, cheap settings."""
    extra = {"apgd": {"steps": 10}, "apgd_ce": {"steps": 10}, "apgd_dlr": {"steps": 10},
             "apgd_t": {"steps": 5, "n_target_classes": 2}, "autoattack": {"steps": 10},
             "square": {"n_queries": 50}, "cw_l2": {"steps": 10, "binary_search_steps": 2},
             "transfer": {"surrogate": nn.Sequential(nn.Flatten(), nn.Linear(192, 4))}}.get(name, {})
    return ATTACKS.build(name, model=model, **{**extra, **kw})


@pytest.mark.parametrize("norm,eps", [("Linf", EPS), ("L2", 1.0)])
@pytest.mark.parametrize("start", ["none", "uniform", "normal"])
def test_pgd_raises_the_loss_and_stays_in_the_ball_and_in_range(tiny_net, tiny_data, norm, eps, start):
    x, y = tiny_data
    x_adv = PGD(tiny_net, norm=norm, eps=eps, alpha=eps / 4, steps=10, random_start=start)(x, y)
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "Linf" else delta.norm(dim=1)
    assert (size <= eps + 1e-6).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        before, after = F.cross_entropy(tiny_net(x), y, reduction="none"), F.cross_entropy(tiny_net(x_adv), y, reduction="none")
    assert (after > before).float().mean() >= 0.9
    assert after.mean() > before.mean() + 0.5


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_stays_in_its_threat_model(tiny_net, tiny_data, name):
    x, y = tiny_data
    attack = _quick(name, tiny_net, **({} if name == "cw_l2" else {"eps": EPS}))
    x_adv = attack(x, y)
    assert x_adv.shape == x.shape and x_adv.min() >= 0 and x_adv.max() <= 1
    if attack.norm == "Linf":
        assert ((x_adv - x).abs().amax() <= EPS + 1e-6)


def test_targeted_pgd_moves_predictions_to_the_target(tiny_net, tiny_data):
    x, y = tiny_data
    target = (y + 1) % 4
    x_adv = PGD(tiny_net, eps=0.15, alpha=0.02, steps=20, targeted=True)(x, target)
    with torch.no_grad():
        ce_before = F.cross_entropy(tiny_net(x), target)
        ce_after = F.cross_entropy(tiny_net(x_adv), target)
        hit_before = (tiny_net(x).argmax(1) == target).float().mean()
        hit_after = (tiny_net(x_adv).argmax(1) == target).float().mean()
    assert ce_after < ce_before - 1.0
    assert hit_before == 0 and hit_after >= 0.8


def test_fgsm_with_eps_0_is_the_identity(tiny_net, tiny_data):
    x, y = tiny_data
    assert torch.equal(FGSM(tiny_net, eps=0.0)(x, y), x)
    assert torch.equal(PGD(tiny_net, eps=0.0, steps=5)(x, y), x)


def test_eps_0_gives_clean_accuracy_and_robust_never_exceeds_clean(tiny_net, tiny_data):
    x, y = tiny_data
    y = y.clone()
    y[:4] = (y[:4] + 1) % 4  # some clean errors
    zero = robust_evaluate(tiny_net, (x, y), {"fgsm": FGSM(tiny_net, eps=0.0), "pgd": PGD(tiny_net, eps=0.0)})
    assert zero.acc("fgsm") == zero.acc("pgd") == zero.clean_acc == zero.worst_case_acc == 28 / 32
    rep = robust_evaluate(tiny_net, (x, y), standard_suite(tiny_net, eps=EPS, steps=5, apgd_steps=5))
    for name in rep.outcomes:
        assert rep.acc(name) <= rep.clean_acc
    assert rep.worst_case_acc <= min(rep.acc(k) for k in rep.outcomes)


@pytest.mark.parametrize("name", ["pgd", "fgsm", "apgd_ce", "cw_l2", "square", "mifgsm", "autoattack"])
@pytest.mark.parametrize("training", [True, False])
def test_model_mode_and_requires_grad_are_restored(tiny_data, name, training):
    x, y = tiny_data
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(144, 4))
    net.train(training)
    net[0].weight.requires_grad_(False)  # a frozen layer stays frozen, the others stay trainable
    stats = net[1].running_mean.clone()
    _quick(name, net, eps=EPS)(x, y)
    assert net.training is training and net[1].training is training
    assert [p.requires_grad for p in net.parameters()] == [False, True, True, True, True, True]
    assert torch.equal(net[1].running_mean, stats)  # attacks ran in eval mode: BN statistics untouched


def test_state_is_restored_after_an_exception(tiny_net, tiny_data):
    x, y = tiny_data

    def broken(out, y):
        raise RuntimeError("boom")

    tiny_net.train()
    try:
        with pytest.raises(RuntimeError, match="boom"):
            PGD(tiny_net, loss_fn=broken)(x, y)
        assert tiny_net.training and all(p.requires_grad for p in tiny_net.parameters())
    finally:
        tiny_net.eval()


@pytest.mark.parametrize("name", ["pgd", "apgd_ce", "square", "di_fgsm"])
def test_seeded_attacks_are_reproducible(tiny_net, tiny_data, name):
    x, y = tiny_data
    a = _quick(name, tiny_net, eps=EPS, seed=3)(x, y)
    b = _quick(name, tiny_net, eps=EPS, seed=3)(x, y)
    c = _quick(name, tiny_net, eps=EPS, seed=4)(x, y)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("cls,kwargs,message", [
    (PGD, {"norm": "L1"}, "norm 'L1' not supported"),
    (PGD, {"eps": -0.1}, "eps must be >= 0"),
    (PGD, {"eps": float("nan")}, "eps must be >= 0"),
    (PGD, {"steps": -1}, "steps and alpha must be >= 0"),
    (PGD, {"random_start": "gaussian"}, "random_start must be"),
    (PGD, {"model_mode": "test"}, "model_mode must be"),
    (FGSM, {"norm": "L2"}, "norm 'L2' not supported"),
    ("cw_l2", {"norm": "Linf"}, "norm 'Linf' not supported"),
    ("cw_l2", {"norm": "L2"}, "give eps"),
    ("cw_l2", {"kappa": -1}, "kappa must be >= 0"),
    ("apgd_ce", {"steps": 0}, "steps and n_restarts must be >= 1"),
    ("apgd_dlr", {"targeted": True}, "has no targeted mode"),
    ("square", {"norm": "L2"}, "norm 'L2' not supported"),
    ("square", {"n_queries": 0}, "n_queries must be >= 1"),
    ("mifgsm", {"ti_kernel": 4}, "odd size"),
    ("mifgsm", {"diversity_prob": 2.0}, "diversity_prob"),
    ("autoattack", {"version": "turbo"}, "unknown version 'turbo'"),
    ("transfer", {}, "give a surrogate"),
])
def test_invalid_threat_models_and_params_are_one_line_attack_errors(tiny_net, cls, kwargs, message):
    build = (lambda **kw: ATTACKS.build(cls, model=tiny_net, **kw)) if isinstance(cls, str) else \
        (lambda **kw: cls(tiny_net, **kw))
    with pytest.raises(AttackError, match=message) as err:
        build(**kwargs)
    assert "\n" not in str(err.value)


def test_bad_inputs_are_attack_errors(tiny_net, tiny_data):
    x, y = tiny_data
    attack = PGD(tiny_net)
    with pytest.raises(AttackError, match=r"must lie in \[0, 1\]"):
        attack(x * 2, y)
    with pytest.raises(AttackError, match="float tensors"):
        attack((x * 255).byte(), y)
    with pytest.raises(AttackError, match="32 images but 3 labels"):
        attack(x, y[:3])
    with pytest.raises(AttackError, match="must be a torch.nn.Module"):
        PGD(lambda t: t)


def test_visec_pgd_equals_torchattacks_pgd_without_random_start(tiny_net, tiny_data):
    torchattacks = pytest.importorskip("torchattacks")
    x, y = tiny_data
    for eps, alpha, steps in ((8 / 255, 2 / 255, 10), (EPS, 0.01, 7)):
        ref = torchattacks.PGD(tiny_net, eps=eps, alpha=alpha, steps=steps, random_start=False)(x, y)
        ours = PGD(tiny_net, eps=eps, alpha=alpha, steps=steps, random_start="none")(x, y)
        assert (ours - ref).abs().max() <= 1e-6


def test_losses_handle_multiclass_and_binary_logits():
    z = torch.tensor([[2.0, 1.0, -1.0], [0.0, 3.0, 1.0]])
    y = torch.tensor([0, 0])
    assert torch.allclose(margin_loss(z, y), torch.tensor([-1.0, 3.0]))
    zb = torch.tensor([1.5, -0.5])
    yb = torch.tensor([1, 1])
    assert torch.allclose(margin_loss(zb, yb), torch.tensor([-1.5, 0.5]))
    assert torch.allclose(margin_loss(zb[:, None], yb), margin_loss(zb, yb))  # (B, 1) == (B,)
    assert torch.allclose(cross_entropy(zb[:, None], yb), F.binary_cross_entropy_with_logits(zb, yb.float(), reduction="none"))
    assert torch.allclose(cross_entropy((z, [z]), y), F.cross_entropy(z, y, reduction="none"))  # tuple outputs
