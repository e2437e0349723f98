"""Engine overhead: visec's Lightning engine against a plain PyTorch loop on the same model and data.

For each backbone (default: resnet18 and xception, 64 px, the toy face set) one run prints, as
ratios against the plain fp32 loop measured in the same run:

* training and inference images/s and peak resident memory of the engine with its defaults
  (``fp32``), with the settings it had before the speed work (``fp32 legacy``: the decode check on
  every run, no in-memory image cache, the resume state written after every epoch, logging every
  step), in ``bf16-mixed`` and with ``channels_last``;
* whether the engine's fp32 run and the plain loop took the same number of optimiser steps and end
  with bit-identical weights (same seed, same shuffling, same flips);
* with ``--profile``, where the engine's time goes per epoch (cProfile over ``Engine.fit``:
  checkpoint writes, the decode check, image decoding in the loader, Lightning's logging).

Every measurement runs in its own spawned child process (so peak memory is its own), one after the
other; throughputs are the fastest of ``--repeat`` runs, the sides interleaved.

    python benchmarks/bench_engine.py [--backbones resnet18,xception] [--epochs 2] [--size 64]
        [--batch-size 32] [--repeat 2] [--per-source 2] [--variants ...] [--unfused] [--profile]

``bench_baseline.py`` reuses :func:`engine_run`, :func:`plain_run` and :func:`run_in_child`.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import resource
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import visec  # noqa: E402,F401  (its process settings, e.g. the OpenMP wait policy, hold for both sides)

LEGACY = ["data.scan_cache=false", "data.memory_cache_mb=0", "train.state_every_s=0", "train.log_every_n_steps=1",
          "train.fused_optimizer=false"]
VARIANTS: dict[str, list[str]] = {  # engine rows: name -> config overrides
    "fp32": [],
    "fp32 legacy": LEGACY,
    "fp32 nondeterministic": ["train.deterministic=false"],
    "bf16-mixed": ["train.precision=bf16-mixed"],
    "fp32 channels_last": ["train.channels_last=true"],
    "bf16 channels_last": ["train.precision=bf16-mixed", "train.channels_last=true"],
}


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_in_child(fn: Callable[..., None], *args: Any) -> Any:
    """Run ``fn(*args, q)`` in a fresh spawned process; return what it put on ``q``.

    A fresh process per measurement keeps each peak resident memory (and each warm-up) its own.
    """
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=fn, args=(*args, q))
    p.start()
    while True:
        try:
            result = q.get(timeout=1)
            break
        except queue.Empty:
            if not p.is_alive():
                raise RuntimeError(f"{fn.__name__} died in its child process (exit code {p.exitcode})") from None
    p.join()
    return result


def _cfg(manifest: Path, out: Path, args, name: str, extra: list[str] | None = None):
    from visec.config import load_config

    return load_config("classifier", [f"data.manifest={manifest}", f"output_dir={out}", f"name={name}",
                                      f"model.backbone={args.backbone}", f"data.image_size={args.size}",
                                      f"train.max_epochs={args.epochs}", "train.select_on=last",
                                      "train.bootstrap=0", f"data.batch_size={args.batch_size}",
                                      "train.scheduler=none", *(extra or [])])


PROFILED = {  # row -> functions whose cumulative time it sums (file suffix, function name)
    "checkpoint writes": [("visec/checkpoint.py", "save_checkpoint"), ("trainer/trainer.py", "save_checkpoint")],
    "decode check (scan)": [("visec/data/images.py", "scan_images")],
    "image decode in the loader": [("visec/data/images.py", "load_rgb")],
    "Lightning logging": [("core/module.py", "log_dict")],
    "optimiser steps (incl. forward/backward)": [("torch/optim/optimizer.py", "wrapper")],
}


def _profile_rows(stats: Any, epochs: int) -> dict[str, float]:
    """Seconds per epoch of each :data:`PROFILED` row, from a ``pstats.Stats``.

    ``load_rgb`` is counted outside the scan only (the scan's decodes are its own row)."""
    rows = {}
    for name, funcs in PROFILED.items():
        total = 0.0
        for (file, _line, func), (_cc, _nc, _tt, ct, callers) in stats.stats.items():
            if any(file.endswith(f) and func == fn for f, fn in funcs):
                if func == "load_rgb":
                    ct = sum(v[3] for k, v in callers.items() if k[2] != "check")
                total += ct
        rows[name] = total / epochs
    return rows


def engine_run(manifest: Path, out: Path, args, q) -> None:
    import json

    from visec.engine import Engine

    engine = Engine(_cfg(manifest, out, args, "engine", VARIANTS[getattr(args, "variant", "fp32")]))
    profiler = None
    if getattr(args, "profile", False):
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    t = time.perf_counter()
    fit = engine.fit()
    train_s = time.perf_counter() - t
    if profiler is not None:
        import pstats

        profiler.disable()
        profile = _profile_rows(pstats.Stats(profiler), args.epochs)
    from visec.data.manifest import read_manifest

    n_train = len(read_manifest(manifest).split("train"))
    t = time.perf_counter()
    pred = engine.predict(manifest, checkpoint=fit["last"])
    infer_s = time.perf_counter() - t
    steps = json.loads((engine.run_dir / "last.json").read_text())["global_step"]
    q.put({"train_ips": n_train * args.epochs / train_s, "infer_ips": len(pred) / infer_s, "peak_mib": _peak_mib(),
           "loop_ips": n_train * args.epochs / fit["fit_seconds"],  # Lightning's trainer.fit alone
           "steps": steps, "weights": str(fit["last"]), "writes": fit["checkpoint_writes"],
           **({"profile": profile} if profiler is not None else {})})


def plain_run(manifest: Path, out: Path, args, q) -> None:
    """The same model, data loader, optimiser, loss and seeding, in a hand-written script.

    Timed with the same scope as the engine's calls: training from building the model to its final
    weights on disk (``Engine.fit`` builds, trains and writes checkpoints); inference from building
    the model and loading those weights to the last probability (``Engine.predict`` does the same).
    ``loop_ips`` is the training loop alone, against Lightning's ``trainer.fit`` alone.
    """
    import lightning as L
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    from visec.data.datamodule import FaceDataset
    from visec.data.manifest import read_manifest
    from visec.engine import build_module

    cfg = _cfg(manifest, out, args, "plain")
    out.mkdir(parents=True, exist_ok=True)
    weights = out / "plain.pt"
    t = time.perf_counter()
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)  # as Engine.fit does
    m = read_manifest(manifest)
    net = build_module(cfg).net
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                            fused=getattr(args, "fused", True))  # the engine's optimiser (fused AdamW)
    train = DataLoader(FaceDataset(m.split("train"), args.size, train=True, hflip=True),
                       batch_size=args.batch_size, shuffle=True,
                       generator=torch.Generator().manual_seed(cfg.train.seed))
    loop_t = time.perf_counter()
    net.train()
    steps = 0
    for _ in range(args.epochs):
        for batch in train:
            opt.zero_grad()
            loss = F.binary_cross_entropy_with_logits(net(batch["image"]).squeeze(-1), batch["label"])
            loss.backward()
            opt.step()
            steps += 1
    loop_s = time.perf_counter() - loop_t
    torch.save(net.state_dict(), weights)
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    net = build_module(cfg).net
    net.load_state_dict(torch.load(weights, weights_only=True))
    every = DataLoader(FaceDataset(read_manifest(manifest), args.size), batch_size=args.batch_size)
    net.eval()
    with torch.no_grad():
        n = sum(len(torch.sigmoid(net(b["image"]))) for b in every)
    infer_s = time.perf_counter() - t
    n_train = len(train.dataset) * args.epochs
    q.put({"train_ips": n_train / train_s, "infer_ips": n / infer_s, "loop_ips": n_train / loop_s,
           "peak_mib": _peak_mib(), "steps": steps, "weights": str(weights)})


