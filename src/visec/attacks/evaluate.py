"""Robust evaluation: clean and per-attack accuracy, per-sample worst case, norms, timings, and
gradient-masking flags, reported as a result card in the RobustBench spirit.

::

    from visec.attacks import robust_evaluate, standard_suite

    report = robust_evaluate(model, loader, standard_suite(model, eps=8/255, num_classes=10))
    print(report.summary())
    report.to_card("my-method", "cifar10:test").save("cards/")

Conventions:

* only samples the model classifies correctly are attacked (the rest are not robust anyway);
  an attack *succeeds* on a sample when the model's prediction on the returned image differs
  from the label. Attacks are run untargeted.
* a sample is robust in the **worst case** when it is clean-correct and no attack succeeded on
  it; attacks with an ``unbounded`` threat model (minimal-norm C&W-L2) are left out of the worst
  case, since they succeed by design.
* every returned image is checked to lie in [0, 1] and in its attack's ``eps`` ball: an attack
  that leaves its threat model raises :class:`~visec.attacks.base.AttackError`.
* mean perturbation norms (Linf and L2) are over the samples an attack broke.
* accuracies carry Wilson 95% intervals (binomial over samples).
* :func:`detect_gradient_masking` raises flags (with reasons) in the spirit of Carlini et al.'s
  checklist: a black-box or transfer attack beats every white-box attack of the same budget;
  accuracy rises with more steps or a larger ``eps``; FGSM beats an iterative attack whose steps
  can reach at least as far.
"""

from __future__ import annotations

import inspect
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping

import torch
from torch import nn

from visec.attacks.base import Attack, AttackError, default_logits, num_classes, predict_labels
from visec.registry import ATTACKS

SUITE_NAMES = ("suite", "standard_suite")


# -- building attacks ------------------------------------------------------------------------------
def attack_params(cls: type) -> set[str]:
    """Keyword parameters an attack class accepts (its ``__init__`` and those it forwards to)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        forwards = False
        for p in inspect.signature(init).parameters.values():
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                forwards = True
            elif p.name not in ("self", "model") and p.kind is not inspect.Parameter.VAR_POSITIONAL:
                names.add(p.name)
        if not forwards:
            break
    return names - set(getattr(cls, "ignored_params", ()))


def build_attack(name: str, model: nn.Module, **params: Any) -> Attack:
    """Build a registered attack; ``None`` values are left at the attack's default, and a parameter
    the attack does not take is an :class:`AttackError` (one line, naming the accepted ones)."""
    cls = ATTACKS.get(name).obj
    params = {k: v for k, v in params.items() if v is not None}
    accepted = attack_params(cls)
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise AttackError(f"attack '{name}' does not take {', '.join(unknown)} "
                          f"(it takes: {', '.join(sorted(accepted))})")
    return cls(model, **params)


class Suite(dict):
    """``name -> Attack`` plus ``skipped`` (name -> reason) for attacks left out of the suite."""

    def __init__(self, *args: Any, skipped: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.skipped: dict[str, str] = dict(skipped or {})


def standard_suite(model: nn.Module, eps: float = 8 / 255, norm: str = "Linf", steps: int = 20, seed: int = 0,
                   num_classes: int | None = None, *, apgd_steps: int = 100, alpha: float | None = None,
                   logits_fn: Callable[[Any], torch.Tensor] = default_logits,
                   model_mode: str = "eval") -> Suite:
    """The evaluation list: ``fgsm`` (Linf only), ``pgd{steps}`` (uniform random start, step
    ``alpha`` = ``2.5 eps / steps`` unless given), ``cw`` (Linf: PGD on the CW margin, ``cw_linf``;
    L2: C&W-L2 within the ball), ``apgd_ce`` and ``apgd_dlr`` (``apgd_steps`` each; DLR is skipped,
    with the reason kept in ``suite.skipped``, when ``num_classes`` < 3, e.g. binary detectors)."""
    if norm not in ("Linf", "L2"):
        raise AttackError(f"standard suite: norm must be Linf or L2, got '{norm}'")
    if steps < 1 or apgd_steps < 1:
        raise AttackError(f"standard suite: steps must be >= 1 (got {steps}, {apgd_steps})")
    step = float(alpha) if alpha is not None else 2.5 * eps / steps
    common = dict(eps=eps, norm=norm, seed=seed, logits_fn=logits_fn, model_mode=model_mode)
    suite = Suite()
    if norm == "Linf":
        suite["fgsm"] = build_attack("fgsm", model, **common)
    else:
        suite.skipped["fgsm"] = "FGSM is defined for Linf"
    suite[f"pgd{steps}"] = build_attack("pgd", model, steps=steps, alpha=step, random_start="uniform", **common)
    if norm == "Linf":
        suite["cw"] = build_attack("cw_linf", model, steps=steps, alpha=step, **common)
    else:
        suite["cw"] = build_attack("cw_l2", model, **common)
    suite["apgd_ce"] = build_attack("apgd_ce", model, steps=apgd_steps, **common)
    if num_classes is not None and num_classes < 3:
        suite.skipped["apgd_dlr"] = f"the DLR loss needs >= 3 classes, the model has {num_classes}"
    else:
        suite["apgd_dlr"] = build_attack("apgd_dlr", model, steps=apgd_steps, **common)
    return suite


# -- results ----------------------------------------------------------------------------------------
def wilson_interval(k: int, n: int, level: float = 0.95) -> list[float] | None:
    """Wilson score interval for ``k`` successes out of ``n`` (``None`` when ``n == 0``)."""
    if n <= 0:
        return None
    z = statistics.NormalDist().inv_cdf(0.5 + level / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return [lo, hi]


def worst_case(clean_correct: torch.Tensor, successes: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Per-sample robustness over attacks: clean-correct and broken by none of them."""
    robust = clean_correct.bool().clone()
    for s in successes.values():
        robust &= ~s.bool()
    return robust


