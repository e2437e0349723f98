"""The `visec` command as a user meets it: help, listings, one-line errors, a train + test round trip."""

import subprocess
import sys

import pytest

from visec.cli import main


def run(*args):
    return subprocess.run([sys.executable, "-m", "visec.cli", *args], capture_output=True, text=True,
                          timeout=600)


def test_help_everywhere(capsys):
    for args in (["--help"], ["data", "--help"], ["train", "--help"], ["test", "--help"],
                 ["preprocess", "--help"], ["bench", "--help"], ["list", "--help"], ["data", "build", "--help"]):
        assert main(args) == 0, args
    out = capsys.readouterr().out
    assert "preprocess" in out and "key=value" in out
    main([])  # no arguments: the usage and the command list
    assert "Commands" in capsys.readouterr().err


def test_version(capsys):
    assert main(["--version"]) == 0
    assert "visec 0." in capsys.readouterr().out


def test_list_shows_every_registry(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("methods", "backbones", "datasets", "face-detectors", "attacks", "classifier", "xception",
                 "ffpp", "mtcnn"):
        assert word in out, word
    assert main(["list", "backbones", "--filter", "eff*"]) == 0
    assert "efficientnet_b0" in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    (["list", "method"], "unknown kind 'method'; did you mean 'methods'"),
    (["train", "classifier", "train.lrr=1"], "unknown config key 'train.lrr'; did you mean 'lr'"),
    (["train", "clasifier"], "no config 'clasifier'"),
    (["data", "show", "/nonexistent/manifest.jsonl"], "manifest not found"),
    (["test", "/nonexistent/run"], "is not a visec run folder"),
])
def test_user_mistakes_are_one_line_errors(args, message):
    res = run(*args)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) <= 2


def test_debug_shows_the_traceback():
    res = run("--debug", "train", "classifier", "train.lrr=1")
    assert res.returncode != 0 and "Traceback" in res.stderr


def test_train_then_test_round_trip(tmp_path, toy_manifest):
    res = run("train", "classifier", f"data.manifest={toy_manifest}", f"output_dir={tmp_path}",
              "train.max_epochs=1", "train.bootstrap=50", "--name", "cli")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "frame AUC" in res.stdout
    run_dir = tmp_path / "cli"
    assert (run_dir / "best.safetensors").is_file()
    res = run("test", str(run_dir))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "AUC" in res.stdout
    res = run("test", str(run_dir), "--set", "train.bootstrap=0", "--protocol", "no-ci")  # test-time override
    assert res.returncode == 0, res.stderr[-2000:]
    import json

    card = next(json.loads(p.read_text()) for p in (run_dir / "cards").glob("*.card.json")
                if json.loads(p.read_text())["protocol"] == "no-ci")
    assert card["config"]["train"]["bootstrap"] == 0 and card["metrics"]["frame"]["auc"]["ci"] is None
    res = run("bench", str(run_dir / "cards"))
    assert res.returncode == 0 and "classifier" in res.stdout
    res = run("predict", str(run_dir), "--data", str(toy_manifest), "--out", str(tmp_path / "p.csv"))
    assert res.returncode == 0 and (tmp_path / "p.csv").read_text().count("\n") > 10


def test_data_toy_and_show(tmp_path):
    res = run("data", "toy", "--out", str(tmp_path / "toy"), "--size", "24")
    assert res.returncode == 0, res.stderr
    res = run("data", "show", str(tmp_path / "toy"))
    assert res.returncode == 0 and "all files present" in res.stdout


def test_ddp_on_two_cpu_processes_evaluates_each_sample_once(tmp_path, toy_manifest):
    """DDP (gloo, 2 CPU ranks): gathered evaluation must count every test image exactly once."""
    import json

    from visec.data.manifest import read_manifest

    res = run("train", "classifier", f"data.manifest={toy_manifest}", f"output_dir={tmp_path}",
              "train.accelerator=cpu", "train.strategy=ddp", "--devices", "2", "train.max_epochs=1",
              "train.bootstrap=20", "--name", "ddp")
    assert res.returncode == 0, res.stderr[-2000:]
    cards = list((tmp_path / "ddp" / "cards").glob("*.card.json"))
    assert len(cards) == 1
    metrics = json.loads(cards[0].read_text())["metrics"]
    assert metrics["frame"]["n"] == len(read_manifest(toy_manifest).split("test"))
    assert res.stdout.count("frame AUC") == 1  # rank 1 stays quiet


def test_data_synth_generates_then_reuses(tmp_path):
    args = ("data", "synth", "--out", str(tmp_path / "s"), "--identities", "12", "--frames", "1")
    res = run(*args)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "28 images" in res.stdout and "manifest:" in res.stdout
    again = run(*args)
    assert again.returncode == 0 and "cached" in again.stdout
    assert res.stdout.split("sha256 ")[1][:16] == again.stdout.split("sha256 ")[1][:16]


def test_bench_names_are_checked():
    res = run("bench", "--method", "xceptoin")
    assert res.returncode == 2 and "did you mean 'xception'" in res.stderr
    res = run("bench", "--method", "tit", "--set", "train.max_epochs=1")
    assert res.returncode == 2 and "does not take --set" in res.stderr
