"""``visec bench --method mmnet``: SeqFakeFormer and MMNet on both embedded sequential subsets.

The bench draws the embedded sequential faces (``visec data synth --kind sequences``, cached), then
for every subset, entrant and seed trains the entrant's config (``configs/mmnet/seqfakeformer.yaml``
or ``default.yaml``), selects the checkpoint on the validation split's Adaptive-Acc, and tests it
once: Fixed-Acc, Adaptive-Acc, CSM and CSM@1..5 with bootstrap intervals over identities, the
majority-sequence baseline of the training split on the same test images, and (MMNet) the recovery
PSNR / SSIM / dlib identity distance of recovered and forged faces to the originals.

The HTML report has the leaderboard, a confusion matrix per decoding step, test faces with their
true and predicted sequences, and recovered faces beside the forged input and the original.
With ``--data MANIFEST`` the same runs on one sequence manifest (``visec data build seqdeepfake``).
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
from visec.registry import BENCHES
from visec.report.html import HtmlReport

ENTRANTS: tuple[tuple[str, str], ...] = (("SeqFakeFormer", "mmnet/seqfakeformer"), ("MMNet", "mmnet"))
SUBSETS = ("facial_components", "facial_attributes")
SEEDS = 1
METRICS = ("fixed_acc", "adaptive_acc", "csm", "csm@1", "csm@2", "csm@3", "csm@4", "csm@5")


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def _row(subset: str, label: str, seed: int, block: dict[str, Any], **extra: Any) -> dict[str, Any]:
    row = {"subset": subset, "model": label, "seed": seed, **{k: float(block[k]) for k in METRICS}}
    for k in ("adaptive_acc", "csm"):
        lo, hi = block.get("ci", {}).get(k, (float("nan"), float("nan")))
        row[f"{k} ci"] = f"[{lo:.3f}, {hi:.3f}]"
    return {**row, **extra}


@BENCHES.register("mmnet", summary="embedded sequential faces (components, attributes): SeqFakeFormer vs MMNet, "
                                   "Fixed/Adaptive/CSM with intervals, majority baseline, face recovery")
def mmnet_bench(out: str | Path, *, seed: int = 0, console: Console | None = None, data: str | Path | None = None,
                overrides: list[str] | None = None, seeds: int = SEEDS,
                subsets: tuple[str, ...] = SUBSETS) -> list[Path]:
    out = Path(out)
    console = console or Console()
    overrides = list(overrides or [])
    given = parse_overrides(overrides)
    root = given.get("model", {}).get("embedded_root") or out / "data"
    if data is not None:
        sets = [(Path(data).stem, [f"data.manifest={data}"])]
    else:  # the embedded manifests named explicitly, so every card says which subset it tested on
        from visec.methods.mmnet.lightning_model import SequenceParams, embedded_manifest

        synth = given.get("model", {}).get("synth") or {}
        sets = [(s, [f"model.subset={s}", f"model.embedded_root={root}",
                     f"data.manifest={embedded_manifest(SequenceParams(subset=s, synth=synth), root)}"])
                for s in subsets]
    rows, paths, shown = [], [], {}
    for subset, data_ov in sets:
        baseline = None
        for label, config in ENTRANTS:
            for s in range(seed, seed + seeds):
                console.print(f"{subset}: {label}, seed {s} ...")
                cfg = load_config(config, [f"output_dir={out / 'runs'}", f"name={subset}-{_slug(label)}-seed{s}",
                                           f"train.seed={s}", *data_ov, *overrides])
                engine = Engine(cfg)
                start = time.perf_counter()
                fit = engine.fit(resume=(engine.run_dir / "last.ckpt").is_file())
                seconds = time.perf_counter() - start
                card = engine.test()
                paths.append(card.save(out / "cards"))
                m = card.metrics
                rec = m.get("recovery", {})
                rows.append(_row(subset, label, s, m["sequence"], **{
                    "psnr recovered": rec.get("psnr_recovered"), "psnr forged": rec.get("psnr_forged"),
                    "ssim recovered": rec.get("ssim_recovered"), "ssim forged": rec.get("ssim_forged"),
                    "id dist recovered": rec.get("identity_recovered"), "id dist forged": rec.get("identity_forged"),
                    "fit s": round(seconds, 1), "best epoch": fit.get("best_epoch")}))
                baseline = baseline or (m["majority_baseline"], s)
                console.print(f"  Adaptive {m['sequence']['adaptive_acc']:.3f}, CSM {m['sequence']['csm']:.3f}, "
                              f"Fixed {m['sequence']['fixed_acc']:.3f} (majority CSM "
                              f"{m['majority_baseline']['csm']:.3f})"
                              + (f"; recovery PSNR {rec['psnr_recovered']:.2f} dB vs forged {rec['psnr_forged']:.2f}"
                                 if rec.get("psnr_recovered") is not None else ""))
                shown[(subset, label)] = (engine, card)
        if baseline is not None:
            rows.append(_row(subset, f"majority sequence ({baseline[0]['sequence'] or 'original'})", baseline[1],
                             baseline[0]))
    table = pd.DataFrame(rows)
    table.to_csv(out / "sequences.csv", index=False)
    console.print(table[["subset", "model", "seed", "fixed_acc", "adaptive_acc", "adaptive_acc ci", "csm", "csm ci"]]
                  .to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    report = mmnet_report(table, shown, overrides)
    console.print(f"report: {report.write(out / 'report.html')}")
    return paths


def _names(engine: Engine) -> list[str]:
    from visec.data.sequences import SUBSETS as NAMES

    subset = engine.cfg.method_params().subset
    if engine.cfg.data.manifest is not None:
        from visec.data.sequences import read_sequence_manifest

        df = read_sequence_manifest(engine.cfg.data.manifest).df
        if "subset" in df and df["subset"].nunique() == 1:
            subset = str(df["subset"].iloc[0])
    return ["NA", *NAMES.get(subset, [str(i) for i in range(1, 6)])]


def confusion_figure(card: ResultCard, names: list[str]):
    """One confusion matrix per decoding step (rows: truth, columns: prediction; NA = no edit)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conf = np.asarray(card.metrics["step_confusion"])[:, :len(names), :len(names)]
    fig, axes = plt.subplots(1, conf.shape[0], figsize=(3.0 * conf.shape[0], 3.1))
    for k, ax in enumerate(np.atleast_1d(axes)):
        c = conf[k]
        ax.imshow(c / np.maximum(c.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
        for i in range(c.shape[0]):
            for j in range(c.shape[1]):
                if c[i, j]:
                    ax.text(j, i, str(c[i, j]), ha="center", va="center", fontsize=6)
        ax.set_title(f"step {k + 1}", fontsize=8)
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
        ax.set_yticks(range(len(names)), names if k == 0 else [""] * len(names), fontsize=6)
    fig.tight_layout()
    return fig


def _examples(engine: Engine, card: ResultCard, n: int) -> pd.DataFrame:
    """Test faces of every sequence length (the first of each, then more), as the card scored them."""
    scores = pd.read_csv(engine.run_dir / "cards" / f"{card.slug()}.scores.csv", dtype={"true": str, "pred": str})
    scores["length"] = scores["true"].map(lambda s: 0 if s == "0" else len(s.split("-")))
    first = scores.groupby("length", sort=True).head(2)
    return pd.concat([first, scores.drop(first.index)]).head(n)


def _text(seq: str, names: list[str]) -> str:
    return "original" if seq == "0" else ">".join(names[int(v)] for v in seq.split("-"))


def examples_figure(engine: Engine, card: ResultCard, n: int = 10):
    """Test faces with their true and predicted sequences (green: exact match, red: not)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from visec.data.images import load_rgb

    names = _names(engine)
    root = _manifest_root(engine)
    picked = _examples(engine, card, n)
    fig, axes = plt.subplots(1, len(picked), figsize=(1.9 * len(picked), 2.6), squeeze=False)
    for ax, (_, row) in zip(axes[0], picked.iterrows()):
        ax.imshow(load_rgb(root / row["path"]))
        ok = row["true"] == row["pred"]
        ax.set_title(f"true {_text(row['true'], names)}\npred {_text(row['pred'], names)}", fontsize=5.5,
                     color="#2ca02c" if ok else "#d62728")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def _manifest_root(engine: Engine) -> Path:
    from visec.engine.engine import build_datamodule

    return build_datamodule(engine.cfg).manifest.root


def recovery_figure(engine: Engine, card: ResultCard, n: int = 6):
    """Forged face, MMNet's recovered face and the original, for forged test faces."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from visec.data.datamodule import to_tensor
    from visec.data.images import load_rgb
    from visec.engine.engine import build_datamodule

    dm = build_datamodule(engine.cfg)
    df = dm.manifest.df
    root = dm.manifest.root
    scores = pd.read_csv(engine.run_dir / "cards" / f"{card.slug()}.scores.csv", dtype={"true": str, "pred": str})
    forged = scores[scores["true"] != "0"].head(n)
    rows = df.set_index("path").loc[forged["path"]]
    size = engine.cfg.data.image_size
    x = torch.stack([to_tensor(load_rgb(root / p), size) for p in forged["path"]])
    module, _ = engine.load_module()
    module.eval()
    with torch.no_grad():
        rec = module.generate(x)["recovered"].clamp(0, 1).permute(0, 2, 3, 1).numpy()
    fig, axes = plt.subplots(3, len(forged), figsize=(1.6 * len(forged), 5.0), squeeze=False)
    for c, (path, orig) in enumerate(zip(forged["path"], rows["original"])):
        for r, (img, title) in enumerate(((load_rgb(root / path), "forged"), (rec[c], "recovered"),
                                          (load_rgb(root / orig), "original"))):
            axes[r][c].imshow(img)
            axes[r][c].set_xticks([])
            axes[r][c].set_yticks([])
            if c == 0:
                axes[r][c].set_ylabel(title, fontsize=8)
        axes[0][c].set_title(f"{forged['psnr_forged'].iloc[c]:.1f} -> {forged['psnr_recovered'].iloc[c]:.1f} dB",
                             fontsize=6)
    fig.tight_layout()
    return fig


def mmnet_report(table: pd.DataFrame, shown: dict, overrides: list[str]) -> HtmlReport:
    report = HtmlReport("visec bench: sequential deepfake detection (SeqFakeFormer, MMNet)")
    report.text("Each model predicts the ordered list of up to five edits of a face. Fixed-Acc: per-slot accuracy over "
                "all five slots; Adaptive-Acc: per-slot accuracy over the first max(nnz(truth), nnz(prediction)) "
                "slots; CSM: the whole sequence right; CSM@k: the first k steps right. Intervals: 95 % bootstrap over "
                "identities of the test split. The majority row predicts the training split's most frequent sequence "
                "for every test face. Recovery: PSNR / SSIM of MMNet's recovered face and of the forged input to the "
                "original (forged faces only); identity distance: dlib's 128-D recogniser (same person below 0.6). "
                "Overrides: " + (" ".join(overrides) or "none") + ".")
    report.note("MMNet's modules are reconstructed from its abstract (no code was released): see "
                "src/visec/methods/mmnet/README.md. The embedded faces are 64 px GAN faces with synthetic edits; the "
                "numbers are not comparable to the Seq-DeepFake tables.")
    report.heading("Leaderboard").table(table, float_format="{:.3f}")
    for (subset, label), (engine, card) in shown.items():
        names = _names(engine)
        report.heading(f"{subset}: {label}")
        report.figure(confusion_figure(card, names), "confusion per decoding step (rows: truth; NA: no edit)")
        report.figure(examples_figure(engine, card), "test faces with true and predicted sequences")
        if card.metrics.get("recovery", {}).get("psnr_recovered") is not None:
            report.figure(recovery_figure(engine, card), "forged input, recovered face, original "
                                                         "(PSNR to the original, forged -> recovered)")
    return report


__all__ = ["mmnet_bench", "mmnet_report", "confusion_figure", "examples_figure", "recovery_figure"]
