"""Paired ablations: does each detector beat its own backbone with its mechanism switched off?

Every forgery detector declares its plain counterpart (:class:`visec.engine.method.Counterpart`:
the same config with the mechanism off). ``visec bench --method NAME --ablation`` trains the method
and its counterpart on the same data, with the same seeds and schedule, on the intra-dataset
protocol and on every leave-one-manipulation-out protocol, and reports method minus counterpart
with a **paired** bootstrap interval (:func:`visec.metrics.paired_difference`: whole videos
resampled, the same resample for both models) per seed, and the mean and spread over seeds.
A counterpart that only changes the test (DeepFidelity's stage-A score) is the method's own
checkpoint scored again (on every protocol); a method's own test-time variants (ACMF's FAC) are
compared with the counterpart too, on the intra-dataset protocol.

``visec bench --suite ablation`` does this for every detector that declares a counterpart, at the
scale the issue asked for (:data:`SUITE`): the embedded data at 128 px with 3x the identities,
3 seeds, ImageNet MobileNetV2 wherever the architecture takes it, and a fixed thread count so the
numbers do not move with the machine's load. It also checks the data for shortcuts
(:mod:`visec.report.shortcuts`). Runs resume like every bench: a finished run is not trained again.
The intra-dataset runs of every seed come first, then the leave-one-out runs, so a stopped suite
has the most complete comparisons it could.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from visec.apps.bench import FIT_DONE, Entrant, _Plan, _run, forgery_methods, images_digest, run_dir_of
from visec.cards import ResultCard
from visec.data.datamodule import fake_families
from visec.data.manifest import read_manifest
from visec.errors import ConfigError
from visec.registry import BENCHES, METHODS
from visec.report.ablation import AblationPair, ablation_report, paired_rows, seed_summary

SEEDS = 3


@dataclass(frozen=True)
class SuiteSettings:
    """The scale of ``visec bench --suite ablation``."""

    size: int = 128  # image side (the 64 px GAN faces up-sampled: the embedded data's own limit)
    identities: int = 1500  # 3x the demo's 500: 6,008 images
    seeds: int = SEEDS
    threads: int = 2  # fixed, recorded on every card: thread count changes the numbers
    # the methods' own test-time variants (ACMF's FAC: ~10 min per test here) on the first seed only
    variant_seeds: int = 1
    # per method, on top of its shipped default config: what 128 px and a 2-core budget need
    methods: dict[str, tuple[str, ...]] = field(default_factory=lambda: {
        # the paper's Xception has no offline ImageNet weights: ImageNet MobileNetV2 with the
        # classifier/mobilenetv2 recipe (the demo's strongest detector), for both entrants
        "acmf": ("model.backbone=mobilenetv2", "model.weights=imagenet", "model.dropout=0.2",
                 "data.batch_size=32", "train.lr=0.001", "train.max_epochs=2"),
        # 3x3 grid of 64 px patches at 128 px (stride 32), as 32 px patches at 64 px
        "hfc_mffd": ("model.patch_size=64", "train.max_epochs=1"),
        # stride-8 stem keeps the 16x16 stage-1 map (where SSAA mirrors) of the 64 px config
        "deepfidelity": ("model.patch_sizes=[8,2,2,2]", "train.max_epochs=6"),
        # FedForgery's counterpart (model.generator=none) is declared too; its paper's claim is about
        # federated training, so it is ablated on request (`--method fedforgery --ablation`), not here
    })


SUITE = SuiteSettings()


def counterpart_of(method: str):
    """The registered counterpart of ``method`` (a clear error when it declares none)."""
    if method not in forgery_methods():
        from visec.registry import unknown_name

        raise ConfigError(unknown_name("forgery-detection method", method, forgery_methods()))
    cp = METHODS.get(method).obj.counterpart
    if cp is None:
        raise ConfigError(f"'{method}' declares no counterpart to ablate against "
                          f"(Method.counterpart; methods with one: {', '.join(ablation_methods())})")
    return cp


def ablation_methods() -> list[str]:
    """The forgery detectors that declare a counterpart."""
    return [m for m in forgery_methods() if METHODS.get(m).obj.counterpart is not None]


def ablation_entrants(method: str, seed: int, overrides: tuple[str, ...] = (), variants: bool = True) -> list[Entrant]:
    """The method (with its test-time variants unless ``variants`` is false) and its counterpart,
    trained with ``seed``; labels ``METHOD-seedK`` and ``METHOD-counterpart-seedK``. No robustness
    sweep, no attacks; leave-one-out on."""
    cp = counterpart_of(method)
    spec = METHODS.get(method).obj
    # the method's own test-time variants (ACMF's FAC: about 7 epochs' worth of compute per test) on
    # the intra protocol; a test-only counterpart on every protocol
    out = [Entrant(method, f"{method}-seed{seed}", tuple(overrides), sweep=False, seed=seed,
                   test_variants=tuple(tuple(v) for v in spec.bench_tests) if variants else (),
                   protocol_variants=(tuple(cp.overrides),) if cp.test_only else ())]
    if not cp.test_only:
        out.append(Entrant(method, f"{method}-counterpart-seed{seed}", (*overrides, *cp.overrides), sweep=False,
                           seed=seed))
    return out


def _plans(methods: dict[str, tuple[str, ...]], seeds: list[int], families: list[str],
           variant_seeds: int | None = None) -> list[_Plan]:
    """Intra runs of every seed first, then leave-one-out, so a stopped suite keeps whole pairs.
    The methods' own test-time variants run on the first ``variant_seeds`` seeds (None: all)."""
    protocols = [("intra", [])] + [(f"leave-out:{f}", [f"data.holdout={f}"]) for f in families]
    plans = []
    for protocol, extra in protocols:
        for k, seed in enumerate(seeds):
            variants = variant_seeds is None or k < variant_seeds
            for method, overrides in methods.items():
                plans += [_Plan(e, protocol, list(extra), [None])
                          for e in ablation_entrants(method, seed, overrides, variants)]
    return plans


