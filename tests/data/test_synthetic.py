"""The embedded face-forgery data: determinism, split hygiene, what each family changes, caching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from visec.data.corruptions import parse_corruption
from visec.data.manifest import read_manifest
from visec.data.synthetic import FAMILIES, make_synth_dataset
from visec.data.synthetic.sources import gan_faces, landmarks68
from visec.errors import ConfigError

N_IDS = 24


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    return make_synth_dataset(out, seed=3, identities=N_IDS, frames=2)


@pytest.fixture(scope="module")
def pair():
    faces = gan_faces(2, seed=11)
    return faces[0], landmarks68(faces[0]), faces[1], landmarks68(faces[1])


def test_same_seed_same_manifest_hash_other_seed_differs(synth, tmp_path):
    again = make_synth_dataset(tmp_path / "a", seed=3, identities=N_IDS, frames=2)
    other = make_synth_dataset(tmp_path / "b", seed=4, identities=N_IDS, frames=2)
    assert again.manifest_sha256 == synth.manifest_sha256
    assert other.manifest_sha256 != synth.manifest_sha256
    # the file hashes themselves agree, not just the paths
    a = read_manifest(again.manifest).df.set_index("path")["sha256"]
    b = read_manifest(synth.manifest).df.set_index("path")["sha256"]
    assert a.sort_index().equals(b.sort_index())


def test_a_face_depends_on_seed_and_index_only():
    assert np.array_equal(gan_faces(5, seed=1)[3], gan_faces(9, seed=1)[3])
    assert not np.array_equal(gan_faces(1, seed=1)[0], gan_faces(1, seed=2)[0])


def test_counts_labels_and_columns(synth):
    df = read_manifest(synth.manifest).df
    n_sources = N_IDS + 2  # + the two public-domain portraits
    assert synth.images == len(df) == n_sources * 2 * 2
    assert (df["label"] == 0).sum() == (df["label"] == 1).sum()
    assert set(df.loc[df["label"] == 1, "manipulation"]) == set(FAMILIES)
    assert set(df["generator"]) == {"dcgan", "photo"}
    for spec in df["quality"].unique():
        parse_corruption(spec)  # every recorded quality is a valid corruption spec
    assert set(df["quality_level"]).issubset({0, 1, 2, 3})
    fakes = df[df["label"] == 1]
    assert fakes["mask"].notna().all() and df.loc[df["label"] == 0, "mask"].isna().all()
    assert (df.groupby("video_id")["frame_index"].apply(sorted).map(tuple) == (0, 1)).all()


def test_no_face_appears_in_two_splits(synth):
    df = read_manifest(synth.manifest).df
    split_of = df.groupby("source_id")["split"].agg(set)
    assert (split_of.map(len) == 1).all()  # every target identity lives in one split
    split_of = split_of.map(lambda s: next(iter(s)))
    fakes = df[df["label"] == 1]
    # the donor of every fake is from the fake's own split
    assert (fakes["donor_id"].map(split_of) == fakes["split"]).all()
    assert (fakes["donor_id"] != fakes["source_id"]).all()
    # every split has reals and every family
    for split, g in df.groupby("split"):
        assert set(g["manipulation"]) == {"real", *FAMILIES}, split


def test_cached_by_parameters(synth, tmp_path):
    again = make_synth_dataset(synth.manifest.parent, seed=3, identities=N_IDS, frames=2)
    assert again.cached and again.manifest_sha256 == synth.manifest_sha256
    out = tmp_path / "c"
    first = make_synth_dataset(out, seed=0, identities=12, frames=1)
    changed = make_synth_dataset(out, seed=0, identities=13, frames=1)
    assert not changed.cached and changed.images == (13 + 2) * 2 != first.images
    assert len(read_manifest(changed.manifest)) == changed.images  # nothing stale left behind


@pytest.mark.parametrize("name,area", [("faceswap", (0.15, 0.6)), ("component", (0.01, 0.2)),
                                       ("resynth", (0.2, 0.75))])
def test_each_family_changes_the_image_only_inside_its_mask(pair, name, area):
    target, t_lm, donor, d_lm = pair
    for seed in range(4):
        fake, mask, _ = FAMILIES[name](target, t_lm, donor, d_lm, np.random.default_rng(seed))
        assert fake.shape == target.shape and fake.dtype == np.uint8
        changed = np.any(fake != target, axis=2)
        assert not changed[mask == 0].any(), "a pixel outside the mask changed"
        assert changed[mask > 0.5].mean() > 0.5, "the masked region was hardly touched"
        assert area[0] < (mask > 0.5).mean() < area[1]


def test_component_masks_sit_on_their_landmarks(pair):
    target, t_lm, donor, d_lm = pair
    from visec.data.synthetic.manipulations import COMPONENTS

    for seed in range(6):
        _, mask, info = FAMILIES["component"](target, t_lm, donor, d_lm, np.random.default_rng(seed))
        for part in info["edits"].split(">"):
            pts = np.round(t_lm[list(COMPONENTS[part])]).astype(int).clip(0, target.shape[0] - 1)
            assert (mask[pts[:, 1], pts[:, 0]] > 0.5).all(), part


def test_resynth_leaves_a_checkerboard(pair):
    target, t_lm, donor, d_lm = pair
    factors = set()
    for seed in range(8):
        fake, mask, info = FAMILIES["resynth"](target, t_lm, donor, d_lm, np.random.default_rng(seed))
        f = info["factor"]
        factors.add(f)
        inside = mask > 0.99
        grey = fake.astype(np.float32).mean(2)
        on_grid = np.zeros_like(inside)
        on_grid[::f, ::f] = True
        # pixels on the up-sampling grid are systematically brighter or darker than their neighbours
        local = (np.roll(grey, 1, 1) + np.roll(grey, -1, 1)) / 2
        diff = (grey - local)[inside & on_grid].mean()
        assert np.sign(diff) == np.sign(info["grid_gain"] - 1) and abs(diff) > 1.0, (seed, f, diff)
    assert factors == {2, 3}


def test_bad_parameters_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'faceswap'"):
        make_synth_dataset(tmp_path, families=("facswap",))
    with pytest.raises(ConfigError, match="identities"):
        make_synth_dataset(tmp_path, identities=5)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="not a visec synth folder"):
        make_synth_dataset(tmp_path / "other", identities=12, frames=1)


def test_real_and_fake_videos_get_degraded_alike(synth):
    df = read_manifest(synth.manifest).df.drop_duplicates("video_id")
    for label, g in df.groupby("label"):
        assert 0.05 < (g["quality"] == "none").mean() < 0.7, label  # pristine and degraded in both classes
        assert g["quality"].nunique() >= 3, label


def test_every_image_has_a_near_infrared_twin(synth):
    m = read_manifest(synth.manifest)
    assert m.df["nir"].notna().all()
    row = m.df[m.df["quality"] == "none"].iloc[0]
    rgb = np.asarray(Image.open(m.root / row["path"])).astype(float)
    nir = np.asarray(Image.open(m.root / row["nir"]))
    assert nir.ndim == 2 and nir.shape == rgb.shape[:2]  # single channel, same geometry
    # closest to the red channel (the band nearest to NIR), and not a plain luminance copy
    corr = [np.corrcoef(nir.ravel(), rgb[..., c].ravel())[0, 1] for c in range(3)]
    assert corr[0] > 0.9 and corr[0] == max(corr)
    assert np.abs(nir - (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2])).mean() > 3


def test_the_modality_decides_what_a_sample_holds(synth):
    from visec.config import load_config
    from visec.data.datamodule import FaceDataModule
    from visec.errors import ConfigError, ManifestError

    shapes = {}
    for modality in ("vis", "nir"):
        cfg = load_config("classifier", [f"data.manifest={synth.manifest}", f"data.modality={modality}"])
        sample = FaceDataModule(cfg.data, cfg.train).dataset("test")[0]
        shapes[modality] = sample["image"]
    assert shapes["vis"].shape == shapes["nir"].shape == (3, 32, 32)
    assert torch.equal(shapes["nir"][0], shapes["nir"][2])  # NIR repeated to 3 channels
    assert not torch.equal(shapes["vis"][0], shapes["vis"][2])
    with pytest.raises(ConfigError, match="vis\\+nir needs a method with a NIR branch"):
        load_config("classifier", [f"data.manifest={synth.manifest}", "data.modality=vis+nir"])
    plain = read_manifest(synth.manifest).df.drop(columns=["nir"])
    from visec.data.datamodule import FaceDataset
    from visec.data.manifest import Manifest

    with pytest.raises(ManifestError, match="'nir' column"):
        FaceDataset(Manifest(plain, read_manifest(synth.manifest).root), 32, modality="nir")


def test_the_family_index_names_the_fakes_manipulation(synth):
    from visec.data.datamodule import FaceDataset

    m = read_manifest(synth.manifest)
    ds = FaceDataset(m, 32)
    assert ds.families == sorted(FAMILIES)
    for i in range(0, len(ds), 7):
        s = ds[i]
        want = -1 if m.df.at[i, "label"] == 0 else ds.families.index(m.df.at[i, "manipulation"])
        assert s["family"] == want
