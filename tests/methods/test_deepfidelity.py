"""DeepFidelity: the SSAA symmetry properties, the fidelity stage and an end-to-end tiny run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import visec.methods.deepfidelity  # noqa: F401  (registers the method)
from visec.config import load_config
from visec.engine import build_module
from visec.methods.deepfidelity import (CBlock, RBFSVR, SharpnessJPEGQuality, SSAAFormer, SymmetricFusion,
                                        fidelity_targets)

TINY = dict(depths=(1, 1, 1, 1), dims=(16, 32, 64, 128), head_dim=16)


def _mirror_symmetric_(conv: torch.nn.Conv2d) -> None:
    """Make a conv's kernels left-right symmetric (then the conv commutes with flip_W)."""
    with torch.no_grad():
        conv.weight.copy_(0.5 * (conv.weight + conv.weight.flip(-1)))


def test_fusion_at_init_is_mirror_symmetric_and_w_steers_it(one_torch_thread):
    torch.manual_seed(0)
    fuse = SymmetricFusion()
    assert torch.equal(fuse.w.detach(), torch.ones(2))
    assert torch.allclose(fuse.weights().sum(), torch.tensor(1.0))
    a = torch.randn(2, 4, 6, 8)
    (fuse(a) * torch.randn_like(a)).sum().backward()  # w learns (a gradient at initialisation)
    assert fuse.w.grad is not None and fuse.w.grad.abs().sum() > 1e-3
    out = fuse(a).detach()
    assert torch.allclose(out, out.flip(-1), atol=1e-6)  # a~ equals its own width-mirror
    assert not torch.allclose(out, out.flip(-2), atol=1e-3)  # ... along W, not H
    assert torch.allclose(fuse(a.flip(-1)), out, atol=1e-6)  # a mirrored input gives the same a~
    with torch.no_grad():
        fuse.w.copy_(torch.tensor([10.0, -10.0]))
    assert torch.allclose(fuse(a), a, atol=1e-6)  # alpha = sigmoid(20): a~ ~ a


def test_ssaa_block_is_mirror_equivariant_with_symmetric_kernels(one_torch_thread):
    """flip_W commutes with elementwise ops, BN and 1x1 convs, and with a k x k conv exactly when the
    kernel is left-right symmetric. With such kernels (and any w) the CBlock_flip satisfies
    ``block(flip(x)) == flip(block(x))``; with the SSAA weights at init the fused map is also
    mirror-invariant, so the attention branch only adds a mirror-symmetric term."""
    torch.manual_seed(0)
    block = CBlock(8, layer_scale=0.5, ssaa=True).eval()
    for conv in (block.pos_embed, block.attn):
        _mirror_symmetric_(conv)
    with torch.no_grad():
        block.norm1.running_mean.uniform_(-0.5, 0.5)
        block.norm2.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 8, 10, 12)
    with torch.no_grad():
        y = block(x)
        assert torch.allclose(block(x.flip(-1)), y.flip(-1), atol=1e-5)
        # at init, the SSAA branch input a~ is the same for x and its mirror
        xp = x + block.pos_embed(x)
        xm = x.flip(-1) + block.pos_embed(x.flip(-1))
        assert torch.allclose(block.fuse(block.local_map(xp)), block.fuse(block.local_map(xm)), atol=1e-5)
        block.fuse.w.copy_(torch.tensor([2.0, -1.0]))
        assert torch.allclose(block(x.flip(-1)), block(x).flip(-1), atol=1e-5)
    # a plain CBlock with generic kernels is not mirror-equivariant: the property is not trivial
    torch.manual_seed(1)
    plain = CBlock(8, layer_scale=0.5).eval()
    with torch.no_grad():
        assert not torch.allclose(plain(x.flip(-1)), plain(x).flip(-1), atol=1e-3)


