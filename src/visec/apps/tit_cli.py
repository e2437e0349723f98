"""``visec tit ...``: simulate populations, trace queries, explain one object."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from visec.options import SEED

tit_app = typer.Typer(no_args_is_help=True, help="Trustworthy identity tracing (TIT): simulate, trace, explain.")
console = Console(width=200)


@tit_app.command("simulate")
def simulate_cmd(out: Path = typer.Option(..., "--out", help="Population CSV to write (+ .schema.json, .queries.csv)."),
                 objects: int = typer.Option(1000, "--objects", min=1, max=10_000_000),
                 attributes: int = typer.Option(20, "--attributes", min=1, max=10_000),
                 seed: int = typer.Option(0, "--seed", **SEED),
                 regime: str = typer.Option("realistic", "--regime", help="clean, realistic or harsh."),
                 queries: Optional[int] = typer.Option(None, "--queries", min=0, max=10_000_000,
                                                       help="Number of queries (default 200).")) -> None:
    """Write a seeded population with twins, noise and missing values, plus a query set."""
    from visec.identity.simulate import write_simulation
    from visec.paths import output_file

    output_file(out)

    paths = write_simulation(out, objects, attributes, seed, regime, queries)
    for kind, path in paths.items():
        console.print(f"{kind}: {path}")


@tit_app.command("trace")
def trace_cmd(population: Path = typer.Option(..., "--population", help="Population CSV (schema from its sidecar)."),
              queries: Path = typer.Option(..., "--queries", help="Query CSV (true_id column optional)."),
              schema: Optional[Path] = typer.Option(None, "--schema", help="Schema JSON (default: the sidecar)."),
              mode: str = typer.Option("noisy", "--mode", help="noisy or crisp."),
              out: Path = typer.Option(Path("runs/tit"), "--out", help="Folder for result cards and the report."),
              seed: int = typer.Option(0, "--seed", **SEED)) -> None:
    """Trace every query with TIT and the baselines; print a JSON summary and write cards + report."""
    from visec.apps.bench_tit import HEADLINE, evaluation_card, tit_report
    from visec.paths import output_folder

    output_folder(out)
    from visec.identity.evaluate import run_baselines
    from visec.identity.schema import read_population, read_queries

    pop, sch = read_population(population, schema)
    qs = read_queries(queries, sch)
    results = run_baselines(pop, qs, sch, mode=mode, seed=seed)
    config = {"population": str(population), "queries": str(queries), "mode": mode, "seed": seed}
    for ev in results.values():
        evaluation_card(ev, population=str(population), queries=str(queries), protocol=f"trace-{mode}",
                        seed=seed, config=config).save(out / "cards")
    tit_report({queries.stem: results}, None, title=f"visec tit trace: {queries.name}").write(out / "report.html")
    summary = {m: {k: ev.summary[k] for k in HEADLINE if k in ev.summary} for m, ev in results.items()}
    print(json.dumps(summary, indent=2))
    typer.echo(f"cards and report: {out}", err=True)


@tit_app.command("explain")
def explain_cmd(population: Path = typer.Option(..., "--population"),
                object_id: str = typer.Option(..., "--object", help="The object's id (first CSV column)."),
                schema: Optional[Path] = typer.Option(None, "--schema"),
                as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text.")) -> None:
    """Print one object's core identification set (exact and greedy) and its trace."""
    from visec.identity.schema import read_population
    from visec.identity.tracer import explain

    pop, sch = read_population(population, schema)
    key = _match_id(pop.index, object_id)
    result = explain(pop, key, schema=sch)
    print(json.dumps(result.to_dict(), indent=2, default=str) if as_json else result.format())


def _match_id(index, text: str):
    """The population index value whose string form is ``text`` (ids may be ints or strings)."""
    for value in index:
        if str(value) == text:
            return value
    return text  # let explain() raise its "unknown object" error
