"""``visec bench --method ancra``: standard, PGD-AT, TRADES and their ANCRA versions side by side.

Trains every model through the engine on the embedded digits (``configs/ancra/default.yaml`` /
``configs/adversarial_training/default.yaml``: a small CNN, 16 px, L-inf eps 0.1), selects each on
the validation split (robust accuracy; the standard model on clean accuracy, since its robust
accuracy is ~0 at every epoch and would select an untrained network), tests clean / FGSM / PGD-20 /
CW-20 (+ the soft-mask adaptive PGD-20 for RA networks) on the test split, writes one card per
model under ``out/cards`` and an HTML report with the table, training curves and a grid of
adversarial examples and their perturbations. A few minutes on 2 CPU cores.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.console import Console

from visec.config import budget_label, load_config
from visec.engine import Engine
from visec.registry import BENCHES
from visec.cards import ResultCard
from visec.report.html import HtmlReport

# (run name, method, overrides): the five models of the comparison
MODELS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("standard", "adversarial_training", ("model.procedure=standard", "train.monitor=clean_acc")),
    ("pgd_at", "adversarial_training", ("model.procedure=pgd_at",)),
    ("trades", "adversarial_training", ("model.procedure=trades",)),
    ("pgd_at_ancra", "ancra", ("model.procedure=pgd_at",)),
    ("trades_ancra", "ancra", ("model.procedure=trades",)),
)
COLUMNS = {"clean_acc": "clean", "fgsm_acc": "FGSM", "pgd20_acc": "PGD-20", "cw20_acc": "CW-20",
           "pgd20_softmask_acc": "PGD-20 soft-mask (adaptive)", "worst_case_acc": "worst case"}


def _data_overrides(data: str | Path | None) -> list[str]:
    """``--data``: a folder holding ``cifar-10-batches-py`` or ``cifar-100-python`` instead of digits."""
    if data is None:
        return []
    from visec.data.classification import CIFAR_FOLDERS, NUM_CLASSES
    from visec.errors import DataError

    root = Path(data)
    for name, folder in CIFAR_FOLDERS.items():
        if (root / folder).is_dir() or root.name == folder:
            return [f"data.dataset={name}", f"data.root={root}", "data.image_size=32",
                    f"model.num_classes={NUM_CLASSES[name]}"]
    raise DataError(f"--data {root}: expected a folder holding {' or '.join(CIFAR_FOLDERS.values())}")


def train_and_test(name: str, method: str, overrides: list[str], out: Path) -> tuple[ResultCard, Engine, dict]:
    cfg = load_config(method, [f"output_dir={out / 'runs'}", f"name={name}", *overrides])
    engine = Engine(cfg)
    start = time.perf_counter()
    fit = engine.fit(resume=(engine.run_dir / "last.ckpt").is_file())
    fit["fit_seconds"] = time.perf_counter() - start
    card = engine.test(protocol=f"linf-eps{budget_label(cfg.model['eps'])}")
    return card, engine, fit


@BENCHES.register("ancra", summary="digits: standard / PGD-AT / TRADES / +ANCRA, clean vs robust accuracy, report")
def ancra_bench(out: str | Path, *, seed: int = 0, console: Console | None = None, data: str | Path | None = None,
                overrides: list[str] | None = None, models: list[str] | None = None) -> list[Path]:
    """Train, test, card and report every model of :data:`MODELS` (or the named subset)."""
    out = Path(out)
    console = console or Console()
    extra = [f"train.seed={seed}", *_data_overrides(data), *(overrides or [])]
    chosen = [m for m in MODELS if models is None or m[0] in models]
    rows, paths, engines, curves, flags = [], [], {}, {}, {}
    for name, method, model_ov in chosen:
        console.print(f"training {name} ({method}) ...")
        card, engine, fit = train_and_test(name, method, [*model_ov, *extra], out)
        card.timings["fit_seconds"] = round(fit["fit_seconds"], 2)
        card.extra["best_epoch"] = fit["best_epoch"]
        params = engine.cfg.method_params()
        paths.append(card.save(out / "cards"))
        r = card.metrics["robust"]
        row: dict[str, Any] = {"model": params.label, "RA": params.uses_ra}
        row.update({label: r[key]["value"] for key, label in COLUMNS.items() if key in r})
        row["masking flagged"] = bool(r.get("gradient_masking", False))
        row.update({"best epoch": fit["best_epoch"], "train s": f"{fit['fit_seconds']:.1f}"})
        flags[params.label] = list(r.get("gradient_masking_reasons", []))
        rows.append(row)
        engines[params.label] = engine
        curves[params.label] = _curve(engine)
        console.print("  " + "  ".join(f"{label} {r[key]['value']:.3f}" for key, label in COLUMNS.items() if key in r))
    table = pd.DataFrame(rows)
    order = ["model", "RA", *[c for c in COLUMNS.values() if c in table.columns], "masking flagged",
             "best epoch", "train s"]
    table = table[order]
    report = ancra_report(table, engines, curves, extra, flags)
    console.print(f"report: {report.write(out / 'report.html')}")
    return paths


def _curve(engine: Engine) -> pd.DataFrame:
    df = engine.training_log()
    cols = [c for c in ("val/clean_acc", "val/robust_acc") if c in df.columns]
    return df.dropna(subset=cols)[["epoch", *cols]] if cols else pd.DataFrame()


def adversarial_grid(engines: dict[str, Engine], n_images: int = 6) -> Any:
    """A figure: clean test images, then per model its PGD-20 examples and their perturbations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from visec.attacks import PGD
    from visec.engine.engine import build_datamodule

    first = next(iter(engines.values()))
    dm = build_datamodule(first.cfg)
    ds = dm.dataset(first.cfg.data.test_split)
    labels = ds.labels.numpy()
    idx = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)[:n_images]]
    x, y = ds.images[idx], ds.labels[idx]
    fig, axes = plt.subplots(1 + 2 * len(engines), len(idx), figsize=(1.25 * len(idx), 1.35 * (1 + 2 * len(engines))),
                             squeeze=False)

    def show(ax, img: torch.Tensor, title: str, color: str = "black") -> None:
        ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
        ax.set_title(title, fontsize=7, color=color)
        ax.set_xticks([])
        ax.set_yticks([])

    for j in range(len(idx)):
        show(axes[0][j], x[j], f"clean, y={int(y[j])}")
    axes[0][0].set_ylabel("clean", fontsize=7)
    for i, (label, engine) in enumerate(engines.items()):
        module, _ = engine.load_module()
        net = module.net.eval()
        p = module.params
        attack = PGD(net, eps=p.eps, alpha=p.eval_alpha or p.alpha, steps=20, random_start="uniform",
                     seed=engine.cfg.train.seed + 100)
        x_adv = attack(x, y)
        with torch.no_grad():
            pred = net(x_adv).argmax(1)
        delta = x_adv - x
        for j in range(len(idx)):
            ok = bool(pred[j] == y[j])
            show(axes[1 + 2 * i][j], x_adv[j], f"pred {int(pred[j])}", "green" if ok else "red")
            show(axes[2 + 2 * i][j], (delta[j] / (2 * p.eps) + 0.5), f"|d|max {delta[j].abs().max():.3f}")
        axes[1 + 2 * i][0].set_ylabel(label, fontsize=7)
        axes[2 + 2 * i][0].set_ylabel("perturbation", fontsize=7)
    fig.tight_layout()
    return fig


