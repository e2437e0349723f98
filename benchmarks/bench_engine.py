"""Engine overhead: visec's Lightning engine against a plain PyTorch loop on the same model and data.

Prints training and inference images/s and peak resident memory for each, and the ratio
engine / plain. Each measurement runs in its own child process (so peak memory is its own), one
after the other in this run, on the toy face set at 64 px.

    python benchmarks/bench_engine.py [--backbone resnet18] [--epochs 2] [--size 64] [--batch-size 32]

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


def _cfg(manifest: Path, out: Path, args, name: str):
    from visec.config import load_config

    return load_config("classifier", [f"data.manifest={manifest}", f"output_dir={out}", f"name={name}",
                                      f"model.backbone={args.backbone}", f"data.image_size={args.size}",
                                      f"train.max_epochs={args.epochs}", "train.select_on=last",
                                      "train.bootstrap=0", f"data.batch_size={args.batch_size}",
                                      "train.scheduler=none"])


def engine_run(manifest: Path, out: Path, args, q) -> None:
    from visec.engine import Engine

    engine = Engine(_cfg(manifest, out, args, "engine"))
    t = time.perf_counter()
    fit = engine.fit()
    train_s = time.perf_counter() - t
    from visec.data.manifest import read_manifest

    n_train = len(read_manifest(manifest).split("train"))
    t = time.perf_counter()
    pred = engine.predict(manifest, checkpoint=fit["last"])
    infer_s = time.perf_counter() - t
    q.put({"train_ips": n_train * args.epochs / train_s, "infer_ips": len(pred) / infer_s, "peak_mib": _peak_mib(),
           "trainer_fit_ips": n_train * args.epochs / fit["fit_seconds"]})  # Lightning's fit alone


def plain_run(manifest: Path, out: Path, args, q) -> None:
    """The same model, data loader, optimiser and loss, in a hand-written loop."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    from visec.data.datamodule import FaceDataset
    from visec.data.manifest import read_manifest
    from visec.engine import build_module

    torch.manual_seed(0)
    cfg = _cfg(manifest, out, args, "plain")
    m = read_manifest(manifest)
    net = build_module(cfg).net
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    train = DataLoader(FaceDataset(m.split("train"), args.size, train=True, hflip=True),
                       batch_size=args.batch_size, shuffle=True)
    t = time.perf_counter()
    net.train()
    for _ in range(args.epochs):
        for batch in train:
            opt.zero_grad()
            loss = F.binary_cross_entropy_with_logits(net(batch["image"]).squeeze(-1), batch["label"])
            loss.backward()
            opt.step()
    train_s = time.perf_counter() - t
    every = DataLoader(FaceDataset(m, args.size), batch_size=args.batch_size)
    net.eval()
    t = time.perf_counter()
    with torch.no_grad():
        n = sum(len(torch.sigmoid(net(b["image"]))) for b in every)
    infer_s = time.perf_counter() - t
    q.put({"train_ips": len(train.dataset) * args.epochs / train_s, "infer_ips": n / infer_s, "peak_mib": _peak_mib()})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    from visec.data.toy import make_toy_dataset

    with tempfile.TemporaryDirectory() as tmp:
        manifest = make_toy_dataset(Path(tmp) / "toy", size=args.size)
        results = {name: run_in_child(fn, manifest, Path(tmp) / "runs", args)
                   for name, fn in (("plain", plain_run), ("engine", engine_run))}
    print(f"backbone {args.backbone}, {args.size} px, {args.epochs} epochs, batch {args.batch_size}, "
          f"CPU threads {os.cpu_count()}")
    print(f"{'':8s} {'train img/s':>12s} {'infer img/s':>12s} {'peak MiB':>10s}")
    for name, r in results.items():
        print(f"{name:8s} {r['train_ips']:12.1f} {r['infer_ips']:12.1f} {r['peak_mib']:10.0f}")
    e, b = results["engine"], results["plain"]
    print(f"{'ratio':8s} {e['train_ips'] / b['train_ips']:12.2f} {e['infer_ips'] / b['infer_ips']:12.2f} "
          f"{e['peak_mib'] / b['peak_mib']:10.2f}   (engine / plain loop; >1 = engine faster/larger)")


if __name__ == "__main__":
    main()
