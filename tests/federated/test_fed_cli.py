"""`visec fed` as a user meets it: help, one-line errors before anything starts, the Flower App."""

from __future__ import annotations

import tomllib

from visec.cli import main


def test_fed_help(capsys):
    for args in (["fed", "--help"], ["fed", "run", "--help"], ["fed", "app", "--help"],
                 ["fed", "superlink", "--help"], ["fed", "client", "--help"]):
        assert main(args) == 0, args
    out = capsys.readouterr().out
    assert "--partition" in out and "--superlink" in out


def test_fed_run_refuses_bad_settings_in_one_line(capsys, tmp_path):
    for args, words in ((["--strategy", "fedsgd"], "fed.strategy"), (["--clients", "0"], "fed.clients"),
                        (["fed.poison=scale", "fed.poison_client=5", "--clients", "3"], "poison_client=5")):
        assert main(["fed", "run", "fedforgery", f"output_dir={tmp_path}", *args]) == 2, args
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1 and "Traceback" not in err, err


def test_fed_app_writes_the_flower_app_and_the_connection(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "home"))
    assert main(["fed", "app", str(tmp_path / "app"), "--config", "fedforgery", "--run-dir", str(tmp_path / "run"),
                 "--superlink", "127.0.0.1:9999", "--set", "fed.clients=2"]) == 0
    app = tomllib.loads((tmp_path / "app" / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert app["components"] == {"serverapp": "visec.federated.server:server_app",
                                 "clientapp": "visec.federated.client:client_app"}
    assert app["config"]["config"] == "fedforgery" and "fed.clients=2" in app["config"]["overrides"]
    conn = tomllib.loads((tmp_path / "home" / "config.toml").read_text())["superlink"]
    assert conn["visec"]["address"] == "127.0.0.1:9999" and conn["visec"]["insecure"] is True
    assert "flwr run" in capsys.readouterr().out


def test_without_flower_every_fed_command_is_one_line(monkeypatch, capsys, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "flwr" else real(name, *a))
    for args in (["run", "fedforgery"], ["app", str(tmp_path / "a"), "--config", "fedforgery", "--run-dir", "r"],
                 ["superlink"], ["client", "--superlink", "127.0.0.1:1"]):
        assert main(["fed", *args]) == 2, args
        err = capsys.readouterr().err.strip()
        assert "needs Flower" in err and len(err.splitlines()) == 1, err
