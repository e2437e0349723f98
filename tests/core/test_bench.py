"""The forgery bench job end to end on a small embedded set: protocols, cards, report, no rework."""

from __future__ import annotations

import json
import re

import pytest

from visec.apps.bench import Entrant, forgery_bench
from visec.data.corruptions import ROBUSTNESS_SWEEP
from visec.data.synthetic import FAMILIES, make_synth_dataset
from visec.cards import ResultCard

TINY = Entrant("classifier", "tiny", ("model.backbone=tiny_cnn", "data.image_size=32"))
QUICK = ["train.max_epochs=1", "train.bootstrap=20"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    data = make_synth_dataset(out / "data", seed=0, identities=30, frames=1)
    paths = forgery_bench(out, entrants=[TINY], data=data.manifest, overrides=QUICK)
    return out, data, paths


def test_every_protocol_gives_a_card(bench):
    out, _, paths = bench
    protocols = sorted(ResultCard.load(p).protocol for p in paths)
    expected = sorted(["intra", *(f"intra+{c}" for c in ROBUSTNESS_SWEEP), *(f"leave-out:{f}" for f in FAMILIES)])
    assert protocols == expected
    assert {ResultCard.load(p).method for p in paths} == {"classifier/tiny_cnn"}
    for fam in FAMILIES:  # the held-out run never saw its family: its config says so
        cfg = json.loads((out / "runs" / "tiny" / f"leave-out-{fam}" / "fit.json").read_text())["config"]
        assert cfg["data"]["holdout"] == fam


def test_report_has_every_section(bench):
    out, _, _ = bench
    html = (out / "report.html").read_text()
    for section in ("Leaderboard", "ROC curves", "Score histograms per manipulation family",
                    "AUC per recorded quality level", "Leave one manipulation out", "Robustness sweep",
                    "Examples"):
        assert f"<h2>{section}" in html, section
    assert len(re.findall(r'src="data:image/png;base64,', html)) >= 4  # self-contained figures
    for fam in FAMILIES:
        assert f"LOO {fam}" in html
    for c in ROBUSTNESS_SWEEP:
        assert c in html


def test_a_second_run_reuses_runs_and_cards(bench):
    out, data, paths = bench
    stamps = {p: p.stat().st_mtime_ns for p in paths}
    weights = out / "runs" / "tiny" / "intra" / "best.safetensors"
    before = weights.stat().st_mtime_ns
    again = forgery_bench(out, entrants=[TINY], data=data.manifest, overrides=QUICK)
    assert sorted(again) == sorted(paths)
    assert weights.stat().st_mtime_ns == before
    assert all(p.stat().st_mtime_ns == stamps[p] for p in paths)


def test_a_changed_config_does_not_overwrite_a_finished_run(bench):
    from visec.errors import ConfigError

    out, data, _ = bench
    with pytest.raises(ConfigError, match="another config"):
        forgery_bench(out, entrants=[TINY], data=data.manifest, overrides=["train.max_epochs=2", "train.bootstrap=20"])


def test_the_default_entrants_build():
    from visec.apps.bench import DEFAULT_ENTRANTS
    from visec.config import load_config
    from visec.engine.engine import card_name

    names = set()
    for e in DEFAULT_ENTRANTS:
        cfg = load_config(e.config, list(e.overrides))
        names.add(card_name(cfg))
    assert names == {"xception", "classifier/mobilenetv2+imagenet", "classifier/mobilenetv2",
                     "classifier/mobilenetv2+imagenet+pgd_at"}
    assert any(e.loo for e in DEFAULT_ENTRANTS)  # the demo report has a leave-one-out table
    attacked = {e.label for e in DEFAULT_ENTRANTS if e.attacks}  # the two demo detectors and the AT one
    assert attacked == {"xception", "mobilenetv2-imagenet", "mobilenetv2-imagenet-pgd_at"}
    from visec.attacks.detector import DetectorAttackSpec

    for e in DEFAULT_ENTRANTS:
        for text in e.attacks:  # every spec parses (a transfer gets its source from the bench)
            DetectorAttackSpec.parse(text + (",source=x" if text.startswith("transfer") else ""))


def test_a_run_stopped_before_its_first_checkpoint_starts_again(bench, tmp_path):
    import shutil

    out, data, _ = bench
    copy = tmp_path / "copy"
    shutil.copytree(out / "runs", copy / "runs")
    stopped = copy / "runs" / "tiny" / "leave-out-faceswap"
    for name in list(stopped.iterdir()):  # keep only what a run writes before its first epoch ends
        if name.name not in ("config.yaml", "logs"):
            shutil.rmtree(name) if name.is_dir() else name.unlink()
    paths = forgery_bench(copy, entrants=[TINY], data=data.manifest, overrides=QUICK)
    assert (stopped / "best.safetensors").is_file() and (stopped / "fit.json").is_file()
    assert sum(ResultCard.load(p).protocol == "leave-out:faceswap" for p in paths) == 1


def test_the_report_shows_saliency_maps_and_scores_them_against_the_blend_masks(bench):
    out, _, _ = bench
    html = (out / "report.html").read_text()
    assert "<h2>Saliency maps" in html
    assert "mask AUC of the saliency maps" in html
    assert "saliency skipped" not in html
    # the shortcut checks of the embedded data: no pixel differs outside the masks, and the tiny
    # model's occlusion row is there
    assert "<h2>Shortcut checks of the data" in html
    assert "0.00% of them differ by more than 1/255" in html and "outside greyed" in html


def test_a_run_trained_on_other_images_is_not_reused(bench, tmp_path):
    import shutil

    from visec.errors import ConfigError

    out, data, _ = bench
    copy = tmp_path / "copy"
    shutil.copytree(out / "runs", copy / "runs")
    done = copy / "runs" / "tiny" / "intra" / "fit.json"
    meta = json.loads(done.read_text())
    assert len(meta["images_sha256"]) == 64
    done.write_text(json.dumps({**meta, "images_sha256": "0" * 64}))
    with pytest.raises(ConfigError, match="other images"):
        forgery_bench(copy, entrants=[TINY], data=data.manifest, overrides=QUICK)


def test_test_time_variants_and_modality_entrants_add_their_own_cards(bench, tmp_path):
    """ACMF's adaptation is tested on the intra checkpoint as a second card (not retrained);
    HFC-MFFD's registered NIR entrant gets a card named with its modality."""
    from visec.apps.bench import method_entrants

    out, data, _ = bench
    acmf = Entrant("acmf", "acmf-tiny", ("model.backbone=tiny_cnn", "data.image_size=32", "model.source_pool=16"),
                   loo=False, sweep=False, test_variants=(("model.fac=true", "model.fac_steps=1"),))
    paths = forgery_bench(tmp_path, entrants=[acmf], data=data.manifest, overrides=QUICK)
    cards = {ResultCard.load(p).method: ResultCard.load(p) for p in paths}
    assert set(cards) == {"acmf/tiny_cnn", "acmf/tiny_cnn+fac"}
    assert {c.protocol for c in cards.values()} == {"intra"}
    assert cards["acmf/tiny_cnn+fac"].config["model"]["fac"] is True
    stamps = {p: p.stat().st_mtime_ns for p in paths}
    assert sorted(forgery_bench(tmp_path, entrants=[acmf], data=data.manifest, overrides=QUICK)) == sorted(paths)
    assert all(p.stat().st_mtime_ns == stamps[p] for p in paths)  # nothing re-tested

    hfc = method_entrants("hfc_mffd")
    assert [e.label for e in hfc] == ["hfc_mffd", "hfc_mffd-nir", "hfc_mffd-vis+nir"]
    assert [e.loo for e in hfc] == [True, False, False]
    assert method_entrants("acmf")[0].test_variants == (("model.fac=true",),)


def test_attacked_columns_transfer_and_adversarial_training(tmp_path):
    """Attacked cards for each entrant's intra run, a transfer crafted on the bench's Xception slot,
    an adversarially trained entrant beside its plain recipe, and the report's attacked section."""
    import pandas as pd
    from rich.console import Console

    data = make_synth_dataset(tmp_path / "data", seed=0, identities=30, frames=1)
    tiny = ("model.backbone=tiny_cnn", "data.image_size=32")
    attacks = ("pgd,eps=2/255,steps=2", "pgd,eps=4/255,steps=2", "transfer,eps=4/255,steps=2")
    source = Entrant("classifier", "xception", tiny, loo=False, sweep=False, attacks=attacks)
    robust = Entrant("classifier", "tiny-at", (*tiny, "train.adversarial=pgd_at", "train.adv_steps=1"),
                     loo=False, sweep=False, attacks=attacks)
    nir = Entrant("classifier", "tiny-nir", (*tiny, "data.modality=nir"), loo=False, sweep=False,
                  attacks=("transfer,eps=4/255,steps=1",))  # other faces than the surrogate's: skipped
    console = Console(record=True, width=200)
    paths = forgery_bench(tmp_path, entrants=[source, robust, nir], data=data.manifest, overrides=QUICK,
                          console=console)
    got = sorted((ResultCard.load(p).method, ResultCard.load(p).protocol) for p in paths)
    plain, at = "classifier/tiny_cnn", "classifier/tiny_cnn+pgd_at"
    transfer = "intra+transfer@classifier/tiny_cnn-linf-4/255"
    assert got == sorted([(plain, "intra"), (plain, "intra+pgd-linf-2/255"), (plain, "intra+pgd-linf-4/255"),
                          (at, "intra"), (at, "intra+pgd-linf-2/255"), (at, "intra+pgd-linf-4/255"), (at, transfer),
                          ("classifier/tiny_cnn[nir]", "intra")])
    assert "tiny-nir: transfer attack skipped: xception takes vis faces at 32 px" in console.export_text()
    card = ResultCard.load(next(p for p in paths if ResultCard.load(p).protocol == transfer))
    assert card.metrics["attack"]["source"].endswith("runs/xception/intra")
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert {"pgd-linf-2/255", "pgd-linf-4/255", "evasion pgd-linf-4/255", transfer[len("intra+"):]} <= set(summary.columns)
    html = (tmp_path / "report.html").read_text()
    for section in ("Attacked detectors", "Attacked examples"):
        assert f"<h2>{section}" in html, section
    assert "clean vs attacked AUC" in html and "budget 0 = the clean test split" in html
