"""Leave-one-manipulation-out and corrupted-test protocols on the toy set."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


from shared_runs import run_config
from visec.data.datamodule import FaceDataModule
from visec.data.manifest import read_manifest
from visec.engine import Engine
from visec.errors import ConfigError

HELD = "splice-eyes"


def _cfg(manifest, tmp_path, *extra):
    return run_config("classifier", f"data.manifest={manifest}", "train.max_epochs=2", "train.bootstrap=0",
                      *extra, out=tmp_path)


def test_holdout_removes_a_family_from_training_and_keeps_it_alone_in_test(toy_manifest, tmp_path):
    cfg = _cfg(toy_manifest, tmp_path, f"data.holdout={HELD}")
    dm = FaceDataModule(cfg.data, cfg.train)
    full = read_manifest(toy_manifest).df
    for split in ("train", "val"):
        df = dm.dataset(split).df
        assert HELD not in set(df["manipulation"])
        assert len(df) == int(((full["split"] == split) & (full["manipulation"] != HELD)).sum())
    test = dm.dataset("test").df
    assert set(test["manipulation"]) == {"real", HELD}
    assert len(test) == int(((full["split"] == "test") & full["manipulation"].isin(["real", HELD])).sum())


def test_unknown_holdout_is_a_one_line_error(toy_manifest, tmp_path):
    cfg = _cfg(toy_manifest, tmp_path, "data.holdout=splice-eye")
    with pytest.raises(ConfigError, match="did you mean 'splice-eyes'"):
        FaceDataModule(cfg.data, cfg.train).dataset("train")


def test_protocol_names_and_corrupted_test(toy_manifest, tmp_path, one_torch_thread):
    engine = Engine(_cfg(toy_manifest, tmp_path, f"data.holdout={HELD}"))
    engine.fit()
    clean = engine.test()
    assert clean.protocol == f"leave-out:{HELD}"
    jpeg = engine.test(corruption="jpeg-30")
    assert jpeg.protocol == f"leave-out:{HELD}+jpeg-30" and jpeg.config["data"]["corruption"] is None
    assert jpeg.metrics["frame"]["n"] == clean.metrics["frame"]["n"]
    s_clean = pd.read_csv(engine.run_dir / "cards" / f"{clean.slug()}.scores.csv")
    s_jpeg = pd.read_csv(engine.run_dir / "cards" / f"{jpeg.slug()}.scores.csv")
    assert list(s_clean["path"]) == list(s_jpeg["path"])
    assert not np.allclose(s_clean["prob"], s_jpeg["prob"])  # the model saw degraded images
    again = engine.test(corruption="jpeg-30")  # seeded and deterministic: the same scores
    s_again = pd.read_csv(engine.run_dir / "cards" / f"{again.slug()}.scores.csv")
    assert np.allclose(s_jpeg["prob"], s_again["prob"])
    with pytest.raises(ConfigError, match="jpeg takes"):
        engine.test(corruption="jpeg-0")
