"""Paired ablations: each detector's declared counterpart is its own architecture with the mechanism
off, the switches really switch the mechanism off, and ``--ablation`` pairs the right cards."""

from __future__ import annotations

import fnmatch
import json

import numpy as np
import pandas as pd
import pytest
import torch

from visec.config import load_config
from visec.engine.engine import build_module, card_name
from visec.engine.method import method_of
from visec.registry import METHODS

from test_contract import TINY

COUNTERPARTS = [m for m in METHODS.names() if getattr(METHODS.get(m).obj, "counterpart", None) is not None]


def test_the_three_detectors_of_the_claims_declare_a_counterpart():
    assert {"acmf", "hfc_mffd", "deepfidelity"} <= set(COUNTERPARTS)


@pytest.mark.parametrize("name", COUNTERPARTS)
def test_counterpart_is_the_same_architecture_with_the_mechanism_off(name):
    cp = method_of(name).counterpart
    cfg = load_config(name, list(TINY[name]))
    plain = load_config(name, [*TINY[name], *cp.overrides])
    assert card_name(plain) != card_name(cfg), "the counterpart needs its own name on cards"
    torch.manual_seed(0)
    a = {k: v.shape for k, v in build_module(cfg).net.named_parameters()}
    b = {k: v.shape for k, v in build_module(plain).net.named_parameters()}
    removed = {k for k in a if any(fnmatch.fnmatch(k, pat) for pat in cp.removed)}
    for pat in cp.removed:  # every declared pattern names parameters the method really has
        assert any(fnmatch.fnmatch(k, pat) for k in a), pat
    assert set(b) == set(a) - removed  # the counterpart lacks exactly the mechanism's parameters ...
    assert all(b[k] == a[k] for k in b)  # ... and shares every other one, shape for shape
    assert sum(np.prod(s) for s in b.values()) + sum(np.prod(a[k]) for k in removed) == \
        sum(np.prod(s) for s in a.values())


def test_acmf_counterpart_trains_on_the_unmasked_images():
    cp = method_of("acmf").counterpart
    on = build_module(load_config("acmf", list(TINY["acmf"]))).train()
    off = build_module(load_config("acmf", [*TINY["acmf"], *cp.overrides])).train()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(off.mfr(x), x)
    assert not torch.allclose(on.mfr(x), x)
    assert not off.params.fac


def test_hfc_counterpart_has_no_dct_branch_and_no_attention():
    from torch import nn

    from visec.methods.hfc_mffd.torch_model import extract_patches

    cp = method_of("hfc_mffd").counterpart
    module = build_module(load_config("hfc_mffd", [*TINY["hfc_mffd"], *cp.overrides])).eval()
    net = module.net
    assert net.branches == ("rgb",) and not hasattr(net, "dct")
    assert isinstance(net.rgb.image_binary.encoder, nn.Identity)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = net.forward_branches(x)
    assert set(out) == {"rgb"} and net(x).shape == (3,)
    # without attention the image head is the MLP on the flattened tokens themselves
    tokens = net.rgb.tokens(extract_patches(net.normalize(x), net.k, net.per_side))
    assert torch.allclose(net.rgb.image_binary(tokens), net.rgb.image_binary.mlp(tokens.flatten(1)))
    # the loss has only the RGB terms, and fitting the fusion weights works with one branch
    batch = {"image": x, "label": torch.tensor([0.0, 1.0, 1.0]), "family": torch.tensor([-1, 0, 1]),
             "index": torch.arange(3)}
    logs = module.losses(batch)
    assert {k for k in logs if k.endswith(("_binary", "_family"))} == {"rgb_binary", "rgb_family"}


def test_hfc_rejects_a_model_without_its_rgb_branch():
    from visec.errors import ConfigError

    with pytest.raises(ConfigError, match="rgb"):
        load_config("hfc_mffd", ["model.branches=[dct]"])


def test_deepfidelity_counterpart_scores_with_the_stage_a_classifier_on_the_same_weights():
    from sklearn.svm import SVR

    cp = method_of("deepfidelity").counterpart
    assert cp.test_only
    module = build_module(load_config("deepfidelity", list(TINY["deepfidelity"]))).eval()
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        feats = module.net.features(x).double().numpy()
    module.net.svr.load_sklearn(SVR().fit(feats, np.linspace(0, 1, 6)))
    plain = build_module(load_config("deepfidelity", [*TINY["deepfidelity"], *cp.overrides])).eval()
    plain.net.load_state_dict(module.net.state_dict())
    with torch.no_grad():
        svr, stage_a = module._scores(x), plain._scores(x)
    assert torch.allclose(stage_a["prob"], svr["prob_stage_a"])  # the counterpart's score is stage A's
    assert not torch.allclose(svr["prob"], svr["prob_stage_a"])  # the method's is the SVR's
    assert "fidelity" not in stage_a


