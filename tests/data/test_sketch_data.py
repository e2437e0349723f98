"""ZS-SBIR data: the embedded sketch/photo set (classes, splits, caching, what the images look like,
pairing, class-id mask) and the one reader for it and the published SAKE-style file lists."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import binary_dilation

from visec.data.images import load_rgb
from visec.data.sbir import PHOTO, SKETCH, SbirImages, augment_matrix, read_sbir
from visec.data.synthetic.sketches import (CATEGORIES, HIERARCHY, class_id_mask, draw, instance_rng,
                                           make_sketch_dataset, super_category)
from visec.errors import ConfigError, DataError

TINY = dict(size=64, photos_per_class=3, sketches_per_class=4, val_per_class=1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sketch") / "set"
    make_sketch_dataset(root, **TINY)
    return root


def _lines(path: Path) -> list[tuple[str, int]]:
    return [(r.rsplit(" ", 1)[0], int(r.rsplit(" ", 1)[1])) for r in path.read_text().splitlines()]


def test_classes_hierarchy_and_every_list_line(tiny):
    meta = json.loads((tiny / "sketches.json").read_text())
    seen, unseen = meta["seen"], meta["unseen"]
    assert len(CATEGORIES) >= 40 and len(seen) + len(unseen) == len(CATEGORIES)
    assert len(unseen) >= 10 and not set(seen) & set(unseen)
    assert len({super_category(c) for c in unseen}) >= 8  # spread over the super-categories
    assert meta["hierarchy"] == {s: [f"{s}/{c}" for c in cats] for s, cats in HIERARCHY.items()}
    counts = {}
    for m in ("sketch", "photo"):
        for part, names in (("train", seen), ("test", seen), ("zero", unseen)):
            rows = _lines(tiny / f"{m}_filelist_{part}.txt")
            counts[m, part] = len(rows)
            for rel, label in rows:
                assert (tiny / rel).is_file(), rel
                assert 0 <= label < len(names) and f"/{names[label]}/" in f"/{rel}", (rel, label)
            assert sorted(set(label for _, label in rows)) == list(range(len(names)))
    n = {"sketch": TINY["sketches_per_class"], "photo": TINY["photos_per_class"]}
    for m in ("sketch", "photo"):
        assert counts[m, "test"] == len(seen) * TINY["val_per_class"]
        assert counts[m, "train"] == len(seen) * (n[m] - TINY["val_per_class"])
        assert counts[m, "zero"] == len(unseen) * n[m]
    train = {r for r, _ in _lines(tiny / "photo_filelist_train.txt")}
    assert not train & {r for r, _ in _lines(tiny / "photo_filelist_test.txt")}


def test_cached_deterministic_and_moves_with_seed_and_parameters(tmp_path, tiny):
    params = dict(TINY, size=32, photos_per_class=2, sketches_per_class=2)
    a = make_sketch_dataset(tmp_path / "a", **params)
    again = make_sketch_dataset(tmp_path / "a", **params)
    assert not a.cached and again.cached and again.digest == a.digest and again.seconds == 0.0
    b = make_sketch_dataset(tmp_path / "b", **params)
    assert b.digest == a.digest
    some = sorted((tmp_path / "a" / "sketch").rglob("*.png"))[:5]
    assert some and all(p.read_bytes() == (tmp_path / "b" / p.relative_to(tmp_path / "a")).read_bytes() for p in some)
    assert make_sketch_dataset(tmp_path / "c", seed=1, **params).digest != a.digest
    changed = make_sketch_dataset(tmp_path / "a", **dict(params, photos_per_class=3))
    assert not changed.cached and changed.images == a.images + len(CATEGORIES)
    with pytest.raises(ConfigError):
        make_sketch_dataset(tmp_path / "d", size=32, photos_per_class=1, sketches_per_class=1, val_per_class=1)


def test_sketches_are_dark_lines_on_white_and_photos_are_not(tiny):
    sketches = sorted((tiny / "sketch").rglob("*.png"))
    photos = sorted((tiny / "photo").rglob("*.png"))
    for p in sketches:
        img = load_rgb(p)
        assert img.mean() > 200 and img.min() < 80, p
        assert (img[..., 0] == img[..., 2]).all()  # black on white: no colour
    white = [(load_rgb(p).min(axis=2) > 230).mean() for p in photos]
    assert max(white) < 0.5 and np.mean([load_rgb(p).mean() for p in photos]) < 160
    styles = [p.stem.split("_")[1] for p in sketches]
    assert set(styles) == {"stroke", "xdog"} and 0.4 < styles.count("stroke") / len(styles) < 0.6


def test_paired_sketch_lies_on_its_photos_object(tiny):
    meta = json.loads((tiny / "sketches.json").read_text())
    own, other = [], []
    for i, cat in enumerate(CATEGORIES):
        k = 0
        style = next(p.stem.split("_")[1] for p in (tiny / "sketch" / cat).glob(f"{k:04d}_*.png"))
        pic = draw(instance_rng(meta["params"]["seed"], cat, k), cat, TINY["size"], style)
        # the generator wrote exactly this pair
        assert (pic.photo == load_rgb(tiny / "photo" / cat / f"{k:04d}.png")).all()
        assert (pic.sketch == load_rgb(tiny / "sketch" / cat / f"{k:04d}_{style}.png")).all()
        dark = pic.sketch[..., 0] < 128
        foreign = draw(instance_rng(0, CATEGORIES[(i + 7) % len(CATEGORIES)], 1), CATEGORIES[(i + 7) % len(CATEGORIES)],
                       TINY["size"], None).mask
        own.append((dark & binary_dilation(pic.mask, iterations=1)).sum() / dark.sum())
        other.append((dark & binary_dilation(foreign, iterations=1)).sum() / dark.sum())
    assert min(own) > 0.85 and np.mean(own) > 0.97
    assert np.mean(other) < np.mean(own) - 0.2


def test_class_id_mask(tiny):
    meta = json.loads((tiny / "sketches.json").read_text())
    seen = meta["seen"]
    mask = np.load(tiny / "cid_mask.npy")
    assert mask.dtype == np.float32 and mask.shape == (len(seen), len(seen)) and meta["teacher_classes"] == seen
    assert (np.diag(mask) == 1).all()
    for i, a in enumerate(seen):
        for j, b in enumerate(seen):
            if i != j:
                expect = 1 / 3 if super_category(a) == super_category(b) else 0.0
                assert mask[i, j] == pytest.approx(expect), (a, b)
    assert class_id_mask(["tool/saw"], ["tool/saw", "tool/axe", "plant/tree"]).tolist() == \
        [[1.0, pytest.approx(1 / 3), 0.0]]


def test_read_sbir_synth_round_trip(tiny):
    d = read_sbir("synth", tiny)
    meta = json.loads((tiny / "sketches.json").read_text())
    assert d.seen == meta["seen"] and d.unseen == meta["unseen"] and d.teacher_classes == meta["seen"]
    assert (d.cid_mask == np.load(tiny / "cid_mask.npy")).all()
    for split, m, part in ((d.train_sketch, "sketch", "train"), (d.train_photo, "photo", "train"),
                           (d.val_sketch, "sketch", "test"), (d.val_photo, "photo", "test"),
                           (d.query, "sketch", "zero"), (d.gallery, "photo", "zero")):
        rows = _lines(tiny / f"{m}_filelist_{part}.txt")
        assert [str(p) for p in split.paths] == [str(tiny / r) for r, _ in rows]
        assert split.labels.dtype == np.int64 and split.labels.tolist() == [label for _, label in rows]
    with pytest.raises(ConfigError):
        read_sbir("synth", tiny, split="zeroshot1")
    with pytest.raises(DataError, match="sketches.json"):
        read_sbir("synth", tiny.parent)


# -- published layouts -------------------------------------------------------------------------------
SEEN = ["pig", "alarm clock", "chair"]
UNSEEN = ["swan", "harp"]


def _write_published(folder: Path, split: str, sketch: str, photo: str, *, val: bool, per: int = 4,
                     images: bool = False) -> None:
    d = folder / split
    d.mkdir(parents=True)

    def rows(version: str, classes: list[str], n: int, tag: str) -> str:
        out = []
        for label, c in enumerate(classes):
            for i in range(n):
                rel = f"{version}/{c}/{tag}{i}.png"
                out.append(f"{rel} {label}")
                if images:
                    (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                    Image.new("RGB", (20, 20), (128, 128, 128)).save(folder / rel)
        return "\n".join(out) + "\n"

    (d / f"{sketch}_filelist_train.txt").write_text(rows(sketch, SEEN, per, "s"))
    (d / f"{photo}_filelist_train.txt").write_text(rows(photo, SEEN, 2 * per, "p"))
    if val:
        (d / f"{sketch}_filelist_test.txt").write_text(rows(sketch, SEEN, 2, "v"))
    (d / f"{sketch}_filelist_zero.txt").write_text(rows(sketch, UNSEEN, per, "z"))
    (d / f"{photo}_filelist_zero.txt").write_text(rows(photo, UNSEEN, per + 1, "g"))


@pytest.mark.parametrize("name,folder,split,sketch,photo,val", [
    ("sketchy", "Sketchy", "zeroshot1", "sketch_tx_000000000000_ready", "all_photo", True),
    ("sketchy", "Sketchy", "zeroshot0", "sketch_tx_000000000000_ready", "all_photo", False),
    ("tuberlin", "TUBerlin", "zeroshot", "png_ready", "ImageResized_ready", True),
    ("quickdraw", "QuickDraw", "zeroshot", "sketch", "all_photo", False),
])
def test_published_layouts_are_read(tmp_path, name, folder, split, sketch, photo, val):
    _write_published(tmp_path / folder, split, sketch, photo, val=val)
    want = "zeroshot2" if split == "zeroshot0" else None  # SBKA's name for ZSE-SBIR's zeroshot0 folder
    d = read_sbir(name, tmp_path, split=want, val_photo_fraction=0.25, seed=3)  # root = the parent folder
    assert d.root == tmp_path / folder and d.seen == SEEN and d.unseen == UNSEEN
    assert len(d.train_sketch) == 12 and len(d.query) == 8 and len(d.gallery) == 10
    assert d.train_sketch.paths[0] == tmp_path / folder / sketch / "pig" / "s0.png"
    assert (d.val_sketch is None) == (not val)
    if val:
        assert len(d.val_sketch) == 6 and d.val_sketch.labels.tolist() == [0, 0, 1, 1, 2, 2]
    # val photos: 2 of each seen class's 8 train photos, moved out of train_photo
    assert np.bincount(d.val_photo.labels).tolist() == [2, 2, 2] and len(d.train_photo) == 18
    assert not set(d.val_photo.paths) & set(d.train_photo.paths)
    assert set(d.val_photo.paths) | set(d.train_photo.paths) == {
        tmp_path / folder / photo / c / f"p{i}.png" for c in SEEN for i in range(8)}
    again = read_sbir(name, tmp_path / folder, split=want, val_photo_fraction=0.25, seed=3)
    assert again.val_photo.paths == d.val_photo.paths
    other = [read_sbir(name, tmp_path, split=want, val_photo_fraction=0.25, seed=s).val_photo.paths
             for s in range(4, 9)]
    assert any(o != d.val_photo.paths for o in other)
    assert read_sbir(name, tmp_path, split=want, val_photo_fraction=0).val_photo is None
    assert d.cid_mask is None and d.teacher_classes is None


def test_malformed_or_inconsistent_lists_name_file_and_line(tmp_path):
    _write_published(tmp_path, "zeroshot", "png_ready", "ImageResized_ready", val=True)
    lst = tmp_path / "zeroshot" / "png_ready_filelist_train.txt"
    good = lst.read_text().splitlines()
    lst.write_text("\n".join(good[:2] + ["png_ready/pig/broken.png"] + good[2:]) + "\n")
    with pytest.raises(DataError, match=r"png_ready_filelist_train\.txt:3: expected 'relative/path label'"):
        read_sbir("tuberlin", tmp_path)
    lst.write_text("\n".join(good[:4] + ["png_ready/chair/x.png 0"] + good[4:]) + "\n")
    with pytest.raises(DataError, match=r"png_ready_filelist_train\.txt:5: label 0 is class folder 'chair'"):
        read_sbir("tuberlin", tmp_path)
    lst.write_text("\n".join(good) + "\n")
    test_list = tmp_path / "zeroshot" / "png_ready_filelist_test.txt"
    test_list.write_text("png_ready/pig/v.png 7\n")
    with pytest.raises(DataError, match=r"png_ready_filelist_test\.txt:1: label 7 is out of range"):
        read_sbir("tuberlin", tmp_path)
    test_list.unlink()
    (tmp_path / "zeroshot" / "ImageResized_ready_filelist_zero.txt").unlink()
    with pytest.raises(DataError, match="ImageResized_ready_filelist_zero.txt: file list not found"):
        read_sbir("tuberlin", tmp_path)
    with pytest.raises(DataError, match="no zeroshot1/ folder"):
        read_sbir("sketchy", tmp_path)
    with pytest.raises(ConfigError):
        read_sbir("tuberlin", tmp_path, split="zeroshot1")
    with pytest.raises(ConfigError):
        read_sbir("flickr", tmp_path)


def test_class_id_mask_npy_is_read_and_pickle_refused(tmp_path):
    _write_published(tmp_path, "zeroshot1", "sketch_tx_000000000000_ready", "all_photo", val=True)
    split = tmp_path / "zeroshot1"
    (split / "cid_mask.pickle").write_bytes(b"\x80\x04 never opened")
    with pytest.raises(DataError, match=r"cid_mask\.pickle: visec never unpickles.*cid_mask\.npy"):
        read_sbir("sketchy", tmp_path)
    np.save(split / "cid_mask.npy", np.eye(3, 5))
    (split / "teacher_classes.txt").write_text("hog\nclock\nchair\nswan\nharp\n")
    d = read_sbir("sketchy", tmp_path)
    assert d.cid_mask.dtype == np.float32 and d.cid_mask.shape == (3, 5) and d.teacher_classes[0] == "hog"
    np.save(split / "cid_mask.npy", np.eye(4, 5))
    with pytest.raises(DataError, match=r"shape \(4, 5\), expected \(3, teacher classes\)"):
        read_sbir("sketchy", tmp_path)
    (split / "teacher_classes.txt").write_text("a\nb\n")
    np.save(split / "cid_mask.npy", np.eye(3, 5))
    with pytest.raises(DataError, match="5 columns but 2 teacher classes"):
        read_sbir("sketchy", tmp_path)


def test_quickdraw_never_has_a_mask(tmp_path):
    _write_published(tmp_path, "zeroshot", "sketch", "all_photo", val=False)
    np.save(tmp_path / "zeroshot" / "cid_mask.npy", np.eye(3))
    assert read_sbir("quickdraw", tmp_path).cid_mask is None


# -- images and augmentation -------------------------------------------------------------------------
def test_images_resize_and_seeded_augmentation(tiny):
    d = read_sbir("synth", tiny)
    plain = SbirImages.of(d.train_sketch, SKETCH, 40)
    item = plain[0]
    assert item["image"].shape == (3, 40, 40) and item["label"] == int(d.train_sketch.labels[0])
    assert item["modality"] == SKETCH and 0 <= float(item["image"].min()) and float(item["image"].max()) <= 1
    assert (plain[0]["image"] == item["image"]).all()
    aug = SbirImages.of(d.train_photo, PHOTO, 40, augment=True, seed=5)
    first = [aug[i]["image"] for i in range(6)]
    assert all(x.shape == (3, 40, 40) for x in first)
    assert all((aug[i]["image"] == first[i]).all() for i in range(6))  # seeded: the same draw again
    aug.set_epoch(1)
    assert any(not (aug[i]["image"] == first[i]).all() for i in range(6))
    with pytest.raises(ConfigError):
        SbirImages(d.query.paths, d.query.labels, 2, 32)


def test_augmentation_fill_is_white_for_sketches_and_black_for_photos(tmp_path):
    grey = tmp_path / "grey.png"
    Image.new("RGB", (32, 32), (128, 128, 128)).save(grey)
    for modality, edge in ((SKETCH, 1.0), (PHOTO, 0.0)):
        ds = SbirImages([grey] * 20, [0] * 20, modality, 32, augment=True, seed=0)
        images = [ds[i]["image"] for i in range(20)]
        assert any(bool((x == edge).any()) for x in images)
        assert all(float(x.min()) >= 0.0 and float(x.max()) <= 1.0 for x in images)
        assert not any(bool((x == 1.0 - edge).any()) for x in images)
    rng = np.random.default_rng(0)
    mats = [augment_matrix(rng, 224) for _ in range(400)]
    assert 0.6 < sum(m is not None for m in mats) / 400 < 0.8  # applied with probability 0.7
    assert max(abs(m[0, 2] - 112 * (1 - m[0, 0]) + 112 * m[0, 1]) for m in mats if m is not None) <= 10 + 1e-6
