"""Prompt-learning data: CoOp's layouts, the base-to-new class split, the few-shot sampler, and the
embedded captioned set."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from visec.config import load_config
from visec.data.prompt_datasets import PromptDataModule, base_new_split, few_shot, read_layout
from visec.errors import DataError


@pytest.mark.parametrize("n,counts", [(37, (19, 18)), (47, (24, 23)), (397, (199, 198)), (10, (5, 5)),
                                      (1000, (500, 500))])
def test_base_new_split_counts(n, counts):
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(n), 2))
    base, new = base_new_split(labels)
    assert (len(base), len(new)) == counts and base == list(range(counts[0])) and new[0] == counts[0]


def test_few_shot_is_exact_and_seeded():
    labels = np.repeat(np.arange(5), 30)
    a = few_shot(labels, [0, 1, 2], 16, seed=1)
    assert np.bincount(labels[a], minlength=5).tolist() == [16, 16, 16, 0, 0]
    assert a == few_shot(labels, [0, 1, 2], 16, seed=1) and a != few_shot(labels, [0, 1, 2], 16, seed=2)
    b = few_shot(labels, [0, 1, 2], 4, seed=3, exclude=set(a))
    assert not set(a) & set(b) and len(b) == 12


def _png(path, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


def _zhou_tree(root, n_classes=5, per=6):
    folder = root / "dtd"
    split = {"train": [], "val": [], "test": []}
    for c in range(n_classes):
        for part, k in (("train", per), ("val", 2), ("test", 3)):
            for i in range(k):
                rel = f"class{c}/{part}{i}.png"
                _png(folder / "images" / rel, 10 * c)
                split[part].append([rel, c, f"texture {c}"])
    (folder / "split_zhou_DescribableTextures.json").write_text(json.dumps(split))
    return folder


def test_zhou_layout_and_data_module_serve_base_and_new(tmp_path):
    _zhou_tree(tmp_path)
    layout = read_layout("dtd", tmp_path)
    assert len(layout["train"].paths) == 30 and layout["test"].names[4] == "texture 4"
    cfg = load_config("gcscoop", ["data.dataset=dtd", f"data.root={tmp_path}", "model.shots=4",
                                  "model.val_shots=1", "data.image_size=16"])
    dm = PromptDataModule(cfg.data, cfg.train, cfg.method_params())
    assert dm.classnames("train") == ["texture 0", "texture 1", "texture 2"]
    assert dm.classnames("test_new") == ["texture 3", "texture 4"]
    train, test_new = dm.dataset("train"), dm.dataset("test_new")
    assert len(train) == 12 and len(dm.dataset("val")) == 3 and len(dm.dataset("test")) == 9
    assert sorted(set(test_new.labels.tolist())) == [0, 1] and len(test_new) == 6  # relabelled from 0
    item = train[0]
    assert item["image"].shape == (3, 16, 16) and 0 <= float(item["image"].min()) <= float(item["image"].max()) <= 1
    cache = tmp_path / "dtd" / "split_fewshot"
    assert len(list(cache.glob("*.json"))) == 1  # the draw is cached per seed
    again = PromptDataModule(cfg.data, cfg.train, cfg.method_params())
    assert again.items()["train"][0] == dm.items()["train"][0]


def test_malformed_split_file_names_the_row(tmp_path):
    folder = _zhou_tree(tmp_path)
    raw = json.loads((folder / "split_zhou_DescribableTextures.json").read_text())
    raw["train"][3] = ["x.png", "one", "texture 0"]
    (folder / "split_zhou_DescribableTextures.json").write_text(json.dumps(raw))
    with pytest.raises(DataError, match=r"train\[3\]"):
        read_layout("dtd", tmp_path)
    with pytest.raises(DataError, match="no folder"):
        read_layout("eurosat", tmp_path)


def test_fgvc_and_imagenet_layouts(tmp_path):
    fg = tmp_path / "fgvc_aircraft"
    (fg / "variants.txt").parent.mkdir(parents=True)
    (fg / "variants.txt").write_text("707-320\nA300B4\n")
    for split in ("train", "val", "test"):
        (fg / f"images_variant_{split}.txt").write_text(f"{split}1 707-320\n{split}2 A300B4\n")
    out = read_layout("fgvc_aircraft", tmp_path)
    assert out["test"].labels.tolist() == [0, 1] and out["train"].paths[1].name == "train2.jpg"
    assert out["val"].names == {0: "707-320", 1: "A300B4"}
    im = tmp_path / "imagenet"
    (im / "images").mkdir(parents=True)
    (im / "classnames.txt").write_text("n01 tench\nn02 goldfish\n")
    for sub in ("train", "val"):
        for wnid in ("n01", "n02"):
            for i in range(3):
                _png(im / "images" / sub / wnid / f"{i}.JPEG")
    out = read_layout("imagenet", tmp_path)
    assert out["train"].labels.tolist() == [0, 0, 0, 1, 1, 1] and out["test"].names[1] == "goldfish"
    cfg = load_config("gcscoop", ["data.dataset=imagenet", f"data.root={tmp_path}", "model.shots=2",
                                  "model.val_shots=1"])
    dm = PromptDataModule(cfg.data, cfg.train, cfg.method_params())
    train, val = dm.items()["train"][0], dm.items()["val"][0]
    assert len(train) == 2 and len(val) == 1 and not set(train) & set(val)  # ImageNet's val shots: from train


def test_caption_set_is_deterministic_names_every_category_and_keeps_pretraining_apart(tmp_path):
    from visec.data.synthetic.captions import CATEGORIES, make_caption_dataset

    a = make_caption_dataset(tmp_path / "a", pretrain=6, train=2, val=1, test=2, size=16)
    b = make_caption_dataset(tmp_path / "b", pretrain=6, train=2, val=1, test=2, size=16)
    assert a.digest == b.digest and not a.cached
    assert make_caption_dataset(tmp_path / "a", pretrain=6, train=2, val=1, test=2, size=16).cached
    assert make_caption_dataset(tmp_path / "c", seed=1, pretrain=6, train=2, val=1, test=2, size=16).digest != a.digest
    rows = [json.loads(line) for line in (tmp_path / "a" / "captions.jsonl").read_text().splitlines()]
    for label, cat in enumerate(CATEGORIES):  # every category word is in some pre-training caption
        assert any(cat in r["caption"] for r in rows if r["label"] == label), cat
    split = json.loads((tmp_path / "a" / "split_visec_captions.json").read_text())
    downstream = {"images/" + p for part in split.values() for p, _, _ in part}
    assert not downstream & {r["path"] for r in rows} and len(downstream) == 5 * len(CATEGORIES)
