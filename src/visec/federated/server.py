"""Flower's ServerApp for any visec detector, the strategies by name, and ``run_federated`` (Flower's
in-process simulation, what ``visec fed run`` calls).

The server holds the global model and a held-out split of its own (the manifest's validation split)
on which it evaluates the global model after every round; it keeps ``best.safetensors`` (selected on
that split, with its EER threshold) and ``last.safetensors`` in an ordinary run folder, so
``visec test``, attacked tests, the bench and the report treat a federated run like any other.
``federated.json`` in the run folder records every round: clients used and failed, the global AUC,
the clients' local training time and the round's wall time.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import lightning as L
import yaml
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp import strategy as flwr_strategy

from visec.checkpoint import save_checkpoint
from visec.cards import code_version
from visec.config import FedConfig, RunConfig, load_config
from visec.engine.engine import (BEST, CONFIG_FILE, FEDERATED_FILE, LAST, Engine, build_datamodule,
                                 build_module)
from visec.errors import ConfigError, DivergedError, MetricError


def check_federable(cfg: RunConfig) -> None:
    """Federated training trains forgery detectors (the clients report frame AUC); another family is
    refused in one line before any process starts."""
    from visec.engine.method import method_of

    family = method_of(cfg.method).family
    if family != "forgery detection":
        raise ConfigError(f"federated training (visec fed) trains forgery detectors; '{cfg.method}' is {family}")


def error_line(reason: str) -> str:
    """The line of a client's error reply that names the exception (Ray wraps it in pages of context)."""
    import re

    lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", reason).splitlines() if ln.strip()]
    named = [ln for ln in lines if re.match(r"^\w+(Error|Exception|Exit|Interrupt): ", ln)]
    return (named or lines or [""])[-1][:300]


def make_strategy(fed: FedConfig, on_train_replies: Callable[[int, list[Message], int], None] | None = None):
    """The Flower strategy ``fed.strategy`` names, configured from ``fed``; ``on_train_replies`` sees
    every round's training replies (errors included) and how many messages were sent, before Flower
    aggregates them (a node that dies without an error reply is a message with no reply)."""
    need = fed.min_clients or fed.clients  # a round goes ahead with this many nodes connected and replying
    common: dict[str, Any] = dict(fraction_train=1.0, fraction_evaluate=1.0 if fed.client_eval else 0.0,
                                  min_train_nodes=need, min_evaluate_nodes=need if fed.client_eval else 0,
                                  min_available_nodes=need,
                                  weighted_by_key="num-examples" if fed.weighted else "unit")
    base, extra = {
        "fedavg": (flwr_strategy.FedAvg, {}),
        "fedprox": (flwr_strategy.FedProx, {"proximal_mu": fed.proximal_mu}),
        "fedavgm": (flwr_strategy.FedAvgM, {"server_momentum": fed.server_momentum}),
        "fedmedian": (flwr_strategy.FedMedian, {}),
        "fedtrimmedavg": (flwr_strategy.FedTrimmedAvg, {"beta": fed.trim_beta}),
        "krum": (flwr_strategy.Krum, {"num_malicious_nodes": fed.krum_malicious}),
    }[fed.strategy]

    sent: dict[int, int] = {}

    class Recorded(base):  # type: ignore[misc, valid-type, no-redef]
        def configure_train(self, server_round, arrays, config, grid):
            messages = list(super().configure_train(server_round, arrays, config, grid))
            sent[server_round] = len(messages)
            return messages

        def aggregate_train(self, server_round: int, replies: Iterable[Message]):
            replies = list(replies)
            if on_train_replies is not None:
                on_train_replies(server_round, replies, sent.get(server_round, len(replies)))
            return super().aggregate_train(server_round, replies)

    Recorded.__name__ = base.__name__
    return Recorded(**common, **extra)


