"""The paired-ablation report: each detector minus its own counterpart, per seed with a paired
bootstrap interval, and over seeds with their mean and spread (``visec bench --suite ablation``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from visec.errors import MetricError
from visec.report.html import HtmlReport


@dataclass(frozen=True)
class AblationPair:
    """Two cards on the same test images: ``a`` (the method or one of its test-time variants) and
    ``b`` (its counterpart), trained with the same seed on the same protocol."""

    method: str  # registered method name
    model: str  # card name of a (acmf/mobilenetv2+imagenet, ...+fac)
    counterpart: str  # card name of b
    seed: int
    protocol: str  # intra, leave-out:FAMILY
    a: Path
    b: Path
    mechanism: str = ""


def _scores(card: Path) -> pd.DataFrame:
    path = card.with_name(card.name.replace(".card.json", ".scores.csv"))
    if not path.is_file():
        raise MetricError(f"{card} has no per-image scores ({path.name}); test it again to pair it")
    return pd.read_csv(path)


def paired_scores(a: Path, b: Path) -> pd.DataFrame:
    """The two cards' per-image scores side by side (``label``, ``video_id``, ``prob_a``, ``prob_b``),
    matched by image path; a clear error when the two were not tested on the same images."""
    sa, sb = _scores(a), _scores(b)
    if len(sa) != len(sb) or set(sa["path"]) != set(sb["path"]):
        raise MetricError(f"{a.name} and {b.name} were tested on different images ({len(sa)} vs {len(sb)}); "
                          f"a paired comparison needs the same test set")
    both = sa.merge(sb[["path", "label", "prob"]], on="path", suffixes=("_a", "_b"))
    if not (both["label_a"] == both["label_b"]).all():
        raise MetricError(f"{a.name} and {b.name} disagree on labels of the same images")
    return both.rename(columns={"label_a": "label"})


def paired_rows(pairs: list[AblationPair], n_bootstrap: int = 1000) -> pd.DataFrame:
    """One row per pair: frame and video AUC of both, the difference and its paired 95 % interval
    (videos resampled; the same resample for both), and whether the interval excludes zero."""
    from visec.metrics import paired_difference

    rows = []
    for p in pairs:
        s = paired_scores(p.a, p.b)
        d = paired_difference(s["label"], s["prob_a"], s["prob_b"], s["video_id"], n_bootstrap=n_bootstrap,
                              seed=p.seed)
        row = {"method": p.method, "model": p.model, "counterpart": p.counterpart, "mechanism": p.mechanism,
               "protocol": p.protocol, "seed": p.seed, "n": len(s)}
        for level in ("frame", "video"):
            auc = d[level]["auc"]
            row |= {f"{level}_auc_model": auc["a"], f"{level}_auc_counterpart": auc["b"],
                    f"{level}_diff": auc["diff"], f"{level}_ci_lo": auc["ci"][0] if auc["ci"] else np.nan,
                    f"{level}_ci_hi": auc["ci"][1] if auc["ci"] else np.nan}
        row["verdict"] = ("better" if row["frame_ci_lo"] > 0 else "worse" if row["frame_ci_hi"] < 0
                          else "no difference")
        rows.append(row)
    cols = ["method", "model", "counterpart", "mechanism", "protocol", "seed", "n"]
    return pd.DataFrame(rows, columns=None if rows else cols)


def seed_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (model, protocol): frame-AUC difference averaged over seeds with its sample standard
    deviation, both models' mean AUCs, and how many seeds' paired intervals lie above / below zero."""
    if rows.empty:
        return pd.DataFrame(columns=["model", "counterpart", "protocol", "seeds"])
    out = []
    for (model, counterpart, protocol), g in rows.groupby(["model", "counterpart", "protocol"], sort=False):
        d = g["frame_diff"].to_numpy(float)
        out.append({"method": g["method"].iloc[0], "model": model, "counterpart": counterpart, "protocol": protocol,
                    "seeds": len(g),
                    "auc_model": f"{g['frame_auc_model'].mean():.3f} ± {g['frame_auc_model'].std(ddof=1) if len(g) > 1 else 0:.3f}",
                    "auc_counterpart": f"{g['frame_auc_counterpart'].mean():.3f} ± "
                                       f"{g['frame_auc_counterpart'].std(ddof=1) if len(g) > 1 else 0:.3f}",
                    "diff_mean": float(d.mean()), "diff_sd": float(d.std(ddof=1)) if len(d) > 1 else float("nan"),
                    "seeds_better": int((g["verdict"] == "better").sum()),
                    "seeds_worse": int((g["verdict"] == "worse").sum())})
    return pd.DataFrame(out)


def _ci_table(rows: pd.DataFrame) -> pd.DataFrame:
    t = rows[["model", "counterpart", "protocol", "seed", "frame_auc_model", "frame_auc_counterpart",
              "frame_diff"]].copy()
    t["95% paired CI"] = [f"[{lo:+.3f}, {hi:+.3f}]" for lo, hi in zip(rows["frame_ci_lo"], rows["frame_ci_hi"])]
    t["verdict"] = rows["verdict"]
    return t


def ablation_report(rows: pd.DataFrame, summary: pd.DataFrame, shortcuts: dict | None, *, title: str,
                    context: str = "", spread: pd.DataFrame | None = None) -> HtmlReport:
    """The HTML page: the over-seeds summary, every seed's paired interval, and the shortcut checks."""
    report = HtmlReport(title)
    report.text("Each detector against its own counterpart: the same config, data, seed and schedule with "
                "the paper's mechanism switched off. A difference above zero means the mechanism helps. Per seed, "
                "the 95 % interval is a paired bootstrap over test videos (the same resample for both models); "
                "over seeds, the mean and sample standard deviation of the per-seed differences (training noise).")
    if context:
        report.note(context)
    report.heading("Method minus counterpart, over seeds (frame AUC)")
    if summary.empty:
        report.text("No pair of runs has finished yet.")
    else:
        report.table(summary, float_format="{:+.3f}")
        report.heading("Per seed, with paired intervals")
        report.table(_ci_table(rows), float_format="{:.3f}")
    if spread is not None and len(spread):
        report.heading("Every model over seeds (frame AUC)")
        report.text("Mean and sample standard deviation over training seeds (what retraining changes), beside "
                    "the first seed's value and its bootstrap interval over test videos (what the test set's "
                    "size allows).")
        report.table(spread, float_format="{:.3f}")
    if shortcuts is not None:
        from visec.report.shortcuts import shortcut_section

        shortcut_section(report, shortcuts)
    return report


__all__ = ["AblationPair", "ablation_report", "paired_rows", "paired_scores", "seed_summary"]
