"""What ``visec attack`` does: load a run's model, attack its test split, write a result card."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from torch import nn

from visec.attacks.base import AttackError
from visec.attacks.evaluate import robust_evaluate
from visec.attacks.report import RobustReport
from visec.attacks.suite import SUITE_NAMES, attack_params, build_attack, standard_suite
from visec.config import DEFAULT_EPS, RunConfig, budget_label, parse_budget


def run_budget(cfg: RunConfig, eps: str | float | None = None) -> float:
    """The budget ``visec attack`` uses: ``eps`` when given (parsed), else the budget the run was
    trained at (its ``model.eps``, for adversarially trained methods), else :data:`DEFAULT_EPS`."""
    if eps is not None:
        return parse_budget(eps, "eps")
    trained = cfg.model.get("eps")
    return parse_budget(trained, "model.eps") if trained is not None else DEFAULT_EPS


def skipped_notes(skipped: dict[str, list]) -> list[str]:
    """Card notes for the unreadable images a data module skipped: their count, then each by name."""
    n = sum(len(v) for v in skipped.values())
    if not n:
        return []
    return [f"{n} unreadable image(s) skipped"] + [f"skipped {p} ({split}): {why}"
                                                   for split, items in skipped.items() for p, why in items]


ATTACKABLE_FAMILIES = ("forgery detection", "adversarial robustness")


def model_of(module: nn.Module) -> nn.Module:
    """The pure network of a method's LightningModule (``.net``), or the module itself."""
    net = getattr(module, "net", None)
    return net if isinstance(net, nn.Module) else module


def run_attack(run_dir: str | Path, method: str = "pgd", *, checkpoint: str | Path | None = None,
               data: str | Path | None = None, split: str | None = None, eps: str | float | None = None,
               steps: int | None = None, alpha: str | float | None = None, norm: str | None = None,
               max_samples: int | None = None, out: str | Path | None = None, device: str | None = None,
               seed: int = 0, surrogate: str | Path | None = None,
               progress: Callable[[int], None] | None = None) -> tuple[RobustReport, Any, Path]:
    """Attack a trained run's test split with ``method`` (a registered attack or ``suite``).

    ``eps`` defaults to the budget the run was trained at (:func:`run_budget`). Returns ``(report,
    card, card_path)``; the card goes to ``OUT/cards`` (default ``RUN_DIR/attacks/cards``) with a
    per-sample CSV beside it; its protocol names the budget by :func:`visec.config.budget_label`.
    """
    from visec.engine.engine import BEST, Engine, build_datamodule, card_name

    from visec.errors import ConfigError
    from visec.runtime import check_device

    run_dir = Path(run_dir)
    # every option is checked before the run is loaded, each error naming its own option
    eps_value = parse_budget(eps, "eps") if eps is not None else None
    alpha_value = parse_budget(alpha, "alpha (the step size)") if alpha is not None else None
    if alpha_value == 0:
        raise ConfigError("alpha (the step size) must be > 0, got '0'")
    for key, value in (("steps", steps), ("max_samples", max_samples)):
        if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
            raise ConfigError(f"{key} must be a whole number >= 1, got {value!r}")
    if device is not None:
        device = check_device(device)
    engine = Engine.from_run(run_dir)
    from visec.engine.method import method_of

    family = method_of(engine.cfg.method).family
    if family not in ATTACKABLE_FAMILIES:  # robust accuracy needs a classifier: logits against labels
        raise ConfigError(f"visec attack measures the robust accuracy of classifiers (forgery detectors, "
                          f"adversarially trained models); '{engine.cfg.method}' is {family}")
    eps_value = run_budget(engine.cfg, eps_value)
    module, meta = engine.load_module(checkpoint)
    model = model_of(module).eval()
    updates = {k: v for k, v in (("manifest", Path(data) if data else None), ("test_split", split)) if v is not None}
    data_cfg = engine.cfg.data.model_copy(update=updates)
    dm = build_datamodule(engine.cfg, data_cfg)
    if hasattr(dm, "setup"):
        dm.setup("test")
    loader = dm.test_dataloader()

    if method in SUITE_NAMES:
        for name, val in (("alpha", alpha), ("surrogate", surrogate)):
            if val is not None:
                raise AttackError(f"--{name} does not apply to the standard suite")
        if norm not in (None, "Linf", "L2"):
            raise AttackError(f"the standard suite takes norm Linf or L2, got '{norm}'")
        attacks = standard_suite(model, eps=eps_value, norm=norm or "Linf", steps=steps or 20, seed=seed,
                                 apgd_steps=steps or 100)
        label = "suite"
    else:
        extra: dict[str, Any] = {}
        if surrogate is not None:
            sur_engine = Engine.from_run(surrogate)
            extra["surrogate"] = model_of(sur_engine.load_module()[0]).eval()
        from visec.registry import ATTACKS

        cls = ATTACKS.get(method).obj
        name = method
        if steps is not None and "steps" in attack_params(cls):  # pgd -> pgd20, cw_l2 -> cw_l2_20
            name = f"{method}_{steps}" if method[-1].isdigit() else f"{method}{steps}"
        attacks = {name: build_attack(method, model, eps=eps_value, norm=norm, steps=steps, alpha=alpha_value,
                                      seed=seed, **extra)}
        label = name
    report = robust_evaluate(model, loader, attacks, device=device, max_samples=max_samples, seed=seed,
                             progress=progress)
    skipped = dict(getattr(dm, "skipped", {}) or {})  # unreadable images, as `visec test` reports them
    data_name = str(data_cfg.manifest or data_cfg.dataset or "none")
    threat = next(iter(attacks.values()))
    eps_text = budget_label(eps_value) if threat.norm != "unbounded" else "min-norm"
    card = report.to_card(
        method=card_name(engine.cfg), data=f"{data_name}:{data_cfg.test_split}",
        train_data=str(engine.cfg.data.manifest or engine.cfg.data.dataset or "none"),
        protocol=f"attack-{label}-{threat.norm}-{eps_text}", seed=seed, config=engine.cfg.to_dict(),
        selection=meta.get("selection", engine.cfg.train.select_on),
        extra={"run_dir": str(run_dir), "checkpoint": str(checkpoint or run_dir / BEST), "epoch": meta.get("epoch"),
               "attack_method": method, "max_samples": max_samples,
               "skipped": {k: [list(x) for x in v] for k, v in skipped.items()}},
        notes=skipped_notes(skipped),
    )
    out_dir = Path(out) if out is not None else run_dir / "attacks"
    path = card.save(out_dir / "cards")
    report.per_sample().to_csv(path.with_name(path.name.replace(".card.json", ".per_sample.csv")), index=False)
    return report, card, path
