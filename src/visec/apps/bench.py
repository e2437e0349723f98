"""Bench jobs: what ``visec bench`` runs (``make demo`` runs the default one, ``forgery``).

A bench job generates or reads its data, trains and evaluates, writes result cards and an HTML
report into ``out``, and returns the card paths. Jobs are registered in ``BENCHES`` by name; any
method of the forgery-detection family can also be benched by name (``visec bench --method xception``).

The forgery job runs, for each entrant (a method plus config overrides):

1. **intra-dataset**: train on the train split (every manipulation family), select the checkpoint
   on val, test on test;
2. **robustness sweep**: the same checkpoint on the test split under JPEG 90/70/50, blur and
   resize (:data:`visec.data.corruptions.ROBUSTNESS_SWEEP`), one card each;
3. **leave-one-manipulation-out** (entrants with ``loo``): for each manipulation family, train and
   select without it, test on real test images + that family only;
4. **attacked** (entrants with ``attacks``): the intra checkpoint on the test split with its fakes
   pushed towards "real" (:mod:`visec.attacks.detector`): PGD-10 at L-inf 1, 2, 4 and 8/255 and at
   L2 0.5, and a transfer from the bench's Xception (:data:`DEMO_ATTACKS`); ``--method NAME`` adds
   APGD-CE, Square and the framing direction (:data:`FULL_ATTACKS`). One card each, named like the
   corruption cards (``intra+pgd-linf-4/255``).

Runs live in ``out/runs/<entrant>/<protocol>``. A finished run is not trained again and a card
that exists is not recomputed, so an interrupted bench picks up where it stopped (a half-trained
run resumes from its ``last.ckpt``). The report covers every card under ``out``, so benching
another method into the same folder adds it to the same leaderboard.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from rich.console import Console
from rich.markup import escape

from visec.attacks.detector import (L2_BUDGET, LINF_BUDGETS, DetectorAttackSpec, attack_rate,
                                    format_budget)
from visec.config import load_config
from visec.data.corruptions import ROBUSTNESS_SWEEP
from visec.data.datamodule import fake_families
from visec.data.manifest import read_manifest
from visec.engine import Engine
from visec.engine.engine import CONFIG_FILE, STATE, card_name, surrogate_mismatch
from visec.errors import ConfigError, DivergedError
from visec.registry import BENCHES, METHODS
from visec.cards import ResultCard

FIT_DONE = "fit.json"


@dataclass(frozen=True)
class Entrant:
    """One model in a bench: a shipped config (``method`` or ``method/variant``), overrides, a label."""

    config: str
    label: str
    overrides: tuple[str, ...] = ()
    loo: bool = True  # also run leave-one-manipulation-out
    sweep: bool = True  # also run the robustness sweep
    # test-time variants: model overrides that change only how a trained checkpoint is tested
    # (ACMF's per-video adaptation: ("model.fac=true",)); each adds one card, on the clean test
    # split of the intra-dataset run
    test_variants: tuple[tuple[str, ...], ...] = ()
    # attacked tests of the intra checkpoint (visec.attacks.detector specs, one card each);
    # "transfer" without a source means: crafted on this bench's Xception baseline
    attacks: tuple[str, ...] = ()
    seed: int | None = None  # training seed (None: the bench's seed); the data stay those of the bench seed
    # test variants on every protocol, not only on intra (the ablation's test-only counterparts)
    protocol_variants: tuple[tuple[str, ...], ...] = ()


#: the attacked columns of `visec bench`: white-box PGD-10 at four L-inf budgets and one L2 budget,
#: and a transfer from the Xception baseline (fakes pushed towards real)
DEMO_ATTACKS = (*(f"pgd,eps={format_budget(e)}" for e in LINF_BUDGETS), f"pgd,norm=l2,eps={L2_BUDGET:g}",
                "transfer,eps=4/255")
#: `visec bench --method NAME` adds APGD-CE, Square (200 queries) and the framing direction
FULL_ATTACKS = (*DEMO_ATTACKS, "apgd_ce,eps=4/255", "square,eps=4/255,n_queries=200",
                "pgd,eps=4/255,direction=frame")
TRANSFER_SOURCE = "xception"  # the entrant whose intra run is the transfer surrogate


# `visec bench` with no arguments, sized to finish in about 12 minutes on 2 CPU cores: the
# Xception baseline (from random weights: no ImageNet Xception ships offline) on the intra-dataset
# protocol and the robustness sweep; MobileNetV2 from the shipped ImageNet weights on every protocol
# (leave-one-out included: 3 more trainings, about 1 minute for it, about 8 minutes for Xception);
# and the same MobileNetV2 recipe from random weights, to show what pretraining buys.
# `visec bench --method xception` runs every protocol for Xception.
DEFAULT_ENTRANTS = (
    Entrant("xception", "xception", loo=False, attacks=DEMO_ATTACKS),
    Entrant("classifier/mobilenetv2", "mobilenetv2-imagenet", ("model.weights=imagenet",), attacks=DEMO_ATTACKS),
    Entrant("classifier/mobilenetv2", "mobilenetv2-scratch", loo=False),
    # the best demo detector adversarially trained (PGD-AT, L-inf 4/255, 3 steps): clean vs attacked AUC
    Entrant("classifier/mobilenetv2", "mobilenetv2-imagenet-pgd_at", ("model.weights=imagenet",
                                                                      "train.adversarial=pgd_at"),
            loo=False, sweep=False, attacks=DEMO_ATTACKS),
)


def forgery_methods() -> list[str]:
    return [e.name for e in METHODS.entries() if e.obj.bench == "forgery"]


def method_entrants(method: str) -> list[Entrant]:
    """The entrants for ``visec bench --method NAME``: its shipped default config on every protocol,
    with the test-time variants the method registers (``bench_tests``), plus the extra entrants it
    registers (``bench_entrants``: ``(label suffix, overrides, loo, sweep[, attacked])``, e.g. other
    modalities; attacked by :data:`DEMO_ATTACKS` unless ``attacked`` is false)."""
    if method not in forgery_methods():
        from visec.registry import unknown_name

        raise ConfigError(unknown_name("forgery-detection method or bench job", method,
                                       [*forgery_methods(), *BENCHES.names()]))
    spec = METHODS.get(method).obj
    out = [Entrant(method, method, test_variants=tuple(tuple(v) for v in spec.bench_tests), attacks=FULL_ATTACKS)]
    for suffix, overrides, loo, sweep, *attacked in spec.bench_entrants:
        out.append(Entrant(method, f"{method}-{suffix}", tuple(overrides), loo=loo, sweep=sweep,
                           attacks=DEMO_ATTACKS if not attacked or attacked[0] else ()))
    return out


def embedded_data(out: Path, seed: int, console: Console, *, size: int | None = None,
                  identities: int | None = None) -> Path:
    """The embedded face-forgery data in ``out`` (generated once, cached): the demo's 64 px and 500
    identities unless ``size`` / ``identities`` say otherwise."""
    from rich.progress import Progress

    from visec.data.synthetic import make_synth_dataset

    extra = {k: v for k, v in (("size", size), ("identities", identities)) if v is not None}
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("generating the embedded face-forgery data", total=None)
        report = make_synth_dataset(out, seed=seed, progress=lambda d, t: bar.update(task, completed=d, total=t),
                                    **extra)
    how = "cached" if report.cached else f"generated in {report.seconds:.1f} s"
    console.print(f"data: {report.images} images ({', '.join(f'{k} {v}' for k, v in report.counts.items())}), "
                  f"{how}: {report.manifest}")
    return report.manifest


@dataclass
class _Plan:
    entrant: Entrant
    protocol: str
    overrides: list[str]
    tests: list[str | None] = field(default_factory=list)  # corruptions to test (None = clean)


def _plans(entrants: list[Entrant], families: list[str]) -> list[_Plan]:
    plans = []
    for e in entrants:
        sweep = list(ROBUSTNESS_SWEEP) if e.sweep else []
        plans.append(_Plan(e, "intra", [], [None, *sweep]))
        if e.loo:
            plans += [_Plan(e, f"leave-out:{f}", [f"data.holdout={f}"], [None]) for f in families]
    return plans


def images_digest(df) -> str:
    """SHA-256 over a manifest's (path, split, label, image hash) rows: what a run was trained on."""
    import hashlib

    cols = [c for c in ("path", "split", "label", "sha256") if c in df.columns]
    rows = sorted("\t".join(str(v) for v in r) for r in df[cols].itertuples(index=False))
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def run_dir_of(out: Path, plan: _Plan) -> Path:
    """Where a plan's run lives: ``out/runs/<entrant label>/<protocol>`` (``:`` written ``-``)."""
    return out / "runs" / plan.entrant.label / plan.protocol.replace(":", "-")


