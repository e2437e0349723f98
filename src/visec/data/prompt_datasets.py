"""Few-shot classification data for prompt learning (CoOp's layouts) and the base-to-new protocol.

``data.dataset`` names a layout, ``data.root`` the folder that holds it (never downloaded):

============== ============================ ===========================================
name           folder under ``data.root``   split file / lists
============== ============================ ===========================================
visec_captions (the folder itself)          ``split_visec_captions.json`` (embedded set)
caltech101     ``caltech-101``              ``split_zhou_Caltech101.json``, images ``101_ObjectCategories``
oxford_pets    ``oxford_pets``              ``split_zhou_OxfordPets.json``, images ``images``
stanford_cars  ``stanford_cars``            ``split_zhou_StanfordCars.json``, images: the folder
flowers102     ``oxford_flowers``           ``split_zhou_OxfordFlowers.json``, images ``jpg``
food101        ``food-101``                 ``split_zhou_Food101.json``, images ``images``
sun397         ``sun397``                   ``split_zhou_SUN397.json``, images ``SUN397``
dtd            ``dtd``                      ``split_zhou_DescribableTextures.json``, images ``images``
eurosat        ``eurosat``                  ``split_zhou_EuroSAT.json``, images ``2750``
ucf101         ``ucf101``                   ``split_zhou_UCF101.json``, images ``UCF-101-midframes``
fgvc_aircraft  ``fgvc_aircraft``            ``images_variant_{train,val,test}.txt`` + ``variants.txt``, images ``images``
imagenet       ``imagenet``                 ``classnames.txt``, ``images/train/<wnid>/``, ``images/val/<wnid>/`` (val = test)
============== ============================ ===========================================

The ``split_zhou_*.json`` files are CoOp's fixed splits (``{"train" | "val" | "test": [[path
relative to the image folder, label, class name], ...]}``). A ``data.root`` that *is* the layout's
folder works too.

Protocol (CoOp / CoCoOp, as GCSCoOp's code runs it):

* :func:`base_new_split`: sort the label ids; base = the first ``ceil(n / 2)``, new = the rest, each
  relabelled from 0 in that order;
* :func:`few_shot`: ``shots`` images per base class from the train split (``val_shots`` from val;
  ImageNet has no val, so its val shots come from train, disjoint from the train shots), drawn
  with ``seed`` and cached as JSON under ``<root>/split_fewshot/`` so every run of a seed sees the
  same images;
* splits served: ``train`` (few-shot, base), ``val`` (few-shot, base), ``test`` (all base test
  images) and ``test_new`` (all new test images, with the new class names).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from visec.config import DataConfig, TrainConfig
from visec.data.datamodule import SplitDataModule
from visec.errors import ConfigError, DataError

# name -> (folder, image folder (relative to it), split file)
ZHOU_LAYOUTS: dict[str, tuple[str, str, str]] = {
    "caltech101": ("caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json"),
    "oxford_pets": ("oxford_pets", "images", "split_zhou_OxfordPets.json"),
    "stanford_cars": ("stanford_cars", "", "split_zhou_StanfordCars.json"),
    "flowers102": ("oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json"),
    "food101": ("food-101", "images", "split_zhou_Food101.json"),
    "sun397": ("sun397", "SUN397", "split_zhou_SUN397.json"),
    "dtd": ("dtd", "images", "split_zhou_DescribableTextures.json"),
    "eurosat": ("eurosat", "2750", "split_zhou_EuroSAT.json"),
    "ucf101": ("ucf101", "UCF-101-midframes", "split_zhou_UCF101.json"),
    "visec_captions": ("", "images", "split_visec_captions.json"),
}
LAYOUTS = (*ZHOU_LAYOUTS, "fgvc_aircraft", "imagenet")
SPLITS = ("train", "val", "test", "test_new")


@dataclass
class Items:
    """One split: image paths, labels (original ids) and the id -> class name table."""

    paths: list[Path]
    labels: np.ndarray
    names: dict[int, str]


def _folder(root: Path, name: str) -> Path:
    if name in ZHOU_LAYOUTS and not ZHOU_LAYOUTS[name][0]:
        return root
    folder = ZHOU_LAYOUTS[name][0] if name in ZHOU_LAYOUTS else name
    return root if root.name == folder else root / folder


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable JSON split file ({exc})") from None


def _zhou(folder: Path, image_dir: str, split_file: str) -> dict[str, Items]:
    path = folder / split_file
    if not path.is_file():
        raise DataError(f"no {split_file} in {folder} (CoOp's fixed split file; see CoOp's DATASETS.md)")
    raw = _read_json(path)
    if not isinstance(raw, dict) or not all(isinstance(raw.get(s), list) for s in ("train", "val", "test")):
        raise DataError(f"{path}: expected {{'train': [...], 'val': [...], 'test': [...]}}")
    out = {}
    for split in ("train", "val", "test"):
        paths, labels, names = [], [], {}
        for k, item in enumerate(raw[split]):
            if (not isinstance(item, list) or len(item) != 3 or not isinstance(item[0], str)
                    or isinstance(item[1], bool) or not isinstance(item[1], int) or not isinstance(item[2], str)):
                raise DataError(f"{path}: {split}[{k}] is not [path, integer label, class name] (got {item!r:.80})")
            paths.append(folder / image_dir / item[0])
            labels.append(item[1])
            if names.setdefault(item[1], item[2]) != item[2]:
                raise DataError(f"{path}: label {item[1]} has two class names ({names[item[1]]!r}, {item[2]!r})")
        out[split] = Items(paths, np.asarray(labels, np.int64), names)
    return out


def _fgvc(folder: Path) -> dict[str, Items]:
    variants_file = folder / "variants.txt"
    if not variants_file.is_file():
        raise DataError(f"no variants.txt in {folder} (the FGVC-Aircraft 'data' folder)")
    variants = [v.strip() for v in variants_file.read_text().splitlines() if v.strip()]
    ids = {v: i for i, v in enumerate(variants)}
    out = {}
    for split in ("train", "val", "test"):
        path = folder / f"images_variant_{split}.txt"
        if not path.is_file():
            raise DataError(f"no {path.name} in {folder}")
        paths, labels = [], []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            image, _, variant = line.strip().partition(" ")
            if variant not in ids:
                raise DataError(f"{path}:{n}: variant {variant!r} is not in variants.txt")
            paths.append(folder / "images" / f"{image}.jpg")
            labels.append(ids[variant])
        out[split] = Items(paths, np.asarray(labels, np.int64), dict(enumerate(variants)))
    return out


def _imagenet(folder: Path) -> dict[str, Items]:
    table = folder / "classnames.txt"
    if not table.is_file():
        raise DataError(f"no classnames.txt in {folder} (CoOp's 'wnid class name' list)")
    wnids, names = [], {}
    for line in table.read_text().splitlines():
        wnid, _, name = line.strip().partition(" ")
        if wnid:
            names[len(wnids)] = name.strip()
            wnids.append(wnid)
    out = {}
    for split, sub in (("train", "train"), ("test", "val")):
        paths, labels = [], []
        for label, wnid in enumerate(wnids):
            d = folder / "images" / sub / wnid
            if not d.is_dir():
                raise DataError(f"{folder}: no images/{sub}/{wnid}/")
            files = sorted(p for p in d.iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
            paths += files
            labels += [label] * len(files)
        out[split] = Items(paths, np.asarray(labels, np.int64), names)
    out["val"] = Items([], np.zeros(0, np.int64), names)  # CoOp: ImageNet's val shots come from train
    return out


def read_layout(name: str, root: str | Path | None) -> dict[str, Items]:
    """The train / val / test items of layout ``name`` under ``root``."""
    if name not in LAYOUTS:
        raise ConfigError(f"data.dataset must be one of {', '.join(LAYOUTS)} for prompt learning (got {name!r})")
    if root is None:
        raise DataError(f"{name}: set data.root to the folder that holds the dataset (visec never downloads)")
    folder = _folder(Path(root), name)
    if not folder.is_dir():
        raise DataError(f"{name}: no folder {folder}")
    if name == "fgvc_aircraft":
        return _fgvc(folder)
    if name == "imagenet":
        return _imagenet(folder)
    _, image_dir, split_file = ZHOU_LAYOUTS[name]
    return _zhou(folder, image_dir, split_file)


def base_new_split(labels: np.ndarray | list[int]) -> tuple[list[int], list[int]]:
    """CoOp's subsample_classes: sorted label ids, base = first ``ceil(n/2)``, new = the rest."""
    ids = sorted(set(int(x) for x in labels))
    m = math.ceil(len(ids) / 2)
    return ids[:m], ids[m:]


