"""Flower's ClientApp for any visec detector: local training on the engine's own module and trainer,
local evaluation, and nothing but arrays and metrics sent back.

Everything a client needs arrives in the server's message (the run config as YAML text under
``config["visec-config"]``) or in its node config: ``partition-id`` and ``num-partitions`` (set by
Flower's simulation, or ``--node-config`` on a real SuperNode) pick its share of a shared manifest;
``manifest=PATH`` on a real SuperNode points at the node's own data instead, used whole.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

import lightning as L
import pandas as pd
import torch
import torch.nn.functional as F
import yaml
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from lightning.pytorch.callbacks import Callback
from torch import nn

from visec.config import RunConfig
from visec.data.datamodule import FaceDataModule
from visec.data.manifest import Manifest, read_manifest
from visec.engine.engine import Engine, build_module
from visec.federated.partition import partition

client_app = ClientApp()

# a client's manifest share, its training-image count and its checked datasets, kept between rounds
# (a simulated client's process lives across rounds; so does a SuperNode's app process pool)
_DATA: dict[tuple, tuple[Manifest, int, dict]] = {}
_MODULE: dict[tuple, Any] = {}  # the client's module, rebuilt only when the run config changes


def run_config_of(msg: Message) -> RunConfig:
    """The run config the server sent (YAML text), validated like any visec config."""
    from visec.config import _validate

    return _validate(RunConfig, yaml.safe_load(str(msg.content["config"]["visec-config"])))


def client_share(cfg: RunConfig, node_config: dict[str, Any], flip_labels: bool = False) -> tuple[Manifest, int, dict]:
    """This client's manifest: its partition of the shared training and validation splits (or the
    node's own manifest, whole), its number of training images and a cache for its datasets."""
    own = node_config.get("manifest")
    pid, parts = int(node_config.get("partition-id", 0)), int(node_config.get("num-partitions", 1))
    key = (str(own or cfg.data.manifest), pid, parts, cfg.fed.partition, cfg.fed.alpha, cfg.train.seed,
           cfg.data.holdout, flip_labels)
    if key not in _DATA:
        m = read_manifest(own or cfg.data.manifest)
        splits = [cfg.data.train_split] + ([cfg.data.val_split] if cfg.data.val_split else [])
        frames = []
        for split in splits:
            df = m.split(split).df
            if cfg.data.holdout is not None:  # leave-one-family-out: the held-out fakes never train
                df = df[(df["label"] == 0) | (df["manipulation"] != cfg.data.holdout)].reset_index(drop=True)
            if own is None and len(df):
                df = df.iloc[partition(df, parts, cfg.fed.partition, cfg.train.seed, cfg.fed.alpha)[pid]]
            if flip_labels and split == cfg.data.train_split:  # a poisoned client: labels flipped
                df = df.assign(label=1 - df["label"])
            frames.append(df)
        share = Manifest(pd.concat(frames, ignore_index=True), m.root, m.source)
        _DATA[key] = (share, int((share.df["split"] == cfg.data.train_split).sum()), {})
    return _DATA[key]


def bn_keys(net: nn.Module) -> list[str]:
    """The state-dict keys of every BatchNorm layer (FedBN keeps these on the client)."""
    out = []
    for name, m in net.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            out += [f"{name}.{k}" for k in m.state_dict()]
    return out


