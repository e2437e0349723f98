"""Training logic of FedForgery's local model: binary cross-entropy on the residual's logit plus the
generator's reconstruction, codebook and commitment terms (or the KL term of the VAE variant).

The same module trains centrally (``visec train fedforgery``) and inside every Flower client
(``visec fed run``, :mod:`visec.methods.fedforgery.federated`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from visec.engine.method import Counterpart, Method, check_backbones, with_backbone
from visec.engine.module import BinaryDetector
from visec.methods.fedforgery.torch_model import FedForgeryNet
from visec.registry import METHODS


class FedForgeryParams(BaseModel):
    """Defaults are the released model's (ResNet-50 on the residual, width 64, 128 codes); the local
    loss weights are standard VQ-VAE values (the paper does not give them)."""

    model_config = ConfigDict(extra="forbid")

    backbone: str = "resnet50"
    weights: Path | None = None  # local classifier weights, or "imagenet" (mobilenetv2 only, offline)
    generator: Literal["vq", "vae", "none"] = "vq"  # none: the ablation's counterpart (no residual)
    width: int = Field(64, ge=1)
    num_codes: int = Field(128, ge=2)
    dropout: float = Field(0.0, ge=0, lt=1)
    normalize: bool = True  # ImageNet mean/std before G (the released code normalises its input)
    rec_weight: float = Field(1.0, ge=0)  # lambda_rec * ||G(x) - x||^2
    vq_weight: float = Field(1.0, ge=0)  # lambda_vq * ||sg[z_e] - e||^2 (codebook)
    commit_weight: float = Field(0.25, ge=0)  # lambda_commit * ||z_e - sg[e]||^2 (encoder)
    kl_weight: float = Field(1e-3, ge=0)  # the VAE variant's KL term
    backbone_kwargs: dict[str, Any] = Field(default_factory=dict)


def local_losses(parts: dict[str, torch.Tensor], labels: torch.Tensor, p: FedForgeryParams) -> dict[str, torch.Tensor]:
    """``CE + rec_weight * rec + vq_weight * codebook + commit_weight * commitment`` (VQ) or
    ``CE + rec_weight * rec + kl_weight * KL`` (VAE); every term reported."""
    logit = parts["logit"].squeeze(-1)
    out = {"ce": F.binary_cross_entropy_with_logits(logit, labels)}
    if "recon" not in parts:  # no generator (model.generator=none): the classifier's loss alone
        out["loss"] = out["ce"]
        return out
    out["rec"] = F.mse_loss(parts["recon"], parts["input"])
    if "e" in parts:
        out["codebook"] = F.mse_loss(parts["e"], parts["z_e"].detach())
        out["commit"] = F.mse_loss(parts["z_e"], parts["e"].detach())
        extra = p.vq_weight * out["codebook"] + p.commit_weight * out["commit"]
    else:
        out["kl"] = parts["kl"]
        extra = p.kl_weight * out["kl"]
    out["loss"] = out["ce"] + p.rec_weight * out["rec"] + extra
    return out


class FedForgery(BinaryDetector):
    """The residual detector (``sigmoid(forward)`` = P(fake)), trained with the local loss."""

    net: FedForgeryNet
    params: FedForgeryParams

    def losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return local_losses(self.net.parts(batch["image"]), batch["label"], self.params)


@METHODS.register("fedforgery")
class FedForgeryMethod(Method):
    """FedForgery: classifier on the residual x - G(x) of a VQ generator; centrally or federated on Flower"""

    family = "forgery detection"
    Params = FedForgeryParams
    Module = FedForgery
    bench = "forgery"  # into the shared forgery leaderboard, beside the other detectors
    # `visec bench --method fedforgery`: central training (the method's own entrant) against Flower runs
    # of 3 clients x 5 rounds x 1 local epoch: FedAvg, FedProx and FedBN under IID and per-family
    # partitions, and a client whose update is scaled x100 under FedAvg and the robust aggregators
    bench_entrants = (
        ("fedavg-family", ("fed.strategy=fedavg", "fed.partition=family"), True, True, False),
        ("fedavg-iid", ("fed.strategy=fedavg", "fed.partition=iid"), False, False, False),
        ("fedprox-family", ("fed.strategy=fedprox", "fed.partition=family"), False, False, False),
        ("fedprox-iid", ("fed.strategy=fedprox", "fed.partition=iid"), False, False, False),
        ("fedbn-family", ("fed.strategy=fedavg", "fed.partition=family", "fed.bn=local"), False, False, False),
        ("fedbn-iid", ("fed.strategy=fedavg", "fed.partition=iid", "fed.bn=local"), False, False, False),
        *((f"{name}-iid-poison", (f"fed.strategy={name}", "fed.partition=iid", "fed.poison=scale", *extra),
           False, False, False)
          for name, extra in (("fedavg", ()), ("fedmedian", ()), ("fedtrimmedavg", ("fed.trim_beta=0.34",)),
                              ("krum", ("fed.krum_malicious=1",)))),
        # Krum keeps one client's model per round: its clean run separates that cost from the poison's
        ("krum-iid", ("fed.strategy=krum", "fed.partition=iid", "fed.krum_malicious=1"), False, False, False),
    )
    # the residual claim, trained centrally: the same classifier on the image instead of x - G(x)
    counterpart = Counterpart(("model.generator=none",), "residual generator G (off: the classifier sees x)",
                              removed=("generator.*",))

    @classmethod
    def build_net(cls, params: FedForgeryParams) -> FedForgeryNet:
        check_backbones(params.backbone)
        return FedForgeryNet(params.backbone, str(params.weights) if params.weights else None, params.width,
                             params.num_codes, params.generator, params.dropout, params.normalize,
                             **params.backbone_kwargs)

    @classmethod
    def card_name(cls, params: FedForgeryParams) -> str:
        """``fedforgery``; ``fedforgery/mobilenetv2+imagenet``; ``+vae`` for the Gaussian generator."""
        name = with_backbone(cls.name, params.backbone, params.weights, "resnet50")
        return name + {"vq": "", "vae": "+vae", "none": "+no-generator"}[params.generator]
