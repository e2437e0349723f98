"""ANCRA unit tests (notes §3.9): ANC known answers and asymmetry, reverse attention, the negative
sampler, PGD properties through the shared engine, TRADES/MART terms and the loss composition."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from visec.attacks import PGD
from visec.config import TrainConfig
from visec.errors import ConfigError
from visec.methods.ancra.lightning_model import AdversarialTrainer, AdversarialTrainingParams, AncraMethod, AncraParams
from visec.methods.ancra.losses import (NegativeSamplingError, anc_loss, anc_similarity, anc_total,
                                        aux_ce_per_sample, ce_total, kl_per_sample, mart_loss,
                                        negative_indices, trades_kl, trades_kl_total)
from visec.methods.ancra.torch_model import (ResNet18RA, SmallRACNN, SoftMaskSurrogate, WRNRA, build_net,
                                             reverse_attention)


def _logits(probs):
    return torch.log(torch.tensor(probs, dtype=torch.float64))


# -- 1. ANC known answers ---------------------------------------------------------------------------------
def test_anc_known_answers():
    p = torch.tensor([[0.7, 0.2, 0.1]])
    q_same = torch.tensor([[0.6, 0.3, 0.1]])
    q_diff = torch.tensor([[0.2, 0.7, 0.1]])
    assert anc_similarity(p, q_same).item() == pytest.approx(math.sqrt(0.42), abs=1e-6)
    assert anc_similarity(p, q_same).item() == pytest.approx(0.648074, abs=1e-6)
    assert anc_similarity(p, q_diff).item() == 0.0
    # as a loss on logits, batch mean of both pairs
    loss = anc_loss(_logits([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1]]), _logits([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1]]))
    assert loss.item() == pytest.approx(0.324037, abs=1e-6)


def test_anc_is_bounded():
    g = torch.Generator().manual_seed(0)
    for scale in (0.1, 1.0, 10.0, 100.0):
        p = (torch.randn(500, 7, generator=g) * scale).softmax(1)
        q = (torch.randn(500, 7, generator=g) * scale).softmax(1)
        s = anc_similarity(p, q)
        assert (s >= 0).all() and (s <= 1).all()
    one_hot = F.one_hot(torch.tensor([2]), 5).float()
    assert anc_similarity(one_hot, one_hot).item() == 1.0


# -- 2. asymmetry ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha, anchor_zero, negative_zero", [(1.0, True, False), (0.0, False, True)])
def test_anc_gradient_asymmetry(alpha, anchor_zero, negative_zero):
    p = _logits([[0.7, 0.2, 0.1]]).requires_grad_(True)
    q = _logits([[0.6, 0.3, 0.1]]).requires_grad_(True)
    gp, gq = torch.autograd.grad(anc_loss(p, q, alpha), (p, q), allow_unused=True, materialize_grads=True)
    assert bool((gp == 0).all()) is anchor_zero
    assert bool((gq == 0).all()) is negative_zero


def test_one_sgd_step_on_the_negative_lowers_its_shared_class_probability():
    p = _logits([[0.7, 0.2, 0.1]])
    q = _logits([[0.6, 0.3, 0.1]]).requires_grad_(True)
    before = q.softmax(1)[0, 0].item()
    anc_loss(p, q, alpha=1.0).backward()
    with torch.no_grad():
        q_new = q - 0.5 * q.grad
    assert q_new.softmax(1)[0, 0].item() < before


def test_anc_total_adds_the_aux_heads():
    o = (_logits([[0.7, 0.2, 0.1]]), [_logits([[0.6, 0.3, 0.1]])] * 2)
    n = (_logits([[0.6, 0.3, 0.1]]), [_logits([[0.2, 0.7, 0.1]])] * 2)
    assert anc_total(o, n, lambda_cr=2.0).item() == pytest.approx(0.648074 + 2 * 0.0, abs=1e-6)
    n2 = (n[0], [_logits([[0.7, 0.2, 0.1]])] * 2)
    expected = 0.648074 + 2.0 * math.sqrt(0.6 * 0.7)
    assert anc_total(o, n2, lambda_cr=2.0).item() == pytest.approx(expected, abs=1e-5)


# -- 3. reverse attention ----------------------------------------------------------------------------------
def _fc(weight, bias=None):
    fc = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        fc.weight.copy_(weight)
        fc.bias.copy_(bias if bias is not None else torch.zeros(weight.shape[0]))
    return fc


def test_ra_block_uses_labels_in_training_and_aux_argmax_otherwise():
    z = torch.ones(1, 2, 2, 2)
    w = torch.tensor([[1.0, 0.0], [0.0, 3.0]])  # aux logits [1, 3]: predicts class 1
    fc = _fc(w)
    y = torch.tensor([0])
    out_train, aux = reverse_attention(z, fc, labels=y)
    assert aux.argmax(1).item() == 1 != y.item()
    assert torch.equal(out_train, z * w[0].view(1, 2, 1, 1))
    out_eval, _ = reverse_attention(z, fc)
    assert torch.equal(out_eval, z * w[1].view(1, 2, 1, 1))


def test_ra_with_all_ones_weights_is_the_identity():
    z = torch.rand(3, 4, 5, 5)
    fc = _fc(torch.ones(6, 4))
    for labels in (torch.tensor([0, 3, 5]), None):
        out, _ = reverse_attention(z, fc, labels)
        assert torch.equal(out, z)


def test_final_logits_equal_the_hand_computed_reweighting():
    torch.manual_seed(0)
    net = SmallRACNN(num_classes=3, width=4).eval()
    x = torch.rand(2, 3, 8, 8)
    y = torch.tensor([2, 0])
    W, b = net.fc.weight, net.fc.bias
    with torch.no_grad():
        logits, aux = net.forward_all(x, y)
        h = net.features(x)
        z1 = net.ra_blocks[0](h)
        a1 = z1.mean((2, 3)) @ W.T + b
        z1 = z1 * W[y][:, :, None, None]
        z2 = net.ra_blocks[1](z1)
        a2 = z2.mean((2, 3)) @ W.T + b
        expected = (z2 * W[y][:, :, None, None]).mean((2, 3)) @ W.T + b
        assert torch.allclose(logits, expected, atol=1e-6)
        assert torch.allclose(aux[0], a1, atol=1e-6) and torch.allclose(aux[1], a2, atol=1e-6)
        # without labels the class comes from each block's own auxiliary prediction
        logits_eval, aux_eval = net.forward_all(x)
        c1 = aux_eval[0].argmax(1)
        z1 = net.ra_blocks[0](h) * W[c1][:, :, None, None]
        z2 = net.ra_blocks[1](z1)
        c2 = (z2.mean((2, 3)) @ W.T + b).argmax(1)
        assert torch.allclose(logits_eval, (z2 * W[c2][:, :, None, None]).mean((2, 3)) @ W.T + b, atol=1e-6)
        assert torch.equal(net(x), logits_eval)


def test_forward_does_not_toggle_train_eval_mode():
    net = SmallRACNN(num_classes=3, width=4)
    x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    for mode in (True, False):
        net.train(mode)
        net.forward_all(x, y)
        net(x)
        assert all(m.training is mode for m in net.modules())


def test_resnet18_ra_shapes_and_plain_twin():
    torch.manual_seed(0)
    x, y = torch.rand(2, 3, 32, 32), torch.tensor([1, 4])
    net = ResNet18RA(num_classes=10, width=8)
    logits, aux = net.forward_all(x, y)
    assert logits.shape == (2, 10) and len(aux) == 2 and all(a.shape == (2, 10) for a in aux)
    assert net.fc.in_features == 64 and net.ra_blocks[0].conv1.stride == (2, 2)
    twin = build_net("resnet18_ra", 10, ra=False, width=8)
    twin.load_state_dict(net.state_dict())  # same parameters, RA off
    logits_plain, aux_plain = twin.eval().forward_all(x)
    assert aux_plain == [] and logits_plain.shape == (2, 10)
    h = twin.features(x)
    for block in twin.ra_blocks:
        h = block(h)
    assert torch.allclose(logits_plain, twin.fc(h.mean((2, 3))), atol=1e-6)


def test_wrn_last_two_units_of_block3_are_ra_units():
    net = WRNRA(num_classes=10, depth=34, widen_factor=1)
    units = [m for m in net.modules() if type(m).__name__ == "WideBasic"]
    assert len(units) == 15 and len(net.ra_blocks) == 2
    assert all(u in list(net.ra_blocks) for u in units[-2:]) and net.fc.in_features == 64
    x, y = torch.rand(2, 3, 32, 32), torch.tensor([0, 9])
    logits, aux = net.forward_all(x, y)
    assert logits.shape == (2, 10) and len(aux) == 2
    with pytest.raises(ConfigError, match="6n\\+4"):
        WRNRA(depth=20)


def test_attack_views_share_the_network_mode():
    from visec.methods.ancra.torch_model import WithAux

    net = SmallRACNN(num_classes=3, width=4).eval()
    x = torch.rand(4, 3, 8, 8)
    for view in (WithAux(net), SoftMaskSurrogate(net)):
        assert view.training is False  # a fresh wrapper reports the network's mode
        PGD(view, eps=0.03, alpha=0.01, steps=2)(x, torch.tensor([0, 1, 2, 0]))
        assert net.training is False and all(not m.training for m in net.modules())
        net.train()
        assert view.training is True
        PGD(view, eps=0.03, alpha=0.01, steps=1)(x, torch.tensor([0, 1, 2, 0]))
        assert net.training is True
        net.eval()


def test_soft_mask_surrogate_tends_to_the_hard_mask_at_low_temperature():
    torch.manual_seed(0)
    net = SmallRACNN(num_classes=4, width=4).eval()
    x = torch.rand(3, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(SoftMaskSurrogate(net, tau=1e-4)(x), net(x), atol=1e-5)
    x.requires_grad_(True)
    SoftMaskSurrogate(net, tau=1.0)(x).sum().backward()
    assert x.grad.abs().sum() > 0


# -- 5. PGD through the shared engine, with the RA net and the aux loss ---------------------------------------
@pytest.fixture(scope="module")
def tiny_net():
    torch.manual_seed(0)
    return SmallRACNN(num_classes=3, width=4).eval()


def test_pgd_properties_on_the_ra_net(tiny_net):
    from visec.methods.ancra.torch_model import WithAux

    g = torch.Generator().manual_seed(1)
    x = torch.rand(64, 3, 8, 8, generator=g)
    with torch.no_grad():
        y = tiny_net(x).argmax(1)  # start from correctly classified points
    eps = 8 / 255
    loss_fn = aux_ce_per_sample(2.0)
    attack = PGD(WithAux(tiny_net), eps=eps, alpha=0.007, steps=10, random_start="normal", start_sigma=0.001,
                 loss_fn=loss_fn)
    x_adv = attack(x, y)
    assert (x_adv - x).abs().max() <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        before, after = loss_fn(WithAux(tiny_net)(x), y), loss_fn(WithAux(tiny_net)(x_adv), y)
    assert (after >= before).float().mean() > 0.9
    target = (y + 1) % 3
    targeted = PGD(WithAux(tiny_net), eps=eps, alpha=0.007, steps=10, targeted=True, loss_fn=loss_fn)
    x_t = targeted(x, target)
    zero = PGD(tiny_net, eps=0.0, steps=5)(x, y)
    with torch.no_grad():
        assert loss_fn(WithAux(tiny_net)(x_t), target).mean() < loss_fn(WithAux(tiny_net)(x), target).mean()
        clean = (tiny_net(x).argmax(1) == y).float().mean()
        robust = (tiny_net(x_adv).argmax(1) == y).float().mean()
        assert (tiny_net(zero).argmax(1) == y).float().mean() == clean
    assert robust <= clean


# -- 6. negative sampler -------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_classes, batch", [(2, 16), (10, 64), (200, 512)])
def test_negative_sampler(n_classes, batch):
    g = torch.Generator().manual_seed(0)
    present = torch.arange(0, n_classes, 2) if n_classes > 2 else torch.arange(2)  # some classes absent
    labels = present[torch.randint(0, len(present), (batch,), generator=g)]
    labels[:2] = present[:2]  # at least two classes
    for _ in range(5):
        idx = negative_indices(labels, g)
        assert idx.shape == labels.shape and idx.dtype == torch.long
        assert (labels[idx] != labels).all()
        assert set(labels[idx].tolist()) <= set(labels.tolist())
    if n_classes == 10:  # every other present class is eventually drawn
        drawn = {int(labels[negative_indices(labels, g)][0]) for _ in range(200)}
        assert drawn == set(labels.unique().tolist()) - {int(labels[0])}


def test_negative_sampler_needs_two_classes():
    with pytest.raises(NegativeSamplingError, match="at least two classes"):
        negative_indices(torch.tensor([3, 3, 3]))


# -- 7. TRADES and MART terms ----------------------------------------------------------------------------------
def test_trades_kl_is_zero_without_perturbation_and_positive_otherwise():
    torch.manual_seed(0)
    nat = torch.randn(5, 4)
    assert trades_kl(nat, nat.clone()).item() == pytest.approx(0.0, abs=1e-7)
    net = SmallRACNN(num_classes=4, width=4)
    x, y = torch.rand(5, 3, 8, 8), torch.tensor([0, 1, 2, 3, 0])
    out = net.forward_all(x, y)
    assert trades_kl_total(out, net.forward_all(x, y)).item() == pytest.approx(0.0, abs=1e-6)
    assert trades_kl(nat, torch.randn(5, 4)).item() > 0
    p, q = nat.softmax(1), torch.randn(5, 4).softmax(1)
    assert torch.allclose(kl_per_sample(nat, q.log()), (p * (p.log() - q.log())).sum(1), atol=1e-6)


def test_mart_loss_matches_its_definition():
    torch.manual_seed(0)
    nat, adv, y = torch.randn(6, 3), torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    p_adv, p_nat = adv.softmax(1), nat.softmax(1)
    bce = -p_adv[range(6), y].log() - torch.log(1 - torch.stack([p_adv[i][[k for k in range(3) if k != y[i]]].max()
                                                                for i in range(6)]))
    kl = (p_nat * (p_nat.log() - p_adv.log())).sum(1)
    expected = bce.mean() + 6.0 * (kl * (1 - p_nat[range(6), y])).mean()
    assert mart_loss(nat, adv, y, 6.0).item() == pytest.approx(expected.item(), rel=1e-5)


# -- 8. loss composition -----------------------------------------------------------------------------------------
def _module(params_cls=AncraParams, **kw):
    torch.manual_seed(0)
    params = params_cls(arch="small_ra_cnn", arch_kwargs={"width": 4}, num_classes=3, **kw)
    return AncraMethod.build(params, TrainConfig(seed=0))


def test_trades_ancra_with_zeta_0_and_lambda_0_is_plain_trades():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(8, 3, 8, 8, generator=g), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    x_adv = (x + 0.03 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    module = _module(procedure="trades", zeta=0.0, lambda_cr=0.0)
    module.adversarial = lambda x_, y_: x_adv
    module.net.train()
    losses = module.losses({"image": x, "label": y})
    nat = module.net.forward_all(x, y)[0]
    adv = module.net.forward_all(x_adv, y)[0]
    expected = F.cross_entropy(nat, y) + 6.0 * F.kl_div(F.log_softmax(adv, 1), F.softmax(nat, 1), reduction="batchmean")
    assert losses["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert "anc" not in losses
    # with the defaults every term is present and the ANC term is zeta * ANC_tot
    full = _module(procedure="trades")
    full.net.train()
    terms = full.losses({"image": x, "label": y})
    assert {"ce", "kl", "anc"} <= set(terms)
    assert terms["loss"].item() == pytest.approx((terms["ce"] + terms["kl"] + terms["anc"]).item(), rel=1e-5)


@pytest.mark.parametrize("procedure, keys", [("standard", {"ce"}), ("pgd_at", {"ce_adv"}), ("trades", {"ce", "kl"}),
                                             ("mart", {"mart"})])
def test_each_procedure_gives_finite_losses_and_gradients(procedure, keys):
    module = _module(AdversarialTrainingParams, procedure=procedure, steps=2)
    module.net.train()
    x, y = torch.rand(6, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    losses = module.losses({"image": x, "label": y})
    assert keys <= set(losses) and "anc" not in losses
    losses["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in module.net.parameters() if p.grad is not None)
    assert module.net.ra is False and module.net.training  # the attack restored the mode


def test_ce_total_weights_the_aux_heads():
    o = torch.randn(4, 3)
    aux = [torch.randn(4, 3), torch.randn(4, 3)]
    y = torch.tensor([0, 1, 2, 0])
    expected = F.cross_entropy(o, y) + 2.0 * (F.cross_entropy(aux[0], y) + F.cross_entropy(aux[1], y)) / 2
    assert ce_total((o, aux), y, 2.0).item() == pytest.approx(expected.item(), rel=1e-6)
    assert ce_total((o, []), y, 2.0).item() == pytest.approx(F.cross_entropy(o, y).item(), rel=1e-6)


def test_params_defaults_and_validation():
    assert AncraParams().ancra and AncraParams().procedure == "trades" and AncraParams().uses_ra
    base = AdversarialTrainingParams()
    assert not base.ancra and base.procedure == "pgd_at" and not base.uses_ra
    assert AncraParams(ra=False).uses_anc and not AncraParams(ra=False).uses_ra  # ANC-only ablation
    assert not AncraParams(zeta=0).uses_anc
    assert AncraParams(procedure="mart").label == "MART+ANCRA"
    with pytest.raises(ValueError):
        AncraParams(arch="vgg")
    with pytest.raises(ValueError):
        AncraParams(test_attacks=["deepfool"])
    with pytest.raises(ValueError):
        AncraParams(learning_rate=0.1)
    with pytest.raises(ValueError):
        AncraParams(test_attacks=[])


# -- 9. smoke training -------------------------------------------------------------------------------------------
def test_smoke_training_trades_ancra_on_gaussian_blobs():
    g = torch.Generator().manual_seed(0)
    n = 128
    y = torch.arange(n) % 2
    yy, xx = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    centres = torch.tensor([[2.0, 2.0], [5.5, 5.5]])[y]
    blobs = torch.exp(-((yy - centres[:, 0, None, None]) ** 2 + (xx - centres[:, 1, None, None]) ** 2) / 4.0)
    x = (0.8 * blobs + 0.1 * torch.rand(n, 8, 8, generator=g)).clamp(0, 1)[:, None].repeat(1, 3, 1, 1)
    torch.manual_seed(0)
    params = AncraParams(arch="small_ra_cnn", arch_kwargs={"width": 4}, num_classes=2, steps=3)
    module = AncraMethod.build(params, TrainConfig(seed=0))
    opt = torch.optim.SGD(module.net.parameters(), lr=0.05, momentum=0.9)
    epoch_losses = []
    for _ in range(2):
        perm = torch.randperm(n, generator=g)
        total = 0.0
        module.net.train()
        for i in range(0, n, 32):
            idx = perm[i:i + 32]
            loss = module.losses({"image": x[idx], "label": y[idx]})["loss"]
            assert torch.isfinite(loss)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        epoch_losses.append(total)
    assert epoch_losses[1] < epoch_losses[0]
    module.net.eval()
    with torch.no_grad():
        acc = (module.net(x).argmax(1) == y).float().mean().item()
    assert acc > 0.6, acc


def test_trades_kl_attack_and_plain_negatives_options():
    x, y = torch.rand(6, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    module = _module(procedure="trades", trades_attack="kl", negatives="random", steps=2)
    module.net.train()
    x_adv = module.adversarial(x, y)
    assert module.train_attack.loss_fn.__name__.startswith("ce+")  # the KL loss was only for this batch
    assert (x_adv - x).abs().max() <= module.params.eps + 1e-6 and not torch.equal(x_adv, x)
    x_neg, y_neg = module.negatives(x, y)
    assert (y_neg != y).all() and all(any(torch.equal(n, s) for s in x) for n in x_neg)  # unperturbed samples
    assert torch.isfinite(module.losses({"image": x, "label": y})["loss"])


def test_evaluation_attacks_and_soft_mask_transfer():
    ra = _module(test_attacks=["fgsm", "pgd20", "cw20", "pgd20_softmask", "apgd_ce"])
    suite = ra.evaluation_attacks()
    assert list(suite) == ["fgsm", "pgd20", "cw20", "pgd20_softmask", "apgd_ce"]
    assert suite["pgd20_softmask"].access == "transfer" and suite["pgd20"].access == "white-box"
    assert all(a.eps == ra.params.eps for a in suite.values()) and suite["pgd20"].steps == 20
    plain = _module(AdversarialTrainingParams, test_attacks=["pgd20", "pgd20_softmask"])
    assert list(plain.evaluation_attacks()) == ["pgd20"]  # no RA, no surrogate
    x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    ra.net.eval()
    x_adv = suite["pgd20_softmask"](x, y)
    assert (x_adv - x).abs().max() <= ra.params.eps + 1e-6 and not ra.net.training