def _cards(run_dir: Path) -> list[tuple[ResultCard, Path]]:
    return [(ResultCard.load(p), p) for p in sorted((run_dir / "cards").glob("*.card.json"))]


def pairs_of(out: Path, method: str, seeds: list[int], protocols: list[str]) -> list[AblationPair]:
    """Every (model, counterpart) comparison whose two cards exist: the method's plain card and each
    of its test-time variants against the counterpart's, per seed and protocol."""
    cp = counterpart_of(method)
    pairs = []
    for seed in seeds:
        for protocol in protocols:
            sub = protocol.replace(":", "-")
            mine = _cards(out / "runs" / f"{method}-seed{seed}" / sub)
            if cp.test_only and mine:  # the counterpart is the variant named as the counterpart's config names it
                name = _card_name(method, cp.overrides, out, seed, sub)
                theirs = [(c, p) for c, p in mine if c.method == name]
                mine = [(c, p) for c, p in mine if c.method != name]
            elif cp.test_only:
                theirs = []
            else:
                theirs = _cards(out / "runs" / f"{method}-counterpart-seed{seed}" / sub)
            theirs = [(c, p) for c, p in theirs if c.protocol == protocol]
            if len(theirs) != 1:
                continue
            b_card, b_path = theirs[0]
            for a_card, a_path in mine:
                if a_card.protocol == protocol:
                    pairs.append(AblationPair(method, a_card.method, b_card.method, seed, protocol, a_path, b_path,
                                              cp.mechanism))
    return pairs


def _card_name(method: str, overrides: tuple[str, ...], out: Path, seed: int, sub: str) -> str:
    from visec.config import load_config
    from visec.engine.engine import CONFIG_FILE, card_name

    return card_name(load_config(out / "runs" / f"{method}-seed{seed}" / sub / CONFIG_FILE, list(overrides)))