# -- the paired report on known inputs -------------------------------------------------------------
def _card(tmp_path, name, probs, labels, videos):
    d = tmp_path / name
    d.mkdir()
    pd.DataFrame({"path": [f"img{i}.png" for i in range(len(probs))], "video_id": videos, "label": labels,
                  "prob": probs}).to_csv(d / "x.scores.csv", index=False)
    (d / "x.card.json").write_text("{}")
    return d / "x.card.json"


def test_paired_rows_of_a_shifted_copy_and_of_identical_scores(tmp_path):
    from visec.report.ablation import AblationPair, paired_rows, seed_summary

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 40)
    videos = np.repeat(np.arange(40), 2)
    noisy = rng.random(80) * 0.5 + labels * 0.3
    a = _card(tmp_path, "a", labels.astype(float), labels, videos)  # perfect
    b = _card(tmp_path, "b", 1.0 - labels, labels, videos)  # perfectly wrong: AUC 0
    c = _card(tmp_path, "c", noisy, labels, videos)
    rows = paired_rows([AblationPair("m", "m", "m0", 0, "intra", a, b), AblationPair("m", "m", "m0", 1, "intra", a, b),
                        AblationPair("m", "mc", "m0", 0, "intra", c, c)], n_bootstrap=200)
    assert rows["frame_diff"].tolist()[:2] == [1.0, 1.0]
    assert rows["frame_ci_lo"][0] == rows["frame_ci_hi"][0] == 1.0  # a constant gap on every resample
    assert rows["verdict"].tolist() == ["better", "better", "no difference"]
    assert rows["frame_diff"][2] == 0 and rows["frame_ci_lo"][2] == rows["frame_ci_hi"][2] == 0
    s = seed_summary(rows).set_index("model")
    assert s.loc["m", "seeds"] == 2 and s.loc["m", "diff_mean"] == 1.0 and s.loc["m", "diff_sd"] == 0.0
    assert s.loc["m", "seeds_better"] == 2 and s.loc["mc", "seeds_better"] == 0


def test_paired_rows_refuse_cards_tested_on_different_images(tmp_path):
    from visec.errors import MetricError
    from visec.report.ablation import AblationPair, paired_rows

    a = _card(tmp_path, "a", [0.1, 0.9], [0, 1], [0, 1])
    b = _card(tmp_path, "b", [0.1, 0.9, 0.5], [0, 1, 1], [0, 1, 2])
    with pytest.raises(MetricError, match="different images"):
        paired_rows([AblationPair("m", "m", "m0", 0, "intra", a, b)])


# -- the shortcut checks ---------------------------------------------------------------------------
def test_shortcut_checks_find_a_planted_border_cue(synth_small, tmp_path):
    """The embedded data has no cue outside the masks; painting a bright border on every fake does,
    and both data-level checks see it."""
    import shutil

    from PIL import Image

    from visec.data.manifest import read_manifest
    from visec.report.shortcuts import outside_pixels, outside_statistics

    clean = read_manifest(synth_small.manifest)
    px, st = outside_pixels(clean), outside_statistics(clean)
    assert px["pairs"] > 0 and px["changed_share"] == 0.0
    assert st["logistic_auc"] < 0.75
    root = tmp_path / "planted"
    shutil.copytree(clean.root, root)
    planted = read_manifest(root / "manifest.jsonl", check_files=False)
    for rel in planted.df.loc[planted.df["label"] == 1, "path"]:
        img = np.asarray(Image.open(root / rel)).copy()
        img[:2], img[-2:], img[:, :2], img[:, -2:] = 255, 255, 255, 255
        Image.fromarray(img).save(root / rel)
    assert outside_pixels(planted)["changed_share"] > 0.05
    assert outside_statistics(planted)["logistic_auc"] > 0.9


