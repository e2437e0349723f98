"""SAM and GCSAM (visec.engine.sam): the rule's known answers (the GCSCoOp notes' hand-made 2-D
gradients), agreement with a straightforward per-tensor reference, the perturbation radius, exact
restore, and rho = 0 reducing to the base optimiser."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from visec.engine.sam import ERM, PROJECTION, SAM, SAM_BRANCH, constrained_gradient


def _unit(deg: float, norm: float = 1.0) -> torch.Tensor:
    return torch.tensor([norm * math.cos(math.radians(deg)), norm * math.sin(math.radians(deg))], dtype=torch.float64)


G = torch.tensor([1.0, 0.0], dtype=torch.float64)


@pytest.mark.parametrize("deg,norm,branch,expected", [
    (30, 1.0, SAM_BRANCH, (0.86603, 0.5)),  # cos 0.866 >= 0.8: the SAM gradient
    (45, 1.0, PROJECTION, (0.85355, 0.35355)),  # 0.5 < 0.707 < 0.8: projection on the normalised sum
    (45, 2.0, PROJECTION, (1.66969, 0.97808)),
    (75, 1.0, ERM, (1.0, 0.0)),  # cos 0.259 <= 0.5: the ERM gradient
    (100, 1.0, ERM, (1.0, 0.0)),
])
def test_rule_known_answers(deg, norm, branch, expected):
    g_s = _unit(deg, norm)
    final, cos, got = constrained_gradient(g_s, G, 0.5, 0.8)
    assert got == branch and cos == pytest.approx(math.cos(math.radians(deg)), abs=1e-9)
    np.testing.assert_allclose(final.numpy(), expected, atol=1e-5)


def test_rule_without_lower_bound_projects_below_beta2_and_guards_opposite_gradients():
    final, _, branch = constrained_gradient(_unit(100), G, 0.0, 0.8)  # beta1 <= 0: no ERM branch
    assert branch == PROJECTION
    z = (_unit(100) + G) / torch.linalg.vector_norm(_unit(100) + G)
    torch.testing.assert_close(final, (_unit(100) @ z) * z)
    final, _, branch = constrained_gradient(-G, G, 0.5, 0.8)  # z = 0
    assert branch == ERM and torch.equal(final, G)


def _reference(gs: np.ndarray, g: np.ndarray, b1: float, b2: float) -> np.ndarray:
    c = gs.ravel() @ g.ravel() / (np.linalg.norm(gs) * np.linalg.norm(g))
    z = (gs + g).ravel()
    zh = z / np.linalg.norm(z)
    proj = ((gs.ravel() @ zh) * zh).reshape(gs.shape)
    if b1 > 0:
        return g if c <= b1 else gs if c >= b2 else proj
    return proj if c < b2 else gs


@pytest.mark.parametrize("b1,b2", [(0.5, 0.8), (0.0, 0.8), (-0.2, 0.3), (0.1, 0.95)])
def test_rule_matches_a_straightforward_reference_on_random_tensors(b1, b2):
    rng = np.random.default_rng(0)
    branches = set()
    for _ in range(200):
        g = rng.normal(size=(3, 4))
        gs = g + rng.normal(scale=rng.uniform(0.1, 3), size=(3, 4))  # every cosine from ~1 down to ~0
        final, _, branch = constrained_gradient(torch.from_numpy(gs), torch.from_numpy(g), b1, b2)
        np.testing.assert_allclose(final.numpy(), _reference(gs, g, b1, b2), atol=1e-12)
        branches.add(branch)
    assert branches == ({ERM, PROJECTION, SAM_BRANCH} if b1 > 0 else {PROJECTION, SAM_BRANCH})


class Quadratic(nn.Module):
    def __init__(self, w) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w, dtype=torch.float64))

    def forward(self) -> torch.Tensor:
        return 0.5 * (self.w ** 2 * torch.tensor([1.0, 10.0], dtype=torch.float64)).sum()


def _sgd(lr=0.1, momentum=0.0, wd=0.0):
    return lambda groups: torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=wd)


def test_sam_step_on_a_quadratic_uses_the_gradient_at_the_perturbed_point():
    """L = w^T diag(1, 10) w / 2 at w = (1, 1), rho 0.1: g_s = (1.00995, 10.99504) (the notes' numbers)."""
    m = Quadratic([1.0, 1.0])
    opt = SAM(m.parameters(), _sgd(lr=1.0), rho=0.1, rule="sam")
    seen = []

    def closure():
        opt.zero_grad()
        loss = m()
        loss.backward()
        seen.append(m.w.detach().clone())
        return loss

    opt.step(closure)
    eps = seen[1] - seen[0]
    assert float(torch.linalg.vector_norm(eps)) == pytest.approx(0.1, abs=1e-12)  # ||eps|| = rho
    np.testing.assert_allclose(eps.numpy(), [0.00995, 0.09950], atol=1e-5)
    np.testing.assert_allclose(m.w.detach().numpy(), 1 - np.array([1.00995, 10.99504]), atol=1e-5)
    assert opt.last_stats["branch"] == [SAM_BRANCH] and opt.last_stats["cos"][0] == pytest.approx(0.99997, abs=1e-5)


def test_perturbation_norm_is_global_over_tensors_and_restore_is_exact():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.randn(16, 1, dtype=torch.float64)
    lr, wd = 0.05, 5e-4
    opt = SAM(net.parameters(), _sgd(lr=lr, momentum=0.9, wd=wd), rho=0.3, rule="gcsam", beta1=0.5, beta2=0.8)
    before = [p.detach().clone() for p in net.parameters()]
    snaps, grads = [], []

    def closure():
        opt.zero_grad()
        loss = ((net(x) - y) ** 2).mean()
        loss.backward()
        snaps.append([p.detach().clone() for p in net.parameters()])
        grads.append([p.grad.detach().clone() for p in net.parameters()])
        return loss

    opt.step(closure)
    eps = [b - a for a, b in zip(snaps[0], snaps[1])]
    total = math.sqrt(sum(float((e ** 2).sum()) for e in eps))
    assert total == pytest.approx(0.3, rel=1e-9)  # one radius for all tensors together
    # first step: theta_new = theta_old - lr * (g* + wd * theta_old), theta_old restored exactly
    for p, old, gs, g in zip(net.parameters(), before, grads[1], grads[0]):
        final, _, _ = constrained_gradient(gs, g, 0.5, 0.8)
        torch.testing.assert_close(p.detach(), old - lr * (final + wd * old), rtol=0, atol=1e-15)
    assert len(opt.last_stats["branch"]) == 4  # one decision per tensor


@pytest.mark.parametrize("rule", ["sam", "gcsam"])
def test_rho_zero_follows_plain_sgd_exactly(rule):
    torch.manual_seed(0)
    x = torch.randn(32, 3)
    y = (x[:, 0] > 0).float()
    a, b = nn.Linear(3, 1), nn.Linear(3, 1)
    b.load_state_dict(a.state_dict())
    sgd = torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    sam = SAM(b.parameters(), _sgd(lr=0.1, momentum=0.9, wd=5e-4), rho=0.0, rule=rule)
    loss_fn = nn.BCEWithLogitsLoss()
    for _ in range(5):
        sgd.zero_grad()
        loss_fn(a(x).squeeze(1), y).backward()
        sgd.step()

        def closure():
            sam.zero_grad()
            loss = loss_fn(b(x).squeeze(1), y)
            loss.backward()
            return loss

        sam.step(closure)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_sam_needs_its_closure_and_checks_its_settings():
    m = Quadratic([1.0, 1.0])
    with pytest.raises(RuntimeError, match="closure"):
        SAM(m.parameters(), _sgd(), rho=0.1).step()
    with pytest.raises(ValueError, match="beta1 must be below beta2"):
        SAM(m.parameters(), _sgd(), rule="gcsam", beta1=0.9, beta2=0.5)


def test_train_config_wraps_any_methods_optimiser_and_names_the_card():
    from visec.config import load_config
    from visec.engine.engine import card_name
    from visec.engine.module import make_optimizer
    from visec.errors import ConfigError

    cfg = load_config("classifier", ["model.backbone=tiny_cnn", "train.sam=gcsam", "train.sam_rho=0.2",
                                     "train.optimizer=sgd"])
    opt = make_optimizer([nn.Parameter(torch.zeros(2))], cfg.train)
    assert isinstance(opt, SAM) and isinstance(opt.base, torch.optim.SGD) and opt.rule == "gcsam" and opt.rho == 0.2
    assert card_name(cfg) == "classifier/tiny_cnn+gcsam"
    with pytest.raises(ConfigError, match="sam_beta1"):
        load_config("classifier", ["train.sam=gcsam", "train.sam_beta1=0.9", "train.sam_beta2=0.8"])
    with pytest.raises(ConfigError, match="gradient scaler"):
        load_config("classifier", ["train.sam=sam", "train.precision=16-mixed"])


def test_state_dict_is_the_base_optimisers_so_a_resume_keeps_momentum():
    m = Quadratic([1.0, 1.0])
    opt = SAM(m.parameters(), _sgd(lr=0.1, momentum=0.9), rho=0.1, rule="gcsam")

    def closure():
        opt.zero_grad()
        loss = m()
        loss.backward()
        return loss

    opt.step(closure)
    state = opt.state_dict()
    assert "momentum_buffer" in state["state"][0] and opt.state is opt.base.state
    again = SAM(Quadratic([1.0, 1.0]).parameters(), _sgd(lr=0.1, momentum=0.9), rho=0.1, rule="gcsam")
    again.load_state_dict(state)
    torch.testing.assert_close(again.base.state_dict()["state"][0]["momentum_buffer"],
                               state["state"][0]["momentum_buffer"])