def _run(plan: _Plan, manifest: Path, images: str, out: Path, seed: int, extra: list[str],
         console: Console, step: str) -> list[Path]:
    e = plan.entrant
    seed = seed if e.seed is None else e.seed
    run_dir = run_dir_of(out, plan)
    cfg = load_config(e.config, [f"data.manifest={manifest}", f"train.seed={seed}", *e.overrides,
                               *plan.overrides, *extra])
    engine = Engine(cfg, run_dir, progress=True)
    done, saved = run_dir / FIT_DONE, run_dir / CONFIG_FILE
    record = json.loads(done.read_text()) if done.is_file() else None
    restarts = cfg.fed is not None and record is None  # an unfinished federated run starts again
    if saved.is_file() and not restarts and yaml.safe_load(saved.read_text()) != cfg.to_dict():
        raise ConfigError(f"{run_dir} holds a run with another config; remove it or bench into "
                          f"another --out folder")
    if record is not None and record.get("images_sha256", images) != images:
        raise ConfigError(f"{run_dir} was trained on other images than {manifest} now holds; remove it "
                          f"or bench into another --out folder")
    if record is not None and record.get("diverged"):
        console.print(f"{step} {e.label} {plan.protocol}: diverged (no model to test; rounds in {run_dir})")
        return []
    if record is not None:
        console.print(f"{step} {e.label} {plan.protocol}: trained already ({run_dir})")
    else:
        resume = (run_dir / STATE).is_file()
        if not resume and run_dir.exists():  # stopped before its first checkpoint: start it again
            shutil.rmtree(run_dir)
        if cfg.fed is not None:  # a federated entrant: Flower's simulation (restarted, not resumed)
            fit = _federated_fit(cfg, run_dir, console, f"{step} {e.label} {plan.protocol}")
            if fit.get("diverged"):  # a measured outcome (a poisoned FedAvg): recorded, nothing to test
                done.write_text(json.dumps({"config": cfg.to_dict(), "images_sha256": images, **fit}, indent=2) + "\n")
                return []
        else:
            console.print(f"{step} {e.label} {plan.protocol}: {'resuming' if resume else 'training'} "
                          f"({cfg.train.max_epochs} epochs, {cfg.data.image_size} px)")
            fit = engine.fit(resume=resume)
        done.write_text(json.dumps({"config": cfg.to_dict(), "images_sha256": images, "best_epoch": fit["best_epoch"],
                                    "best_score": fit["best_score"],
                                    "fit_seconds": round(fit["fit_seconds"], 2)}, indent=2) + "\n")
    cards_dir = run_dir / "cards"
    have = {}
    for p in sorted(cards_dir.glob("*.card.json")) if cards_dir.is_dir() else []:
        c = ResultCard.load(p)
        have[(c.method, c.protocol)] = p
    tests = [(engine, corruption, None) for corruption in plan.tests]  # (engine, corruption, attack)
    variants = [*(e.test_variants if plan.protocol == "intra" else ()), *e.protocol_variants]
    for variant in variants:  # same checkpoint, other test
        vcfg = load_config(e.config, [f"data.manifest={manifest}", f"train.seed={seed}", *e.overrides,
                                      *plan.overrides, *extra, *variant])
        tests.append((Engine(vcfg, run_dir, progress=True), None, None))
    if plan.protocol == "intra":
        tests += [(engine, None, spec) for spec in _attack_specs(e, cfg, out, console)]
    cards = []
    for eng, corruption, attack in tests:
        protocol = plan.protocol + (f"+{corruption}" if corruption else "") + (f"+{attack[1]}" if attack else "")
        key = (card_name(eng.cfg), protocol)
        if key in have:
            cards.append(have[key])
            continue
        card = eng.test(protocol=protocol, corruption=corruption, attack=attack[0] if attack else None)
        auc = card.metrics["frame"]["auc"]["value"]
        line = f"    {escape(card.method + ' ' + protocol):<40} frame AUC {auc:.3f}"
        if attack:
            block = card.metrics["attack"]
            line += (f"  {'evasion' if block['direction'] == 'evade' else 'framing'} {attack_rate(block):.1%}"
                     f"  ({block['images_per_second']} faces/s)")
            if block.get("gradient_masking"):
                line += "  [gradient-masking flag]"
        console.print(line)
        cards.append(run_dir / "cards" / f"{card.slug()}.card.json")
    return cards


