"""Datasets and the Lightning data module that feed manifests to every detector."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from visec.config import DataConfig, TrainConfig
from visec.data.corruptions import parse_corruption
from visec.data.images import load_rgb, scan_images_cached
from visec.data.manifest import Manifest, read_manifest
from visec.errors import ConfigError, DataError, ManifestError, VisecError


def resize_rgb(rgb: np.ndarray, size: int) -> np.ndarray:
    """``uint8 (H, W, 3)`` -> contiguous ``uint8 (size, size, 3)`` (area resampling when shrinking)."""
    h, w = rgb.shape[:2]
    if (h, w) != (size, size):
        interp = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_LINEAR
        rgb = cv2.resize(rgb, (size, size), interpolation=interp)
    return np.ascontiguousarray(rgb)


def _as_float(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255.0)


def to_tensor(rgb: np.ndarray, size: int) -> torch.Tensor:
    """``uint8 (H, W, 3)`` -> ``float32 (3, size, size)`` in [0, 1] (area resampling when shrinking)."""
    return _as_float(resize_rgb(rgb, size))


class ImageCache:
    """Decoded images at a model's input size (``uint8``), kept in memory for the whole process.

    Shared by every dataset of the process, so the epochs of a run and the runs of one bench decode
    each image once. Entries are keyed by file, size and modification time (a rewritten file is
    decoded again). The budget is the caller's (``data.memory_cache_mb``): past it, images are
    simply not added. Hits and misses are counted for the benchmarks.
    """

    def __init__(self) -> None:
        self._images: dict[tuple[str, int, int, int], np.ndarray] = {}
        self._lock = threading.Lock()
        self.nbytes = self.hits = self.misses = 0

    @staticmethod
    def _key(path: Path, size: int) -> tuple[str, int, int, int]:
        st = path.stat()
        return str(path), size, st.st_size, st.st_mtime_ns

    def get(self, path: Path, size: int) -> np.ndarray | None:
        try:
            found = self._images.get(self._key(path, size))
        except OSError:
            found = None
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def put(self, path: Path, size: int, rgb: np.ndarray, budget_mb: int) -> None:
        try:
            key = self._key(path, size)
        except OSError:
            return
        with self._lock:
            if key not in self._images and self.nbytes + rgb.nbytes <= budget_mb * 2**20:
                self._images[key] = rgb
                self.nbytes += rgb.nbytes

    def clear(self) -> None:
        with self._lock:
            self._images.clear()
            self.nbytes = self.hits = self.misses = 0


IMAGE_CACHE = ImageCache()


MODALITY_CHANNELS = {"vis": 3, "nir": 3, "vis+nir": 4}


def fake_families(df: pd.DataFrame) -> list[str]:
    """The manipulation names of a manifest's fake rows, sorted: the classes of ``family``."""
    return sorted(set(df.loc[df["label"] == 1, "manipulation"].astype(str)))


class FaceDataset(Dataset):
    """Image rows of a manifest as ``{"image", "label", "family", "index"}`` samples.

    ``index`` points back into :attr:`df`, where ``video_id``, ``path`` and the rest live, so the
    evaluation can aggregate per video without moving strings through the data loader.
    ``family`` is the fake's manipulation as an index into ``families`` (-1 for real images), for
    methods that also name the forgery type.

    ``modality``: ``vis`` reads ``path`` (RGB); ``nir`` reads the near-infrared twin in the ``nir``
    column, repeated to 3 channels so any RGB detector runs on it; ``vis+nir`` gives 4 channels,
    RGB then NIR, for methods with a NIR branch. A corruption degrades both images alike.
    """

    def __init__(self, manifest: Manifest, image_size: int, train: bool = False,
                 hflip: bool = False, corruption: str | None = None, modality: str = "vis",
                 families: list[str] | None = None, memory_cache_mb: int = 0) -> None:
        videos = manifest.df["media"].eq("video")
        if videos.any():
            raise DataError(f"{manifest.source or 'manifest'}: {int(videos.sum())} row(s) are whole "
                            f"videos (e.g. {manifest.df.loc[videos, 'path'].iloc[0]}); run "
                            f"`visec preprocess` to extract face crops first")
        if modality not in MODALITY_CHANNELS:
            from visec.registry import unknown_name

            raise ConfigError(unknown_name("modality", modality, MODALITY_CHANNELS))
        if modality != "vis" and ("nir" not in manifest.df or manifest.df["nir"].isna().any()):
            raise ManifestError(f"{manifest.source or 'manifest'}: data.modality={modality} needs a "
                                f"near-infrared image in the 'nir' column of every row (the embedded "
                                f"data has one: `visec data synth`)")
        self.modality = modality
        self.families = families if families is not None else fake_families(manifest.df)
        self.df = manifest.df.reset_index(drop=True)
        self.root = manifest.root
        self.image_size = image_size
        self.train = train
        self.hflip = hflip and train
        self.corruption = parse_corruption(corruption)
        # clean images only: a corruption is seeded by the row and applied before resizing
        self.memory_cache_mb = memory_cache_mb if self.corruption is None else 0

    def __len__(self) -> int:
        return len(self.df)

    def _read(self, column: str, i: int) -> torch.Tensor:
        path = self.root / self.df.at[i, column]
        if self.memory_cache_mb:
            cached = IMAGE_CACHE.get(path, self.image_size)
            if cached is None:
                cached = resize_rgb(load_rgb(path), self.image_size)
                IMAGE_CACHE.put(path, self.image_size, cached, self.memory_cache_mb)
            return _as_float(cached)
        rgb = load_rgb(path)
        if self.corruption is not None:
            rgb = self.corruption(rgb, i)  # seeded by the row, so a sweep repeats exactly
        return to_tensor(rgb, self.image_size)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self.modality == "vis":
            img = self._read("path", i)
        elif self.modality == "nir":
            img = self._read("nir", i)[:1].expand(3, -1, -1).contiguous()
        else:
            img = torch.cat([self._read("path", i), self._read("nir", i)[:1]])
        if self.hflip and torch.rand(()) < 0.5:
            img = img.flip(-1)
        label = int(self.df.at[i, "label"])
        manip = str(self.df.at[i, "manipulation"])
        family = self.families.index(manip) if label == 1 and manip in self.families else -1
        return {"image": img, "label": torch.tensor(float(label)), "family": family, "index": i}


