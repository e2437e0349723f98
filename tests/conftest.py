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


def run_config(method: str, *overrides: str, out=None, name: str = "run"):
    """A method's shipped config with overrides, writing into ``out`` (the one config helper of the
    tests: no per-file ``_cfg`` copies)."""
    from visec.config import load_config

    return load_config(method, [*([f"output_dir={out}", f"name={name}"] if out is not None else []), *overrides])


@pytest.fixture(scope="session")
def synth_mnv2(tmp_path_factory):
    """The embedded data with 200 identities (what an ImageNet MobileNetV2 learns in 3 epochs)."""
    from visec.data.synthetic import make_synth_dataset

    return make_synth_dataset(tmp_path_factory.mktemp("synth_mnv2"), seed=0, identities=200, frames=1)


@pytest.fixture(scope="session")
def synth_resynth(tmp_path_factory):
    """Embedded data a from-scratch transformer learns in a test-sized run: the resynth family only,
    400 DCGAN identities at 32 px (about 800 images, a few seconds)."""
    from visec.data.synthetic import make_synth_dataset

    return make_synth_dataset(tmp_path_factory.mktemp("synth_resynth"), seed=0, identities=400, frames=1,
                              families=("resynth",), size=32)


# Each method's tiny end-to-end run on the embedded data: (data fixture, overrides, card name, the
# frame AUC its test must beat). One fit per session, shared by the contract test that checks the
# learning (tests/core/test_contract.py) and the method's own file that checks its extra stages.
E2E_RUNS: dict[str, tuple[str, tuple[str, ...], str, float]] = {
    # r = 0.1 with d = 3 (the 64 px default d = 1 also learns, but its AUC on this 36-image test
    # split sits too close to 0.7 for a reliable assertion: 0.72 at seeds 0 and 1; d = 3: 0.73/0.77)
    "acmf": ("synth_small", ("model.backbone=mobilenetv2", "model.weights=imagenet", "model.dropout=0",
                             "model.low_pass=3", "train.max_epochs=2", "train.bootstrap=0"),
             "acmf/mobilenetv2+imagenet", 0.7),
    "classifier": ("synth_mnv2", ("model.backbone=mobilenetv2", "model.weights=imagenet", "data.image_size=64",
                                  "train.max_epochs=3", "train.bootstrap=0", "data.batch_size=16"),
                   "classifier/mobilenetv2+imagenet", 0.75),
    # from random weights the mixed embedded set is too subtle for a test-sized SSAAFormer (test AUC
    # 0.50-0.59 on synth_small, like the tiny_cnn baseline); the resynth family at 32 px is learnt
    # in 8 epochs (test AUC about 0.9)
    "deepfidelity": ("synth_resynth", ("train.bootstrap=0", "model.depths=[1,1,1,1]", "model.dims=[16,32,64,128]",
                                       "model.head_dim=16", "data.image_size=32", "train.max_epochs=8",
                                       "model.patch_sizes=[2,2,2,2]", "model.layer_scale=1.0", "model.drop_path=0"),
                     "deepfidelity", 0.7),
    "hfc_mffd": ("synth_small", ("train.max_epochs=3", "train.bootstrap=0"), "hfc_mffd", 0.7),
}


@pytest.fixture(scope="session")
def e2e_run(request, tmp_path_factory):
    """``e2e_run(method)`` -> ``(engine, fit result)`` of the method's tiny end-to-end run (fitted once
    per session, on one torch thread, seed 0)."""
    import torch

    from visec.engine import Engine

    done: dict = {}

    def get(method: str):
        if method not in done:
            data_fixture, overrides, _, _ = E2E_RUNS[method]
            data = request.getfixturevalue(data_fixture)
            cfg = run_config(method, f"data.manifest={data.manifest}", *overrides,
                             out=tmp_path_factory.mktemp(f"e2e_{method}"), name="e2e")
            before = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                torch.manual_seed(0)
                engine = Engine(cfg)
                done[method] = (engine, engine.fit())
            finally:
                torch.set_num_threads(before)
        return done[method]

    return get
