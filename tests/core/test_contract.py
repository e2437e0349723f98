"""The method contract, checked the same way for every registered method (in the spirit of diffusers'
shared pipeline mixin): the class contract, input range and shape, a finite loss, one fit step that
moves the weights, card names, a safetensors round trip with identical outputs, a config round trip,
and a tiny end-to-end fit + test through the engine (marked slow).

A new method is covered by registering it and adding its seconds-sized overrides to ``TINY``;
``test_every_registered_method_has_a_tiny_setting`` fails until it does.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from visec.checkpoint import load_into, load_state_dict_file, save_checkpoint
from visec.config import load_config
from visec.engine.engine import build_module, card_name
from visec.engine.method import Method, method_of
from visec.engine.module import BinaryDetector, MethodModule
from visec.registry import METHODS

from shared_runs import E2E_RUNS

ANCRA_TINY = ("model.arch=small_ra_cnn", "model.arch_kwargs={width: 4}", "model.steps=1", "model.eval_steps=1",
              "data.image_size=16", "model.test_attacks=[fgsm]")
# seconds-sized settings of each method (random weights, tiny widths)
TINY: dict[str, tuple[str, ...]] = {
    "classifier": ("model.backbone=tiny_cnn",),
    "xception": ("model.backbone=tiny_cnn",),
    "acmf": ("model.backbone=tiny_cnn", "model.source_pool=8", "model.source_batch=4"),
    "deepfidelity": ("model.depths=[1,1,1,1]", "model.dims=[16,32,64,128]", "model.head_dim=16",
                     "model.patch_sizes=[2,2,2,2]"),
    "hfc_mffd": ("model.patch_size=16", "model.rgb_backbone=tiny_cnn", "model.rgb_weights=null",
                 "model.dct_backbone=tiny_cnn", "model.d_model=16", "model.nhead=2", "model.ffn_dim=32",
                 "model.patch_hidden=[16]", "model.image_hidden=[16]"),
    "fedforgery": ("model.backbone=tiny_cnn", "model.weights=null", "model.width=8", "model.num_codes=16"),
    "adversarial_training": ANCRA_TINY,
    "ancra": ANCRA_TINY,
    "mmnet": ("model.arch=tiny", "model.width=4", "model.d_model=16", "model.ffn=32", "model.recovery_width=8",
              "model.identity_metric=false"),
    "sbka": ("model.teacher_weights=random", "model.seen=4", "model.timm={depths: [1,1,1,1], dims: [8,16,32,64]}"),
    "adv_diffusion": ("model.ae_widths=[8,16]", "model.unet_widths=[16,32]", "model.context_dim=8",
                      "model.norm_groups=4", "model.attention_head_dim=4", "model.ae_epochs=1", "model.faces=16"),
    "gcscoop": ("model.clip_weights=random", "model.tiny={embed_dim: 16, vision_width: 8, text_width: 16, "
                "text_layers: 1, heads: 2, context_length: 16}"),
}
METHOD_NAMES = METHODS.names()
ROOT = Path(__file__).resolve().parents[2]


def tiny_config(name: str, *extra: str):
    return load_config(name, [*TINY[name], *extra])


def batch_for(module: MethodModule, size: int = 32, n: int = 4) -> dict[str, torch.Tensor]:
    """A seeded batch in the shape the method's data module yields (images in [0, 1])."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, size, size, generator=g)
    if isinstance(module, BinaryDetector):
        label = torch.tensor([0.0, 1.0] * (n // 2))
        return {"image": x, "label": label, "family": torch.where(label > 0, 0, -1), "index": torch.arange(n)}
    from visec.methods.mmnet import SequenceModule

    if isinstance(module, SequenceModule):  # sequential detectors: edit sequences and originals
        seq = torch.tensor([[0, 0, 0, 0, 0], [1, 2, 0, 0, 0], [3, 1, 4, 5, 2], [2, 0, 0, 0, 0]] * (n // 4 + 1))[:n]
        return {"image": x, "original": x.flip(-1), "has_original": torch.ones(n, dtype=torch.bool),
                "sequence": seq, "label": (seq > 0).any(1).float(), "index": torch.arange(n)}
    return {"image": x, "label": torch.arange(n) % 2, "index": torch.arange(n)}


def image_size(cfg) -> int:
    return min(cfg.data.image_size, 32)


def test_every_registered_method_has_a_tiny_setting():
    assert set(METHOD_NAMES) == set(TINY), "add the new method's tiny overrides to TINY"


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_class_contract(name):
    method = method_of(name)
    assert issubclass(method, Method) and method.name == name
    assert issubclass(method.Module, MethodModule) and method.family
    assert method.readme().is_file(), f"{name}: no README.md in its folder"
    assert method.default_config().is_file(), f"{name}: no shipped config {method.default_config()}"
    assert load_config(name).method == name
    if method.bench is not None:
        from visec.registry import BENCHES

        assert method.bench in BENCHES, f"{name}: bench job '{method.bench}' is not registered"
    readme = method.readme().read_text()
    assert "## Core mechanisms" in readme, f"{name}: the README names no core mechanisms and their tests"
    section = readme.split("## Core mechanisms", 1)[1].split("\n## ", 1)[0]
    named = re.findall(r"`(tests/[\w/]+\.py)(?:::(test_\w+))?`", section)
    assert named, f"{name}: the core-mechanisms section names no test"
    for path, test in named:  # every guard it names exists
        file = ROOT / path
        assert file.is_file(), f"{name} README: no test file {path}"
        assert not test or re.search(rf"^def {test}\(", file.read_text(), re.M), f"{name} README: no {path}::{test}"


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_input_range_shape_loss_and_one_fit_step(name, one_torch_thread):
    torch.manual_seed(0)
    cfg = tiny_config(name)
    module = build_module(cfg)
    assert isinstance(module.net, nn.Module) and module.params == cfg.method_params()
    size = image_size(cfg)
    batch = batch_for(module, size)
    module.eval()
    with torch.no_grad():
        lo, hi = module(torch.zeros(2, 3, size, size)), module(torch.ones(2, 3, size, size))
    assert lo.shape[0] == 2 and lo.shape == hi.shape and torch.isfinite(lo).all() and torch.isfinite(hi).all()
    if isinstance(module, BinaryDetector):
        assert lo.shape == (2,), f"{name}: a detector gives one logit per image"

    module.train()
    before = {k: v.detach().clone() for k, v in module.net.named_parameters()}
    losses = module.losses(batch)
    assert set(losses) >= {"loss"} and losses["loss"].ndim == 0 and torch.isfinite(losses["loss"])
    opt = module.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt

    def closure():  # what Lightning passes: SAM-style optimisers (train.sam) call it twice
        opt.zero_grad()
        loss = module.losses(batch)["loss"]
        loss.backward()
        return loss

    opt.step(closure)
    moved = [k for k, v in module.net.named_parameters() if not torch.equal(v, before[k])]
    assert moved, f"{name}: one optimiser step on its loss moved no weight"


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_a_detector_can_be_attacked_through_its_attack_logit(name, one_torch_thread):
    """Every forgery detector gives attacked tests a score with a finite, non-zero input gradient
    (one per image), or none is silently skipped: a detector that cannot be differentiated must say
    how it is reached (``attack_path``) and still give a gradient there."""
    torch.manual_seed(0)
    cfg = tiny_config(name)
    module = build_module(cfg).eval()
    if not isinstance(module, BinaryDetector):
        return
    assert tuple(module.input_range) == (0.0, 1.0)
    x = torch.rand(3, 3, image_size(cfg), image_size(cfg), generator=torch.Generator().manual_seed(1))
    x.requires_grad_(True)
    score = module.attack_view()(x)
    assert score.shape == (3,)
    (grad,) = torch.autograd.grad(score.sum(), x)
    assert torch.isfinite(grad).all() and (grad.flatten(1).abs().sum(1) > 0).all(), name
    assert module.attack_offset(0.5) == pytest.approx(0.0, abs=1e-9)  # 0.5 sits at logit 0


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_card_name_is_the_methods_own(name):
    cfg = tiny_config(name)
    method = method_of(name)
    rule = f"+{cfg.train.sam}" if cfg.train.sam != "none" else ""  # the engine names the optimiser rule
    assert card_name(cfg) == method.card_name(cfg.method_params()) + rule
    assert not hasattr(build_module(cfg), "card_method")  # not an attribute patched on a module
    default = load_config(name)
    assert method.card_name(default.method_params()).split("/")[0].split("+")[0] in (name, default.model.get(
        "procedure"))


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_safetensors_round_trip_gives_identical_outputs(name, tmp_path, one_torch_thread):
    torch.manual_seed(0)
    cfg = tiny_config(name)
    a = build_module(cfg).eval()
    with torch.no_grad():  # perturb every saved tensor so a default-initialised twin cannot pass
        for t in a.net.state_dict(keep_vars=True).values():  # (non-persistent buffers are derived, not saved)
            if t.is_floating_point():
                t.add_(0.01 * torch.randn_like(t))
    path = save_checkpoint(a.net, tmp_path / "w.safetensors", {"config": cfg.to_dict()})
    torch.manual_seed(1)
    b = build_module(cfg).eval()
    load_into(b.net, load_state_dict_file(path, "checkpoint"), source=str(path))
    x = torch.rand(3, 3, image_size(cfg), image_size(cfg), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_config_round_trip(name, tmp_path):
    cfg = tiny_config(name, f"output_dir={tmp_path}")
    again = load_config(cfg.save(tmp_path / "config.yaml"))
    assert again == cfg and again.method_params() == cfg.method_params()


# -- a tiny fit + test through the engine -----------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_or_synth(tmp_path_factory):
    from visec.data.synthetic import make_synth_dataset

    return make_synth_dataset(tmp_path_factory.mktemp("contract_synth"), seed=0, identities=40, frames=1,
                              size=32).manifest


def _tiny_data(name: str, request) -> list[str]:
    """Each family's embedded data, as the contract's tiny engine run reads it."""
    family = method_of(name).family
    if family == "adversarial robustness":
        return ["data.dataset=digits", "train.limit_train_batches=2", "train.monitor=robust_acc"]
    if family == "prompt learning":
        return [f"data.root={request.getfixturevalue('captions_small')}", "train.limit_train_batches=2"]
    if family == "sketch-based retrieval":
        return [f"data.root={request.getfixturevalue('sketch_small')}", "model.seen=40", "data.image_size=32",
                "train.limit_train_batches=2"]
    if family == "sequential deepfake detection":
        return [f"data.manifest={request.getfixturevalue('seq_small').manifests['facial_components']}",
                "data.image_size=32", "train.limit_train_batches=2"]
    return [f"data.manifest={request.getfixturevalue('digits_or_synth')}", "data.image_size=32",
            "train.limit_train_batches=2"]


@pytest.mark.slow
@pytest.mark.parametrize("name", METHOD_NAMES)
def test_tiny_engine_fit_and_test(name, request, tmp_path, one_torch_thread):
    """One epoch on a sliver of data, the checkpoint back, one card: every method goes through the
    same engine path (what the copied per-method end-to-end blocks used to check one by one)."""
    from visec.cards import ResultCard
    from visec.engine import Engine

    cfg = tiny_config(name, *_tiny_data(name, request), f"output_dir={tmp_path}", "name=run", "train.max_epochs=1",
                      "train.bootstrap=0", "data.batch_size=16")
    engine = Engine(cfg)
    fit = engine.fit()
    assert fit["best"].is_file() and fit["best_epoch"] == 0
    card = engine.test()
    assert card.method == card_name(cfg)
    assert ResultCard.load(next((tmp_path / "run" / "cards").glob("*.card.json"))).method == card.method


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(E2E_RUNS))
def test_tiny_run_learns_the_embedded_data(name, e2e_run, one_torch_thread):
    """Each method's shared tiny run (tests/conftest.py E2E_RUNS) learns its embedded data."""
    engine, fit = e2e_run(name)
    _, _, card_method, min_auc = E2E_RUNS[name]
    card = engine.test()
    assert card.method == card_method and fit["best_epoch"] is not None
    assert card.metrics["frame"]["auc"]["value"] > min_auc, card.metrics["frame"]["auc"]


def test_registration_checks_the_contract():
    """A method class without its network builder, or a test-time-adapting module without its
    adapted scores, is refused when registered (one line), and takes no registry slot."""
    from visec.engine.module import BinaryDetector
    from visec.errors import RegistryError
    from visec.methods.classifier import ClassifierParams

    class NoNet(Method):
        family = "forgery detection"
        Params = ClassifierParams
        Module = BinaryDetector

    class Adapting(BinaryDetector):
        def adapts_at_test(self) -> bool:
            return True

    class NoAdaptedScores(NoNet):
        Module = Adapting

        @classmethod
        def build_net(cls, params):
            return nn.Linear(1, 1)

    with pytest.raises(RegistryError, match="does not define build_net"):
        METHODS.register("contract_probe")(NoNet)
    with pytest.raises(RegistryError, match="defines no adapted_probabilities"):
        METHODS.register("contract_probe")(NoAdaptedScores)
    assert "contract_probe" not in METHODS
