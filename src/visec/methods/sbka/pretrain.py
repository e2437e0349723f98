"""The embedded demo's teacher: a small ConvNeXt-V2 pre-trained on the embedded photos of the SEEN
categories (the paper's teacher is ImageNet-1K ConvNeXt-V2-Tiny, which does not ship offline).

Cross-entropy over the seen classes on the training photos only (never a sketch, never an unseen
category), a plain PyTorch loop with horizontal flips, AdamW and a cosine schedule. The weights are
cached next to the data by seed, settings and the data's digest
(``<root>/teacher/<arch>-seed<seed>-<hash>.safetensors``), so the bench and every ``visec train
sbka`` on the embedded data share one pre-training.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

PRETRAIN_VERSION = 1
DEFAULTS: dict[str, Any] = {"epochs": 15, "batch_size": 64, "lr": 2e-3, "weight_decay": 0.05, "size": 64}


def teacher_cache_path(root: Path, digest: str, arch: str, timm_kwargs: dict[str, Any], seed: int,
                       settings: dict[str, Any]) -> Path:
    key = json.dumps({"v": PRETRAIN_VERSION, "arch": arch, "timm": timm_kwargs, "settings": settings,
                      "data": digest}, sort_keys=True)
    return root / "teacher" / f"{arch}-seed{seed}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.safetensors"


def load_images(paths: list[Path], size: int) -> torch.Tensor:
    """uint8 ``(N, 3, size, size)`` of the files (resized straight, as SBKA does)."""
    import cv2

    from visec.data.images import load_rgb

    out = np.stack([cv2.resize(load_rgb(p), (size, size), interpolation=cv2.INTER_AREA) for p in paths])
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def pretrain_teacher(data: Any, digest: str, *, arch: str, timm_kwargs: dict[str, Any], seed: int = 0,
                     settings: dict[str, Any] | None = None, force: bool = False,
                     log: Callable[[str], None] | None = None) -> Path:
    """Pre-train (or return the cached) teacher on ``data.train_photo`` (an :class:`SbirData`)."""
    from visec.checkpoint import save_checkpoint
    from visec.methods.sbka.torch_model import Encoder, Teacher

    settings = {**DEFAULTS, **(settings or {})}
    size = int(settings["size"])
    path = teacher_cache_path(Path(data.root), digest, arch, timm_kwargs, seed, settings)
    if path.is_file() and not force:
        return path
    if log is None:
        def log(message: str) -> None:
            print(message, file=sys.stderr, flush=True)
    log(f"pre-training the embedded teacher ({arch}) on {len(data.train_photo.paths)} seen-class photos "
        f"(once per seed and settings; cached as {path.name})")
    start = time.perf_counter()
    images = load_images(data.train_photo.paths, size)
    labels = torch.as_tensor(np.asarray(data.train_photo.labels), dtype=torch.long)
    # the caller's random state is left as it was: a run must not depend on whether the teacher was cached
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _train(images, labels, Teacher(Encoder(arch, **timm_kwargs), len(data.seen)), settings, seed, log)
    meta = {"kind": "SBKA teacher pre-trained on the embedded seen-class photos", "arch": arch, "timm": timm_kwargs,
            "classes": list(data.seen), "seed": seed, "settings": settings, "images": len(labels),
            "seconds": round(time.perf_counter() - start, 1)}
    save_checkpoint(model, path, meta)
    return path


def _train(images: torch.Tensor, labels: torch.Tensor, model, settings: dict[str, Any], seed: int,
           log: Callable[[str], None]):
    opt = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])
    steps = max(1, -(-len(labels) // settings["batch_size"]))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=settings["epochs"] * steps)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(settings["epochs"]):
        order = torch.randperm(len(labels), generator=gen)
        total, correct = 0.0, 0
        for b in range(steps):
            idx = order[b * settings["batch_size"]:(b + 1) * settings["batch_size"]]
            x = images[idx].float().div_(255)
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x[flip] = x[flip].flip(-1)
            logits = model(x)
            loss = F.cross_entropy(logits, labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == labels[idx]).sum())
        if epoch % 5 == 4 or epoch == settings["epochs"] - 1:
            log(f"teacher pre-training: epoch {epoch + 1}/{settings['epochs']}, loss {total / len(labels):.3f}, "
                f"train accuracy {correct / len(labels):.3f}")
    return model
