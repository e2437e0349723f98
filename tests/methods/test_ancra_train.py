"""ANCRA / adversarial training end to end: the classification data (digits, CIFAR pickles), the
shipped configs, engine and CLI round trips, the bench job, and the issue's robustness check."""

import json
import pickle

import numpy as np
import pytest
import torch

from visec.config import TrainConfig, load_config
from visec.data.classification import ClassificationDataModule, load_cifar
from visec.engine import Engine
from visec.errors import ConfigError, DataError
from visec.cards import ResultCard

FAST = ["model.arch_kwargs={width: 8}", "train.bootstrap=0"]


# -- data ----------------------------------------------------------------------------------------------
def _dm(*overrides, method="ancra"):
    cfg = load_config(method, list(overrides))
    return ClassificationDataModule(cfg.data, cfg.train, cfg.method_params())


def test_digits_splits_batches_and_selection():
    dm = _dm()
    tr, va, te = (dm.dataset(s) for s in ("train", "val", "test"))
    assert len(tr) + len(va) + len(te) == 1797 and len(te) == 359
    assert abs(len(va) / (len(tr) + len(va)) - 0.15) < 0.01
    for ds in (tr, va, te):  # stratified: every class in every split
        assert set(ds.labels.tolist()) == set(range(10))
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (64, 3, 16, 16) and batch["image"].dtype == torch.float32
    assert 0 <= batch["image"].min() and batch["image"].max() <= 1
    assert batch["label"].dtype == torch.long and batch["index"].dtype == torch.long
    assert dm.selection_split == "val" and dm.skipped == {} and dm.num_classes == 10
    again = _dm("train.seed=5")  # the split does not move with the training seed
    assert torch.equal(again.dataset("test").images, te.images)
    with pytest.raises(ConfigError, match="val_fraction"):
        _ = _dm("data.val_fraction=0").selection_split
    assert _dm("data.val_fraction=0", "train.select_on=last").selection_split is None
    assert _dm("train.select_on=test").selection_split == "test"
    with pytest.raises(DataError, match="unknown split"):
        dm.dataset("holdout")
    with pytest.raises(ConfigError, match="data.dataset"):
        _dm("data.dataset=mnist")


def _write_cifar(root, name, n_train=20, n_test=6):
    rng = np.random.default_rng(0)
    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        files = {f"data_batch_{i}": n_train for i in range(1, 6)} | {"test_batch": n_test}
        key, classes = b"labels", 10
    else:
        folder = root / "cifar-100-python"
        files = {"train": n_train, "test": n_test}
        key, classes = b"fine_labels", 100
    folder.mkdir(parents=True)
    for fname, n in files.items():
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in np.arange(n) % classes]
        with open(folder / fname, "wb") as f:
            pickle.dump({b"batch_label": b"fake", b"data": data, key: labels}, f, protocol=2)
    return folder


def test_cifar_pickle_folders_load(tmp_path):
    _write_cifar(tmp_path, "cifar10")
    parts = load_cifar(tmp_path, "cifar10")
    assert parts["train"][0].shape == (100, 3, 32, 32) and parts["test"][0].shape == (6, 3, 32, 32)
    assert parts["train"][0].dtype == np.uint8 and parts["train"][1].tolist()[:3] == [0, 1, 2]
    dm = _dm(f"data.root={tmp_path}", "data.dataset=cifar10", "data.image_size=32", "data.batch_size=8",
             "data.val_fraction=0.1", method="ancra/cifar10")
    tr, va, te = dm.dataset("train"), dm.dataset("val"), dm.dataset("test")
    assert (len(tr), len(va), len(te)) == (90, 10, 6) and tr.crop_pad == 4 and tr.hflip and not va.hflip
    sample = tr[0]
    assert sample["image"].shape == (3, 32, 32) and 0 <= sample["image"].min() <= sample["image"].max() <= 1
    raw = torch.from_numpy(parts["test"][0][0]).float() / 255
    assert torch.equal(te[0]["image"], raw)  # no augmentation outside training
    (tmp_path / "c100").mkdir()
    _write_cifar(tmp_path / "c100", "cifar100")
    p100 = load_cifar(tmp_path / "c100" / "cifar-100-python", "cifar100")  # the folder itself works too
    assert p100["train"][0].shape == (20, 3, 32, 32) and p100["train"][1].max() == 19


def test_cifar_errors_are_one_line_and_never_download(tmp_path):
    with pytest.raises(DataError, match="cifar-10-batches-py.*cifar-10-python.tar.gz"):
        load_cifar(tmp_path, "cifar10")
    with pytest.raises(DataError, match="data.root"):
        load_cifar(None, "cifar100")
    folder = _write_cifar(tmp_path, "cifar10")
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match="missing data_batch_3"):
        load_cifar(tmp_path, "cifar10")


def test_cifar_reader_refuses_code_in_pickles(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    folder = _write_cifar(tmp_path, "cifar10")
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": [0]}, f, protocol=2)
    with pytest.raises(DataError, match="refusing to load global .*print"):
        load_cifar(tmp_path, "cifar10")


# -- configs --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ancra", "ancra/cifar10", "ancra/cifar100", "ancra/cifar10_wrn",
                                  "adversarial_training", "adversarial_training/trades",
                                  "adversarial_training/mart", "adversarial_training/cifar10"])
