"""The forgery-detection bench report: one self-contained HTML page built from result cards.

Sections: the data, a leaderboard (one row per model: intra-dataset AUC with its interval, the
leave-one-manipulation-out AUCs and the robustness sweep), ROC curves, score histograms per
manipulation family, the leave-one-out table next to the in-distribution AUC of the same family,
the robustness sweep as a plot, saliency maps (where each detector looks, next to the blend mask
the forgery really used) and a grid of test images with their scores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from visec.data.corruptions import ROBUSTNESS_SWEEP
from visec.data.manifest import read_manifest
from visec.metrics.classification import roc_auc
from visec.cards import ResultCard
from visec.report.html import HtmlReport

INTRA, LOO = "intra", "leave-out:"
HEADLINE_ATTACK = "intra+pgd-linf-4/255"  # its evasion rate is a leaderboard column


def _scores(card_path: Path) -> pd.DataFrame | None:
    path = card_path.with_name(card_path.name.replace(".card.json", ".scores.csv"))
    return pd.read_csv(path) if path.is_file() else None


def _auc(card: ResultCard) -> float:
    return float(card.metrics["frame"]["auc"]["value"])


def summary_table(cards: list[ResultCard]) -> pd.DataFrame:
    """One row per model: intra AUC [95% CI], video AUC, EER, LOO AUCs (+ mean), sweep AUCs, attacked
    AUCs, and the evasion rate under PGD L-inf 4/255."""
    rows: dict[str, dict] = {}
    attacked: dict[str, tuple] = {}  # attacked column -> sort key (direction, attack, norm, eps)
    for c in cards:
        row = rows.setdefault(c.method, {"model": c.method})
        frame = c.metrics["frame"]
        if c.protocol == INTRA:
            auc = frame["auc"]
            ci = f" [{auc['ci'][0]:.3f}, {auc['ci'][1]:.3f}]" if auc.get("ci") else ""
            row["intra AUC"] = f"{auc['value']:.3f}{ci}"
            row["video AUC"] = c.metrics.get("video", {}).get("auc", {}).get("value", np.nan)
            row["EER"] = frame["eer"]["value"]
            row["ACC"] = frame["acc"]["value"]
        elif c.protocol.startswith(LOO) and "+" not in c.protocol:
            row[f"LOO {c.protocol[len(LOO):]}"] = _auc(c)
        elif c.protocol.startswith(INTRA + "+"):
            row[c.protocol[len(INTRA) + 1:]] = _auc(c)
            if "attack" in c.metrics:
                a = c.metrics["attack"]
                key = (a["direction"], a["attack"] != "pgd", a["attack"], a["norm"] != "Linf", a["eps"])
                attacked[c.protocol[len(INTRA) + 1:]] = (*key, 0)
            if c.protocol == HEADLINE_ATTACK:  # the attacked headline: fakes that now pass as real
                row[f"evasion {c.protocol[len(INTRA) + 1:]}"] = c.metrics["attack"]["evasion_rate"]["value"]
                attacked[f"evasion {c.protocol[len(INTRA) + 1:]}"] = (*key, 1)
    df = pd.DataFrame(list(rows.values()))
    loo = [c for c in df.columns if c.startswith("LOO ")]
    if loo:
        df["LOO mean"] = df[loo].mean(axis=1)
    sweep = [c for c in ROBUSTNESS_SWEEP if c in df.columns]
    other = [c for c in df.columns if c not in {"model", "intra AUC", "video AUC", "EER", "ACC", *loo,
                                                 "LOO mean", *sweep, *attacked}]
    other += sorted(attacked, key=attacked.get)  # PGD by budget first, then the other attacks
    order = ["model", "intra AUC", "video AUC", "EER", "ACC", *loo, *(["LOO mean"] if loo else []), *sweep,
             *other]
    return df[[c for c in order if c in df.columns]]


def family_auc(scores: pd.DataFrame, manip: pd.Series) -> dict[str, float]:
    """AUC of real vs each manipulation family, from one card's per-image scores."""
    s = scores.assign(manipulation=scores["path"].map(manip))
    real = s[s["label"] == 0]
    out = {}
    for fam, g in s[s["label"] == 1].groupby("manipulation"):
        both = pd.concat([real, g])
        out[fam] = roc_auc(both["label"].to_numpy(), both["prob"].to_numpy())
    return out