def same_weights(engine_file: str, plain_file: str) -> float:
    """The largest absolute difference between the engine's and the plain loop's final weights."""
    import torch

    from visec.checkpoint import load_state_dict_file

    a = load_state_dict_file(engine_file)
    b = torch.load(plain_file, weights_only=True)
    if set(a) != set(b):
        return float("inf")
    return max((a[k].double() - b[k].double()).abs().max().item() if a[k].numel() else 0.0 for k in a)


def bench_backbone(manifest: Path, work: Path, args, variants: list[str]) -> dict[str, dict[str, Any]]:
    best: dict[str, dict[str, Any]] = {}
    for r in range(args.repeat):
        for side in ("plain", "plain, unfused AdamW", *variants):
            if side == "plain, unfused AdamW" and not args.unfused:
                continue
            run_args = argparse.Namespace(**{**vars(args), "variant": side if side in VARIANTS else "fp32",
                                             "fused": side != "plain, unfused AdamW",
                                             "profile": args.profile and side == "fp32" and r == 0})
            out = work / f"{args.backbone}-{side.replace(' ', '_').replace(',', '')}-{r}"
            result = run_in_child(plain_run if side.startswith("plain") else engine_run, manifest, out, run_args)
            if side == "fp32" and r == 0:
                plain = best["plain"]
                result["max_weight_diff"] = same_weights(result["weights"], plain["weights"])
            kept = best.setdefault(side, result)
            for key in ("train_ips", "infer_ips", "loop_ips"):
                kept[key] = max(kept[key], result[key])
            kept.setdefault("peaks", []).append(result["peak_mib"])
            for key in ("max_weight_diff", "profile"):
                if key in result:
                    kept[key] = result[key]
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", default="resnet18,xception")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--per-source", type=int, default=2, help="toy images per source face (2: 280 training images)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"engine rows among: {', '.join(VARIANTS)}")
    ap.add_argument("--profile", action="store_true", help="where the engine's fp32 time goes, per epoch")
    ap.add_argument("--unfused", action="store_true", help="also a plain loop with torch's default (unfused) AdamW")
    args = ap.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    from visec.data.toy import make_toy_dataset
    from visec.runtime import configure_threads

    threads = configure_threads()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        manifest = make_toy_dataset(Path(tmp) / "toy", size=args.size, per_source=args.per_source)
        results = {}
        for backbone in args.backbones.split(","):
            args.backbone = backbone.strip()
            results[args.backbone] = bench_backbone(manifest, Path(tmp), args, variants)
    print(f"{args.size} px, {args.epochs} epochs, batch {args.batch_size}, best of {args.repeat}; "
          f"{threads['threads']} threads ({threads['source']}), GOMP_SPINCOUNT="
          f"{os.environ.get('GOMP_SPINCOUNT', 'default')}; {time.perf_counter() - started:.0f} s")
    for backbone, res in results.items():
        plain = res["plain"]
        print(f"\n{backbone}  (ratios: engine / plain fp32 loop; > 1 = faster, or larger for memory)")
        print(f"{'':22s} {'train img/s':>11s} {'ratio':>6s} {'loop only':>9s} {'ratio':>6s} {'infer img/s':>11s} "
              f"{'ratio':>6s} {'peak MiB':>9s} {'ratio':>6s} {'steps':>6s}")
        for side, r in res.items():
            peak = sorted(r["peaks"])[len(r["peaks"]) // 2]
            plain_peak = sorted(plain["peaks"])[len(plain["peaks"]) // 2]
            print(f"{side:22s} {r['train_ips']:11.1f} {r['train_ips'] / plain['train_ips']:6.2f} "
                  f"{r['loop_ips']:9.1f} {r['loop_ips'] / plain['loop_ips']:6.2f} "
                  f"{r['infer_ips']:11.1f} {r['infer_ips'] / plain['infer_ips']:6.2f} "
                  f"{peak:9.0f} {peak / plain_peak:6.2f} {r['steps']:6d}")
        if "fp32" in res:
            diff = res["fp32"]["max_weight_diff"]
            print(f"engine fp32 vs plain loop: {res['fp32']['steps']} vs {plain['steps']} optimiser steps; "
                  f"final weights {'bit-identical' if diff == 0 else f'differ by up to {diff:.3g}'}; "
                  f"checkpoint writes {res['fp32']['writes']}")
            if "profile" in res["fp32"]:
                print("engine fp32, seconds per epoch (cProfile, cumulative; the profiler itself slows calls):")
                for name, sec in res["fp32"]["profile"].items():
                    print(f"  {name:42s} {sec:7.3f}")


if __name__ == "__main__":
    main()
