"""Adv-Diffusion's guided loop on CPU: seconds per image with identity guidance against the same loop
without it (s = 0: no decoder or surrogate gradients), and batched sources against one at a time,
in one run.

Uses the default tiny LDM architecture (random weights: speed does not depend on them) at 64 px and
two tiny surrogates, ``--steps`` DDIM steps. Peak memory is the process's resident-set high-water
mark after each configuration (``ru_maxrss``; it only grows, so configurations run from the
cheapest up). Times are the fastest of ``--repeat`` runs.

    python benchmarks/bench_adv_diffusion.py [--steps 20] [--batch 8] [--repeat 2]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()

    from visec.config import load_config
    from visec.engine.engine import build_module
    from visec.methods.adv_diffusion import AdvDiffusion
    from visec.models.face_recognition import build_face_recognizer

    torch.manual_seed(0)
    ldm = build_module(load_config("adv_diffusion")).net.eval()
    surrogates = [build_face_recognizer("tiny_ir"), build_face_recognizer("tiny_mobileface")]
    g = torch.Generator().manual_seed(0)
    n = args.batch
    src, tgt = torch.rand(n, 3, args.size, args.size, generator=g), torch.rand(n, 3, args.size, args.size, generator=g)
    mask = torch.ones(n, 1, args.size, args.size)
    mask[..., args.size // 4: 3 * args.size // 4, args.size // 4: 3 * args.size // 4] = 0

    def timed(scale: float, batch: int) -> float:
        attack = AdvDiffusion(ldm, surrogates, scale=scale, steps=args.steps)
        best = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            for s in range(0, n, batch):
                attack(src[s:s + batch], tgt[s:s + batch], mask[s:s + batch], seeds=list(range(s, min(s + batch, n))))
            best = min(best, time.perf_counter() - start)
        return best / n

    print(f"{torch.get_num_threads()} threads, {args.steps} DDIM steps, {args.size} px, {n} images")
    rows = []
    for label, scale, batch in (("no guidance, batch", 0.0, n), ("guided, batch", 300.0, n),
                                ("guided, one at a time", 300.0, 1)):
        sec = timed(scale, batch)
        rows.append((label, sec, _rss_mb()))
    base = rows[0][1]
    for label, sec, rss in rows:
        print(f"{label:<24} {sec:8.3f} s/image  {sec / base:6.2f}x unguided  peak RSS {rss:8.0f} MB")
    print(f"batching speed-up (guided): {rows[2][1] / rows[1][1]:.2f}x")


if __name__ == "__main__":
    main()
