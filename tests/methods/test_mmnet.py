"""MMNet / SeqFakeFormer on the engine: the loss terms, recovery learning, the bench and `visec detect`."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from visec.config import load_config
from visec.engine import Engine
from visec.engine.engine import build_module

TINY = ("model.arch=tiny", "model.width=8", "model.d_model=32", "model.ffn=64", "model.recovery_width=16",
        "model.identity_metric=false", "data.image_size=32", "train.bootstrap=200")


def _module(*extra: str):
    torch.manual_seed(0)
    return build_module(load_config("mmnet", [*TINY, *extra]))


def _batch(n: int = 4, has: bool = True):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, 32, 32, generator=g)
    seq = torch.tensor([[0, 0, 0, 0, 0], [1, 2, 0, 0, 0], [3, 1, 4, 5, 2], [2, 0, 0, 0, 0]])[:n]
    return {"image": x, "original": torch.rand(n, 3, 32, 32, generator=g),
            "has_original": torch.full((n,), has), "sequence": seq, "label": (seq > 0).any(1).float(),
            "index": torch.arange(n)}


def test_each_loss_term_is_present_and_switchable():
    full = _module().losses(_batch())
    assert set(full) == {"loss", "ce", "ce_backward", "multilabel", "recovery"}
    assert torch.allclose(full["loss"], sum(full[k] for k in ("ce", "ce_backward", "multilabel", "recovery")))
    none = _module("model.backward=false", "model.multilabel=false", "model.recovery=false").losses(_batch())
    assert set(none) == {"loss", "ce"}
    weighted = _module("model.backward_weight=2.0").losses(_batch())
    assert torch.allclose(weighted["ce_backward"], 2 * full["ce_backward"])
    sff = build_module(load_config("mmnet/seqfakeformer", list(TINY))).losses(_batch())
    assert set(sff) == {"loss", "ce"}


def test_backward_decoder_learns_from_the_reversed_sequence_only():
    """The backward decoder gets a gradient from its own cross-entropy, on the reversed targets:
    swapping a sequence for its reverse swaps the two cross-entropies' roles."""
    m = _module("model.multilabel=false", "model.recovery=false", "model.dropout=0.0").eval()
    b = _batch()
    loss = m.losses(b)
    loss["ce"].backward(retain_graph=True)
    assert all(p.grad is None for p in m.net.backward_decoder.parameters())
    m.zero_grad()
    loss["ce_backward"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.net.backward_decoder.parameters())
    # with the two decoders' weights equal, the reversed batch's backward CE is the forward CE
    m.net.backward_decoder.load_state_dict(m.net.decoder.state_dict())
    from visec.methods.mmnet.torch_model import reverse_sequence

    rev = dict(b, sequence=reverse_sequence(b["sequence"]))
    with torch.no_grad():
        assert torch.allclose(m.losses(b)["ce"], m.losses(rev)["ce_backward"], atol=1e-6)


def test_multilabel_targets_are_the_edits_present():
    m = _module("model.backward=false", "model.recovery=false")
    seen = {}

    def head(x):  # capture the logits' shape; return logits that equal the expected targets' logit
        out = torch.nn.functional.linear(x, m.net.multilabel_head.weight, m.net.multilabel_head.bias)
        seen["out"] = out
        return out

    m.net.multilabel_head.forward = head
    loss = m.losses(_batch())["multilabel"]
    present = torch.tensor([[0, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 1, 0, 0, 0]], dtype=torch.float)
    expected = 0.5 * torch.nn.functional.binary_cross_entropy_with_logits(seen["out"], present)
    assert torch.allclose(loss, expected)


def test_recovery_loss_only_on_faces_with_an_original():
    """The squared error of the recovered face to the original, averaged over the faces that have one."""
    from visec.methods.mmnet.torch_model import encode

    m = _module("model.backward=false", "model.multilabel=false", "model.dropout=0.0").eval()
    assert "recovery" not in m.losses(_batch(has=False))
    b = _batch()
    b["has_original"] = torch.tensor([True, False, True, False])
    with torch.no_grad():
        torch.nn.init.normal_(m.net.recovery.final[-1].weight, std=0.1)  # a recovery that is not the identity
        rec = m.net(b["image"], encode(b["sequence"])[1])["recovered"]
        expected = ((rec[0] - b["original"][0]).square().mean() + (rec[2] - b["original"][2]).square().mean()) / 2
        assert torch.allclose(m.losses(b)["recovery"], expected, atol=1e-6)


def test_card_names_say_which_parts_are_off():
    from visec.engine.engine import card_name

    assert card_name(load_config("mmnet")) == "mmnet"
    assert card_name(load_config("mmnet/seqfakeformer")) == "seqfakeformer"
    assert card_name(load_config("mmnet", ["model.backward=false", "model.recovery=false"])) == "mmnet-backward-recovery"
    assert card_name(load_config("mmnet", ["model.rerank=false"])) == "mmnet-rerank"


@pytest.fixture(scope="module")
def tiny_run(seq_small, tmp_path_factory):
    """MMNet trained briefly on the test-sized embedded components (seconds; the last epoch kept)."""
    out = tmp_path_factory.mktemp("mmnet_run")
    cfg = load_config("mmnet", [*TINY, f"data.manifest={seq_small.manifests['facial_components']}",
                                f"output_dir={out}", "name=run", "train.max_epochs=15", "train.lr=0.003", "train.select_on=last",
                                "model.grad_clip=null", "data.batch_size=16"])
    torch.manual_seed(0)
    engine = Engine(cfg)
    engine.fit()
    return engine


