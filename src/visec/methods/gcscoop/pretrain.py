"""The embedded demo's CLIP: a tiny open_clip CLIP pre-trained contrastively on the embedded captions.

No small pre-trained CLIP ships offline, so for the embedded data visec trains one: open_clip's
:class:`~open_clip.model.CLIP` classes and :class:`~open_clip.loss.ClipLoss` (symmetric InfoNCE with
a learnt temperature) on ``captions.jsonl`` of :mod:`visec.data.synthetic.captions` (every category
word appears in its captions; its images are disjoint from the classification splits). The weights
are cached by seed and settings next to the data (``<root>/clip/tiny-seed<seed>-<hash>.safetensors``),
so the bench and every ``visec train gcscoop`` on the embedded data reuse one pre-training.

A plain PyTorch loop rather than the engine: this is data preparation for the demo (no splits, no
model selection, no cards), done once per seed.
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
from PIL import Image

from visec.errors import DataError

PRETRAIN_VERSION = 1
DEFAULTS: dict[str, Any] = {"epochs": 12, "batch_size": 256, "lr": 2e-3, "weight_decay": 0.1}


def _load_captions(root: Path) -> tuple[torch.Tensor, list[str]]:
    path = root / "captions.jsonl"
    if not path.is_file():
        raise DataError(f"no captions.jsonl in {root} (run `visec data synth --kind captions --out {root}`)")
    images, texts = [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            with Image.open(root / row["path"]) as im:
                images.append(np.asarray(im.convert("RGB")))
            texts.append(str(row["caption"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}:{n}: unreadable caption row ({exc})") from None
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), texts


def clip_cache_path(root: str | Path, seed: int, tiny: dict[str, Any], settings: dict[str, Any]) -> Path:
    meta = json.loads((Path(root) / "captions.json").read_text()) if (Path(root) / "captions.json").is_file() else {}
    key = json.dumps({"v": PRETRAIN_VERSION, "tiny": tiny, "settings": settings, "data": meta.get("digest")},
                     sort_keys=True)
    return Path(root) / "clip" / f"tiny-seed{seed}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.safetensors"


def pretrain_tiny_clip(root: str | Path, seed: int = 0, tiny: dict[str, Any] | None = None,
                       settings: dict[str, Any] | None = None, *, force: bool = False,
                       log: Callable[[str], None] | None = None) -> Path:
    """Pre-train (or return the cached) tiny CLIP on the captions under ``root``; the weights' path."""
    from open_clip.loss import ClipLoss

    from visec.checkpoint import save_checkpoint
    from visec.data.synthetic.captions import ensure_caption_dataset
    from visec.methods.gcscoop.torch_model import CLIP_MEAN, CLIP_STD, tiny_clip

    root = Path(root)
    ensure_caption_dataset(root)
    tiny = dict(tiny or {})
    settings = {**DEFAULTS, **(settings or {})}
    path = clip_cache_path(root, seed, tiny, settings)
    if path.is_file() and not force:
        return path
    import open_clip

    if log is None:  # a one-off step of minutes: say what is happening (stderr, so stdout stays clean)
        def log(message: str) -> None:
            print(message, file=sys.stderr, flush=True)
    log(f"pre-training the tiny CLIP on {root / 'captions.jsonl'} (once per seed and settings; cached as {path.name})")
    start = time.perf_counter()
    images, texts = _load_captions(root)
    torch.manual_seed(seed)
    model = tiny_clip(**tiny)
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=model.context_length)
    tokens = tokenizer(texts)
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])
    steps_per_epoch = max(1, len(texts) // settings["batch_size"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings["lr"], pct_start=0.1,
                                                total_steps=settings["epochs"] * steps_per_epoch)
    loss_fn = ClipLoss()
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(settings["epochs"]):
        order = torch.randperm(len(texts), generator=gen)
        total = 0.0
        for b in range(steps_per_epoch):
            idx = order[b * settings["batch_size"]:(b + 1) * settings["batch_size"]]
            x = images[idx].float().div_(255)
            if x.shape[-1] != size:
                x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
            img_f, txt_f, scale = model((x - mean) / std, tokens[idx])
            loss = loss_fn(img_f, txt_f, scale)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, np.log(100))
            total += float(loss.detach())
        if (epoch % 10 == 9 or epoch == settings["epochs"] - 1):
            log(f"tiny CLIP pre-training: epoch {epoch + 1}/{settings['epochs']}, loss {total / steps_per_epoch:.3f}")
    meta = {"kind": "tiny CLIP pre-trained on the embedded captions", "seed": seed, "tiny": tiny,
            "settings": settings, "images": len(texts), "seconds": round(time.perf_counter() - start, 1)}
    save_checkpoint(model, path, meta)
    return path
