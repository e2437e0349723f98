"""`visec attack --method adv_diffusion` end to end on a tiny LDM run, the black-box protocol, the
pairs file, and the baselines through the attack engine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from visec.apps.adv_diffusion import (EnsembleEmbedding, check_protocol, cosine_loss, eps_for_psnr, evaluate,
                                      run_baseline)
from visec.methods.adv_diffusion import AdvDiffusionError

TINY_LDM = ("model.ae_widths=[8,16]", "model.unet_widths=[16,32]", "model.context_dim=8", "model.norm_groups=4",
            "model.attention_head_dim=4", "model.ae_epochs=1", "model.faces=40", "data.image_size=32",
            "train.max_epochs=2", "data.batch_size=16", "train.bootstrap=0")


class Named(nn.Module):
    def __init__(self, name: str, seed: int = 0, dim: int = 8) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, dim, 3, stride=2)
        self.name, self.dim = name, dim

    def forward(self, x):
        return self.conv(x).mean((2, 3))


def test_the_victim_is_never_a_surrogate():
    a, b = Named("ir152"), Named("irse50")
    check_protocol([a], [b])
    with pytest.raises(AdvDiffusionError, match="ir152 is also a surrogate"):
        check_protocol([a, b], [Named("ir152", seed=1)])

    class BlackBox:
        name, differentiable = "dlib", False

    with pytest.raises(AdvDiffusionError, match="not differentiable"):
        check_protocol([BlackBox()], [a])


def test_baselines_run_targeted_through_the_engine_and_raise_the_cosine():
    """PGD / MI-FGSM / TI-DIM on the ensemble's cosine: inside the budget, and the surrogate cosine to
    the target goes up (targeted = descending 1 - cos)."""
    g = torch.Generator().manual_seed(0)
    src, tgt = torch.rand(4, 3, 16, 16, generator=g), torch.rand(4, 3, 16, 16, generator=g)
    sur = [Named("a", 1), Named("b", 2)]
    model = EnsembleEmbedding(sur)
    loss = cosine_loss(model.dims)
    with torch.no_grad():
        before = 1 - loss(model(src), model(tgt))
    for name in ("pgd", "mifgsm", "di_ti_mifgsm"):
        adv, cfg = run_baseline(name, src, tgt, sur, eps=8 / 255, steps=10, seed=0)
        assert (adv - src).abs().max() <= 8 / 255 + 1e-6 and cfg["targeted"] is True
        with torch.no_grad():
            after = 1 - loss(model(adv), model(tgt))
        assert (after > before).float().mean() >= 0.75, name
    assert eps_for_psnr(20.0) == pytest.approx(0.1)


def test_evaluate_scores_each_victim_at_its_thresholds():
    g = torch.Generator().manual_seed(0)
    src, tgt = torch.rand(5, 3, 16, 16, generator=g), torch.rand(5, 3, 16, 16, generator=g)
    v = Named("victim", 3)
    same = evaluate(tgt.clone(), src, tgt, [v], {"victim": {0.1: 0.5, 0.01: 0.99, 0.001: 1.5}})
    m = same["victims"]["victim"]
    assert m["cos_target"] == pytest.approx(1.0, abs=1e-5)  # the target itself impersonates the target
    assert m["asr"]["0.1"]["asr"] == 1.0 and m["asr"]["0.01"]["asr"] == 1.0 and m["asr"]["0.001"]["asr"] == 0.0
    own = evaluate(src.clone(), src, tgt, [v], {"victim": {0.1: 0.5, 0.01: 0.99, 0.001: 1.5}})
    assert own["quality"]["ssim"] == pytest.approx(1.0) and own["quality"]["psnr"] >= 99


@pytest.fixture(scope="module")
def tiny_ldm_run(tmp_path_factory):
    from visec.config import load_config
    from visec.engine import Engine

    root = tmp_path_factory.mktemp("advldm")
    cfg = load_config("adv_diffusion", [*TINY_LDM, f"output_dir={root}", "name=ldm", f"data.root={root / 'faces'}"])
    engine = Engine(cfg)
    fit = engine.fit()
    assert fit["best"].is_file()
    return engine


def _faces(folder: Path, names: list[str], seed: int) -> None:
    from visec.data.synthetic.sources import gan_faces

    folder.mkdir(parents=True, exist_ok=True)
    for img, name in zip(gan_faces(len(names), seed), names):
        Image.fromarray(img).save(folder / name)


@pytest.mark.slow
def test_attack_command_end_to_end(tiny_ldm_run, tmp_path, monkeypatch):
    """The CLI on folders named 1, 10, 2 ...: adversarial images, pairs.csv in natural order, a card
    for Adv-Diffusion, the baseline and the no-attack reference, ASR per victim at each FAR."""
    from typer.testing import CliRunner

    from visec.cli import app

    names = ["1.png", "10.png", "2.png", "3.png"]
    _faces(tmp_path / "src", names, seed=11)
    _faces(tmp_path / "tgt", ["a.png", "b.png"], seed=12)
    monkeypatch.setattr("visec.apps.adv_diffusion.victim_thresholds",
                        lambda v, size, n: ({0.1: 0.2, 0.01: 0.5, 0.001: 0.9}, "test thresholds"))
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["attack", "--method", "adv_diffusion", "--model", str(tiny_ldm_run.run_dir),
                                   "--source", str(tmp_path / "src"), "--target", str(tmp_path / "tgt"),
                                   "--fr", "tiny_ir", "--victim", "tiny_mobileface", "--baseline", "pgd",
                                   "--set", "model.ddim_steps=3", "--set", "model.guidance_scale=10",
                                   "--batch-size", "3", "--out", str(out)])
    assert res.exit_code == 0, res.output
    pairs = pd.read_csv(out / "pairs.csv")
    assert [Path(p).name for p in pairs["source"]] == ["1.png", "2.png", "3.png", "10.png"]
    assert [Path(p).name for p in pairs["target"]] == ["a.png", "b.png", "a.png", "b.png"]
    assert all((out / "adv" / f"{i}.png").is_file() for i in pairs["index"])
    cards = sorted((out / "cards").glob("*.card.json"))
    assert len(cards) == 3  # Adv-Diffusion, PGD at matched PSNR, and the no-attack reference
    reference = json.loads(next(c for c in cards if c.name.startswith("none")).read_text())
    assert reference["metrics"]["quality"]["ssim"] == pytest.approx(1.0)
    card = json.loads(next(c for c in cards if c.name.startswith("adv-diffusion")).read_text())
    assert card["config"]["ddim_steps"] == 3 and card["config"]["scale"] == 10.0
    assert card["config"]["surrogates"] == ["tiny_ir"] and set(card["metrics"]["victims"]) == {"tiny_mobileface"}
    assert -1 <= card["metrics"]["surrogate_cos_target"] <= 1
    asr = card["metrics"]["victims"]["tiny_mobileface"]["asr"]
    assert set(asr) == {"0.1", "0.01", "0.001"} and all(0 <= a["asr"] <= 1 for a in asr.values())
    assert "ASR@0.1" in res.output and "PGD" in res.output


def test_pairs_file_is_what_evaluation_reads(tmp_path):
    """Sources 1, 2, ..., 12 named so that string order differs: the natural order pairs 2.png with
    source #2, and an index file fixes any other pairing."""
    from visec.metrics.face_verification import pair_files, read_pairs, write_pairs

    for d in ("src", "tgt"):
        (tmp_path / d).mkdir()
    for i in range(1, 13):
        Image.fromarray(np.full((4, 4, 3), i, np.uint8)).save(tmp_path / "src" / f"{i}.png")
        Image.fromarray(np.full((4, 4, 3), i, np.uint8)).save(tmp_path / "tgt" / f"{i}.png")
    pairs = pair_files(tmp_path / "src", tmp_path / "tgt")
    names = [Path(p).name for p in pairs["source"]]
    assert names[:3] == ["1.png", "2.png", "3.png"] and names[-1] == "12.png"
    pairs = pairs.assign(adversarial=[str(tmp_path / "tgt" / f"{i + 1}.png") for i in pairs["index"]])
    write_pairs(pairs, tmp_path / "src" / "pairs.csv")
    back = read_pairs(tmp_path / "src" / "pairs.csv")
    assert [Path(p).name for p in back["source"]] == [Path(p).name for p in pairs["source"]]


