"""Mechanism guard for ACMF's test-time adaptation (FAC): the attention-consistency term.

The adapter minimises ``flood(BCE(f(MFR(x_S)), y_S), b) + MSE(mean_i CAM(x_T,i), A_S)``. These tests
fail if the consistency term is dropped from the loss it minimises, if it is detached from the
network (no gradient through the target-side Grad-CAM maps), or if its sign is flipped.

A tiny hand-built network stands in for the detector (anything with ``logit``, ``cam_layer`` and
parameters is what the adapter needs), and Grad-CAM is recomputed by hand here, independently of
the toolkit's implementation, from its documented definition: target = the predicted class, channel
weights = spatial mean of the gradients (constants), no ReLU, per-image min-max.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from visec.methods.acmf import ForgeryAttentionConsistency, MaskedFrequency


class _CamNet(nn.Module):
    """conv (the CAM layer, keeps H x W) -> tanh -> spatial mean -> linear -> one logit."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1, bias=False)
        self.head = nn.Linear(2, 1)

    def cam_layer(self) -> nn.Module:
        return self.conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.conv(x)).mean(dim=(2, 3)))

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        return self(x).squeeze(-1)


def _hand_cam(net: _CamNet, images: torch.Tensor) -> torch.Tensor:
    """Grad-CAM of the predicted class at ``net.conv``, keeping the graph through the activations."""
    with torch.enable_grad():
        act = net.conv(images)
        logits = net.head(torch.tanh(act).mean(dim=(2, 3))).squeeze(-1)
        sign = torch.where(logits.detach() >= 0, 1.0, -1.0)
        grads, = torch.autograd.grad((sign * logits).sum(), act, retain_graph=True)
    cam = (grads.mean(dim=(2, 3), keepdim=True).detach() * act).sum(1)  # same size: no resize needed
    lo = cam.amin(dim=(1, 2), keepdim=True)
    hi = cam.amax(dim=(1, 2), keepdim=True)
    return (cam - lo) / (hi - lo).clamp_min(1e-8)


def _net(seed: int = 0) -> _CamNet:
    torch.manual_seed(seed)
    return _CamNet().eval()


def _adapter(net: _CamNet, **kw) -> ForgeryAttentionConsistency:
    # r = 0: MFR is the identity, so the source loss does not depend on the mask draw; the whole
    # pool is one source batch, so it does not depend on the draw of the batch either
    kw = {"steps": 1, "lr": 1e-2, "weight_decay": 0.0, "flood_level": 0.04, "source_batch": 6, **kw}
    return ForgeryAttentionConsistency(net, MaskedFrequency(r=0.0), **kw)


def test_fac_loss_is_flooded_source_bce_plus_the_consistency_term_known_answer(one_torch_thread):
    net = _net()
    g = torch.Generator().manual_seed(1)
    src = torch.rand(6, 3, 8, 8, generator=g)
    labels = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    frames = torch.rand(3, 3, 8, 8, generator=g)
    with torch.no_grad():
        src_logits = net.logit(src)
    cls = F.binary_cross_entropy_with_logits(src_logits, labels).item()
    a_s = _hand_cam(net, src).mean(0).detach()
    att = ((_hand_cam(net, frames).mean(0) - a_s) ** 2).mean().item()
    assert att > 1e-3  # the term is large enough for its absence to show

    fac = _adapter(net)
    got_a_s = fac.set_source(src, labels)
    assert torch.allclose(got_a_s, a_s, atol=1e-6)
    history = fac.adapt(frames, key="video-0")
    assert len(history) == 1
    step = history[0]
    assert step["cls"] == pytest.approx(cls, abs=1e-6)
    assert step["att"] == pytest.approx(att, abs=1e-6)
    # the loss the adapter minimises: |cls - b| + b + att, with the consistency term in it
    assert step["loss"] == pytest.approx(abs(cls - 0.04) + 0.04 + att, abs=1e-6)
    assert step["loss"] - (abs(cls - 0.04) + 0.04) == pytest.approx(att, abs=1e-6)


def test_consistency_alone_moves_the_weights_through_the_target_maps(one_torch_thread):
    """A source pool of black images makes the source loss constant in every trainable weight
    (the CAM layer's output is 0 whatever its weights; the head's bias is frozen), so its gradient
    is exactly zero. Any weight change must come from the consistency term, through the *target*
    frames' Grad-CAM (A_S is a detached constant); it must descend that term's gradient."""
    net = _net()
    net.head.bias.requires_grad_(False)
    src = torch.zeros(6, 3, 8, 8)
    labels = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    frames = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    w0 = net.conv.weight.detach().clone()
    head0 = net.head.weight.detach().clone()

    # source side: exactly no gradient to any trainable weight
    src_loss = F.binary_cross_entropy_with_logits(net.logit(src), labels)
    g_src = torch.autograd.grad(src_loss, [net.conv.weight, net.head.weight])
    assert all(bool((g == 0).all()) for g in g_src)
    # the consistency term's gradient (A_S = 0 here: black images give flat maps)
    a_s = _hand_cam(net, src).mean(0).detach()
    assert bool((a_s == 0).all())
    att = ((_hand_cam(net, frames).mean(0) - a_s) ** 2).mean()
    g_att, = torch.autograd.grad(att, net.conv.weight)
    big = g_att.abs() > 1e-6
    assert big.sum() >= g_att.numel() // 2

    fac = _adapter(net, lr=1e-2)
    fac.set_source(src, labels)
    history = fac.adapt(frames, key="video-1")
    assert history[0]["att"] == pytest.approx(att.item(), abs=1e-6)
    delta = net.conv.weight.detach() - w0
    # moved, and downhill on the consistency term (a descent step: sign opposite to its gradient)
    assert delta.abs().max() > 1e-3
    assert torch.equal(torch.sign(delta[big]), -torch.sign(g_att[big]))
    # the head gets no gradient from either term (Grad-CAM's channel weights are constants)
    assert torch.equal(net.head.weight.detach(), head0)
    # the step lowers the consistency term
    after = ((_hand_cam(net, frames).mean(0) - a_s) ** 2).mean().item()
    assert after < att.item()
    fac.reset()
    assert torch.equal(net.conv.weight.detach(), w0)
