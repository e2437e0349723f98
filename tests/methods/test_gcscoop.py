"""GCSCoOp's prompt learners on a frozen CLIP: the prompt layout, what trains and what stays frozen,
CoCoOp's per-image context, KgCoOp's regulariser, zero-shot CLIP, checkpoints across class names,
and the tiny end-to-end run where CoOp beats zero-shot CLIP on the base classes."""

from __future__ import annotations

import pytest
import torch

from visec.config import load_config
from visec.engine.engine import build_module
from visec.errors import CheckpointError, ConfigError
from visec.methods.gcscoop import PromptCLIP, load_clip, tiny_clip

TINY = dict(embed_dim=16, vision_width=8, text_width=16, text_layers=1, heads=2, context_length=16)


def _net(learner="coop", names=("circle", "star"), **kw) -> PromptCLIP:
    torch.manual_seed(0)
    return PromptCLIP(tiny_clip(**TINY), list(names), learner=learner, **kw)


def test_prompt_layout_sos_context_class_tokens_eos():
    net = _net(names=("circle", "hot air balloon"))
    tok = net.tokenizer
    sos, eos = tok.sot_token_id, tok.eot_token_id
    ids = net.token_ids
    name = tok.encode("hot air balloon")
    dot = tok.encode(".")
    row = ids[1].tolist()
    assert row[0] == sos and row[5:5 + len(name)] == name and row[5 + len(name):5 + len(name) + len(dot)] == dot
    eos_at = 5 + len(name) + len(dot)
    assert row[eos_at] == eos and int(ids[1].argmax()) == eos_at and set(row[eos_at + 1:]) == {0}
    prompts = net.prompts()
    emb = net.clip.token_embedding.weight
    assert prompts.shape == (2, TINY["context_length"], TINY["text_width"])
    torch.testing.assert_close(prompts[1, 0], emb[sos])  # SOS
    torch.testing.assert_close(prompts[:, 1:5], net.ctx.unsqueeze(0).expand(2, -1, -1))  # shared context
    torch.testing.assert_close(prompts[1, 5:5 + len(name)], emb[name])  # the class name's own tokens
    # the context starts as the embeddings of "a photo of a", so the first prompt equals the hand-crafted one
    torch.testing.assert_close(net.ctx, emb[tok.encode("a photo of a")])
    torch.testing.assert_close(net.text_features(), net.handcrafted_features(), atol=1e-6, rtol=1e-5)


def test_only_the_context_receives_gradient():
    net = _net().train()
    x = torch.rand(3, 3, 32, 32)
    torch.nn.functional.cross_entropy(net(x), torch.tensor([0, 1, 0])).backward()
    assert net.ctx.grad is not None and net.ctx.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.clip.parameters())
    assert [n for n, p in net.named_parameters() if p.requires_grad] == ["ctx"]
    assert not net.clip.training  # frozen CLIP stays in eval mode


def test_cocoop_context_depends_on_the_image_and_its_meta_net_trains():
    net = _net("cocoop").train()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        v = net.image_features(x)
        shared = net.clip.logit_scale.exp() * v @ torch.nn.functional.normalize(
            net.encode_prompts(net.prompts()), dim=-1).t()
    logits = net(x)
    assert not torch.allclose(logits, shared)  # C + pi(v), not the shared context
    logits.sum().backward()
    assert all(p.grad is not None for p in net.meta_net.parameters()) and net.ctx.grad is not None


def test_kgcoop_term_is_zero_at_the_handcrafted_prompt_and_pulls_back(tmp_path):
    cfg = load_config("gcscoop", ["model.learner=kgcoop", "model.clip_weights=random", f"model.tiny={TINY}",
                                  "model.classnames=[circle, star, ring]"])
    module = build_module(cfg)
    assert float(module.kg_term().detach()) == pytest.approx(0.0, abs=1e-10)
    with torch.no_grad():
        module.net.ctx.add_(0.5 * torch.randn_like(module.net.ctx))
    term = module.kg_term()
    assert float(term.detach()) > 1e-3
    term.backward()
    direction = -module.net.ctx.grad
    with torch.no_grad():
        module.net.ctx.add_(1e-2 * direction / direction.norm())
    assert float(module.kg_term().detach()) < float(term.detach())  # a step down its gradient moves back towards CLIP's prompt
    batch = {"image": torch.rand(4, 3, 32, 32), "label": torch.tensor([0, 1, 2, 0]), "index": torch.arange(4)}
    losses = module.losses(batch)
    assert float(losses["kg"].detach()) == pytest.approx(8.0 * float(module.kg_term().detach()), rel=1e-5)


