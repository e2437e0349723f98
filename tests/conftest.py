"""Shared fixtures: offline, CPU, small threads, and a tiny generated face set."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# One numeric path for the tests on every x86 machine kind: oneDNN's convolutions limited to AVX2
# (read when torch first loads, so before any import of it). The tiny runs' learning thresholds were
# set on AVX2 numerics; on an AVX-512 machine (same torch build, same seed) oneDNN picks other kernels
# whose rounding sends the same tiny trainings elsewhere: the MobileNetV2 e2e run reached AUC 0.63
# instead of > 0.75 there. Users' runs are left to the machine's best kernels.
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
# Engines leave torch's thread count as each test sets it (one_torch_thread, or torch's default),
# instead of choosing it from the free cores (visec.runtime); tests/engine/test_speed.py tests that.
os.environ.setdefault("VISEC_THREADS", "off")
# visec's caches (the decode-check cache) in a folder of this session, not the user's home
os.environ.setdefault("VISEC_CACHE_DIR", os.path.join(__import__("tempfile").mkdtemp(prefix="visec-test-cache-")))

import pytest  # noqa: E402

from shared_runs import E2E_RUNS, GCSCOOP_E2E, GCSCOOP_PRETRAIN, run_config  # noqa: E402


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


@pytest.fixture(scope="session")
def sketch_small(tmp_path_factory):
    """The embedded sketch/photo set, test-sized: 50 categories (40 seen, 10 unseen) x 6 photos and 6
    sketches (2 of each held out as seen-class validation) at 32 px (a few seconds, once per session)."""
    from visec.data.synthetic.sketches import make_sketch_dataset

    return make_sketch_dataset(tmp_path_factory.mktemp("sketch"), size=32, photos_per_class=6,
                               sketches_per_class=6, val_per_class=2).root


@pytest.fixture(scope="session")
def captions_small(tmp_path_factory):
    """The embedded captioned objects, test-sized: 24 categories x (150 pre-training + 16 train + 4 val
    + 24 test) images at 32 px (about 10 s, once per session)."""
    from visec.data.synthetic.captions import make_caption_dataset

    return make_caption_dataset(tmp_path_factory.mktemp("captions"), pretrain=150, train=16, val=4, test=24).root


@pytest.fixture(scope="session")
def gcscoop_e2e(captions_small, tmp_path_factory):
    """GCSCoOp's tiny end-to-end run: a test-sized CLIP pre-trained on ``captions_small`` (cached there),
    CoOp + GCSAM fitted on the base classes; ``(engine, fit result, zero-shot {"base", "new"} accuracy)``."""
    import torch

    from visec.engine import Engine
    from visec.engine.engine import build_datamodule, build_module
    from visec.methods.gcscoop.pretrain import pretrain_tiny_clip

    weights = pretrain_tiny_clip(captions_small, 0, {}, GCSCOOP_PRETRAIN)  # about a minute on 2 threads
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        common = [f"data.root={captions_small}", f"model.clip_weights={weights}", *GCSCOOP_E2E]
        zero_shot = {}
        for split, key in (("test", "base"), ("test_new", "new")):
            cfg = run_config("gcscoop", "model.learner=zeroshot", *common)
            module = build_module(cfg).eval()
            ds = build_datamodule(cfg).dataset(split)
            module.net.set_classnames(ds.classnames)
            with torch.no_grad():
                x = torch.stack([ds[i]["image"] for i in range(len(ds))])
                zero_shot[key] = float((module(x).argmax(1) == ds.labels).float().mean())
        torch.manual_seed(0)
        engine = Engine(run_config("gcscoop", *common, out=tmp_path_factory.mktemp("e2e_gcscoop"), name="e2e"))
        return engine, engine.fit(), zero_shot
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def seq_small(tmp_path_factory):
    """The embedded sequential faces, test-sized: 24 identities x (1 original + 3 forged) per subset
    at 32 px (seconds, once per session)."""
    from visec.data.synthetic.sequences import make_sequence_dataset

    return make_sequence_dataset(tmp_path_factory.mktemp("seqsynth"), seed=0, identities=24, size=32)
