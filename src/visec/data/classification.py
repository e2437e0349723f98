"""Multi-class image classification data (adversarial training): digits, CIFAR-10, CIFAR-100.

``data.dataset`` picks the set:

* ``digits``: scikit-learn's 8x8 handwritten digits (1797 real images shipped inside the
  scikit-learn wheel, so nothing is downloaded), upscaled bilinearly to ``data.image_size`` and
  repeated to 3 channels. Split once, stratified and seeded (independently of ``train.seed``, so
  every run sees the same test set): 20% test, then ``data.val_fraction`` of the rest as val.
* ``cifar10`` / ``cifar100``: the standard python-pickle folders ``cifar-10-batches-py`` /
  ``cifar-100-python`` under ``data.root`` (never downloaded). The official test batch is the test
  split; the val split is a stratified, seeded ``data.val_fraction`` of the training batches.
  Training images get random-crop 32 (padding 4) and, with ``data.hflip``, horizontal flips.

Batches are ``{"image": float (B, 3, H, W) in [0, 1], "label": long (B,), "index": long (B,)}``,
``index`` being the row inside the split. The pickles are read with a restricted unpickler that
only rebuilds numpy arrays, lists, dicts and strings, so a tampered file cannot run code.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from visec.config import DataConfig, TrainConfig
from visec.data.datamodule import SplitDataModule
from visec.errors import ConfigError, DataError

DATASETS = ("digits", "cifar10", "cifar100")
NUM_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100}
CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
CIFAR_URLS = {"cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
              "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"}
SPLIT_SEED = 0  # the data split does not move with train.seed
DIGITS_TEST_FRACTION = 0.2


# -- reading ---------------------------------------------------------------------------------------
class _ArrayUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and plain containers only (no arbitrary globals)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"), ("codecs", "encode")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def _load_pickle(path: Path) -> dict[str, Any]:
    try:
        raw = _ArrayUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise DataError(f"{path}: not a readable CIFAR python pickle ({exc})") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a dict in the CIFAR pickle, got {type(raw).__name__}")
    return {k.decode() if isinstance(k, bytes) else str(k): v for k, v in raw.items()}


def _batch_arrays(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    d = _load_pickle(path)
    if "data" not in d or label_key not in d:
        raise DataError(f"{path}: missing 'data' or '{label_key}' in the CIFAR pickle")
    data = np.asarray(d["data"], dtype=np.uint8)
    labels = np.asarray(d[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DataError(f"{path}: expected data (N, 3072) and N labels, got {data.shape} and {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar(root: str | Path | None, name: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (uint8 (N,3,32,32), int64 (N,)), "test": ...}`` from the python-pickle folder."""
    folder_name = CIFAR_FOLDERS[name]
    if root is None:
        raise DataError(f"{name}: set data.root to the folder that holds {folder_name}/ (extract "
                        f"{CIFAR_URLS[name]} there; visec never downloads)")
    root = Path(root)
    folder = root if root.name == folder_name else root / folder_name
    if not folder.is_dir():
        raise DataError(f"{name}: no {folder_name}/ under {root} (download {CIFAR_URLS[name]} and "
                        f"extract it into {root}; visec never downloads)")
    if name == "cifar10":
        files = {"train": [folder / f"data_batch_{i}" for i in range(1, 6)], "test": [folder / "test_batch"]}
        key = "labels"
    else:
        files = {"train": [folder / "train"], "test": [folder / "test"]}
        key = "fine_labels"
    out = {}
    for split, paths in files.items():
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise DataError(f"{folder}: missing {', '.join(missing)} (re-extract {CIFAR_URLS[name]})")
        parts = [_batch_arrays(p, key) for p in paths]
        out[split] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return out


