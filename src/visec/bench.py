"""The default benchmark job: what ``visec bench`` (and ``make demo``) runs with no arguments.

It generates the offline toy face set, trains the plain classifier with model selection on the
validation split, tests the selected checkpoint and returns the result cards it wrote.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from visec.config import load_config
from visec.data.toy import make_toy_dataset
from visec.engine import Engine


def run_default_bench(out: str | Path, *, seed: int = 0, console: Console | None = None,
                      overrides: list[str] | None = None) -> list[Path]:
    out = Path(out)
    console = console or Console()
    manifest = out / "data" / "manifest.jsonl"
    if not manifest.is_file():
        console.print("generating the toy face set (LFW crops shipped with scikit-image) ...")
        make_toy_dataset(out / "data", seed=seed)
    cfg = load_config("classifier", [f"data.manifest={manifest}", f"train.seed={seed}",
                                     f"output_dir={out}", f"name=classifier-seed{seed}", *(overrides or [])])
    engine = Engine(cfg, progress=True)
    resume = (engine.run_dir / "last.ckpt").is_file()
    if resume:
        console.print(f"resuming the run in {engine.run_dir}")
    engine.fit(resume=resume)
    card = engine.test()
    from visec.metrics import format_metrics

    console.print(format_metrics(card.metrics))
    return sorted((engine.run_dir / "cards").glob("*.card.json"))
