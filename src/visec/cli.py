"""The one ``visec`` command. Every sub-command is a thin wrapper over the Python API."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from visec.errors import ConfigError, VisecError
from visec.options import CROP_SIZE, FRAMES, MARGIN, SEED

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="visec: train, evaluate, compare and attack visual-security methods.")
data_app = typer.Typer(no_args_is_help=True, help="Build and inspect dataset manifests.")
app.add_typer(data_app, name="data")
from visec.apps.tit_cli import tit_app  # noqa: E402  (typer and rich only; no torch)

app.add_typer(tit_app, name="tit")
from visec.apps.fed_cli import fed_app  # noqa: E402  (typer and rich only; Flower loads on use)

app.add_typer(fed_app, name="fed")
from visec.apps.analyze_cli import register as _register_analysis  # noqa: E402  (typer, rich, pydantic; no torch)

_register_analysis(app)
from visec.apps.retrieve import retrieve_cmd  # noqa: E402  (typer and rich only)

app.command("retrieve")(retrieve_cmd)
# Piped output (logs, CI, tests) gets wide lines instead of wrapped table cells.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

DEBUG_ENV = "VISEC_DEBUG"


def _version(value: bool) -> None:
    if value:
        import visec

        console.print(f"visec {visec.__version__}")
        raise typer.Exit()


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
          version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    if debug:
        os.environ[DEBUG_ENV] = "1"


# -- list --------------------------------------------------------------------------------------------
@app.command("list")
def list_cmd(kind: Optional[str] = typer.Argument(None, help="methods, backbones, datasets, face-detectors or attacks"),
             pattern: str = typer.Option("*", "--filter", "-f", help="Glob on names, e.g. 'eff*'.")) -> None:
    """List what is registered: methods, backbones, datasets, face detectors, attacks."""
    from visec.registry import REGISTRIES, unknown_name

    if kind is not None and kind not in REGISTRIES:
        raise VisecError(unknown_name("kind", kind, REGISTRIES))
    for name, reg in REGISTRIES.items():
        if kind and name != kind:
            continue
        table = Table(title=name, title_justify="left", show_lines=False)
        table.add_column("name", style="bold")
        table.add_column("description")
        entries = reg.entries(pattern)
        for e in entries:
            table.add_row(e.name, e.summary)
        if not entries:
            table.add_row("-", "(none registered yet)")
        console.print(table)


# -- data --------------------------------------------------------------------------------------------
@data_app.command("build")
def data_build(dataset: str = typer.Argument(..., help="Layout name (see `visec list datasets`)."),
               root: Path = typer.Option(..., "--root", help="The dataset folder as downloaded."),
               out: Optional[Path] = typer.Option(None, "--out", help="Manifest path (default ROOT/manifest.jsonl)."),
               option: list[str] = typer.Option([], "--option", "-o", help="Builder option key=value (repeatable)."),
               ) -> None:
    """Write a manifest from a published dataset layout (FF++, Celeb-DF, DFD, WildDeepfake, Seq-DeepFake, generic)."""
    from visec.config import parse_overrides
    from visec.data.builders import build_manifest, report_path
    from visec.data.manifest import read_manifest

    with err_console.status(f"building the {dataset} manifest (walking and hashing files) ..."):
        path = build_manifest(dataset, root, out, **parse_overrides(option))
    m = read_manifest(path, check_files=False)
    console.print(m.counts())
    console.print(f"manifest: {path} ({len(m)} rows)")
    for warning in json.loads(report_path(path).read_text(encoding="utf-8")).get("warnings", []):
        err_console.print(f"[yellow]warning: {escape(warning)}[/yellow]", highlight=False, soft_wrap=True)


@data_app.command("toy")
def data_toy(out: Path = typer.Option(Path("data/toy"), "--out", help="Output folder."),
             seed: int = typer.Option(0, "--seed", **SEED),
             size: int = typer.Option(32, "--size", min=8, max=1024, help="Image side in pixels.")) -> None:
    """Generate the tiny offline real-vs-spliced face set (LFW crops shipped with scikit-image)."""
    from visec.data.toy import make_toy_dataset
    from visec.paths import output_folder

    output_folder(out)

    path = make_toy_dataset(out, seed=seed, size=size)
    console.print(f"manifest: {path}")


@data_app.command("synth")
def data_synth(out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default data/synth, "
                                                  "data/captions for --kind captions, data/sketch for --kind sketch, "
                                                  "data/seqsynth for --kind sequences)."),
               kind: str = typer.Option("faces", "--kind", help="faces (forgery detection), captions "
                                        "(captioned objects for CLIP pre-training and prompt learning), sketch "
                                        "(paired sketches and photos of 50 object categories for zero-shot SBIR) or "
                                        "sequences (faces edited by ordered sequences of 1-5 facial edits, "
                                        "Seq-DeepFake labels, both subsets)."),
               seed: int = typer.Option(0, "--seed", **SEED),
               identities: Optional[int] = typer.Option(None, "--identities", min=1, max=1_000_000,
                                                        help="DCGAN identities (default 500 "
                                                        "for faces: each a real and a fake video; 300 for sequences: "
                                                        "each an original and 3 edited faces per subset)."),
               frames: int = typer.Option(2, "--frames", min=1, max=1000, help="Frames per video."),
               size: Optional[int] = typer.Option(None, "--size", min=16, max=1024,
                                                  help="Image side in pixels (default 64 for faces: "
                                                  "the GAN faces are 64 px; 32 for captions; 64 for sketch and "
                                                  "sequences)."),
               family: list[str] = typer.Option([], "--family", help="Manipulation family (repeatable; default all)."),
               force: bool = typer.Option(False, "--force", help="Regenerate even if cached."),
               ) -> None:
    """Generate an embedded dataset: GAN + public-domain faces with 3 manipulation families,
    captioned procedural objects (24 categories) for prompt learning, paired sketches and photos
    (50 categories, 10 unseen) for zero-shot sketch-based image retrieval, or sequentially edited
    GAN faces (ordered sequences of up to 5 component or attribute edits, with the originals)."""
    from rich.progress import Progress

    from visec.paths import output_folder

    if out is not None:
        output_folder(out)
    if kind == "captions":
        from visec.data.synthetic.captions import make_caption_dataset

        with err_console.status("drawing the captioned objects ..."):
            rep = make_caption_dataset(out or Path("data/captions"), force=force, seed=seed, size=size or 32)
        console.print(f"{rep.images} images ({'cached' if rep.cached else f'{rep.seconds:.1f} s'}) in {rep.root} "
                      f"(sha256 {rep.digest[:16]})")
        return
    if kind == "sketch":
        from visec.data.synthetic.sketches import make_sketch_dataset

        with err_console.status("drawing the sketches and photos ..."):
            rep = make_sketch_dataset(out or Path("data/sketch"), force=force, seed=seed, size=size or 64)
        console.print(f"{rep.images} images, {rep.seen} seen + {rep.unseen} unseen classes "
                      f"({'cached' if rep.cached else f'{rep.seconds:.1f} s'}) in {rep.root} (sha256 {rep.digest[:16]})")
        return
    if kind == "sequences":
        from visec.data.synthetic.sequences import make_sequence_dataset

        with Progress(console=err_console, transient=True) as bar:
            task = bar.add_task("editing faces", total=None)
            rep = make_sequence_dataset(out or Path("data/seqsynth"), seed=seed,
                                        identities=300 if identities is None else identities,
                                        size=size or 64, force=force,
                                        progress=lambda done, total: bar.update(task, completed=done, total=total))
        console.print(f"{rep.images} images ({'cached' if rep.cached else f'{rep.seconds:.1f} s'})")
        for sub, path in rep.manifests.items():
            console.print(f"{sub}: {path} (sha256 {rep.digests[sub][:16]})")
        return
    if kind != "faces":
        raise ConfigError(f"--kind must be faces or captions or sketch or sequences (got {kind!r})")
    from visec.data.synthetic import FAMILIES, make_synth_dataset

    with Progress(console=err_console, transient=True) as bar:
        task = bar.add_task("generating faces", total=None)
        report = make_synth_dataset(out or Path("data/synth"), seed=seed,
                                    identities=500 if identities is None else identities,
                                    frames=frames,
                                    size=size or 64, families=tuple(family or FAMILIES), force=force,
                                    progress=lambda done, total: bar.update(task, completed=done, total=total))
    how = "cached" if report.cached else f"{report.seconds:.1f} s"
    console.print(f"{report.images} images ({', '.join(f'{k} {v}' for k, v in report.counts.items())}; {how})")
    console.print(f"manifest: {report.manifest} (sha256 {report.manifest_sha256[:16]})")


@data_app.command("show")
def data_show(manifest: Path = typer.Argument(..., help="A manifest.jsonl (or its folder).")) -> None:
    """Validate a manifest and print rows per split and manipulation."""
    from visec.data.manifest import read_manifest

    m = read_manifest(manifest)
    console.print(m.counts())
    console.print(f"{len(m)} rows, {m.df['video_id'].nunique()} videos, all files present")


# -- preprocess --------------------------------------------------------------------------------------
@app.command("preprocess")
def preprocess_cmd(manifest: Path = typer.Argument(..., help="Manifest of videos (or images)."),
                   out: Path = typer.Option(..., "--out", help="Folder for face crops and the new manifest."),
                   frames: int = typer.Option(32, "--frames", **FRAMES, help="Evenly spaced frames per video."),
                   detector: str = typer.Option("mtcnn", "--detector", help="mtcnn, dlib or haar."),
                   size: int = typer.Option(256, "--size", **CROP_SIZE, help="Crop side in pixels."),
                   margin: float = typer.Option(0.3, "--margin", **MARGIN, help="Context around the aligned face."),
                   workers: int = typer.Option(1, "--workers", min=1, max=256, help="Parallel processes over videos."),
                   ) -> None:
    """Videos -> evenly spaced frames -> detect, align, crop -> PNGs + manifest (resumable)."""
    from rich.progress import Progress

    from visec.paths import output_folder
    from visec.preprocess import preprocess

    output_folder(out)

    with Progress(console=err_console, transient=False) as bar:
        task = bar.add_task("preprocess", total=None)
        report = preprocess(manifest, out, n_frames=frames, detector=detector, size=size, margin=margin,
                            workers=workers, progress=lambda done, total: bar.update(task, completed=done,
                                                                                    total=total))
    console.print(escape(report.summary()), highlight=False, soft_wrap=True)


# -- train / test / predict --------------------------------------------------------------------------
@app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def train_cmd(config: Optional[str] = typer.Argument(None, help="Method name, method/variant or a YAML file."),
              overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides, e.g. train.lr=0.01"),
              resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this folder."),
              name: Optional[str] = typer.Option(None, "--name", help="Run folder name under output_dir."),
              devices: Optional[str] = typer.Option(None, "--devices", help="Devices per node (int or 'auto')."),
              num_nodes: Optional[int] = typer.Option(None, "--num-nodes", help="Nodes for DDP."),
              test_after: bool = typer.Option(True, "--test/--no-test", help="Evaluate the selected checkpoint on the test split."),
              verify: bool = typer.Option(False, "--verify", help="First check every file of the manifest "
                                          "against its recorded sha256; refuse to train on files that differ."),
              ) -> None:
    """Train a method; selects on the validation split and (by default) tests the selected model."""
    from visec.config import load_config
    from visec.engine import Engine

    ov = list(overrides or [])
    if resume is not None and config is not None:
        # with --resume the config is the run's own: a `key=value` in the config's place is an
        # override (typer takes the first positional as the config), anything else is refused
        if "=" not in config:
            raise ConfigError(f"--resume continues {resume} with its saved config; '{config}' is not a "
                              f"key=value override (give overrides only, e.g. train.max_epochs=5)")
        ov.insert(0, config)
    if devices is not None:
        ov.append(f"train.devices={devices}")
    if num_nodes is not None:
        ov.append(f"train.num_nodes={num_nodes}")
    if name is not None:
        ov.append(f"name={name}")
    if resume is not None:
        engine = Engine.from_run(resume, ov, progress=True)
    else:
        if config is None:
            raise VisecError("give a config (e.g. `visec train classifier data.manifest=...`) or --resume RUN_DIR")
        engine = Engine(load_config(config, ov), progress=True)
    if verify:
        _verify(engine.cfg.data.manifest)
    result = engine.fit(resume=resume is not None)
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    if rank_zero_only.rank != 0:  # DDP: the other ranks stay quiet
        console.quiet = err_console.quiet = True
    console.print(f"run folder: {result['run_dir']}")
    if result["skipped"]:
        n = sum(len(v) for v in result["skipped"].values())
        err_console.print(f"[yellow]skipped {n} unreadable image(s); listed in the result card[/yellow]")
    if test_after:
        from visec.engine.method import method_of

        for split, protocol in method_of(engine.cfg.method).test_protocols:
            _print_card(engine.test(split=split, protocol=protocol))


@app.command("test")
def test_cmd(run: Path = typer.Argument(..., help="A run folder (uses its best checkpoint)."),
             checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="A specific .safetensors file."),
             data: Optional[Path] = typer.Option(None, "--data", help="Another manifest (cross-dataset test)."),
             split: Optional[str] = typer.Option(None, "--split", help="Split to test on (default: test)."),
             protocol: Optional[str] = typer.Option(None, "--protocol", help="Protocol name for the card."),
             corruption: Optional[str] = typer.Option(None, "--corruption",
                                                      help="Degrade test images first: jpeg-70, blur-1, resize-0.5, noise-4."),
             override: list[str] = typer.Option([], "--set", help="Test-time config override, key=value "
                                                "(repeatable), e.g. --set model.fac=true for ACMF's adaptation."),
             attack: Optional[str] = typer.Option(
                 None, "--attack", help="Attack the test faces (forgery detectors): NAME[,key=value...], NAME in "
                 "pgd, fgsm, apgd_ce, square, transfer; keys eps (8/255), norm (linf/l2), steps, alpha, n_queries, "
                 "direction (evade: fakes -> real, default; frame: reals -> fake), source (transfer's surrogate run)."),
             verify: bool = typer.Option(False, "--verify", help="First check every file of the manifest "
                                         "against its recorded sha256; refuse to test on files that differ."),
             ) -> None:
    """Evaluate a trained run and write a result card (frame + video AUC/EER/AP/ACC with CIs)."""
    from visec.engine import Engine

    engine = Engine.from_run(run, list(override), progress=False)
    if verify:
        _verify(data or engine.cfg.data.manifest)
    card = engine.test(checkpoint, data, protocol, split, corruption, attack=attack)
    _print_card(card)


@app.command("predict")
def predict_cmd(run: Path = typer.Argument(..., help="A run folder."),
                data: Path = typer.Option(..., "--data", help="Manifest to score."),
                out: Path = typer.Option(Path("predictions.csv"), "--out", help="CSV of per-image scores."),
                checkpoint: Optional[Path] = typer.Option(None, "--checkpoint")) -> None:
    """Score every image of a manifest; writes path, video_id, label, prob (of fake)."""
    from visec.engine import Engine
    from visec.paths import output_file

    output_file(out)
    df = Engine.from_run(run).predict(data, checkpoint)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    console.print(f"{len(df)} predictions -> {out}")
    _print_skipped(df.attrs.get("skipped", {}))


@app.command("detect")
def detect_cmd(run: Path = typer.Argument(..., help="A trained face-forgery run folder."),
               paths: list[Path] = typer.Argument(..., help="Images and/or videos to score."),
               frames: int = typer.Option(32, "--frames", **FRAMES, help="Evenly spaced frames per video."),
               detector: str = typer.Option("mtcnn", "--detector", help="mtcnn, dlib or haar."),
               size: int = typer.Option(256, "--size", **CROP_SIZE, help="Crop size used by `visec preprocess`."),
               margin: float = typer.Option(0.3, "--margin", **MARGIN, help="Crop margin used by `visec preprocess`."),
               as_json: bool = typer.Option(False, "--json", help="Print per-frame results as JSON lines."),
               out: Optional[Path] = typer.Option(None, "--out", help="Sequential runs (MMNet): folder for the "
                                                  "recovered faces (default RUN/recovered)."),
               ) -> None:
    """Score images or videos in one call: faces are detected, aligned and scored per frame and per video.
    A sequential run (MMNet, SeqFakeFormer) prints the predicted edits of each aligned face image in
    order, and MMNet writes the recovered face."""
    from visec.engine import Engine
    from visec.inference import detect, detect_sequence
    from visec.paths import output_folder

    if out is not None:
        output_folder(out)
    engine = Engine.from_run(run)
    if engine.cfg.method == "mmnet":
        for path in paths:
            res = detect_sequence(engine, path, out=out)
            print(json.dumps(res.to_dict())) if as_json else console.print(res.summary(), highlight=False)
        return
    for path in paths:
        result = detect(engine, path, n_frames=frames, detector=detector, size=size, margin=margin)
        print(json.dumps(result.to_dict())) if as_json else console.print(escape(result.summary()), highlight=False,
                                                                          soft_wrap=True)
        if result.warning:  # a truncated or damaged video: fewer than half its frames decode
            err_console.print(f"[yellow]warning: {escape(result.warning)}[/yellow]", highlight=False, soft_wrap=True)


# -- attack ------------------------------------------------------------------------------------------
@app.command("attack")
def attack_cmd(method: str = typer.Option(..., "--method", help="A registered attack (see `visec list attacks`), "
                                          "'suite', or 'adv_diffusion' (face identity impersonation)."),
               model: Optional[Path] = typer.Option(None, "--model", help="A run folder (uses its best checkpoint); "
                                                    "adv_diffusion: its LDM run or a local diffusers inpainting folder."),
               checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="A specific .safetensors file."),
               data: Optional[Path] = typer.Option(None, "--data", help="Another manifest (default: the run's)."),
               split: Optional[str] = typer.Option(None, "--split", help="Split to attack (default: test)."),
               eps: Optional[str] = typer.Option(None, "--eps", help="Budget: a number or a fraction like 8/255 "
                                                 "(default: the run's trained model.eps, else 8/255)."),
               steps: Optional[int] = typer.Option(None, "--steps", min=1, max=100_000,
                                                   help="Attack iterations (default: the attack's)."),
               alpha: Optional[str] = typer.Option(None, "--alpha", help="Step size (number or fraction)."),
               norm: Optional[str] = typer.Option(None, "--norm", help="Linf, L2 or unbounded (default: the attack's)."),
               max_samples: Optional[int] = typer.Option(None, "--max-samples", min=1,
                                                         help="Attack only the first N samples."),
               out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default RUN_DIR/attacks)."),
               surrogate: Optional[Path] = typer.Option(None, "--surrogate", help="Run folder of a surrogate model (transfer)."),
               device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default cpu)."),
               seed: int = typer.Option(0, "--seed", **SEED),
               source: Optional[Path] = typer.Option(None, "--source", help="adv_diffusion: folder of source faces."),
               target: Optional[Path] = typer.Option(None, "--target", help="adv_diffusion: folder of target faces "
                                                     "(source i impersonates target i mod n, natural name order)."),
               index: Optional[Path] = typer.Option(None, "--index", help="adv_diffusion: CSV of source,target pairs "
                                                    "(overrides the name order)."),
               victim: list[str] = typer.Option([], "--victim", help="adv_diffusion: victim recogniser, NAME or "
                                                "NAME=WEIGHTS (repeatable; default dlib)."),
               fr: list[str] = typer.Option([], "--fr", help="adv_diffusion: surrogate recogniser, NAME=WEIGHTS or "
                                            "'distilled' (repeatable; default distilled)."),
               parsing: Optional[Path] = typer.Option(None, "--parsing", help="adv_diffusion: folder of CelebAMask-HQ "
                                                      "label maps <source stem>.png (default: dlib landmarks)."),
               baseline: list[str] = typer.Option([], "--baseline", help="adv_diffusion: also run this pixel attack "
                                                  "(pgd, mifgsm, di_ti_mifgsm; repeatable) at matched PSNR."),
               batch_size: int = typer.Option(4, "--batch-size", min=1, max=4096, help="adv_diffusion: pairs per batch."),
               fid_weights: Optional[Path] = typer.Option(None, "--fid-weights", help="adv_diffusion: a local "
                                                          "torchvision Inception-v3 weights file: add FID to sources."),
               override: list[str] = typer.Option([], "--set", help="adv_diffusion: attack parameter, key=value "
                                                  "(repeatable), e.g. --set model.guidance_scale=300."),
               ) -> None:
    """Attack a trained run: clean, robust and worst-case accuracy, mean perturbation norms, a result card.
    With --method adv_diffusion: impersonate target faces with source faces, evaluated on the victims."""
    from visec.paths import output_folder

    if out is not None:
        output_folder(out)
    adv_only = {"--source": source, "--target": target, "--index": index, "--parsing": parsing,
                "--fid-weights": fid_weights, "--victim": victim, "--fr": fr, "--baseline": baseline, "--set": override}
    if method == "adv_diffusion":
        _adv_diffusion_attack(model, source, target, out, index=index, victims=victim or ["dlib"],
                              surrogates=fr or ["distilled"], parsing=parsing, baselines=baseline,
                              batch_size=batch_size, overrides=override, seed=seed, fid_weights=fid_weights)
        return
    given = [k for k, v in adv_only.items() if v]
    if given:
        raise ConfigError(f"{', '.join(given)} belong to --method adv_diffusion")
    if model is None:
        raise ConfigError("--model RUN_DIR is required")
    from visec.apps.attack import run_attack

    report, card, path = run_attack(model, method, checkpoint=checkpoint, data=data, split=split, eps=eps,
                                    steps=steps, alpha=alpha, norm=norm, max_samples=max_samples, out=out,
                                    device=device, seed=seed, surrogate=surrogate)
    console.print(report.summary(), highlight=False)
    for note in card.notes:  # skipped attacks and unreadable images among them, each named
        err_console.print(f"[yellow]note: {escape(note)}[/yellow]", highlight=False, soft_wrap=True)
    console.print(f"card: {path}", highlight=False)


def _adv_diffusion_attack(model, source, target, out, *, index, victims, surrogates, parsing, baselines, batch_size,
                          overrides, seed, fid_weights=None) -> None:
    from visec.apps.adv_diffusion import attack_folders

    if source is None or target is None:
        raise ConfigError("adv_diffusion needs --source DIR and --target DIR")
    out = out or Path("runs") / "attacks" / "adv_diffusion"
    run = attack_folders(source, target, out, model=model, surrogates=surrogates, victims=victims, index_file=index,
                         overrides=overrides, parsing=parsing, seed=seed, batch_size=batch_size, baselines=baselines,
                         fid_weights=fid_weights, log=lambda s: err_console.print(s, highlight=False))
    for label, r in run.results.items():
        parts = [f"{label}: PSNR {r['quality']['psnr']:.2f} SSIM {r['quality']['ssim']:.3f}"]
        for v, m in r["victims"].items():
            asr = "  ".join(f"ASR@{far} {a['asr']:.3f}" for far, a in m["asr"].items())
            parts.append(f"{v}: cos {m['cos_target']:.3f}  {asr}")
        console.print("  |  ".join(parts), highlight=False)
    console.print(f"adversarial images: {out / 'adv'}  pairs: {out / 'pairs.csv'}  cards: {out / 'cards'}",
                  highlight=False)


# -- bench -------------------------------------------------------------------------------------------
def bench_job_of(method: str | None) -> str | None:
    """The bench job ``visec bench --method NAME`` runs as a whole: a job's own name, or the job a
    method's contract names (``ancra`` for ``adversarial_training``); ``None`` for a forgery
    detector, benched as entrants of the shared forgery job."""
    from visec.registry import BENCHES, METHODS

    if method is None:
        return "forgery"
    if method in BENCHES:
        return method
    if method in METHODS and METHODS.get(method).obj.bench not in (None, "forgery"):
        return METHODS.get(method).obj.bench
    return None


@app.command("bench")
def bench_cmd(cards: Optional[list[Path]] = typer.Argument(None, help="Card files or folders to tabulate."),
              method: Optional[str] = typer.Option(None, "--method", help="A forgery-detection method (see "
                                                   "`visec list methods`) or a bench job (`visec list bench-jobs`); "
                                                   "default: the forgery job (Xception + MobileNetV2)."),
              data: Optional[Path] = typer.Option(None, "--data", help="A real manifest instead of the embedded data."),
              out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default runs/bench/forgery, "
                                                 "or runs/bench/JOB for other jobs)."),
              seed: int = typer.Option(0, "--seed", **SEED),
              override: list[str] = typer.Option([], "--set", help="Config override for every run, key=value "
                                                 "(repeatable), e.g. --set train.max_epochs=1."),
              all_columns: bool = typer.Option(False, "--all-columns", help="Every metric, not just the headline ones."),
              suite: Optional[str] = typer.Option(None, "--suite", help="A bench job by name (`visec list "
                                                  "bench-jobs`), e.g. ablation: every detector against its own "
                                                  "counterpart at 128 px over 3 seeds (about 3 hours on 2 CPU cores; resumes)."),
              ablation: bool = typer.Option(False, "--ablation", help="With --method: train the detector and its "
                                            "counterpart (same backbone, mechanism off) over --seeds seeds; report "
                                            "the paired difference, intra and per held-out family."),
              seeds: int = typer.Option(3, "--seeds", min=1, max=100, help="Training seeds of --ablation."),
              report_only: bool = typer.Option(False, "--report-only", help="With --ablation or --suite ablation: "
                                               "train nothing, report the runs that have finished."),
              ) -> None:
    """With card paths: a leaderboard of them. Without: run a bench (data, train, test, report)."""
    from visec.apps.bench import forgery_bench, method_entrants
    from visec.registry import BENCHES
    from visec.cards import ResultCard, find_cards
    from visec.report.leaderboard import leaderboard

    if suite is not None:
        if method is not None:
            raise ConfigError("give --suite or --method, not both")
        BENCHES.get(suite)  # "did you mean" on a typo
        method = suite
    if ablation and (method is None or method in BENCHES):
        raise ConfigError("--ablation needs --method NAME of a forgery detector (or use --suite ablation)")
    job_name = bench_job_of(method)
    if report_only and not ablation and job_name != "ablation":
        raise ConfigError("--report-only goes with --ablation or --suite ablation")
    if out is not None:
        from visec.paths import output_folder

        output_folder(out)
    if ablation:
        from visec.apps.ablation import method_ablation

        out = out or Path("runs/bench") / f"ablation-{method}"
        paths = method_ablation(out, method, seed=seed, seeds=seeds, console=console, data=data,
                                overrides=list(override), train=not report_only)
        console.print(f"{len(paths)} card(s); paired differences: {out / 'ablation_seeds.csv'}")
        return
    if not cards:
        kwargs = {"data": data} if data is not None else {}
        if override:
            kwargs["overrides"] = list(override)
        if report_only:
            kwargs["train"] = False
        if job_name is not None:
            name = job_name
            out = out or Path("runs/bench") / name
            job = BENCHES.get(name).obj
            import inspect

            unsupported = [k for k in kwargs if k not in inspect.signature(job).parameters]
            if unsupported:
                raise ConfigError(f"bench job '{name}' does not take "
                                  f"{' or '.join('--set' if k == 'overrides' else '--' + k for k in unsupported)}")
            paths = job(out, seed=seed, console=console, **kwargs)
        else:  # one forgery-detection method, into the shared forgery folder (one leaderboard)
            entrants = method_entrants(method)
            out = out or Path("runs/bench/forgery")
            paths = forgery_bench(out, entrants=entrants, seed=seed, console=console, **kwargs)
    else:
        paths = find_cards(cards)
    loaded = [ResultCard.load(p) for p in paths]
    if not cards and (job_name is None or job_name == "forgery"):  # a forgery bench: one row per model
        from visec.report.forgery import summary_table

        summary = summary_table(loaded)
        table = Table(title="forgery bench (frame AUC unless stated)", title_justify="left")
        for col in summary.columns:
            table.add_column(col, no_wrap=True)
        for row in summary.itertuples(index=False):
            table.add_row(*["-" if isinstance(v, float) and v != v else f"{v:.3f}" if isinstance(v, float)
                            else escape(str(v)) for v in row])  # model names like hfc_mffd[nir]
        console.print(table)
    full = leaderboard(loaded)
    board = full if all_columns else full[[c for c in HEADLINE if c in full.columns]]
    table = Table(title=f"leaderboard ({len(paths)} card(s))", title_justify="left")
    for col in board.columns:
        table.add_column(SHORT_HEADERS.get(col, col), no_wrap=True)
    for row in board.itertuples(index=False):
        table.add_row(*[f"{v:.3f}" if isinstance(v, float) else _short(str(v)) if col == "test_data" else escape(str(v))
                        for col, v in zip(board.columns, row)])
    if cards or (job_name is not None and job_name != "forgery"):
        console.print(table)
    if not cards:
        full.to_csv(out / "leaderboard.csv", index=False)
        console.print(f"leaderboard: {out / 'leaderboard.csv'}")


HEADLINE = ("method", "test_data", "protocol", "seed", "selection", "frame/auc", "frame/eer", "frame/acc",
            "video/auc", "video/eer", "video/acc", "trace/top1_accuracy", "trace/false_identification_rate",
            "trace/rejection_rate", "trace/mean_attributes_used", "trace/mean_final_entropy",
            "robust/clean_acc", "robust/fgsm_acc", "robust/pgd20_acc", "robust/worst_case_acc", "classify/acc",
            "base2new/base_acc", "base2new/new_acc", "base2new/hm", "sequence/fixed_acc", "sequence/adaptive_acc",
            "sequence/csm", "recovery/psnr_recovered", "recovery/psnr_forged")


SHORT_HEADERS = {"trace/top1_accuracy": "top1_acc", "trace/false_identification_rate": "false_id_rate",
                 "trace/rejection_rate": "reject_rate", "base2new/base_acc": "base", "base2new/new_acc": "new",
                 "base2new/hm": "H", "trace/mean_attributes_used": "attrs_used",
                 "trace/mean_final_entropy": "final_bits", "sequence/fixed_acc": "fixed", "sequence/adaptive_acc": "adaptive",
                 "sequence/csm": "csm", "recovery/psnr_recovered": "psnr_rec", "recovery/psnr_forged": "psnr_forged"}


def _short(text: str) -> str:
    """``/long/path/to/data/manifest.jsonl:test`` -> ``data:test`` for table cells."""
    if "/" not in text:
        return text
    path, _, split = text.partition(":")
    name = Path(path).parent.name if Path(path).name == "manifest.jsonl" else Path(path).stem
    return f"{name}:{split}" if split else name


def _print_skipped(skipped: dict[str, list]) -> None:
    """One stderr line per image a command skipped (named, with the reason), then their count."""
    n = sum(len(v) for v in skipped.values())
    if not n:
        return
    for split, items in skipped.items():
        for path, reason in items:
            err_console.print(f"[yellow]skipped[/yellow] {escape(str(path))} ({escape(split)}): {escape(str(reason))}",
                              highlight=False, soft_wrap=True)
    err_console.print(f"[yellow]skipped {n} unreadable image(s)[/yellow]", highlight=False)


def _verify(manifest: Path | None) -> None:
    """``--verify``: every file of the manifest against its recorded sha256 (a one-line error
    with the count and first names of those that differ; a warning for files without a hash)."""
    from visec.data.manifest import read_manifest
    from visec.errors import ManifestError

    if manifest is None:
        raise ManifestError("--verify checks the files of a manifest against their sha256; this run "
                            "reads no manifest (its data is a built-in dataset)")
    with err_console.status(f"checking the sha256 of every file of {manifest} ..."):
        m = read_manifest(manifest)
        unhashed = m.verify()
    n = m.df["path"].nunique()
    if unhashed:
        err_console.print(f"[yellow]warning: {unhashed} of {n} file(s) have no sha256 in {escape(str(manifest))} "
                          f"(built with hash=false): not verified[/yellow]", highlight=False, soft_wrap=True)
    else:
        err_console.print(f"verified: the {n} file(s) of {escape(str(manifest))} match their sha256", highlight=False)


def _print_card(card) -> None:
    from visec.metrics import format_metrics

    console.print(format_metrics(card.metrics))
    _print_skipped((card.extra or {}).get("skipped") or {})  # each skipped image named, as predict and attack do
    for note in card.notes:
        err_console.print(f"[yellow]note: {note}[/yellow]")


def main(argv: list[str] | None = None) -> int:
    """Entry point: user mistakes are one line on stderr (exit 2); ``--debug`` shows tracebacks."""
    import click

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get(DEBUG_ENV) == "1"
    command = typer.main.get_command(app)
    try:
        # without standalone mode, click returns a `typer.Exit(code)`'s code instead of raising it
        code = command.main(args=args, prog_name="visec", standalone_mode=False)
        if isinstance(code, int):
            return code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        err_console.print("aborted")
        return 130
    except VisecError as exc:
        if debug:
            raise
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
