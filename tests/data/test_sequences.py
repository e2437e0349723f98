"""Sequential deepfakes: label parsing, the embedded generator (determinism, splits, what each edit
touches, order) and the Seq-DeepFake builder on a tiny fake layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from visec.data.builders import build_manifest, report_path
from visec.data.builders.seqdeepfake import build_seqdeepfake
from visec.data.manifest import read_manifest
from visec.data.sequences import (MAX_STEPS, SUBSETS, parse_sequence, read_sequence_manifest, sequence_name,
                                  steps)
from visec.data.synthetic.generate import manifest_hash
from visec.data.synthetic.sequences import (EDITS, MIN_OVERLAP, TEMPLATE64, allowed_sequences, apply_sequence,
                                            edit_region, make_sequence_dataset, region_overlap)
from visec.data.synthetic.sources import gan_faces, landmarks68
from visec.errors import ConfigError, ManifestError

N_IDS = 24


@pytest.fixture(scope="module")
def seqsynth(tmp_path_factory):
    return make_sequence_dataset(tmp_path_factory.mktemp("seqsynth"), seed=5, identities=N_IDS, forged_per_identity=3)


@pytest.fixture(scope="module")
def face():
    f = gan_faces(1, seed=11)[0]
    return f, landmarks68(f)


# -- labels --------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, expected", [
    ("[1, 2, 4, 0, 0]", (1, 2, 4, 0, 0)), ([5, 3, 1, 2, 4], (5, 3, 1, 2, 4)), ((0, 0, 0, 0, 0), (0,) * 5),
    (" [3,0,0,0,0] ", (3, 0, 0, 0, 0)), ("(2, 1, 0, 0, 0)", (2, 1, 0, 0, 0)),
    (np.array([1, 0, 0, 0, 0]), (1, 0, 0, 0, 0)),
])
def test_parse_sequence_accepts(value, expected):
    got = parse_sequence(value)
    assert got == expected and all(type(v) is int for v in got)


@pytest.mark.parametrize("value, match", [
    ("[10, 2, 0, 0, 0]", "id 10 is outside"),  # parsed as ten, not as 1 (no character positions)
    ([1.5, 0, 0, 0, 0], "not an integer"), ("[1.0, 0, 0, 0, 0]", "not an integer"),
    ([True, 0, 0, 0, 0], "not an integer"), ([1, 0, 2, 0, 0], "follows a 0"), ([1, 2, 3, 4], "exactly 5"),
    ("[1, 2, 3, 4, 5, 0]", "exactly 5"), ([-1, 0, 0, 0, 0], "outside"), ("nose-eye", "not a list"),
    ("", "not a list"), (None, "not a list"), ("[1, 'a', 0, 0, 0]", "not an integer"),
])
def test_parse_sequence_refuses_with_one_line_naming_where(value, match):
    with pytest.raises(ManifestError, match=match) as err:
        parse_sequence(value, where="train.csv:7")
    assert str(err.value).startswith("train.csv:7: ") and "\n" not in str(err.value)


def test_sequence_names():
    assert sequence_name([0, 0, 0, 0, 0], "facial_components") == "original"
    assert sequence_name("[1, 2, 4, 0, 0]", "facial_components") == "nose-eye-lip"
    assert sequence_name((5, 4, 3, 2, 1), "facial_attributes") == "young-smiling-beard-eyeglasses-bangs"
    with pytest.raises(ManifestError, match="facial_components, facial_attributes"):
        sequence_name([1, 0, 0, 0, 0], "faces")


# -- the allowed sequences and the edits ------------------------------------------------------------
@pytest.mark.parametrize("subset", list(SUBSETS))
def test_allowed_sequences_chain_overlapping_regions(subset):
    allowed = allowed_sequences(subset)
    assert 15 <= len(allowed) <= 40 and len(set(allowed)) == len(allowed)
    assert {steps(q) for q in allowed} == set(range(1, MAX_STEPS + 1))
    masks = {i: edit_region(subset, i, TEMPLATE64, 64) for i in range(1, MAX_STEPS + 1)}
    for q in allowed:
        n = steps(q)
        assert q == parse_sequence(q) and len(set(q[:n])) == n  # distinct edits
        assert all(region_overlap(masks[a], masks[b]) >= MIN_OVERLAP for a, b in zip(q[:n], q[1:n]))


def test_allowed_sequence_counts_are_pinned():
    # components: every chain of the hair-eyebrow-eye-nose-lip path (5 + 8 + 6 + 4 + 2); attributes:
    # young overlaps all, so there are 101 chains, of which 8 per length from 2 on are kept
    assert len(allowed_sequences("facial_components")) == 25
    assert len(allowed_sequences("facial_attributes")) == 37


def test_component_regions_form_the_chain_hair_eyebrow_eye_nose_lip():
    names = SUBSETS["facial_components"]
    allowed = allowed_sequences("facial_components")
    chain = tuple(names.index(n) + 1 for n in ("hair", "eyebrow", "eye", "nose", "lip"))
    assert chain in allowed and chain[::-1] in allowed


def test_template_is_the_mean_of_gan_face_landmarks():
    lms = np.stack([landmarks68(f) for f in gan_faces(24, seed=0)])
    assert np.abs(lms.mean(0) - TEMPLATE64).mean() < 1.0


@pytest.mark.parametrize("subset", list(SUBSETS))
def test_edits_change_pixels_only_inside_their_masks(face, subset):
    f, lm = face
    seq = max(allowed_sequences(subset), key=steps)
    out, masks = apply_sequence(f, lm, seq, subset, np.random.default_rng(0))
    assert out.dtype == np.uint8 and out.shape == f.shape and len(masks) == steps(seq)
    outside = np.max(masks, axis=0) == 0
    assert outside.any() and np.array_equal(out[outside], f[outside])  # exactly, bit for bit
    for a, b in zip(masks, masks[1:]):
        assert region_overlap(a, b) >= MIN_OVERLAP


def _adjacent_pairs():
    """Every (subset, earlier, later) that follows one another in some allowed sequence."""
    out = set()
    for subset in SUBSETS:
        for q in allowed_sequences(subset):
            out |= {(subset, a, b) for a, b in zip(q[:steps(q)], q[1:steps(q)])}
    return sorted(out)


@pytest.mark.parametrize("subset, a, b", _adjacent_pairs())
def test_order_matters_in_the_overlap(face, subset, a, b):
    f, lm = face
    ab, (ma, mb) = apply_sequence(f, lm, [a, b], subset, np.random.default_rng(1))
    ba, _ = apply_sequence(f, lm, [b, a], subset, np.random.default_rng(1))
    both = (ma >= 0.5) & (mb >= 0.5)
    assert region_overlap(ma, mb) >= MIN_OVERLAP and both.sum() >= 3
    diff = np.abs(ab.astype(int) - ba.astype(int))[both].mean()
    assert diff > 10, diff  # the two orders differ where the edits overlap
    # the later edit is what shows: in the overlap, (a then b) - (b then a) points from a's tint to b's
    # (mean colours: the textures' random phases average out)
    ta, tb = (np.float64(EDITS[subset][SUBSETS[subset][i - 1]].tint) for i in (a, b))
    shift = ab[both].mean(0) - ba[both].mean(0)
    cosine = shift @ (tb - ta) / (np.linalg.norm(shift) * np.linalg.norm(tb - ta))
    assert cosine > 0.7, cosine


# -- the generated set ----------------------------------------------------------------------------
def test_deterministic_and_cached(seqsynth, tmp_path):
    again = make_sequence_dataset(tmp_path / "a", seed=5, identities=N_IDS, forged_per_identity=3)
    assert again.digests == seqsynth.digests and not again.cached
    assert set(again.digests) == set(SUBSETS)
    root = next(iter(seqsynth.manifests.values())).parents[1]
    hit = make_sequence_dataset(root, seed=5, identities=N_IDS, forged_per_identity=3)
    assert hit.cached and hit.digests == seqsynth.digests and hit.images == seqsynth.images
    for sub, path in seqsynth.manifests.items():
        assert manifest_hash(path) == seqsynth.digests[sub]
    other = make_sequence_dataset(tmp_path / "a", seed=6, identities=N_IDS, forged_per_identity=3)  # regenerates
    assert not other.cached and other.digests != seqsynth.digests
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "x.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a visec sequences folder"):
        make_sequence_dataset(tmp_path / "foreign", identities=N_IDS)
    with pytest.raises(ConfigError, match="subset"):
        make_sequence_dataset(tmp_path / "b", identities=N_IDS, subsets=("faces",))


def test_manifest_rows_splits_and_originals(seqsynth):
    assert seqsynth.images == N_IDS * len(SUBSETS) * 4
    for sub, path in seqsynth.manifests.items():
        m = read_sequence_manifest(path)
        df = m.df
        assert len(df) == N_IDS * 4 and (df["subset"] == sub).all() and (df["dataset"] == "seqsynth").all()
        assert df["video_id"].is_unique and (df["frame_index"] == 0).all()
        assert (df["label"] == df["sequence"].map(lambda q: int(steps(q) > 0))).all()
        assert (df.loc[df["label"] == 0, "manipulation"] == "real").all()
        fake = df[df["label"] == 1]
        assert (fake["manipulation"] == fake["sequence"].map(lambda q: sequence_name(q, sub))).all()
        assert set(fake["sequence"]) <= set(allowed_sequences(sub))
        assert {steps(q) for q in fake["sequence"]} == set(range(1, 6))
        assert (df.groupby("source_id")["split"].nunique() == 1).all()  # identity-disjoint
        assert set(df["split"]) == {"train", "val", "test"}
        real = df[df["label"] == 0]
        assert (real["original"] == real["path"]).all() and real["source_id"].is_unique
        assert (fake["original"] == fake["source_id"].map(dict(zip(real["source_id"], real["path"])))).all()
        assert all((m.root / p).is_file() for p in df["original"])
    # both subsets split the identities the same way
    splits = [read_manifest(p).df.groupby("source_id")["split"].first() for p in seqsynth.manifests.values()]
    assert splits[0].equals(splits[1])


def test_saved_images_differ_from_the_original_only_inside_the_step_masks(seqsynth):
    """Recomputed from the saved original (PNG, lossless): outside the union of the step masks every
    pixel equals the original exactly; consecutive step masks overlap on every forged row."""
    for sub, path in seqsynth.manifests.items():
        m = read_sequence_manifest(path)
        lms = {}
        for row in m.df[m.df["label"] == 1].itertuples():
            orig = np.asarray(Image.open(m.root / row.original).convert("RGB"))
            img = np.asarray(Image.open(m.root / row.path).convert("RGB"))
            if row.original not in lms:
                lms[row.original] = landmarks68(orig)
            n = steps(row.sequence)
            masks = [edit_region(sub, e, lms[row.original], orig.shape[0]) for e in row.sequence[:n]]
            outside = np.max(masks, axis=0) == 0
            assert np.array_equal(img[outside], orig[outside]), row.path
            assert not np.array_equal(img, orig)
            for a, b in zip(masks, masks[1:]):
                assert region_overlap(a, b) >= MIN_OVERLAP, row.path


def test_read_sequence_manifest_refuses_bad_rows(seqsynth, tmp_path):
    src = seqsynth.manifests["facial_components"]
    lines = [json.loads(x) for x in src.read_text().splitlines()]

    def write(rows, name):
        p = src.parent / name
        p.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return p

    bad = [dict(lines[0], sequence=[1, 0, 2, 0, 0])] + lines[1:]
    with pytest.raises(ManifestError, match=r"bad1\.jsonl: row 0 .*follows a 0"):
        read_sequence_manifest(write(bad, "bad1.jsonl"))
    fake = next(i for i, r in enumerate(lines) if r["label"] == 1)
    bad = [dict(r, sequence=[0] * 5) if i == fake else r for i, r in enumerate(lines)]
    with pytest.raises(ManifestError, match="disagrees"):
        read_sequence_manifest(write(bad, "bad2.jsonl"))
    with pytest.raises(ManifestError, match="no 'sequence' column"):
        read_sequence_manifest(write([{k: v for k, v in r.items() if k != "sequence"} for r in lines], "bad3.jsonl"))
    with pytest.raises(ManifestError, match="does not exist"):
        read_sequence_manifest(write([dict(lines[0], original="original/none.png")] + lines[1:], "bad4.jsonl"))
    ok = read_sequence_manifest(write([dict(r, sequence=str(r["sequence"])) for r in lines], "strings.jsonl"))
    assert all(isinstance(q, tuple) and len(q) == 5 for q in ok.df["sequence"])


def test_cli_synth_sequences(tmp_path, capsys):
    from visec.cli import main

    out = tmp_path / "cli"
    assert main(["data", "synth", "--kind", "sequences", "--identities", "24", "--size", "32", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "facial_components" in text and "facial_attributes" in text and "192 images" in text
    for sub in SUBSETS:
        m = read_sequence_manifest(out / sub / "manifest.jsonl")
        assert np.asarray(Image.open(m.root / m.df["path"].iloc[0])).shape == (32, 32, 3)


# -- the Seq-DeepFake builder ---------------------------------------------------------------------
def _jpg(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path, quality=95)


def seqdeepfake_tree(root, subset="facial_components"):
    """A tiny Seq-DeepFake subset: train/val/test CSVs with string labels, originals by stem, one
    missing file, one bad label, one multi-digit label, one path relative to the data root and one
    image that no CSV lists."""
    base = root / subset
    names = SUBSETS[subset]
    rows = {
        "train": [("images/train/original/000001.jpg", "[0, 0, 0, 0, 0]"),
                  (f"images/train/{names[0]}-{names[1]}/000001.jpg", "[1, 2, 0, 0, 0]"),
                  (f"images/train/{names[4]}/000002.jpg", "[5, 0, 0, 0, 0]"),  # no original 000002
                  (f"images/train/{names[0]}/000404.jpg", "[1, 0, 0, 0, 0]"),  # missing file
                  (f"images/train/{names[2]}/000003.jpg", "[3, 0, 1, 0, 0]")],  # bad label
        "val": [(f"{subset}/images/val/{names[3]}-{names[0]}-{names[1]}/000010.jpg", "[4, 1, 2, 0, 0]"),
                ("images/val/original/000010.jpg", "[0, 0, 0, 0, 0]")],
        "test": [(f"images/test/{names[1]}/000020.jpg", "[10, 0, 0, 0, 0]"),  # two digits: out of range
                 (f"images/test/{names[2]}-{names[3]}-{names[4]}-{names[0]}-{names[1]}/000021.jpg",
                  "[3, 4, 5, 1, 2]")],
    }
    for i, (split, items) in enumerate(rows.items()):
        (base / "annotations").mkdir(parents=True, exist_ok=True)
        lines = ["file_path,label"] + [f'{fp},"{label}"' for fp, label in items]
        (base / "annotations" / f"{split}.csv").write_text("\n".join(lines) + "\n")
        for j, (fp, _) in enumerate(items):
            if "000404" in fp:
                continue
            rel = fp.split(f"{subset}/", 1)[1] if fp.startswith(subset) else fp
            _jpg(base / rel, 20 * i + 5 * j)
    _jpg(base / "images/test/original/000021.jpg", 200)  # links the full-length test fake
    _jpg(base / "images/train/unlisted/000099.jpg", 90)
    return root


def test_seqdeepfake_builder_rows_skips_and_original_links(tmp_path):
    root = seqdeepfake_tree(tmp_path / "sdf")
    df = build_seqdeepfake(root)
    by_path = {r.path: r for r in df.itertuples()}
    assert len(df) == 6 and (df["dataset"] == "seqdeepfake").all()
    assert (df["subset"] == "facial_components").all() and df["video_id"].is_unique
    r = by_path["facial_components/images/train/nose-eye/000001.jpg"]
    assert (r.split, r.label, r.manipulation, tuple(r.sequence)) == ("train", 1, "nose-eye", (1, 2, 0, 0, 0))
    assert r.original == "facial_components/images/train/original/000001.jpg"
    assert pd_isna(by_path["facial_components/images/train/hair/000002.jpg"].original)
    o = by_path["facial_components/images/train/original/000001.jpg"]
    assert (o.label, o.manipulation, o.original) == (0, "real", o.path)
    v = by_path["facial_components/images/val/lip-nose-eye/000010.jpg"]  # path given relative to the root
    assert v.split == "val" and v.original == "facial_components/images/val/original/000010.jpg"
    t = by_path["facial_components/images/test/eyebrow-lip-hair-nose-eye/000021.jpg"]
    assert tuple(t.sequence) == (3, 4, 5, 1, 2) and t.original.endswith("test/original/000021.jpg")
    skipped = dict(df.attrs["skipped"])
    assert "not found" in skipped["images/train/nose/000404.jpg"]
    assert "follows a 0" in skipped["facial_components/images/train/eyebrow/000003.jpg"]
    assert "id 10 is outside" in skipped["facial_components/images/test/eye/000020.jpg"]
    assert "not listed" in skipped["facial_components/images/train/unlisted/000099.jpg"]
    assert "linked as an original" in skipped["facial_components/images/test/original/000021.jpg"]
    assert len(skipped) == len(df.attrs["skipped"]) == 5
    assert df.attrs["linked_originals"] == 3
    assert any("3 of 4 forged" in n for n in df.attrs["notes"])


def pd_isna(v):
    return v is None or (isinstance(v, float) and np.isnan(v))


def test_seqdeepfake_through_build_manifest_and_cli(tmp_path, capsys):
    from visec.cli import main

    root = seqdeepfake_tree(tmp_path / "sdf", subset="facial_attributes")
    out = tmp_path / "lists" / "attr.jsonl"
    assert main(["data", "build", "seqdeepfake", "--root", str(root), "-o", "subset=facial_attributes",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    m = read_sequence_manifest(out)  # paths and originals rebased next to the manifest, all existing
    assert len(m) == 6 and m.df["original"].notna().sum() == 5
    assert set(m.df["manipulation"]) >= {"real", "bangs-eyeglasses", "young"}
    report = json.loads(report_path(out).read_text())
    assert report["skipped_count"] == 5 and any("linked" in n for n in report["notes"])
    # subset folder as the root works too; an unknown subset lists both
    assert len(build_seqdeepfake(root / "facial_attributes", subset="facial_attributes")) == 6
    with pytest.raises(ManifestError, match="facial_components, facial_attributes") as err:
        build_seqdeepfake(root, subset="faces")
    assert "\n" not in str(err.value)
    with pytest.raises(ManifestError, match="found: facial_attributes"):
        build_manifest("seqdeepfake", root)  # default subset absent


def test_seqdeepfake_shared_builder_behaviour(tmp_path):
    with pytest.raises(ManifestError, match="'bogus'"):
        build_seqdeepfake(tmp_path, bogus=1)
    with pytest.raises(ManifestError, match="dataset folder not found"):
        build_seqdeepfake(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="expected") as err:
        build_seqdeepfake(tmp_path / "empty")
    assert "\n" not in str(err.value)
    base = tmp_path / "bad" / "facial_components" / "annotations"
    base.mkdir(parents=True)
    (base / "train.csv").write_text("path,seq\nx.jpg,[1,0,0,0,0]\n")
    with pytest.raises(ManifestError, match="file_path,label"):
        build_seqdeepfake(tmp_path / "bad")