def test_inside_frequency_keeps_the_direction_of_each_familys_cue(synth_small, tmp_path):
    """Planted: every fake is rewritten as its real twin, then inside its blended region resynth fakes
    get a +-16 checkerboard (more high frequency), faceswap fakes a blur (less) and component fakes
    nothing. The measure must give resynth AUC 1, faceswap near 0 and component 0.5 (identical twins):
    measured outside the region, or folded into max(AUC, 1 - AUC), it would not. Twins degraded
    differently are left out."""
    import shutil

    import cv2
    from PIL import Image

    from visec.data.manifest import read_manifest
    from visec.report.shortcuts import inside_frequency, load_mask, twin_pairs

    root = tmp_path / "planted"
    shutil.copytree(read_manifest(synth_small.manifest).root, root)
    m = read_manifest(root / "manifest.jsonl", check_files=False)
    pairs = twin_pairs(m.df)
    for r in pairs.itertuples(index=False):
        real = np.asarray(Image.open(root / r.real_path).convert("RGB")).astype(np.float32)
        region = load_mask(root, r.mask, real.shape[:2])[..., None] > 0.5
        if r.manipulation == "resynth":
            yy, xx = np.indices(real.shape[:2])
            edit = real + 16.0 * np.where((yy + xx) % 2 == 0, 1, -1)[..., None]
        elif r.manipulation == "faceswap":
            edit = cv2.GaussianBlur(real, (5, 5), 1.5)
        else:
            edit = real
        fake = np.where(region, edit, real)
        Image.fromarray(np.clip(fake, 0, 255).astype(np.uint8)).save(root / r.path)
    m.df["quality"] = m.df["path"].map(pairs.set_index("path")["real_quality"]).fillna(m.df["quality"])
    fam = inside_frequency(m)
    assert set(fam) == {"component", "faceswap", "resynth"}
    assert all(v["pairs"] > 20 for v in fam.values())
    assert fam["resynth"]["hf_auc"] == 1.0 and fam["resynth"]["hf_ratio"] > 1.5
    assert fam["faceswap"]["hf_auc"] < 0.2 and fam["faceswap"]["hf_ratio"] < 1
    assert fam["component"]["hf_auc"] == 0.5 and fam["component"]["hf_ratio"] == 1.0
    # only twins degraded alike are compared: component fakes marked as degraded otherwise drop out
    component = m.df["path"].isin(pairs.loc[pairs["manipulation"] == "component", "path"])
    m.df.loc[component, "quality"] = "planted-other-degradation"
    assert set(inside_frequency(m)) == {"faceswap", "resynth"}


def test_occlusion_greys_the_blended_region_or_everything_else(synth_small, tmp_path, monkeypatch):
    """A stand-in detector that reads only the image border (outside every mask): greying the blended
    region leaves its AUC where it was, greying everything else takes it to chance."""
    import shutil
    from types import SimpleNamespace

    from PIL import Image

    import visec.report.runs as runs
    from visec.data.manifest import read_manifest
    from visec.report.shortcuts import occlusion

    root = tmp_path / "planted"
    shutil.copytree(read_manifest(synth_small.manifest).root, root)
    m = read_manifest(root / "manifest.jsonl", check_files=False)
    for rel in m.df.loc[m.df["label"] == 1, "path"]:  # a bright top row on every fake
        img = np.asarray(Image.open(root / rel)).copy()
        img[0] = 255
        Image.fromarray(img).save(root / rel)

    class TopRow:
        def attack_logit(self, x):
            return x[:, :, 0].mean((1, 2))

    cfg = SimpleNamespace(data=SimpleNamespace(image_size=64, modality="vis"))
    monkeypatch.setattr(runs, "load_card_module", lambda card, path: (TopRow(), cfg))
    card = SimpleNamespace(method="top-row")
    row = occlusion([(card, tmp_path / "run" / "cards" / "x.card.json")], m)[0]
    assert row["as is"] > 0.95 and row["blended region greyed"] > 0.95
    assert row["outside greyed"] == pytest.approx(0.5, abs=0.05)


