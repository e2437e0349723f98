"""``visec bench --method gcscoop``: zero-shot CLIP, CoOp, CoCoOp, KgCoOp, SAM-CoOp and GCSCoOp on the
base-to-new protocol, over three seeds.

On the embedded data (default) the bench draws the captioned object set, pre-trains the tiny CLIP
once (cached), then for every entrant and seed fits the prompt on the few-shot base classes
(``configs/gcscoop/default.yaml`` with the entrant's overrides), tests the final checkpoint on the
base test classes and, with the new class names, on the new test classes. It writes the engine's
two cards per run, one ``base2new`` card per run (base, new, H), the table of means and spreads,
and an HTML report with the table and GCSAM's per-step gradient cosine and branch choice.

With ``--data ROOT --set data.dataset=NAME --set model.clip=ViT-B-16 --set model.clip_weights=FILE``
the same protocol runs on one of CoOp's layouts (:mod:`visec.data.prompt_datasets`).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console

from visec.cards import ResultCard
from visec.config import load_config, parse_overrides
from visec.engine import Engine
from visec.engine.engine import build_module, card_name
from visec.metrics import base_new_summary, harmonic_mean
from visec.registry import BENCHES
from visec.report.html import HtmlReport

# (label, overrides): the six rows of the comparison
ENTRANTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("CLIP (zero-shot)", ("model.learner=zeroshot", "train.sam=none")),
    ("CoOp", ("model.learner=coop", "train.sam=none")),
    ("CoCoOp", ("model.learner=cocoop", "train.sam=none")),
    ("KgCoOp", ("model.learner=kgcoop", "train.sam=none")),
    ("SAM-CoOp", ("model.learner=coop", "train.sam=sam")),
    ("GCSCoOp", ("model.learner=coop", "train.sam=gcsam")),
)
SEEDS = 3


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def _data_overrides(data: str | Path | None, overrides: list[str], out: Path) -> list[str]:
    """The data settings of every run: the embedded set under ``out/data`` unless ``--set data.root`` names
    another copy, or ``--data ROOT`` with ``--set data.dataset=NAME`` for a CoOp layout."""
    given = parse_overrides(overrides)
    if data is None:
        root = given.get("data", {}).get("root") or out / "data"
        return [f"data.root={root}", f"model.embedded_root={root}"]
    from visec.data.prompt_datasets import LAYOUTS
    from visec.errors import ConfigError

    if given.get("data", {}).get("dataset") in (None, "visec_captions"):
        raise ConfigError(f"--data {data}: also name its layout with --set data.dataset=NAME "
                          f"({', '.join(n for n in LAYOUTS if n != 'visec_captions')})")
    return [f"data.root={data}"]


def run_one(label: str, overrides: list[str], seed: int, out: Path) -> tuple[dict[str, ResultCard], Engine, dict]:
    """Fit (unless zero-shot) and test one entrant at one seed: ``({"base": card, "new": card}, engine, fit)``."""
    from visec.checkpoint import save_checkpoint

    cfg = load_config("gcscoop", [f"output_dir={out / 'runs'}", f"name={_slug(label)}-seed{seed}",
                                  f"train.seed={seed}", *overrides])
    engine = Engine(cfg)
    start = time.perf_counter()
    if cfg.model["learner"] == "zeroshot":  # nothing to train: the hand-crafted prompt as the checkpoint
        best = engine.run_dir / "best.safetensors"
        if not best.is_file():
            engine.run_dir.mkdir(parents=True, exist_ok=True)
            cfg.save(engine.run_dir / "config.yaml")
            save_checkpoint(build_module(cfg).net, best, {"config": cfg.to_dict(), "selection": "none", "epoch": None})
        fit: dict[str, Any] = {"best_epoch": None}
    else:
        fit = engine.fit(resume=(engine.run_dir / "last.ckpt").is_file())
    fit["fit_seconds"] = time.perf_counter() - start
    from visec.engine.method import method_of

    cards = {protocol: engine.test(split=split, protocol=protocol)  # base, new
             for split, protocol in method_of("gcscoop").test_protocols}
    return cards, engine, fit


def base2new_card(cards: dict[str, ResultCard], engine: Engine, fit: dict) -> ResultCard:
    """One card per run with base, new and H (the protocol's three numbers)."""
    b, n = (cards[k].metrics["classify"]["acc"] for k in ("base", "new"))
    metrics = {"base2new": {"base_acc": b, "new_acc": n,
                            "hm": {"value": harmonic_mean(b["value"], n["value"]), "ci": None},
                            "n": cards["base"].metrics["classify"]["n"] + cards["new"].metrics["classify"]["n"]}}
    cfg = engine.cfg
    return ResultCard(method=card_name(cfg), train_data=cards["base"].train_data,
                      test_data=f"{cards['base'].test_data}+new", protocol="base2new", seed=cfg.train.seed,
                      metrics=metrics, config=cfg.to_dict(), selection=cfg.train.select_on,
                      timings={"fit_seconds": round(fit["fit_seconds"], 2)},
                      notes=["H = 2BN/(B+N) of this run; the bench table takes H of the seed means"])


@BENCHES.register("gcscoop", summary="captioned objects: CLIP / CoOp / CoCoOp / KgCoOp / SAM-CoOp / GCSCoOp, "
                                     "base / new / H over 3 seeds, report")
def gcscoop_bench(out: str | Path, *, seed: int = 0, console: Console | None = None, data: str | Path | None = None,
                  overrides: list[str] | None = None, entrants: list[str] | None = None,
                  seeds: int = SEEDS) -> list[Path]:
    """Every entrant of :data:`ENTRANTS` (or the named labels) at ``seeds`` seeds from ``seed``."""
    out = Path(out)
    console = console or Console()
    extra = [*_data_overrides(data, list(overrides or []), out), *(overrides or [])]
    cfg = load_config("gcscoop", extra)
    if data is None and cfg.model["clip_weights"] == "embedded":
        from visec.data.synthetic.captions import ensure_caption_dataset
        from visec.methods.gcscoop.pretrain import pretrain_tiny_clip

        start = time.perf_counter()
        root = ensure_caption_dataset(cfg.data.root)
        console.print(f"data: the captioned objects in {root} ({time.perf_counter() - start:.1f} s)")
        start = time.perf_counter()
        path = pretrain_tiny_clip(root, cfg.model["clip_seed"], cfg.model["tiny"], cfg.model["pretrain"],
                                  log=lambda m: console.print("  " + m))
        console.print(f"tiny CLIP: {path} ({time.perf_counter() - start:.1f} s)")
    chosen = [e for e in ENTRANTS if entrants is None or e[0] in entrants]
    rows, paths, logs = [], [], {}
    for label, ov in chosen:
        for s in range(seed, seed + seeds):
            console.print(f"{label}, seed {s} ...")
            cards, engine, fit = run_one(label, [*ov, *extra], s, out)
            summary = base2new_card(cards, engine, fit)
            paths += [c.save(out / "cards") for c in (*cards.values(), summary)]
            m = summary.metrics["base2new"]
            rows.append({"model": label, "card": summary.method, "seed": s, "base": m["base_acc"]["value"],
                         "new": m["new_acc"]["value"], "H": m["hm"]["value"],
                         "fit s": round(fit["fit_seconds"], 1)})
            console.print(f"  base {rows[-1]['base']:.3f}  new {rows[-1]['new']:.3f}  H {rows[-1]['H']:.3f}")
            if engine.cfg.train.sam != "none":
                logs[(label, s)] = engine.training_log()
    per_seed = pd.DataFrame(rows)
    table = summary_table(per_seed)
    table.to_csv(out / "base2new.csv", index=False)
    console.print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    report = gcscoop_report(table, per_seed, logs, extra)
    console.print(f"report: {report.write(out / 'report.html')}")
    return paths


def summary_table(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Per entrant: mean base / new over seeds with their spreads (sample sd) and H of the means."""
    rows = []
    for label, g in per_seed.groupby("model", sort=False):
        s = base_new_summary(g["base"].to_numpy(), g["new"].to_numpy())
        rows.append({"model": label, "base": s["base"], "base sd": s["base_sd"], "new": s["new"],
                     "new sd": s["new_sd"], "H": s["hm"], "seeds": s["n"]})
    return pd.DataFrame(rows)


def gcscoop_report(table: pd.DataFrame, per_seed: pd.DataFrame, logs: dict[tuple[str, int], pd.DataFrame],
                   overrides: list[str]) -> HtmlReport:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = HtmlReport("visec bench: prompt learning, base-to-new (GCSCoOp)")
    report.text("Each prompt learner is fitted on few-shot images of the base classes (the first half of the sorted "
                "class ids) of a frozen CLIP and tested, with the same weights, on the base test classes and on the "
                "new classes. H = 2BN/(B+N) of the seed means. Overrides: " + (" ".join(overrides) or "none") + ".")
    report.note("On the embedded data the CLIP is a tiny open_clip model pre-trained here on procedurally drawn, "
                "captioned objects; the numbers are not comparable to the paper's ViT-B/16 tables.")
    report.heading("Base / new / H (mean over seeds, sample sd)").table(table, float_format="{:.3f}")
    report.heading("Per seed").table(per_seed, float_format="{:.3f}")
    if logs:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
        for (label, s), df in logs.items():
            if "train/sam_cos" not in df.columns:
                continue
            d = df.dropna(subset=["train/sam_cos"])
            axes[0].plot(d["step"], d["train/sam_cos"], lw=0.8, label=f"{label} s{s}")
            if label == "GCSCoOp":
                branch = np.select([d["train/sam_erm"] > 0.5, d["train/sam_proj"] > 0.5], [0, 1], 2)
                axes[1].scatter(d["step"], branch + 0.08 * (s - per_seed["seed"].min()), s=4, label=f"seed {s}")
        axes[0].set(title="cos(g_SAM, g_ERM) per step", xlabel="step", ylabel="cosine")
        axes[0].grid(alpha=0.3)
        axes[0].legend(fontsize=6, ncol=2)
        axes[1].set(title="GCSAM branch per step", xlabel="step", yticks=[0, 1, 2],
                    yticklabels=["ERM", "projection", "SAM"])
        axes[1].grid(alpha=0.3)
        axes[1].legend(fontsize=6)
        fig.tight_layout()
        report.heading("The gradient constraint over training").figure(
            fig, "left: cosine between the SAM gradient (at theta + eps) and the ERM gradient, per step; right: the "
                 "branch of GCSAM's rule taken for the context tensor (below beta1: ERM; above beta2: SAM; between: "
                 "projection on the normalised sum)")
    return report