def test_shipped_configs_validate(name):
    cfg = load_config(name)
    p = cfg.method_params()
    assert cfg.train.monitor == "robust_acc" and cfg.data.dataset in ("digits", "cifar10", "cifar100")
    if "cifar" in name:
        assert (cfg.train.lr, cfg.train.weight_decay, cfg.data.batch_size, cfg.train.max_epochs) == (0.01, 2e-4, 128, 120)
        assert cfg.train.scheduler == "multistep" and cfg.train.milestones == [75, 90, 100]
        assert abs(p.eps - 8 / 255) < 1e-12 and p.alpha == 0.007
    if name.startswith("ancra"):
        assert (p.beta, p.zeta, p.anc_alpha, p.lambda_cr) == (6.0, 3.0, 1.0, 2.0) and p.ancra


def test_milestones_make_a_multistep_schedule():
    from visec.methods.ancra import AncraMethod, AncraParams

    params = AncraParams(arch_kwargs={"width": 4})
    module = AncraMethod.build(params, TrainConfig(optimizer="sgd", lr=0.1, scheduler="multistep",
                                                   milestones=[2, 4], max_epochs=6))
    setup = module.configure_optimizers()
    sched = setup["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(6):
        lrs.append(setup["optimizer"].param_groups[0]["lr"])
        setup["optimizer"].step()
        sched.step()
    assert np.allclose(lrs, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


# -- engine / CLI ------------------------------------------------------------------------------------------
def test_adversarial_training_beats_standard_training_under_pgd(tmp_path):
    """The issue's check: a tiny adversarially trained model is more robust under PGD on digits."""
    common = [f"output_dir={tmp_path}", *FAST, "train.max_epochs=4", "model.test_attacks=[pgd20]",
              "model.steps=5", "model.eval_steps=5"]
    results = {}
    for name, extra in (("standard", ["model.procedure=standard", "train.monitor=clean_acc"]),
                        ("pgd_at", ["model.procedure=pgd_at"])):
        engine = Engine(load_config("adversarial_training", [*common, f"name={name}", *extra]))
        engine.fit()
        results[name] = engine.test().metrics["robust"]
    std, at = results["standard"], results["pgd_at"]
    assert std["clean_acc"]["value"] > 0.85 and at["clean_acc"]["value"] > 0.6, (std, at)
    assert at["pgd20_acc"]["value"] > std["pgd20_acc"]["value"] + 0.3, (std, at)
    lo, hi = at["pgd20_acc"]["ci"]
    assert lo <= at["pgd20_acc"]["value"] <= hi and at["worst_case_acc"]["value"] <= at["pgd20_acc"]["value"]


def test_visec_train_ancra_round_trip_writes_a_card(tmp_path):
    from visec.cli import main

    code = main(["train", "ancra", f"output_dir={tmp_path}", "name=cli", "train.max_epochs=2",
                 "train.limit_train_batches=3", "model.steps=2", "model.eval_steps=2",
                 "model.test_attacks=[fgsm,pgd20_softmask]", *FAST])
    assert code in (0, None)
    run = tmp_path / "cli"
    for f in ("best.safetensors", "best.json", "last.ckpt", "config.yaml"):
        assert (run / f).is_file(), f
    side = json.loads((run / "best.json").read_text())
    assert "val/robust_acc" in side["metrics"] and side["selection"] == "val"
    cards = sorted((run / "cards").glob("*.card.json"))
    card = ResultCard.load(cards[0])
    assert card.method == "trades+ancra" and card.test_data == "digits:test" and card.selection == "val"
    robust = card.metrics["robust"]
    assert {"clean_acc", "fgsm_acc", "pgd20_softmask_acc", "worst_case_acc"} <= set(robust) and robust["n"] == 359
    assert robust["worst_case_acc"]["value"] <= min(robust["fgsm_acc"]["value"], robust["clean_acc"]["value"])
    scores = (run / "cards").glob("*.scores.csv")
    assert next(scores).read_text().startswith("index,label,clean_correct,fgsm_success")
    assert isinstance(robust["gradient_masking"], bool)
    # the checkpoint holds the pure RA network (final FC and no attack views)
    from visec.checkpoint import load_state_dict_file

    state = load_state_dict_file(run / "best.safetensors")
    assert "fc.weight" in state and not any(k.startswith(("net.", "train_attack")) for k in state)


def test_bench_job_writes_cards_and_a_report(tmp_path):
    from visec.apps.bench_ancra import ancra_bench

    paths = ancra_bench(tmp_path, overrides=["train.max_epochs=1", "train.limit_train_batches=2", "model.steps=2",
                                             "model.eval_steps=2", "model.test_attacks=[pgd20,pgd20_softmask]",
                                             *FAST], models=["standard", "trades_ancra"])
    assert len(paths) == 2 and all(p.is_file() for p in paths)
    methods = [ResultCard.load(p).method for p in paths]
    assert methods == ["standard", "trades+ancra"]
    html = (tmp_path / "report.html").read_text()
    for text in ("Clean and robust accuracy", "TRADES+ANCRA", "standard", "Adversarial examples and perturbations",
                 "data:image/png;base64"):
        assert text in html, text
