"""Flower's round overhead: what a federated round costs beyond the clients' local training.

For 2, 5 and 10 simulated clients (Flower's simulation, Ray backend, one CPU per client actor, the
machine's CPUs as slots), FedAvg on the IID partition of the embedded data, the shipped
``fedforgery`` config (ImageNet MobileNetV2 on the residual, 64 px), 1 local epoch, no client-side
evaluation. Per round the server records its wall time (sending the global model, the clients'
work, receiving and aggregating; the server's own evaluation of the global model is measured
separately and left out) and each client its local training time (the engine's ``trainer.fit``).
With ``k = min(clients, slots)`` clients training at once, the local training on the critical path
is the makespan of the clients' measured local times packed onto ``k`` slots (longest first, each
onto the least-loaded slot: what a perfect scheduler with no overhead would need; for 5 equal
clients on 2 slots that is 3 clients' time, not 2.5), and

    overhead = (round wall - critical) / critical

(everything else: Flower's messages, Ray, a client building its module and data each round,
converting state dicts). Round 1 (starting the client actors, importing torch) is reported apart as
start-up; the figure is the mean over rounds 2..R. Goal: <= 10 %.

    python benchmarks/bench_fed_overhead.py [--clients 2,5,10] [--rounds 3] [--data DIR]

Not a test.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def makespan(times: list[float], slots: int) -> float:
    """The time ``times`` take packed onto ``slots`` parallel slots, longest first (LPT)."""
    loads = [0.0] * slots
    for t in sorted(times, reverse=True):
        loads[loads.index(min(loads))] += t
    return max(loads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", default="2,5,10")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--data", type=Path, default=None, help="embedded data folder (generated if absent)")
    args = ap.parse_args()

    from visec.config import load_config
    from visec.data.synthetic import make_synth_dataset
    from visec.federated.server import run_federated

    tmp = Path(tempfile.mkdtemp(prefix="visec-fed-bench-"))
    manifest = make_synth_dataset(args.data or tmp / "data", seed=0).manifest
    slots = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{'clients':>7} {'start-up s':>10} {'round s':>8} {'local sum s':>11} {'k':>2} {'critical s':>10} "
          f"{'overhead':>8}")
    for n in [int(c) for c in args.clients.split(",")]:
        cfg = load_config("fedforgery", [f"data.manifest={manifest}", "train.bootstrap=0", f"fed.clients={n}",
                                         f"fed.rounds={args.rounds}", "fed.partition=iid", "fed.client_eval=false",
                                         f"output_dir={tmp}", f"name=c{n}"])
        summary = run_federated(cfg, tmp / f"c{n}")
        rounds = [r for r in summary["rounds"] if r["round"] > 0]
        k = min(n, slots)
        rows = []
        for r in rounds:
            wall = r["round_seconds"] - r["eval_seconds"]
            critical = makespan(r["local_seconds"], k)
            rows.append((wall, sum(r["local_seconds"]), critical, (wall - critical) / critical))
        later = rows[1:] or rows
        mean = [sum(x[i] for x in later) / len(later) for i in range(4)]
        print(f"{n:>7} {rows[0][0]:>10.1f} {mean[0]:>8.2f} {mean[1]:>11.2f} {k:>2} {mean[2]:>10.2f} {mean[3]:>8.1%}")


if __name__ == "__main__":
    main()
