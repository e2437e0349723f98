"""A real Flower deployment of visec's apps: the Flower App folder, the exact commands of a SuperLink,
its SuperNodes and ``flwr run``, and their environment (Flower 1.42, insecure, on explicit ports).

visec is installed in the environment that runs the SuperLink and SuperNodes, so the Flower App is a
``pyproject.toml`` alone that names :data:`visec.federated.server.server_app` and
:data:`visec.federated.client.client_app`; runtime dependency installation (``uv sync`` into a fresh
environment, which would not see visec) is switched off. On one machine::

    env = flower_env(home)                       # FLWR_HOME=home, the venv's bin first on PATH
    link = free_port()
    superlink_connection(home, f"127.0.0.1:{link}")
    Popen(superlink_command(link, database=home / "state.db"), env=env)
    Popen(supernode_command(f"127.0.0.1:{link}", 0, 2, port=free_port()), env=env)  # and node 1
    app = flower_app(home / "app", "fedforgery", ["fed.clients=2", ...], run_dir)
    run(flwr_run_command(app), env=env)          # the server writes run_dir

Everything talks HTTP on the ports given (the SuperLink's Fleet, Control and Runtime APIs share one).
Give every process its own ``FLWR_HOME``, as on separate machines: each SuperNode installs the app
there when a run starts. Start them with ``start_new_session=True``; :func:`stop` ends a process and
every process it started (the SuperLink starts its ``flower-superexec`` in a session of its own).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import tomli_w

#: The name of the SuperLink connection that :func:`superlink_connection` writes and ``flwr run`` uses.
CONNECTION = "visec"


def _exe(name: str) -> str:
    """A Flower CLI of this interpreter's environment (its ``bin``), else the name for ``PATH``."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (the OS picks it; another process may take it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(host: str, port: int, timeout: float) -> None:
    """Wait until ``host:port`` accepts TCP connections; ``TimeoutError`` after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > end:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:g} s") from None
            time.sleep(0.2)


def flower_env(flwr_home: str | Path, base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """The environment of every Flower process: ``FLWR_HOME`` (Flower writes its config, installed
    apps and caches there, not in ``~/.flwr``), this interpreter's ``bin`` first on ``PATH`` (the
    SuperLink and SuperNodes start ``flower-superexec``, ``flwr-serverapp`` and ``flwr-clientapp``
    by name), no telemetry, no update check, no runtime dependency installation; ``extra`` on top."""
    env = dict(os.environ if base is None else base)
    env.update(FLWR_HOME=str(Path(flwr_home).resolve()),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
               FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1",
               FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1")
    env.update(extra)
    return env


def flower_app(out: str | Path, config: str, overrides: list[str], run_dir: str | Path) -> Path:
    """Write a Flower App folder (``out/pyproject.toml``, nothing else) that runs visec's ServerApp
    and ClientApp with run config ``config`` (a visec config name or YAML path), ``overrides``
    (visec ``key=value`` overrides) and ``run-dir`` (the server's run folder); returns ``out``."""
    from visec.config import load_config
    from visec.federated.server import check_federable

    check_federable(load_config(config, list(overrides)))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    project = {
        "project": {"name": "visec-fed", "version": "1.0.0", "description": "visec on Flower",
                    "license": "Apache-2.0", "dependencies": []},  # visec comes from the environment
        "tool": {"flwr": {"app": {
            "publisher": "visec",
            "components": {"serverapp": "visec.federated.server:server_app",
                           "clientapp": "visec.federated.client:client_app"},
            "config": {"config": str(config), "overrides": " ".join(overrides),
                       "run-dir": str(Path(run_dir).resolve())}}}},
    }
    (out / "pyproject.toml").write_text(tomli_w.dumps(project))
    return out


def superlink_connection(flwr_home: str | Path, address: str, name: str = CONNECTION) -> Path:
    """Write ``FLWR_HOME/config.toml`` with one insecure SuperLink connection ``name`` at ``address``
    (``host:port``), the default of ``flwr run``/``ls``/``stop``; returns the file."""
    path = Path(flwr_home) / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps({"superlink": {"default": name, name: {"address": address, "insecure": True}}}))
    return path


def superlink_command(port: int, host: str = "127.0.0.1", database: str | Path | None = None,
                      log_file: str | Path | None = None) -> list[str]:
    """``flower-superlink``: insecure, Fleet/Control/Runtime APIs on ``host:port``, ServerApps run
    in subprocesses without dependency installation, state in ``database`` (default: in memory)."""
    cmd = [_exe("flower-superlink"), "--insecure", "--host", host, "--port", str(port),
           "--isolation", "subprocess", "--disable-runtime-dependency-installation"]
    if database is not None:
        cmd += ["--database", str(database)]
    if log_file is not None:
        cmd += ["--log-file", str(log_file)]
    return cmd


def supernode_command(superlink: str, partition_id: int, num_partitions: int, manifest: str | None = None,
                      port: int | None = None, host: str = "127.0.0.1") -> list[str]:
    """``flower-supernode`` connecting insecurely to ``superlink`` (``host:port``) with node config
    ``partition-id``/``num-partitions`` (and ``manifest``: the node's own data, used whole); its
    Runtime API (for its ClientApp subprocesses) on ``host:port`` (give a free port when several
    SuperNodes share a machine; Flower's default is 9094)."""
    node = f"partition-id={int(partition_id)} num-partitions={int(num_partitions)}"
    if manifest is not None:
        node += f" manifest={json.dumps(str(manifest))}"  # a TOML string (no double quotes in the path)
    cmd = [_exe("flower-supernode"), "--insecure", "--superlink", superlink, "--node-config", node,
           "--isolation", "subprocess"]
    if port is not None:
        cmd += ["--host", host, "--port", str(port)]
    return cmd


def flwr_run_command(app_dir: str | Path, connection: str = CONNECTION, stream: bool = True,
                     run_config: list[str] | None = None) -> list[str]:
    """``flwr run APP_DIR CONNECTION``: submit the app to the SuperLink of ``connection`` (see
    :func:`superlink_connection`); ``stream`` follows the run's log until it ends; ``run_config``
    overrides app run-config keys (``key="value"``, TOML values)."""
    cmd = [_exe("flwr"), "run", str(Path(app_dir).resolve()), connection]
    for item in run_config or []:
        cmd += ["--run-config", item]
    return cmd + (["--stream"] if stream else [])


def descendants(pid: int) -> list[int]:
    """Every living process below ``pid`` (Linux ``/proc``), also those in sessions of their own."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (a zombie has)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def stop(proc: subprocess.Popen, timeout: float = 10.0, kill: bool = False) -> list[int]:
    """End ``proc`` (started with ``start_new_session=True``) and every process below it: SIGTERM to
    its process group and to each descendant by pid, SIGKILL to whatever is left after ``timeout``;
    ``kill``: SIGKILL at once (a crash: nothing gets to say goodbye). Returns the pids signalled."""
    pids = [proc.pid]
    for sig in (signal.SIGKILL,) if kill else (signal.SIGTERM, signal.SIGKILL):
        pids += [p for p in descendants(proc.pid) if p not in pids]
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        end = time.monotonic() + (timeout if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < end:
            if proc.poll() is not None and not any(running(p) for p in pids[1:]):
                return pids
            time.sleep(0.1)
    proc.poll()
    return pids