def load_digits_images(size: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as float32 ``(1797, 3, size, size)`` in [0, 1] and int64 labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp_(0, 1)
    return x.repeat(1, 3, 1, 1).numpy(), d.target.astype(np.int64)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(keep, held_out)``: about ``fraction`` of every class held out, seeded."""
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n = int(round(fraction * len(idx)))
        held.append(idx[:n])
        keep.append(idx[n:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


# -- datasets --------------------------------------------------------------------------------------
class ArrayImageDataset(Dataset):
    """Images held in memory (uint8 or float in [0, 1], NCHW) with optional crop/flip augmentation."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, crop_pad: int = 0, hflip: bool = False,
                 size: int | None = None) -> None:
        x = torch.from_numpy(np.ascontiguousarray(images))
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        if size is not None and x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=size < x.shape[-1]).clamp_(0, 1)
        self.images = x
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.crop_pad, self.hflip = int(crop_pad), bool(hflip)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        img = self.images[i]
        if self.crop_pad:
            p = self.crop_pad
            h, w = img.shape[-2:]
            padded = F.pad(img, (p, p, p, p))
            dy, dx = (int(v) for v in torch.randint(0, 2 * p + 1, (2,)))
            img = padded[:, dy:dy + h, dx:dx + w]
        if self.hflip and torch.rand(()) < 0.5:
            img = img.flip(-1)
        return {"image": img, "label": self.labels[i], "index": torch.tensor(i)}


class ClassificationDataModule(SplitDataModule):
    """Train/val/test loaders for ``data.dataset`` in digits / cifar10 / cifar100.

    Follows :class:`visec.data.datamodule.FaceDataModule`'s protocol: ``dataset(split)``,
    ``selection_split`` (``val`` needs ``data.val_fraction > 0``; ``test`` only when
    ``train.select_on=test`` says so), ``skipped`` (always empty: nothing is read lazily).
    """

    drop_last_train = True  # a batch of one image has no negative of another class

    def __init__(self, data: DataConfig, train: TrainConfig, params: Any = None) -> None:
        super().__init__(data, train)
        if data.dataset not in DATASETS:
            raise ConfigError(f"data.dataset must be one of {', '.join(DATASETS)} for this method "
                              f"(got {data.dataset!r})")
        self.params = params
        self.name = data.dataset
        self.num_classes = NUM_CLASSES[self.name]
        self.splits: dict[str, ArrayImageDataset] = {}
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] | None = None

    # -- splits --------------------------------------------------------------------------------
    def _split_name(self, split: str) -> str:
        names = {self.cfg.train_split: "train", self.cfg.test_split: "test"}
        if self.cfg.val_split:
            names[self.cfg.val_split] = "val"
        if split not in names:
            raise DataError(f"{self.name}: unknown split '{split}' (this dataset has "
                            f"{', '.join(sorted(names))})")
        return names[split]

    def arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{"train", "val", "test"}`` -> ``(images, labels)`` (val may be empty)."""
        if self._arrays is None:
            if self.name == "digits":
                x, y = load_digits_images(self.cfg.image_size)
                rest, test = stratified_split(y, DIGITS_TEST_FRACTION, SPLIT_SEED)
                parts = {"train": (x[rest], y[rest]), "test": (x[test], y[test])}
            else:
                parts = load_cifar(self.cfg.root, self.name)
            x, y = parts["train"]
            keep, val = stratified_split(y, self.cfg.val_fraction, SPLIT_SEED + 1)
            parts["train"], parts["val"] = (x[keep], y[keep]), (x[val], y[val])
            self._arrays = parts
        return self._arrays

    def dataset(self, split: str) -> ArrayImageDataset:
        key = self._split_name(split)
        if key not in self.splits:
            x, y = self.arrays()[key]
            if len(y) == 0:
                raise DataError(f"{self.name}: split '{split}' is empty (data.val_fraction="
                                f"{self.cfg.val_fraction})")
            cifar = self.name != "digits"
            train = key == "train"
            self.splits[key] = ArrayImageDataset(x, y, crop_pad=4 if (cifar and train) else 0,
                                                 hflip=cifar and train and self.cfg.hflip,
                                                 size=self.cfg.image_size)
        return self.splits[key]

    def has_val_split(self) -> bool:
        return self.cfg.val_fraction > 0

    @property
    def no_val_message(self) -> str:
        return (f"model selection on the validation split needs one: {self.name} has no val split of "
                f"its own, so set data.val_fraction > 0 (held out of train) or train.select_on=last")
