"""The bench report's federated section: one row per federated run (strategy, partition, rounds, the
clients each round used, the best round and the test AUC beside central training) and the global
model's validation AUC after every round, per strategy."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from visec.cards import ResultCard
from visec.report.html import HtmlReport


def diverged_runs(card_paths: list[Path]) -> list[dict]:
    """The rounds (``federated.json``) of the bench's federated intra runs that diverged and so have no
    card, found beside the cards' run folders (``out/runs/<entrant>/intra``)."""
    roots = sorted({p.parents[3] for p in card_paths if len(p.parents) > 3})
    out = []
    for root in roots:
        for path in sorted(root.glob("*/intra/federated.json")):
            if not (path.parent / "cards").is_dir():
                out.append({"entrant": path.parent.parent.name, **json.loads(path.read_text())})
    return out


def federated_rows(cards: list[ResultCard], diverged: list[dict] | None = None) -> pd.DataFrame:
    """One row per clean intra card of a federated run, plus the central runs of the same methods and
    the federated runs that diverged (no card: their test AUC is undefined)."""
    fed = [c for c in cards if c.protocol == "intra" and c.extra.get("federated")]
    if not fed and not diverged:
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
    for f in diverged or []:
        s = f["fed"]
        rounds = [r for r in f["rounds"] if r.get("round", 0) > 0]
        rows.append({"model": f["entrant"], "training": "federated", "strategy": s["strategy"],
                     "partition": s["partition"], "BN": s["bn"], "poison": s["poison"], "rounds": len(rounds),
                     "clients per round": "/".join(str(r.get("clients_used", "?")) for r in rounds),
                     "best round": "diverged", "val AUC": float("nan"), "test AUC": float("nan")})
    return pd.DataFrame(rows)


def federated_section(report: HtmlReport, cards: list[ResultCard], card_paths: list[Path] | None = None) -> None:
    """Add the federated table and the AUC-per-round plot when the bench has federated runs."""
    import matplotlib.pyplot as plt

    diverged = diverged_runs(card_paths or [])
    table = federated_rows(cards, diverged)
    if table.empty:
        return
    report.heading("Federated training (Flower)").text(
        "Each federated run trains the same model on clients that never share images: every round the "
        "server sends the global weights, each client trains its share for the configured local epochs "
        "on the engine's own module, and Flower's strategy aggregates the returned weights. The server "
        "evaluates the global model on its own held-out split (the manifest's validation split) after "
        "every round and keeps the best round; the test AUC is that model on the test split. A "
        "poisoned client sends 100 times its update (scale * (local - global)). A global model whose "
        "weights or scores are not finite has diverged: it is never selected, and a run that diverged "
        "in every round has no test AUC (NaN below) and no card.")
    report.table(table, "federated runs beside central training (intra-dataset test split)")
    fig, ax = plt.subplots(figsize=(7, 4))
    for c in cards:
        f = c.extra.get("federated")
        if c.protocol != "intra" or not f:
            continue
        rs = [r for r in f["rounds"] if "val_auc" in r]
        ax.plot([r["round"] for r in rs], [float("nan") if r["val_auc"] is None else r["val_auc"] for r in rs],
                marker="o", label=c.method.split("@")[-1])
    ax.axhline(0.5, color="k", ls=":", lw=1)
    ax.set(xlabel="round (0 = the initial model)", ylabel="global model's val AUC", ylim=(0.0, 1.01))
    ax.legend(fontsize=7)
    report.figure(fig, "global validation AUC after every round, per strategy and partition")
