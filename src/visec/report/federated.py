"""The bench report's federated section: one row per federated run (strategy, partition, rounds, the
clients each round used, the best round and the test AUC beside central training) and the global
model's validation AUC after every round, per strategy."""

from __future__ import annotations

import pandas as pd

from visec.cards import ResultCard
from visec.report.html import HtmlReport


def federated_rows(cards: list[ResultCard]) -> pd.DataFrame:
    """One row per clean intra card of a federated run, plus the central runs of the same methods."""
    fed = [c for c in cards if c.protocol == "intra" and c.extra.get("federated")]
    if not fed:
        return pd.DataFrame()
    bases = {c.method.split("@")[0] for c in fed}
    rows = []
    for c in cards:
        if c.protocol != "intra" or c.method.split("@")[0] not in bases:
            continue
        f = c.extra.get("federated")
        if f is None and "@" in c.method:
            continue
        rounds = [r for r in (f or {}).get("rounds", []) if r.get("round", 0) > 0]
        s = (f or {}).get("fed", {})
        rows.append({
            "model": c.method, "training": "federated" if f else "central",
            "strategy": s.get("strategy", "-"), "partition": s.get("partition", "-"),
            "BN": s.get("bn", "-"), "poison": s.get("poison", "-") if f else "-",
            "rounds": len(rounds) if f else "-",
            "clients per round": "/".join(str(r.get("clients_used", "?")) for r in rounds) if f else "-",
            "best round": f.get("best_round") if f else "-",
            "val AUC": f.get("best_val_auc") if f else float("nan"),
            "test AUC": c.metrics["frame"]["auc"]["value"]})
    return pd.DataFrame(rows)


def federated_section(report: HtmlReport, cards: list[ResultCard]) -> None:
    """Add the federated table and the AUC-per-round plot when the bench has federated runs."""
    import matplotlib.pyplot as plt

    table = federated_rows(cards)
    if table.empty:
        return
    report.heading("Federated training (Flower)").text(
        "Each federated run trains the same model on clients that never share images: every round the "
        "server sends the global weights, each client trains its share for the configured local epochs "
        "on the engine's own module, and Flower's strategy aggregates the returned weights. The server "
        "evaluates the global model on its own held-out split (the manifest's validation split) after "
        "every round and keeps the best round; the test AUC is that model on the test split. A "
        "poisoned client sends 100 times its update (scale * (local - global)).")
    report.table(table, "federated runs beside central training (intra-dataset test split)")
    fig, ax = plt.subplots(figsize=(7, 4))
    for c in cards:
        f = c.extra.get("federated")
        if c.protocol != "intra" or not f:
            continue
        rs = [r for r in f["rounds"] if "val_auc" in r]
        ax.plot([r["round"] for r in rs], [r["val_auc"] for r in rs], marker="o", label=c.method.split("@")[-1])
    ax.axhline(0.5, color="k", ls=":", lw=1)
    ax.set(xlabel="round (0 = the initial model)", ylabel="global model's val AUC", ylim=(0.0, 1.01))
    ax.legend(fontsize=7)
    report.figure(fig, "global validation AUC after every round, per strategy and partition")
