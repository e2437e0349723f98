"""``visec retrieve RUN --query SKETCH --gallery DIR``: rank a folder of photos for a sketch with a
trained SBKA run (its student's embedding), one-to-one (Euclidean) or one-to-many (cluster matching
with the M the run's test chose and K given or taken from that test)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from visec.errors import VisecError

console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def _gallery_files(gallery: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    import os

    from visec.apps.analyze import sniff
    from visec.paths import entry_problem, shown

    if entry_problem(gallery) is not None or not os.path.isdir(gallery):
        raise VisecError(f"--gallery {shown(gallery)}: not a folder")
    files, skipped = [], []
    for f in sorted(p for p in gallery.rglob("*") if not os.path.isdir(p)):
        problem = entry_problem(f)  # never opened: a FIFO would block, a dangling link would fail
        if problem is not None:
            skipped.append((shown(f), problem))
            continue
        with open(f, "rb") as fh:
            kind = sniff(fh.read(32))
        (files.append(f) if kind and kind[0] == "image" else skipped.append((str(f), "not an image")))
    if not files:
        raise VisecError(f"--gallery {gallery}: no image found")
    return files, skipped


def _matching_of(run: Path) -> dict:
    """The cluster matching settings of the run's newest test card ({} when it has none)."""
    cards = sorted((run / "cards").glob("*.card.json"), key=lambda p: p.stat().st_mtime)
    for card in reversed(cards):
        block = json.loads(card.read_text()).get("metrics", {}).get("matching")
        if isinstance(block, dict):
            return block
    return {}


def retrieve(run: str | Path, query: str | Path, gallery: list[Path], *, matching: str = "cluster",
             k: int | None = None, m: int | None = None, batch_size: int = 64) -> tuple[list[int], list[float], dict]:
    """Gallery indices ranked for the query sketch, their distances, and the matching used."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from visec.data.datamodule import to_tensor
    from visec.data.images import load_rgb
    from visec.engine import Engine
    from visec.methods.sbka.lightning_model import SBKAModule
    from visec.methods.sbka.matching import ClusterMatcher, euclidean

    engine = Engine.from_run(run)
    module, _ = engine.load_module()
    if not isinstance(module, SBKAModule):
        raise VisecError(f"retrieve needs an sbka run; {run} is a '{engine.cfg.method}' run")
    module.eval()
    size = engine.cfg.data.image_size

    def encode(paths: list[Path]) -> np.ndarray:
        out = []
        with torch.no_grad():
            for s in range(0, len(paths), batch_size):
                x = torch.stack([to_tensor(load_rgb(p), size) for p in paths[s:s + batch_size]])
                out.append(F.normalize(module(x).float(), dim=1).numpy())
        return np.concatenate(out)

    q, g = encode([Path(query)]), encode(gallery)
    used = {"matching": matching}
    if matching == "euclidean":
        dist = euclidean(q, g)[0]
    elif matching == "cluster":
        stored = _matching_of(Path(run))
        m = m or int(stored.get("m", 2))
        k = k or int(stored.get("k", 0)) or None
        if k is None:
            raise VisecError("--k is needed: the run has no test card with a chosen K (run `visec test` first)")
        k = min(k, len(gallery))
        matcher = ClusterMatcher(m=m, k=k, codebook=stored.get("codebook", "gmm"),
                                 weight=float(stored.get("fusion_weight", 0.8)), seed=engine.cfg.train.seed).fit(g)
        dist = matcher.distances(q)[0]
        used.update(m=m, k=k)
    else:
        raise VisecError(f"--matching must be euclidean or cluster, not {matching!r}")
    order = np.argsort(dist, kind="stable")
    return [int(i) for i in order], [float(dist[i]) for i in order], used


def retrieve_cmd(
    run: Path = typer.Argument(..., help="A trained sbka run folder."),
    query: Path = typer.Option(..., "--query", help="The query sketch (an image)."),
    gallery: Path = typer.Option(..., "--gallery", help="A folder of photos (searched recursively)."),
    top: int = typer.Option(10, "--top", min=1, max=100000, help="How many photos to list."),
    matching: str = typer.Option("cluster", "--matching", help="cluster (one-to-many) or euclidean (one-to-one)."),
    k: int = typer.Option(None, "--k", min=1, help="Cluster matching: codewords per block (default: the run's test)."),
    m: int = typer.Option(None, "--m", min=1, help="Cluster matching: blocks (default: the run's test)."),
    as_json: bool = typer.Option(False, "--json", help="Print the ranking as JSON."),
) -> None:
    """Rank the photos of a folder for a query sketch with a trained SBKA run."""
    from visec.paths import file_problem, shown

    problem = file_problem(query)
    if problem is not None:
        raise VisecError(f"--query {shown(query)}: {'file not found' if problem == 'not found' else problem}")
    files, skipped = _gallery_files(gallery)
    order, dist, used = retrieve(run, query, files, matching=matching, k=k, m=m)
    ranked = [{"rank": r + 1, "path": str(files[i]), "distance": round(d, 6)}
              for r, (i, d) in enumerate(zip(order[:top], dist[:top]))]
    if as_json:
        print(json.dumps({"query": str(query), "matching": used, "results": ranked}))
    else:
        table = Table(title=f"{query.name}: top {len(ranked)} of {len(files)} photos ({used['matching']}"
                            + (f", M={used['m']}, K={used['k']})" if "k" in used else ")"))
        for col in ("rank", "photo", "distance"):
            table.add_column(col, justify="right" if col != "photo" else "left")
        for row in ranked:
            table.add_row(str(row["rank"]), escape(row["path"]), f"{row['distance']:.4f}")
        console.print(table)
    for p, why in skipped:
        err_console.print(f"skipped {escape(p)}: {why}", highlight=False)