# -- the bench end to end, shrunk --------------------------------------------------------------------
@pytest.mark.slow
def test_method_ablation_pairs_every_seed_and_protocol(tmp_path):
    from visec.apps.ablation import ablation_bench
    from visec.data.synthetic import make_synth_dataset

    data = make_synth_dataset(tmp_path / "data", seed=0, identities=24, frames=1, families=("faceswap", "component"))
    quick = ["train.max_epochs=1", "train.bootstrap=0", "data.image_size=32"]
    out = tmp_path / "out"
    ablation_bench(out, {"acmf": tuple(TINY["acmf"]), "deepfidelity": tuple(TINY["deepfidelity"])}, seeds=2,
                   data=data.manifest, overrides=quick, variant_seeds=1)
    rows = pd.read_csv(out / "ablation.csv")
    protocols = {"intra", "leave-out:faceswap", "leave-out:component"}
    # acmf and acmf+fac against acmf+no-mfr; deepfidelity against its own stage-A score; 2 seeds each
    got = {(r.model, r.counterpart, r.protocol, r.seed) for r in rows.itertuples()}
    want = {(m, b, p, s) for m, b in (("acmf/tiny_cnn", "acmf/tiny_cnn+no-mfr"),
                                      ("deepfidelity", "deepfidelity+stage-a")) for p in protocols for s in (0, 1)}
    want.add(("acmf/tiny_cnn+fac", "acmf/tiny_cnn+no-mfr", "intra", 0))  # FAC: intra, first seed only
    assert got == want
    cfg0 = load_config(out / "runs" / "acmf-seed0" / "intra" / "config.yaml")
    cfg1 = load_config(out / "runs" / "acmf-counterpart-seed1" / "intra" / "config.yaml")
    assert (cfg0.train.seed, cfg1.train.seed, cfg1.model["mask_ratio"]) == (0, 1, 0)
    seeds = pd.read_csv(out / "ablation_seeds.csv")
    assert sorted(seeds["seeds"]) == [1] + [2] * 6 and len(seeds) == 7
    assert "Shortcut checks" in (out / "ablation.html").read_text()
    spread = pd.read_csv(out / "seeds.csv").set_index(["method", "protocol"])
    row = spread.loc[("deepfidelity", "intra")]
    aucs = [json.loads(p.read_text())["metrics"]["frame"]["auc"]["value"]
            for p in sorted(out.glob("runs/deepfidelity-seed*/intra/cards/deepfidelity_*.card.json"))]
    assert row["seeds"] == 2 and row["mean"] == pytest.approx(np.mean(aucs))
    assert row["sd"] == pytest.approx(np.std(aucs, ddof=1))
    checks = json.loads((out / "shortcuts.json").read_text())
    assert {r["model"] for r in checks["occlusion"]} == {"acmf/tiny_cnn", "deepfidelity"}
    # a stopped suite reports what finished and trains nothing
    import shutil

    shutil.rmtree(out / "runs" / "deepfidelity-seed1" / "leave-out-component")
    ablation_bench(out, {"acmf": tuple(TINY["acmf"]), "deepfidelity": tuple(TINY["deepfidelity"])}, seeds=2,
                   data=data.manifest, overrides=quick, shortcuts=False, train=False, variant_seeds=1)
    assert not (out / "runs" / "deepfidelity-seed1" / "leave-out-component").exists()
    assert len(pd.read_csv(out / "ablation.csv")) == len(rows) - 1
    before = {p: p.stat().st_mtime for p in out.glob("runs/*/*/best.safetensors")}
    ablation_bench(out, {"acmf": tuple(TINY["acmf"]), "deepfidelity": tuple(TINY["deepfidelity"])}, seeds=2,
                   data=data.manifest, overrides=quick, shortcuts=False, variant_seeds=1)
    after = {p: p.stat().st_mtime for p in out.glob("runs/*/*/best.safetensors")}
    assert len(after) == len(before) + 1 and all(after[p] == t for p, t in before.items())  # only the missing run


def test_fedforgery_counterpart_classifies_the_image_itself_with_the_classifier_loss_alone():
    cp = method_of("fedforgery").counterpart
    module = build_module(load_config("fedforgery", [*TINY["fedforgery"], *cp.overrides])).eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    parts = module.net.parts(x)
    assert torch.equal(parts["residual"], module.net.normalize(x))  # no x - G(x)
    logs = module.losses({"image": x, "label": torch.tensor([0.0, 1.0]), "index": torch.arange(2)})
    assert set(logs) == {"ce", "loss"} and torch.equal(logs["loss"], logs["ce"])


def test_cli_ablation_and_suite_mistakes_are_one_line_errors(capsys, tmp_path):
    from visec.cli import main

    assert main(["bench", "--ablation", "--out", str(tmp_path / "a")]) == 2
    assert "--ablation needs --method" in capsys.readouterr().err
    assert main(["bench", "--suite", "ablatoin", "--out", str(tmp_path / "b")]) == 2
    assert "ablation" in capsys.readouterr().err  # did you mean
    assert main(["bench", "--method", "mmnet", "--ablation", "--out", str(tmp_path / "c")]) == 2
    assert "of a forgery detector" in capsys.readouterr().err
    assert main(["bench", "--method", "xception", "--ablation", "--out", str(tmp_path / "d")]) == 2
    assert "declares no counterpart" in capsys.readouterr().err


def test_the_suite_data_take_their_own_size_and_identity_count(tmp_path):
    from PIL import Image
    from rich.console import Console

    from visec.apps.bench import embedded_data
    from visec.data.manifest import read_manifest

    manifest = embedded_data(tmp_path / "data", 0, Console(quiet=True), size=48, identities=12)
    m = read_manifest(manifest)
    assert m.df["source_id"].nunique() == 12 + 2  # plus the two public-domain portraits
    assert Image.open(m.root / m.df["path"].iloc[0]).size == (48, 48)
