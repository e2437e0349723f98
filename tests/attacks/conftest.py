"""Tiny models and data for the attack tests: a 4-class "bright quadrant" task on 8x8 images."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class TinyCNN(nn.Module):
    def __init__(self, k: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.head = nn.Linear(32, k)

    def forward(self, x):
        return self.head(self.features(x))


def quadrant_data(n: int = 64, k: int = 4, seed: int = 0, size: int = 8):
    """Images in [0, 1] with noise; class c brightens quadrant c (k <= 4) -> (x, y)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, k, (n,), generator=g)
    x = 0.35 + 0.15 * torch.rand(n, 3, size, size, generator=g)
    h = size // 2
    for i in range(n):
        r, c = divmod(int(y[i]), 2)
        x[i, :, r * h:(r + 1) * h, c * h:(c + 1) * h] += 0.25
    return x.clamp(0, 1), y


def train_tiny(k: int = 4, seed: int = 0, steps: int = 80) -> TinyCNN:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        net = TinyCNN(k)
        x, y = quadrant_data(256, k, seed=seed + 100)
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return net.eval()


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Tiny tensors: one intra-op thread is faster than two (and does not fight other processes)."""
    yield


@pytest.fixture(scope="session")
def tiny_net() -> TinyCNN:
    return train_tiny()


@pytest.fixture(scope="session")
def tiny_data():
    return quadrant_data(32, seed=1)