def ablation_bench(out: str | Path, methods: dict[str, tuple[str, ...]], *, seed: int = 0, seeds: int = SEEDS,
                   console: Console | None = None, data: str | Path | None = None,
                   overrides: list[str] | None = None, size: int | None = None, identities: int | None = None,
                   shortcuts: bool = True, title: str = "Paired ablations", train: bool = True,
                   variant_seeds: int | None = None) -> list[Path]:
    """Train every method of ``methods`` (name -> its extra overrides) and its counterpart over
    ``seeds`` training seeds (``seed``, ``seed+1``, ...) on intra and leave-one-out, then write into
    ``out``: ``ablation.csv`` (per seed), ``ablation_seeds.csv`` (mean and spread over seeds),
    ``seeds.csv`` (every model's AUC over seeds beside its first seed's bootstrap interval),
    ``shortcuts.json`` and ``ablation.html``. ``train=False`` trains nothing: it reports the runs that
    have finished (a long suite stopped part-way). Returns the card paths."""
    from visec.apps.bench import embedded_data

    out = Path(out)
    console = console or Console()
    start = time.perf_counter()
    for m in methods:
        counterpart_of(m)
    if data is not None:
        manifest = Path(data)
        manifest = manifest / "manifest.jsonl" if manifest.is_dir() else manifest
    else:
        manifest = embedded_data(out / "data", seed, console, size=size, identities=identities)
    m = read_manifest(manifest)
    families = fake_families(m.df)
    families = families if len(families) > 1 else []
    images = images_digest(m.df)
    seed_list = [seed + k for k in range(seeds)]
    plans = _plans(methods, seed_list, families, variant_seeds)
    for k, plan in enumerate(plans, 1):
        if train or (run_dir_of(out, plan) / FIT_DONE).is_file():
            _run(plan, manifest, images, out, seed, list(overrides or []), console, f"[{k}/{len(plans)}]")
    protocols = ["intra", *(f"leave-out:{f}" for f in families)]
    pairs = [p for name in methods for p in pairs_of(out, name, seed_list, protocols)]
    rows = paired_rows(pairs)
    summary = seed_summary(rows)
    rows.to_csv(out / "ablation.csv", index=False)
    summary.to_csv(out / "ablation_seeds.csv", index=False)
    checks = None
    if shortcuts:
        from visec.report.shortcuts import shortcut_checks

        intra = [(c, p) for name in methods for c, p in _cards(out / "runs" / f"{name}-seed{seed}" / "intra")]
        checks = shortcut_checks(manifest, intra)
        (out / "shortcuts.json").write_text(json.dumps(checks, indent=2, default=float) + "\n")
    trained = sum((run_dir_of(out, p) / FIT_DONE).is_file() for p in plans)
    from visec.report.leaderboard import seed_spread

    cards = sorted(out.glob("runs/*/*/cards/*.card.json"))
    spread = seed_spread([ResultCard.load(p) for p in cards]) if cards else None
    if spread is not None:
        spread.to_csv(out / "seeds.csv", index=False)
    report = ablation_report(rows, summary, checks, spread=spread, title=title,
                             context=f"{manifest} ({len(m.df)} images); {len(seed_list)} training seed(s) "
                                     f"{seed_list}; {trained} of {len(plans)} runs trained")
    path = report.write(out / "ablation.html")
    console.print(summary.to_string(index=False) if len(summary) else "no complete pair yet")
    console.print(f"done in {time.perf_counter() - start:.0f} s; report: {path}")
    return cards


def method_ablation(out: str | Path, method: str, *, seed: int = 0, seeds: int = SEEDS, console: Console | None = None,
                    data: str | Path | None = None, overrides: list[str] | None = None, train: bool = True) -> list[Path]:
    """``visec bench --method NAME --ablation``: one method and its counterpart on the default embedded
    data (or ``data``), with the method's shipped config."""
    return ablation_bench(out, {method: ()}, seed=seed, seeds=seeds, console=console, data=data,
                          overrides=overrides, title=f"Paired ablation: {method}", train=train)


@BENCHES.register("ablation", summary="every detector against its own counterpart (mechanism off): 128 px, "
                                      "3x data, 3 seeds, intra + leave-one-out, paired bootstrap, shortcut checks")
def ablation_suite(out: str | Path, *, seed: int = 0, console: Console | None = None, data: str | Path | None = None,
                   overrides: list[str] | None = None, settings: SuiteSettings = SUITE, train: bool = True) -> list[Path]:
    methods = dict(settings.methods)
    size = [] if data is not None else [f"data.image_size={settings.size}"]
    methods = {m: (*size, f"train.threads={settings.threads}", *extra) for m, extra in methods.items()}
    return ablation_bench(out, methods, seed=seed, seeds=settings.seeds, console=console, data=data,
                          overrides=overrides, size=settings.size, identities=settings.identities,
                          title="Ablation suite: every detector against its own counterpart", train=train,
                          variant_seeds=settings.variant_seeds)