@dataclass
class AttackOutcome:
    """One attack's per-sample results (``N`` samples; samples not attacked: no success, norm 0)."""

    name: str
    success: torch.Tensor
    linf: torch.Tensor
    l2: torch.Tensor
    seconds: float = 0.0
    attack: str = ""  # the registered attack name (e.g. "pgd" for the entry "pgd20")
    access: str = "white-box"
    norm: str = "Linf"
    eps: float = 0.0
    steps: int | None = None
    alpha: float | None = None  # step size, where the attack has one
    loss: str = ""
    config: dict[str, Any] = field(default_factory=dict)

    def mean_norm(self, which: str, mask: torch.Tensor | None = None) -> float | None:
        sel = self.success if mask is None else self.success & mask
        vals = (self.linf if which == "linf" else self.l2)[sel]
        return float(vals.mean()) if vals.numel() else None


@dataclass
class MaskingFlag:
    """A sign of gradient masking: which check, which attacks, and a readable reason."""

    check: str
    attacks: tuple[str, ...]
    reason: str


@dataclass
class RobustReport:
    """What :func:`robust_evaluate` measured; see the module docstring for the conventions."""

    clean_correct: torch.Tensor
    outcomes: dict[str, AttackOutcome]
    skipped: dict[str, str] = field(default_factory=dict)
    clean_seconds: float = 0.0
    masking_tol: float = 0.02
    notes: list[str] = field(default_factory=list)
    gradient_masking: list[MaskingFlag] = field(default_factory=list)

    @property
    def n(self) -> int:
        return int(self.clean_correct.numel())

    @property
    def worst_case_attacks(self) -> list[str]:
        return [k for k, o in self.outcomes.items() if o.norm != "unbounded"]

    @property
    def worst_case_correct(self) -> torch.Tensor:
        return worst_case(self.clean_correct, {k: self.outcomes[k].success for k in self.worst_case_attacks})

    def robust_correct(self, name: str) -> torch.Tensor:
        return self.clean_correct & ~self.outcomes[name].success

    @property
    def clean_acc(self) -> float:
        return int(self.clean_correct.sum()) / self.n if self.n else float("nan")

    def acc(self, name: str) -> float:
        return int(self.robust_correct(name).sum()) / self.n if self.n else float("nan")

    @property
    def worst_case_acc(self) -> float:
        return int(self.worst_case_correct.sum()) / self.n if self.n else float("nan")

    @property
    def masked(self) -> bool:
        return bool(self.gradient_masking)

    def to_metrics(self, level: float = 0.95) -> dict[str, Any]:
        """``{"robust": {"clean_acc": {"value", "ci"}, "<attack>_acc": ..., "worst_case_acc": ...,
        "<attack>_mean_linf"/"_mean_l2": {"value"}, "gradient_masking": bool, "n": N}}``."""

        def acc(mask: torch.Tensor) -> dict[str, Any]:
            k = int(mask.sum())
            return {"value": k / self.n if self.n else None, "ci": wilson_interval(k, self.n, level)}

        robust: dict[str, Any] = {"n": self.n, "n_clean_correct": int(self.clean_correct.sum()),
                                  "clean_acc": acc(self.clean_correct)}
        for name in self.outcomes:
            robust[f"{name}_acc"] = acc(self.robust_correct(name))
        for name, o in self.outcomes.items():
            robust[f"{name}_mean_linf"] = {"value": o.mean_norm("linf"), "ci": None}
            robust[f"{name}_mean_l2"] = {"value": o.mean_norm("l2"), "ci": None}
        if self.worst_case_attacks:
            robust["worst_case_acc"] = acc(self.worst_case_correct)
        robust["gradient_masking"] = self.masked
        return {"robust": robust}

    def summary(self) -> str:
        """One line: clean, per-attack and worst-case accuracy, and a masking warning if any."""
        parts = [f"clean {self.clean_acc:.3f}"]
        parts += [f"{k} {self.acc(k):.3f}" for k in self.outcomes]
        if self.worst_case_attacks and len(self.outcomes) > 1:
            parts.append(f"worst case {self.worst_case_acc:.3f}")
        line = " | ".join(parts) + f" (n={self.n})"
        if self.masked:
            line += f"; gradient masking suspected ({len(self.gradient_masking)} flag(s))"
        return line

    def per_sample(self):
        """A DataFrame: one row per sample, ``clean_correct``, ``<attack>_success``, ``worst_case_robust``."""
        import pandas as pd

        cols: dict[str, Any] = {"clean_correct": self.clean_correct.numpy()}
        for k, o in self.outcomes.items():
            cols[f"{k}_success"] = o.success.numpy()
            cols[f"{k}_linf"] = o.linf.numpy()
            cols[f"{k}_l2"] = o.l2.numpy()
        cols["worst_case_robust"] = self.worst_case_correct.numpy()
        return pd.DataFrame(cols)

    def to_card(self, method: str, data: str, *, train_data: str = "", protocol: str = "robust", seed: int = 0,
                config: dict[str, Any] | None = None, selection: str = "n/a", notes: Iterable[str] = (),
                extra: dict[str, Any] | None = None):
        """A :class:`~visec.cards.ResultCard` (metrics from :meth:`to_metrics`; attack settings
        under ``config["attacks"]``; masking flags and skipped attacks in ``notes`` and ``extra``)."""
        from visec.cards import ResultCard

        all_notes = list(notes) + list(self.notes)
        all_notes += [f"gradient masking suspected ({f.check}): {f.reason}" for f in self.gradient_masking]
        all_notes += [f"attack '{k}' skipped: {v}" for k, v in self.skipped.items()]
        timings = {"clean_seconds": round(self.clean_seconds, 4)}
        timings.update({f"{k}_seconds": round(o.seconds, 4) for k, o in self.outcomes.items()})
        cfg = dict(config or {})
        cfg["attacks"] = {k: o.config for k, o in self.outcomes.items()}
        info = {"worst_case_attacks": self.worst_case_attacks, "skipped_attacks": dict(self.skipped),
                "gradient_masking": [{"check": f.check, "attacks": list(f.attacks), "reason": f.reason}
                                     for f in self.gradient_masking],
                "implementation": "visec (AutoAttack-style components are not bit-identical to the reference)"}
        info.update(extra or {})
        return ResultCard(method=method, train_data=train_data, test_data=data, protocol=protocol, seed=seed,
                          metrics=self.to_metrics(), config=cfg, timings=timings, selection=selection,
                          notes=all_notes, extra=info)


