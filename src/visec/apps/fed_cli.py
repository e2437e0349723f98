"""``visec fed``: federated training on Flower.

* ``visec fed run CONFIG [key=value ...]`` trains in Flower's in-process simulation (one Ray actor per
  client) and tests the selected global model like any run;
* ``visec fed app``, ``visec fed superlink`` and ``visec fed client`` run the same apps on a real
  Flower deployment (a SuperLink, one SuperNode per data holder, ``flwr run`` to start a run).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from visec.options import PORT

fed_app = typer.Typer(no_args_is_help=True, help="Federated training on Flower (simulation or a real deployment).")
console = Console()


@fed_app.command("run", context_settings={"allow_extra_args": True})
def run_cmd(config: str = typer.Argument(..., help="Method name, method/variant or a YAML file."),
            overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides (fed.*, train.*, ...)."),
            # range-checked by FedConfig, whose one-line error names the config key (fed.clients ...)
            clients: Optional[int] = typer.Option(None, "--clients", help="Number of clients (fed.clients)."),
            rounds: Optional[int] = typer.Option(None, "--rounds", help="Communication rounds (fed.rounds)."),
            local_epochs: Optional[int] = typer.Option(None, "--local-epochs", help="Local epochs per round."),
            partition: Optional[str] = typer.Option(None, "--partition", help="iid, family or dirichlet."),
            strategy: Optional[str] = typer.Option(None, "--strategy", help="fedavg, fedprox, fedavgm, fedmedian, "
                                                   "fedtrimmedavg or krum."),
            bn: Optional[str] = typer.Option(None, "--bn", help="average (FedAvg) or local (FedBN)."),
            name: Optional[str] = typer.Option(None, "--name", help="Run folder name under output_dir."),
            test_after: bool = typer.Option(True, "--test/--no-test", help="Test the selected global model."),
            verbose: bool = typer.Option(False, "--verbose", help="Flower's and Ray's log on the terminal."),
            ) -> None:
    """Federated training in Flower's simulation, then the usual test card of the global model."""
    from visec.federated import require_flower

    require_flower()
    from visec.config import load_config
    from visec.engine import Engine
    from visec.federated.server import run_federated

    ov = [*(overrides or [])]
    for key, value in (("clients", clients), ("rounds", rounds), ("local_epochs", local_epochs),
                       ("partition", partition), ("strategy", strategy), ("bn", bn)):
        if value is not None:
            ov.append(f"fed.{key}={value}")
    if name is not None:
        ov.append(f"name={name}")
    cfg = load_config(config, ["fed={}", *ov])  # the fed defaults under the config's and the options' values
    engine = Engine(cfg)
    fed = cfg.fed
    console.print(f"federated: {fed.clients} clients x {fed.rounds} rounds, {fed.label()}; run folder {engine.run_dir}")
    summary = run_federated(cfg, engine.run_dir, verbose=verbose)
    for r in summary["rounds"]:
        used = f"  clients {r['clients_used']}/{r['clients_used'] + r['clients_failed']}" if "clients_used" in r else ""
        auc = "diverged (non-finite)" if r["val_auc"] is None else f"{r['val_auc']:.3f}"
        console.print(f"round {r['round']}: global val AUC {auc}{used}")
    console.print(f"best round {summary['best_round']} (val AUC {summary['best_val_auc']:.3f}), "
                  f"{summary['seconds']:.0f} s")
    if test_after:
        from visec.metrics import format_metrics

        card = engine.test()
        console.print(format_metrics(card.metrics))
        for note in card.notes:
            console.print(f"[yellow]note: {note}[/yellow]")


@fed_app.command("app")
def app_cmd(out: Path = typer.Argument(..., help="Folder to write the Flower App into."),
            config: str = typer.Option(..., "--config", help="Method name, method/variant or a YAML file."),
            run_dir: Path = typer.Option(..., "--run-dir", help="Where the server writes the run folder."),
            superlink: str = typer.Option("127.0.0.1:9093", "--superlink", help="The SuperLink `flwr run` submits to."),
            overrides: Optional[list[str]] = typer.Option(None, "--set", help="key=value override (repeatable); "
                                                          "data paths absolute (they are read on the nodes)."),
            ) -> None:
    """Write a Flower App folder running visec's ServerApp and ClientApp, and the SuperLink connection
    `flwr run` uses (in $FLWR_HOME/config.toml, default ~/.flwr)."""
    from visec.federated import require_flower
    from visec.paths import output_folder

    output_folder(out, "OUT")
    output_folder(run_dir, "--run-dir")
    require_flower()
    from visec.federated.deploy import CONNECTION, flower_app, flwr_run_command, superlink_connection

    path = flower_app(out, config, list(overrides or []), run_dir)
    conn = superlink_connection(os.environ.get("FLWR_HOME", Path.home() / ".flwr"), superlink)
    console.print(f"Flower App: {path}; connection '{CONNECTION}' -> {superlink} in {conn}")
    console.print("start the run with: " + " ".join(flwr_run_command(path)))


@fed_app.command("superlink")
def superlink_cmd(port: int = typer.Option(9093, "--port", **PORT, help="The SuperLink's one port (Fleet, Control and "
                                           "Runtime APIs) on --host."),
                  host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
                  database: Optional[Path] = typer.Option(None, "--database", help="SQLite state file (default: "
                                                          "in memory)."),
                  ) -> None:
    """Start Flower's SuperLink (insecure: a trusted network only) in this process; visec's apps run from
    this environment (no dependency installation at run time)."""
    from visec.federated import require_flower

    if database is not None:
        from visec.paths import output_file

        output_file(database, "--database")
    require_flower()
    from visec.federated.deploy import flower_env, superlink_command

    argv = superlink_command(port, host=host, database=str(database) if database else None)
    os.execvpe(argv[0], argv, flower_env(os.environ.get("FLWR_HOME", Path.home() / ".flwr")))


@fed_app.command("client")
def client_cmd(superlink: str = typer.Option(..., "--superlink", help="The SuperLink, HOST:PORT."),
               partition_id: int = typer.Option(0, "--partition-id", min=0, help="This client's share of a shared manifest."),
               num_partitions: int = typer.Option(1, "--num-partitions", min=1, max=10_000,
                                                  help="How many shares the manifest has."),
               manifest: Optional[Path] = typer.Option(None, "--manifest", help="This node's own data, used whole."),
               port: Optional[int] = typer.Option(None, "--port", **PORT, help="This SuperNode's own API port (one per "
                                                  "node on a machine; Flower's default 9094)."),
               ) -> None:
    """Start a Flower SuperNode that runs visec's ClientApp on this node's data (insecure)."""
    from visec.federated import require_flower

    if partition_id >= num_partitions:
        raise typer.BadParameter(f"{partition_id} is not a share of --num-partitions {num_partitions} "
                                 f"(0 to {num_partitions - 1})", param_hint="'--partition-id'")
    require_flower()
    from visec.federated.deploy import flower_env, supernode_command

    argv = supernode_command(superlink, partition_id, num_partitions,
                             manifest=str(manifest.resolve()) if manifest else None, port=port)
    os.execvpe(argv[0], argv, flower_env(os.environ.get("FLWR_HOME", Path.home() / ".flwr")))
