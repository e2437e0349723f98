"""Engine overhead: visec's Lightning engine against a plain PyTorch loop on the same model and data.

Prints training and inference images/s and peak resident memory for each, and the ratio
engine / plain. Each measurement runs in its own child process (so peak memory is its own), one
after the other in this run, on the toy face set at 64 px.

    python benchmarks/bench_engine.py [--backbone resnet18] [--epochs 2] [--size 64]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cfg(manifest: Path, out: Path, args, name: str):
    from visec.config import load_config

    return load_config("classifier", [f"data.manifest={manifest}", f"output_dir={out}", f"name={name}",
                                      f"model.backbone={args.backbone}", f"data.image_size={args.size}",
                                      f"train.max_epochs={args.epochs}", "train.select_on=last",
                                      "train.bootstrap=0", "data.batch_size=32", "train.scheduler=none"])


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
    q.put({"train_ips": n_train * args.epochs / train_s, "infer_ips": len(pred) / infer_s, "peak_mib": _peak_mib()})


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
    train = DataLoader(FaceDataset(m.split("train"), args.size, train=True, hflip=True), batch_size=32, shuffle=True)
    t = time.perf_counter()
    net.train()
    for _ in range(args.epochs):
        for batch in train:
            opt.zero_grad()
            loss = F.binary_cross_entropy_with_logits(net(batch["image"]).squeeze(-1), batch["label"])
            loss.backward()
            opt.step()
    train_s = time.perf_counter() - t
    every = DataLoader(FaceDataset(m, args.size), batch_size=32)
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
    args = ap.parse_args()
    from visec.data.toy import make_toy_dataset

    with tempfile.TemporaryDirectory() as tmp:
        manifest = make_toy_dataset(Path(tmp) / "toy", size=args.size)
        ctx = mp.get_context("spawn")
        results = {}
        for name, fn in (("plain", plain_run), ("engine", engine_run)):
            q = ctx.Queue()
            p = ctx.Process(target=fn, args=(manifest, Path(tmp) / "runs", args, q))
            p.start()
            results[name] = q.get()
            p.join()
    print(f"backbone {args.backbone}, {args.size} px, {args.epochs} epochs, batch 32, CPU threads {os.cpu_count()}")
    print(f"{'':8s} {'train img/s':>12s} {'infer img/s':>12s} {'peak MiB':>10s}")
    for name, r in results.items():
        print(f"{name:8s} {r['train_ips']:12.1f} {r['infer_ips']:12.1f} {r['peak_mib']:10.0f}")
    e, b = results["engine"], results["plain"]
    print(f"{'ratio':8s} {e['train_ips'] / b['train_ips']:12.2f} {e['infer_ips'] / b['infer_ips']:12.2f} "
          f"{e['peak_mib'] / b['peak_mib']:10.2f}   (engine / plain loop; >1 = engine faster/larger)")


if __name__ == "__main__":
    main()
