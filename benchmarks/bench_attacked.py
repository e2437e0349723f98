"""Attacked detectors: attack throughput per detector at 64 px, as a ratio to its clean scoring.

For each detector (shipped config, random weights: throughput does not depend on what was learnt;
DeepFidelity is measured on its stage-A class logit, since its SVR is fitted only by training), on
the same ``--batch`` random 64 px faces, all labelled fake (the evasion direction attacks every
one), in one process:

* **clean faces/s**: the attack logit without gradients (what a clean test pays per face);
* **faces/s under attack** for the bench's attacks: PGD-10 L-inf 4/255 with its FGSM masking
  reference, PGD-10 L2 0.5, APGD-CE (20 iterations), Square (200 queries);
* **ratio**: attacked time / clean time per face: how much longer a face costs under each attack.

Each figure is the fastest of ``--repeat`` runs after a warm-up. With ``--bench DIR`` (a finished
``visec bench`` folder) it also sums, per detector, the seconds its attacked cards took against its
clean intra card: the time the attacked columns add to a bench.

    python benchmarks/bench_attacked.py [--batch 32] [--repeat 2] [--only xception,hfc_mffd] [--bench runs/bench/forgery]

Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import torch  # noqa: E402

DETECTORS = ("xception", "classifier/mobilenetv2", "acmf", "deepfidelity", "hfc_mffd")
ATTACKS = ("pgd,eps=4/255", "pgd,norm=l2,eps=0.5", "apgd_ce,eps=4/255", "square,eps=4/255,n_queries=200")


def fastest(fn, repeat: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure(config: str, batch: int, repeat: int) -> dict[str, float]:
    from visec.attacks.detector import DetectorAttacker, DetectorAttackSpec
    from visec.config import load_config
    from visec.engine.engine import build_module

    torch.manual_seed(0)
    cfg = load_config(config, ["data.image_size=64"])
    module = build_module(cfg).eval()
    view = module.attack_view()
    x = torch.rand(batch, 3 if cfg.data.modality == "vis" else 1, 64, 64, generator=torch.Generator().manual_seed(0))
    y = torch.ones(batch)

    def clean():
        with torch.no_grad():
            view(x)

    row = {"clean": batch / fastest(clean, repeat)}
    for text in ATTACKS:
        spec = DetectorAttackSpec.parse(text)
        row[spec.label()] = batch / fastest(lambda: DetectorAttacker(spec, view)(x, y), repeat)
    return row


def bench_folder(folder: Path) -> list[tuple[str, float, float, int]]:
    """Per model: clean intra test seconds, attacked cards' seconds, number of attacked cards."""
    rows: dict[str, list] = {}
    for path in sorted(folder.glob("runs/*/intra/cards/*.card.json")):
        card = json.loads(path.read_text())
        row = rows.setdefault(card["method"], [0.0, 0.0, 0])
        if card["protocol"] == "intra":
            row[0] = card["timings"]["test_seconds"]
        elif "attack" in card["metrics"]:
            row[1] += card["timings"]["test_seconds"]
            row[2] += 1
    return [(m, *v) for m, v in rows.items() if v[2]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated configs from: " + ", ".join(DETECTORS))
    ap.add_argument("--bench", type=Path, default=None, help="a finished visec bench folder")
    args = ap.parse_args()
    if args.batch < 1 or args.repeat < 1:
        ap.error("--batch and --repeat must be >= 1")
    chosen = [d for d in DETECTORS if not args.only or d in args.only.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch} faces at 64 px, "
          f"random weights, fastest of {args.repeat}")
    labels = None
    for config in chosen:
        row = measure(config, args.batch, args.repeat)
        if labels is None:
            labels = [k for k in row if k != "clean"]
            print(f"{'detector':<24}{'clean f/s':>10}" + "".join(f"{k:>26}" for k in labels))
        cells = "".join(f"{row[k]:>10.1f} f/s ({row['clean'] / row[k]:>5.0f}x)" for k in labels)
        print(f"{config:<24}{row['clean']:>10.1f}{cells}")
    if args.bench is not None:
        print(f"\nattacked columns of {args.bench}: seconds of the attacked cards vs the clean intra test")
        for method, clean_s, attacked_s, n in bench_folder(args.bench):
            print(f"{method:<40} clean {clean_s:7.1f} s  attacked ({n} cards) {attacked_s:7.1f} s  "
                  f"({attacked_s / max(clean_s, 1e-9):.0f}x)")


if __name__ == "__main__":
    main()