def forgery_report(card_paths: list[Path], manifest: Path, examples: int = 6) -> HtmlReport:
    """The bench report for the cards at ``card_paths`` (their ``.scores.csv`` files sit beside them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    cards = [ResultCard.load(p) for p in card_paths]
    # only the intra-dataset runs' per-image scores are plotted: read just those
    scores = {id(c): _scores(p) for c, p in zip(cards, card_paths) if c.protocol == INTRA}
    m = read_manifest(manifest, check_files=False)
    manip = m.df.set_index("path")["manipulation"]
    intra = [c for c in cards if c.protocol == INTRA]

    report = HtmlReport("visec bench: face-forgery detection")
    counts = m.df.groupby(["split", "manipulation"]).size().unstack(fill_value=0).reset_index()
    report.text(f"Data: {manifest} ({len(m.df)} images, {m.df['video_id'].nunique()} videos). "
                f"Scores are probabilities of fake. Model selection: "
                f"{', '.join(sorted({c.selection for c in cards})) or '-'} split. Intervals are "
                f"{cards[0].config['train']['bootstrap'] if cards else 0}-sample bootstrap 95% intervals "
                f"(resampling whole videos).")
    report.table(counts, caption="images per split and manipulation", float_format="{:.0f}")
    for c in cards:
        for note in c.notes:
            report.note(f"{c.method} ({c.protocol}): {note}")

    report.heading("Leaderboard")
    summary = summary_table(cards)
    report.table(summary, caption="frame-level AUC unless stated; LOO = trained without that family, tested on "
                                  "real images and that family only; the corruption columns test the intra "
                                  "model on the degraded test split", float_format="{:.3f}")
    if not intra:
        return report
    for c in intra:  # what pretraining buys: a pretrained model next to the same recipe from scratch
        base, _, tag = c.method.rpartition("+")
        scratch = next((i for i in intra if i.method == base), None) if tag in ("imagenet", "pretrained") \
            else None
        if scratch is not None:
            report.text(f"Pretraining: {c.method} reaches intra AUC {_auc(c):.3f}, the same recipe from random "
                        f"weights ({scratch.method}) {_auc(scratch):.3f} ({_auc(c) - _auc(scratch):+.3f}).")

    fig, ax = plt.subplots(figsize=(5, 5))
    for c in intra:
        s = scores[id(c)]
        if s is not None:
            fpr, tpr, _ = roc_curve(s["label"], s["prob"])
            ax.plot(fpr, tpr, label=f"{c.method} (AUC {_auc(c):.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, intra-dataset (frame level)")
    ax.legend(loc="lower right", fontsize=8)
    report.heading("ROC curves").figure(fig, "frame-level ROC on the test split")

    fig, axes = plt.subplots(1, len(intra), figsize=(4.6 * len(intra), 3.4), squeeze=False)
    for c, ax in zip(intra, axes[0]):
        s = scores[id(c)]
        if s is None:
            continue
        s = s.assign(manipulation=s["path"].map(manip).fillna("?"))
        for name, group in s.groupby("manipulation"):
            ax.hist(group["prob"], bins=np.linspace(0, 1, 21), alpha=0.5, label=f"{name} (n={len(group)})")
        ax.set(title=c.method, xlabel="probability of fake", ylabel="images")
        ax.legend(fontsize=7)
    report.heading("Score histograms per manipulation family").figure(
        fig, "intra-dataset test scores by manipulation family")

    if "quality" in m.df.columns:
        quality = m.df.set_index("path")["quality"]
        rows = []
        for c in intra:
            sc = scores[id(c)]
            if sc is None:
                continue
            sc = sc.assign(quality=sc["path"].map(quality).fillna("?"))
            row = {"model": c.method}
            for q, g in sc.groupby("quality"):
                row[f"{q} (n={len(g)})"] = roc_auc(g["label"].to_numpy(), g["prob"].to_numpy()) \
                    if g["label"].nunique() == 2 else np.nan
            rows.append(row)
        if rows:
            table = pd.DataFrame(rows)
            cols = ["model", *sorted((c for c in table.columns if c != "model"),
                                     key=lambda c: (not c.startswith("none "), c))]
            report.heading("AUC per recorded quality level").text(
                "The test split grouped by the quality level recorded in the manifest for each video "
                "(the same distribution for real and fake videos).")
            report.table(table[cols], float_format="{:.3f}")

    loo = [c for c in cards if c.protocol.startswith(LOO) and "+" not in c.protocol]
    if loo:
        rows = []
        for c in loo:
            fam = c.protocol[len(LOO):]
            ref = next((i for i in intra if i.method == c.method), None)
            seen = family_auc(scores[id(ref)], manip).get(fam, np.nan) if ref is not None and \
                scores[id(ref)] is not None else np.nan
            rows.append({"model": c.method, "held-out family": fam, "AUC when seen in training": seen,
                         "AUC when held out": _auc(c), "drop": seen - _auc(c),
                         "EER when held out": c.metrics["frame"]["eer"]["value"]})
        report.heading("Leave one manipulation out")
        report.text("Each row trains without one manipulation family (train and val), selects on val, and "
                    "tests on the real test images plus that family's test images only. 'Seen in training' "
                    "is the same family's AUC in the intra-dataset run: the drop is the generalisation gap "
                    "to an unseen forgery method.")
        report.table(pd.DataFrame(rows), float_format="{:.3f}")

    sweep = [c for c in cards if c.protocol.startswith(INTRA + "+")]
    if sweep:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        names = ["clean", *[x for x in ROBUSTNESS_SWEEP]]
        for c in intra:
            ys = [_auc(c)] + [next((_auc(s) for s in sweep if s.method == c.method
                                    and s.protocol == f"{INTRA}+{x}"), np.nan) for x in ROBUSTNESS_SWEEP]
            ax.plot(names, ys, marker="o", label=c.method)
        ax.axhline(0.5, color="k", ls=":", lw=1)
        ax.set(ylabel="frame AUC", title="robustness sweep (test split, degraded)", ylim=(0.4, 1.01))
        ax.legend(fontsize=8)
        report.heading("Robustness sweep").text(
            "The intra-dataset model of each row tested on the same test split after JPEG re-compression "
            "(quality 90/70/50), Gaussian blur (sigma 1 px) and a 0.5x down-and-up resize, applied to the "
            "stored image before the resize to the model's input.").figure(fig, "AUC per corruption")

    paths_of = {id(c): p for c, p in zip(cards, card_paths)}
    saliency_section(report, [(c, paths_of[id(c)]) for c in intra], m)
    if "mask" in m.df.columns:  # the embedded data: is there a cue outside the manipulated region?
        from visec.report.shortcuts import shortcut_checks, shortcut_section

        shortcut_section(report, shortcut_checks(m, [(c, paths_of[id(c)]) for c in intra]))
    from visec.report.attacked import attacked_section

    attacked_section(report, list(zip(cards, card_paths)), scores, m)
    from visec.report.federated import federated_section

    federated_section(report, cards, card_paths)

    first = max(intra, key=_auc)
    s = scores[id(first)]
    if s is not None and examples:
        report.heading(f"Examples ({first.method})").figure(
            _example_grid(s, manip, m.root, examples),
            "test images at evenly spaced score quantiles per family; title = probability of fake "
            "(green: right side of 0.5, red: wrong side)")
    return report


def _example_grid(scores: pd.DataFrame, manip: pd.Series, root: Path, per_row: int):
    import matplotlib.pyplot as plt

    from visec.data.images import load_rgb

    s = scores.assign(manipulation=scores["path"].map(manip).fillna("?"))
    groups = [("real", s[s["manipulation"] == "real"])] + \
        [(f, g) for f, g in s[s["label"] == 1].groupby("manipulation")]
    fig, axes = plt.subplots(len(groups), per_row, figsize=(1.5 * per_row, 1.75 * len(groups)), squeeze=False)
    for r, (name, g) in enumerate(groups):
        g = g.sort_values("prob").reset_index(drop=True)
        picks = np.unique(np.linspace(0, len(g) - 1, per_row).round().astype(int)) if len(g) else []
        for k, ax in enumerate(axes[r]):
            ax.axis("off")
            if k >= len(picks):
                continue
            row = g.iloc[picks[k]]
            ax.imshow(load_rgb(Path(root) / row["path"]))
            right = (row["prob"] >= 0.5) == bool(row["label"])
            ax.set_title(f"{row['prob']:.2f}", fontsize=8, color="green" if right else "red")
        axes[r][0].text(-0.15, 0.5, name, transform=axes[r][0].transAxes, rotation=90, va="center",
                        ha="right", fontsize=9)
    fig.tight_layout()
    return fig


def _select_examples(df: pd.DataFrame, per_family: int) -> pd.DataFrame:
    """Deterministic test rows: ``per_family`` fakes of every family (with masks) and as many reals."""
    test = df[df["split"] == "test"].sort_values(["video_id", "frame_index"])
    fakes = test[test["label"] == 1]
    if "mask" in fakes:
        fakes = fakes[fakes["mask"].notna()]
    parts = [g.drop_duplicates("video_id").head(per_family) for _, g in fakes.groupby("manipulation")]
    reals = test[test["label"] == 0].drop_duplicates("video_id").head(per_family)
    return pd.concat([reals, *parts]).reset_index(drop=True)


def _mask_auc(saliency: np.ndarray, mask: np.ndarray) -> float:
    """Pixel AUC of a saliency map as a detector of the blended pixels (0.5: unrelated)."""
    inside = mask.ravel() > 0.5
    if inside.all() or not inside.any():
        return float("nan")
    return roc_auc(inside.astype(int), saliency.ravel())


def saliency_section(report: HtmlReport, intra: list[tuple[ResultCard, Path]], m, columns: int = 2,
                     measured: int = 16) -> None:
    """Saliency maps of every intra-dataset model that has them, on the same test images, beside the
    ground-truth blend masks; and how well each model's map finds the blended pixels (mask AUC)."""
    import matplotlib.pyplot as plt
    import torch

    from visec.data.datamodule import fake_families
    from visec.data.images import load_rgb
    from visec.report.runs import face_batch, load_card_module
    from visec.report.shortcuts import load_mask

    if "mask" not in m.df.columns or not intra:
        return
    shown = _select_examples(m.df, columns)
    scored = _select_examples(m.df, measured)
    scored = scored[scored["label"] == 1].reset_index(drop=True)
    families = fake_families(m.df)
    maps, rows, skipped, seen = {}, [], [], set()
    # per run folder, the plain card first (acmf before its test-time variant acmf+fac)
    for card, path in sorted(intra, key=lambda cp: (str(cp[1].parent.parent), len(cp[0].method))):
        if path.parent.parent in seen:  # a test-time variant of a run already shown (same weights)
            continue
        seen.add(path.parent.parent)
        try:
            module, cfg = load_card_module(card, path)

            def batch(df: pd.DataFrame) -> torch.Tensor:
                return face_batch(df, m, cfg, families)

            sal = module.saliency(batch(shown))
        except Exception as exc:  # a report must not die on one model: say what happened instead
            skipped.append(f"{card.method}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            continue
        if sal is None:
            skipped.append(f"{card.method}: no saliency maps")
            continue
        maps[card.method] = sal.detach().float().cpu().numpy()
        sal_scored = module.saliency(batch(scored)).detach().float().cpu().numpy()
        size = sal_scored.shape[-1]
        aucs = {}
        for k, row in scored.iterrows():
            mask = load_mask(m.root, row["mask"], (size, size))
            aucs.setdefault(row["manipulation"], []).append(_mask_auc(sal_scored[k], mask))
        rows.append({"model": card.method, **{f"{f} (n={len(v)})": float(np.nanmean(v)) for f, v in aucs.items()},
                     "mean": float(np.nanmean([x for v in aucs.values() for x in v]))})
    report.heading("Saliency maps")
    if not maps:
        report.text("No model in this bench provides saliency maps.")
    else:
        report.text("Where each detector looks, on the same test images: Grad-CAM of the fake class for "
                    "CNN detectors (where the evidence for 'fake' lies, also on real images), the detector's own attention (e.g. per-patch scores) where it has one. The "
                    "second row is the blend mask the forgery actually used (black for real images). The table "
                    "scores each model's map as a detector of the blended pixels (pixel AUC, averaged over "
                    f"up to {measured} test fakes per family; 0.5 = unrelated to the manipulated region). A test-time "
                    "variant of a run (e.g. acmf+fac) shares its run's map. Grad-CAM is "
                    "only as fine as the last feature map (2x2 for MobileNetV2 at 64 px, 4x4 at 128), so a low mask "
                    "AUC does not by itself say the model looks elsewhere: the occlusion check of the shortcut "
                    "section measures where its evidence lies.")
        n = len(shown)
        fig, axes = plt.subplots(2 + len(maps), n, figsize=(1.45 * n, 1.5 * (2 + len(maps))), squeeze=False)
        for k, row in shown.iterrows():
            img = load_rgb(Path(m.root) / row["path"])
            axes[0][k].imshow(img)
            axes[0][k].set_title(str(row["manipulation"]), fontsize=7)
            mask = (load_rgb(Path(m.root) / row["mask"])[..., 0] if row["label"] == 1 and isinstance(row.get("mask"), str)
                    else np.zeros(img.shape[:2], np.uint8))
            axes[1][k].imshow(mask, cmap="gray", vmin=0, vmax=255)
            for r, (name, sal) in enumerate(maps.items(), start=2):
                axes[r][k].imshow(img, extent=(0, 1, 0, 1))
                axes[r][k].imshow(sal[k], cmap="jet", alpha=0.5, vmin=0, vmax=1, extent=(0, 1, 0, 1))
        labels = ["image", "blend mask", *maps]
        for r, ax_row in enumerate(axes):
            for ax in ax_row:
                ax.set_xticks([])
                ax.set_yticks([])
            ax_row[0].set_ylabel(labels[r], fontsize=7, rotation=0, ha="right", va="center")
        fig.tight_layout()
        report.figure(fig, "saliency maps (jet overlay, 0 blue to 1 red) on test images")
        report.table(pd.DataFrame(rows), caption="mask AUC of the saliency maps per manipulation family",
                     float_format="{:.3f}")
    for line in skipped:
        report.note(f"saliency skipped for {line}")