def ancra_report(table: pd.DataFrame, engines: dict[str, Engine], curves: dict[str, pd.DataFrame],
                 overrides: list[str], flags: dict[str, list[str]] | None = None) -> HtmlReport:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(engines.values()))
    cfg = first.cfg
    p = cfg.method_params()
    report = HtmlReport("visec bench: adversarial training with and without ANCRA")
    report.text(f"Data: {cfg.data.dataset} at {cfg.data.image_size} px (split {cfg.data.test_split}); architecture "
                f"{p.arch} {p.arch_kwargs or ''} (RA blocks for the ANCRA models, the plain twin otherwise). "
                f"Threat model: L-inf, eps = {p.eps:.4g}. Training attacks: PGD-{p.steps}, step {p.alpha:.4g}, "
                f"start x + {p.start_sigma:g}*N(0,1); evaluation attacks: FGSM, PGD-20 and CW-20 (margin loss) "
                f"with uniform random starts, step {p.eval_alpha or p.alpha:.4g}. {cfg.train.max_epochs} epochs each; "
                f"model selection on the validation split (robust accuracy, PGD-{p.eval_steps}; clean accuracy "
                f"for the standard model). Loss weights: TRADES beta {p.beta:g}, ANC zeta {p.zeta:g}, "
                f"alpha {p.anc_alpha:g}, aux lambda_cr {p.lambda_cr:g}. Overrides: {' '.join(overrides) or 'none'}.")
    report.note("RA networks choose their re-weighting class with a hard argmax, which plain gradient attacks "
                "treat as a constant. The soft-mask column is a transfer attack crafted on a differentiable "
                "surrogate (mask = softmax(aux/tau) @ W) and judged on the real model; when it beats every "
                "white-box attack, visec's robust evaluator flags gradient masking. The worst-case column (per "
                "image, over all attacks) is the number to compare. PGD-AT+ANCRA is an inferred variant (no "
                "released code); the digits numbers are not comparable to the paper's CIFAR numbers.")
    report.heading("Clean and robust accuracy (test split)")
    report.table(table, float_format="{:.3f}")
    for label, reasons in (flags or {}).items():
        for reason in reasons:
            report.note(f"{label}: gradient masking suspected: {reason}")
    acc_cols = [c for c in COLUMNS.values() if c in table.columns]
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(table), 3.4))
    width = 0.8 / len(acc_cols)
    for k, col in enumerate(acc_cols):
        ax.bar(np.arange(len(table)) + (k - (len(acc_cols) - 1) / 2) * width, table[col].fillna(0), width, label=col)
    ax.set_xticks(np.arange(len(table)), table["model"], fontsize=8)
    ax.set(ylabel="accuracy", ylim=(0, 1))
    ax.legend(fontsize=7, ncol=3, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    ax.grid(axis="y", alpha=0.3)
    report.figure(fig, "clean, per-attack and worst-case accuracy per training procedure")
    if any(len(c) for c in curves.values()):
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
        for label, c in curves.items():
            for ax, col in zip(axes, ("val/clean_acc", "val/robust_acc")):
                if col in c:
                    ax.plot(c["epoch"], c[col], marker=".", label=label)
        for ax, title in zip(axes, ("validation clean accuracy", f"validation PGD-{p.eval_steps} accuracy")):
            ax.set(title=title, xlabel="epoch")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        report.heading("Training curves").figure(fig, "validation accuracy after every epoch")
    report.heading("Adversarial examples and perturbations")
    report.figure(adversarial_grid(engines), "PGD-20 examples against each selected model (green: still "
                  "correct, red: fooled) and their perturbations, scaled from [-eps, eps] to [0, 1]")
    return report