def run_server(grid: Grid, cfg: RunConfig, run_dir: str | Path) -> dict[str, Any]:
    """Federated training of ``cfg`` (its ``fed`` section) through ``grid``; writes the run folder."""
    if cfg.fed is None:
        raise ConfigError("federated training needs a fed section (fed.clients, fed.rounds, ...)")
    fed, run_dir = cfg.fed, Path(run_dir)
    if cfg.train.select_on != "val":
        raise ConfigError("a federated run selects its global model on the server's validation split: "
                          "train.select_on must be val")
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir / CONFIG_FILE)
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    module = build_module(cfg)
    dm = build_datamodule(cfg)
    engine = Engine(cfg, run_dir)
    rounds: dict[int, dict[str, Any]] = {}
    best = {"auc": None, "round": None}
    t_round = [time.perf_counter()]

    def on_train_replies(server_round: int, replies: list[Message], sent: int) -> None:
        ok = [m for m in replies if not m.has_error()]
        local = [float(m.content["metrics"]["local_seconds"]) for m in ok]
        missing = max(0, sent - len(replies))  # no reply within fed.round_timeout
        rounds[server_round] = {
            "round": server_round, "clients_used": len(ok), "clients_failed": sent - len(ok),
            "clients_missing": missing,
            "clients": sorted(int(m.content["metrics"]["partition-id"]) for m in ok),
            "errors": [error_line(m.error.reason) for m in replies if m.has_error()]
                      + [f"no reply within {fed.round_timeout:g} s"] * missing,
            "local_seconds": local,
            "train_loss": (sum(float(m.content["metrics"]["train_loss"]) for m in ok) / len(ok)) if ok else None,
            # each client's loss terms (CE, reconstruction, codebook, ...), for a look at what moved
            "client_losses": {int(m.content["metrics"]["partition-id"]): {
                k: float(v) for k, v in m.content["metrics"].items() if k.startswith("train_")} for m in ok}}
        # what the server received from each client: record types (arrays and metrics, nothing else)
        rounds[server_round]["received"] = sorted({f"{k}:{type(v).__name__}" for m in ok for k, v in m.content.items()})

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        t_eval = time.perf_counter()
        state = arrays.to_torch_state_dict()
        module.net.load_state_dict(state)
        row = rounds.setdefault(server_round, {"round": server_round})
        finite = all(bool(v.isfinite().all()) for v in state.values() if v.is_floating_point())
        auc = threshold = None
        if finite:
            try:
                engine._trainer().validate(module, datamodule=dm, verbose=False)
                frame = module.val_results["metrics"]["frame"]
                auc, threshold = float(frame["auc"]["value"]), float(frame["eer_threshold"])
            except MetricError as exc:  # finite weights, non-finite scores
                if "non-finite" not in str(exc):
                    raise
        now = time.perf_counter()
        # a global model whose weights or scores are not finite has diverged: it is recorded as such
        # and never selected (a poisoned FedAvg does this); its AUC is undefined, not made up
        row.update({"val_auc": auc, "val_eer_threshold": threshold, "diverged": auc is None,
                    "round_seconds": now - t_round[0], "eval_seconds": now - t_eval})
        meta = {"config": cfg.to_dict(), "code": code_version(), "epoch": server_round,
                "global_step": server_round, "selection": "val", "metrics": {"val/auc": auc},
                "federated_round": server_round}
        if threshold is not None:
            meta["val_eer_threshold"] = threshold
        save_checkpoint(module.net, run_dir / LAST, meta)
        if auc is not None and server_round > 0 and (best["auc"] is None or auc > best["auc"]):
            best.update(auc=auc, round=server_round)
            save_checkpoint(module.net, run_dir / BEST, meta)
        t_round[0] = time.perf_counter()  # evaluation time counts to the next round's wall time
        return MetricRecord({"val_auc": float("nan") if auc is None else auc})

    strategy = make_strategy(fed, on_train_replies)
    start = time.perf_counter()
    train_config = ConfigRecord({"visec-config": yaml.safe_dump(cfg.to_dict(), sort_keys=False)})
    strategy.start(grid=grid, initial_arrays=ArrayRecord(module.net.state_dict()), num_rounds=fed.rounds,
                   timeout=fed.round_timeout, train_config=train_config, evaluate_config=ConfigRecord(dict(train_config)),
                   evaluate_fn=evaluate_fn)
    summary = {"strategy": fed.strategy, "fed": fed.model_dump(mode="json"), "best_round": best["round"],
               "best_val_auc": best["auc"], "seconds": round(time.perf_counter() - start, 3),
               "rounds": [rounds[k] for k in sorted(rounds)]}
    summary["final_val_auc"] = summary["rounds"][-1]["val_auc"]  # the global model after the last round
    summary["diverged_rounds"] = [r["round"] for r in summary["rounds"] if r.get("diverged")]
    (run_dir / FEDERATED_FILE).write_text(json.dumps(summary, indent=1))
    trained = [r for r in summary["rounds"] if r.get("clients_used")]
    if not trained:  # the global model never changed: no card may claim it was trained
        errors = next((r["errors"] for r in summary["rounds"] if r.get("errors")), ["no reply"])
        raise ConfigError(f"federated run {run_dir}: no client finished a round; first error: {errors[0]}")
    if best["round"] is None:
        raise DivergedError(f"federated run {run_dir}: the global model diverged in every round (non-finite "
                          f"weights or scores); rounds in {run_dir / FEDERATED_FILE}")
    return summary