@pytest.mark.slow
def test_tiny_run_recovers_faces_better_than_the_identity_map(tiny_run, one_torch_thread):
    card = tiny_run.test()
    rec = card.metrics["recovery"]
    assert rec["n"] > 0 and rec["psnr_recovered"] > rec["psnr_forged"] + 0.5, rec
    assert rec["ssim_recovered"] > rec["ssim_forged"], rec
    seq = card.metrics["sequence"]
    assert {"fixed_acc", "adaptive_acc", "csm", "csm@1", "csm@5", "ci"} <= set(seq)
    assert seq["csm@5"] == seq["csm"] and seq["csm@1"] >= seq["csm@2"] >= seq["csm"]
    from visec.metrics import format_metrics

    shown = format_metrics(card.metrics)  # what `visec train` / `visec test` print
    assert f"adaptive_acc {seq['adaptive_acc']:.3f} [" in shown and "psnr_recovered" in shown
    scores = pd.read_csv(tiny_run.run_dir / "cards" / f"{card.slug()}.scores.csv")
    assert len(scores) == seq["n"] and {"true", "pred", "psnr_recovered", "psnr_forged"} <= set(scores.columns)


@pytest.mark.slow
def test_detect_prints_the_sequence_and_writes_the_recovered_face(tiny_run, seq_small, tmp_path, capsys):
    from visec.cli import main
    from visec.data.sequences import read_sequence_manifest

    m = read_sequence_manifest(seq_small.manifests["facial_components"])
    face = m.root / m.df.loc[m.df["label"] == 1, "path"].iloc[0]
    assert main(["detect", str(tiny_run.run_dir), str(face), "--json", "--out", str(tmp_path / "rec")]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(res["sequence"]) == 5 and len(res["edits"]) == sum(v > 0 for v in res["sequence"])
    assert (tmp_path / "rec" / f"{face.stem}.recovered.png").is_file()
    (tmp_path / "file").write_text("x")
    assert main(["detect", str(tiny_run.run_dir), str(face), "--out", str(tmp_path / "file")]) == 2


@pytest.mark.slow
def test_bench_cli_trains_both_models_on_both_subsets(seq_small, tmp_path, one_torch_thread):
    from visec.cli import main

    root = seq_small.manifests["facial_components"].parents[1]
    sets = [f"--set={o}" for o in (*TINY, f"model.embedded_root={root}", "model.synth={identities: 24, size: 32}",
                                   "train.max_epochs=1", "data.batch_size=32")]
    assert main(["bench", "--method", "mmnet", "--out", str(tmp_path), *sets]) == 0
    table = pd.read_csv(tmp_path / "sequences.csv")
    assert sorted(table["subset"].unique()) == ["facial_attributes", "facial_components"]
    assert table["model"].str.startswith("majority").sum() == 2
    assert {"SeqFakeFormer", "MMNet"} <= set(table["model"])
    assert len(list((tmp_path / "cards").glob("*.card.json"))) == 4
    html = (tmp_path / "report.html").read_text()
    assert "confusion per decoding step" in html and "recovered" in html and html.count("<img") >= 7


@pytest.mark.slow
def test_an_unreadable_test_image_is_skipped_named_and_counted(tiny_run, seq_small, tmp_path):
    import shutil

    from visec.data.sequences import read_sequence_manifest

    src = seq_small.manifests["facial_components"].parent
    shutil.copytree(src, tmp_path / "copy")
    m = read_sequence_manifest(tmp_path / "copy" / "manifest.jsonl")
    victim = m.df.loc[(m.df["split"] == "test") & (m.df["label"] == 1), "path"].iloc[0]
    (tmp_path / "copy" / victim).write_bytes(b"\x89PNG\r\n\x1a\n broken")
    card = tiny_run.test(manifest=tmp_path / "copy" / "manifest.jsonl")
    skipped = card.extra["skipped"]["test"]
    assert len(skipped) == 1 and skipped[0][0].endswith(victim)
    assert any("1 unreadable image(s) skipped" in n for n in card.notes)
    assert card.metrics["sequence"]["n"] == int((m.df["split"] == "test").sum()) - 1


@pytest.mark.slow
def test_attack_refuses_a_sequential_run_in_one_line(tiny_run, capsys):
    from visec.cli import main

    assert main(["attack", "--method", "pgd", "--model", str(tiny_run.run_dir), "--max-samples", "2"]) == 2
    err = capsys.readouterr().err
    assert "robust accuracy of classifiers" in err and "sequential deepfake detection" in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_a_corrupted_test_degrades_the_input_not_the_original(tiny_run):
    clean = tiny_run.test()
    jpeg = tiny_run.test(corruption="jpeg-20")
    assert jpeg.protocol == "intra+jpeg-20" and clean.protocol == "intra"
    a, b = clean.metrics["recovery"], jpeg.metrics["recovery"]
    assert b["psnr_forged"] < a["psnr_forged"] - 0.3  # the inputs were degraded
    assert b["ssim_forged"] < a["ssim_forged"]  # SSIM is measured on the same degraded inputs
    assert b["n"] == a["n"]


@pytest.mark.slow
def test_predict_and_fed_refuse_a_sequential_run_in_one_line(tiny_run, seq_small, capsys):
    from visec.cli import main

    manifest = seq_small.manifests["facial_components"]
    assert main(["predict", str(tiny_run.run_dir), "--data", str(manifest), "--out",
                 str(tiny_run.run_dir / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert "predict scores forgery detectors" in err and "visec detect" in err and "Traceback" not in err
    from visec.config import load_config
    from visec.errors import ConfigError
    from visec.federated.server import check_federable

    with pytest.raises(ConfigError, match="trains forgery detectors; 'mmnet' is sequential"):
        check_federable(load_config("mmnet"))
    check_federable(load_config("fedforgery"))  # a detector passes
