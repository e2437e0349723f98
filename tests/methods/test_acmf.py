"""ACMF: masked frequency forgery representation identities, flooding, attention consistency,
the per-video FAC reset, Grad-CAM localisation, and a tiny end-to-end run with and without FAC."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import visec.methods.acmf  # noqa: F401  (registers "acmf")
from visec.config import load_config
from visec.engine import Engine, build_module
from visec.engine.engine import card_name
from visec.methods.acmf import (ACMFNet, ForgeryAttentionConsistency, MaskedFrequency,
                                attention_consistency, default_half_width, flood, masked_frequency)
from visec.models.cam import GradCAM, grad_cam
from visec.preprocess.frequency import fft_highpass, low_frequency_box


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- MFR ---------------------------------------------------------------------------------------------
def test_zero_mask_ratio_leaves_the_input_unchanged():
    x = torch.rand(3, 3, 32, 32, generator=_gen())
    for mode in ("spatial", "spectral"):
        assert torch.equal(masked_frequency(x, 0.0, mode=mode, generator=_gen(1)), x)


def test_spatial_mfr_is_x_minus_dropped_highpass_and_keeps_the_low_part_exactly():
    x = torch.rand(2, 3, 48, 48, generator=_gen())
    d = 3
    out, keep = masked_frequency(x, 0.3, d, generator=_gen(1), return_mask=True)
    high = fft_highpass(x, d, absolute=True)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out, x - (1 - keep) * high)
    dropped = keep == 0
    assert dropped.any() and (~dropped).any()
    assert torch.equal(out[..., dropped], (x - high)[..., dropped])  # L = x - H on dropped pixels
    assert torch.equal(out[..., ~dropped], x[..., ~dropped])  # M * H + L = x where kept
    # r = 1 drops every pixel's high-frequency part
    assert torch.equal(masked_frequency(x, 1.0, d, generator=_gen(2)), x - high)
    # the signed variant: L is then the true low-pass image
    signed = masked_frequency(x, 1.0, d, absolute=False, generator=_gen(2))
    spec = torch.fft.fftshift(torch.fft.fft2(signed), dim=(-2, -1))
    box = low_frequency_box(48, 48, d + 1)  # the box and its Hermitian partners (frequency +d)
    assert spec[..., ~box].abs().max() < 1e-3


def test_spectral_mfr_keeps_the_low_box_of_the_spectrum_exactly():
    x = torch.rand(2, 3, 40, 40, generator=_gen())
    d = 4
    out, keep = masked_frequency(x, 0.5, d, mode="spectral", generator=_gen(3), return_mask=True)
    sx = torch.fft.fftshift(torch.fft.fft2(x.double()), dim=(-2, -1))
    so = torch.fft.fftshift(torch.fft.fft2(out.double()), dim=(-2, -1))
    box = low_frequency_box(40, 40, d)
    assert torch.allclose(so[..., box], sx[..., box], atol=1e-4)
    assert bool(keep[box].all())
    outside = ~box
    dropped = keep[outside] == 0
    assert 0.4 < dropped.float().mean() < 0.6
    # dropped coefficients are gone, kept ones untouched (the mask is Hermitian-symmetric)
    assert so[..., outside][..., dropped].abs().max() < 1e-3
    kept = ~dropped
    assert torch.allclose(so[..., outside][..., kept], sx[..., outside][..., kept], atol=1e-3)


def test_constant_image_is_left_alone_for_any_ratio():
    x = torch.full((2, 3, 32, 32), 0.37)
    for mode in ("spatial", "spectral"):
        for r in (0.3, 1.0):
            assert torch.allclose(masked_frequency(x, r, 2, mode=mode, generator=_gen()), x, atol=1e-5)


def test_one_mask_for_the_batch_and_channels_with_the_right_drop_rate():
    x = torch.rand(3, 3, 224, 224, generator=_gen())
    r = 0.1
    out, keep = masked_frequency(x, r, generator=_gen(5), return_mask=True)
    changed = out != x  # |H| > 0 almost everywhere on noise
    assert torch.equal(changed[0], changed[1]) and torch.equal(changed[0, 0], changed[0, 2])
    assert torch.equal(changed[0, 0], keep == 0)
    n = 224 * 224
    frac = (keep == 0).float().mean().item()
    assert abs(frac - r) < 3 * math.sqrt(r * (1 - r) / n)


def test_frequency_sanity_low_sinusoid_is_kept_high_one_is_removed():
    n = 64
    t = torch.arange(n, dtype=torch.float64)
    low = torch.sin(2 * math.pi * 2 * t / n)[None, :].expand(n, n)[None, None]
    high = torch.sin(2 * math.pi * 20 * t / n)[None, :].expand(n, n)[None, None]
    d = default_half_width(n * 224 // 64)  # 5 at 224 px
    assert fft_highpass(low, d).abs().max() < 1e-6  # float32 inside
    assert torch.allclose(fft_highpass(high, d), high.abs(), atol=1e-6)
    assert default_half_width(224) == 5 and default_half_width(64) == 1 and default_half_width(16) == 1


def test_mfr_module_only_masks_in_training():
    mfr = MaskedFrequency(r=1.0, d=2)
    x = torch.rand(2, 3, 16, 16, generator=_gen())
    assert torch.equal(mfr.eval()(x), x)
    assert torch.equal(mfr.train()(x), x - fft_highpass(x, 2))


def test_stage1_trains_on_the_masked_input_and_evaluates_on_the_plain_one(one_torch_thread):
    torch.manual_seed(0)
    module = build_module(load_config("acmf", ["model.backbone=tiny_cnn", "model.dropout=0",
                                               "model.mask_ratio=1.0", "model.low_pass=2"]))
    x = torch.rand(4, 3, 32, 32, generator=_gen())
    y = torch.tensor([0.0, 1.0, 0.0, 1.0])
    module.train()
    loss = module.losses({"image": x, "label": y})["loss"]
    expected = F.binary_cross_entropy_with_logits(module(x - fft_highpass(x, 2)), y)
    assert torch.allclose(loss, expected, atol=1e-6)
    module.eval()
    assert torch.allclose(module.losses({"image": x, "label": y})["loss"],
                          F.binary_cross_entropy_with_logits(module(x), y))


# -- losses -------------------------------------------------------------------------------------------
def test_flooding_gradient_flips_below_the_flood_level():
    for value, sign in ((0.02, -1.0), (0.5, 1.0)):
        loss = torch.tensor(value, requires_grad=True)
        out = flood(loss, 0.04)
        out.backward()
        assert loss.grad.item() == sign
        assert out.item() == pytest.approx(abs(value - 0.04) + 0.04)


def test_consistency_loss_is_zero_for_identical_maps_and_positive_otherwise():
    maps = torch.rand(5, 16, 16, generator=_gen())
    assert attention_consistency(maps, maps.mean(0)).item() == 0.0
    assert attention_consistency(maps, 1 - maps.mean(0)).item() > 0


def _tiny_adapter(**kw) -> tuple[ACMFNet, ForgeryAttentionConsistency, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = ACMFNet("tiny_cnn", dropout=0.0).eval()
    src = torch.rand(12, 3, 32, 32, generator=_gen(1))
    labels = torch.tensor([0.0, 1.0] * 6)
    fac = ForgeryAttentionConsistency(net, MaskedFrequency(0.1), source_batch=6, **kw)
    fac.set_source(src, labels)
    return net, fac, src, labels


def test_consistency_is_zero_when_target_is_source_under_theta0(one_torch_thread):
    net, fac, src, _ = _tiny_adapter()
    with torch.enable_grad():
        loss = attention_consistency(fac._cams(src), fac.source_map)
    assert loss.item() < 1e-12
    assert fac.source_map.shape == (32, 32) and 0 <= fac.source_map.min() and fac.source_map.max() <= 1


def test_fac_resets_to_theta0_bit_for_bit_between_videos(one_torch_thread):
    net, fac, _, _ = _tiny_adapter()
    theta0 = {k: v.clone() for k, v in net.state_dict().items()}
    starts: list[dict[str, torch.Tensor]] = []
    step = fac._step

    def recording_step(frames, opt, gen):
        if len(fac.history_probe) == 0:
            starts.append({k: v.clone() for k, v in net.state_dict().items()})
        fac.history_probe.append(1)
        return step(frames, opt, gen)

    fac._step = recording_step
    video1 = torch.rand(3, 3, 32, 32, generator=_gen(7))
    video2 = torch.rand(2, 3, 32, 32, generator=_gen(8))
    fac.history_probe = []
    fac.adapt(video1, key="v1")
    assert any(not torch.equal(v, theta0[k]) for k, v in net.state_dict().items())  # it did adapt
    fac.history_probe = []
    p2 = fac.adapt_and_predict(video2, key="v2")
    for state in starts:
        assert all(torch.equal(state[k], theta0[k]) for k in theta0)
    assert all(torch.equal(v, theta0[k]) for k, v in net.state_dict().items())  # restored afterwards
    # the same video alone on a fresh adapter gives bit-identical scores (no state leaks across videos)
    _, fresh, _, _ = _tiny_adapter()
    assert torch.equal(fresh.adapt_and_predict(video2, key="v2"), p2)
    # the parity flag carries AdamW's moments across videos, so the scores then differ
    _, carry, _, _ = _tiny_adapter(carry_optimizer_state=True)
    carry.adapt(video1, key="v1")
    assert not torch.equal(carry.adapt_and_predict(video2, key="v2"), p2)


# -- Grad-CAM (visec.models.cam) -----------------------------------------------------------------------
class _QuadrantNet(nn.Module):
    """A 1x1 conv (the CAM layer) fires on one colour per channel (white fires on all three); the
    fake logit is the mean ReLU activation inside one quadrant."""

    def __init__(self, quadrant: tuple[int, int]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.conv.bias.fill_(-0.5)
        self.quadrant = quadrant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.conv(x))
        h, w = a.shape[-2:]
        qi, qj = self.quadrant
        return a[..., qi * h // 2:(qi + 1) * h // 2, qj * w // 2:(qj + 1) * w // 2].mean(dim=(1, 2, 3))


def test_grad_cam_peaks_in_the_quadrant_that_drives_the_logit():
    img = torch.zeros(1, 3, 32, 32)
    img[0, 0, :16, :16] = 1  # red top-left
    img[0, 1, :16, 16:] = 1  # green top-right
    img[0, 2, 16:, :16] = 1  # blue bottom-left
    img[0, :, 16:, 16:] = 1  # white bottom-right
    for qi in (0, 1):
        for qj in (0, 1):
            net = _QuadrantNet((qi, qj))
            cam = grad_cam(net.conv, net, img, target="fake")
            assert cam.shape == (1, 32, 32) and cam.min() >= 0 and cam.max() <= 1
            peak = divmod(int(cam[0].argmax()), 32)
            assert (peak[0] // 16, peak[1] // 16) == (qi, qj)
            inside = cam[0, qi * 16 + 2:qi * 16 + 14, qj * 16 + 2:qj * 16 + 14]
            assert inside.min() > 0.99
    with GradCAM(net.conv) as cam_fn:  # the map keeps its graph through the activations
        maps = cam_fn(net, img, target="fake")
    assert maps.requires_grad


# -- registration and end to end ---------------------------------------------------------------------
def test_registered_with_the_paper_backbone_and_card_names():
    cfg = load_config("acmf")
    module = build_module(cfg)
    assert cfg.model["backbone"] == "xception" and cfg.model["mask_ratio"] == 0.1
    assert card_name(cfg) == "acmf"
    assert card_name(load_config("acmf", ["model.fac=true"])) == "acmf+fac"
    assert card_name(load_config("acmf", ["model.backbone=mobilenetv2", "model.fac=true"])) \
        == "acmf/mobilenetv2+fac"
    assert module.net.cam_layer() is module.net.backbone.conv3
    ffpp = load_config("acmf/ffpp")
    assert ffpp.data.image_size == 224 and ffpp.model["low_pass"] == 5 and ffpp.model["source_batch"] == 30


@pytest.fixture(scope="module")
def tiny_run(e2e_run):
    """The shared tiny ACMF run (tests/conftest.py E2E_RUNS; its learning is checked by the contract test)."""
    return e2e_run("acmf")[0]


def test_fac_test_pass_on_the_same_checkpoint(tiny_run, synth_small, one_torch_thread):
    """FAC through the engine on 12 test videos; with a vanishing FAC learning rate the adapted
    scores must equal the plain ones row by row (grouping by video and re-ordering are right)."""
    import pandas as pd

    df = pd.read_json(synth_small.manifest, lines=True)
    test = df[df["split"] == "test"]
    keep = pd.concat([test[test["label"] == 0].head(6), test[test["label"] == 1].head(6)])
    subset = synth_small.manifest.parent / "acmf_fac_subset.jsonl"
    pd.concat([df[df["split"] != "test"], keep]).to_json(subset, orient="records", lines=True)
    common = [f"data.manifest={subset}", "model.fac_steps=1", "model.source_batch=8", "model.source_pool=16"]
    plain = Engine.from_run(tiny_run.run_dir, common[:1]).test()
    tiny = Engine.from_run(tiny_run.run_dir, [*common, "model.fac=true", "model.fac_lr=1e-9"]).test()
    assert tiny.method == "acmf/mobilenetv2+imagenet+fac"
    cards = tiny_run.run_dir / "cards"
    s_plain = pd.read_csv(cards / f"{plain.slug()}.scores.csv").set_index("path")
    s_fac = pd.read_csv(cards / f"{tiny.slug()}.scores.csv").set_index("path").loc[s_plain.index]
    assert len(s_plain) == 12
    assert (s_fac["prob"] - s_plain["prob"]).abs().max() < 1e-4
    # the real setting (lr 1e-3) moves the scores
    fac = Engine.from_run(tiny_run.run_dir, [*common, "model.fac=true"]).test()
    s_real = pd.read_csv(cards / f"{fac.slug()}.scores.csv").set_index("path").loc[s_plain.index]
    assert (s_real["prob"] - s_plain["prob"]).abs().max() > 1e-3
    assert 0 <= fac.metrics["frame"]["auc"]["value"] <= 1
    # the card says what the adaptation did: one entry per test video, and the mean probability
    # change it reports is the one the score tables show
    block = fac.metrics["fac"]
    assert block["videos"] == 12 and block["att_first_step"] >= 0 and "fac" not in plain.metrics
    assert block["mean_abs_prob_change"] == pytest.approx((s_real["prob"] - s_plain["prob"]).abs().mean(), abs=1e-5)
    assert tiny.metrics["fac"]["mean_abs_prob_change"] < 1e-4
