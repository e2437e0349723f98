"""A real Flower deployment of visec's apps on loopback, offline: a ``flower-superlink``, two
``flower-supernode`` processes and ``flwr run`` (insecure, free ports, every FLWR_HOME under tmp_path)
train a tiny FedForgery for two rounds; the global model then gets its card like any other run."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from visec.federated import deploy  # noqa: E402

TINY = ["model.backbone=tiny_cnn", "model.weights=null", "model.width=8", "model.num_codes=16",
        "data.image_size=32", "train.bootstrap=0", "fed.clients=2", "fed.rounds=2"]
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # two ClientApps share two cores


def _tail(path: Path, n: int = 3000) -> str:
    text = path.read_text(errors="replace") if path.is_file() else ""
    return f"--- {path.name} ---\n{text[-n:]}"


@pytest.mark.slow
def test_two_supernodes_train_two_rounds_through_flwr_run(tmp_path, one_torch_thread):
    from visec.data.synthetic import make_synth_dataset
    from visec.engine import Engine

    data = make_synth_dataset(tmp_path / "data", seed=0, identities=40, frames=1, size=32)
    run_dir, logs = tmp_path / "run", tmp_path / "logs"
    logs.mkdir()
    app = deploy.flower_app(tmp_path / "app", "fedforgery",
                            [f"data.manifest={data.manifest}", f"output_dir={tmp_path / 'runs'}", *TINY], run_dir)
    link = deploy.free_port()
    address = f"127.0.0.1:{link}"
    deploy.superlink_connection(tmp_path / "home-cli", address)
    procs: dict[str, subprocess.Popen] = {}
    seen: set[int] = set()  # every pid we started, and every process below them we saw

    def start(name: str, cmd: list[str]) -> subprocess.Popen:
        with open(logs / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(cmd, env=deploy.flower_env(tmp_path / f"home-{name}", **THREADS),
                                    cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        procs[name] = proc
        seen.add(proc.pid)
        return proc

    def watch() -> None:
        for proc in procs.values():
            seen.update(deploy.descendants(proc.pid))

    def all_logs() -> str:
        return "\n".join(_tail(logs / f"{name}.log") for name in procs)

    try:
        superlink = start("superlink", deploy.superlink_command(link, database=tmp_path / "state.db"))
        try:
            deploy.wait_port("127.0.0.1", link, timeout=60)
        except TimeoutError:
            if superlink.poll() is not None:  # the Flower CLI does not run here: say why
                pytest.skip(f"flower-superlink exited with {superlink.returncode}:\n{all_logs()}")
            raise
        for pid in range(2):
            start(f"node{pid}", deploy.supernode_command(address, pid, 2, port=deploy.free_port()))
        run = start("cli", deploy.flwr_run_command(app))

        summary = run_dir / "federated.json"
        deadline = time.monotonic() + 180
        while not summary.is_file():
            watch()
            dead = {n: p.returncode for n, p in procs.items() if n != "cli" and p.poll() is not None}
            assert not dead, f"Flower processes exited early {dead}\n{all_logs()}"
            assert run.poll() in (None, 0), f"flwr run failed ({run.returncode})\n{all_logs()}"
            assert time.monotonic() < deadline, f"no {summary} after 180 s\n{all_logs()}"
            time.sleep(0.5)
        watch()
        try:
            assert run.wait(timeout=60) == 0, all_logs()  # the log stream ends with the run
        except subprocess.TimeoutExpired:
            pytest.fail(f"flwr run --stream did not end 60 s after the run's result\n{all_logs()}")
    finally:
        watch()
        for proc in reversed(list(procs.values())):
            deploy.stop(proc, timeout=10)

    # nothing we started is left (ps, by pid: zombies do not count, they have exited)
    deadline = time.monotonic() + 10
    while (left := sorted(p for p in seen if deploy.running(p))) and time.monotonic() < deadline:
        time.sleep(0.2)
    ps = subprocess.run(["ps", "-o", "pid=,stat=,args=", "-p", ",".join(map(str, sorted(seen)))],
                        capture_output=True, text=True).stdout
    assert not left, f"processes left behind: {left}\n{ps}"

    rounds = json.loads(summary.read_text())["rounds"]
    trained = [r for r in rounds if r["round"] > 0]
    assert [r["round"] for r in trained] == [1, 2], rounds
    assert all(r["clients_used"] == 2 and r["clients_failed"] == 0 and r["clients"] == [0, 1] for r in trained), rounds
    assert (run_dir / "best.safetensors").is_file() and (run_dir / "last.safetensors").is_file()

    card = Engine.from_run(run_dir).test()
    assert card.method.endswith("@fedavg-family"), card.method
    assert (run_dir / "cards").is_dir()
