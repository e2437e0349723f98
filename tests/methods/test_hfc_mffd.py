"""HFC-MFFD: patching and patch order, DCT and Welford, intra-attention axis, losses, hierarchical
decision, fusion, modalities, and one end-to-end run on the embedded data."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

import visec.methods.hfc_mffd as hfc  # registers the method
from visec.config import load_config
from visec.engine import Engine, build_module
from visec.engine.engine import card_name
from visec.errors import ConfigError
from visec.methods.hfc_mffd import (HFCMFFDNet, IntraAttentionHead, cal_stride, column_to_row_major,
                                    extract_patches, fit_fusion_logits, hfc_loss, hierarchical_decision,
                                    image_head_weight_column_to_row, nine_crops, paint_patches, patch_offsets,
                                    patches_column_to_row)
from visec.preprocess.frequency import WelfordStats, dct2, idct2
from visec.registry import METHODS


def tiny_net(**kw) -> HFCMFFDNet:
    args = dict(patch_size=16, num_families=3, rgb_backbone="tiny_cnn", dct_backbone="tiny_cnn",
                rgb_backbone_kwargs={"width": 4}, dct_backbone_kwargs={"width": 4}, d_model=16, nhead=2,
                ffn_dim=32, patch_hidden=(16,), image_hidden=(16,), dropout=0.0, attn_dropout=0.0)
    args.update(kw)
    torch.manual_seed(0)
    return HFCMFFDNet(**args).eval()


# -- patching ------------------------------------------------------------------------------------
def test_cal_stride_matches_the_official_grid():
    assert cal_stride(224, 128) == (9, 48)
    assert cal_stride(64, 32) == (9, 16)
    assert cal_stride(256, 128) == (9, 64)
    with pytest.raises(ValueError):
        cal_stride(100, 128)


def test_patches_are_the_manual_slices_in_row_major_order(one_torch_thread):
    x = torch.rand(2, 1, 224, 224)
    p = extract_patches(x, 128)
    assert p.shape == (2, 9, 1, 128, 128)
    offsets = [(t, left) for t in (0, 48, 96) for left in (0, 48, 96)]
    assert patch_offsets(224, 128) == offsets
    for i, (t, left) in enumerate(offsets):
        assert torch.equal(p[:, i], x[..., t:t + 128, left:left + 128])


def test_column_major_adapter_known_answer(one_torch_thread):
    assert column_to_row_major() == [0, 3, 6, 1, 4, 7, 2, 5, 8]
    # ForgeryNIR's nine crops on a 256x256 index image: column-major top-left corners
    assert patch_offsets(256, 128, order="column") == [(0, 0), (64, 0), (128, 0), (0, 64), (64, 64), (128, 64),
                                                       (0, 128), (64, 128), (128, 128)]
    index = torch.arange(256 * 256, dtype=torch.float64).view(1, 1, 256, 256)
    crops = nine_crops(index, 128, order="column")
    assert [int(c[0, 0, 0]) // 256 for c in crops[0]] == [0, 64, 128, 0, 64, 128, 0, 64, 128]  # rows
    assert [int(c[0, 0, 0]) % 256 for c in crops[0]] == [0, 0, 0, 64, 64, 64, 128, 128, 128]  # columns
    assert torch.equal(patches_column_to_row(crops), extract_patches(index, 128))


def test_released_image_head_adapts_to_row_major_patches(one_torch_thread):
    torch.manual_seed(0)
    head = IntraAttentionHead(8, 9, 2, (12,), nhead=2, ffn=16, attn_dropout=0.0, dropout=0.0).eval()
    adapted = copy.deepcopy(head)
    with torch.no_grad():
        adapted.mlp[0].weight.copy_(image_head_weight_column_to_row(head.mlp[0].weight))
    rows = torch.randn(3, 9, 8)
    cols = rows[:, column_to_row_major()]  # the same patches in ForgeryNIR's column order
    torch.testing.assert_close(adapted(rows), head(cols))
    assert not torch.allclose(head(rows), head(cols))


def test_training_and_testing_cut_the_same_row_major_patches(one_torch_thread):
    module = build_module(load_config("hfc_mffd", [
        "model.patch_size=32", "model.rgb_backbone=tiny_cnn", "model.rgb_weights=null", "model.dct_backbone=tiny_cnn",
        "model.d_model=16", "model.nhead=2", "model.ffn_dim=32", "model.patch_hidden=[16]", "model.image_hidden=[16]"]))
    seen: list[torch.Tensor] = []
    module.net.rgb.backbone.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    x = torch.rand(2, 3, 64, 64)
    batch = {"image": x, "label": torch.tensor([0.0, 1.0]), "family": torch.tensor([-1, 2]),
             "index": torch.arange(2)}
    module.train()
    module.losses(batch)  # the training step's path
    module.eval()
    with torch.no_grad():
        module.test_step(batch, 0)  # the evaluation path
        module(x)  # predict / attacks
    assert len(seen) == 3 and torch.equal(seen[0], seen[1]) and torch.equal(seen[0], seen[2])
    patches = seen[0].view(2, 9, 3, 32, 32)
    for i, (t, left) in enumerate(patch_offsets(64, 32)):
        torch.testing.assert_close(patches[:, i], module.net.normalize(x)[..., t:t + 32, left:left + 32])


# -- what a permutation of the patches does ------------------------------------------------------
def test_patch_permutation_permutes_patch_logits_and_changes_the_image_head(one_torch_thread):
    net = tiny_net()
    tokens = torch.randn(2, 9, 16)
    perm = torch.tensor([4, 0, 8, 2, 1, 7, 3, 6, 5])
    with torch.no_grad():
        a, b = net.rgb.heads(tokens), net.rgb.heads(tokens[:, perm])
        # the attention layer alone is permutation-equivariant over patch tokens (no positions)
        enc = net.rgb.image_binary.encoder
        torch.testing.assert_close(enc(tokens[:, perm]), enc(tokens)[:, perm])
    torch.testing.assert_close(b["patch"], a["patch"][:, perm])  # per-patch logits permute exactly
    torch.testing.assert_close(b["patch_family"], a["patch_family"][:, perm])
    assert not torch.allclose(b["image"], a["image"], atol=1e-4)  # flatten makes the image head order-sensitive


@pytest.mark.parametrize("legacy", [False, True])
def test_attention_runs_within_an_image_unless_legacy(legacy, one_torch_thread):
    torch.manual_seed(0)
    head = IntraAttentionHead(8, 9, 2, (12,), nhead=2, ffn=16, attn_dropout=0.0, dropout=0.0,
                              legacy_batch_axis_attention=legacy).eval()
    x = torch.randn(4, 9, 8)
    y = x.clone()
    y[1:] = torch.randn(3, 9, 8)  # other samples change, sample 0 does not
    with torch.no_grad():
        out_x, out_y, out_perm = head(x), head(y), head(x[[2, 0, 3, 1]])
    if legacy:  # the official code: attention over the batch axis couples the samples
        assert not torch.allclose(out_x[0], out_y[0], atol=1e-4)
    else:
        torch.testing.assert_close(out_x[0], out_y[0])
        torch.testing.assert_close(out_perm, out_x[[2, 0, 3, 1]])


# -- DCT and Welford (visec.preprocess.frequency) ------------------------------------------------
def test_dct_round_trip_parseval_and_constant_patch():
    torch.manual_seed(0)
    x = torch.rand(5, 128, 128)
    c = dct2(x)
    assert (idct2(c) - x).abs().max() < 1e-5
    torch.testing.assert_close((c ** 2).sum((-2, -1)), (x ** 2).sum((-2, -1)), rtol=1e-5, atol=1e-3)
    const = dct2(torch.full((1, 32, 32), 0.7, dtype=torch.float64))
    assert math.isclose(float(const[0, 0, 0]), 0.7 * 32, rel_tol=1e-12)  # DC = mean * sqrt(h*w)
    rest = const.clone()
    rest[0, 0, 0] = 0
    assert rest.abs().max() < 1e-12


def test_welford_equals_numpy_mean_and_population_variance():
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(103, 4, 5))
    stats = WelfordStats()
    for lo, hi in ((0, 1), (1, 40), (40, 41), (41, 103)):
        stats.update(torch.from_numpy(data[lo:hi]))
    assert stats.count == 103
    np.testing.assert_allclose(stats.mean.numpy(), data.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.var.numpy(), data.var(0, ddof=0), rtol=1e-10)


def test_dct_statistics_standardise_the_training_patches_and_travel_with_the_checkpoint(tmp_path,
                                                                                        one_torch_thread):
    from visec.checkpoint import load_into, load_state_dict_file, save_checkpoint

    torch.manual_seed(0)
    images = torch.rand(10, 3, 32, 32) * torch.linspace(0.2, 1, 10).view(10, 1, 1, 1)
    loader = [{"image": images[:3]}, {"image": images[3:]}]
    stats = hfc.dct_statistics(loader, k=16)
    net = tiny_net()
    net.set_dct_stats(stats)
    _, coeffs = net.patches(images)
    z = net.standardise(coeffs).flatten(0, 1).double()  # 90 patches
    assert float(net.dct_count) == 90
    torch.testing.assert_close(z.mean(0), torch.zeros(16, 16, dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.var(0, unbiased=False), torch.ones(16, 16, dtype=torch.float64), atol=1e-3, rtol=0)
    save_checkpoint(net, tmp_path / "w.safetensors", {})
    fresh = tiny_net()
    load_into(fresh, load_state_dict_file(tmp_path / "w.safetensors"))
    assert torch.equal(fresh.dct_mean, net.dct_mean) and torch.equal(fresh.dct_std, net.dct_std)


# -- losses, decision, fusion ---------------------------------------------------------------------
def test_alpha_loss_known_answer():
    patch = torch.tensor([[[0.0, 0.0], [math.log(3), 0.0]]])  # one image, two patches
    image = torch.tensor([[0.0, math.log(3)]])
    target = torch.tensor([1])
    # patches: CE([0,0]) = ln 2, CE([ln3, 0] -> 1) = ln 4; image: CE([0, ln3] -> 1) = ln(4/3)
    expected = 0.6 * (math.log(2) + math.log(4)) / 2 + 0.4 * math.log(4 / 3)
    assert math.isclose(float(hfc_loss(patch, image, target, 0.6)), expected, rel_tol=1e-6)
    assert math.isclose(float(hfc_loss(patch, image, target, 1.0)), 1.5 * math.log(2), rel_tol=1e-6)


def test_hierarchical_decision_known_answer():
    binary = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    family = torch.tensor([[float("nan")] * 4, [0.0, 0.0, 3.0, 0.0]])  # a real's family row is never read
    assert hierarchical_decision(binary, family).tolist() == [0, 3]
    assert hierarchical_decision(binary[:1], family[:1]).tolist() == [0]
    assert hierarchical_decision(torch.tensor([[0.0, 1.0]]), torch.tensor([[5.0, 0.0, 0.0]])).tolist() == [1]


def test_fusion_weights_learn_which_branch_is_informative():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (400,), generator=g)
    informative = torch.stack([-(2 * y - 1.0), 2 * y - 1.0], 1) * 2 + torch.randn(400, 2, generator=g)
    noise = torch.randn(400, 2, generator=g) * 3
    w = torch.softmax(fit_fusion_logits([noise, informative], y), 0)
    assert math.isclose(float(w.sum()), 1.0, rel_tol=1e-6) and w[1] > 0.8

    def acc(weights):
        return float(((weights[0] * noise + weights[1] * informative).argmax(1) == y).float().mean())

    assert acc(w) > acc(torch.tensor([0.5, 0.5])) + 0.05


# -- modalities, saliency, registration -----------------------------------------------------------
def test_vis_nir_forward_feeds_rgb_and_nir_to_their_branches(one_torch_thread):
    net = tiny_net()
    x = torch.rand(2, 4, 32, 32)
    y = x.clone()
    y[:, 3] = torch.rand(2, 32, 32)  # only the NIR channel changes
    with torch.no_grad():
        ox, oy = net.forward_branches(x), net.forward_branches(y)
        assert net(x).shape == (2,)
    torch.testing.assert_close(ox["rgb"]["image"], oy["rgb"]["image"])
    assert not torch.allclose(ox["dct"]["image"], oy["dct"]["image"])
    nir = x[:, 3:4].expand(-1, 3, -1, -1)  # data.modality=nir: the DCT branch sees the NIR image itself
    torch.testing.assert_close(net.patches(nir)[1], net.patches(x)[1], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="vis\\+nir"):
        net(torch.rand(1, 2, 32, 32))


def test_patch_saliency_is_painted_back_with_overlaps_averaged(one_torch_thread):
    painted = paint_patches(torch.arange(9.0)[None], (64, 64), 32)
    assert painted.shape == (1, 64, 64)
    assert painted[0, 0, 0] == 0 and painted[0, 63, 63] == 8 and painted[0, 0, 63] == 2
    assert painted[0, 20, 20] == (0 + 1 + 3 + 4) / 4  # covered by the four top-left patches
    module = build_module(load_config("hfc_mffd", ["model.rgb_backbone=tiny_cnn", "model.rgb_weights=null"]))
    sal = module.saliency(torch.rand(2, 3, 64, 64))
    assert sal.shape == (2, 64, 64) and sal.min() >= 0 and sal.max() <= 1


def test_registered_for_every_modality_and_checks_the_family_count(synth_small, tmp_path):
    method = METHODS.get("hfc_mffd").obj
    assert method.modalities == ("vis", "nir", "vis+nir") and method.family == "forgery detection"
    assert load_config("hfc_mffd", ["data.modality=vis+nir"]).data.modality == "vis+nir"
    assert card_name(load_config("hfc_mffd", ["model.legacy_batch_axis_attention=true",
                                              "model.rgb_weights=null"])) == \
        "hfc_mffd+legacy-attention"
    ffpp = load_config("hfc_mffd/ffpp")
    assert ffpp.model["rgb_backbone"] == "resnet50" and ffpp.model["patch_size"] == 128
    assert ffpp.data.image_size == 224 and ffpp.model["alpha"] == 0.6
    cfg = load_config("hfc_mffd", [f"data.manifest={synth_small.manifest}", "model.num_families=2",
                                   f"output_dir={tmp_path}", "name=k2"])
    with pytest.raises(ConfigError, match="model.num_families=3"):
        Engine(cfg).fit()


# -- end to end ------------------------------------------------------------------------------------
def test_end_to_end_run_keeps_its_statistics_and_reports_the_hierarchy(e2e_run, one_torch_thread):
    """The shared tiny run (tests/conftest.py E2E_RUNS; the contract test checks it learns)."""
    engine, _ = e2e_run("hfc_mffd")
    module, _ = engine.load_module()
    assert float(module.net.dct_count) > 0  # the Welford statistics came back with the checkpoint
    card = engine.test()
    hier = card.metrics["hierarchical"]
    assert 0 <= hier["acc"]["value"] <= 1 and 0 <= hier["type_acc"]["value"] <= 1
    assert hier["classes"] == "real|component|faceswap|resynth"
    # each branch's own AUC and fusion weight: the weights are the checkpoint's, and sum to one
    branches = card.metrics["branches"]
    w = module.net.fusion_weights("binary")
    assert set(branches) == {"rgb", "dct"}
    assert [branches[b]["fusion_weight"] for b in ("rgb", "dct")] == pytest.approx(w.tolist(), abs=1e-6)
    assert all(0 <= v["auc"] <= 1 for v in branches.values())