def few_shot(labels: np.ndarray, classes: list[int], shots: int, seed: int,
             exclude: set[int] | None = None) -> list[int]:
    """``shots`` indices per class in ``classes`` (all of a class when it has fewer), seeded; sorted."""
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        if exclude:
            idx = np.array([i for i in idx if int(i) not in exclude], np.int64)
        if len(idx) == 0:
            raise DataError(f"class {c} has no image to draw shots from")
        chosen += [int(i) for i in rng.choice(idx, size=min(shots, len(idx)), replace=False)]
    return sorted(chosen)


class PromptImages(Dataset):
    """Images read on demand (PIL), resized for CLIP; batches ``{"image" in [0, 1], "label", "index"}``."""

    def __init__(self, paths: list[Path], labels: np.ndarray, classnames: list[str], size: int,
                 train: bool, hflip: bool, crop_scale: tuple[float, float]) -> None:
        from torchvision.transforms import v2 as T

        self.paths, self.labels, self.classnames = paths, torch.as_tensor(labels, dtype=torch.long), classnames
        bicubic = T.InterpolationMode.BICUBIC
        steps: list[Any] = ([T.RandomResizedCrop(size, scale=crop_scale, interpolation=bicubic, antialias=True)]
                            + ([T.RandomHorizontalFlip()] if hflip else [])) if train else [
            T.Resize(size, interpolation=bicubic, antialias=True), T.CenterCrop(size)]
        self.transform = T.Compose([T.ToImage(), *steps, T.ToDtype(torch.float32, scale=True)])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        try:
            with Image.open(self.paths[i]) as im:
                img = im.convert("RGB")
        except (OSError, ValueError) as exc:
            raise DataError(f"{self.paths[i]}: unreadable image ({exc})") from None
        return {"image": self.transform(img).clamp_(0, 1), "label": self.labels[i], "index": torch.tensor(i)}


