"""Mechanism guard for APGD's step-size halving (Croce & Hein 2020, as the module documents it).

APGD starts with ``eta = 2 eps`` and, at the checkpoints ``ceil(p_j N)`` (``p_0 = 0, p_1 = 0.22,
p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``; for N = 100: 22, 41, 57, 70, 80, 87, 93, 99),
halves a sample's step size (and restarts it from its best point) when

1. the objective rose in fewer than ``rho = 0.75`` of the steps since the last checkpoint, or
2. neither the step size nor the best objective changed since the last checkpoint.

The test scripts the objective of every iteration (a loss with a chosen value and a chosen gradient
sign) and reads each iteration's step size off the points the attack queries, on a 2x2 image at
0.5 with eps = 1/4, so every point and step is an exact binary fraction. It fails if the halving is
removed, if it happens when neither condition holds, if either condition is dropped, or if the
checkpoints move.
"""

from __future__ import annotations

import torch
from torch import nn

from visec.attacks import APGD

STEPS, EPS, CENTRE = 100, 0.25, 0.5
# ceil(p_j * 100) by hand: p = 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 (next 1.05 > 1)
CHECKPOINTS = [22, 41, 57, 70, 80, 87, 93, 99]


class _Probe(nn.Module):
    """Logits ``[10, 0]`` (class 0 = the label: never a success, so no early stop) whose first logit
    carries, with value 0, a gradient of +1 per pixel at or below the centre and -1 above it: the
    ascent direction always points back to the centre, so the iterates bounce around it and a step
    of size eta <= 2 eps is never clipped (the size of each step is the step size). Records the
    point of every gradient evaluation."""

    def __init__(self) -> None:
        super().__init__()
        self.points: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            self.points.append(x.detach().flatten(1)[:, 0].clone())
        w = torch.where(x.detach() <= CENTRE, 1.0, -1.0)
        h = (w * x).flatten(1).sum(1)
        return torch.stack([10.0 + (h - h.detach()), torch.zeros_like(h)], dim=1)


def _scripted_loss(probe: _Probe, values: torch.Tensor):
    """Per-sample objective ``values[call, sample]`` at the ``call``-th gradient evaluation, with the
    probe's gradient."""

    def loss_fn(out, y):
        call = len(probe.points) - 1
        return values[call] + (out[:, 0] - out[:, 0].detach())

    return loss_fn


def _run(values: torch.Tensor) -> list[list[float]]:
    """Run APGD on one sample per column of ``values`` (steps x samples); per sample, the step size
    used at each iteration k that is not a checkpoint (``|x_{k+1} - x_k|``, k = 1 .. steps - 2)."""
    n = values.shape[1]
    probe = _Probe()
    attack = APGD(probe, eps=EPS, steps=STEPS, n_restarts=1, rho=0.75, momentum=1.0, random_start=False,
                  loss_fn=_scripted_loss(probe, values))
    x = torch.full((n, 1, 2, 2), CENTRE)
    attack(x, torch.zeros(n, dtype=torch.long))
    pts = torch.stack(probe.points)  # (STEPS, n): the start, then one per iteration
    assert pts.shape == (STEPS, n)
    assert ((pts - CENTRE).abs() <= EPS).all()
    out = []
    for i in range(n):
        out.append([(pts[k + 1, i] - pts[k, i]).abs().item() if k not in CHECKPOINTS else None
                    for k in range(STEPS - 1)])
    return out


def _expected(halved_at: list[int]) -> list[float | None]:
    """Step size per iteration when the step size halves at the checkpoints ``halved_at``."""
    sizes = []
    for k in range(STEPS - 1):
        sizes.append(None if k in CHECKPOINTS else 2 * EPS / 2 ** sum(c < k for c in halved_at))
    return sizes


def _check(got: list[float | None], halved_at: list[int]) -> None:
    want = _expected(halved_at)
    for k in range(1, STEPS - 1):  # iteration 0 starts at the centre: its step is clipped to eps
        if want[k] is not None:
            assert got[k] == want[k], f"iteration {k}: step {got[k]}, expected {want[k]} (halving at {halved_at})"


def _trajectory(first_interval_rises: int) -> torch.Tensor:
    """Objective values for calls 0 .. STEPS - 1: from 0, calls 1 .. 22 rise (by 1) exactly
    ``first_interval_rises`` times in their 22 comparisons and fall (by 0.5) otherwise, so the best
    value still improves; after that it rises at every step."""
    v = torch.zeros(STEPS)
    falls = 22 - first_interval_rises
    level = 0.0
    for k in range(1, STEPS):
        level += -0.5 if k <= falls else 1.0
        v[k] = level
    return v


def test_step_size_halves_exactly_when_the_conditions_say_so(one_torch_thread):
    flat = torch.zeros(STEPS)  # never rises, best never improves: both conditions, every checkpoint
    rising = torch.arange(STEPS, dtype=torch.float32)  # rises at every step: neither condition, ever
    rises17 = _trajectory(17)  # 17 of 22 rises >= 16.5 and a new best: no halving at 22
    rises16 = _trajectory(16)  # 16 of 22 rises < 16.5 (condition 1 only): halving at 22, then none
    # condition 2 only: rises at every step after the first, but never beats the start's value; the
    # step size only halves at a checkpoint where it was not halved at the previous one
    cond2 = torch.arange(STEPS, dtype=torch.float32)
    cond2[0] = 1000.0
    values = torch.stack([flat, rising, rises17, rises16, cond2], dim=1)
    got = _run(values)
    _check(got[0], CHECKPOINTS)
    _check(got[1], [])
    _check(got[2], [])
    _check(got[3], [22])
    _check(got[4], [22, 57, 80, 93])
    # the halving is visible: the flat sample's last steps are 2 eps / 2^7, the rising one's 2 eps
    assert got[0][95] == 2 * EPS / 2 ** 7 and got[1][95] == 2 * EPS
