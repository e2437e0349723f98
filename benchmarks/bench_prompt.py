"""Prompt learning speed: GCSAM and SAM steps against a plain SGD step, and cached image features
against recomputing them (same prompt learner, same inputs, same run).

1. Step time of one optimiser step of CoOp's context (forward + backward + update) with plain SGD,
   SAM and GCSAM (``visec.engine.sam``): median over ``--repeat`` interleaved rounds after a warm-up,
   and the ratios SAM / SGD and GCSAM / SGD (two forward/backward passes: about 2x expected); then
   GCSAM through the engine's module, which encodes the batch's images once per step (the second
   pass only changes the context).
2. Training images/s of CoOp when every step encodes its images with the frozen image encoder,
   against encoding the few-shot set once and training on the cached features (valid for CoOp and
   KgCoOp without augmentation: the encoder is frozen, so the features never change; CoCoOp's
   meta-net reads them too). The check: both give the same logits (max abs diff <= 1e-5).

    python benchmarks/bench_prompt.py [--clip tiny|ViT-B-32] [--batch 32] [--classes 12] [--repeat 7]

``--clip ViT-B-32`` builds an untrained open_clip ViT-B/32 at 224 px (nothing downloaded): the
timings of the real architecture, not its accuracy. Not a test. Exit status 1 when the check fails.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from visec.engine.sam import SAM  # noqa: E402
from visec.methods.gcscoop import PromptCLIP, load_clip  # noqa: E402


def build(clip: str, classes: int) -> PromptCLIP:
    torch.manual_seed(0)
    model = load_clip(clip, "random")
    return PromptCLIP(model, [f"category {i}" for i in range(classes)], learner="coop").train()


def optimiser(net: PromptCLIP, rule: str) -> torch.optim.Optimizer:
    def sgd(groups):
        return torch.optim.SGD(groups, lr=0.002, momentum=0.9, weight_decay=5e-4)

    params = [p for p in net.parameters() if p.requires_grad]
    return sgd(params) if rule == "sgd" else SAM(params, sgd, rho=0.5, rule=rule)


def step_seconds(net: PromptCLIP, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                 module=None) -> float:
    x = x.clone()  # a new batch object every step, as the data loader gives (the module caches per batch)

    def closure():
        opt.zero_grad()
        loss = (module.losses({"image": x, "label": y})["loss"] if module is not None
                else F.cross_entropy(net(x), y))
        loss.backward()
        return loss

    start = time.perf_counter()
    opt.step(closure)
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clip", default="tiny")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--classes", type=int, default=12)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--images", type=int, default=192, help="few-shot set size for the feature-cache part")
    args = ap.parse_args()
    net = build(args.clip, args.classes)
    size = net.image_size
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, size, size, generator=g)
    y = torch.randint(0, args.classes, (args.batch,), generator=g)
    print(f"CLIP {args.clip} ({size} px), CoOp context {tuple(net.ctx.shape)}, {args.classes} classes, "
          f"batch {args.batch}, torch threads {torch.get_num_threads()}")

    from visec.config import TrainConfig
    from visec.methods.gcscoop import GCSCoOpParams, PromptLearnerModule

    module = PromptLearnerModule(net, TrainConfig(), GCSCoOpParams(clip=args.clip, clip_weights="random"))
    rules = ("sgd", "sam", "gcsam", "gcsam, module")
    opts = {r: optimiser(net, r.split(",")[0]) for r in rules}
    mods = {r: module if r.endswith("module") else None for r in rules}
    times: dict[str, list[float]] = {r: [] for r in rules}
    for r in rules:  # warm-up
        step_seconds(net, opts[r], x, y, mods[r])
    for _ in range(args.repeat):  # interleaved, so drift hits every rule alike
        for r in rules:
            times[r].append(step_seconds(net, opts[r], x, y, mods[r]))
    med = {r: statistics.median(v) for r, v in times.items()}
    print("\n1. seconds per optimiser step (median of %d)" % args.repeat)
    for r in rules:
        print(f"   {r:14s} {med[r] * 1e3:9.1f} ms   x{med[r] / med['sgd']:.2f} of SGD")

    images = torch.rand(args.images, 3, size, size, generator=g)
    labels = torch.randint(0, args.classes, (args.images,), generator=g)
    opt = optimiser(net, "sgd")

    def epoch(cached: torch.Tensor | None) -> float:
        start = time.perf_counter()
        for i in range(0, args.images, args.batch):
            xb, yb = images[i:i + args.batch], labels[i:i + args.batch]
            opt.zero_grad()
            logits = net.logits_from_features(cached[i:i + args.batch]) if cached is not None else net(xb)
            F.cross_entropy(logits, yb).backward()
            opt.step()
        return time.perf_counter() - start

    with torch.no_grad():
        start = time.perf_counter()
        feats = torch.cat([net.image_features(images[i:i + args.batch]) for i in range(0, args.images, args.batch)])
        encode = time.perf_counter() - start
        same = float((net.logits_from_features(feats[:8]) - net(images[:8])).abs().max())
    epoch(None), epoch(feats)  # warm-up
    plain = statistics.median(epoch(None) for _ in range(max(1, args.repeat // 2)))
    cached = statistics.median(epoch(feats) for _ in range(max(1, args.repeat // 2)))
    print(f"\n2. CoOp training images/s over {args.images} few-shot images (median of {max(1, args.repeat // 2)} epochs)")
    print(f"   recomputing image features  {args.images / plain:9.1f} img/s")
    print(f"   cached features             {args.images / cached:9.1f} img/s   x{plain / cached:.2f} "
          f"(one-off encoding {encode:.2f} s)")
    print(f"   max |logits difference| {same:.2e}")
    return 0 if same <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
