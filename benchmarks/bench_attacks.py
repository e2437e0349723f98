"""Attack throughput: visec's PGD against torchattacks' PGD on the same model and inputs (same run).

Both attack one random-init model in eval mode (a small CNN, or timm's ResNet-18 through visec's
backbone registry) with 10 classes, on the same random 32 px images labelled with the model's own
predictions. Reported: images/s of each (median over ``--repeat`` interleaved runs, after a
warm-up) and the ratio visec / torchattacks, with and without a random start, plus the check that
**without a random start both give the same adversarial images** (max abs difference <= 1e-6;
the random starts draw from different generators, so those are only timed).

    python benchmarks/bench_attacks.py [--model cnn|resnet18] [--batch 64] [--steps 10] [--repeat 5]

Not a test. Exit status 1 when the equality check fails.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from visec.config import DEFAULT_EPS, parse_budget  # noqa: E402
from visec.errors import ConfigError  # noqa: E402


def small_cnn(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1, stride=2), nn.BatchNorm2d(64), nn.ReLU(),
        nn.Conv2d(64, 128, 3, padding=1, stride=2), nn.BatchNorm2d(128), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, num_classes))


def resnet18(num_classes: int = 10) -> nn.Module:
    from visec.registry import BACKBONES

    backbone = BACKBONES.build("resnet18")
    return nn.Sequential(backbone, nn.Linear(backbone.num_features, num_classes))


def median_rate(fn, n_images: int, repeat: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return n_images / statistics.median(times), times


def budget(text: str) -> float:
    """``--eps`` / ``--alpha``: a number or a fraction like 8/255 (visec's one budget parser)."""
    try:
        return parse_budget(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["cnn", "resnet18"], default="cnn")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--eps", type=budget, default=DEFAULT_EPS)
    ap.add_argument("--alpha", type=budget, default=2 / 255)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)

    import torchattacks

    from visec.attacks import PGD

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    torch.manual_seed(0)
    model = (small_cnn() if args.model == "cnn" else resnet18()).to(dev).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=g).to(dev)
    with torch.no_grad():
        y = model(x).argmax(1)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def timed_call(attack):
        def run():
            out = attack(x, y)
            sync()
            return out
        return run

    rows = []
    for start in (False, True):
        ours = PGD(model, eps=args.eps, alpha=args.alpha, steps=args.steps,
                   random_start="uniform" if start else "none")
        ref = torchattacks.PGD(model, eps=args.eps, alpha=args.alpha, steps=args.steps, random_start=start)
        run_ours, run_ref = timed_call(ours), timed_call(ref)
        run_ours(), run_ref()  # warm-up
        rates = {"visec": [], "torchattacks": []}
        for _ in range(args.repeat):  # interleaved, so drift in machine load hits both alike
            for name, fn in (("visec", run_ours), ("torchattacks", run_ref)):
                rate, _ = median_rate(fn, args.batch, 1)
                rates[name].append(rate)
        med = {k: statistics.median(v) for k, v in rates.items()}
        diff = None
        if not start:
            diff = float((run_ours() - run_ref()).abs().max())
        rows.append((start, med["visec"], med["torchattacks"], diff))

    threads = torch.get_num_threads() if dev.type == "cpu" else "-"
    print(f"PGD Linf eps={args.eps:.5g} alpha={args.alpha:.5g} steps={args.steps} | model={args.model} "
          f"batch={args.batch} size={args.size} device={dev} threads={threads} repeat={args.repeat} "
          f"| torch {torch.__version__}, torchattacks {torchattacks.__version__}")
    print(f"{'random start':<13} {'visec img/s':>12} {'torchattacks img/s':>19} {'ratio':>7} {'max |diff|':>11}")
    ok = True
    for start, ours, ref, diff in rows:
        dtext = "-" if diff is None else f"{diff:.2e}"
        print(f"{('uniform' if start else 'none'):<13} {ours:>12.1f} {ref:>19.1f} {ours / ref:>7.3f} {dtext:>11}")
        if diff is not None and diff > 1e-6:
            ok = False
    print("equality without random start:", "PASS (<= 1e-6)" if ok else "FAIL (> 1e-6)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
