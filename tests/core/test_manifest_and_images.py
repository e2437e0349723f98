import json

import numpy as np
import pytest
from PIL import Image

from visec.data.images import load_rgb, scan_images
from visec.data.manifest import (make_record, read_manifest, seeded_split, validate,
                                 write_manifest)
from visec.errors import DataError, ManifestError


def _png(path, mode="RGB", size=(8, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(0).integers(0, 255, (*size[::-1], 3), dtype=np.uint8)
    Image.fromarray(arr).convert(mode).save(path) if mode != "CMYK" else \
        Image.fromarray(arr).convert("CMYK").save(path.with_suffix(".jpg"))
    return path if mode != "CMYK" else path.with_suffix(".jpg")


def _rows(root):
    a, b = _png(root / "real/a.png"), _png(root / "fake/b.png")
    return [make_record(root, a, dataset="d", split="train", label=0, manipulation="real", video_id="d/real/a"),
            make_record(root, b, dataset="d", split="test", label=1, manipulation="swap", video_id="d/swap/b")]


def test_manifest_round_trip_relative_paths_and_hash(tmp_path):
    out = write_manifest(_rows(tmp_path), tmp_path / "manifest.jsonl")
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert {x["path"] for x in lines} == {"real/a.png", "fake/b.png"}
    assert all(len(x["sha256"]) == 64 for x in lines)
    m = read_manifest(tmp_path)  # a folder means folder/manifest.jsonl
    assert len(m) == 2 and m.split("test").df["label"].tolist() == [1]
    # the folder can move: paths are relative to the manifest
    moved = tmp_path.rename(tmp_path.parent / "moved")
    assert len(read_manifest(moved / "manifest.jsonl")) == 2


def test_manifest_naming_missing_files_is_an_error(tmp_path):
    rows = _rows(tmp_path)
    write_manifest(rows, tmp_path / "manifest.jsonl")
    (tmp_path / "fake/b.png").unlink()
    with pytest.raises(ManifestError, match=r"1 file\(s\) named in the manifest do not exist.*fake/b.png"):
        read_manifest(tmp_path / "manifest.jsonl")
    assert len(read_manifest(tmp_path / "manifest.jsonl", check_files=False)) == 2


@pytest.mark.parametrize("change,message", [
    ({"label": 2}, "label must be 0"),
    ({"split": "dev"}, "split 'dev'"),
    ({"manipulation": "swap"}, "label 0 must go with manipulation 'real'"),
])
def test_validate_rejects_bad_rows(tmp_path, change, message):
    rows = _rows(tmp_path)
    rows[0].update(change)
    with pytest.raises(ManifestError, match=message):
        write_manifest(rows, tmp_path / "m.jsonl")


def test_video_ids_must_not_mix_manipulations(tmp_path):
    rows = _rows(tmp_path)
    rows[1]["video_id"] = "shared/000"
    rows[0]["video_id"] = "shared/000"
    with pytest.raises(ManifestError, match="video_id 'shared/000' mixes"):
        validate(__import__("pandas").DataFrame(rows))


def test_bad_json_line_names_the_line(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"path": "a"\n')
    with pytest.raises(ManifestError, match="m.jsonl:1: not valid JSON"):
        read_manifest(p)


def test_seeded_split_is_deterministic_and_covers_all_splits():
    groups = [f"id{i}" for i in range(20)] * 3
    a, b = seeded_split(groups, seed=3), seeded_split(list(reversed(groups)), seed=3)
    assert a == b and set(a.values()) == {"train", "val", "test"}
    assert sum(v == "test" for v in a.values()) == 3
    assert seeded_split(groups, seed=4) != a


def test_load_rgb_converts_grayscale_cmyk_palette_and_16bit(tmp_path):
    for mode in ("L", "P", "RGBA", "CMYK"):
        img = load_rgb(_png(tmp_path / f"{mode}.png", mode))
        assert img.dtype == np.uint8 and img.shape == (8, 8, 3)
    Image.fromarray((np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)).save(tmp_path / "i16.png")
    assert load_rgb(tmp_path / "i16.png").max() == 255


def test_bad_images_raise_errors_naming_the_file(tmp_path):
    good = _png(tmp_path / "good.png")
    (tmp_path / "zero.png").write_bytes(b"")
    data = good.read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.jpg").write_text("not an image")
    for name, msg in (("zero.png", "empty file"), ("trunc.png", "cannot decode"),
                      ("text.jpg", "cannot decode"), ("absent.png", "file not found")):
        with pytest.raises(DataError, match=f"{name}: {msg}"):
            load_rgb(tmp_path / name)
    report = scan_images([good, tmp_path / "zero.png", tmp_path / "trunc.png"])
    assert report.checked == 3 and [p.endswith(n) for (p, _), n in zip(report.bad, ("zero.png", "trunc.png"))] == [True, True]
