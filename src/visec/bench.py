"""Bench jobs: what ``visec bench --method NAME`` runs (``make demo`` runs the default one).

A bench job generates or reads its data, trains and evaluates, writes result cards and an HTML
report into ``out``, and returns the card paths. Jobs are registered in ``BENCHES`` by name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console

from visec.config import load_config
from visec.data.toy import make_toy_dataset
from visec.engine import Engine
from visec.registry import BENCHES
from visec.report.cards import ResultCard, leaderboard
from visec.report.html import HtmlReport


@BENCHES.register("classifier", summary="toy face set: train the plain classifier, select on val, test, report")
def classifier_bench(out: str | Path, *, seed: int = 0, console: Console | None = None,
                     data: str | Path | None = None, overrides: list[str] | None = None) -> list[Path]:
    out = Path(out)
    console = console or Console()
    manifest = Path(data) if data else out / "data" / "manifest.jsonl"
    if data is None and not manifest.is_file():
        console.print("generating the toy face set (LFW crops shipped with scikit-image) ...")
        make_toy_dataset(out / "data", seed=seed)
    cfg = load_config("classifier", [f"data.manifest={manifest}", f"train.seed={seed}",
                                     f"output_dir={out}", f"name=classifier-seed{seed}", *(overrides or [])])
    engine = Engine(cfg, progress=True)
    resume = (engine.run_dir / "last.ckpt").is_file()
    if resume:
        console.print(f"resuming the run in {engine.run_dir}")
    engine.fit(resume=resume)
    card = engine.test()
    from visec.metrics import format_metrics

    console.print(format_metrics(card.metrics))
    cards = sorted((engine.run_dir / "cards").glob("*.card.json"))
    report = detector_report([ResultCard.load(p) for p in cards], engine.run_dir / "cards", manifest)
    console.print(f"report: {report.write(out / 'report.html')}")
    return cards


def detector_report(cards: list[ResultCard], scores_dir: Path, manifest: Path) -> HtmlReport:
    """Leaderboard, ROC curves and per-manipulation score histograms from cards and their scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    from visec.data.manifest import read_manifest

    report = HtmlReport("visec bench: face-forgery detection")
    report.text(f"Data: {manifest}. Model selection: {', '.join(sorted({c.selection for c in cards}))} split. "
                f"Scores are probabilities of fake; intervals are {cards[0].config['train']['bootstrap']}-sample "
                f"bootstrap 95% intervals (frame level resamples whole videos).")
    for c in cards:
        for note in c.notes:
            report.note(f"{c.method}: {note}")
    report.heading("Leaderboard")
    report.table(leaderboard(cards).drop(columns=["train_data"], errors="ignore"))
    manip = read_manifest(manifest, check_files=False).df.set_index("path")["manipulation"]
    fig_roc, ax_roc = plt.subplots(figsize=(5, 5))
    fig_hist, axes = plt.subplots(1, len(cards), figsize=(5 * len(cards), 3.5), squeeze=False)
    for c, ax in zip(cards, axes[0]):
        scores = pd.read_csv(scores_dir / f"{c.slug()}.scores.csv")
        fpr, tpr, _ = roc_curve(scores["label"], scores["prob"])
        ax_roc.plot(fpr, tpr, label=f"{c.method} (AUC {c.metrics['frame']['auc']['value']:.3f})")
        scores["manipulation"] = scores["path"].map(manip).fillna("?")
        for name, group in scores.groupby("manipulation"):
            ax.hist(group["prob"], bins=np.linspace(0, 1, 21), alpha=0.55, label=f"{name} (n={len(group)})")
        ax.set(title=c.method, xlabel="probability of fake", ylabel="images")
        ax.legend(fontsize=8)
    ax_roc.plot([0, 1], [0, 1], "k:", lw=1)
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (frame level)")
    ax_roc.legend(loc="lower right", fontsize=8)
    report.heading("ROC curves").figure(fig_roc, "frame-level ROC on the test split")
    report.heading("Score histograms per manipulation").figure(fig_hist, "test-split scores by manipulation family")
    return report