def server_app_for(cfg: RunConfig, run_dir: str | Path) -> ServerApp:
    """A ServerApp bound to one run config and run folder (the simulation's)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            run_server(grid, cfg, run_dir)
        except BaseException as exc:  # Flower logs and swallows it; run_federated re-raises it
            app.visec_error = exc  # type: ignore[attr-defined]
            raise

    return app


#: The ServerApp of a real deployment (``flwr run``): the run config comes from the Flower app's
#: run config: ``config`` (a visec YAML config), ``overrides`` (space-separated key=value) and
#: ``run-dir`` (where the server writes the run folder).
server_app = ServerApp()


@server_app.main()
def _deployed(grid: Grid, context: Context) -> None:
    rc = context.run_config
    overrides = str(rc.get("overrides", "")).split()
    cfg = load_config(str(rc["config"]), ["fed={}", *overrides])  # the fed defaults under any fed.* given
    run_dir = Path(str(rc.get("run-dir", Path(cfg.output_dir) / (cfg.name or "fed")))).resolve()
    if (run_dir / LAST).exists():
        raise ConfigError(f"run folder {run_dir} already holds a run; pick another run-dir")
    run_server(grid, cfg, run_dir)


def run_federated(cfg: RunConfig, run_dir: str | Path, *, verbose: bool = False) -> dict[str, Any]:
    """Federated training of ``cfg`` in Flower's simulation (Ray backend, one CPU per client)."""
    from flwr.simulation import run_simulation

    from visec.federated.client import client_app

    if cfg.fed is None:
        raise ConfigError("federated training needs a fed section (fed.clients, fed.rounds, ...)")
    check_federable(cfg)
    run_dir = Path(run_dir)
    if (run_dir / LAST).exists():
        raise ConfigError(f"run folder {run_dir} already holds a run; pick another name")
    for key, value in (("FLWR_TELEMETRY_ENABLED", "0"), ("FLWR_DISABLE_UPDATE_CHECK", "1")):
        os.environ.setdefault(key, value)  # offline: no telemetry id, no update check (Ray actors inherit)
    if not verbose:
        import logging

        logging.getLogger("flwr").setLevel(logging.ERROR)  # (also run_simulation's deprecation notice)
    cpus = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"num_cpus": cpus, "include_dashboard": False, "logging_level": "error",
                             "log_to_driver": verbose}}
    app = server_app_for(cfg, run_dir)
    run_simulation(app, client_app, num_supernodes=cfg.fed.clients, backend_config=backend,
                   verbose_logging=verbose)
    if getattr(app, "visec_error", None) is not None:
        raise app.visec_error
    path = run_dir / FEDERATED_FILE
    if not path.is_file():
        raise ConfigError(f"the federated run ended without a result ({path} missing); run with "
                          f"--verbose to see Flower's log")
    return json.loads(path.read_text())
