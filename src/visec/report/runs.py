"""Re-opening the model behind a result card, for report figures (saliency, attacked examples)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from visec.cards import ResultCard


def load_card_module(card: ResultCard, path: Path):
    """``(module in eval mode, its RunConfig)`` of the run a card at ``path`` was tested from."""
    from visec.config import RunConfig
    from visec.engine import Engine
    from visec.engine.engine import BEST

    cfg = RunConfig(**card.config)
    ckpt = path.parent.parent / BEST
    module, _ = Engine(cfg, path.parent.parent).load_module(ckpt if ckpt.is_file() else card.extra.get("checkpoint"))
    return module.eval(), cfg


def face_batch(df: pd.DataFrame, m, cfg, families: list[str]):
    """The manifest rows ``df`` as the model's input batch ``(N, C, H, W)`` in [0, 1]."""
    import torch

    from visec.data.datamodule import FaceDataset
    from visec.data.manifest import Manifest

    ds = FaceDataset(Manifest(df, m.root, m.source), cfg.data.image_size, modality=cfg.data.modality,
                     families=families)
    return torch.stack([ds[i]["image"] for i in range(len(ds))])