class PromptDataModule(SplitDataModule):
    """Few-shot base-class training data and base / new test sets (see the module docstring).

    ``params`` carries ``shots``, ``val_shots`` and ``crop_scale`` (the prompt learner's
    ``model.*`` settings). ``classnames(split)`` gives each split's class names in label order.
    """

    def __init__(self, data: DataConfig, train: TrainConfig, params: Any) -> None:
        super().__init__(data, train)
        if data.dataset not in LAYOUTS:
            raise ConfigError(f"data.dataset must be one of {', '.join(LAYOUTS)} for prompt learning "
                              f"(got {data.dataset!r})")
        self.params = params
        self.name = data.dataset
        self._items: dict[str, tuple[list[Path], np.ndarray, list[str]]] | None = None
        self._datasets: dict[str, PromptImages] = {}

    def _split_key(self, split: str) -> str:
        names = {self.cfg.train_split: "train", self.cfg.test_split: "test", "test_new": "test_new"}
        if self.cfg.val_split:
            names[self.cfg.val_split] = "val"
        if split not in names:
            raise DataError(f"{self.name}: unknown split '{split}' (known: {', '.join(sorted(names))})")
        return names[split]

    def items(self) -> dict[str, tuple[list[Path], np.ndarray, list[str]]]:
        """``split -> (paths, labels relabelled from 0, class names)`` for the four splits."""
        if self._items is not None:
            return self._items
        if self.name == "visec_captions" and self.cfg.root is not None:
            from visec.data.synthetic.captions import ensure_caption_dataset

            ensure_caption_dataset(self.cfg.root)  # seed 0 when drawn here: the set does not move with train.seed
        layout = read_layout(self.name, self.cfg.root)
        p, seed = self.params, self.train_cfg.seed
        base, new = base_new_split(layout["train"].labels)
        names = layout["train"].names
        # read_layout has checked data.root; the draw is cached beside the layout's files
        cache_file = (_folder(Path(self.cfg.root), self.name) / "split_fewshot"
                      / f"shot_{p.shots}-val_{p.val_shots}-seed_{seed}.json")
        picked = _read_json(cache_file) if cache_file.is_file() else None
        if not (isinstance(picked, dict) and isinstance(picked.get("train"), list)
                and isinstance(picked.get("val"), list) and picked.get("val_from") in ("train", "val")):
            train_idx = few_shot(layout["train"].labels, base, p.shots, seed)
            # ImageNet has no val split: its val shots come from train, disjoint from the train shots
            val_from = "val" if len(layout["val"].labels) else "train"
            val_idx = few_shot(layout[val_from].labels, base, p.val_shots, seed + 1,
                               exclude=set(train_idx) if val_from == "train" else None)
            picked = {"train": train_idx, "val": val_idx, "val_from": val_from}
            try:
                cache_file.parent.mkdir(parents=True, exist_ok=True)
                cache_file.write_text(json.dumps(picked))
            except OSError:
                pass  # a read-only dataset folder: the draw is seeded, so it is the same next time
        relabel_base = {c: i for i, c in enumerate(base)}
        relabel_new = {c: i for i, c in enumerate(new)}

        def take(items: Items, idx: list[int], table: dict[int, int]) -> tuple[list[Path], np.ndarray]:
            return [items.paths[i] for i in idx], np.asarray([table[int(items.labels[i])] for i in idx], np.int64)

        test = layout["test"]
        out = {"train": take(layout["train"], picked["train"], relabel_base),
               "val": take(layout[picked["val_from"]], picked["val"], relabel_base),
               "test": take(test, [i for i, y in enumerate(test.labels) if int(y) in relabel_base], relabel_base),
               "test_new": take(test, [i for i, y in enumerate(test.labels) if int(y) in relabel_new], relabel_new)}
        base_names = [names.get(c, str(c)) for c in base]
        new_names = [names.get(c, test.names.get(c, str(c))) for c in new]
        self._items = {k: (v[0], v[1], new_names if k == "test_new" else base_names) for k, v in out.items()}
        return self._items

    def classnames(self, split: str) -> list[str]:
        """The class names of ``split`` in label order (base classes, or new for ``test_new``)."""
        return self.items()[self._split_key(split)][2]

    @property
    def num_classes(self) -> int:
        return len(self.classnames(self.cfg.train_split))

    def dataset(self, split: str) -> PromptImages:
        key = self._split_key(split)
        if key not in self._datasets:
            paths, labels, names = self.items()[key]
            if not paths:
                raise DataError(f"{self.name}: split '{split}' is empty")
            self._datasets[key] = PromptImages(paths, labels, names, self.cfg.image_size, train=key == "train",
                                               hflip=self.cfg.hflip, crop_scale=tuple(self.params.crop_scale))
        return self._datasets[key]

    def has_val_split(self) -> bool:
        return self.params.val_shots > 0