def test_zero_shot_has_nothing_to_train():
    cfg = load_config("gcscoop", ["model.learner=zeroshot", "model.clip_weights=random", f"model.tiny={TINY}"])
    module = build_module(cfg)
    assert not [p for p in module.parameters() if p.requires_grad]
    with pytest.raises(ConfigError, match="nothing to train"):
        module.configure_optimizers()


def test_checkpoint_holds_clip_and_context_only_and_serves_any_class_names():
    net = _net(names=("circle", "star"))
    keys = set(net.state_dict())
    assert "ctx" in keys and not any(k.startswith("token_") for k in keys)
    other = _net(names=("ring", "kite", "arrow"))
    other.load_state_dict(net.state_dict())
    assert other(torch.rand(2, 3, 32, 32)).shape == (2, 3)


def test_clip_weights_are_local_files_only(tmp_path):
    with pytest.raises(ConfigError, match="visec never downloads"):
        load_clip("tiny", None)
    with pytest.raises(CheckpointError, match="no file"):
        load_clip("tiny", tmp_path / "missing.safetensors")
    with pytest.raises(ConfigError, match="ViT-B-16"):
        load_clip("ViT-B-61", "random")
    with pytest.raises(ConfigError, match="n_ctx"):
        PromptCLIP(tiny_clip(**TINY), ["a"], ctx_init="a photo of a", n_ctx=16)


@pytest.mark.slow
def test_tiny_run_coop_beats_zero_shot_on_base_and_clip_stays_bit_identical(gcscoop_e2e, one_torch_thread):
    """The shared tiny run (CoOp + GCSAM on the embedded captions with a test-sized pre-trained CLIP):
    base accuracy above zero-shot CLIP's, the frozen CLIP unchanged to the bit, GCSAM's statistics logged."""
    from visec.checkpoint import load_state_dict_file
    from visec.methods.gcscoop.torch_model import load_clip as load

    engine, fit, zero_shot = gcscoop_e2e
    card = engine.test(split="test", protocol="base")
    new = engine.test(split="test_new", protocol="new")
    assert card.method == "gcscoop/coop+gcsam" and new.metrics["classify"]["classes"] == 12
    base_acc = card.metrics["classify"]["acc"]["value"]
    assert base_acc > zero_shot["base"] + 0.05, (base_acc, zero_shot)
    trained = load_state_dict_file(fit["last"], "checkpoint")
    clip = load("tiny", engine.cfg.model["clip_weights"], engine.cfg.model["tiny"])
    for k, v in clip.state_dict().items():
        assert torch.equal(trained[f"clip.{k}"], v), k
    log = engine.training_log()
    assert {"train/sam_cos", "train/sam_erm", "train/sam_proj", "train/sam_sam"} <= set(log.columns)


def test_sam_second_pass_reuses_the_batch_image_features():
    """GCSAM runs the loss twice per step; the frozen encoder's features of the batch are computed once
    (same logits as encoding again), and a new batch, or one changed in place, is encoded afresh."""
    cfg = load_config("gcscoop", ["model.clip_weights=random", f"model.tiny={TINY}"])
    assert cfg.train.sam == "gcsam"
    module = build_module(cfg).train()
    calls = []
    encode = module.net.image_features
    module.net.image_features = lambda x: (calls.append(x), encode(x))[1]
    batch = {"image": torch.rand(4, 3, 32, 32), "label": torch.tensor([0, 1, 2, 3]), "index": torch.arange(4)}
    opt = module.configure_optimizers()["optimizer"]

    def closure():
        opt.zero_grad()
        loss = module.losses(batch)["loss"]
        loss.backward()
        return loss

    opt.step(closure)
    assert len(calls) == 1 and len(opt.last_stats["cos"]) == 1
    with torch.no_grad():
        direct = torch.nn.functional.cross_entropy(module.net.logits_from_features(encode(batch["image"])),
                                                   batch["label"])
    assert torch.equal(module.losses(batch)["ce"].detach(), direct) and len(calls) == 1
    other = dict(batch, image=batch["image"].clone())
    module.losses(other)
    other["image"].mul_(0.5)
    module.losses(other)
    assert len(calls) == 3


def test_loading_other_weights_refreshes_the_handcrafted_text_features():
    """Zero-shot / KgCoOp cache the hand-crafted prompts' features; a load must not leave them stale."""
    net, other = _net("zeroshot"), _net("zeroshot")
    with torch.no_grad():
        for p in other.clip.parameters():
            p.add_(0.05 * torch.randn_like(p))
    before = net.handcrafted_features().clone()
    net.load_state_dict(other.state_dict())
    torch.testing.assert_close(net.handcrafted_features(), other.handcrafted_features())
    assert not torch.allclose(net.handcrafted_features(), before)


def test_class_names_too_long_for_the_context_are_refused():
    with pytest.raises(ConfigError, match="too long"):
        _net(names=("circle", " ".join(["word"] * 20)))
