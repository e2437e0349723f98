"""One threat model: one budget parser and one default budget (visec.config), fractions accepted in
CLI options and config overrides, card protocols named from the parsed budget, ``visec attack``
defaulting to the budget a run was trained at, and ANCRA's test attacks built by the shared builder."""

from __future__ import annotations

import inspect

import pytest
import torch

from visec.cli import main
from visec.config import (DEFAULT_EPS, TrainConfig, budget_label, load_config, parse_budget,
                          parse_overrides)
from visec.errors import ConfigError


# -- the one parser ------------------------------------------------------------------------------
@pytest.mark.parametrize("text,value", [("8/255", 8 / 255), (" 2/255 ", 2 / 255), ("0.0314", 0.0314),
                                        (0.1, 0.1), (0, 0.0), ("0", 0.0), (1, 1.0)])
def test_parse_budget_takes_numbers_and_fractions(text, value):
    assert parse_budget(text) == value and isinstance(parse_budget(text), float)


@pytest.mark.parametrize("text,message", [("x/2", "a number or a fraction like 8/255"),
                                          ("1/0", "a number or a fraction"), ("", "a number or a fraction"),
                                          (True, "a number or a fraction"), ("-1/255", "finite and >= 0"),
                                          (float("inf"), "finite and >= 0"), (float("nan"), "finite and >= 0")])
