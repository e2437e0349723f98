"""Zero-shot sketch-based image retrieval data (SBKA): one reader for the embedded set and the
published benchmarks' distributed file lists. Nothing is ever downloaded.

``read_sbir(name, root)`` returns :class:`SbirData`: seen-class train sketches and photos, seen-class
validation sketches and photos (held out), unseen-class query sketches and gallery photos, the class
names of both sides in label order and, where there is one, the class-id mask.

Layouts
-------

All lists use the SAKE format, one image per line: ``relative/path label`` (the label is the last
whitespace-separated token, so paths may contain spaces, as TU-Berlin's ``alarm clock/`` does).

``synth`` (:mod:`visec.data.synthetic.sketches`): ``root`` holds ``{sketch,photo}_filelist_{train,
test,zero}.txt`` (paths relative to ``root``), ``cid_mask.npy`` and ``sketches.json`` (class names in
label order, the teacher classes). Both validation lists are written by the generator
(``val_photo_fraction`` is not used).

Published (SAKE / SBKA / ZSE-SBIR distributions): ``<folder>/<split>/<version>_filelist_<part>.txt``
with image paths relative to ``<folder>``; ``root`` is ``<folder>`` itself or its parent:

========= ============ ======================== ============================ =======================
name      folder       split (default first)    sketch version               photo version
========= ============ ======================== ============================ =======================
sketchy   ``Sketchy``  ``zeroshot1`` (100/25),  ``sketch_tx_000000000000_``  ``all_photo``
                       ``zeroshot2`` (104/21)   ``ready``
tuberlin  ``TUBerlin`` ``zeroshot`` (220/30)    ``png_ready``                ``ImageResized_ready``
quickdraw ``QuickDraw`` ``zeroshot`` (80/30)    ``sketch``                   ``all_photo``
========= ============ ======================== ============================ =======================

* ``<part>``: ``train`` = seen classes, ``test`` = held-out seen-class sketches (validation; only
  the sketch list exists; optional: when it is missing, ``val_sketch`` is None; QuickDraw never has
  one), ``zero`` = unseen classes, labels ``0..U-1``.
* ``zeroshot2`` is SBKA's name for the Yelamarthi 104/21 split, which ZSE-SBIR ships as
  ``zeroshot0``; ``split="zeroshot0"`` reads that folder name too.
* Class names: the name of the folder that directly holds each image (``.../pig/n02395406_3133-2.png``
  -> ``pig``). A label must name one folder across all lists of its side (sketches and photos);
  the labels of a side must be ``0..C-1``. Seen and unseen names must not overlap.
* Validation photos: there is no published list, so ``val_photo_fraction`` of each seen class's
  train photos (rounded, at least one and never all of them) is drawn with ``seed`` as
  ``val_photo`` and removed from ``train_photo``; ``0`` gives ``val_photo = None``.
* Class-id mask (not for QuickDraw): ``<split>/cid_mask.npy``, float ``(C_seen, T)`` over the
  teacher's classes, with ``<split>/teacher_classes.txt`` (one name per line, ``T`` lines) naming
  them when present. SAKE ships the mask as ``cid_mask.pickle``; visec never unpickles, so convert
  it once to ``.npy`` (the reader says so when it finds only the pickle). No mask: ``cid_mask = None``.

Image paths are not checked one by one here (the published lists name ~200k files);
:class:`SbirImages` reads through :func:`visec.data.images.load_rgb`, whose errors name the file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from visec.data.images import load_rgb
from visec.errors import ConfigError, DataError

SBIR_LAYOUTS = ("synth", "sketchy", "tuberlin", "quickdraw")
SKETCH, PHOTO = 0, 1  # modality tags in batches


@dataclass(frozen=True)
class _Published:
    folder: str
    sketch: str
    photo: str
    splits: tuple[str, ...]  # first = default
    has_val: bool
    has_mask: bool


PUBLISHED: dict[str, _Published] = {
    "sketchy": _Published("Sketchy", "sketch_tx_000000000000_ready", "all_photo",
                          ("zeroshot1", "zeroshot2", "zeroshot0"), True, True),
    "tuberlin": _Published("TUBerlin", "png_ready", "ImageResized_ready", ("zeroshot",), True, True),
    "quickdraw": _Published("QuickDraw", "sketch", "all_photo", ("zeroshot",), False, False),
}


@dataclass
class SbirSplit:
    """Image paths and int64 labels (indices into the class list of their side: seen or unseen)."""

    paths: list[Path]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class SbirData:
    name: str
    root: Path
    seen: list[str]
    unseen: list[str]
    train_sketch: SbirSplit
    train_photo: SbirSplit
    val_sketch: SbirSplit | None
    val_photo: SbirSplit | None
    query: SbirSplit
    gallery: SbirSplit
    cid_mask: np.ndarray | None
    teacher_classes: list[str] | None

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in (("train_sketch", self.train_sketch), ("train_photo", self.train_photo),
                                       ("val_sketch", self.val_sketch), ("val_photo", self.val_photo),
                                       ("query", self.query), ("gallery", self.gallery)) if v is not None}


# -- file lists --------------------------------------------------------------------------------------
@dataclass
class _List:
    file: Path
    rel: list[str]
    labels: list[int]
    lines: list[int]  # 1-based line number of each entry


def _read_list(path: Path) -> _List:
    if not path.is_file():
        raise DataError(f"{path}: file list not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read file list ({exc})") from None
    out = _List(path, [], [], [])
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.strip().rsplit(None, 1)
        if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
            raise DataError(f"{path}:{n}: expected 'relative/path label' (got {line.strip()!r:.80})")
        label = int(fields[1])
        if label < 0:
            raise DataError(f"{path}:{n}: negative label {label}")
        out.rel.append(fields[0])
        out.labels.append(label)
        out.lines.append(n)
    if not out.rel:
        raise DataError(f"{path}: empty file list")
    return out


def _folder_name(lst: _List, i: int) -> str:
    name = PurePosixPath(lst.rel[i].replace("\\", "/")).parent.name
    if not name:
        raise DataError(f"{lst.file}:{lst.lines[i]}: {lst.rel[i]!r} is not inside a class folder")
    return name


def _names_from_folders(lists: list[_List], side: str) -> list[str]:
    """Class names of one side (seen / unseen) in label order, from the image folders."""
    names: dict[int, tuple[str, _List, int]] = {}
    for lst in lists:
        for i, label in enumerate(lst.labels):
            name = _folder_name(lst, i)
            known = names.setdefault(label, (name, lst, i))
            if known[0] != name:
                raise DataError(f"{lst.file}:{lst.lines[i]}: label {label} is class folder {name!r} here but "
                                f"{known[0]!r} in {known[1].file.name}:{known[1].lines[known[2]]}")
    missing = [c for c in range(max(names) + 1) if c not in names]
    if missing:
        raise DataError(f"{', '.join(lst.file.name for lst in lists)} in {lists[0].file.parent}: {side} labels must "
                        f"be 0..C-1, but label {missing[0]} never occurs (labels go up to {max(names)})")
    return [names[c][0] for c in range(len(names))]


def _check_labels(lst: _List, names: list[str], side: str, by_folder: bool) -> None:
    for i, label in enumerate(lst.labels):
        if label >= len(names):
            raise DataError(f"{lst.file}:{lst.lines[i]}: label {label} is out of range for {len(names)} {side} classes")
        if by_folder and _folder_name(lst, i) != names[label]:
            raise DataError(f"{lst.file}:{lst.lines[i]}: label {label} is {names[label]!r} in the train lists but the "
                            f"image is in folder {_folder_name(lst, i)!r}")


def _split(lst: _List, base: Path) -> SbirSplit:
    return SbirSplit([base / r for r in lst.rel], np.asarray(lst.labels, np.int64))


def _draw_val_photos(photos: SbirSplit, fraction: float, seed: int) -> tuple[SbirSplit, SbirSplit | None]:
    """Per class, ``round(fraction * n)`` (at least 1, at most n - 1) photos moved from train to val."""
    if fraction == 0:
        return photos, None
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for c in np.unique(photos.labels):
        idx = np.flatnonzero(photos.labels == c)
        k = min(max(1, int(round(fraction * len(idx)))), len(idx) - 1)
        if k > 0:
            chosen += [int(i) for i in rng.choice(idx, size=k, replace=False)]
    val = sorted(chosen)
    keep = sorted(set(range(len(photos.paths))) - set(val))

    def pick(ids: list[int]) -> SbirSplit:
        return SbirSplit([photos.paths[i] for i in ids], photos.labels[np.asarray(ids, np.int64)])

    return pick(keep), pick(val)


# -- class-id mask -----------------------------------------------------------------------------------
def _load_mask(path: Path, n_seen: int, teacher: list[str] | None) -> np.ndarray:
    try:
        mask = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: not a readable .npy array ({reason})") from None
    if mask.ndim != 2 or mask.shape[0] != n_seen:
        raise DataError(f"{path}: class-id mask has shape {tuple(mask.shape)}, expected ({n_seen}, teacher classes)"
                        f" for {n_seen} seen classes")
    if teacher is not None and mask.shape[1] != len(teacher):
        raise DataError(f"{path}: class-id mask has {mask.shape[1]} columns but {len(teacher)} teacher classes "
                        "are named")
    if not np.issubdtype(mask.dtype, np.number) or not np.isfinite(mask).all():
        raise DataError(f"{path}: class-id mask must be finite numbers")
    return mask.astype(np.float32)


def _published_mask(split_dir: Path, n_seen: int) -> tuple[np.ndarray | None, list[str] | None]:
    npy, pickle = split_dir / "cid_mask.npy", split_dir / "cid_mask.pickle"
    names_file = split_dir / "teacher_classes.txt"
    if not npy.is_file():
        if pickle.is_file():
            raise DataError(f"{pickle}: visec never unpickles files; convert it once to cid_mask.npy, a float32 "
                            f"({n_seen}, teacher classes) array (np.save), and optionally teacher_classes.txt")
        return None, None
    teacher = None
    if names_file.is_file():
        teacher = [t.strip() for t in names_file.read_text(encoding="utf-8").splitlines() if t.strip()]
    return _load_mask(npy, n_seen, teacher), teacher


# -- layouts -----------------------------------------------------------------------------------------
_SPLIT_DIRS = {"zeroshot2": ("zeroshot2", "zeroshot0"), "zeroshot0": ("zeroshot0", "zeroshot2")}


def _split_dir(root: Path, spec: _Published, split: str) -> tuple[Path, Path]:
    """``(dataset folder, split folder)``: ``root`` may be the dataset folder or its parent."""
    for folder in (root, root / spec.folder):
        for sub in _SPLIT_DIRS.get(split, (split,)):
            if (folder / sub).is_dir():
                return folder, folder / sub
    raise DataError(f"no {split}/ folder in {root} or {root / spec.folder} (the {spec.folder} file lists)")


def _read_published(name: str, root: Path, split: str | None, fraction: float, seed: int) -> SbirData:
    spec = PUBLISHED[name]
    split = split or spec.splits[0]
    if split not in spec.splits:
        raise ConfigError(f"{name}: split must be one of {', '.join(spec.splits)} (got {split!r})")
    folder, split_dir = _split_dir(root, spec, split)

    def lst(version: str, part: str) -> _List:
        return _read_list(split_dir / f"{version}_filelist_{part}.txt")

    tr_s, tr_p = lst(spec.sketch, "train"), lst(spec.photo, "train")
    seen = _names_from_folders([tr_s, tr_p], "seen")
    val_s = None
    if spec.has_val and (split_dir / f"{spec.sketch}_filelist_test.txt").is_file():
        val_s = lst(spec.sketch, "test")
        _check_labels(val_s, seen, "seen", by_folder=True)
    z_s, z_p = lst(spec.sketch, "zero"), lst(spec.photo, "zero")
    unseen = _names_from_folders([z_s, z_p], "unseen")
    both = sorted(set(seen) & set(unseen))
    if both:
        raise DataError(f"{split_dir}: classes {', '.join(both[:5])} are both seen (train lists) and unseen "
                        "(zero lists)")
    mask, teacher = (None, None) if not spec.has_mask else _published_mask(split_dir, len(seen))
    train_photo, val_photo = _draw_val_photos(_split(tr_p, folder), fraction, seed)
    return SbirData(name, folder, seen, unseen, _split(tr_s, folder), train_photo,
                    None if val_s is None else _split(val_s, folder), val_photo,
                    _split(z_s, folder), _split(z_p, folder), mask, teacher)


def _read_synth(root: Path) -> SbirData:
    from visec.data.synthetic.sketches import MASK_FILE, META_FILE, list_file

    meta_path = root / META_FILE
    if not meta_path.is_file():
        raise DataError(f"{meta_path}: not found (generate the set: visec data synth --kind sketch --out {root})")
    try:
        meta: dict[str, Any] = json.loads(meta_path.read_text())
        seen, unseen = [str(c) for c in meta["seen"]], [str(c) for c in meta["unseen"]]
        teacher = [str(c) for c in meta["teacher_classes"]]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{meta_path}: not a readable sketch-set description ({exc})") from None
    parts: dict[str, SbirSplit] = {}
    for m in ("sketch", "photo"):
        for part, names, side in (("train", seen, "seen"), ("test", seen, "seen"), ("zero", unseen, "unseen")):
            lst = _read_list(root / list_file(m, part))
            _check_labels(lst, names, side, by_folder=False)
            parts[f"{m}_{part}"] = _split(lst, root)
    if not (root / MASK_FILE).is_file():
        raise DataError(f"{root / MASK_FILE}: not found")
    mask = _load_mask(root / MASK_FILE, len(seen), teacher)
    return SbirData("synth", root, seen, unseen, parts["sketch_train"], parts["photo_train"], parts["sketch_test"],
                    parts["photo_test"], parts["sketch_zero"], parts["photo_zero"], mask, teacher)


def read_sbir(name: str, root: str | Path | None, *, split: str | None = None, val_photo_fraction: float = 0.1,
              seed: int = 0) -> SbirData:
    """The seen / unseen splits of layout ``name`` under ``root`` (see the module docstring)."""
    if name not in SBIR_LAYOUTS:
        raise ConfigError(f"SBIR dataset must be one of {', '.join(SBIR_LAYOUTS)} (got {name!r})")
    if root is None:
        raise DataError(f"{name}: set data.root to the folder that holds the dataset (visec never downloads)")
    if not 0 <= val_photo_fraction < 1:
        raise ConfigError(f"val_photo_fraction must be in [0, 1) (got {val_photo_fraction})")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{name}: no folder {root}")
    if name == "synth":
        if split is not None:
            raise ConfigError("the embedded sketch set has a single split; leave split unset")
        return _read_synth(root)
    return _read_published(name, root, split, val_photo_fraction, seed)


def ensure_sketch_dataset(root: str | Path) -> Path:
    """``root`` when it holds an embedded sketch set, else the default set drawn there."""
    from visec.data.synthetic.sketches import ensure_sketch_dataset as ensure

    return ensure(root)


# -- images ------------------------------------------------------------------------------------------
def augment_matrix(rng: np.random.Generator, size: int) -> np.ndarray | None:
    """SAKE/SBKA training augmentation as one forward affine ``3x3`` (pixel coords), or None (30%).

    With probability 0.7: flip (p 0.5), independent x / y scale in [0.7, 1.3] (p 0.5), rotation in
    +-30 deg (p 0.5), translation in +-10 px at 224 px, scaled to ``size`` (p 0.5). Unlike the
    original (skimage ``warp`` about the top-left corner) the warp is about the image centre.
    """
    if rng.random() >= 0.7:
        return None
    flip = rng.random() < 0.5
    sx, sy = rng.uniform(0.7, 1.3, 2) if rng.random() < 0.5 else (1.0, 1.0)
    theta = rng.uniform(-math.pi / 6, math.pi / 6) if rng.random() < 0.5 else 0.0
    tx, ty = rng.uniform(-10, 10, 2) * size / 224 if rng.random() < 0.5 else (0.0, 0.0)
    c = size / 2
    centre = np.array([[1, 0, -c], [0, 1, -c], [0, 0, 1.0]])
    back = np.array([[1, 0, c + tx], [0, 1, c + ty], [0, 0, 1.0]])
    flip_m = np.diag([-1.0 if flip else 1.0, 1.0, 1.0])
    scale_m = np.diag([sx, sy, 1.0])
    cos, sin = math.cos(theta), math.sin(theta)
    rot = np.array([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1.0]])
    return back @ rot @ scale_m @ flip_m @ centre


class SbirImages(Dataset):
    """Images of one split: ``{"image": float (3, S, S) in [0, 1], "label": int, "modality": int}``.

    Images are resized straight to ``size`` x ``size`` (no crop). With ``augment`` the training
    warp of :func:`augment_matrix` is applied (white fill for sketches, black for photos). Each draw
    comes from ``torch``'s generator (so ``torch.manual_seed`` and DataLoader worker seeds apply),
    or, when ``seed`` is given, from ``(seed, epoch, index)``: the same item, epoch and seed give
    the same image (:meth:`set_epoch` moves to the next draw).
    """

    def __init__(self, paths: list[Path], labels: np.ndarray | list[int], modality: int, size: int,
                 augment: bool = False, seed: int | None = None) -> None:
        if modality not in (SKETCH, PHOTO):
            raise ConfigError(f"modality must be {SKETCH} (sketch) or {PHOTO} (photo), got {modality!r}")
        if len(paths) != len(labels):
            raise ConfigError(f"{len(paths)} paths but {len(labels)} labels")
        self.paths, self.labels = list(paths), np.asarray(labels, np.int64)
        self.modality, self.size, self.augment, self.seed = modality, int(size), augment, seed
        self.epoch = 0

    @classmethod
    def of(cls, split: SbirSplit, modality: int, size: int, augment: bool = False,
           seed: int | None = None) -> SbirImages:
        return cls(split.paths, split.labels, modality, size, augment, seed)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.paths)

    def _rng(self, i: int) -> np.random.Generator:
        if self.seed is not None:
            return np.random.default_rng([self.seed, self.epoch, i])
        return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))

    def __getitem__(self, i: int) -> dict[str, Any]:
        img = Image.fromarray(load_rgb(self.paths[i]))
        if img.size != (self.size, self.size):
            img = img.resize((self.size, self.size), Image.BILINEAR)
        if self.augment:
            fwd = augment_matrix(self._rng(i), self.size)
            if fwd is not None:
                inv = np.linalg.inv(fwd)  # PIL maps output pixels back to input pixels
                fill = (255, 255, 255) if self.modality == SKETCH else (0, 0, 0)
                img = img.transform(img.size, Image.AFFINE, tuple(inv[:2].ravel()), resample=Image.BILINEAR,
                                    fillcolor=fill)
        x = torch.from_numpy(np.asarray(img, np.float32) / 255).permute(2, 0, 1).contiguous()
        return {"image": x, "label": int(self.labels[i]), "modality": self.modality}
