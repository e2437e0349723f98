"""A real Flower deployment of visec's apps on loopback, offline: a ``flower-superlink``, three
``flower-supernode`` processes and ``flwr run`` (insecure, free ports, every FLWR_HOME under tmp_path)
train a tiny FedForgery for two rounds; SuperNode 2 is killed (SIGKILL, by pid) while round 1 trains
on it, the rounds go on with the other two, and the global model then gets its card like any other run.

What Flower 1.42 does with a node that dies mid-round: nothing at first. The ServerApp's
``send_and_receive`` pulls replies every 3 s; a SuperNode heartbeats every 17.5-22.5 s and the SuperLink
marks it offline ``HEARTBEAT_PATIENCE`` (2) x 30 s after its last heartbeat, i.e. 37.5-60 s after the
kill; from then on the SuperLink answers the pull for the dead node's message with an error reply of
its own (``ErrorCode.NODE_UNAVAILABLE``, "Error: Node Unavailable — The destination node failed to
report a heartbeat within 2 × its expected interval."), and leaves the node out of later rounds. A
round timeout shorter than that ends the round with the reply simply missing ("Received 2 results and
0 failures", not an error), and the next round samples the dead node again and waits out its timeout;
so ``fed.round_timeout`` here is above 63 s after the kill, and round 1 records 2 used and 1 failed.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from visec.federated import deploy  # noqa: E402

NODES, VICTIM = 3, 2  # three SuperNodes; SuperNode 2 dies in round 1
ROUND_TIMEOUT = 90  # s; a dead node's error reply comes 37.5-63 s after the kill (see above)
TINY = ["model.backbone=tiny_cnn", "model.weights=null", "model.width=8", "model.num_codes=16",
        "data.image_size=32", "train.bootstrap=0", f"fed.clients={NODES}", "fed.rounds=2",
        "fed.min_clients=2", f"fed.round_timeout={ROUND_TIMEOUT}", "fed.client_eval=false"]
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # three ClientApps share two cores


def _tail(path: Path, n: int = 3000) -> str:
    text = path.read_text(errors="replace") if path.is_file() else ""
    return f"--- {path.name} ---\n{text[-n:]}"


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.slow
def test_three_supernodes_one_killed_mid_round_the_rounds_go_on_with_two(tmp_path, one_torch_thread):
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
    victim = f"node{VICTIM}"
    killed: list[int] = []  # the victim's pids, SIGKILLed

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

    def check_alive(t0: float, limit: float, what: str) -> None:
        watch()
        dead = {n: p.returncode for n, p in procs.items()
                if n != "cli" and not (n == victim and killed) and p.poll() is not None}
        assert not dead, f"Flower processes exited early {dead}\n{all_logs()}"
        assert run.poll() in (None, 0), f"flwr run failed ({run.returncode})\n{all_logs()}"
        assert time.monotonic() - t0 < limit, f"{what} after {limit:g} s\n{all_logs()}"

    summary = run_dir / "federated.json"
    try:
        superlink = start("superlink", deploy.superlink_command(link, database=tmp_path / "state.db"))
        try:
            deploy.wait_port("127.0.0.1", link, timeout=60)
        except TimeoutError:
            if superlink.poll() is not None:  # the Flower CLI does not run here: say why
                pytest.skip(f"flower-superlink exited with {superlink.returncode}:\n{all_logs()}")
            raise
        for pid in range(NODES):
            start(f"node{pid}", deploy.supernode_command(address, pid, NODES, port=deploy.free_port()))
        t0 = time.monotonic()
        run = start("cli", deploy.flwr_run_command(app))

        # round 1 trains on the victim: it received its train message and started its ClientApp
        node = procs[victim]
        while True:
            check_alive(t0, 150, f"SuperNode {VICTIM} started no ClientApp for round 1")
            assert not summary.exists(), f"the run ended before SuperNode {VICTIM} trained\n{all_logs()}"
            received = "Receiving: train message" in (logs / f"{victim}.log").read_text(errors="replace")
            apps = [p for p in deploy.descendants(node.pid) if "flwr-clientapp" in _cmdline(p)]
            if received and apps:
                break
            time.sleep(0.2)
        killed += deploy.stop(node, kill=True)  # SIGKILL, by pid: the node and its SuperExec and ClientApp
        t_kill = time.monotonic() - t0
        seen.update(killed)
        assert not [p for p in killed if deploy.running(p)], f"SuperNode {VICTIM} survived SIGKILL: {killed}"
        assert "Sent successfully" not in (logs / f"{victim}.log").read_text(errors="replace"), \
            f"SuperNode {VICTIM} replied before it was killed\n{all_logs()}"

        while not summary.is_file():
            check_alive(t0, t_kill + 2 * ROUND_TIMEOUT + 90, f"no {summary}")
            time.sleep(0.5)
        t_done = time.monotonic() - t0
        print(f"killed SuperNode {VICTIM} {t_kill:.1f} s after flwr run; the run's result after {t_done:.1f} s")
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
    by_round = {r["round"]: r for r in rounds}
    assert sorted(by_round) == [0, 1, 2], rounds
    one, two = by_round[1], by_round[2]
    # round 1: the victim's message got the SuperLink's NODE_UNAVAILABLE error reply; the others trained
    assert (one["clients_used"], one["clients_failed"], one["clients"]) == (2, 1, [0, 1]), (t_kill, rounds)
    assert "Node Unavailable" in one["errors"][0], one["errors"]
    # round 2: the dead node is offline, so it is not even asked
    assert (two["clients_used"], two["clients_failed"], two["clients"]) == (2, 0, [0, 1]), rounds
    assert two["errors"] == [], rounds
    assert (run_dir / "best.safetensors").is_file() and (run_dir / "last.safetensors").is_file()

    card = Engine.from_run(run_dir).test()
    assert card.method.endswith("@fedavg-family"), card.method
    carded = card.extra["federated"]["rounds"]
    assert [(r["round"], r.get("clients_used"), r.get("clients_failed")) for r in carded] == \
        [(0, None, None), (1, 2, 1), (2, 2, 0)], carded
    assert (run_dir / "cards").is_dir()
