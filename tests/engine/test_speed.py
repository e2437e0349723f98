"""The engine's speed features change nothing but the time: the input caches, checkpoint-on-improve,
the resume-state interval, the validation interval, bf16, channels_last and the thread choice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from shared_runs import run_config
from visec.checkpoint import load_state_dict_file
from visec.data.datamodule import IMAGE_CACHE, FaceDataModule
from visec.engine import Engine
from visec.errors import ConfigError

SLOW = ["data.memory_cache_mb=0", "data.scan_cache=false", "train.state_every_s=0", "train.log_every_n_steps=1"]


def _cfg(manifest, tmp_path, name, *extra):
    return run_config("classifier", f"data.manifest={manifest}", "train.max_epochs=3", "train.bootstrap=0",
                      f"name={name}", *extra, out=tmp_path)


def _weights(path):
    return load_state_dict_file(path)


def _identical(a, b):
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_caches_and_checkpoint_on_improve_leave_the_weights_bit_identical(toy_manifest, tmp_path, one_torch_thread):
    IMAGE_CACHE.clear()
    fast = Engine(_cfg(toy_manifest, tmp_path, "fast"))
    fit_fast = fast.fit()
    assert IMAGE_CACHE.hits > 0, "the second epoch should read decoded images from memory"
    slow = Engine(_cfg(toy_manifest, tmp_path, "slow", *SLOW))
    fit_slow = slow.fit()
    assert _identical(_weights(fast.run_dir / "last.safetensors"), _weights(slow.run_dir / "last.safetensors"))
    assert _identical(_weights(fast.run_dir / "best.safetensors"), _weights(slow.run_dir / "best.safetensors"))
    assert fit_fast["best_epoch"] == fit_slow["best_epoch"] and fit_fast["best_score"] == fit_slow["best_score"]
    # the resume state: once at the end by default, after every epoch with state_every_s=0
    assert fit_fast["checkpoint_writes"]["state"] == 1 and fit_slow["checkpoint_writes"]["state"] == 3
    # best.* is written on improvement only: as often as the validation AUC set a new best
    log = slow.training_log().dropna(subset=["val/auc"])
    records = (log["val/auc"].cummax().diff().fillna(1) > 0).sum()
    assert fit_fast["checkpoint_writes"]["best"] == records
    assert json.loads((fast.run_dir / "best.json").read_text())["epoch"] == fit_fast["best_epoch"]


def test_validation_interval_selects_only_on_validated_epochs(toy_manifest, tmp_path, one_torch_thread):
    engine = Engine(_cfg(toy_manifest, tmp_path, "every2", "train.max_epochs=4", "train.val_every_n_epochs=2"))
    fit = engine.fit()
    validated = sorted(engine.training_log().dropna(subset=["val/auc"])["epoch"].astype(int))
    assert validated == [1, 3]
    assert fit["best_epoch"] in (1, 3)


def test_resume_state_written_at_the_interval_resumes(toy_manifest, tmp_path, one_torch_thread):
    engine = Engine(_cfg(toy_manifest, tmp_path, "r", "train.max_epochs=2", "train.state_every_s=3600"))
    fit = engine.fit()
    assert fit["checkpoint_writes"]["state"] == 1  # the final epoch only
    assert json.loads((engine.run_dir / "last.json").read_text())["epoch"] == 1
    resumed = Engine.from_run(engine.run_dir, ["train.max_epochs=3"])
    resumed.fit(resume=True)
    assert json.loads((engine.run_dir / "last.json").read_text())["epoch"] == 2


def test_a_folder_with_only_a_best_checkpoint_is_not_overwritten(toy_manifest, tmp_path, one_torch_thread):
    engine = Engine(_cfg(toy_manifest, tmp_path, "b", "train.max_epochs=1"))
    engine.fit()
    (engine.run_dir / "last.safetensors").unlink()
    (engine.run_dir / "last.ckpt").unlink()
    with pytest.raises(ConfigError, match="already holds a run"):
        Engine(_cfg(toy_manifest, tmp_path, "b", "train.max_epochs=1")).fit()


def test_decode_check_is_cached_by_file_and_redone_when_a_file_changes(toy_manifest, tmp_path, monkeypatch):
    import shutil

    import visec.data.images as images

    root = tmp_path / "copy"
    shutil.copytree(toy_manifest.parent, root)
    manifest = root / toy_manifest.name
    decoded = []
    real = images.load_rgb
    monkeypatch.setattr(images, "load_rgb", lambda p: decoded.append(p) or real(p))
    monkeypatch.setenv("VISEC_CACHE_DIR", str(tmp_path / "cache"))

    def build():
        decoded.clear()
        cfg = _cfg(manifest, tmp_path, "scan", "data.memory_cache_mb=0")
        dm = FaceDataModule(cfg.data, cfg.train)
        dm.dataset("train")
        return dm

    build()
    n = len(decoded)
    assert n > 0
    build()
    assert decoded == []  # the same files: no decode check
    victim = FaceDataModule(_cfg(manifest, tmp_path, "x").data, _cfg(manifest, tmp_path, "x").train) \
        .manifest.split("train").df["path"].iloc[0]
    (root / victim).write_bytes(b"")
    dm = build()
    assert len(decoded) == n  # a changed file: the whole list is checked again
    assert dm.skipped["train"][0][0].endswith(victim)


def test_memory_cache_gives_the_decoded_tensors_and_respects_its_budget(toy_manifest, tmp_path):
    IMAGE_CACHE.clear()
    cfg = _cfg(toy_manifest, tmp_path, "mem")
    plain = FaceDataModule(cfg.data.model_copy(update={"memory_cache_mb": 0}), cfg.train).dataset("val")
    cached = FaceDataModule(cfg.data, cfg.train).dataset("val")
    for _ in range(2):  # the first pass decodes into the cache (or the decode check did), the second reads it
        for i in range(len(cached)):
            assert torch.equal(plain[i]["image"], cached[i]["image"])
    assert IMAGE_CACHE.nbytes > 0 and IMAGE_CACHE.hits >= len(cached)
    IMAGE_CACHE.clear()
    off = cfg.data.model_copy(update={"memory_cache_mb": 0, "scan_cache": False})
    FaceDataModule(off, cfg.train).dataset("val")[0]
    assert IMAGE_CACHE.nbytes == 0
    import numpy as np

    big = np.zeros((1024, 1024, 3), np.uint8)  # 3 MiB
    IMAGE_CACHE.put(toy_manifest, 1024, big, budget_mb=2)
    assert IMAGE_CACHE.nbytes == 0 and IMAGE_CACHE.get(toy_manifest, 1024) is None
    IMAGE_CACHE.put(toy_manifest, 1024, big, budget_mb=4)
    assert IMAGE_CACHE.get(toy_manifest, 1024) is big
    IMAGE_CACHE.clear()


def test_bf16_mixed_trains_and_the_card_records_precision_and_threads(toy_manifest, tmp_path, one_torch_thread):
    engine = Engine(_cfg(toy_manifest, tmp_path, "bf16", "train.precision=bf16-mixed", "train.channels_last=true",
                         "train.max_epochs=4", "train.select_on=last"))
    engine.fit()
    log = engine.training_log().dropna(subset=["train/loss_epoch"]) if "train/loss_epoch" in \
        engine.training_log() else engine.training_log().dropna(subset=["train/loss"])
    losses = log.filter(like="train/loss").iloc[:, 0].to_numpy()
    assert losses[-1] < losses[0], losses
    card = engine.test()
    assert card.runtime["precision"] == "bf16-mixed" and card.runtime["channels_last"] is True
    assert card.runtime["threads"] == torch.get_num_threads()
    assert card.runtime["fit"]["precision"] == "bf16-mixed"
    assert card.metrics["frame"]["auc"]["value"] > 0.7


def test_thread_choice_follows_config_then_environment(monkeypatch):
    from visec.runtime import configure_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("VISEC_THREADS", "off")
        torch.set_num_threads(1)
        assert configure_threads() == {"threads": 1, "source": "VISEC_THREADS=off (left as set)"}
        assert configure_threads(2)["threads"] == 2 and torch.get_num_threads() == 2
        monkeypatch.setenv("VISEC_THREADS", "1")
        assert configure_threads()["threads"] == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("VISEC_THREADS", "many")
        with pytest.raises(ConfigError, match="VISEC_THREADS='many'"):
            configure_threads()
    finally:
        torch.set_num_threads(before)


def test_another_busy_process_leaves_fewer_free_cores():
    from visec.runtime import allowed_cpus, busy_cores

    cpus = allowed_cpus()
    if len(cpus) < 2:
        pytest.skip("needs two cores")
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"], env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        time.sleep(0.5)
        busy = busy_cores(cpus, seconds=0.5)
    finally:
        hog.kill()
        hog.wait()
    assert busy >= 0.6, busy  # one spinning process: about one core


def test_visec_shortens_openmp_spinning_unless_the_user_chose_a_policy():
    code = "import os, visec; print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["10000", "None"]
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["None", "ACTIVE"]


def test_threads_are_retuned_to_the_share_another_process_leaves(monkeypatch):
    import visec.runtime as rt

    cpus = rt.allowed_cpus()
    if len(cpus) < 2:
        pytest.skip("needs two cores")
    before = torch.get_num_threads()
    monkeypatch.delenv("VISEC_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(rt, "_CHOSEN", {})
    try:
        assert rt.configure_threads()["source"] == f"free cores of {len(cpus)}"
        torch.set_num_threads(len(cpus))
        rt._CHOSEN["threads"] = len(cpus)
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(0.3)
            rt._CHOSEN["snap"] = rt._snapshot(cpus)  # the last look: the hog already running
            time.sleep(0.6)
            assert rt.retune_threads(interval=0.0) == len(cpus) - 1  # one core is taken
            assert rt.retune_threads(interval=3600) is None  # not again before the interval
        finally:
            hog.kill()
            hog.wait()
        time.sleep(0.6)
        assert rt.retune_threads(interval=0.0) == len(cpus)  # the hog ended: the cores come back
        assert rt.runtime_info()["threads_used"] == [len(cpus) - 1, len(cpus)]
    finally:
        torch.set_num_threads(before)


def test_trainer_settings_carry_the_speed_options(toy_manifest, tmp_path):
    from visec.engine.engine import _FileCheckpointIO

    engine = Engine(_cfg(toy_manifest, tmp_path, "opts", "train.log_every_n_steps=7", "train.val_every_n_epochs=3"))
    torch.utils.deterministic.fill_uninitialized_memory = True
    trainer = engine._trainer()
    assert trainer.log_every_n_steps == 7 and trainer.check_val_every_n_epoch == 3
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.utils.deterministic.fill_uninitialized_memory is False  # the NaN fill is off
    io = trainer.strategy.checkpoint_io
    assert isinstance(io, _FileCheckpointIO)
    target = tmp_path / "state" / "x.ckpt"
    io.save_checkpoint({"w": torch.arange(3)}, target)
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.arange(3))
    assert [p.name for p in target.parent.iterdir()] == ["x.ckpt"]  # the temporary file was replaced


def test_optimisers_are_fused_unless_switched_off(toy_manifest, tmp_path):
    from visec.engine.module import make_optimizer

    params = [torch.nn.Parameter(torch.zeros(3))]
    for name in ("adamw", "adam", "sgd"):
        train = _cfg(toy_manifest, tmp_path, "o", f"train.optimizer={name}").train
        assert make_optimizer(params, train).defaults["fused"] is True
        off = train.model_copy(update={"fused_optimizer": False})
        assert not make_optimizer(params, off).defaults.get("fused")


def test_channels_last_puts_the_convolution_weights_in_nhwc(toy_manifest, tmp_path):
    from visec.engine import build_module

    def convs(*extra):
        net = build_module(_cfg(toy_manifest, tmp_path, "cl", *extra)).net
        return [m.weight for m in net.modules() if isinstance(m, torch.nn.Conv2d)]

    assert convs() and not any(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
                               for w in convs())
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs("train.channels_last=true"))


def test_the_decode_check_fills_the_memory_cache(toy_manifest, tmp_path):
    IMAGE_CACHE.clear()
    cfg = _cfg(toy_manifest, tmp_path, "fill", "data.scan_cache=false")
    ds = FaceDataModule(cfg.data, cfg.train).dataset("val")
    assert IMAGE_CACHE.nbytes == len(ds) * 3 * cfg.data.image_size ** 2  # before any sample is read
    ds[0]
    assert (IMAGE_CACHE.hits, IMAGE_CACHE.misses) == (1, 0)
    IMAGE_CACHE.clear()


def test_an_unreadable_nir_twin_is_skipped_and_named(synth_small, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(synth_small.manifest.parent, root)
    manifest = root / synth_small.manifest.name
    cfg = _cfg(manifest, tmp_path, "nir", "data.modality=nir", "data.scan_cache=false")
    dm = FaceDataModule(cfg.data, cfg.train)
    test = dm.manifest.split("test").df
    victim = test["nir"].iloc[0]
    (root / victim).write_bytes(b"")
    ds = dm.dataset("test")
    assert len(ds) == len(test) - 1
    assert dm.skipped["test"][0][0].endswith(victim)