def _federated_fit(cfg, run_dir: Path, console: Console, what: str) -> dict:
    """Train a federated entrant (``fed`` in its config) in Flower's simulation; the engine's fit keys."""
    from visec.federated import require_flower

    require_flower()
    from visec.federated.server import run_federated

    fed = cfg.fed
    console.print(f"{what}: federated training ({fed.clients} clients x {fed.rounds} rounds x "
                  f"{fed.local_epochs} local epoch(s), {fed.label()}, {cfg.data.image_size} px)")
    if run_dir.exists():
        shutil.rmtree(run_dir)
    try:
        summary = run_federated(cfg, run_dir)
    except DivergedError as exc:
        console.print(f"    [yellow]{escape(str(exc))}[/yellow]")
        return {"diverged": True, "best_epoch": None, "best_score": None}
    used = "/".join(str(r.get("clients_used", "-")) for r in summary["rounds"] if r["round"] > 0)
    aucs = " ".join("diverged" if r["val_auc"] is None else f"{r['val_auc']:.3f}" for r in summary["rounds"])
    console.print(f"    global val AUC per round: {aucs}; clients used {used}")
    return {"best_epoch": summary["best_round"], "best_score": summary["best_val_auc"],
            "fit_seconds": summary["seconds"]}


def _attack_specs(e: Entrant, cfg, out: Path, console: Console) -> list[tuple[DetectorAttackSpec, str]]:
    """The entrant's attacks as ``(spec, protocol suffix)``; a transfer without a source is crafted on
    this bench's Xception baseline, and skipped, with a line saying so, where there is none or it
    takes other faces (another size or modality)."""
    specs = []
    for text in e.attacks:
        if text.split(",")[0].strip() == "transfer" and "source=" not in text:
            source = out / "runs" / TRANSFER_SOURCE / "intra"
            if e.label == TRANSFER_SOURCE:
                continue  # the surrogate itself: its white-box cards say more
            if not (source / FIT_DONE).is_file():
                console.print(f"    {e.label}: transfer attack skipped: no trained {TRANSFER_SOURCE} run "
                              f"in {out} to craft on (`visec bench` trains it)")
                continue
            why = surrogate_mismatch(load_config(source / CONFIG_FILE).data, cfg.data)
            if why:
                console.print(f"    {e.label}: transfer attack skipped: {TRANSFER_SOURCE} {why}")
                continue
            text += f",source={source}"
        spec = DetectorAttackSpec.parse(text)
        source_name = card_name(load_config(spec.source / CONFIG_FILE)) if spec.source else None
        specs.append((spec, spec.label(source_name)))
    return specs