class ProximalTerm(Callback):
    """FedProx: adds ``mu * (w - w_global)``, the gradient of ``mu/2 ||w - w_global||^2``, to every
    parameter's gradient after each backward pass (any method's loss, unchanged)."""

    def __init__(self, mu: float, global_state: dict[str, torch.Tensor]) -> None:
        self.mu, self.global_state = mu, global_state

    def on_after_backward(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        for name, p in module.net.named_parameters():
            if p.grad is not None:
                p.grad.add_(p.detach() - self.global_state[name].to(p.device), alpha=self.mu)


def _local_module(msg: Message, context: Context, train: bool):
    cfg = run_config_of(msg)
    fed = cfg.fed
    pid = int(context.node_config.get("partition-id", 0))
    rnd = int(msg.content["config"].get("server-round", 1))
    poisoned = fed.poison != "none" and pid == fed.poison_client
    seed = cfg.train.seed + 1000 * pid + (rnd - 1)
    local = cfg.model_copy(update={
        "train": cfg.train.model_copy(update={"seed": seed, "max_epochs": fed.local_epochs, "select_on": "last"}),
        "data": cfg.data.model_copy(update={"holdout": None})})  # the share is filtered already
    L.seed_everything(seed, workers=True, verbose=False)
    share, n_train, cached = client_share(cfg, context.node_config,
                                          flip_labels=train and poisoned and fed.poison == "flip")
    dm = FaceDataModule(local.data, local.train, share)
    dm.splits, dm.info = cached.setdefault("splits", {}), cached.setdefault("info", {})  # checked once
    key = (str(msg.content["config"]["visec-config"]),)  # any client of the run: all weights load each round
    module = _MODULE.get(key)
    if module is None:  # built once per run and client process; every round loads the global weights
        _MODULE.clear()
        module = _MODULE[key] = build_module(local)
    module.train_cfg = local.train  # this round's seed and local epochs
    module.train(train)  # a cached module may come from the other kind of call (Lightning keeps its mode)
    state = msg.content["arrays"].to_torch_state_dict()
    if fed.bn == "local" and "local-bn" in context.state:  # FedBN: this client's own BatchNorm
        state.update(context.state["local-bn"].to_torch_state_dict())
    module.net.load_state_dict(state)
    return cfg, local, pid, rnd, dm, module, n_train, poisoned


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    """Local training: the engine's module and trainer for ``fed.local_epochs`` epochs on this client's
    share, FedProx's proximal term when the server sends ``proximal-mu``; replies with the weights
    and ``num-examples``."""
    cfg, local, pid, rnd, dm, module, n_train, poisoned = _local_module(msg, context, train=True)
    fed = cfg.fed
    if fed.fail_client == pid and rnd == fed.fail_round:  # fault injection: this client dies mid-round
        raise RuntimeError(f"client {pid} crashed in round {rnd} (fed.fail_client)")
    global_state = {k: v.detach().clone() for k, v in module.net.state_dict().items()}
    callbacks = []
    mu = float(msg.content["config"].get("proximal-mu", 0.0))
    if mu > 0:
        callbacks.append(ProximalTerm(mu, global_state))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="visec-fed-") as tmp:
        trainer = Engine(local, tmp)._trainer(callbacks, limit_val_batches=0)
        trainer.fit(module, datamodule=dm)
    seconds = time.perf_counter() - start
    loss = float(trainer.callback_metrics.get("train/loss", torch.tensor(float("nan"))))
    new_state = {k: v.detach().cpu() for k, v in module.net.state_dict().items()}
    if fed.bn == "local":
        keys = bn_keys(module.net)
        context.state["local-bn"] = ArrayRecord({k: new_state[k] for k in keys})
    if poisoned and fed.poison == "scale":  # a poisoned update: scale * (local - global)
        new_state = {k: (global_state[k] + fed.poison_scale * (v - global_state[k])
                         if v.is_floating_point() else v) for k, v in new_state.items()}
    terms = {f"train_{k[6:]}": float(v) for k, v in trainer.callback_metrics.items()
             if k.startswith("train/") and k != "train/loss" and v.numel() == 1}  # each loss term
    metrics = MetricRecord({"num-examples": n_train, "unit": 1, "train_loss": loss, **terms,
                            "local_seconds": seconds, "partition-id": pid})
    return Message(RecordDict({"arrays": ArrayRecord(new_state), "metrics": metrics}), reply_to=msg)


@client_app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Local evaluation of the global model (with this client's BatchNorm under FedBN) on the
    client's share of the validation split: loss and accuracy at 0.5 (every reply must carry the
    same keys, and a client's share may hold one class only, so the AUC is the server's)."""

    cfg, local, pid, rnd, dm, module, n_train, _ = _local_module(msg, context, train=False)
    split = cfg.data.val_split or cfg.data.train_split
    loader = dm._loader(split, train=False)
    module.eval()
    logits, labels = [], []
    with torch.no_grad():
        for batch in loader:
            logits.append(module(batch["image"]).float())
            labels.append(batch["label"])
    z, y = torch.cat(logits), torch.cat(labels)
    metrics = {"num-examples": len(y), "unit": 1, "val_loss": float(F.binary_cross_entropy_with_logits(z, y)),
               "val_accuracy": float(((z > 0) == (y > 0.5)).float().mean())}
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
