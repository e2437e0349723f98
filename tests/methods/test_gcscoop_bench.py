"""``visec bench --method gcscoop`` end to end, test-sized: cards per run, the base / new / H table with
means over seeds, the report with GCSAM's cosine plot, and the CLI path to the job."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from visec.cards import ResultCard


@pytest.mark.slow
def test_bench_writes_cards_table_and_report(gcscoop_e2e, captions_small, tmp_path, one_torch_thread):
    from visec.apps.bench_gcscoop import gcscoop_bench

    engine, _, _ = gcscoop_e2e
    weights = engine.cfg.model["clip_weights"]
    out = tmp_path / "bench"
    paths = gcscoop_bench(out, seed=3, seeds=2, entrants=["CLIP (zero-shot)", "GCSCoOp"],
                          overrides=[f"data.root={captions_small}", f"model.clip_weights={weights}",
                                     "train.max_epochs=2"])
    cards = [ResultCard.load(p) for p in paths]
    assert len(cards) == 2 * 2 * 3  # entrants x seeds x (base, new, base2new)
    summary = [c for c in cards if c.protocol == "base2new"]
    assert sorted({c.method for c in summary}) == ["gcscoop/coop+gcsam", "gcscoop/zeroshot"]
    assert sorted({c.seed for c in summary}) == [3, 4]
    for c in summary:
        m = c.metrics["base2new"]
        b, n = m["base_acc"]["value"], m["new_acc"]["value"]
        assert m["hm"]["value"] == pytest.approx(0 if b + n == 0 else 2 * b * n / (b + n))
    table = pd.read_csv(out / "base2new.csv")
    assert list(table["model"]) == ["CLIP (zero-shot)", "GCSCoOp"] and (table["seeds"] == 2).all()
    zs = table.set_index("model").loc["CLIP (zero-shot)"]
    assert zs["base sd"] == 0 and zs["new sd"] == 0  # nothing trained: every seed gives the same numbers
    html = (out / "report.html").read_text()
    assert "The gradient constraint over training" in html and "Base / new / H" in html
    again = gcscoop_bench(out, seed=3, seeds=2, entrants=["CLIP (zero-shot)", "GCSCoOp"],
                          overrides=[f"data.root={captions_small}", f"model.clip_weights={weights}",
                                     "train.max_epochs=2"])
    assert pd.read_csv(out / "base2new.csv").equals(table) and len(again) == len(paths)  # runs reused


def test_cli_routes_the_method_to_its_job_and_refuses_a_layout_without_a_name(tmp_path):
    from visec.apps.bench_gcscoop import _data_overrides
    from visec.cli import bench_job_of
    from visec.errors import ConfigError

    assert bench_job_of("gcscoop") == "gcscoop"
    with pytest.raises(ConfigError, match="data.dataset=NAME"):
        _data_overrides(tmp_path, [], tmp_path)
    assert _data_overrides(None, [], tmp_path) == [f"data.root={tmp_path / 'data'}",
                                                    f"model.embedded_root={tmp_path / 'data'}"]
    assert json.dumps(_data_overrides(tmp_path, ["data.dataset=dtd"], tmp_path))


@pytest.mark.slow
def test_visec_train_tests_base_and_new(gcscoop_e2e, captions_small, tmp_path, capsys, one_torch_thread):
    """`visec train gcscoop` runs the method's test protocols after fitting: one card for the base
    classes and one for the new classes."""
    from visec.cli import main

    engine, _, _ = gcscoop_e2e
    assert main(["train", "gcscoop", f"data.root={captions_small}", f"model.clip_weights={engine.cfg.model['clip_weights']}",
                 "train.max_epochs=1", f"output_dir={tmp_path}", "--name", "cli"]) == 0
    out = capsys.readouterr().out
    assert out.lower().count("classify acc") == 2
    protocols = sorted(ResultCard.load(p).protocol for p in (tmp_path / "cli" / "cards").glob("*.card.json"))
    assert protocols == ["base", "new"]


def test_synth_kind_is_checked(capsys):
    from visec.cli import main

    assert main(["data", "synth", "--kind", "sketches"]) == 2
    assert "--kind must be faces or captions" in capsys.readouterr().err