def keep_frames_per_video(df: pd.DataFrame, n: int) -> pd.DataFrame:
    """Keep ``n`` evenly spaced frames of every video (all of them when a video has fewer)."""
    from visec.data.sampling import sample_indices

    parts = []
    for _, g in df.sort_values(["video_id", "frame_index"]).groupby("video_id", sort=True):
        parts.append(g.iloc[sample_indices(len(g), n)])
    return pd.concat(parts).reset_index(drop=True)


@dataclass
class SplitInfo:
    name: str
    rows: int
    skipped: list[tuple[str, str]] = field(default_factory=list)


class SplitDataModule(L.LightningDataModule, ABC):
    """What every visec data module shares: seeded loaders per split and the selection protocol.

    Subclasses provide ``dataset(split)`` and ``has_val_split()``; model selection runs on the
    validation split (``train.select_on=val``), on the test split only when ``train.select_on=test``
    says so, or nowhere (``last``).
    """

    drop_last_train = False  # whether a ragged last training batch is dropped

    def __init__(self, data: DataConfig, train: TrainConfig) -> None:
        super().__init__()
        self.cfg = data
        self.train_cfg = train

    @abstractmethod
    def dataset(self, split: str) -> Dataset:
        """The dataset of one split (built once, then cached)."""

    @abstractmethod
    def has_val_split(self) -> bool:
        """Whether a validation split exists to select on."""

    no_val_message = "model selection on the validation split needs a val split; set train.select_on=last"
    no_val_error: type[VisecError] = ConfigError

    @property
    def skipped(self) -> dict[str, list[tuple[str, str]]]:
        return {}

    @property
    def selection_split(self) -> str | None:
        if self.train_cfg.select_on == "test":
            return self.cfg.test_split
        if self.train_cfg.select_on == "val":
            if not self.cfg.val_split or not self.has_val_split():
                raise self.no_val_error(self.no_val_message)
            return self.cfg.val_split
        return None

    def bad_images(self, report: Any, split: str) -> set[Path]:
        """The unreadable images a split's decode check found: the first one stops the run with
        ``data.on_bad_image=error``; else they are returned, to be skipped and reported."""
        if not report.bad:
            return set()
        if self.cfg.on_bad_image == "error":
            path, reason = report.bad[0]
            raise DataError(f"{path}: {reason} ({len(report.bad)} unreadable image(s) in "
                            f"split '{split}'; set data.on_bad_image=skip to skip and report them)")
        return {Path(p) for p, _ in report.bad}

    def _loader(self, split: str, train: bool) -> DataLoader:
        ds = self.dataset(split)
        bs = self.cfg.batch_size if train else (self.cfg.eval_batch_size or self.cfg.batch_size)
        gen = torch.Generator().manual_seed(self.train_cfg.seed)
        return DataLoader(ds, batch_size=bs, shuffle=train,
                          drop_last=self.drop_last_train and train and len(ds) > bs,
                          num_workers=self.cfg.num_workers, generator=gen,
                          persistent_workers=self.cfg.num_workers > 0,
                          # page-locked batches copy to a GPU asynchronously; on the CPU they only cost
                          pin_memory=self.train_cfg.accelerator != "cpu" and torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.cfg.train_split, True)

    def val_dataloader(self) -> DataLoader | list:
        split = self.selection_split
        return self._loader(split, False) if split else []

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.cfg.test_split, False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.cfg.test_split, False)


