"""The forgery detectors on CPU at the embedded size: training and inference images/s, peak memory,
each as a ratio to the Xception baseline measured in the same run.

For every entry (a shipped config plus overrides; the default list is Xception, ACMF, DeepFidelity,
HFC-MFFD on visible light and on VIS+NIR), in its own spawned child process:

1. **training images/s**: the engine's trainer fits the method for one epoch of ``--train``
   training images of the embedded data, at the config's image size, batch ``--batch-size`` for
   every entry, no validation; the rate counts the training steps after the first (data loading
   included). The whole ``fit`` call is also timed (``fit img/s``): it adds what a method does once
   per epoch besides its steps (HFC-MFFD's DCT statistics pass, DeepFidelity's SVR fit on the
   training features) and the trainer's set-up.
2. **inference images/s**: ``predict`` on ``--infer`` test images, batches after the first (ACMF
   without its test-time adaptation: that cost is in the bench cards' ``timings``).
3. **peak resident memory** of the child (training + inference).

Each measurement is the fastest of ``--repeat`` interleaved runs; a row measured while other
processes used more than a fifth of a core (``/proc/stat``) is starred.

    python benchmarks/bench_detectors.py [--manifest data/synth/manifest.jsonl] [--train 256]
        [--infer 320] [--batch-size 32] [--repeat 2] [--only acmf,hfc_mffd]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark modules

from bench_baseline import BUSY, OtherLoad  # noqa: E402
from bench_engine import _peak_mib, run_in_child  # noqa: E402

ENTRIES = (  # (label, config, overrides); the first is the reference
    ("xception", "xception", ()),
    ("acmf", "acmf", ()),
    ("deepfidelity", "deepfidelity", ()),
    ("hfc_mffd", "hfc_mffd", ()),
    ("hfc_mffd vis+nir", "hfc_mffd", ("data.modality=vis+nir",)),
)


def measure(config: str, overrides: tuple[str, ...], manifest: Path, out: Path, args, q) -> None:
    import lightning as L
    import torch

    from visec.config import load_config
    from visec.engine import Engine
    from visec.engine.engine import build_datamodule, build_module

    class BatchTimer(L.Callback):
        """Seconds and images of every batch after the first (the warm-up) of each loop."""

        def __init__(self) -> None:
            self.seconds: dict[str, float] = {}
            self.images: dict[str, int] = {}

        def _start(self, batch_idx: int) -> None:
            self._t = time.perf_counter() if batch_idx > 0 else None

        def _end(self, loop: str, batch) -> None:
            if self._t is not None:
                self.seconds[loop] = self.seconds.get(loop, 0.0) + time.perf_counter() - self._t
                self.images[loop] = self.images.get(loop, 0) + len(batch["label"])

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self._start(batch_idx)

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self._end("train", batch)

        def on_predict_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
            self._start(batch_idx)

        def on_predict_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0):
            self._end("infer", batch)

    torch.manual_seed(0)
    L.seed_everything(0, verbose=False)
    batches = max(2, args.train // args.batch_size)
    cfg = load_config(config, [f"data.manifest={manifest}", "train.max_epochs=1", "train.select_on=last",
                               "train.bootstrap=0", f"data.batch_size={args.batch_size}",
                               f"data.eval_batch_size={args.batch_size}", *overrides])
    engine = Engine(cfg, out / "run")
    dm, module, timer = build_datamodule(cfg), build_module(cfg), BatchTimer()
    t = time.perf_counter()
    engine._trainer([timer], limit_train_batches=batches).fit(module, datamodule=dm)
    fit_s = time.perf_counter() - t
    engine._trainer([timer], limit_predict_batches=max(2, args.infer // args.batch_size)).predict(
        module, datamodule=dm)
    q.put({"train_ips": timer.images["train"] / timer.seconds["train"],
           "infer_ips": timer.images["infer"] / timer.seconds["infer"], "peak_mib": _peak_mib(),
           "size": cfg.data.image_size, "fit_s": fit_s, "fit_ips": batches * args.batch_size / fit_s})


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, help="embedded data manifest (default: generated here)")
    ap.add_argument("--train", type=int, default=256, help="training images (one epoch)")
    ap.add_argument("--infer", type=int, default=320, help="test images to predict")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--only", help="comma-separated labels to run besides the reference")
    args = ap.parse_args(argv)
    entries = [e for e in ENTRIES if e is ENTRIES[0] or not args.only or e[0] in args.only.split(",")]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        manifest = args.manifest
        if manifest is None:
            from visec.data.synthetic import make_synth_dataset

            manifest = make_synth_dataset(work / "synth", seed=0).manifest
        runs: dict[str, dict[str, list[float]]] = {}
        for r in range(args.repeat):
            for label, config, overrides in entries:
                out = work / f"{label.replace(' ', '_')}-{r}"
                with OtherLoad() as load:
                    res = run_in_child(measure, config, overrides, Path(manifest), out, args)
                print(f"  run {r + 1}/{args.repeat} {label}: train {res['train_ips']:.1f} img/s, infer "
                      f"{res['infer_ips']:.1f} img/s, {res['peak_mib']:.0f} MiB; other processes "
                      f"{load.cores:.2f} cores", flush=True)
                for k, v in {**res, "busy": load.cores}.items():
                    runs.setdefault(label, {}).setdefault(k, []).append(v)
                shutil.rmtree(out, ignore_errors=True)

    ref = entries[0][0]

    def best(label: str, key: str) -> tuple[float, bool]:
        vals = runs[label][key]
        i = max(range(len(vals)), key=vals.__getitem__)
        return vals[i], runs[label]["busy"][i] > BUSY

    import torch

    print(f"\nCPU, {torch.get_num_threads()} threads, batch {args.batch_size}, {args.train} training images, "
          f"{args.infer} test images, best of {args.repeat}; ratios against {ref} (> 1: faster or larger)")
    print(f"{'detector':<20}{'px':>4}{'train img/s':>13}{'ratio':>7}{'fit img/s':>11}{'ratio':>7}"
          f"{'infer img/s':>13}{'ratio':>7}{'peak MiB':>10}{'ratio':>7}")
    (rt, _), (rf, _), (ri, _) = best(ref, "train_ips"), best(ref, "fit_ips"), best(ref, "infer_ips")
    rm = statistics.median(runs[ref]["peak_mib"])
    for label, _, _ in entries:
        (t, bt), (f, bf), (i, bi) = best(label, "train_ips"), best(label, "fit_ips"), best(label, "infer_ips")
        mem = statistics.median(runs[label]["peak_mib"])
        star = "*" if bt or bi or bf else ""
        print(f"{label + star:<20}{int(runs[label]['size'][0]):>4}{t:>13.1f}{t / rt:>7.2f}{f:>11.1f}{f / rf:>7.2f}"
              f"{i:>13.1f}{i / ri:>7.2f}{mem:>10.0f}{mem / rm:>7.2f}")
    print(f"(* measured while other processes used more than {BUSY} cores; total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
