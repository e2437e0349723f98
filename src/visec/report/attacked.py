"""The bench report's attacked-detector section: what an attacker who wants a fake to pass gets.

Per detector: a table of every attacked card (AUC on the attacked test split, the evasion or framing
rate at the run's validation-EER threshold with its Wilson interval, the mean perturbation, attack
throughput, gradient-masking flags), AUC and evasion rate against the L-inf budget, the clean vs
attacked trade-off of adversarially trained detectors, and a few test fakes before and after the
attack with the perturbation (amplified) and the detector's saliency on both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from visec.attacks.detector import attack_rate, cross_card_flags, format_budget
from visec.cards import ResultCard
from visec.report.html import HtmlReport

INTRA = "intra"
ADVERSARIAL_TAGS = ("pgd_at", "trades")


def attacked_rows(cards: list[ResultCard]) -> pd.DataFrame:
    """One row per attacked card."""
    rows = []
    for c in cards:
        block = c.metrics.get("attack")
        if not block:
            continue
        rate_name = "evasion_rate" if block["direction"] == "evade" else "framing_rate"
        ci = block[rate_name].get("ci")
        rows.append({
            "model": c.method, "attack": c.protocol.split("+", 1)[1] if "+" in c.protocol else c.protocol,
            "AUC": c.metrics["frame"]["auc"]["value"],
            "success": f"{block[rate_name]['value']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""),
            "rate": rate_name.split("_")[0], "mean Linf x255": block["mean_linf"]["value"] * 255,
            "mean L2": block["mean_l2"]["value"], "faces/s": block.get("images_per_second"),
            "masking flag": "yes" if block.get("gradient_masking") else "no",
            "path": "stand-in" if block.get("attack_path") else "scored path"})
    return pd.DataFrame(rows)


def _clean_pass_rate(scores: pd.DataFrame | None, threshold: float) -> float:
    """Fraction of test fakes already called real at ``threshold`` without an attack."""
    if scores is None:
        return float("nan")
    fakes = scores[scores["label"] == 1]["prob"].to_numpy()
    return float((fakes < threshold).mean()) if len(fakes) else float("nan")


def attacked_section(report: HtmlReport, cards: list[tuple[ResultCard, Path]],
                     intra_scores: dict[int, pd.DataFrame | None], m, examples: int = 3) -> None:
    """Add the attacked section for ``cards`` (all of a bench's cards with their paths)."""
    import matplotlib.pyplot as plt

    attacked = [(c, p) for c, p in cards if c.metrics.get("attack")]
    if not attacked:
        return
    intra = {c.method: c for c, _ in cards if c.protocol == INTRA}
    report.heading("Attacked detectors")
    report.text(
        "Each attacked card tests the intra-dataset checkpoint on the test split with its fake faces pushed "
        "towards 'real' (evasion; reals untouched) or, in '+frame' rows, its real faces pushed towards 'fake'. "
        "The success rate is the fraction of attacked faces whose decision flipped at the run's validation-EER "
        "threshold (Wilson 95% interval); AUC is on the attacked split. pgd = PGD-10 (step 2.5 eps / 10, uniform "
        "start) on the detector; transfer@M = PGD-10 crafted on detector M and replayed; square = 200 queries "
        "of the scores only; apgd_ce = APGD on the cross-entropy. Every budget is on faces in [0, 1] at the "
        "model's input size. A masking flag means the evaluator's checks saw a sign of gradient masking (FGSM "
        "beating the iterative attack on the same faces); 'stand-in' means the attack reached a scorer it "
        "cannot differentiate through another path (the detector's README says which).")
    table = attacked_rows([c for c, _ in attacked])
    report.table(table, caption="attacked cards", float_format="{:.3f}")

    for method in dict.fromkeys(c.method for c, _ in attacked):
        blocks = {c.protocol: c.metrics["attack"] for c, _ in attacked
                  if c.method == method and c.metrics["attack"]["direction"] == "evade"}
        for flag in cross_card_flags(blocks):
            report.note(f"{method}: gradient-masking check across cards: {flag}")

    # AUC and evasion rate against the L-inf budget (white-box PGD, evasion)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for method in dict.fromkeys(c.method for c, _ in attacked):
        pts = sorted((c.metrics["attack"]["eps"], c) for c, _ in attacked
                     if c.method == method and c.metrics["attack"]["attack"] == "pgd"
                     and c.metrics["attack"]["norm"] == "Linf" and c.metrics["attack"]["direction"] == "evade")
        if not pts:
            continue
        xs = [e * 255 for e, _ in pts]
        aucs = [c.metrics["frame"]["auc"]["value"] for _, c in pts]
        rates = [attack_rate(c.metrics["attack"]) for _, c in pts]
        clean = intra.get(method)
        if clean is not None:
            xs, aucs = [0.0, *xs], [clean.metrics["frame"]["auc"]["value"], *aucs]
            rates = [_clean_pass_rate(intra_scores.get(id(clean)), pts[0][1].metrics["attack"]["threshold"]), *rates]
        axes[0].plot(xs, aucs, marker="o", label=method)
        axes[1].plot(xs, rates, marker="o", label=method)
    axes[0].axhline(0.5, color="k", ls=":", lw=1)
    axes[0].set(xlabel="L-inf budget (x 1/255)", ylabel="frame AUC", title="AUC under PGD-10 (evasion)", ylim=(0, 1.01))
    axes[1].set(xlabel="L-inf budget (x 1/255)", ylabel="fakes called real", title="evasion rate at the val-EER threshold",
                ylim=(0, 1.01))
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    report.figure(fig, "budget 0 = the clean test split")

    # adversarial training: clean vs attacked, next to the same recipe without it
    lines = []
    for method, c in intra.items():
        base, _, tag = method.rpartition("+")
        if tag not in ADVERSARIAL_TAGS or base not in intra:
            continue
        for c_adv, _ in attacked:
            if c_adv.method != method or c_adv.metrics["attack"]["direction"] != "evade":
                continue
            peer = next((p for p, _ in attacked if p.method == base and p.protocol == c_adv.protocol), None)
            if peer is None:
                continue
            lines.append({"model": method, "attack": c_adv.protocol.split("+", 1)[1],
                          "clean AUC": c.metrics["frame"]["auc"]["value"],
                          "clean AUC without AT": intra[base].metrics["frame"]["auc"]["value"],
                          "attacked AUC": c_adv.metrics["frame"]["auc"]["value"],
                          "attacked AUC without AT": peer.metrics["frame"]["auc"]["value"],
                          "evasion": attack_rate(c_adv.metrics["attack"]),
                          "evasion without AT": attack_rate(peer.metrics["attack"])})
    if lines:
        report.text("Adversarial training (train.adversarial: PGD-AT or TRADES, L-inf 4/255, 3-step PGD): "
                    "what it costs on clean faces and what it buys under attack, against the same recipe "
                    "trained without it.")
        report.table(pd.DataFrame(lines), caption="clean vs attacked AUC", float_format="{:.3f}")
    _examples(report, attacked, m, examples)


def _examples(report: HtmlReport, attacked: list[tuple[ResultCard, Path]], m, n: int) -> None:
    """A few test fakes of the first detector with a PGD L-inf card (the one nearest 4/255): clean,
    attacked, the perturbation amplified, and saliency before and after."""
    import matplotlib.pyplot as plt
    import torch

    from visec.attacks.detector import DetectorAttacker, DetectorAttackSpec
    from visec.data.datamodule import fake_families
    from visec.report.runs import face_batch, load_card_module

    pick = [(c, p) for c, p in attacked if c.protocol.startswith(f"{INTRA}+pgd-linf-")
            and c.metrics["attack"]["direction"] == "evade"]
    if not pick or n < 1:
        return
    # the first detector's PGD card nearest to L-inf 4/255
    first = pick[0][0].method
    card, path = min((cp for cp in pick if cp[0].method == first),
                     key=lambda cp: abs(cp[0].metrics["attack"]["eps"] - 4 / 255))
    label = card.protocol.split("+", 1)[1]
    try:
        module, cfg = load_card_module(card, path)
        test = m.df[(m.df["split"] == "test") & (m.df["label"] == 1)].sort_values(["video_id", "frame_index"])
        rows = test.drop_duplicates("video_id").head(n).reset_index(drop=True)
        x = face_batch(rows, m, cfg, fake_families(m.df))
        block = card.metrics["attack"]
        spec = DetectorAttackSpec.parse(f"pgd,eps={format_budget(block['eps'])}")
        attacker = DetectorAttacker(spec, module.attack_view(), block["threshold"],
                                    module.attack_offset(block["threshold"]))
        x_adv = attacker(x, torch.ones(len(x)))
        with torch.no_grad():
            before = torch.sigmoid(module(x).float()).numpy()
            after = torch.sigmoid(module(x_adv).float()).numpy()
        sal = module.saliency(x)
        sal_adv = module.saliency(x_adv)
    except Exception as exc:  # the report must not die on one model: say what happened instead
        report.note(f"attacked examples skipped for {card.method}: {type(exc).__name__}: {exc}")
        return
    eps = block["eps"]
    cols = ["clean", "attacked", f"perturbation x{0.5 / eps:.0f}"] + (["saliency clean", "saliency attacked"]
                                                                    if sal is not None else [])
    fig, axes = plt.subplots(len(x), len(cols), figsize=(1.7 * len(cols), 1.8 * len(x)), squeeze=False)
    for k in range(len(x)):
        img, adv = x[k].permute(1, 2, 0).numpy(), x_adv[k].permute(1, 2, 0).numpy()
        panels = [img, adv, np.clip((adv - img) / (2 * eps) + 0.5, 0, 1)]
        for j, panel in enumerate(panels):
            axes[k][j].imshow(panel.squeeze(), cmap="gray" if panel.shape[-1] == 1 else None)
        axes[k][0].set_title(f"P(fake) {before[k]:.2f}", fontsize=7)
        axes[k][1].set_title(f"P(fake) {after[k]:.2f}", fontsize=7)
        if sal is not None:
            for j, s in ((3, sal), (4, sal_adv)):
                axes[k][j].imshow(img.squeeze(), extent=(0, 1, 0, 1))
                axes[k][j].imshow(s[k].detach().numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1, extent=(0, 1, 0, 1))
        for ax in axes[k]:
            ax.set_xticks([])
            ax.set_yticks([])
    for j, name in enumerate(cols):
        axes[0][j].set_xlabel(name, fontsize=7)
        axes[0][j].xaxis.set_label_position("top")
    fig.tight_layout()
    report.heading(f"Attacked examples ({card.method}, {label})").figure(
        fig, f"test fakes before and after PGD-10 at L-inf {format_budget(eps)}; P(fake) by the network's own "
             f"output (the card's threshold is {block['threshold']:.3f}); perturbation shown at mid-grey = 0")
