"""End-to-end engine checks on the toy face set: train, select on val, test, resume, determinism."""

import json
import pickle

import numpy as np
import pytest
import torch


from shared_runs import run_config
from visec.engine import Engine
from visec.checkpoint import load_state_dict_file, save_checkpoint
from visec.errors import CheckpointError, ConfigError, ManifestError
from visec.cards import ResultCard
from visec.report.leaderboard import leaderboard


def _cfg(manifest, tmp_path, *extra):
    return run_config("classifier", f"data.manifest={manifest}", "train.max_epochs=6", "train.bootstrap=200",
                      *extra, out=tmp_path)


@pytest.fixture(scope="module")
def trained(toy_manifest, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    engine = Engine(_cfg(toy_manifest, tmp, "name=a"))
    fit = engine.fit()
    return engine, fit


def test_fit_writes_safetensors_with_sidecar_and_config(trained):
    engine, fit = trained
    for name in ("best.safetensors", "best.json", "last.safetensors", "last.json", "last.ckpt", "config.yaml"):
        assert (engine.run_dir / name).is_file(), name
    side = json.loads((engine.run_dir / "best.json").read_text())
    assert side["selection"] == "val" and side["config"]["method"] == "classifier"
    assert side["epoch"] == fit["best_epoch"] and "val/auc" in side["metrics"]
    assert "visec" in side["code"]
    state = load_state_dict_file(engine.run_dir / "best.safetensors")
    assert any(k.startswith("head.") for k in state)


def test_test_writes_a_card_and_learns_the_toy_task(trained):
    engine, _ = trained
    card = engine.test()
    auc = card.metrics["frame"]["auc"]
    assert auc["value"] > 0.8, auc  # chance is 0.5
    lo, hi = auc["ci"]
    assert lo <= auc["value"] <= hi
    assert card.metrics["video"]["n"] <= card.metrics["frame"]["n"]
    saved = sorted((engine.run_dir / "cards").glob("*.card.json"))
    assert len(saved) >= 1 and ResultCard.load(saved[0]).method == "classifier/tiny_cnn"
    board = leaderboard([ResultCard.load(p) for p in saved])
    assert "frame/auc" in board.columns
    scores = list((engine.run_dir / "cards").glob("*.scores.csv"))
    assert scores and scores[0].read_text().startswith("path,video_id,label,prob")


def test_same_seed_gives_identical_metrics(toy_manifest, tmp_path, trained):
    engine_a, fit_a = trained
    engine_b = Engine(_cfg(toy_manifest, tmp_path, "name=b"))
    fit_b = engine_b.fit()
    assert fit_a["best_score"] == fit_b["best_score"]
    a = load_state_dict_file(engine_a.run_dir / "last.safetensors")
    b = load_state_dict_file(engine_b.run_dir / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_continues_from_last_state(toy_manifest, tmp_path, trained):
    _, fit_full = trained
    engine = Engine(_cfg(toy_manifest, tmp_path, "name=r", "train.max_epochs=2"))
    engine.fit()
    assert json.loads((engine.run_dir / "last.json").read_text())["epoch"] == 1
    with pytest.raises(ConfigError, match="already holds a run"):
        engine.fit()
    resumed = Engine.from_run(engine.run_dir, ["train.max_epochs=6"])
    resumed.fit(resume=True)
    last = json.loads((engine.run_dir / "last.json").read_text())
    full = json.loads((trained[0].run_dir / "last.json").read_text())
    assert last["epoch"] == 5 and last["global_step"] == full["global_step"]
    # the first session's logs survive the resume; the log covers all six epochs
    assert (engine.run_dir / "logs" / "metrics.csv").is_file()
    assert (engine.run_dir / "logs-resume1" / "metrics.csv").is_file()
    assert sorted(resumed.training_log()["epoch"].dropna().unique()) == list(range(6))


def test_selection_on_test_is_explicit_and_recorded(toy_manifest, tmp_path):
    engine = Engine(_cfg(toy_manifest, tmp_path, "name=t", "train.select_on=test", "train.max_epochs=1"))
    engine.fit()
    card = engine.test()
    assert card.selection == "test" and any("test split" in n for n in card.notes)


def test_selection_on_val_needs_a_val_split(tmp_path, toy_manifest):
    from visec.data.manifest import read_manifest, write_manifest

    m = read_manifest(toy_manifest)
    df = m.df[m.df["split"] != "val"]
    out = write_manifest(df, toy_manifest.parent / "noval.jsonl")
    with pytest.raises(ManifestError, match="needs a 'val' split"):
        Engine(_cfg(out, tmp_path, "name=nv")).fit()


def test_unreadable_images_are_skipped_counted_and_named(toy_manifest, tmp_path):
    import shutil

    from visec.data.manifest import read_manifest

    root = tmp_path / "copy"
    shutil.copytree(toy_manifest.parent, root)
    m = read_manifest(root / "manifest.jsonl")
    victim = m.split("test").df["path"].iloc[0]
    (root / victim).write_bytes(b"")
    engine = Engine(_cfg(root / "manifest.jsonl", tmp_path, "name=bad", "train.max_epochs=1"))
    engine.fit()
    card = engine.test()
    assert card.extra["skipped"]["test"][0][0].endswith(victim)
    assert card.metrics["frame"]["n"] == len(m.split("test")) - 1
    assert any("1 unreadable" in n for n in card.notes)
    strict = Engine(_cfg(root / "manifest.jsonl", tmp_path, "name=bad2", "train.max_epochs=1",
                         "data.on_bad_image=error"))
    with pytest.raises(Exception, match="empty file"):
        strict.fit()
        strict.test()


class _Evil:
    def __reduce__(self):
        return (print, ("this would run code",))


def test_unsafe_or_garbage_checkpoints_are_refused(tmp_path, trained):
    engine, _ = trained
    evil = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "x": _Evil()}, evil)
    pickled = tmp_path / "plain.pkl"
    pickled.write_bytes(pickle.dumps({"w": 1}))
    text = tmp_path / "notes.safetensors"
    text.write_text("hello")
    for path, msg in ((evil, "weights_only=True"), (pickled, "weights_only=True"),
                      (text, "not a readable safetensors"), (tmp_path / "none.pt", "not found")):
        with pytest.raises(CheckpointError, match=msg):
            load_state_dict_file(path)
    # a loadable file with the wrong keys is refused strictly, naming the mismatch
    wrong = tmp_path / "wrong.safetensors"
    save_checkpoint(torch.nn.Linear(2, 1), wrong, {})
    with pytest.raises(CheckpointError, match="does not match the model: .*missing"):
        engine.test(checkpoint=wrong)


def test_predict_returns_a_probability_per_image(trained, toy_manifest):
    engine, _ = trained
    df = engine.predict(toy_manifest, split="val")
    assert len(df) > 0 and df["prob"].between(0, 1).all()
    assert set(df.columns) == {"path", "video_id", "label", "prob"}
    assert np.isfinite(df["prob"]).all()
