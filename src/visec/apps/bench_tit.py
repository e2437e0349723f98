"""TIT on the simulator as a bench job (``visec bench --method tit``) and its result cards + report."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from rich.console import Console

from visec.identity.baselines import TRACERS
from visec.identity.evaluate import Evaluation, core_set_summary, run_regimes, summary_table
from visec.identity.simulate import simulate
from visec.registry import BENCHES
from visec.cards import ResultCard
from visec.report.html import HtmlReport

HEADLINE = ("top1_accuracy", "false_identification_rate", "rejection_rate", "mean_attributes_used",
            "mean_final_entropy")
LABELS = {e.name: e.summary for e in TRACERS.entries()}  # method name -> its label in plots and tables


def evaluation_card(ev: Evaluation, *, population: str, queries: str, protocol: str, seed: int,
                    config: Mapping[str, Any]) -> ResultCard:
    """One result card for one method's run over a query set."""
    metrics = {"trace": {k: {"value": float(v), "ci": None} for k, v in ev.summary.items()
                         if k != "seconds" and v is not None}}
    metrics["trace"]["n"] = int(len(ev.outcomes))
    return ResultCard(method=f"tit/{ev.method}" if ev.method != "tit" else "tit", train_data=population,
                      test_data=queries, protocol=protocol, seed=seed, metrics=metrics, config=dict(config),
                      timings={"seconds": round(float(ev.summary.get("seconds", 0.0)), 4)}, selection="none")


def tit_report(results: Mapping[str, Mapping[str, Evaluation]], core: Mapping[str, Any] | None,
               title: str = "visec bench: trustworthy identity tracing (TIT)") -> HtmlReport:
    """Entropy-versus-step curves per regime and the baseline table per regime."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = HtmlReport(title)
    report.note("Data come from visec's seeded simulator (visec tit simulate); the numbers are not "
                "comparable to the paper's.")
    regimes = list(results)
    fig, axes = plt.subplots(1, len(regimes), figsize=(5 * len(regimes), 3.6), squeeze=False, sharey=True)
    for ax, regime in zip(axes[0], regimes):
        for method, ev in results[regime].items():
            curve = ev.curve
            ax.plot(range(len(curve)), curve, marker=".", label=LABELS.get(method, method))
        ax.set(title=regime, xlabel="attributes queried", ylabel="mean identity entropy (bits)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    report.heading("Entropy versus step").figure(fig, "mean remaining identity entropy after each queried attribute")
    for regime in regimes:
        table = summary_table(results[regime])
        cols = [c for c in (*HEADLINE, "identification_accuracy", "seconds") if c in table.columns]
        table = table[cols].astype(float).rename_axis("method").reset_index()
        table["method"] = table["method"].map(lambda m: LABELS.get(m, m))
        report.heading(f"Regime: {regime}").table(table)
    if core:
        report.heading("Core identification sets (all objects, crisp model)")
        report.text(", ".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in core.items()))
    return report


@BENCHES.register("tit", summary="identity tracing on the simulator: 3 regimes x TIT + 4 baselines, cards and report")
def tit_bench(out: str | Path, *, seed: int = 0, console: Console | None = None, objects: int = 1000,
              attributes: int = 20, queries: int = 200) -> list[Path]:
    out = Path(out)
    console = console or Console()
    console.print(f"simulating {objects} objects x {attributes} attributes (seed {seed}) and tracing "
                  f"{queries} queries per regime ...")
    results = run_regimes(objects, attributes, seed, queries)
    core = core_set_summary(simulate(objects, attributes, seed, "clean", 1).population)
    paths = []
    config = {"objects": objects, "attributes": attributes, "queries": queries, "seed": seed}
    for regime, evals in results.items():
        for ev in evals.values():
            card = evaluation_card(ev, population=f"simulator:{objects}x{attributes}", queries=f"simulator:{regime}",
                                   protocol=f"simulated-{regime}", seed=seed, config=config)
            paths.append(card.save(out / "cards"))
    console.print(f"report: {tit_report(results, core).write(out / 'report.html')}")
    return paths
