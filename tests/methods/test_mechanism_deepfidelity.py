"""Mechanism guard for DeepFidelity's MixToken: when a box of tokens is taken from the reversed
batch, the class target is mixed by the box's area, ``t_i = (1 - a) y_i + a y_{B-1-i}``, and each
token of the box learns the label of the sample it came from.

These tests fail if the labels are left unmixed, mixed with the wrong area or the wrong direction
(``a y_i + (1 - a) y_{B-1-i}``), or mixed with the wrong partner.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from visec.config import TrainConfig
from visec.methods.deepfidelity import DeepFidelity, DeepFidelityNet, DeepFidelityParams, SSAAFormer

SMOOTH = 0.1  # label smoothing: t -> 0.9 t + 0.05


def _module(mix_token: bool = True, aux_weight: float = 0.5) -> DeepFidelity:
    params = DeepFidelityParams(depths=[1, 1, 1, 1], dims=[16, 32, 64, 128], head_dim=16,
                                patch_sizes=[2, 2, 2, 2], drop_path=0.0, layer_scale=1.0,
                                label_smoothing=SMOOTH, mix_token=mix_token, aux_weight=aux_weight,
                                svr_max_samples=8)
    torch.manual_seed(0)
    backbone = SSAAFormer(params.depths, params.dims, params.head_dim, params.mlp_ratio,
                          drop_path=params.drop_path, layer_scale=params.layer_scale,
                          patch_sizes=params.patch_sizes, ssaa_stages=params.ssaa_stages,
                          mix_token=params.mix_token)
    net = DeepFidelityNet(backbone, svr_capacity=params.svr_max_samples, normalize=params.normalize)
    return DeepFidelity(net, TrainConfig(seed=0), params)


def _recording(module: DeepFidelity) -> dict:
    """Wrap the backbone's public ``forward_map``/``forward_heads`` to see the MixToken box and the
    logits the loss is computed from."""
    seen: dict = {}
    bb = module.net.backbone
    forward_map, forward_heads = bb.forward_map, bb.forward_heads

    def map_(x, mix=False):
        fmap, box = forward_map(x, mix=mix)
        seen.update(mix=mix, box=box, grid=tuple(fmap.shape[-2:]))
        return fmap, box

    def heads(fmap):
        logit, tokens = forward_heads(fmap)
        seen.update(logit=logit, tokens=tokens)
        return logit, tokens

    bb.forward_map, bb.forward_heads = map_, heads
    return seen


def _smooth(t: torch.Tensor) -> torch.Tensor:
    return t * (1 - SMOOTH) + 0.5 * SMOOTH


def _bce_target(loss: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The (unsmoothed) target a mean BCE-with-logits loss was computed against, read back from its
    gradient: ``d loss / d z = (sigmoid(z) - t_smooth) / n``."""
    g, = torch.autograd.grad(loss, logits, retain_graph=True)
    t_smooth = torch.sigmoid(logits.detach()) - g * logits.numel()
    return (t_smooth - 0.5 * SMOOTH) / (1 - SMOOTH)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mixtoken_mixes_the_class_target_by_the_box_area_from_the_reversed_sample(seed, one_torch_thread):
    module = _module().train()
    seen = _recording(module)
    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(10 + seed))
    y = torch.tensor([0.0, 0.0, 1.0, 1.0])  # reversed: [1, 1, 0, 0]
    np.random.seed(seed)
    torch.manual_seed(seed)
    out = module.losses({"image": x, "label": y})
    assert seen["mix"] is True and seen["box"] is not None
    y0, y1, x0, x1 = seen["box"]
    gh, gw = seen["grid"]
    assert (gh, gw) == (4, 4)
    a = (y1 - y0) * (x1 - x0) / (gh * gw)
    # a box strictly inside (0, 1) and not one half, so unmixed / reversed mixing would show
    assert 0 < a < 1 and a != 0.5, seen["box"]

    # hand-written targets: sample i keeps (1 - a) of its own label and takes a of sample 3 - i's
    target = torch.tensor([a, a, 1 - a, 1 - a])
    got = _bce_target(out["cls"], seen["logit"])
    assert torch.allclose(got, target, atol=1e-4), (got, target)
    logit = seen["logit"].detach()
    expected_cls = F.binary_cross_entropy_with_logits(logit, _smooth(target))
    assert out["cls"].item() == pytest.approx(expected_cls.item(), abs=1e-6)

    # token targets: the box's tokens carry the partner's label, the rest the sample's own
    inside = torch.zeros(gh, gw, dtype=torch.bool)
    inside[y0:y1, x0:x1] = True
    token_target = torch.where(inside.flatten()[None], y.flip(0)[:, None], y[:, None])
    assert token_target[0].mean().item() == pytest.approx(a)  # the class target is the token average
    got_tokens = _bce_target(out["aux"], seen["tokens"])
    assert torch.allclose(got_tokens, token_target, atol=1e-4), (got_tokens, token_target)
    expected_aux = F.binary_cross_entropy_with_logits(seen["tokens"].detach(), _smooth(token_target))
    assert out["aux"].item() == pytest.approx(expected_aux.item(), abs=1e-6)
    assert out["loss"].item() == pytest.approx((expected_cls + 0.5 * expected_aux).item(), abs=1e-6)


def test_without_mixing_the_targets_are_the_labels(one_torch_thread):
    for module in (_module(mix_token=True).eval(), _module(mix_token=False).train()):
        seen = _recording(module)
        x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(3))
        y = torch.tensor([0.0, 0.0, 1.0, 1.0])
        out = module.losses({"image": x, "label": y})
        assert seen["box"] is None
        assert torch.allclose(_bce_target(out["cls"], seen["logit"]), y, atol=1e-4)
        expected = F.binary_cross_entropy_with_logits(seen["logit"].detach(), _smooth(y))
        assert out["cls"].item() == pytest.approx(expected.item(), abs=1e-6)
