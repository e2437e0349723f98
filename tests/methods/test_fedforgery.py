"""FedForgery: the residual generator, the codebook, the local loss, the partitions, and the federated
client and aggregation (Flower's own strategies) checked in-process on known inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from visec.config import load_config
from visec.methods.fedforgery import (FedForgeryNet, FedForgeryParams, ResidualGenerator, VectorQuantizer,
                                      local_losses, nearest_codes)

TINY = ("model.backbone=tiny_cnn", "model.weights=null", "model.width=8", "model.num_codes=16",
        "data.image_size=32", "train.bootstrap=0")


def tiny_net(**kw) -> FedForgeryNet:
    torch.manual_seed(0)
    return FedForgeryNet("tiny_cnn", None, width=8, num_codes=16, **kw)


def test_shapes_and_the_residual_adds_back_to_the_input():
    net = tiny_net().eval()
    x = torch.rand(2, 3, 64, 64)
    p = net.parts(x)
    assert p["z_e"].shape == (2, 8, 16, 16) and p["recon"].shape == (2, 3, 64, 64)
    assert p["logit"].shape == (2, 1) and net(x).shape == (2, 1)
    torch.testing.assert_close(p["residual"] + p["recon"], p["input"], rtol=0, atol=1e-6)
    assert not torch.allclose(p["residual"], p["input"])  # G(x) is not zero: r is not x
    with pytest.raises(ValueError, match="multiples of 4"):
        net(torch.rand(1, 3, 30, 30))


def test_every_quantised_vector_is_a_codebook_column_and_argmin_is_right():
    q = VectorQuantizer(2, 2)
    with torch.no_grad():
        q.codebook.copy_(torch.tensor([[0.0, 10.0], [0.0, 10.0]]))  # codes (0, 0) and (10, 10)
    z = torch.tensor([[1.0, 6.0, 4.9], [1.0, 6.0, 4.9]]).view(1, 2, 1, 3)  # near code 0, 1, 0
    z_q, e, index = q(z)
    assert index.flatten().tolist() == [0, 1, 0]
    assert torch.equal(z_q.detach(), e.detach())
    net = tiny_net()
    z_e = net.generator.encoder(torch.rand(2, 3, 16, 16))
    z_q, _, _ = net.generator.quantizer(z_e)
    cols = net.generator.quantizer.codebook.detach().t()
    vecs = z_q.detach().permute(0, 2, 3, 1).reshape(-1, 8)
    assert all((cols == v).all(1).any() for v in vecs)
    assert torch.equal(nearest_codes(z_e.detach(), cols.t()).flatten(), torch.cdist(vecs, cols).argmin(1))


def test_straight_through_and_which_term_trains_what():
    q = VectorQuantizer(4, 3)
    z_e = torch.randn(2, 3, 2, 2, requires_grad=True)
    z_q, e, _ = q(z_e)
    w = torch.randn_like(z_q)
    g_zq = torch.autograd.grad((z_q * w).sum(), z_e, retain_graph=True)[0]
    torch.testing.assert_close(g_zq, w)  # d loss / d z_e == d loss / d z_q
    assert torch.autograd.grad((z_q * w).sum(), q.codebook, allow_unused=True, retain_graph=True)[0] is None
    p = {"z_e": z_e, "e": e, "recon": torch.zeros(1), "input": torch.zeros(1), "logit": torch.zeros(2, 1)}
    params = FedForgeryParams(vq_weight=1.0, commit_weight=0.0, rec_weight=0.0)
    losses = local_losses(p, torch.zeros(2), params)
    g_enc, g_code = torch.autograd.grad(losses["codebook"], [z_e, q.codebook], allow_unused=True, retain_graph=True)
    assert g_enc is None and g_code.abs().sum() > 0  # the codebook term trains the codebook only
    g_enc, g_code = torch.autograd.grad(losses["commit"], [z_e, q.codebook], allow_unused=True)
    assert g_code is None and g_enc.abs().sum() > 0  # the commitment term trains the encoder only


def test_local_loss_is_the_weighted_sum_of_its_terms():
    net = tiny_net()
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0.0, 1.0, 0.0, 1.0])
    parts = net.parts(x)
    p = FedForgeryParams(rec_weight=2.0, vq_weight=0.5, commit_weight=0.25)
    out = local_losses(parts, y, p)
    expected = out["ce"] + 2.0 * out["rec"] + 0.5 * out["codebook"] + 0.25 * out["commit"]
    torch.testing.assert_close(out["loss"], expected)
    assert all(out[k] > 0 for k in ("ce", "rec", "codebook", "commit"))
    torch.testing.assert_close(out["rec"], ((parts["recon"] - parts["input"]) ** 2).mean())


def test_vae_generator_samples_in_training_and_is_deterministic_in_eval():
    torch.manual_seed(0)
    g = ResidualGenerator(width=8, kind="vae")
    x = torch.rand(2, 3, 16, 16)
    a, b = g(x), g(x)
    assert a["kl"] > 0 and not torch.equal(a["recon"], b["recon"])  # reparameterised sample
    g.eval()
    assert torch.equal(g(x)["recon"], g(x)["recon"])
    net = FedForgeryNet("tiny_cnn", None, width=8, generator="vae")
    out = local_losses(net.parts(x), torch.ones(2), FedForgeryParams(generator="vae", kl_weight=0.5))
    torch.testing.assert_close(out["loss"], out["ce"] + out["rec"] + 0.5 * out["kl"])


# -- partitions ---------------------------------------------------------------------------------------
def _train_df(n_videos: int = 30, frames: int = 2) -> pd.DataFrame:
    rows = []
    for v in range(n_videos):
        fam = ["real", "faceswap", "component", "resynth"][v % 4]
        for f in range(frames):
            rows.append({"video_id": f"v{v}", "label": int(fam != "real"),
                         "manipulation": "original" if fam == "real" else fam, "path": f"{v}_{f}.png"})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("scheme", ["iid", "family", "dirichlet"])
def test_partitions_deal_every_video_to_exactly_one_client(scheme):
    from visec.federated.partition import partition

    df = _train_df()
    parts = partition(df, 3, scheme, seed=1, alpha=5.0)
    together = np.concatenate(parts)
    assert sorted(together.tolist()) == list(range(len(df)))  # every row once
    owners = {v: {k for k, p in enumerate(parts) if v in set(df.iloc[p]["video_id"])} for v in df["video_id"]}
    assert all(len(o) == 1 for o in owners.values())  # a video's frames on one client
    assert all(np.array_equal(a, b) for a, b in zip(parts, partition(df, 3, scheme, seed=1, alpha=5.0)))
    assert not all(np.array_equal(a, b) for a, b in zip(parts, partition(df, 3, scheme, seed=2, alpha=5.0)))


def test_family_partition_gives_each_client_one_family_and_a_share_of_reals():
    from visec.federated.partition import describe, partition

    df = _train_df(40)
    parts = partition(df, 3, "family", seed=0)
    fams = ["component", "faceswap", "resynth"]
    for k, rows in enumerate(parts):
        sub = df.iloc[rows]
        assert set(sub.loc[sub["label"] == 1, "manipulation"]) == {fams[k]}
    reals = [d["real"] for d in describe(df, parts)]
    assert max(reals) - min(reals) <= 2  # an even share (whole videos of 2 frames)
    five = partition(df, 5, "family", seed=0)  # more clients than families: a family shared by two
    assert {tuple(sorted(set(df.iloc[p].query("label == 1")["manipulation"]))) for p in five} == {(f,) for f in fams}


# -- the federated client and Flower's aggregation, in-process ------------------------------------------
@pytest.fixture
def task_identity(monkeypatch):
    """What a Flower runtime sets before an app builds messages (a run, a node, a task)."""
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def _message(state, cfg, rnd=1, mu=None, kind="train"):
    import yaml
    from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

    conf = {"visec-config": yaml.safe_dump(cfg.to_dict()), "server-round": rnd}
    if mu is not None:
        conf["proximal-mu"] = mu
    return Message(RecordDict({"arrays": ArrayRecord(state), "config": ConfigRecord(conf)}),
                   dst_node_id=1, message_type=kind)


def _context(pid, n):
    from flwr.app import Context, RecordDict

    return Context(run_id=1, node_id=pid + 1, node_config={"partition-id": pid, "num-partitions": n},
                   state=RecordDict(), run_config={})


def _fed_cfg(manifest, tmp_path, *extra):
    return load_config("fedforgery", [*TINY, f"data.manifest={manifest}", f"output_dir={tmp_path}", "name=c",
                                      "data.batch_size=32", "train.limit_train_batches=3", *extra])


def _initial(cfg):
    import lightning as L

    from visec.engine.engine import build_module

    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    return {k: v.clone() for k, v in build_module(cfg).net.state_dict().items()}


@pytest.mark.slow
def test_one_client_one_round_equals_central_training(synth_small, tmp_path, task_identity, one_torch_thread):
    """1 client x 1 round x E local epochs == E central epochs with the same seed: same weights."""
    from safetensors.torch import load_file

    from visec.engine import Engine
    from visec.federated.client import train

    cfg = _fed_cfg(synth_small.manifest, tmp_path, "fed.clients=1", "fed.local_epochs=1", "fed.partition=iid",
                   "train.select_on=last", "train.max_epochs=1")
    reply = train(_message(_initial(cfg), cfg), _context(0, 1))
    fed_state = reply.content["arrays"].to_torch_state_dict()
    Engine(cfg.model_copy(update={"fed": None}), tmp_path / "central").fit()
    central = load_file(tmp_path / "central" / "last.safetensors")
    assert set(central) == set(fed_state)
    for k in central:
        torch.testing.assert_close(fed_state[k].to(central[k].dtype), central[k], rtol=0, atol=0, msg=k)
    init = _initial(cfg)
    assert any(not torch.equal(init[k], central[k]) for k in central)  # it did train
    assert reply.content["metrics"]["num-examples"] == int((synth_small_df(synth_small)["split"] == "train").sum())


def synth_small_df(data):
    from visec.data.manifest import read_manifest

    return read_manifest(data.manifest).df


def _reply(state: dict[str, torch.Tensor], n: int):
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

    req = _message(state, load_config("fedforgery", list(TINY)))
    return Message(RecordDict({"arrays": ArrayRecord(state), "metrics": MetricRecord({"num-examples": n, "unit": 1})}),
                   reply_to=req)


def _bn_model(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    m.train()
    m(torch.randn(4, 3, 5, 5) * (seed + 1))  # running statistics and num_batches_tracked move
    if seed:
        m(torch.randn(4, 3, 5, 5))
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def test_flower_fedavg_is_the_sample_weighted_mean_of_every_tensor_bn_buffers_included(task_identity):
    from visec.config import FedConfig
    from visec.federated.server import make_strategy

    a, b = _bn_model(0), _bn_model(1)
    assert a["1.num_batches_tracked"].item() == 1 and b["1.num_batches_tracked"].item() == 2
    strategy = make_strategy(FedConfig(clients=2))
    arrays, _ = strategy.aggregate_train(1, [_reply(a, 1), _reply(b, 3)])
    got = arrays.to_torch_state_dict()
    for k in a:
        torch.testing.assert_close(got[k].double(), 0.25 * a[k].double() + 0.75 * b[k].double(), msg=k)
    same, _ = strategy.aggregate_train(1, [_reply(a, 2), _reply(a, 5), _reply(a, 1)])
    for k, v in same.to_torch_state_dict().items():
        torch.testing.assert_close(v.double(), a[k].double())
    unweighted, _ = make_strategy(FedConfig(clients=2, weighted=False)).aggregate_train(1, [_reply(a, 1), _reply(b, 3)])
    torch.testing.assert_close(unweighted.to_torch_state_dict()["0.weight"], (a["0.weight"] + b["0.weight"]) / 2)


def test_robust_strategies_resist_a_scaled_update_that_fedavg_takes(task_identity):
    """Three honest updates near each other and one scaled x100: FedAvg moves by about 25x, the
    median, trimmed mean and Krum stay with the honest ones."""
    from visec.config import FedConfig
    from visec.federated.server import make_strategy

    torch.manual_seed(0)
    base = {"w": torch.zeros(50)}
    honest = [{"w": base["w"] + 0.01 * torch.randn(50) + 0.1} for _ in range(3)]
    poisoned = {"w": base["w"] + 100 * (honest[0]["w"] - base["w"])}
    replies = lambda: [_reply(s, 10) for s in [*honest, poisoned]]  # noqa: E731
    clean = torch.stack([h["w"] for h in honest]).mean(0)
    err = {}
    for name, extra in (("fedavg", {}), ("fedmedian", {}), ("fedtrimmedavg", {"trim_beta": 0.25}),
                        ("krum", {"krum_malicious": 1})):
        arrays, _ = make_strategy(FedConfig(clients=4, strategy=name, **extra)).aggregate_train(1, replies())
        err[name] = float((arrays.to_torch_state_dict()["w"] - clean).norm() / clean.norm())
    assert err["fedavg"] > 10
    assert max(err["fedmedian"], err["fedtrimmedavg"], err["krum"]) < 0.2, err


def test_fedprox_adds_the_proximal_gradient():
    from visec.federated.client import ProximalTerm

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(3, 1)

    m = M()
    g = {k: v.detach().clone() - 1.0 for k, v in m.net.state_dict().items()}  # global = w - 1
    for p in m.net.parameters():
        p.grad = torch.zeros_like(p)
    ProximalTerm(0.5, g).on_after_backward(None, m)
    for p in m.net.parameters():
        torch.testing.assert_close(p.grad, torch.full_like(p, 0.5))  # mu * (w - w_g) = 0.5 * 1


@pytest.mark.slow
def test_client_poison_fedbn_and_fault_injection(synth_small, tmp_path, task_identity, one_torch_thread):
    """A poisoned client scales its update; FedBN keeps BatchNorm on the client; an injected fault
    raises in its round only."""
    from visec.federated.client import bn_keys, train

    cfg = _fed_cfg(synth_small.manifest, tmp_path, "fed.clients=2", "fed.poison=scale", "fed.poison_scale=10",
                   "fed.poison_client=1", "fed.bn=local", "fed.fail_client=0", "fed.fail_round=3")
    init = _initial(cfg)
    honest = train(_message(init, cfg), ctx0 := _context(0, 2)).content["arrays"].to_torch_state_dict()
    bad = train(_message(init, cfg), _context(1, 2)).content["arrays"].to_torch_state_dict()
    delta = lambda s: torch.cat([(s[k] - init[k]).flatten() for k in s if s[k].is_floating_point()])  # noqa: E731
    assert delta(bad).norm() > 5 * delta(honest).norm()  # x10 of an update of the same size
    # FedBN: the next round's global BN is replaced by the client's own before training
    keys = bn_keys(__import__("visec.engine.engine", fromlist=["x"]).build_module(cfg).net)
    assert keys and set(ctx0.state["local-bn"].keys()) == set(keys)
    from visec.federated.client import _local_module

    module = _local_module(_message(init, cfg, rnd=2), ctx0, train=False)[5]
    state = module.net.state_dict()
    own = ctx0.state["local-bn"].to_torch_state_dict()
    assert all(torch.equal(state[k], own[k]) for k in keys)  # the client's BN, not the global one
    assert any(not torch.equal(own[k], init[k]) for k in keys if own[k].is_floating_point())
    conv = next(k for k in state if k not in keys)
    assert torch.equal(state[conv], init[conv])  # everything else is the global model
    with pytest.raises(RuntimeError, match="crashed in round 3"):
        train(_message(init, cfg, rnd=3), ctx0)


@pytest.mark.slow
def test_a_local_evaluation_leaves_the_next_local_training_unchanged(synth_small, tmp_path, task_identity,
                                                                     one_torch_thread):
    """A client process keeps its module between calls: an evaluate call between two training rounds
    must not change the second round (the module goes back to training mode)."""
    from visec.federated import client

    cfg = _fed_cfg(synth_small.manifest, tmp_path, "fed.clients=2")
    init = _initial(cfg)

    def second_round(evaluate_first: bool) -> dict[str, torch.Tensor]:
        client._MODULE.clear()
        ctx = _context(0, 2)
        first = client.train(_message(init, cfg, rnd=1), ctx).content["arrays"].to_torch_state_dict()
        if evaluate_first:
            reply = client.evaluate(_message(first, cfg, rnd=1, kind="evaluate"), ctx)
            assert 0 <= reply.content["metrics"]["val_accuracy"] <= 1
        return client.train(_message(first, cfg, rnd=2), ctx).content["arrays"].to_torch_state_dict()

    plain, evaluated = second_round(False), second_round(True)
    for k in plain:
        torch.testing.assert_close(evaluated[k], plain[k], rtol=0, atol=0, msg=k)


def test_client_share_partitions_after_the_holdout_and_flips_only_training_labels(synth_small, tmp_path):
    """A client's share: the held-out family never reaches it (the partition is dealt over what is left,
    so every client of a per-family split still holds fakes), and a flip-poisoned client's training
    labels are flipped while its validation labels are not."""
    from visec.data.manifest import read_manifest
    from visec.federated.client import client_share

    cfg = _fed_cfg(synth_small.manifest, tmp_path, "fed.clients=2", "data.holdout=resynth")
    full = read_manifest(synth_small.manifest).df
    shares = [client_share(cfg, {"partition-id": k, "num-partitions": 2})[0].df for k in range(2)]
    for df in shares:
        assert "resynth" not in set(df.loc[df["label"] == 1, "manipulation"])
        assert (df.loc[df["split"] == "train", "label"] == 1).any()
    kept = full[full["split"].isin(["train", "val"]) & ((full["label"] == 0) | (full["manipulation"] != "resynth"))]
    assert sorted(p for df in shares for p in df["path"]) == sorted(kept["path"])
    plain = shares[0].set_index("path")["label"]
    flipped = client_share(cfg, {"partition-id": 0, "num-partitions": 2}, flip_labels=True)[0].df.set_index("path")
    train = flipped["split"] == "train"
    assert (flipped.loc[train, "label"] == 1 - plain[flipped.index[train]]).all()
    assert (flipped.loc[~train, "label"] == plain[flipped.index[~train]]).all()


@pytest.mark.slow
def test_the_server_s_proximal_mu_reaches_the_client_s_training(synth_small, tmp_path, task_identity,
                                                                one_torch_thread):
    """FedProx's ``proximal-mu`` in the train message pulls the local weights back to the global ones."""
    from visec.federated import client

    cfg = _fed_cfg(synth_small.manifest, tmp_path, "fed.clients=2", "train.lr=0.01")
    init = _initial(cfg)

    def moved(mu):
        client._MODULE.clear()
        out = client.train(_message(init, cfg, mu=mu), _context(0, 2)).content["arrays"].to_torch_state_dict()
        return float(torch.cat([(out[k] - init[k]).flatten() for k, _ in client._MODULE[next(iter(client._MODULE))]
                                .net.named_parameters()]).norm())

    assert moved(1000.0) < 0.5 * moved(None)
