"""Does the face-forgery data carry a cue outside the manipulation? Three checks on a manifest with
blend masks (the embedded data), and the section of the ablation report that states them.

1. **Pixels outside the mask** (:func:`outside_pixels`): every fake has a real twin (same identity,
   frame and motion). Where neither was degraded, any pixel that differs outside the blend mask is a
   leak of the manipulation beyond the region it claims.
2. **Image statistics outside the mask** (:func:`outside_statistics`): per image, colour, contrast,
   sharpness, high-frequency energy, 8x8 blockiness and border brightness over the pixels outside
   its pair's mask (the real twin is measured on the same region). A logistic regression on them,
   cross-validated by identity, should not tell real from fake (AUC near 0.5) if the only cue is the
   manipulation itself.
3. **Occlusion** (:func:`occlusion`): trained detectors scored on test pairs with the blended
   region greyed out (both twins, same region), or everything but it greyed out. A detector whose
   AUC survives losing the blended region keys on something else.

And one check of the manipulation itself (:func:`inside_frequency`): per family, do its fakes carry
more or less high-frequency energy inside the blended region than their real twins? Families whose
frequency cues point opposite ways explain why a detector trained without one can rank it backwards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from visec.cards import ResultCard
from visec.report.html import HtmlReport

FEATURES = ("mean_r", "mean_g", "mean_b", "gray_std", "laplacian_var", "hf_energy", "blockiness", "border_mean")


def twin_pairs(df: pd.DataFrame) -> pd.DataFrame:
    """Fake rows joined to their real twin (same ``source_id`` and ``frame_index``): columns of the
    fake plus ``real_path`` and ``real_quality``."""
    need = {"source_id", "frame_index", "mask", "quality"}
    if not need <= set(df.columns):
        raise ValueError(f"the manifest lacks {sorted(need - set(df.columns))}: the shortcut checks need the "
                         f"embedded data's twins and masks")
    real = df[df["label"] == 0][["source_id", "frame_index", "path", "quality"]]
    real = real.rename(columns={"path": "real_path", "quality": "real_quality"})
    fake = df[(df["label"] == 1) & df["mask"].notna()]
    return fake.merge(real, on=["source_id", "frame_index"], how="inner")


def _rgb(root: Path, rel: str) -> np.ndarray:
    from visec.data.images import load_rgb

    return load_rgb(Path(root) / rel)


def load_mask(root: Path, rel: str, shape: tuple[int, int]) -> np.ndarray:
    """A blend mask in [0, 1] at ``shape`` (area-resized when it differs)."""
    import cv2

    m = _rgb(root, rel)[..., 0].astype(np.float32) / 255
    return m if m.shape == shape else cv2.resize(m, shape[::-1], interpolation=cv2.INTER_AREA)


def outside_pixels(m, max_pairs: int | None = None) -> dict[str, Any]:
    """Over undegraded (fake, real twin) pairs: the share of pixels outside the mask that differ by
    more than 1/255, and the mean absolute difference there (0-255 scale), overall and per family."""
    pairs = twin_pairs(m.df)
    pairs = pairs[(pairs["quality"] == "none") & (pairs["real_quality"] == "none")]
    if max_pairs is not None:
        pairs = pairs.head(max_pairs)
    per: dict[str, list[tuple[float, float]]] = {}
    for r in pairs.itertuples(index=False):
        a, b = _rgb(m.root, r.path).astype(np.float32), _rgb(m.root, r.real_path).astype(np.float32)
        outside = load_mask(m.root, r.mask, a.shape[:2]) < 1 / 255
        if not outside.any():
            continue
        d = np.abs(a - b).max(-1)[outside]
        per.setdefault(r.manipulation, []).append((float((d > 1).mean()), float(d.mean())))
    fam = {f: {"pairs": len(v), "changed_share": float(np.mean([x[0] for x in v])),
               "mean_abs_diff": float(np.mean([x[1] for x in v]))} for f, v in per.items()}
    allv = [x for v in per.values() for x in v]
    return {"pairs": len(allv), "changed_share": float(np.mean([x[0] for x in allv])) if allv else float("nan"),
            "max_changed_share": float(max((x[0] for x in allv), default=float("nan"))),
            "mean_abs_diff": float(np.mean([x[1] for x in allv])) if allv else float("nan"), "families": fam}


def image_features(img: np.ndarray, region: np.ndarray) -> dict[str, float]:
    """Statistics of an RGB uint8 image over the boolean ``region`` (plus the border brightness)."""
    import cv2

    x = img.astype(np.float32) / 255
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    lap = cv2.Laplacian(gray, cv2.CV_32F)
    hf = np.abs(gray - cv2.blur(gray, (3, 3)))
    h, w = gray.shape
    col = np.abs(np.diff(gray, axis=1))  # differences across 8x8 block edges vs inside blocks
    edge = np.zeros_like(col, dtype=bool)
    edge[:, 7::8] = True
    reg = region[:, 1:] & region[:, :-1]
    inside_edge, inside_rest = col[reg & edge], col[reg & ~edge]
    block = float(inside_edge.mean() / max(inside_rest.mean(), 1e-6)) if inside_edge.size and inside_rest.size else 1.0
    border = np.concatenate([gray[:2].ravel(), gray[-2:].ravel(), gray[:, :2].ravel(), gray[:, -2:].ravel()])
    return {"mean_r": float(x[..., 0][region].mean()), "mean_g": float(x[..., 1][region].mean()),
            "mean_b": float(x[..., 2][region].mean()), "gray_std": float(gray[region].std()),
            "laplacian_var": float(lap[region].var()), "hf_energy": float(hf[region].mean()),
            "blockiness": block, "border_mean": float(border.mean())}


def outside_statistics(m, max_pairs: int | None = 1500, seed: int = 0) -> dict[str, Any]:
    """Each statistic of :data:`FEATURES` over the pixels outside the pair's mask, for both twins:
    its own real-vs-fake AUC (0.5 = no cue; reported as max(AUC, 1 - AUC)), and the out-of-fold AUC
    of a logistic regression on all of them (5 folds grouped by identity)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from visec.metrics.classification import roc_auc

    pairs = twin_pairs(m.df)
    if max_pairs is not None and len(pairs) > max_pairs:
        pairs = pairs.sample(max_pairs, random_state=seed)
    rows, labels, groups = [], [], []
    for r in pairs.itertuples(index=False):
        fake, real = _rgb(m.root, r.path), _rgb(m.root, r.real_path)
        region = load_mask(m.root, r.mask, fake.shape[:2]) < 1 / 255
        if region.sum() < 16:
            continue
        for img, y in ((fake, 1), (real, 0)):
            rows.append(image_features(img, region))
            labels.append(y)
            groups.append(r.source_id)
    X = pd.DataFrame(rows, columns=list(FEATURES)).to_numpy(np.float64)
    y = np.array(labels)
    per = {}
    for j, name in enumerate(FEATURES):
        a = roc_auc(y, X[:, j])
        per[name] = float(max(a, 1 - a))
    oof = np.zeros(len(y))
    folds = GroupKFold(n_splits=min(5, len(set(groups))))
    for tr, te in folds.split(X, y, groups):
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        clf.fit(X[tr], y[tr])
        oof[te] = clf.predict_proba(X[te])[:, 1]
    return {"images": int(len(y)), "feature_auc": per, "logistic_auc": float(roc_auc(y, oof))}