def test_attack_refuses_adv_diffusion_options_on_other_methods(tmp_path, capsys):
    from visec.cli import main

    assert main(["attack", "--method", "pgd", "--model", str(tmp_path), "--source", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--source" in err and "adv_diffusion" in err and len(err.strip().splitlines()) == 1
    assert main(["attack", "--method", "adv_diffusion", "--source", str(tmp_path), "--target", str(tmp_path)]) == 2
    assert "--model" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_job_writes_cards_and_a_report(tmp_path, monkeypatch):
    """`visec bench --method adv_diffusion` shrunk: a tiny LDM, surrogates distilled on 24 faces,
    dlib (the real black box) thresholded on 50 faces' impostor pairs, 2 pairs; every method gets a
    card against dlib, and the report holds the table and the grid."""
    from visec.apps.bench_adv_diffusion import adv_diffusion_bench

    monkeypatch.chdir(tmp_path)
    overrides = [o for o in TINY_LDM if not o.startswith("data.image_size")] + [
        "data.image_size=32", "train.max_epochs=2", f"data.root={tmp_path / 'faces'}", "model.ddim_steps=2"]
    cards = adv_diffusion_bench(tmp_path / "bench", overrides=overrides, pairs=2, distill={"n": 24, "epochs": 1},
                                impostor_faces=50, scales=(0.0,))
    methods = [json.loads(Path(c).read_text()) for c in cards]
    labels = {m["protocol"].split(":", 1)[1] for m in methods}
    assert {"Adv-Diffusion", "Adv-Diffusion (s=0)", "no attack", "PGD (matched PSNR)", "TI-DIM (8/255)"} <= labels
    assert all(set(m["metrics"]["victims"]) == {"dlib"} for m in methods)
    ad = next(m for m in methods if m["protocol"] == "impersonation:Adv-Diffusion")
    assert ad["config"]["ddim_steps"] == 2 and ad["extra"]["threshold_origin"]["dlib"].startswith("impostor pairs of 50")
    html = (tmp_path / "bench" / "report.html").read_text()
    assert "ASR against imperceptibility" in html and html.count("data:image/png;base64") == 2


def test_matched_baseline_reaches_the_requested_psnr():
    """The matched-PSNR rule: the budget is rescaled until the baseline's mean PSNR is within 0.25 dB
    of the target (the closed-form first guess alone misses it: clipping and unsaturated steps)."""
    from visec.apps.adv_diffusion import matched_baseline

    g = torch.Generator().manual_seed(0)
    src, tgt = torch.rand(3, 3, 16, 16, generator=g), torch.rand(3, 3, 16, 16, generator=g)
    adv, cfg = matched_baseline("pgd", src, tgt, [Named("a", 1)], 22.0, steps=5)
    assert abs(cfg["achieved_psnr"] - 22.0) <= 0.25 and cfg["eps"] != pytest.approx(eps_for_psnr(22.0))


def test_the_autoencoder_stage_sets_the_latent_scaling(tiny_ldm_run):
    """After the autoencoder stage, k = 1 / std of the training latents (SD's 0.18215 plays this role)."""
    from visec.engine.engine import build_datamodule
    from visec.methods.adv_diffusion import latent_std

    module, _ = tiny_ldm_run.load_module()
    dm = build_datamodule(tiny_ldm_run.cfg)
    dm.setup("fit")
    std = latent_std(module.net, dm.train_dataloader())
    assert float(module.net.scaling) == pytest.approx(1 / std, rel=0.05) and float(module.net.scaling) != 1.0