class FaceDataModule(SplitDataModule):
    """Reads the manifest once, checks every image once, and serves train/val/test/predict loaders.

    Unreadable images are skipped and *reported* (``skipped``: path and reason per split) when
    ``data.on_bad_image`` is ``skip``; with ``error`` the first one stops the run.
    """

    no_val_message = ("model selection on the validation split needs a 'val' split in the manifest; "
                      "add one or set train.select_on=last")
    no_val_error = ManifestError

    def __init__(self, data: DataConfig, train: TrainConfig, manifest: Manifest | None = None) -> None:
        super().__init__(data, train)
        self._manifest = manifest
        self.splits: dict[str, FaceDataset] = {}
        self.info: dict[str, SplitInfo] = {}

    @property
    def manifest(self) -> Manifest:
        if self._manifest is None:
            if self.cfg.manifest is None:
                raise ManifestError("no manifest given: set data.manifest=PATH (or run `visec data toy` "
                                    "to generate a small one)")
            self._manifest = read_manifest(self.cfg.manifest)
        return self._manifest

    def dataset(self, split: str) -> FaceDataset:
        if split not in self.splits:
            part = self.manifest.split(split)
            if len(part) == 0:
                raise ManifestError(f"{self.manifest.source or 'manifest'}: split '{split}' is empty")
            df = self._holdout(part.df, split)
            if self.cfg.frames_per_video:
                df = keep_frames_per_video(df, self.cfg.frames_per_video)
            train = split == self.cfg.train_split
            corruption = None if train else self.cfg.corruption
            # in-process loading of clean images only (workers would each hold a copy)
            cache_mb = self.cfg.memory_cache_mb if self.cfg.num_workers == 0 and corruption is None else 0
            size = self.cfg.image_size

            def keep(path: Path, rgb: np.ndarray) -> None:  # decoded anyway: fill the memory cache
                IMAGE_CACHE.put(path, size, resize_rgb(rgb, size), cache_mb)

            paths = [part.root / p for p in df["path"]]
            if self.cfg.modality != "vis":
                paths += [part.root / p for p in df["nir"]]
            hashes = (list(df["sha256"].astype(str)) + [""] * (len(paths) - len(df))
                      if "sha256" in df else None)
            report, _ = scan_images_cached(paths, hashes, use_cache=self.cfg.scan_cache,
                                           keep=keep if cache_mb else None)
            info = SplitInfo(split, len(df), report.bad)
            bad = self.bad_images(report, split)
            if bad:
                ok = [part.root / p not in bad for p in df["path"]]
                if self.cfg.modality != "vis":
                    ok = [a and part.root / n not in bad for a, n in zip(ok, df["nir"])]
                df = df[ok]
                if len(df) == 0:
                    raise DataError(f"split '{split}': all {info.rows} image(s) are unreadable")
            self.info[split] = info
            self.splits[split] = FaceDataset(Manifest(df, part.root, part.source), self.cfg.image_size,
                                             train=train, hflip=self.cfg.hflip, corruption=corruption,
                                             modality=self.cfg.modality, families=self.families,
                                             memory_cache_mb=cache_mb)
        return self.splits[split]

    @property
    def families(self) -> list[str]:
        """The fake manipulation families of the whole manifest (the same classes in every split)."""
        return fake_families(self.manifest.df)

    def _holdout(self, df: pd.DataFrame, split: str) -> pd.DataFrame:
        """Leave-one-manipulation-out: drop the held-out fakes from training, test on reals + them."""
        held = self.cfg.holdout
        if held is None:
            return df
        known = set(self.manifest.df.loc[self.manifest.df["label"] == 1, "manipulation"])
        if held not in known:
            from visec.registry import unknown_name

            raise ConfigError(unknown_name("manipulation to hold out", held, known))
        if split == self.cfg.test_split:
            return df[(df["label"] == 0) | (df["manipulation"] == held)]
        return df[df["manipulation"] != held]

    @property
    def skipped(self) -> dict[str, list[tuple[str, str]]]:
        return {k: v.skipped for k, v in self.info.items() if v.skipped}

    def has_val_split(self) -> bool:
        return self.cfg.val_split in set(self.manifest.df["split"])
