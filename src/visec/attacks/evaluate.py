"""Robust evaluation (the loop; attacks are built in :mod:`~visec.attacks.suite`, results live in
:mod:`~visec.attacks.report`, masking checks in :mod:`~visec.attacks.masking`): clean and per-attack accuracy, per-sample worst case, norms, timings, and
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

import time
from typing import Any, Callable, Iterable, Iterator, Mapping

import torch
from torch import nn

from visec.attacks.base import Attack, AttackError, default_logits, num_classes, predict_labels
from visec.attacks.masking import detect_gradient_masking
from visec.attacks.report import AttackOutcome, RobustReport
from visec.attacks.suite import SUITE_NAMES, build_attack, standard_suite
from visec.config import DEFAULT_EPS


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
            suite = standard_suite(model, eps=DEFAULT_EPS if eps is None else eps, norm=norm or "Linf", seed=seed,
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