def inside_frequency(m, max_pairs: int = 150, seed: int = 0) -> dict[str, dict[str, float]]:
    """Per family, over up to ``max_pairs`` (fake, real twin) pairs degraded alike (the same entry of
    the degradation ladder, or neither degraded): the AUC of the mean
    high-frequency energy (``hf_energy`` of :func:`image_features`) inside the blended region (mask
    above 0.5) for fake against real, *with* its direction (above 0.5: the fakes have more), and the
    median fake / real ratio of that energy."""
    from visec.metrics.classification import roc_auc

    pairs = twin_pairs(m.df)
    pairs = pairs[pairs["quality"] == pairs["real_quality"]]
    out = {}
    for fam, g in pairs.groupby("manipulation"):
        if len(g) > max_pairs:
            g = g.sample(max_pairs, random_state=seed)
        fake, real = [], []
        for r in g.itertuples(index=False):
            f = _rgb(m.root, r.path)
            region = load_mask(m.root, r.mask, f.shape[:2]) > 0.5
            if region.sum() < 16:
                continue
            fake.append(image_features(f, region)["hf_energy"])
            real.append(image_features(_rgb(m.root, r.real_path), region)["hf_energy"])
        if not fake:
            continue
        a, b = np.array(fake), np.array(real)
        out[str(fam)] = {"pairs": int(len(a)), "hf_auc": float(roc_auc(np.r_[np.ones(len(a)), np.zeros(len(b))],
                                                                     np.r_[a, b])),
                         "hf_ratio": float(np.median(a / np.maximum(b, 1e-8)))}
    return out


