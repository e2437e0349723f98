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

fed_app = typer.Typer(no_args_is_help=True, help="Federated training on Flower (simulation or a real deployment).")
console = Console()


@fed_app.command("run", context_settings={"allow_extra_args": True})
def run_cmd(config: str = typer.Argument(..., help="Method name, method/variant or a YAML file."),
            overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides (fed.*, train.*, ...)."),
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
    cfg = load_config(config, ov)
    if cfg.fed is None:  # no fed.* given at all: the defaults
        cfg = load_config(config, [*ov, "fed={}"])
    engine = Engine(cfg)
    fed = cfg.fed
    console.print(f"federated: {fed.clients} clients x {fed.rounds} rounds, {fed.label()}; run folder {engine.run_dir}")
    summary = run_federated(cfg, engine.run_dir, verbose=verbose)
    for r in summary["rounds"]:
        used = f"  clients {r['clients_used']}/{r['clients_used'] + r['clients_failed']}" if "clients_used" in r else ""
        console.print(f"round {r['round']}: global val AUC {r['val_auc']:.3f}{used}")
    console.print(f"best round {summary['best_round']} (val AUC {summary['best_val_auc']:.3f}), "
                  f"{summary['seconds']:.0f} s")
    if test_after:
        from visec.cli import _print_card

        _print_card(engine.test())


@fed_app.command("app")
def app_cmd(out: Path = typer.Argument(..., help="Folder to write the Flower App into."),
            config: str = typer.Option(..., "--config", help="Method name, method/variant or a YAML file."),
            run_dir: Path = typer.Option(..., "--run-dir", help="Where the server writes the run folder."),
            overrides: Optional[list[str]] = typer.Option(None, "--set", help="key=value override (repeatable)."),
            ) -> None:
    """Write a Flower App folder for `flwr run` that runs visec's ServerApp and ClientApp."""
    from visec.federated.deploy import flower_app

    path = flower_app(out, config, list(overrides or []), run_dir)
    console.print(f"Flower App: {path}  (start it with: flwr run {path} ... ; see `visec fed --help`)")


@fed_app.command("superlink")
def superlink_cmd(fleet: str = typer.Option("127.0.0.1:9092", "--fleet", help="Fleet API address (SuperNodes)."),
                  control: str = typer.Option("127.0.0.1:9093", "--control", help="Control API address (flwr run)."),
                  serverappio: str = typer.Option("127.0.0.1:9091", "--serverappio", help="ServerAppIo API address."),
                  ) -> None:
    """Start Flower's SuperLink (insecure, for a trusted network) in this process."""
    from visec.federated.deploy import superlink_command

    argv = superlink_command(fleet=fleet, control=control, serverappio=serverappio)
    os.execvp(argv[0], argv)


@fed_app.command("client")
def client_cmd(superlink: str = typer.Option(..., "--superlink", help="The SuperLink's Fleet API, HOST:PORT."),
               partition_id: int = typer.Option(0, "--partition-id", help="This client's share of a shared manifest."),
               num_partitions: int = typer.Option(1, "--num-partitions", help="How many shares the manifest has."),
               manifest: Optional[Path] = typer.Option(None, "--manifest", help="This node's own data, used whole."),
               clientappio: str = typer.Option("127.0.0.1:9094", "--clientappio", help="ClientAppIo API address."),
               ) -> None:
    """Start a Flower SuperNode that runs visec's ClientApp on this node's data (insecure)."""
    from visec.federated.deploy import supernode_command

    argv = supernode_command(superlink, partition_id, num_partitions,
                             manifest=str(manifest.resolve()) if manifest else None, clientappio=clientappio)
    os.execvp(argv[0], argv)
