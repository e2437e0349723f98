"""`visec tit ...` and `visec bench --method tit`: files, JSON summary, cards, report."""

import json

from visec.cli import main
from visec.apps.bench_tit import tit_bench
from visec.cards import ResultCard, find_cards


def test_simulate_trace_explain_round_trip(tmp_path, capsys):
    pop = tmp_path / "pop.csv"
    assert main(["tit", "simulate", "--out", str(pop), "--objects", "300", "--queries", "40", "--seed", "3"]) == 0
    assert pop.is_file() and (tmp_path / "pop.schema.json").is_file() and (tmp_path / "pop.queries.csv").is_file()
    capsys.readouterr()
    assert main(["tit", "trace", "--population", str(pop), "--queries", str(tmp_path / "pop.queries.csv"),
                 "--out", str(tmp_path / "run")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert {"tit", "face_only", "random_order", "most_unique_first", "naive_bayes_all"} <= set(summary)
    for s in summary.values():
        assert set(s) == {"top1_accuracy", "false_identification_rate", "rejection_rate",
                          "mean_attributes_used", "mean_final_entropy"}
        assert 0 <= s["top1_accuracy"] <= 1 and 0 <= s["rejection_rate"] <= 1
    # TIT needs fewer attributes than querying everything (naive Bayes over all attributes)
    assert summary["tit"]["mean_attributes_used"] < summary["naive_bayes_all"]["mean_attributes_used"]
    cards = [ResultCard.load(p) for p in find_cards([tmp_path / "run" / "cards"])]
    assert len(cards) == len(summary) and {c.protocol for c in cards} == {"trace-noisy"}
    assert (tmp_path / "run" / "report.html").read_text().count("<table") == 1
    first_id = pop.read_text().splitlines()[1].split(",")[0]
    assert main(["tit", "explain", "--population", str(pop), "--object", first_id]) == 0
    out = capsys.readouterr().out
    assert "core identification set (exact" in out and "IDENTIFIED" in out


def test_explain_unknown_object_is_a_one_line_error(tmp_path, capsys):
    pop = tmp_path / "pop.csv"
    main(["tit", "simulate", "--out", str(pop), "--objects", "100", "--queries", "5"])
    assert main(["tit", "explain", "--population", str(pop), "--object", "nobody"]) == 2
    assert "nobody" in capsys.readouterr().err


def test_tit_bench_writes_cards_for_every_regime_and_method(tmp_path):
    paths = tit_bench(tmp_path, objects=300, queries=30)
    cards = [ResultCard.load(p) for p in paths]
    assert {c.protocol for c in cards} == {"simulated-clean", "simulated-realistic", "simulated-harsh"}
    assert len(cards) == 15
    html = (tmp_path / "report.html").read_text()
    assert html.count("<table") == 3 and html.count("data:image/png;base64,") == 1
    harsh = {c.method: c.metrics["trace"] for c in cards if c.protocol == "simulated-harsh"}
    # the multi-attribute tracer beats face recognition alone on noisy observations
    assert harsh["tit"]["top1_accuracy"]["value"] > harsh["tit/face_only"]["top1_accuracy"]["value"]
    assert harsh["tit"]["false_identification_rate"]["value"] <= harsh["tit/face_only"]["false_identification_rate"]["value"]
