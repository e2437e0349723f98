"""``visec bench --method sbka``: plain fine-tuning, SAKE and SBKA on the embedded sketch/photo set,
each with the one-to-one (Euclidean) and the one-to-many (cluster) matching.

The bench draws the embedded set (``visec data synth --kind sketch``, cached), pre-trains the teacher
on the seen photos once (cached), then for every entrant and seed trains ``configs/sbka/default.yaml``
with the entrant's overrides, selects on the seen-class validation sketches and tests on the unseen
classes: queries are the unseen sketches, the gallery the unseen photos. Each test card holds both
matchings (mAP@all, P@100, mAP@200, P@200, class-averaged as SAKE and SBKA average) and the (M, K)
the cluster matching chose on the validation split. The report has the table (means and sample
spreads over seeds), the chance level, and a retrieval grid: query sketches with their top-10
photos, hits framed in green.

With ``--data ROOT --set data.dataset=sketchy ...`` the same runs on a published benchmark
(``configs/sbka/paper.yaml`` lists the paper's settings).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pandas as pd
from rich.console import Console

from visec.cards import ResultCard
from visec.config import load_config, parse_overrides
from visec.engine import Engine
from visec.registry import BENCHES
from visec.report.html import HtmlReport

ENTRANTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("fine-tuned", ("model.variant=finetune",)),
    ("SAKE", ("model.variant=sake",)),
    ("SBKA", ("model.variant=sbka",)),
)
SEEDS = 3
METRICS = ("map@all", "p@100", "map@200", "p@200")


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def _data_overrides(data: str | Path | None, overrides: list[str], out: Path) -> list[str]:
    given = parse_overrides(overrides)
    if data is None:
        root = given.get("data", {}).get("root") or out / "data"
        return [f"data.root={root}", f"model.embedded_root={root}"]
    return [f"data.root={data}"]


@BENCHES.register("sbka", summary="embedded sketches: fine-tuning / SAKE / SBKA, Euclidean and cluster matching, "
                                  "unseen-class mAP and precision, retrieval grid")
def sbka_bench(out: str | Path, *, seed: int = 0, console: Console | None = None, data: str | Path | None = None,
               overrides: list[str] | None = None, entrants: list[str] | None = None,
               seeds: int = SEEDS) -> list[Path]:
    out = Path(out)
    console = console or Console()
    extra = [*_data_overrides(data, list(overrides or []), out), *(overrides or [])]
    rows, paths, grid = [], [], None
    for label, ov in [e for e in ENTRANTS if entrants is None or e[0] in entrants]:
        for s in range(seed, seed + seeds):
            console.print(f"{label}, seed {s} ...")
            cfg = load_config("sbka", [f"output_dir={out / 'runs'}", f"name={_slug(label)}-seed{s}",
                                       f"train.seed={s}", *ov, *extra])
            engine = Engine(cfg)
            start = time.perf_counter()
            fit = engine.fit(resume=(engine.run_dir / "last.ckpt").is_file())
            seconds = time.perf_counter() - start
            card = engine.test()
            paths.append(card.save(out / "cards"))
            for matching in ("euclidean", "cluster"):
                m = card.metrics[matching]
                rows.append({"model": label, "matching": matching, "seed": s,
                             **{k: float(m[k]) for k in METRICS if k in m}, "fit s": round(seconds, 1),
                             "best epoch": fit.get("best_epoch")})
            block = card.metrics["matching"]
            console.print(f"  Euclidean mAP@all {card.metrics['euclidean']['map@all']:.3f}, cluster "
                          f"{card.metrics['cluster']['map@all']:.3f} (M={block['m']}, K={block['k']}); "
                          f"chance {card.metrics['data']['chance_map']:.3f}")
            if label == "SBKA" and grid is None:
                grid = (engine, card)
    per_seed = pd.DataFrame(rows)
    table = summary_table(per_seed)
    table.to_csv(out / "sbir.csv", index=False)
    console.print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    report = sbka_report(table, per_seed, grid, extra)
    console.print(f"report: {report.write(out / 'report.html')}")
    return paths


def summary_table(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Per entrant and matching: the mean of each metric over seeds and its sample spread."""
    rows = []
    for (label, matching), g in per_seed.groupby(["model", "matching"], sort=False):
        row = {"model": label, "matching": matching, "seeds": len(g)}
        for k in METRICS:
            if k in g:
                row[k] = float(g[k].mean())
                row[f"{k} sd"] = float(g[k].std(ddof=1)) if len(g) > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def retrieval_grid(engine: Engine, card: ResultCard, queries: int = 6, top: int = 10):
    """Query sketches (one per class, the first ones) with their top photos under the cluster matching;
    hits framed green, misses red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from visec.data.images import load_rgb
    from visec.engine.engine import build_datamodule

    dm = build_datamodule(engine.cfg)
    sbir = dm.sbir
    scores = pd.read_csv(engine.run_dir / "cards" / f"{card.slug()}.scores.csv")
    picked = scores.groupby("label", sort=True).head(1).head(queries)
    fig, axes = plt.subplots(len(picked), top + 1, figsize=(1.1 * (top + 1), 1.2 * len(picked)), squeeze=False)
    for r, (_, row) in enumerate(picked.iterrows()):
        q = int(row["index"])
        axes[r][0].imshow(load_rgb(sbir.query.paths[q]))
        axes[r][0].set_title(sbir.unseen[int(row["label"])].split("/")[-1][:14], fontsize=6)
        for c, g in enumerate(int(v) for v in str(row["top10"]).split()[:top]):
            ax = axes[r][c + 1]
            ax.imshow(load_rgb(sbir.gallery.paths[g]))
            hit = int(sbir.gallery.labels[g]) == int(row["label"])
            for spine in ax.spines.values():
                spine.set_edgecolor("#2ca02c" if hit else "#d62728")
                spine.set_linewidth(2.5)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def sbka_report(table: pd.DataFrame, per_seed: pd.DataFrame, grid, overrides: list[str]) -> HtmlReport:
    report = HtmlReport("visec bench: zero-shot sketch-based image retrieval (SBKA)")
    report.text("Each model is trained on the seen categories (sketches and photos) and tested on the unseen ones: "
                "every unseen sketch queries the gallery of unseen photos. Metrics are averaged per class, then over "
                "classes (SAKE's and SBKA's convention); mAP@200 and P@200 truncate the ranking at 200. The cluster "
                "matching's M and K are chosen on the seen-class validation sketches against validation photos. "
                "Overrides: " + (" ".join(overrides) or "none") + ".")
    report.note("On the embedded data the teacher is a small ConvNeXt-V2 pre-trained here on the seen photos at 64 px; "
                "the numbers are not comparable to the paper's ImageNet ConvNeXt-V2-Tiny tables.")
    report.heading("Unseen-class retrieval (mean over seeds, sample sd)").table(table, float_format="{:.3f}")
    report.heading("Per seed").table(per_seed, float_format="{:.3f}")
    if grid is not None:
        engine, card = grid
        block = card.metrics["matching"]
        report.heading("Retrieval grid (SBKA, cluster matching)").figure(
            retrieval_grid(engine, card),
            f"first column: an unseen query sketch per class; then its top-10 photos (green: same class). "
            f"M={block['m']}, K={block['k']}, seed {card.seed}")
    return report


__all__ = ["sbka_bench", "summary_table", "retrieval_grid"]
