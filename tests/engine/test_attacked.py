"""The attacked test protocol through the engine (``Engine.test(attack=...)``, ``visec test --attack``)
on the methods' tiny end-to-end runs, and adversarial training of detectors (``train.adversarial``)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from shared_runs import run_config
from visec.cards import ResultCard
from visec.engine import Engine
from visec.engine.module import BinaryDetector, binary_kl
from visec.errors import ConfigError


def _scores(engine: Engine, card: ResultCard) -> pd.DataFrame:
    return pd.read_csv(engine.run_dir / "cards" / f"{card.slug()}.scores.csv")


@pytest.fixture(scope="module")
def classifier(e2e_run):
    engine, _ = e2e_run("classifier")
    return engine, engine.test()


def test_fit_stores_the_validation_eer_threshold(classifier):
    engine, _ = classifier
    side = json.loads((engine.run_dir / "best.json").read_text())
    assert 0 < side["val_eer_threshold"] < 1


def test_evasion_card_lowers_fakes_scores_and_round_trips(classifier, one_torch_thread):
    engine, clean = classifier
    card = engine.test(attack="pgd,eps=8/255,steps=5")
    assert card.protocol == "intra+pgd-linf-8/255"
    block = card.metrics["attack"]
    assert block["threshold_source"].startswith("validation EER (stored")
    t = block["threshold"]
    before, after = _scores(engine, clean), _scores(engine, card)
    assert (after["path"] == before["path"]).all()
    fakes, reals = before["label"] == 1, before["label"] == 0
    np.testing.assert_allclose(after.loc[reals, "prob"], before.loc[reals, "prob"], atol=1e-6)  # reals unattacked
    assert after.loc[fakes, "prob"].mean() < before.loc[fakes, "prob"].mean() - 0.1
    clean_pass = float((before.loc[fakes, "prob"] < t).mean())
    assert block["evasion_rate"]["value"] == pytest.approx(float((after.loc[fakes, "prob"] < t).mean()))
    assert block["evasion_rate"]["value"] > clean_pass
    assert card.metrics["frame"]["auc"]["value"] < clean.metrics["frame"]["auc"]["value"]
    assert 0 < block["mean_linf"]["value"] <= 8 / 255 + 1e-6
    assert block["n_attacked"] == int(fakes.sum()) and isinstance(block["gradient_masking"], bool)
    saved = ResultCard.load(engine.run_dir / "cards" / f"{card.slug()}.card.json")
    assert saved.metrics["attack"] == json.loads(json.dumps(block))
    assert saved.extra["attack"]["name"] == "pgd" and saved.protocol == card.protocol


def test_framing_is_a_separate_protocol(classifier, one_torch_thread):
    engine, clean = classifier
    card = engine.test(attack="pgd,eps=8/255,steps=3,direction=frame")
    assert card.protocol == "intra+pgd-linf-8/255+frame"
    before, after = _scores(engine, clean), _scores(engine, card)
    fakes = before["label"] == 1
    np.testing.assert_allclose(after.loc[fakes, "prob"], before.loc[fakes, "prob"], atol=1e-6)
    assert after.loc[~fakes, "prob"].mean() > before.loc[~fakes, "prob"].mean() + 0.1
    assert "framing_rate" in card.metrics["attack"]


def test_attacked_card_is_refused_for_inputs_outside_0_1(classifier, monkeypatch):
    engine, _ = classifier
    cards = set((engine.run_dir / "cards").glob("*.card.json"))
    module_cls = type(engine.load_module()[0])
    monkeypatch.setattr(module_cls, "input_range", (-1.0, 1.0))
    with pytest.raises(ConfigError, match=r"images in \[0, 1\]"):
        engine.test(attack="pgd,eps=1/255,steps=1")
    assert set((engine.run_dir / "cards").glob("*.card.json")) == cards


def test_a_run_without_a_stored_threshold_recomputes_the_same_one(classifier, tmp_path, one_torch_thread):
    import shutil

    engine, _ = classifier
    old = tmp_path / "old"
    shutil.copytree(engine.run_dir, old, ignore=shutil.ignore_patterns("cards"))
    side = json.loads((old / "best.json").read_text())
    stored = side.pop("val_eer_threshold")
    (old / "best.json").write_text(json.dumps(side))  # as a run saved before thresholds were stored
    card = Engine.from_run(old).test(attack="pgd,eps=1/255,steps=1")
    assert card.metrics["attack"]["threshold_source"].startswith("validation EER (recomputed")
    assert card.metrics["attack"]["threshold"] == pytest.approx(stored, abs=1e-6)


def test_transfer_refuses_a_surrogate_that_takes_other_faces(classifier, tmp_path):
    import shutil

    import yaml

    engine, _ = classifier
    other = tmp_path / "other"
    shutil.copytree(engine.run_dir, other, ignore=shutil.ignore_patterns("cards"))
    cfg = yaml.safe_load((other / "config.yaml").read_text())
    cfg["data"]["image_size"] = 32
    (other / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match="takes vis faces at 32 px, the target vis at 64 px"):
        engine.test(attack=f"transfer,source={other}")


def test_cli_attack_option(classifier, capsys):
    from visec.cli import main

    engine, _ = classifier
    assert main(["test", str(engine.run_dir), "--attack", "fgsm,eps=2/255"]) == 0
    assert list((engine.run_dir / "cards").glob("*intra-fgsm-linf-2-255*.card.json"))
    assert main(["test", str(engine.run_dir), "--attack", "apgd_dlr"]) == 2
    assert "needs >= 3 classes" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["hfc_mffd", "deepfidelity"])
def test_every_detector_is_attacked_on_its_scored_path(e2e_run, method, one_torch_thread):
    engine, _ = e2e_run(method)
    clean = engine.test()
    card = engine.test(attack="pgd,eps=8/255,steps=5")
    before, after = _scores(engine, clean), _scores(engine, card)
    fakes = before["label"] == 1
    assert after.loc[fakes, "prob"].mean() < before.loc[fakes, "prob"].mean() - 0.05
    assert card.metrics["attack"]["attack_path"] is None


def test_deepfidelity_attack_follows_the_svr_score(e2e_run):
    """The attack logit is the unclipped ``0.5 - s`` of the fitted SVR, and the threshold maps onto it
    without a sigmoid: ``1 - s >= t  <=>  0.5 - s >= t - 0.5``."""
    engine, _ = e2e_run("deepfidelity")
    module, _ = engine.load_module()
    module.eval()
    assert module.net.svr.is_fitted
    x = torch.rand(4, 3, engine.cfg.data.image_size, engine.cfg.data.image_size)
    with torch.no_grad():
        s = module.net.fidelity(x)
        torch.testing.assert_close(module.attack_logit(x), 0.5 - s)
    assert module.attack_offset(0.3) == pytest.approx(-0.2)


def test_acmf_adaptation_is_attacked_through_its_stage_one_detector(e2e_run, one_torch_thread):
    engine, _ = e2e_run("acmf")
    fac = Engine.from_run(engine.run_dir, ["model.fac=true", "model.source_pool=16", "model.fac_steps=1"])
    clean = fac.test()
    card = fac.test(attack="pgd,eps=8/255,steps=3")
    assert card.method == "acmf/mobilenetv2+imagenet+fac"
    assert "BPDA" in card.metrics["attack"]["attack_path"]
    assert any("stand-in path" in n for n in card.notes)
    before, after = _scores(fac, clean), _scores(fac, card)
    fakes = before["label"] == 1
    # the adaptation re-reads its frames: it saw the attacked fakes (their scores moved) and the clean
    # reals (one frame per video here, so a real video's adaptation is the clean one, score for score)
    np.testing.assert_allclose(after.loc[~fakes, "prob"], before.loc[~fakes, "prob"], atol=1e-5)
    assert (after.loc[fakes, "prob"] - before.loc[fakes, "prob"]).abs().max() > 1e-3


# -- adversarial training ----------------------------------------------------------------------------
def test_binary_kl_is_the_two_class_kl():
    nat, adv = torch.randn(50), torch.randn(50)
    two = lambda z: torch.stack([torch.zeros_like(z), z], 1)  # noqa: E731
    expected = F.kl_div(F.log_softmax(two(adv), 1), F.log_softmax(two(nat), 1), reduction="none",
                        log_target=True).sum(1)
    torch.testing.assert_close(binary_kl(nat, adv), expected)
    assert binary_kl(nat, nat).abs().max() < 1e-6


def _module(*overrides: str) -> BinaryDetector:
    from visec.engine.engine import build_module

    torch.manual_seed(0)
    cfg = run_config("classifier", "model.backbone=tiny_cnn", *overrides)
    return build_module(cfg)


def test_pgd_at_trains_on_attacked_faces():
    module = _module("train.adversarial=pgd_at", "train.adv_eps=4/255")
    seen = []
    plain = module.losses
    module.losses = lambda batch: (seen.append(batch["image"]), plain(batch))[1]
    x = torch.rand(8, 3, 32, 32)
    batch = {"image": x, "label": (torch.arange(8) % 2).float()}
    losses = module.training_losses(batch)
    (img,) = seen
    delta = (img - x).abs()
    assert 0 < delta.max() <= 4 / 255 + 1e-6
    assert module.training  # the attack put the model back in train mode
    assert losses["loss"].requires_grad


def test_trades_adds_beta_times_the_kl_to_the_clean_loss():
    module = _module("train.adversarial=trades", "train.trades_beta=6", "train.adv_eps=8/255")
    x = torch.rand(8, 3, 32, 32)
    batch = {"image": x, "label": (torch.arange(8) % 2).float()}
    torch.manual_seed(1)
    module.eval()  # no dropout / BN updates: the clean loss is reproducible
    losses = module.training_losses(batch)
    clean = module.losses(batch)["loss"]
    assert losses["trades_kl"] > 0
    torch.testing.assert_close(losses["loss"], clean + 6 * losses["trades_kl"])


def test_adversarial_training_runs_end_to_end(toy_manifest, tmp_path, one_torch_thread):
    cfg = run_config("classifier", f"data.manifest={toy_manifest}", "model.backbone=tiny_cnn", "train.max_epochs=1",
                     "train.bootstrap=0", "train.adversarial=pgd_at", "train.adv_steps=2", out=tmp_path)
    engine = Engine(cfg)
    engine.fit()
    card = engine.test()
    assert card.method == "classifier/tiny_cnn+pgd_at"
    log = engine.training_log()
    assert np.isfinite(log["train/loss"].dropna()).all()


def test_adversarial_training_is_for_detectors(tmp_path):
    cfg = run_config("adversarial_training", "train.adversarial=pgd_at", "train.max_epochs=1", out=tmp_path)
    with pytest.raises(ConfigError, match="trains forgery detectors"):
        Engine(cfg).fit()
