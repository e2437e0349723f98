"""`visec attack` on a tiny trained run: one-line summary, a result card with clean/robust accuracy
and mean perturbation norms, and one-line errors."""

import json

import pytest

from visec.cli import main
from visec.config import parse_budget


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from visec.config import load_config
    from visec.data.toy import make_toy_dataset
    from visec.engine import Engine

    tmp = tmp_path_factory.mktemp("attack_cli")
    manifest = make_toy_dataset(tmp / "toy", size=32, sources=20)
    engine = Engine(load_config("classifier", [f"data.manifest={manifest}", f"output_dir={tmp}", "name=run",
                                               "train.max_epochs=1", "train.bootstrap=0"]))
    engine.fit()
    return engine.run_dir


def _card(folder):
    cards = sorted(folder.glob("*.card.json"))
    assert len(cards) == 1, cards
    return json.loads(cards[0].read_text()), cards[0]


def test_attack_writes_a_card_with_clean_and_robust_accuracy_and_mean_norm(run_dir, capsys):
    rc = main(["attack", "--method", "pgd", "--model", str(run_dir), "--eps", "0.1", "--steps", "5",
               "--alpha", "0.03"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "clean" in out and "pgd5" in out and "card:" in out
    card, path = _card(run_dir / "attacks" / "cards")
    robust = card["metrics"]["robust"]
    assert robust["n"] == 12  # the toy test split
    assert robust["pgd5_acc"]["value"] <= robust["clean_acc"]["value"]
    assert robust["pgd5_acc"]["value"] < robust["clean_acc"]["value"]  # eps 0.1 breaks some
    assert 0 < robust["pgd5_mean_linf"]["value"] <= 0.1 + 1e-6 and robust["pgd5_mean_l2"]["value"] > 0
    assert card["method"] == "classifier/tiny_cnn" and card["protocol"] == "attack-pgd5-Linf-0.1"
    assert card["config"]["attacks"]["pgd5"]["alpha"] == 0.03
    assert card["extra"]["checkpoint"].endswith("best.safetensors")
    assert path.with_name(path.name.replace(".card.json", ".per_sample.csv")).is_file()


def test_attack_suite_on_a_binary_detector(run_dir, tmp_path, capsys):
    rc = main(["attack", "--method", "suite", "--model", str(run_dir), "--eps", "8/255", "--steps", "2",
               "--max-samples", "8", "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    card, _ = _card(tmp_path / "cards")
    robust = card["metrics"]["robust"]
    assert robust["n"] == 8
    assert {"clean_acc", "fgsm_acc", "pgd2_acc", "cw_acc", "apgd_ce_acc", "worst_case_acc"} <= set(robust)
    assert "apgd_dlr_acc" not in robust  # one logit: DLR needs >= 3 classes
    assert any("apgd_dlr" in n and "3 classes" in n for n in card["notes"])
    assert "apgd_dlr" in captured.err


@pytest.mark.parametrize("args,message", [
    (["--method", "pgd", "--eps", "x/2"], "eps must be a number or a fraction"),
    (["--method", "fgsm", "--steps", "3"], "attack 'fgsm' does not take steps"),
    (["--method", "pgdd"], "unknown attack 'pgdd'; did you mean 'pgd'"),
    (["--method", "transfer"], "give a surrogate"),
    (["--method", "pgd", "--norm", "L1"], "norm 'L1' not supported"),
])
def test_attack_mistakes_are_one_line_errors(run_dir, capsys, args, message):
    assert main(["attack", "--model", str(run_dir), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_attack_on_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["attack", "--method", "pgd", "--model", str(tmp_path)]) == 2
    assert "is not a visec run folder" in capsys.readouterr().err


def test_parse_budget():
    assert parse_budget("8/255") == 8 / 255 and parse_budget("0.5") == 0.5 and parse_budget(0.1) == 0.1
