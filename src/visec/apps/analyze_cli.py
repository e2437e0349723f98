"""``visec analyze`` and ``visec serve`` (registered on the main command in :mod:`visec.cli`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from visec.apps.analyze import FACE_MODES
from visec.errors import VisecError
from visec.options import CROP_SIZE, FRAMES, MARGIN, PORT, finite

console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

_RUNS_HELP = "Folder searched for trained runs (every face-forgery run under it is used)."


def _inputs(paths: list[Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files to analyse (folders searched recursively, in name order) and the entries skipped."""
    import os

    from visec.apps.analyze import sniff
    from visec.paths import entry_problem, shown

    files: list[Path] = []
    skipped: list[tuple[str, str]] = []
    for p in paths:
        if entry_problem(p) is None and os.path.isdir(p):
            for f in sorted(q for q in p.rglob("*") if not os.path.isdir(q)):
                problem = entry_problem(f)  # a FIFO, a device, a dangling or looping link, too long a name
                if problem is not None:
                    skipped.append((shown(f), problem))
                    continue
                with open(f, "rb") as fh:
                    kind = sniff(fh.read(32))
                if kind is None:
                    skipped.append((str(f), "not an image or video"))
                else:
                    files.append(f)
        elif os.path.lexists(p):
            files.append(p)  # the analyzer names what is wrong with it
        else:
            raise VisecError(f"{shown(p)}: no such file or folder")
    return files, skipped


def _out_stem(path: Path, used: set[str]) -> str:
    stem = path.stem or "input"
    name, k = stem, 1
    while name in used:
        k += 1
        name = f"{stem}-{k}"
    used.add(name)
    return name


def analyze_cmd(
    paths: list[Path] = typer.Argument(..., help="Images, videos or folders of them."),
    runs: Path = typer.Option(Path("runs"), "--runs", help=_RUNS_HELP),
    out: Path = typer.Option(Path("analysis"), "--out", help="Folder for one JSON and one HTML page per input."),
    faces: str = typer.Option("auto", "--faces", help="detect: find and align faces; whole: each image is "
                                                    "already an aligned face crop; auto: whole for square images "
                                                    "no larger than the detectors' training crops, detect otherwise."),
    detector: str = typer.Option("mtcnn", "--detector", help="Face detector: mtcnn, dlib or haar."),
    frames: int = typer.Option(16, "--frames", **FRAMES, help="Evenly spaced frames per video."),
    size: int = typer.Option(256, "--size", **CROP_SIZE, help="Crop size for runs whose training data "
                                                             "has no preprocess report."),
    margin: float = typer.Option(0.3, "--margin", **MARGIN, help="Crop margin, likewise."),
    all_runs: bool = typer.Option(False, "--all-runs", help="Also use leave-one-manipulation-out runs."),
    maps: bool = typer.Option(True, "--maps/--no-maps", help="Saliency maps (the evidence section)."),
    as_json: bool = typer.Option(False, "--json", help="Print each analysis as one JSON line instead of the table."),
) -> None:
    """Analyse images and videos with every trained detector: verdicts, maps, per-frame curves."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from visec.apps.analysis_html import render_page
    from visec.apps.analyze import Analyzer

    if faces not in FACE_MODES:
        raise VisecError(f"--faces must be one of {', '.join(FACE_MODES)}, not {faces!r}")
    from visec.paths import output_folder

    output_folder(out)
    files, skipped = _inputs(paths)
    if not files:
        raise VisecError("nothing to analyse: " + ("; ".join(f"{p}: {why}" for p, why in skipped[:5])
                                                   if skipped else "no input files"))
    analyzer = Analyzer.from_runs(runs, all_runs=all_runs, size=size, margin=margin, face_detector=detector,
                                  faces=faces, frames=frames, maps=maps)
    out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    results, failed = [], []
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err_console, transient=True, disable=not err_console.is_terminal)
    with progress:
        overall = progress.add_task("inputs", total=len(files))
        for path in files:
            frames_task = progress.add_task(f"  {path.name}", total=None)
            try:
                result = analyzer.analyze(path, progress=lambda k, n: progress.update(frames_task, completed=k, total=n))
            except VisecError as exc:
                failed.append((str(path), str(exc)))
                continue
            finally:
                progress.remove_task(frames_task)
                progress.advance(overall)
            stem = _out_stem(path, used)
            (out / f"{stem}.analysis.json").write_text(result.to_json(indent=1) + "\n", encoding="utf-8")
            (out / f"{stem}.html").write_text(render_page(result), encoding="utf-8")
            results.append((path, result, out / f"{stem}.html"))
            if as_json:
                print(result.to_json())
    if not as_json:
        _summary(analyzer, results)
        for note in analyzer.notes:
            err_console.print(f"[yellow]note: {escape(note)}[/yellow]", highlight=False)
        for path, result, _ in results:
            for note in result.notes[len(analyzer.notes):]:  # this input's own notes
                err_console.print(f"[yellow]note ({escape(path.name)}): {escape(note)}[/yellow]", highlight=False)
        console.print(f"{len(results)} analysed -> {out}/ (one .analysis.json and one .html per input)")
    for p, why in skipped:
        err_console.print(f"skipped {escape(p)}: {escape(why)}", highlight=False)
    for p, why in failed:
        err_console.print(f"[red]failed[/red] {escape(why)}", highlight=False)
    if skipped or failed:
        err_console.print(f"{len(skipped)} skipped, {len(failed)} failed of {len(files) + len(skipped)} inputs")
    if failed:
        raise typer.Exit(1)


def _summary(analyzer, results) -> None:
    table = Table(title="visec analyze", show_lines=False)
    table.add_column("input", overflow="fold")
    table.add_column("faces", justify="right")
    for d in analyzer.detectors:
        table.add_column(f"{d.info.name}\n(t={d.info.threshold:.3f})", justify="right", overflow="fold")
    table.add_column("verdict")
    table.add_column("agreement", justify="right")
    for path, r, _ in results:
        cells = []
        for v in r.detector_verdicts:
            cells.append("-" if v.prob is None else f"{v.prob:.3f} {'[red]fake[/red]' if v.fake else '[green]real[/green]'}")
        agreement = "-" if r.ensemble.agreement is None else f"{r.ensemble.agreement:.0%}"
        faces = str(len(r.faces)) + (f" / {len(r.input.frames_sampled)} fr." if r.input.media == "video" else "")
        table.add_row(escape(str(path)), faces, *cells, r.ensemble.verdict, agreement)
    console.print(table)


def schema_cmd() -> None:
    """Print the JSON Schema of `visec analyze`'s output (versioned; docs/analysis.schema.json)."""
    from visec.apps.analyze import json_schema

    print(json.dumps(json_schema(), indent=1))