def test_tiny_ssaaformer_shapes_and_heads(one_torch_thread):
    torch.manual_seed(0)
    net = SSAAFormer(**TINY).eval()
    x = torch.rand(2, 3, 64, 64)
    assert len(net.fusions()) == 1 and len(list(net.stages[0][0].modules())) > 1
    with torch.no_grad():
        fmap, box = net.forward_map(x)
        logit, tokens = net.forward_heads(fmap)
        feat = SSAAFormer.pool(fmap)
    assert box is None and fmap.shape == (2, 128, 2, 2)
    assert net(x).shape == (2,) and logit.shape == (2,) and tokens.shape == (2, 4)
    assert feat.shape == (2, 128)
    flat = fmap.flatten(2)
    assert torch.allclose(feat, flat.mean(-1) + 0.5 * flat.amax(-1))  # the official feature
    # MixToken: the box covers whole final tokens
    mixer = SSAAFormer(**TINY, patch_sizes=(2, 2, 2, 2), mix_token=True).train()
    np.random.seed(0)
    torch.manual_seed(0)
    fmap, box = mixer.forward_map(torch.rand(4, 3, 64, 64), mix=True)
    y0, y1, x0, x1 = box
    assert fmap.shape[-2:] == (4, 4) and 0 <= y0 < y1 <= 4 and 0 <= x0 < x1 <= 4
    # depth-wise stochastic depth rises linearly to drop_path
    deep = SSAAFormer(depths=(2, 2, 2, 2), dims=(16, 32, 64, 128), head_dim=16, drop_path=0.7)
    rates = [b.drop_path for s in deep.stages for b in s]
    assert rates[0] == 0 and rates[-1] == pytest.approx(0.7) and np.all(np.diff(rates) > 0)


def test_quality_mapping_known_answers():
    q = [1.0, 2.0, 3.0, 5.0, 7.0]
    y = [1, 1, 1, 0, 0]
    assert np.allclose(fidelity_targets(q, y), [0.0, 0.2, 0.4, 0.6, 1.0])
    # monotone inside each class, whatever the order
    t = fidelity_targets([3.0, 1.0, 7.0, 2.0, 5.0], [1, 1, 0, 1, 0])
    assert np.allclose(t, [0.4, 0.0, 1.0, 0.2, 0.6])
    # a constant class maps to the middle of its range
    assert np.allclose(fidelity_targets([4.0, 4.0, 9.0, 9.0], [1, 1, 0, 0]), [0.2, 0.2, 0.8, 0.8])
    assert np.allclose(fidelity_targets([4.0], [0]), [0.8])
    with pytest.raises(ValueError):
        fidelity_targets([1.0, np.nan], [0, 1])


def test_quality_ranks_degraded_faces_below_the_original():
    from skimage.data import astronaut

    from visec.data.corruptions import blur, jpeg, noise, resize

    face = np.ascontiguousarray(astronaut()[30:222, 140:332])  # the face, 192 x 192
    variants = [face, jpeg(face, 40), jpeg(face, 15), blur(face, 1.5), resize(face, 0.5), noise(face, 8, seed=0)]
    x = torch.from_numpy(np.stack(variants)).permute(0, 3, 1, 2).float() / 255
    measure = SharpnessJPEGQuality()
    q = measure.score(x)
    assert q.shape == (6,)
    assert (q[1:] < q[0]).all(), q
    assert q[2] < q[1]  # harder compression, lower quality
    c = measure.components(x)
    assert c["blockiness"][2] > c["blockiness"][0] + 0.05  # the 8x8 grid shows
    assert c["noise"][5] > 1.5 * c["noise"][0]  # sigma 8 added to sigma ~3 of texture


def test_torch_rbf_svr_equals_sklearn_and_resizes_on_load():
    from sklearn.svm import SVR

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5))
    t = np.tanh(x[:, 0] - x[:, 1]) * 0.5 + 0.5
    ref = SVR().fit(x, t)
    head = RBFSVR(5, capacity=64)
    assert not head.is_fitted
    head.fit(x, t)
    probe = rng.normal(size=(25, 5))
    got = head(torch.tensor(probe, dtype=torch.float32)).numpy()
    assert np.abs(got - ref.predict(probe.astype(np.float32))).max() < 1e-5
    assert int(head.n_support) == ref.support_vectors_.shape[0] and head.is_fitted
    # gradient flows to the features (attacks and Grad-CAM go through the SVR)
    f = torch.tensor(probe[:3], dtype=torch.float32, requires_grad=True)
    head(f).sum().backward()
    assert f.grad is not None and f.grad.abs().sum() > 0
    # a state dict of another capacity loads (buffers resize) and scores identically
    other = RBFSVR(5, capacity=8)
    other.load_state_dict(head.state_dict())
    assert other.capacity == 64 and other.is_fitted
    assert torch.allclose(other(torch.tensor(probe)), head(torch.tensor(probe)))
    with pytest.raises(ValueError, match="capacity"):
        RBFSVR(5, capacity=10).fit(x, t)


