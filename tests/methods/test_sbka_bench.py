"""`visec bench --method sbka` end to end on test-sized embedded data, and `visec retrieve` on its run."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from visec.cards import ResultCard
from visec.cli import main

TINY = ("model.timm={depths: [1,1,1,1], dims: [8,16,32,64]}", "model.teacher_pretrain={epochs: 3, size: 32}",
        "data.image_size=32", "train.max_epochs=2", "model.phase1_epochs=1", "data.batch_size=24")


@pytest.fixture(scope="module")
def bench(sketch_small, tmp_path_factory):
    from visec.apps.bench_sbka import sbka_bench

    out = tmp_path_factory.mktemp("sbka_bench")
    paths = sbka_bench(out, seeds=1, overrides=[f"data.root={sketch_small}", f"model.embedded_root={sketch_small}",
                                                *TINY])
    return out, paths


def test_bench_writes_cards_table_and_report(bench):
    out, paths = bench
    cards = [ResultCard.load(p) for p in paths]
    assert sorted(c.method for c in cards) == ["sbka", "sbka/finetune", "sbka/sake"]
    for card in cards:
        for matching in ("euclidean", "cluster"):
            m = card.metrics[matching]
            assert all(0 <= m[k] <= 1 for k in ("map@all", "p@100", "map@200", "p@200")) and m["n_queries"] > 0
        block = card.metrics["matching"]
        assert "validation" in block["selection"] and block["k"] >= 1 and block["m"] in (1, 2, 4)
        assert block["val_table"] and card.metrics["data"]["unseen_classes"] == 10
    table = pd.read_csv(out / "sbir.csv")
    assert len(table) == 6 and set(table["matching"]) == {"euclidean", "cluster"}
    html = (out / "report.html").read_text()
    assert "Retrieval grid" in html and html.count("data:image/png;base64") == 1


def test_retrieve_ranks_a_gallery_folder(bench, sketch_small, tmp_path, capsys):
    from visec.data.sbir import read_sbir

    out, _ = bench
    data = read_sbir("synth", sketch_small)
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    for i, p in enumerate(data.gallery.paths[:12]):
        shutil.copy(p, gallery / f"{i:02d}.png")
    (gallery / "notes.txt").write_text("not an image")
    run = out / "runs" / "sbka-seed0"
    for matching in ("cluster", "euclidean"):
        code = main(["retrieve", str(run), "--query", str(data.query.paths[0]), "--gallery", str(gallery), "--top",
                     "5", "--matching", matching, "--json", *(["--k", "4"] if matching == "cluster" else [])])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        answer = json.loads(captured.out)
        assert [r["rank"] for r in answer["results"]] == [1, 2, 3, 4, 5]
        distances = [r["distance"] for r in answer["results"]]
        assert distances == sorted(distances) and answer["matching"]["matching"] == matching
        assert "notes.txt" in captured.err  # the skipped file is named
    assert main(["retrieve", str(run), "--query", str(tmp_path / "missing.png"), "--gallery", str(gallery)]) == 2