def serve_cmd(
    runs: Path = typer.Option(Path("runs"), "--runs", help=_RUNS_HELP),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8000, "--port", **PORT, help="Port."),
    workers: int = typer.Option(2, "--workers", min=1, max=64, help="Analyses run at once."),
    queue: int = typer.Option(64, "--queue", min=0, max=10000, help="Analyses that may wait; more get 503."),
    max_mb: float = typer.Option(50.0, "--max-mb", min=0.001, max=10000.0, callback=finite,
                                 help="Upload size limit in MB."),
    faces: str = typer.Option("auto", "--faces", help="auto, detect or whole (see visec analyze)."),
    detector: str = typer.Option("mtcnn", "--detector", help="Face detector: mtcnn, dlib or haar."),
    frames: int = typer.Option(16, "--frames", **FRAMES, help="Evenly spaced frames per video."),
    all_runs: bool = typer.Option(False, "--all-runs", help="Also use leave-one-manipulation-out runs."),
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn's log level."),
) -> None:
    """A local web page and JSON API for `visec analyze` (FastAPI on uvicorn)."""
    from visec.apps.analyze import Analyzer

    try:
        from visec.apps.serve import serve
    except ImportError as exc:
        raise VisecError(f"visec serve needs FastAPI and uvicorn ({exc.name} is missing): "
                         f"pip install 'visec[serve]'") from None
    if faces not in FACE_MODES:
        raise VisecError(f"--faces must be one of {', '.join(FACE_MODES)}, not {faces!r}")
    analyzer = Analyzer.from_runs(runs, all_runs=all_runs, face_detector=detector, faces=faces, frames=frames)
    if host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(f"[yellow]note: binding {escape(host)}: the page is reachable beyond this machine[/yellow]")
    err_console.print(f"visec serve: {len(analyzer.detectors)} detector(s) on http://{escape(host)}:{port}/ "
                      f"(API docs /docs, JSON /openapi.json)", highlight=False)
    serve(analyzer, host=host, port=port, max_bytes=int(max_mb * 1024 * 1024), workers=workers, queue=queue,
          log_level=log_level)


def register(app: typer.Typer) -> None:
    app.command("analyze")(analyze_cmd)
    app.command("serve")(serve_cmd)
    app.command("analyze-schema")(schema_cmd)