# -- masking checks ---------------------------------------------------------------------------------
def detect_gradient_masking(report: RobustReport, tol: float | None = None) -> list[MaskingFlag]:
    """Flags (see the module docstring); differences must exceed ``tol`` (a fraction of samples,
    default ``report.masking_tol``) to count. Only clean-correct samples enter the rates."""
    tol = report.masking_tol if tol is None else tol
    cc = report.clean_correct.bool()
    n_cc = int(cc.sum())
    if n_cc == 0:
        return []
    outs = report.outcomes
    rate = {k: int((o.success & cc).sum()) / n_cc for k, o in outs.items()}
    acc = {k: report.acc(k) for k in outs}
    flags: list[MaskingFlag] = []
    white = {k: o for k, o in outs.items() if o.access == "white-box"}

    def same(a: float, b: float) -> bool:
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)

    for k, o in outs.items():
        if o.access == "white-box" or o.norm == "unbounded":
            continue
        peers = [w for w, wo in white.items() if wo.norm == o.norm and wo.eps >= o.eps * (1 - 1e-6)]
        if not peers:
            continue
        union = torch.zeros_like(cc)
        for w in peers:
            union = union | outs[w].success.bool()
        r_white = int((union & cc).sum()) / n_cc
        if rate[k] > r_white + tol:
            flags.append(MaskingFlag(f"{o.access}>white-box", (k, *peers),
                                     f"{o.access} attack '{k}' broke {rate[k]:.1%} of clean-correct samples, "
                                     f"white-box attacks ({', '.join(peers)}) with the same budget together "
                                     f"only {r_white:.1%}"))
    names = list(white)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            oa, ob = white[a], white[b]
            if oa.attack != ob.attack or oa.norm != ob.norm or oa.loss != ob.loss or oa.norm == "unbounded":
                continue
            if same(oa.eps, ob.eps) and oa.steps is not None and ob.steps is not None and oa.steps != ob.steps:
                few, many = (a, b) if oa.steps < ob.steps else (b, a)
                if acc[many] > acc[few] + tol:
                    flags.append(MaskingFlag("more-steps", (few, many),
                                             f"accuracy rises with more steps: '{few}' ({white[few].steps} steps) "
                                             f"{acc[few]:.1%} < '{many}' ({white[many].steps} steps) {acc[many]:.1%}"))
            if oa.steps == ob.steps and not same(oa.eps, ob.eps):
                small, large = (a, b) if oa.eps < ob.eps else (b, a)
                if acc[large] > acc[small] + tol:
                    flags.append(MaskingFlag("larger-eps", (small, large),
                                             f"accuracy rises with a larger eps: '{small}' (eps {white[small].eps:.4g}) "
                                             f"{acc[small]:.1%} < '{large}' (eps {white[large].eps:.4g}) {acc[large]:.1%}"))
    for f, of in white.items():
        if of.attack != "fgsm":
            continue
        for p, op in white.items():
            if p == f or op.norm != of.norm or not (op.steps or 0) > 1 or op.eps < of.eps * (1 - 1e-6):
                continue
            if op.alpha is not None and op.alpha * op.steps < of.eps * (1 - 1e-6):
                continue  # its steps cannot even reach FGSM's perturbation size
            if acc[f] + tol < acc[p]:
                flags.append(MaskingFlag("fgsm>iterative", (f, p),
                                         f"single-step '{f}' ({acc[f]:.1%} accuracy) is stronger than iterative "
                                         f"'{p}' ({acc[p]:.1%}) with at least the same budget"))
    return flags