def test_parse_budget_mistakes_are_one_line_config_errors(text, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_budget(text, "eps")
    assert str(info.value).startswith("eps ") and "\n" not in str(info.value)


def test_one_default_budget_everywhere():
    from visec.attacks import PGD, standard_suite
    from visec.attacks.autoattack import APGD, AutoAttack
    from visec.attacks.base import Attack
    from visec.attacks.blackbox import Square
    from visec.attacks.mifgsm import TransferFGSM
    from visec.attacks.pgd import FGSM
    from visec.methods.ancra.lightning_model import AdversarialTrainingParams, AncraParams

    assert DEFAULT_EPS == 8 / 255
    for fn in (Attack.__init__, PGD.__init__, FGSM.__init__, APGD.__init__, AutoAttack.__init__,
               Square.__init__, TransferFGSM.__init__, standard_suite):
        assert inspect.signature(fn).parameters["eps"].default is DEFAULT_EPS, fn
    assert AdversarialTrainingParams().eps is DEFAULT_EPS and AncraParams().eps is DEFAULT_EPS


# -- fractions in configs and overrides ----------------------------------------------------------
def test_fraction_override_of_ancra_budget():
    cfg = load_config("ancra", ["model.eps=8/255", "model.alpha=2/255", "model.eval_alpha=1/255"])
    assert cfg.model["eps"] == 8 / 255 and isinstance(cfg.model["eps"], float)
    assert cfg.model["alpha"] == 2 / 255 and cfg.model["eval_alpha"] == 1 / 255
    assert cfg.method_params().eps == 8 / 255
    assert load_config("adversarial_training", ["model.eps=4/255"]).model["eps"] == 4 / 255
    assert load_config("ancra").model["eval_alpha"] is None  # the optional budget stays optional


@pytest.mark.parametrize("name", ["ancra/cifar10", "ancra/cifar100", "ancra/cifar10_wrn", "adversarial_training/cifar10"])
def test_shipped_configs_write_the_cifar_budget_as_a_fraction(name):
    assert load_config(name).model["eps"] == 8 / 255


@pytest.mark.parametrize("item,message", [("model.eps=x/2", "config key 'model.eps'"),
                                          ("model.eps=-1/255", "config key 'model.eps'"),
                                          ("model.alpha=0/255", "config key 'model.alpha'")])
def test_bad_budget_override_names_the_key(item, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config("ancra", [item])
    assert "\n" not in str(info.value)


def test_generic_overrides_do_not_turn_fractions_into_numbers():
    assert parse_overrides(["name=8/255"]) == {"name": "8/255"}
    assert load_config("classifier", ["name=1/2"]).name == "1/2"


# -- card names from the parsed budget -----------------------------------------------------------
def test_budget_label_names_one_budget_once():
    assert budget_label("8/255") == budget_label(0.03137254901960784) == budget_label(8 / 255) == "8-255"
    assert budget_label(0.031372) == "8-255"  # within 1e-4 (relative) of 8/255: snapped
    assert budget_label("0.0314") == "0.0314"  # 8.007/255: not snapped
    assert budget_label(0.1) == "0.1" and budget_label("4/255") == "4-255" and budget_label(0) == "0"
    assert budget_label(1) == "1" and budget_label(0.5) == "0.5"  # k/255 only for 1 <= k < 255


# -- visec attack: CLI parsing and the default budget --------------------------------------------
@pytest.mark.parametrize("args,message", [(["--eps", "x/2"], "eps must be a number or a fraction"),
                                          (["--alpha", "two"], "alpha (the step size) must be a number or a fraction"),
                                          (["--eps", "8/255", "--alpha", "2/255"], "is not a visec run folder")])
def test_attack_cli_parses_budgets_before_loading_the_run(tmp_path, capsys, args, message):
    assert main(["attack", "--method", "pgd", "--model", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_attack_cli_leaves_the_budget_to_the_run(tmp_path, monkeypatch):
    import visec.apps.attack as attack_app

    seen = {}

    def fake(model, method, **kw):
        seen.update(kw)
        raise ConfigError("stop")

    monkeypatch.setattr(attack_app, "run_attack", fake)
    assert main(["attack", "--method", "pgd", "--model", str(tmp_path)]) == 2
    assert seen["eps"] is None and seen["alpha"] is None


def test_run_budget_is_the_trained_eps_else_the_default():
    from visec.apps.attack import run_budget

    assert run_budget(load_config("ancra", ["model.eps=4/255"])) == 4 / 255
    assert run_budget(load_config("adversarial_training")) == 0.1  # the digits config's budget
    assert run_budget(load_config("classifier")) == DEFAULT_EPS  # no trained budget
    assert run_budget(load_config("ancra"), "8/255") == 8 / 255  # an explicit budget wins


@pytest.fixture(scope="module")
def ancra_run(tmp_path_factory):
    from visec.engine import Engine

    tmp = tmp_path_factory.mktemp("threat_model")
    engine = Engine(load_config("ancra", [f"output_dir={tmp}", "name=a", "train.max_epochs=1",
                                          "train.limit_train_batches=1", "model.steps=1", "model.eval_steps=1",
                                          "model.eps=8/255", "model.arch_kwargs={width: 4}", "train.bootstrap=0",
                                          "model.test_attacks=[fgsm]"]))
    engine.fit()
    return engine.run_dir


def test_attack_defaults_to_the_trained_budget_and_names_it_once(ancra_run, tmp_path):
    from visec.apps.attack import run_attack

    _, card, _ = run_attack(ancra_run, "fgsm", max_samples=4, out=tmp_path / "default")
    assert card.protocol == "attack-fgsm-Linf-8-255"
    assert card.config["attacks"]["fgsm"]["eps"] == 8 / 255
    _, card2, _ = run_attack(ancra_run, "fgsm", max_samples=4, eps=0.03137254901960784, out=tmp_path / "float")
    assert card2.protocol == card.protocol
    _, card3, _ = run_attack(ancra_run, "fgsm", max_samples=4, eps="4/255", out=tmp_path / "other")
    assert card3.protocol == "attack-fgsm-Linf-4-255" and card3.config["attacks"]["fgsm"]["eps"] == 4 / 255


# -- ANCRA's test attacks come from the shared builder --------------------------------------------
def _ancra_module(**kw):
    from visec.methods.ancra.lightning_model import AncraMethod, AncraParams

    torch.manual_seed(0)
    params = AncraParams(arch="small_ra_cnn", arch_kwargs={"width": 4}, num_classes=3, **kw)
    return AncraMethod.build(params, TrainConfig(seed=5))


def test_ancra_suite_is_built_by_build_attack(monkeypatch):
    import visec.attacks as attacks
    import visec.attacks.suite as suite_mod
    from visec.methods.ancra.lightning_model import TEST_ATTACKS

    original, calls, built = suite_mod.build_attack, [], []

    def recording(name, model, **params):
        calls.append((name, params))
        built.append(original(name, model, **params))
        return built[-1]

    monkeypatch.setattr(suite_mod, "build_attack", recording)
    monkeypatch.setattr(attacks, "build_attack", recording)
    module = _ancra_module(test_attacks=list(TEST_ATTACKS), eval_alpha=0.01)
    out = module.evaluation_attacks()
    assert list(out) == list(TEST_ATTACKS)
    assert all(any(a is b for b in built) for a in out.values())  # every attack came out of build_attack
    assert {name for name, _ in calls} >= {"fgsm", "pgd", "cw_linf", "transfer", "autoattack", "apgd_ce", "apgd_dlr"}
    assert all(p["eps"] == module.params.eps and p["seed"] == 105 for _, p in calls)


def test_ancra_suite_keeps_its_attacks_parameters_and_seeds():
    from visec.attacks import standard_suite
    from visec.methods.ancra.lightning_model import TEST_ATTACKS

    module = _ancra_module(test_attacks=list(TEST_ATTACKS), eval_alpha=0.01)
    out, eps, seed = module.evaluation_attacks(), module.params.eps, 105
    shared = standard_suite(module.net, eps=eps, steps=20, seed=seed, alpha=0.01)
    for name, member in (("fgsm", "fgsm"), ("pgd20", "pgd20"), ("cw20", "cw"), ("apgd_ce", "apgd_ce"),
                         ("apgd_dlr", "apgd_dlr")):
        assert out[name].config() == shared[member].config(), name
    cfg = {k: a.config() for k, a in out.items()}
    assert all(c["eps"] == eps and c["seed"] == seed and c["norm"] == "Linf" for c in cfg.values())
    assert cfg["fgsm"]["class"] == "FGSM" and cfg["fgsm"]["random_start"] == "none"
    for name, cls, steps in (("pgd20", "PGD", 20), ("pgd40", "PGD", 40), ("cw20", "CWLinf", 20)):
        assert (cfg[name]["class"], cfg[name]["steps"], cfg[name]["alpha"], cfg[name]["random_start"]) == \
            (cls, steps, 0.01, "uniform"), name
    assert cfg["cw20"]["loss"] == "margin_loss"
    assert (cfg["apgd_ce"]["steps"], cfg["apgd_dlr"]["steps"]) == (100, 100)
    assert cfg["autoattack"]["version"] == "standard"
    inner = out["pgd20_softmask"].inner.config()
    assert (inner["class"], inner["steps"], inner["alpha"], inner["seed"]) == ("PGD", 20, 0.01, seed)
    assert type(out["pgd20_softmask"].inner.model).__name__ == "SoftMaskSurrogate"
    default_step = _ancra_module(test_attacks=["pgd20"]).evaluation_attacks()["pgd20"]
    assert default_step.alpha == module.params.alpha  # eval_alpha unset: the training step