def occlusion(intra: list[tuple[ResultCard, Path]], m, max_pairs: int = 200, seed: int = 0) -> list[dict[str, Any]]:
    """For each trained model (one per run folder), frame AUC on up to ``max_pairs`` test (fake, real
    twin) pairs: as they are, with the blended region greyed (0.5) in both twins, and with everything
    but the blended region greyed."""
    import torch

    from visec.data.datamodule import fake_families
    from visec.metrics.classification import roc_auc
    from visec.report.runs import face_batch, load_card_module

    pairs = twin_pairs(m.df[m.df["split"] == "test"])
    if len(pairs) > max_pairs:
        pairs = pairs.sample(max_pairs, random_state=seed)
    families = fake_families(m.df)
    fakes = m.df.set_index("path").loc[pairs["path"]].reset_index()
    reals = m.df.set_index("path").loc[pairs["real_path"]].reset_index()
    out, seen = [], set()
    for card, path in sorted(intra, key=lambda cp: (str(cp[1].parent.parent), len(cp[0].method))):
        if path.parent.parent in seen:  # test-time variants share the run's weights
            continue
        seen.add(path.parent.parent)
        try:
            module, cfg = load_card_module(card, path)
            xf, xr = face_batch(fakes, m, cfg, families), face_batch(reals, m, cfg, families)
        except Exception as exc:  # a report must not die on one model: say what happened instead
            out.append({"model": card.method, "skipped": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"})
            continue
        size = xf.shape[-2:]
        masks = torch.from_numpy(np.stack([load_mask(m.root, r, tuple(size)) for r in pairs["mask"]]))[:, None]
        region = (masks >= 1 / 255).float()
        y = np.r_[np.ones(len(pairs)), np.zeros(len(pairs))]
        row = {"model": card.method, "pairs": int(len(pairs))}
        with torch.no_grad():
            for name, keep in (("as is", None), ("blended region greyed", 1 - region), ("outside greyed", region)):
                scores = []
                for x in (xf, xr):
                    xi = x if keep is None else x * keep + 0.5 * (1 - keep)
                    scores.append(torch.cat([module.attack_logit(b).float().reshape(-1) for b in xi.split(64)]))
                row[name] = float(roc_auc(y, torch.cat(scores).numpy()))
        out.append(row)
    return out


def shortcut_checks(manifest, intra: list[tuple[ResultCard, Path]]) -> dict[str, Any]:
    """The three checks and the per-family frequency measure on ``manifest`` (a path or a read
    manifest) and the intra-dataset models ``intra`` (cards and paths)."""
    from visec.data.manifest import read_manifest

    m = read_manifest(manifest) if isinstance(manifest, (str, Path)) else manifest
    if "mask" not in m.df.columns:
        return {"skipped": "the manifest has no blend masks (the checks need the embedded data)"}
    return {"manifest": str(m.source), "outside_pixels": outside_pixels(m), "outside_statistics": outside_statistics(m),
            "inside_frequency": inside_frequency(m), "occlusion": occlusion(intra, m) if intra else []}


def shortcut_section(report: HtmlReport, checks: dict[str, Any]) -> None:
    report.heading("Shortcut checks of the data")
    if "skipped" in checks:
        report.text(f"Skipped: {checks['skipped']}.")
        return
    px = checks["outside_pixels"]
    report.text(f"Pixels outside the blend mask, undegraded fake vs its real twin ({px['pairs']} pairs): "
                f"{px['changed_share']:.2%} of them differ by more than 1/255 (worst pair "
                f"{px['max_changed_share']:.2%}); mean absolute difference {px['mean_abs_diff']:.3f} of 255.")
    st = checks["outside_statistics"]
    report.text(f"Image statistics over the pixels outside the mask ({st['images']} images, twins measured on the "
                f"same region): logistic regression, 5 folds grouped by identity, AUC {st['logistic_auc']:.3f} "
                f"(0.5 = no cue).")
    report.table(pd.DataFrame([st["feature_auc"]]), caption="per-statistic AUC, max(AUC, 1 - AUC)",
                 float_format="{:.3f}")
    if checks.get("inside_frequency"):
        report.text("Inside the blended region, per family: AUC of the high-frequency energy of undegraded fakes "
                    "against their real twins (above 0.5: the fakes have more; below: less) and the median "
                    "fake / real ratio. Families on opposite sides of 0.5 give a detector trained without one of "
                    "them a frequency cue that points the wrong way on it.")
        report.table(pd.DataFrame([{"family": f, **v} for f, v in checks["inside_frequency"].items()]),
                     float_format="{:.3f}")
    if checks.get("occlusion"):
        report.text("Occlusion: frame AUC of each intra-dataset model on test twins (seed of the first run) as they "
                    "are, with the blended region greyed in both twins, and with everything but it greyed.")
        report.table(pd.DataFrame(checks["occlusion"]), float_format="{:.3f}")


__all__ = ["FEATURES", "image_features", "inside_frequency", "occlusion", "outside_pixels", "outside_statistics",
           "shortcut_checks", "shortcut_section", "twin_pairs", "load_mask"]
