"""Adversarial training on the engine: PGD-AT, TRADES and MART, each optionally with ANCRA.

One LightningModule serves two registered methods that differ only in their defaults:

* ``adversarial_training``: the baselines (``ancra: false``, ``procedure: pgd_at``);
* ``ancra``: ANCRA (``ancra: true``, ``procedure: trades``, the only variant with released code).

Every adversarial example comes from :class:`visec.attacks.PGD` (one attack engine):

* training attack: untargeted PGD on ``CE(o, y) + lambda_cr * mean_k CE(a_k, y)`` (``steps`` of
  ``alpha``, start ``x + start_sigma * N(0, 1)``), model in eval mode, RA classes predicted by the
  auxiliary heads (``trades_attack: kl`` switches TRADES to the KL attack of the TRADES paper);
* negatives (ANCRA): for every anchor a sample of another class in the batch, pushed by targeted
  PGD (same loss, same settings) toward the *anchor's* label;
* validation: PGD-``eval_steps`` (uniform start) on the final logits -> ``val/robust_acc``;
* test: :func:`visec.attacks.robust_evaluate` per batch with ``test_attacks`` (default clean, FGSM,
  PGD-20, CW-20 and, for RA networks, a transfer attack crafted by PGD-20 through the
  differentiable soft-mask surrogate; optionally PGD-40, APGD-CE/DLR, AutoAttack), merged into one
  :class:`visec.attacks.RobustReport`: per-attack and per-sample worst-case accuracy with Wilson
  intervals, and the evaluator's gradient-masking flags (a surrogate that beats every white-box
  attack raises one).

Loss per procedure (``nat``/``adv``/``neg`` = outputs on x / x_adv / the negative, every forward in
train mode with label-driven RA masks):

* standard: ``CE_tot(nat)``
* pgd_at: ``CE_tot(adv)``                                       (+ANCRA: inferred, not released)
* trades: ``CE_tot(nat) + beta * KL_tot(nat, adv)``             (+ANCRA: as coded)
* mart: ``MART_tot(nat, adv)``                                  (+ANCRA: inferred, not released)
* ANCRA adds ``zeta * ANC_tot(nat, neg)``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from visec.attacks import PGD
from visec.config import DEFAULT_EPS, Budget, TrainConfig
from visec.engine.method import Method
from visec.engine.module import MethodModule
from visec.errors import ConfigError
from visec.methods.ancra.losses import (NegativeSamplingError, anc_total, aux_ce_per_sample, ce_total,
                                        kl_to_clean_per_sample, mart_total, negative_indices,
                                        trades_kl_total)
from visec.methods.ancra.torch_model import ARCHS, RANet, SoftMaskSurrogate, WithAux, build_net
from visec.registry import METHODS

TEST_ATTACKS = ("fgsm", "pgd20", "pgd40", "cw20", "pgd20_softmask", "apgd_ce", "apgd_dlr", "autoattack")


class AdversarialTrainingParams(BaseModel):
    """Parameters of ``adversarial_training`` (``ancra`` shares them with other defaults)."""

    model_config = ConfigDict(extra="forbid")

    procedure: Literal["standard", "pgd_at", "trades", "mart"] = "pgd_at"
    ancra: bool = False  # ANC loss + RA network
    ra: bool | None = None  # RA network on/off (default: = ancra; ablation: ANC without RA)
    arch: str = "small_ra_cnn"
    arch_kwargs: dict[str, Any] = Field(default_factory=dict)
    num_classes: int = Field(10, ge=2)
    # threat model and training attacks
    eps: Budget = Field(DEFAULT_EPS, ge=0)  # a number or a fraction (8/255) in YAML and overrides
    alpha: Budget = Field(0.007, gt=0)
    steps: int = Field(10, ge=1)
    random_start: Literal["normal", "uniform", "none"] = "normal"
    start_sigma: float = Field(0.001, ge=0)
    trades_attack: Literal["ce", "kl"] = "ce"  # ANCRA's code uses the CE attack even in TRADES
    # loss weights
    beta: float = Field(6.0, ge=0)  # TRADES
    mart_lambda: float = Field(6.0, ge=0)  # MART
    zeta: float = Field(3.0, ge=0)  # ANC weight
    anc_alpha: float = Field(1.0, ge=0, le=1)  # 1: anchor side stop-gradient
    lambda_cr: float = Field(2.0, ge=0)  # auxiliary heads' weight
    negatives: Literal["random_adv", "random"] = "random_adv"
    # evaluation
    eval_steps: int = Field(10, ge=1)  # PGD steps of the validation attack (model selection)
    eval_alpha: Budget | None = Field(None, gt=0)  # step of the evaluation attacks (default: alpha)
    test_attacks: list[str] = Field(default_factory=lambda: ["fgsm", "pgd20", "cw20", "pgd20_softmask"],
                                    min_length=1)
    soft_tau: float = Field(1.0, gt=0)  # temperature of the soft-mask surrogate
    # optimiser schedule the engine's TrainConfig cannot express (ANCRA: x0.1 at 75, 90, 100)

    @model_validator(mode="after")
    def _check(self) -> "AdversarialTrainingParams":
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch '{self.arch}' (known: {', '.join(ARCHS)})")
        bad = [a for a in self.test_attacks if a not in TEST_ATTACKS]
        if bad:
            raise ValueError(f"unknown test attack(s) {bad} (known: {', '.join(TEST_ATTACKS)})")
        return self

    @property
    def uses_ra(self) -> bool:
        return self.ancra if self.ra is None else self.ra

    @property
    def uses_anc(self) -> bool:
        return self.ancra and self.zeta > 0

    @property
    def label(self) -> str:
        """``PGD-AT``, ``TRADES+ANCRA``, ... for tables."""
        base = {"standard": "standard", "pgd_at": "PGD-AT", "trades": "TRADES", "mart": "MART"}[self.procedure]
        return f"{base}+ANCRA" if self.ancra else base


class AncraParams(AdversarialTrainingParams):
    """Parameters of ``ancra``: TRADES-ANCRA by default (the released variant)."""

    procedure: Literal["standard", "pgd_at", "trades", "mart"] = "trades"
    ancra: bool = True


class AdversarialTrainer(MethodModule):
    """The pure network is ``self.net`` (an :class:`RANet`; what checkpoints hold)."""

    def __init__(self, net: RANet, train_cfg: TrainConfig, params: AdversarialTrainingParams) -> None:
        super().__init__(net, train_cfg, params)
        self.net: RANet
        seed = train_cfg.seed
        common = dict(eps=params.eps, alpha=params.alpha, steps=params.steps, random_start=params.random_start,
                      start_sigma=params.start_sigma, loss_fn=aux_ce_per_sample(params.lambda_cr))
        # attack objects are not nn.Modules, so the views they hold are not registered twice
        self.train_attack = PGD(WithAux(self.net), seed=seed, **common)
        self.negative_attack = PGD(WithAux(self.net), targeted=True, seed=seed + 1, **common)
        self._negative_gen = torch.Generator().manual_seed(seed + 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def setup(self, stage: str) -> None:
        n = getattr(getattr(self.trainer, "datamodule", None), "num_classes", None)
        if n is not None and n != self.params.num_classes:
            raise ConfigError(f"model.num_classes={self.params.num_classes} but the data have {n} classes")

    # -- training ------------------------------------------------------------------------------
    def _eval_mode_output(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        was = self.net.training
        self.net.eval()
        with torch.no_grad():
            out = self.net.forward_all(x)
        self.net.train(was)
        return out

    def adversarial(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training attack's adversarial examples for ``(x, y)``."""
        p = self.params
        if p.procedure == "trades" and p.trades_attack == "kl":
            o, aux = self._eval_mode_output(x)
            self.train_attack.loss_fn = kl_to_clean_per_sample(o, p.lambda_cr, aux)
            try:
                return self.train_attack(x, y)
            finally:
                self.train_attack.loss_fn = aux_ce_per_sample(p.lambda_cr)
        return self.train_attack(x, y)

    def negatives(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(x_neg, labels of x_neg)``: other-class samples pushed toward each anchor's label."""
        try:
            idx = negative_indices(y, self._negative_gen)
        except NegativeSamplingError:
            return None
        x_neg = x[idx]
        if self.params.negatives == "random_adv":
            x_neg = self.negative_attack(x_neg, y)
        return x_neg, y[idx]

    def losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        p = self.params
        x, y = batch["image"], batch["label"]
        x_adv = self.adversarial(x, y) if p.procedure != "standard" else None
        neg = self.negatives(x, y) if p.uses_anc else None
        terms: dict[str, torch.Tensor] = {}
        nat = self.net.forward_all(x, y) if (p.procedure != "pgd_at" or p.uses_anc) else None
        adv = self.net.forward_all(x_adv, y) if x_adv is not None else None
        if p.procedure == "standard":
            terms["ce"] = ce_total(nat, y, p.lambda_cr)
        elif p.procedure == "pgd_at":
            terms["ce_adv"] = ce_total(adv, y, p.lambda_cr)
        elif p.procedure == "trades":
            terms["ce"] = ce_total(nat, y, p.lambda_cr)
            terms["kl"] = p.beta * trades_kl_total(nat, adv, p.lambda_cr)
        else:
            terms["mart"] = mart_total(nat, adv, y, p.mart_lambda, p.lambda_cr)
        if p.uses_anc:
            if neg is not None:
                neg_out = self.net.forward_all(neg[0], neg[1])  # the negative's mask uses its own label
                terms["anc"] = p.zeta * anc_total(nat, neg_out, p.anc_alpha, p.lambda_cr)
            else:  # a batch with a single class has no negatives
                terms["anc"] = x.new_zeros(())
        loss = torch.stack(list(terms.values())).sum()
        with torch.no_grad():
            logits = (adv if adv is not None else nat)[0]
            terms["acc_adv" if adv is not None else "acc"] = (logits.argmax(1) == y).float().mean()
        return {"loss": loss, **terms}

    # -- evaluation ----------------------------------------------------------------------------
    def evaluation_attacks(self) -> dict[str, Any]:
        """The test attacks (``params.test_attacks``), all at the training threat model, built by the
        shared builder: the standard suite's members (FGSM, PGD-20, CW-20, APGD-CE/DLR) come from
        :func:`visec.attacks.standard_suite`, the rest from :func:`visec.attacks.build_attack`."""
        from visec.attacks import build_attack, standard_suite

        p, seed = self.params, self.train_cfg.seed + 100
        step = p.eval_alpha or p.alpha
        in_suite = {"fgsm": "fgsm", "pgd20": "pgd20", "cw20": "cw", "apgd_ce": "apgd_ce", "apgd_dlr": "apgd_dlr"}
        suite = (standard_suite(self.net, eps=p.eps, steps=20, seed=seed, alpha=step)
                 if set(p.test_attacks) & set(in_suite) else {})
        out: dict[str, Any] = {}
        for name in p.test_attacks:
            if name in in_suite:
                out[name] = suite[in_suite[name]]
            elif name == "pgd40":
                out[name] = build_attack("pgd", self.net, eps=p.eps, alpha=step, steps=40, random_start="uniform",
                                         seed=seed)
            elif name == "pgd20_softmask":
                if self.net.ra:  # crafted on the differentiable surrogate, judged on the real network
                    inner = build_attack("pgd", SoftMaskSurrogate(self.net, p.soft_tau), eps=p.eps, alpha=step,
                                         steps=20, random_start="uniform", seed=seed)
                    out[name] = build_attack("transfer", self.net, attack=inner, eps=p.eps, seed=seed)
            else:  # autoattack
                out[name] = build_attack("autoattack", self.net, eps=p.eps, version="standard", seed=seed)
        return out

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        # a fresh attack (same seed) every epoch, so every epoch is scored against the same starts
        p = self.params
        self._val_attack = PGD(self.net, eps=p.eps, alpha=p.eval_alpha or p.alpha, steps=p.eval_steps,
                               random_start="uniform", seed=self.train_cfg.seed + 100)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        x, y = batch["image"], batch["label"]
        with torch.no_grad():
            clean = self.net(x).argmax(1) == y
        with torch.enable_grad():
            x_adv = self._val_attack(x, y)
        with torch.no_grad():
            robust = clean & (self.net(x_adv).argmax(1) == y)
        for key, val in (("index", batch["index"]), ("clean", clean.long()), ("robust", robust.long())):
            self._record(key, val)

    def on_validation_epoch_end(self) -> None:
        if not self._eval:
            return
        d = self._gathered()
        clean, robust = float(d["clean"].mean()), float(d["robust"].mean())
        self.val_results = {"clean_acc": clean, "robust_acc": robust, "n": len(d["index"])}
        self.log_dict({"val/clean_acc": clean, "val/robust_acc": robust}, prog_bar=True)

    def on_test_epoch_start(self) -> None:
        self._test_attacks = self.evaluation_attacks()
        self._seconds: dict[str, float] = {"clean": 0.0, **{k: 0.0 for k in self._test_attacks}}

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        from visec.attacks import robust_evaluate

        x, y = batch["image"], batch["label"]
        with torch.enable_grad():
            rep = robust_evaluate(self.net, (x, y), self._test_attacks, batch_size=len(x), seed=self.train_cfg.seed)
        self._record("index", batch["index"])
        self._record("label", y)
        self._record("clean_correct", rep.clean_correct.long().to(x.device))
        self._seconds["clean"] += rep.clean_seconds
        for name, o in rep.outcomes.items():
            self._record(f"{name}/success", o.success.long().to(x.device))
            self._record(f"{name}/linf", o.linf.to(x.device))
            self._record(f"{name}/l2", o.l2.to(x.device))
            self._seconds[name] += o.seconds

    def on_test_epoch_end(self) -> None:
        from visec.attacks import AttackOutcome, RobustReport, detect_gradient_masking

        d = self._gathered()
        outcomes = {}
        for name, atk in self._test_attacks.items():
            if f"{name}/success" not in d:
                continue
            outcomes[name] = AttackOutcome(
                name=name, success=torch.from_numpy(d[f"{name}/success"]).bool(),
                linf=torch.from_numpy(d[f"{name}/linf"]).float(), l2=torch.from_numpy(d[f"{name}/l2"]).float(),
                seconds=self._seconds[name], attack=atk.name, access=atk.access, norm=atk.norm, eps=atk.eps,
                steps=getattr(atk, "steps", None), alpha=getattr(atk, "alpha", None),
                loss=getattr(atk.loss_fn, "__name__", type(atk.loss_fn).__name__), config=atk.config())
        report = RobustReport(torch.from_numpy(d["clean_correct"]).bool(), outcomes, clean_seconds=self._seconds["clean"])
        report.gradient_masking = detect_gradient_masking(report)
        self.test_report = report
        self.test_results = robust_results(report, d, self.params)


def robust_results(report: Any, d: dict[str, np.ndarray], params: AdversarialTrainingParams) -> dict[str, Any]:
    """Card metrics (the robust evaluator's ``robust`` level plus ``eps`` and masking reasons) and a
    per-image table (``index, label, clean_correct, <attack>_success, ..., worst_case_robust``)."""
    metrics = report.to_metrics()
    metrics["robust"]["eps"] = float(params.eps)
    if report.gradient_masking:
        metrics["robust"]["gradient_masking_reasons"] = [f.reason for f in report.gradient_masking]
    scores = report.per_sample()
    scores.insert(0, "label", d["label"].astype(np.int64))
    scores.insert(0, "index", d["index"].astype(np.int64))
    return {"metrics": metrics, "scores": scores, "n": report.n}


@METHODS.register("adversarial_training")
class AdversarialTrainingMethod(Method):
    """PGD-AT / TRADES / MART (optionally +ANCRA) on digits or CIFAR; clean + robust accuracy"""

    family = "adversarial robustness"
    Params = AdversarialTrainingParams
    Module = AdversarialTrainer
    modalities = ("vis",)
    bench = "ancra"

    @classmethod
    def build_net(cls, params: AdversarialTrainingParams) -> RANet:
        return build_net(params.arch, params.num_classes, ra=params.uses_ra, **params.arch_kwargs)

    @classmethod
    def card_name(cls, params: AdversarialTrainingParams) -> str:
        """The procedure, and whether ANCRA is on (e.g. ``trades+ancra``)."""
        return f"{params.procedure}{'+ancra' if params.ancra else ''}"

    @classmethod
    def build_datamodule(cls, data_cfg, train_cfg, params):
        from visec.data.classification import ClassificationDataModule

        return ClassificationDataModule(data_cfg, train_cfg, params)


@METHODS.register("ancra")
class AncraMethod(AdversarialTrainingMethod):
    """ANCRA: asymmetric negative contrast + reverse attention on TRADES/PGD-AT/MART (arXiv 2310.03358)"""

    Params = AncraParams
