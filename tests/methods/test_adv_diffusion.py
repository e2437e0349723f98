"""Adv-Diffusion: the identity mask, the DDIM schedule, the guided loop and the black-box protocol,
on tiny seeded diffusers components (CPU, seconds)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from visec.methods.adv_diffusion import (AdvDiffusion, AdvDiffusionError, build_tiny_ldm, ddim_steps, ldm_timesteps,
                                         mask_from_landmarks, mask_from_parsing, scaled_linear_alphas)
from visec.methods.adv_diffusion.torch_model import IDENTITY_CLASSES, face_polygon, sample_noise


class ToyFR(nn.Module):
    """A tiny differentiable recogniser: a seeded conv, pooled, unit norm."""

    def __init__(self, seed: int, dim: int = 16, name: str = "toy") -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, dim, 5, stride=2)
        self.name, self.dim = name, dim

    def forward(self, x):
        return F.normalize(self.conv(x * 2 - 1).mean((2, 3)), dim=1)


@pytest.fixture(scope="module")
def ldm():
    torch.manual_seed(0)
    m = build_tiny_ldm(16, ae_widths=(8, 16), unet_widths=(16, 32), context_dim=8, norm_groups=4,
                       attention_head_dim=4)
    with torch.no_grad():  # a non-trivial context and scaling, as after training
        m.context.normal_()
        m.scaling.fill_(0.7)
    return m.eval()


def faces(n: int = 3, size: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


def ring_mask(n: int, size: int = 16) -> torch.Tensor:
    m = torch.ones(n, 1, size, size)
    m[..., 4:12, 4:12] = 0
    return m


# -- the identity mask ---------------------------------------------------------------------------------
def test_parsing_mask_repaints_exactly_the_non_identity_classes():
    labels = np.arange(19).repeat(4).reshape(4, 19)  # every class in its own column
    m = mask_from_parsing(labels)
    kept = sorted({int(c) for c in labels[m == 0]})
    assert kept == list(IDENTITY_CLASSES) == [1, 2, 3, 4, 5, 6, 7, 10, 11, 12]
    assert sorted({int(c) for c in labels[m == 1]}) == [0, 8, 9, 13, 14, 15, 16, 17, 18]
    with pytest.raises(AdvDiffusionError, match="0..18"):
        mask_from_parsing(np.full((2, 2), 19))


def square_landmarks(lo: float, hi: float) -> np.ndarray:
    """68 points: jaw (0-16) along the left, bottom and right sides of a square, brows on its top."""
    lm = np.zeros((68, 2))
    t = np.linspace(0, 1, 17)
    lm[:17] = np.stack([np.where(t < 0.5, lo, hi), lo + (hi - lo) * np.where(t < 0.5, t * 2, 2 - t * 2)], 1)
    lm[:6] = np.stack([np.full(6, lo), np.linspace(lo, hi, 6)], 1)
    lm[6:11] = np.stack([np.linspace(lo, hi, 5), np.full(5, hi)], 1)
    lm[11:17] = np.stack([np.full(6, hi), np.linspace(hi, lo, 6)], 1)
    lm[8] = [(lo + hi) / 2, hi]  # the chin, on the bottom side
    lm[17:27] = np.stack([np.linspace(lo, hi, 10), np.full(10, lo)], 1)
    lm[27:] = (lo + hi) / 2
    return lm


def test_landmark_mask_keeps_exactly_the_face_polygon():
    """Brows on the square's top and the jaw on its other sides: with no forehead the kept region is
    exactly the pixels whose centres lie in the square; the forehead raises its top edge."""
    m = mask_from_landmarks(square_landmarks(8, 24), (32, 32), forehead=0.0)
    expect = np.ones((32, 32), np.float32)
    expect[8:24, 8:24] = 0  # pixel centres 8.5 .. 23.5 lie inside [8, 24]
    np.testing.assert_array_equal(m, expect)
    raised = mask_from_landmarks(square_landmarks(8, 24), (32, 32), forehead=0.25)
    np.testing.assert_array_equal(raised[4:8, 8:24], 0)  # 0.25 x the 16 px brow-to-chin height
    np.testing.assert_array_equal(raised[:4], 1)
    assert face_polygon(square_landmarks(8, 24), 0.25)[:, 1].min() == pytest.approx(4.0)
    with pytest.raises(AdvDiffusionError, match="68"):
        mask_from_landmarks(np.zeros((5, 2)), (8, 8))


def test_landmark_mask_of_a_real_face_keeps_the_centre_and_repaints_the_corners():
    from visec.data.synthetic.sources import gan_faces
    from visec.methods.adv_diffusion import landmark_masks

    m = landmark_masks(gan_faces(2, seed=7))
    assert m.shape == (2, 1, 64, 64)
    assert (m[:, 0, 28:40, 28:40] == 0).all() and (m[:, 0, :4, :4] == 1).all() and (m[:, 0, -4:, -4:] == 1).all()
    assert 0.2 < (1 - m).mean() < 0.8


# -- the schedule ----------------------------------------------------------------------------------------
def test_schedule_matches_the_notes():
    alphas = scaled_linear_alphas()
    assert math.sqrt(alphas[999]) == pytest.approx(0.0683, abs=2e-4)
    ts = ldm_timesteps(999, 45)
    assert len(ts) == 46 and ts[0] == 991 and ts[-1] == 1 and ts[0] - ts[1] == 22
    steps = ddim_steps(alphas, ts, eta=1.0)
    assert steps[0].sigma == pytest.approx(0.477, abs=1e-3) and steps[-1].sigma == pytest.approx(0.021, abs=1e-3)
    assert steps[len(steps) // 2].sigma == pytest.approx(0.310, abs=0.01)
    assert steps[-1].alpha_prev == pytest.approx(float(alphas[0]))
    sig = [s.sigma for s in steps]
    assert all(a >= b for a, b in zip(sig, sig[1:]))  # non-increasing along the trajectory
    assert all(s.sigma == 0 for s in ddim_steps(alphas, ts, eta=0.0))
    half = ddim_steps(alphas, ldm_timesteps(500, 45), eta=1.0)
    assert half[0].sigma == pytest.approx(0.223, abs=2e-3)


# -- the loop ----------------------------------------------------------------------------------------------
def test_scale_zero_is_plain_ddim_inpainting_as_diffusers_steps_it(ldm):
    """s = 0: the loop equals DDIM inpainting stepped by diffusers' own DDIMScheduler (eta = 1, the same
    injected noise) on the grid both share (40 steps: stride 25, 976 .. 1)."""
    from diffusers import DDIMScheduler

    x, tgt, mask = faces(2), faces(2, seed=1), ring_mask(2)
    attack = AdvDiffusion(ldm, [ToyFR(0)], scale=0.0, t0=999, steps=40)
    ours = attack(x, tgt, mask, seeds=[3, 4]).images
    sched = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading")
    sched.set_timesteps(40)
    assert [int(t) for t in sched.timesteps] == [s.t for s in attack.schedule]
    with torch.no_grad():
        cond, z0 = ldm.condition(x, mask), ldm.encode(x)
        a0 = float(ldm.alphas[999])
        z = math.sqrt(a0) * z0 + math.sqrt(1 - a0) * sample_noise(tuple(z0.shape[1:]), [3, 4], -1, z0.device)
        for i, t in enumerate(sched.timesteps):
            eps = ldm.eps(z, int(t), cond)
            z = sched.step(eps, t, z, eta=1.0, variance_noise=sample_noise(tuple(z.shape[1:]), [3, 4], i,
                                                                            z.device)).prev_sample
        ref = ldm.decode(z).clamp(0, 1)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("strength", ["sigma", "constant"])
def test_guided_minus_unguided_step_is_sigma_s_g(ldm, strength):
    """From the same z_T and noise, guided z_{t'} - unguided z_{t'} = sigma_t s g at the first step, with
    g the gradient of the surrogate cosine at the x0 estimate (the code's adaptive strength); the
    'constant' strength drops sigma_t."""
    x, tgt, mask = faces(2), faces(2, seed=1), ring_mask(2)
    fr = ToyFR(2)
    guided = AdvDiffusion(ldm, [fr], scale=7.0, steps=5, strength=strength)
    plain = AdvDiffusion(ldm, [fr], scale=0.0, steps=5)
    seen = {}
    guided(x, tgt, mask, record=True, callback=lambda i, z: seen.setdefault(("g", i), z.clone()))
    plain(x, tgt, mask, callback=lambda i, z: seen.setdefault(("p", i), z.clone()))
    res = guided(x, tgt, mask, record=True)
    # the first step starts from the same z_T, so its difference is exactly the recorded update
    torch.testing.assert_close(seen[("g", 0)] - seen[("p", 0)], res.updates[0], atol=1e-5, rtol=1e-4)
    st = guided.schedule[0]
    with torch.no_grad():
        cond, z0 = ldm.condition(x, mask), ldm.encode(x)
        a0 = float(ldm.alphas[999])
        z = math.sqrt(a0) * z0 + math.sqrt(1 - a0) * sample_noise(tuple(z0.shape[1:]), [0, 1], -1, z0.device)
        x0 = (z - math.sqrt(1 - st.alpha) * ldm.eps(z, st.t, cond)) / math.sqrt(st.alpha)
    leaf = x0.clone().requires_grad_(True)
    emb = F.normalize(fr(tgt), dim=1).detach()
    j = (F.normalize(fr(ldm.decode(leaf).clamp(0, 1)), dim=1) * emb).sum()
    (grad,) = torch.autograd.grad(j, leaf)
    factor = st.sigma if strength == "sigma" else 1.0
    assert grad.abs().sum() > 0 and st.sigma > 0.4
    torch.testing.assert_close(res.updates[0], factor * 7.0 * grad, atol=1e-5, rtol=1e-4)


def test_guidance_raises_the_surrogate_cosine_to_the_target(ldm):
    """On several seeds, the final images' surrogate cosine to the target grows with s (0 < s1 < s2), and
    the guided run's cosine of the x0 estimate rises over the steps on average."""
    fr = ToyFR(3)
    x, tgt, mask = faces(4, seed=5), faces(4, seed=6), ring_mask(4)
    emb_t = fr(tgt).detach()

    def final_cos(scale, seed):
        res = AdvDiffusion(ldm, [fr], scale=scale, steps=8)(x, tgt, mask, seeds=[seed * 10 + i for i in range(4)])
        return float((fr(res.images).detach() * emb_t).sum(1).mean()), res

    for seed in range(3):
        c0, _ = final_cos(0.0, seed)
        c1, _ = final_cos(20.0, seed)
        c2, res = final_cos(80.0, seed)
        assert c0 < c1 < c2, (seed, c0, c1, c2)
        per_step = torch.stack(res.cosine).mean(1)
        assert per_step[-3:].mean() > per_step[:3].mean()


def test_no_gradient_reaches_the_unet_or_any_weight(ldm):
    fr = ToyFR(4)
    calls = []

    def spy(module, args, kwargs):
        calls.append(torch.is_grad_enabled())

    h = ldm.unet.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        AdvDiffusion(ldm, [fr], scale=50.0, steps=4)(faces(2), faces(2, seed=1), ring_mask(2))
    finally:
        h.remove()
    assert calls and not any(calls), "the UNet ran with gradients enabled"
    assert all(p.grad is None for p in (*ldm.parameters(), *fr.parameters()))
    assert all(p.requires_grad for p in ldm.parameters()) and all(p.requires_grad for p in fr.parameters())


def test_a_sample_does_not_depend_on_its_batch(ldm):
    """Per-sample noise and the per-sample objective: a pair attacked alone or in a batch of 3 gives
    the same image (the original code's batch mean would not)."""
    fr = ToyFR(5)
    x, tgt, mask = faces(3), faces(3, seed=1), ring_mask(3)
    attack = AdvDiffusion(ldm, [fr], scale=30.0, steps=5)
    together = attack(x, tgt, mask, seeds=[7, 8, 9]).images
    alone = attack(x[1:2], tgt[1:2], mask[1:2], seeds=[8]).images
    torch.testing.assert_close(alone[0], together[1], atol=1e-4, rtol=1e-4)
    mean = AdvDiffusion(ldm, [fr], scale=30.0, steps=5, reduction="mean")(x, tgt, mask, seeds=[7, 8, 9]).images
    assert (mean[1] - together[1]).abs().max() > 1e-4


def test_the_kept_face_conditions_the_model(ldm):
    """The masked source reaches the UNet: changing pixels inside the kept face changes the output,
    while changing pixels the mask repaints does not change the condition."""
    x, mask = faces(1), ring_mask(1)
    y = x.clone()
    y[..., 6:10, 6:10] = 1 - y[..., 6:10, 6:10]  # inside the kept square
    z = x.clone()
    z[..., :2, :] = 1 - z[..., :2, :]  # repainted rows
    with torch.no_grad():
        c = ldm.condition(x, mask)
        assert not torch.allclose(c, ldm.condition(y, mask))
        torch.testing.assert_close(c, ldm.condition(z, mask))


def test_settings_are_checked(ldm):
    fr = ToyFR(0)
    for kw, match in (({"scale": -1.0}, "scale"), ({"t0": 0}, "t0"), ({"strength": "x"}, "strength"),
                      ({"reduction": "max"}, "reduction")):
        with pytest.raises(AdvDiffusionError, match=match):
            AdvDiffusion(ldm, [fr], **kw)
    with pytest.raises(AdvDiffusionError, match="surrogate"):
        AdvDiffusion(ldm, [])
    with pytest.raises(AdvDiffusionError, match="pair"):
        AdvDiffusion(ldm, [fr], steps=2)(faces(2), faces(3), ring_mask(2))


def test_blend_keeps_the_face_pixels_and_guides_through_the_surroundings(ldm):
    """``blend`` (visec's option): the kept face is the source's, bit for bit; the repainted ring still
    moves the surrogate cosine."""
    fr = ToyFR(6)
    x, tgt, mask = faces(2), faces(2, seed=1), ring_mask(2)
    plain = AdvDiffusion(ldm, [fr], scale=0.0, steps=4, blend=True)(x, tgt, mask).images
    keep = mask.expand_as(x) == 0
    torch.testing.assert_close(plain[keep], x[keep], rtol=0, atol=0)
    guided = AdvDiffusion(ldm, [fr], scale=80.0, steps=4, blend=True)(x, tgt, mask).images
    torch.testing.assert_close(guided[keep], x[keep], rtol=0, atol=0)
    emb = fr(tgt).detach()
    assert (fr(guided).detach() * emb).sum(1).mean() > (fr(plain).detach() * emb).sum(1).mean()


def test_a_local_diffusers_inpainting_folder_loads_and_attacks(tmp_path):
    """The Stable Diffusion 2 inpainting layout (vae/, unet/, text_encoder/, tokenizer/, scheduler/)
    saved with save_pretrained, tiny: the empty prompt becomes the context, the VAE's scaling factor
    is used, and the attack runs; nothing is downloaded."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from visec.methods.adv_diffusion import load_diffusers_inpainting

    torch.manual_seed(0)
    AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                  scaling_factor=0.18215).save_pretrained(tmp_path / "vae")
    UNet2DConditionModel(block_out_channels=(16, 32), layers_per_block=1, sample_size=8, in_channels=9, out_channels=4,
                         down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                         up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16,
                         attention_head_dim=4, norm_num_groups=4).save_pretrained(tmp_path / "unet")
    CLIPTextModel(CLIPTextConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, max_position_embeddings=16, bos_token_id=0, eos_token_id=1,
                                 pad_token_id=1)).save_pretrained(
        tmp_path / "text_encoder")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, **{c + "</w>": i + 2 for i, c in enumerate("abcdefghij")}}
    CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16).save_pretrained(tmp_path / "tokenizer")
    DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).save_pretrained(
        tmp_path / "scheduler")
    ldm = load_diffusers_inpainting(tmp_path)
    assert float(ldm.scaling) == pytest.approx(0.18215) and ldm.context.shape == (1, 16, 16)
    assert "context" not in dict(ldm.named_parameters())  # the prompt embedding is fixed
    out = AdvDiffusion(ldm, [ToyFR(0)], scale=10.0, steps=3)(faces(1), faces(1, seed=1), ring_mask(1)).images
    assert out.shape == (1, 3, 16, 16) and torch.isfinite(out).all()
    with pytest.raises(AdvDiffusionError, match="not a local diffusers inpainting folder"):
        load_diffusers_inpainting(tmp_path / "vae")


def test_the_grid_never_starts_above_t0():
    assert ldm_timesteps(999, 3) == [667, 334, 1]
    assert max(ldm_timesteps(500, 45)) <= 500 and ldm_timesteps(999, 1000)[0] == 999
    with pytest.raises(AdvDiffusionError):
        ldm_timesteps(999, 0)