def test_tiny_fitted_run_scores_in_ranges_and_round_trips(e2e_run, one_torch_thread):
    """End to end on the embedded data (the shared run of tests/conftest.py E2E_RUNS, whose test
    AUC the contract test checks): stage A, the fidelity stage, checkpoint round trip."""
    from visec.engine.engine import LAST

    engine, fit = e2e_run("deepfidelity")
    cfg = engine.cfg
    card = engine.test()
    assert "stage_a" in card.metrics and 0 <= card.metrics["stage_a"]["auc"]["value"] <= 1
    assert fit["best_epoch"] is not None
    # every epoch's stage B logs how it separates its own training set
    import pandas as pd

    logged = pd.read_csv(engine.run_dir / "logs" / "metrics.csv")
    assert logged["train/svr_auc"].notna().sum() == cfg.train.max_epochs
    assert logged["train/svr_auc"].dropna().between(0, 1).all()

    # the fidelity stage on the training split: targets in their ranges, scores ordered by class
    module, _ = engine.load_module(engine.run_dir / LAST)
    assert module.net.svr.is_fitted
    from visec.engine.engine import build_datamodule

    data = module.fidelity_training_set(build_datamodule(cfg))
    real, fake = data["label"] == 0, data["label"] == 1
    assert data["target"][real].min() == pytest.approx(0.6) and data["target"][real].max() == pytest.approx(1.0)
    assert data["target"][fake].min() == pytest.approx(0.0) and data["target"][fake].max() == pytest.approx(0.4)
    s = module.net.svr(torch.tensor(data["features"])).numpy()
    eps = cfg.model["svr_epsilon"]
    # the SVR regresses onto the ranges: most training scores land within epsilon of their range
    assert np.mean((s[real] >= 0.6 - eps) & (s[real] <= 1.0 + eps)) > 0.85
    assert np.mean((s[fake] >= -eps) & (s[fake] <= 0.4 + eps)) > 0.85
    assert 0.6 <= np.median(s[real]) <= 1.0 and 0.0 <= np.median(s[fake]) <= 0.4
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(real, s) > 0.95  # the scorer separates the classes it was fitted on

    # checkpoint round trip: the loaded model scores exactly as the saved one did
    x = torch.rand(4, 3, 32, 32)
    again, _ = engine.load_module(engine.run_dir / LAST)
    module.eval(), again.eval()
    with torch.no_grad():
        assert torch.equal(module.net(x), again.net(x))
    p = torch.sigmoid(again.net(x))
    with torch.no_grad():
        direct = (1 - again.net.fidelity(x)).clamp(0, 1)
    assert torch.allclose(p, direct.clamp(1e-6, 1 - 1e-6), atol=1e-6)
    maps = again.saliency(x[:2])
    assert maps.shape == (2, 32, 32) and float(maps.min()) >= 0 and float(maps.max()) <= 1


def test_unfitted_model_falls_back_to_the_class_logit(one_torch_thread):
    torch.manual_seed(0)
    module = build_module(load_config("deepfidelity", ["model.depths=[1,1,1,1]", "model.dims=[16,32,64,128]",
                                                       "model.head_dim=16"]))
    net = module.net.eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(net(x), net.class_logit(x))
        assert net.features(x).shape == (2, 128)
    with pytest.raises(RuntimeError, match="not fitted"):
        net.fidelity(x)
    with pytest.warns(UserWarning, match="no fidelity SVR"):
        out = module._scores(x)
    assert torch.equal(out["prob"], out["prob_stage_a"])