def forgery_bench(out: str | Path, *, entrants: list[Entrant] | None = None, seed: int = 0,
                  console: Console | None = None, data: str | Path | None = None,
                  overrides: list[str] | None = None) -> list[Path]:
    """Run the forgery protocols for ``entrants`` (default: :data:`DEFAULT_ENTRANTS`) and write the report."""
    from visec.report.forgery import forgery_report, summary_table

    out = Path(out)
    console = console or Console()
    start = time.perf_counter()
    manifest = Path(data) if data else embedded_data(out / "data", seed, console)
    if manifest.is_dir():  # a dataset folder: its manifest
        manifest = manifest / "manifest.jsonl"
    m = read_manifest(manifest)
    families = fake_families(m.df)
    images = images_digest(m.df)  # what every run of this bench trains on
    plans = _plans(list(entrants or DEFAULT_ENTRANTS), families if len(families) > 1 else [])
    for k, plan in enumerate(plans, 1):
        _run(plan, manifest, images, out, seed, list(overrides or []), console, f"[{k}/{len(plans)}]")
    cards = sorted(out.glob("runs/*/*/cards/*.card.json"))
    report = forgery_report(cards, manifest)
    summary_table([ResultCard.load(p) for p in cards]).to_csv(out / "summary.csv", index=False)
    path = report.write(out / "report.html")
    console.print(f"done in {time.perf_counter() - start:.0f} s; report: {path}")
    return cards


@BENCHES.register("forgery", summary="default: embedded face-forgery data; Xception and MobileNetV2 "
                  "(ImageNet vs scratch); intra, leave-one-manipulation-out, robustness sweep; HTML report")
def default_bench(out: str | Path, *, seed: int = 0, console: Console | None = None,
                  data: str | Path | None = None, overrides: list[str] | None = None) -> list[Path]:
    return forgery_bench(out, seed=seed, console=console, data=data, overrides=overrides)
