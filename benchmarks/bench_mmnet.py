"""Sequential detectors on CPU: SeqFakeFormer and MMNet against the Xception baseline, and batched
greedy decoding against one image at a time, in one run.

1. **training and inference images/s** of SeqFakeFormer, MMNet (all parts on) and the Xception
   binary classifier (the forgery bench's baseline) on the same random 64 px batches, each a plain
   loop (forward, loss, backward, fused AdamW step; then ``no_grad`` inference: greedy decoding,
   MMNet's rescoring and recovery included). Ratios are against Xception measured in the same run.
2. **batched greedy decoding** against decoding one image at a time (what the official code does),
   on a trained-shape MMNet and SeqFakeFormer; the outputs are checked to be identical.

Throughputs are the fastest of ``--repeat`` runs (the fastest is the one the rest of the machine
disturbed least).

    python benchmarks/bench_mmnet.py [--batch 32] [--steps 6] [--repeat 3] [--size 64] [--arch resnet18]
"""

from __future__ import annotations

import argparse
import time

import torch


def _models(arch: str, size: int):
    from visec.config import load_config
    from visec.engine.engine import build_module

    common = [f"model.arch={arch}", f"data.image_size={size}"]
    return {
        "xception": build_module(load_config("classifier", ["model.backbone=xception"])),
        "seqfakeformer": build_module(load_config("mmnet/seqfakeformer", common)),
        "mmnet": build_module(load_config("mmnet", common)),
    }


def _batch(module, n: int, size: int, g: torch.Generator) -> dict:
    x = torch.rand(n, 3, size, size, generator=g)
    seq = torch.zeros(n, 5, dtype=torch.long)
    lengths = torch.randint(0, 6, (n,), generator=g)
    for i, k in enumerate(lengths.tolist()):
        seq[i, :k] = torch.randperm(5, generator=g)[:k] + 1
    return {"image": x, "original": torch.rand(n, 3, size, size, generator=g), "sequence": seq,
            "has_original": torch.ones(n, dtype=torch.bool), "label": (seq > 0).any(1).float(),
            "family": torch.zeros(n, dtype=torch.long), "index": torch.arange(n)}


def _train_rate(module, batches) -> float:
    from visec.engine.module import make_optimizer

    module.train()
    opt = make_optimizer([p for p in module.parameters() if p.requires_grad], module.train_cfg)
    module.losses(batches[0])["loss"].backward()  # warm-up step (allocations)
    opt.zero_grad()
    start = time.perf_counter()
    for b in batches:
        loss = module.losses(b)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return sum(len(b["image"]) for b in batches) / (time.perf_counter() - start)


def _infer_rate(module, batches) -> float:
    module.eval()
    with torch.no_grad():
        module(batches[0]["image"])
        start = time.perf_counter()
        for b in batches:
            module(b["image"])
    return sum(len(b["image"]) for b in batches) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--arch", default="resnet18")
    args = ap.parse_args()
    torch.manual_seed(0)
    models = _models(args.arch, args.size)
    g = torch.Generator().manual_seed(0)
    batches = {k: [_batch(m, args.batch, args.size, g) for _ in range(args.steps)] for k, m in models.items()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, {args.size} px, "
          f"{args.steps} steps, best of {args.repeat}")
    rates = {}
    for name, module in models.items():
        tr = max(_train_rate(module, batches[name]) for _ in range(args.repeat))
        inf = max(_infer_rate(module, batches[name]) for _ in range(args.repeat))
        rates[name] = (tr, inf)
    base = rates["xception"]
    print(f"{'model':<15}{'train img/s':>12}{'vs Xception':>13}{'infer img/s':>13}{'vs Xception':>13}")
    for name, (tr, inf) in rates.items():
        print(f"{name:<15}{tr:>12.1f}{tr / base[0]:>12.2f}x{inf:>13.1f}{inf / base[1]:>12.2f}x")

    print("\ngreedy decoding, batched vs one image at a time (same images, outputs compared)")
    x = torch.cat([b["image"] for b in batches["mmnet"]])[:64]
    for name in ("seqfakeformer", "mmnet"):
        net = models[name].net.eval()
        with torch.no_grad():
            gen = (lambda t: net.generate(t, rerank=True, recover=False)) if name == "mmnet" else net.generate
            best_b = best_s = float("inf")
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                batched = gen(x)["sequence"]
                t1 = time.perf_counter()
                single = torch.cat([gen(x[i:i + 1])["sequence"] for i in range(len(x))])
                t2 = time.perf_counter()
                best_b, best_s = min(best_b, t1 - t0), min(best_s, t2 - t1)
        same = torch.equal(batched, single)
        print(f"{name:<15} batched {len(x) / best_b:8.1f} img/s, one at a time {len(x) / best_s:7.1f} img/s: "
              f"{best_s / best_b:5.1f}x; identical outputs: {same}")
        if not same:
            raise SystemExit("batched and one-at-a-time decoding disagree")


if __name__ == "__main__":
    main()