# -- the evaluation loop ----------------------------------------------------------------------------
def _batches(data: Any, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(torch.is_tensor(t) for t in data):
        x, y = data
        if len(x) != len(y):
            raise AttackError(f"robust evaluation: {len(x)} images but {len(y)} labels")
        for i in range(0, len(x), batch_size):
            yield x[i:i + batch_size], y[i:i + batch_size]
        return
    for batch in data:
        if isinstance(batch, Mapping):
            if "image" not in batch or "label" not in batch:
                raise AttackError("robust evaluation: dict batches need 'image' and 'label'")
            yield batch["image"], batch["label"]
        elif isinstance(batch, (tuple, list)) and len(batch) >= 2:
            yield batch[0], batch[1]
        else:
            raise AttackError(f"robust evaluation: cannot read a batch of type {type(batch).__name__} "
                              f"(want dicts with 'image'/'label' or (images, labels) pairs)")


def _labels(y: torch.Tensor) -> torch.Tensor:
    if torch.is_floating_point(y):
        if not torch.equal(y, y.round()):
            raise AttackError("robust evaluation: labels must be class indices (got non-integer floats)")
        y = y.round()
    return y.long().view(-1)


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, logits_fn: Callable) -> torch.Tensor:
    was = model.training
    try:
        model.eval()
        return logits_fn(model(x)).detach()
    finally:
        model.train(was)


