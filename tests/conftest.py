"""Shared fixtures: offline, CPU, small threads, and a tiny generated face set."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def toy_manifest(tmp_path_factory):
    """The offline toy set at 32 px, 100 sources x 2 variants (generated once per test session)."""
    from visec.data.toy import make_toy_dataset

    return make_toy_dataset(tmp_path_factory.mktemp("toy"), seed=0, size=32)


@pytest.fixture(scope="session")
def synth_small(tmp_path_factory):
    """The embedded face-forgery data, small: 120 DCGAN identities + 2 photos, 1 frame per video
    (488 images at 64 px with their NIR twins; a few seconds, once per test session)."""
    from visec.data.synthetic import make_synth_dataset

    return make_synth_dataset(tmp_path_factory.mktemp("synth_small"), seed=0, identities=120, frames=1)


@pytest.fixture
def one_torch_thread():
    """One intra-op thread: faster for tiny tensors, and steady on a busy 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