def _resolve(model: nn.Module, attacks: Any, logits_fn: Callable, eps: float | None, norm: str | None,
             seed: int) -> tuple[dict[str, Attack], dict[str, str]]:
    if isinstance(attacks, Mapping):
        return dict(attacks), dict(getattr(attacks, "skipped", {}))
    if isinstance(attacks, str):
        attacks = [attacks]
    built: dict[str, Attack] = {}
    skipped: dict[str, str] = {}
    for item in attacks:
        if isinstance(item, Attack):
            built[item.name] = item
        elif item in SUITE_NAMES:
            suite = standard_suite(model, eps=8 / 255 if eps is None else eps, norm=norm or "Linf", seed=seed,
                                   logits_fn=logits_fn)
            built.update(suite)
            skipped.update(suite.skipped)
        else:
            built[item] = build_attack(item, model, eps=eps, norm=norm, seed=seed, logits_fn=logits_fn)
    return built, skipped


def robust_evaluate(model: nn.Module, data: Any, attacks: Mapping[str, Attack] | Iterable[str | Attack] | str, *,
                    logits_fn: Callable[[Any], torch.Tensor] = default_logits,
                    device: str | torch.device | None = None, max_samples: int | None = None,
                    eps: float | None = None, norm: str | None = None, seed: int = 0,
                    masking_tol: float = 0.02, batch_size: int = 128,
                    progress: Callable[[int], None] | None = None) -> RobustReport:
    """Evaluate ``model`` on ``data`` under each attack.

    ``data``: a DataLoader (or any iterable) of dict batches with ``image``/``label`` or of
    ``(images, labels)`` pairs, or one ``(images, labels)`` pair of tensors (cut into
    ``batch_size`` chunks). Float labels (binary detectors) are converted to class indices.
    ``attacks``: ``{name: Attack}`` (e.g. :func:`standard_suite`), or registered names (built with
    ``eps``/``norm``/``seed``; ``"suite"`` expands to the standard suite). ``device``: where the
    model and batches go (default: the model's). ``progress(n_done)`` is called after each batch.
    """
    if max_samples is not None and max_samples < 1:
        raise AttackError(f"robust evaluation: max_samples must be >= 1, got {max_samples}")
    dev = torch.device(device) if device is not None else _model_device(model)
    model.to(dev)
    attack_map, skipped = _resolve(model, attacks, logits_fn, eps, norm, seed)
    if not attack_map:
        raise AttackError("robust evaluation: no attacks to run")
    for name, atk in attack_map.items():
        if not isinstance(atk, Attack):
            raise AttackError(f"robust evaluation: '{name}' is not an Attack ({type(atk).__name__})")
        if atk.targeted:
            raise AttackError(f"robust evaluation runs untargeted attacks; '{name}' is targeted")
    active = dict(attack_map)
    correct_parts: list[torch.Tensor] = []
    parts: dict[str, dict[str, list[torch.Tensor]]] = {k: {"success": [], "linf": [], "l2": []} for k in active}
    seconds = {k: 0.0 for k in active}
    clean_seconds, done, k_classes = 0.0, 0, None
    for x, y in _batches(data, batch_size):
        if max_samples is not None:
            if done >= max_samples:
                break
            x, y = x[:max_samples - done], y[:max_samples - done]
        if x.shape[0] == 0:
            continue
        x = x.to(dev).float()
        y = _labels(y).to(dev)
        if x.min() < 0 or x.max() > 1:
            raise AttackError(f"robust evaluation: images must lie in [0, 1] (got range "
                              f"[{x.min().item():.3g}, {x.max().item():.3g}]); normalise inside the model")
        t0 = time.perf_counter()
        logits = _predict(model, x, logits_fn)
        clean_seconds += time.perf_counter() - t0
        k_classes = num_classes(logits)
        correct = predict_labels(logits) == y
        correct_parts.append(correct.cpu())
        idx = correct.nonzero().squeeze(1)
        for name in list(active):
            atk = active[name]
            if k_classes < atk.min_classes:
                skipped[name] = f"needs >= {atk.min_classes} classes, the model has {k_classes}"
                del active[name]
                continue
            succ = torch.zeros(len(x), dtype=torch.bool)
            linf = torch.zeros(len(x))
            l2 = torch.zeros(len(x))
            if idx.numel():
                xs, ys = x[idx], y[idx]
                t0 = time.perf_counter()
                x_adv = atk(xs, ys)
                seconds[name] += time.perf_counter() - t0
                _check_threat_model(name, atk, xs, x_adv)
                ok = predict_labels(_predict(model, x_adv, logits_fn)) != ys
                delta = (x_adv - xs).flatten(1).float()
                succ[idx.cpu()] = ok.cpu()
                linf[idx.cpu()] = delta.abs().amax(1).cpu()
                l2[idx.cpu()] = delta.norm(dim=1).cpu()
            parts[name]["success"].append(succ)
            parts[name]["linf"].append(linf)
            parts[name]["l2"].append(l2)
        done += len(x)
        if progress is not None:
            progress(done)
    if not correct_parts:
        raise AttackError("robust evaluation: no samples")
    outcomes = {}
    for name in active:
        atk = attack_map[name]
        outcomes[name] = AttackOutcome(
            name=name, success=torch.cat(parts[name]["success"]), linf=torch.cat(parts[name]["linf"]),
            l2=torch.cat(parts[name]["l2"]), seconds=seconds[name], attack=atk.name, access=atk.access,
            norm=atk.norm, eps=atk.eps, steps=getattr(atk, "steps", None), alpha=getattr(atk, "alpha", None),
            loss=getattr(atk.loss_fn, "__name__", type(atk.loss_fn).__name__), config=atk.config())
        for comp, why in getattr(atk, "skipped", {}).items():
            skipped[f"{name}/{comp}"] = why
    report = RobustReport(torch.cat(correct_parts), outcomes, skipped, clean_seconds, masking_tol)
    norms = {(o.norm, round(o.eps, 8)) for o in outcomes.values() if o.norm != "unbounded"}
    if len(norms) > 1:
        report.notes.append("the worst case mixes threat models: "
                            + ", ".join(f"{n} eps {e:.4g}" for n, e in sorted(norms)))
    report.gradient_masking = detect_gradient_masking(report)
    return report


def _check_threat_model(name: str, atk: Attack, x: torch.Tensor, x_adv: torch.Tensor) -> None:
    if x_adv.shape != x.shape:
        raise AttackError(f"attack '{name}' returned shape {tuple(x_adv.shape)} for inputs {tuple(x.shape)}")
    if x_adv.min() < -1e-6 or x_adv.max() > 1 + 1e-6:
        raise AttackError(f"attack '{name}' returned images outside [0, 1]")
    if atk.norm == "unbounded":
        return
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if atk.norm == "Linf" else delta.norm(dim=1)
    if bool((size > atk.eps * (1 + 1e-5) + 1e-6).any()):
        raise AttackError(f"attack '{name}' left its {atk.norm} ball (max {float(size.max()):.6g} > eps {atk.eps:.6g})")
