"""Dataset builders on tiny fake folder trees (real PNG / MP4 bytes, a few bytes each)."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from visec.data.builders import build_manifest, report_path
from visec.data.builders.celebdf import build_celebdf
from visec.data.builders.common import frame_indices
from visec.data.builders.dfd import build_dfd
from visec.data.builders.ffpp import build_ffpp
from visec.data.builders.generic import build_generic
from visec.data.builders.wilddeepfake import build_wilddeepfake
from visec.data.manifest import read_manifest
from visec.errors import ManifestError

BUILDERS = {"ffpp": build_ffpp, "celebdf": build_celebdf, "dfd": build_dfd,
            "wilddeepfake": build_wilddeepfake, "generic": build_generic}


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    Image.fromarray(np.full((4, 4, 3), 128, np.uint8)).save(d / "a.png")
    writer = cv2.VideoWriter(str(d / "a.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 5, (16, 16))
    for i in range(2):
        writer.write(np.full((16, 16, 3), 40 * i, np.uint8))
    writer.release()
    data = {".png": (d / "a.png").read_bytes(), ".mp4": (d / "a.mp4").read_bytes()}
    assert all(data.values())
    return data


@pytest.fixture
def make(media):
    def make(root: Path, *rels: str) -> Path:
        for rel in rels:
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(media.get(p.suffix.lower(), b"not media"))
        return root
    return make


def by_video(df):
    """{video_id: (split, label, manipulation, media, [frame indices])}."""
    out = {}
    for vid, part in df.groupby("video_id"):
        out[vid] = (part["split"].iloc[0], int(part["label"].iloc[0]), part["manipulation"].iloc[0],
                    part["media"].iloc[0], sorted(part["frame_index"].tolist()))
    return out


def assert_no_group_spans_splits(df, column):
    spans = df.groupby(column)["split"].nunique()
    assert (spans == 1).all(), spans[spans > 1]


def skipped(df):
    return dict(df.attrs["skipped"])


# -- FaceForensics++ ---------------------------------------------------------------------------------
def ffpp_tree(root, make, *, splits_in_root=False):
    orig, fake = "original_sequences/youtube/c23", "manipulated_sequences"
    make(root, *(f"{orig}/videos/{v}.mp4" for v in ("000", "003", "071", "054", "999")),
         f"{orig}/videos/readme.txt", "original_sequences/youtube/c40/videos/000.mp4",
         *(f"{fake}/Deepfakes/c23/videos/{v}.mp4" for v in ("000_003", "003_000", "071_054")),
         f"{fake}/Deepfakes/c23/frames/071_054/0003.png",  # frames and video of one clip: frames win
         f"{fake}/Face2Face/c23/frames/000_003/0000.png", f"{fake}/Face2Face/c23/frames/000_003/0001.png",
         f"{fake}/Face2Face/c23/videos/054_071.mp4",
         f"{fake}/DeepFakeDetection/c23/videos/01_02__walk__ABC.mp4")
    folder = root if splits_in_root else root / "splits"
    folder.mkdir(parents=True, exist_ok=True)
    for split, pairs in {"train": [["000", "003"]], "val": [["071", "054"]], "test": [["100", "200"]]}.items():
        (folder / f"{split}.json").write_text(json.dumps(pairs))
    return root


@pytest.mark.parametrize("splits_in_root", [False, True])
def test_ffpp_official_pair_splits(tmp_path, make, splits_in_root):
    root = ffpp_tree(tmp_path / "ff", make, splits_in_root=splits_in_root)
    df = build_ffpp(root)
    v = by_video(df)
    assert v == {
        "ffpp/real/000": ("train", 0, "real", "video", [-1]),
        "ffpp/real/003": ("train", 0, "real", "video", [-1]),
        "ffpp/real/054": ("val", 0, "real", "video", [-1]),
        "ffpp/real/071": ("val", 0, "real", "video", [-1]),
        "ffpp/Deepfakes/000_003": ("train", 1, "Deepfakes", "video", [-1]),
        "ffpp/Deepfakes/003_000": ("train", 1, "Deepfakes", "video", [-1]),
        "ffpp/Deepfakes/071_054": ("val", 1, "Deepfakes", "image", [3]),
        # the same clip name under another manipulation is another video
        "ffpp/Face2Face/000_003": ("train", 1, "Face2Face", "image", [0, 1]),
        "ffpp/Face2Face/054_071": ("val", 1, "Face2Face", "video", [-1]),
    }
    assert set(df["compression"]) == {"c23"}
    assert df.set_index("video_id").loc["ffpp/Face2Face/054_071", "source_id"] == "054"
    assert df.set_index("video_id").loc["ffpp/real/071", "source_id"] == "071"
    assert all(not p.startswith("/") for p in df["path"])
    skip = skipped(df)
    assert skip["original_sequences/youtube/c23/videos/999.mp4"] == "not in the official splits"
    assert skip["original_sequences/youtube/c23/videos/readme.txt"] == "not a video file"
    assert skip["manipulated_sequences/Deepfakes/c23/videos/071_054.mp4"].startswith("same video as")
    assert "'dfd' builder" in skip["manipulated_sequences/DeepFakeDetection/"]
    missing = dict(df.attrs["missing"])
    assert missing["original_sequences/youtube/c23/100"] == "in the official test split but not found"
    assert "manipulated_sequences/Face2Face/c23/003_000" in missing


def test_ffpp_build_manifest_report_and_c40(tmp_path, make):
    root = ffpp_tree(tmp_path / "ff", make)
    path = build_manifest("ffpp", root)
    assert path == (root / "manifest.jsonl").absolute()
    m = read_manifest(path, check_files=True)
    assert len(m) == 10 and m.df["video_id"].nunique() == 9  # two frames share one video id
    report = json.loads(report_path(path).read_text())
    assert report_path(path).name == "manifest.report.json"
    assert report["counts"]["train"]["real"] == {"rows": 2, "videos": 2}
    assert report["counts"]["train"]["Face2Face"] == {"rows": 2, "videos": 1}
    assert report["skipped_count"] == len(report["skipped"]) == 4
    assert report["rows"] == 10 and report["labels"] == {"0": 4, "1": 6}

    c40 = build_ffpp(root, compression="c40")
    assert by_video(c40) == {"ffpp/real/000": ("train", 0, "real", "video", [-1])}
    assert ("manipulated_sequences/Deepfakes/c40/", "no c40 folder") in c40.attrs["missing"]
    with pytest.raises(ManifestError, match=r"original_sequences/youtube/raw \(found: c23, c40\)"):
        build_ffpp(root, compression="raw")
    with pytest.raises(ManifestError, match="not one of"):
        build_ffpp(root, compression="c99")
    only = build_ffpp(root, manipulations="Face2Face")
    assert set(only["manipulation"]) == {"real", "Face2Face"}
    assert skipped(only)["manipulated_sequences/Deepfakes/"].startswith("not selected")


def test_ffpp_split_errors(tmp_path, make):
    root = ffpp_tree(tmp_path / "ff", make)
    (root / "splits" / "test.json").write_text(json.dumps([["000", "555"]]))
    with pytest.raises(ManifestError, match="'000' is in both the train and the test split"):
        build_ffpp(root)
    (root / "splits" / "test.json").unlink()
    with pytest.raises(ManifestError, match=r"expected the official split files"):
        build_ffpp(root)


# -- Celeb-DF ----------------------------------------------------------------------------------------
def celebdf_tree(root, make, listing):
    make(root, *(f"Celeb-real/{v}.mp4" for v in ("id0_0000", "id0_0001", "id1_0000", "id2_0000",
                                                  "id3_0000", "id4_0000")),
         "Celeb-real/frames/id5_0000/000.png", "Celeb-real/frames/id5_0000/001.png",
         *(f"YouTube-real/{v}.mp4" for v in ("00000", "00001", "00170")),
         *(f"Celeb-synthesis/{v}.mp4" for v in ("id0_id1_0000", "id1_id0_0000", "id2_id3_0000",
                                                "id3_id2_0000", "id4_id0_0000")))
    (root / "List_of_testing_videos.txt").write_text(listing)
    return root


LISTING = ("1 YouTube-real/00170.mp4\n0 Celeb-synthesis/id3_id2_0000.mp4\n1 Celeb-real/id3_0000.mp4\n"
           "1 Celeb-real/id9_0000.mp4\n")


def test_celebdf_test_list_label_inversion_and_identity_groups(tmp_path, make):
    root = celebdf_tree(tmp_path / "cdf", make, LISTING)
    df = build_celebdf(root)
    v = by_video(df)
    # in the list 1 = real and 0 = synthesized; visec uses 0 = real, 1 = fake
    assert v["celebdf/real/YouTube-real/00170"][:3] == ("test", 0, "real")
    assert v["celebdf/celebdf-synthesis/id3_id2_0000"][:3] == ("test", 1, "celebdf-synthesis")
    assert v["celebdf/real/Celeb-real/id3_0000"][:2] == ("test", 0)
    assert v["celebdf/real/Celeb-real/id5_0000"][3:] == ("image", [0, 1])
    assert sorted(k for k, x in v.items() if x[0] == "test") == [
        "celebdf/celebdf-synthesis/id3_id2_0000", "celebdf/real/Celeb-real/id3_0000",
        "celebdf/real/YouTube-real/00170"]
    rest = df[df["split"] != "test"]
    assert set(rest["split"]) == {"train", "val"}
    assert_no_group_spans_splits(rest, "source_id")
    ids = df.set_index("video_id")["source_id"]
    assert ids["celebdf/celebdf-synthesis/id4_id0_0000"] == "id4"  # grouped with the target identity
    assert ids["celebdf/real/YouTube-real/00001"] == "YouTube-real/00001"
    assert ("Celeb-real/id9_0000", "listed in List_of_testing_videos.txt but not found") in df.attrs["missing"]
    assert by_video(build_celebdf(root)) == v  # deterministic
    path = build_manifest("celebdf", root, hash=False)
    m = read_manifest(path)
    assert set(m.df["sha256"]) == {""} and len(m) == len(df)


def test_celebdf_listed_label_disagreeing_with_folder_is_an_error(tmp_path, make):
    root = celebdf_tree(tmp_path / "cdf", make, "0 YouTube-real/00170.mp4\n")
    with pytest.raises(ManifestError, match=r"listed as synthesized .*1 = real, 0 = synthesized.* YouTube-real"):
        build_celebdf(root)
    (root / "List_of_testing_videos.txt").unlink()
    with pytest.raises(ManifestError, match="List_of_testing_videos.txt"):
        build_celebdf(root)


# -- DFD ---------------------------------------------------------------------------------------------
def test_dfd_all_test_by_default_and_actor_grouped_seeded_split(tmp_path, make):
    root = make(tmp_path / "dfd",
                *(f"original_sequences/actors/c23/videos/{v}.mp4" for v in (
                    "01__exit_phone_room", "01__walking", "02__talking", "03__hugging", "04__kitchen",
                    "05__podium")),
                *(f"manipulated_sequences/DeepFakeDetection/c23/videos/{v}.mp4" for v in (
                    "01_02__exit_phone_room__AAAA", "02_01__talking__BBBB", "03_04__hugging__CCCC",
                    "04_03__kitchen__DDDD", "05_01__podium__EEEE")))
    df = build_dfd(root)
    assert len(df) == 11 and set(df["split"]) == {"test"} and set(df["compression"]) == {"c23"}
    assert by_video(df)["dfd/DeepFakeDetection/01_02__exit_phone_room__AAAA"][:3] == (
        "test", 1, "DeepFakeDetection")
    seeded = build_dfd(root, split="seeded", seed=3)
    assert set(seeded["split"]) == {"train", "val", "test"}
    assert_no_group_spans_splits(seeded, "source_id")
    s = seeded.set_index("video_id")
    assert s.loc["dfd/DeepFakeDetection/01_02__exit_phone_room__AAAA", "source_id"] == "01"
    assert s.loc["dfd/DeepFakeDetection/01_02__exit_phone_room__AAAA", "split"] == s.loc["dfd/real/01__walking", "split"]
    assert by_video(build_dfd(root, split="seeded", seed=3)) == by_video(seeded)
    with pytest.raises(ManifestError, match="split='random'"):
        build_dfd(root, split="random")
    with pytest.raises(ManifestError, match="fractions"):
        build_dfd(root, split="seeded", fractions=[0.5, 0.5, 0.5])


def test_dfd_flat_layout(tmp_path, make):
    root = make(tmp_path / "dfd", "DFD_original sequences/DFD_original sequences/01__walking.mp4",
                "DFD_manipulated_sequences/01_02__walking__XYZ.mp4",
                "DFD_manipulated_sequences/03_01__hug__Q/0007.png")
    df = build_dfd(root)
    assert by_video(df) == {"dfd/real/01__walking": ("test", 0, "real", "video", [-1]),
                            "dfd/DeepFakeDetection/01_02__walking__XYZ": ("test", 1, "DeepFakeDetection", "video", [-1]),
                            "dfd/DeepFakeDetection/03_01__hug__Q": ("test", 1, "DeepFakeDetection", "image", [7])}
    assert "compression" not in df.columns
    assert read_manifest(build_manifest("dfd", root)).df["path"].str.startswith("DFD_").all()


# -- WildDeepfake ------------------------------------------------------------------------------------
def test_wilddeepfake_frames_test_folders_and_seeded_val(tmp_path, make):
    rels = ["real_test/1/real/0/0.png", "fake_test/1/fake/0/00012.png", "fake_test/1/fake/0/00013.png",
            "fake_train/3/fake/0/notes.txt"]
    for cls in ("real", "fake"):
        for archive in range(1, 6):
            rels += [f"{cls}_train/{archive}/{cls}/{seq}/{f}.png" for seq in (0, 1) for f in (0, 1)]
    root = make(tmp_path / "wdf", *rels)
    df = build_wilddeepfake(root)
    v = by_video(df)
    assert v["wilddeepfake/wild/test/1/fake/0"] == ("test", 1, "wild", "image", [12, 13])
    assert v["wilddeepfake/real/test/1/real/0"] == ("test", 0, "real", "image", [0])
    assert "wilddeepfake/real/train/1/real/0" in v and "wilddeepfake/wild/train/1/fake/0" in v
    train = df[df["video_id"].str.contains("/train/")]
    assert set(train["split"]) == {"train", "val"}
    for cls in (0, 1):  # val is carved from each class
        assert "val" in set(train.loc[train["label"] == cls, "split"])
    assert_no_group_spans_splits(df, "source_id")
    assert df.set_index("video_id").loc["wilddeepfake/wild/train/2/fake/1", "source_id"].iloc[0] == "fake_train/2/fake"
    assert skipped(df) == {"fake_train/3/fake/0/notes.txt": "not an image or video file"}
    assert ("real_train/", "folder not found") not in df.attrs["missing"]
    assert read_manifest(build_manifest("wilddeepfake", root, val_fraction=0.4))
    with pytest.raises(ManifestError, match="val_fraction"):
        build_wilddeepfake(root, val_fraction=1.5)


# -- generic -----------------------------------------------------------------------------------------
GENERIC = ("real/a.png", "real/b.png", "real/c.png", "real/vid1/0001.png", "real/vid1/0002.png",
           "real/clip.mp4", "real/notes.txt", "fake/x.png", "fake/FaceSwap/y/0001.png",
           "fake/FaceSwap/z.mp4", "fake/FaceSwap/w.png", "fake/FaceSwap/v.png", "extra/thing.png")


def test_generic_videos_frames_and_loose_images(tmp_path, make):
    root = make(tmp_path / "g", *GENERIC)
    df = build_generic(root)
    v = by_video(df)
    assert {k: x[1:] for k, x in v.items()} == {
        "generic/real/a.png": (0, "real", "image", [0]),
        "generic/real/b.png": (0, "real", "image", [0]),
        "generic/real/c.png": (0, "real", "image", [0]),
        "generic/real/vid1": (0, "real", "image", [1, 2]),
        "generic/real/clip": (0, "real", "video", [-1]),
        "generic/fake/x.png": (1, "fake", "image", [0]),
        "generic/FaceSwap/y": (1, "FaceSwap", "image", [1]),
        "generic/FaceSwap/z": (1, "FaceSwap", "video", [-1]),
        "generic/FaceSwap/w.png": (1, "FaceSwap", "image", [0]),
        "generic/FaceSwap/v.png": (1, "FaceSwap", "image", [0]),
    }
    assert skipped(df) == {"real/notes.txt": "not an image or video file",
                           "extra/": "not part of the generic layout (1 file)"}
    assert "source_id" not in df.columns
    # seeded split: deterministic, stratified per manipulation, a video never spans splits
    assert by_video(build_generic(root)) == v
    assert set(df.loc[df["manipulation"] == "real", "split"]) == {"train", "val", "test"}
    flat = by_video(build_generic(root, folder_is_video=False))
    assert "generic/real/vid1/0001.png" in flat and "generic/real/vid1" not in flat
    named = build_generic(root, dataset="mine", fractions="0.5,0.25,0.25")
    assert set(named["dataset"]) == {"mine"} and named["video_id"].str.startswith("mine/").all()


def test_generic_sources_csv_keeps_identities_in_one_split(tmp_path, make):
    files = []
    lines = ["path,source_id"]
    for i in range(8):
        files += [f"real/p{i}_a.png", f"fake/DF/p{i}_b.png"]
        lines += [f"real/p{i}_a.png,id{i}", f"fake/DF/p{i}_b.png,id{i}"]
    files += ["real/p9/0001.png", "real/p9/0002.png", "fake/DF/p9.png", "real/nosource.png"]
    lines += ["real/p9,id9", "fake/DF/p9.png,id9", "real/ghost.png,id10"]
    root = make(tmp_path / "g", *files)
    (root / "sources.csv").write_text("\n".join(lines) + "\n")
    for seed in range(4):
        df = build_generic(root, seed=seed)
        assert_no_group_spans_splits(df.dropna(subset=["source_id"]), "source_id")
        assert set(df["split"]) == {"train", "val", "test"}
    s = df.set_index("path")["source_id"]
    assert s["real/p9/0002.png"] == "id9" and s.isna()["real/nosource.png"]
    assert df.attrs["missing"] == [("real/ghost.png", "listed in sources.csv but matches no file")]
    m = read_manifest(build_manifest("generic", root))
    assert "source_id" in m.df.columns


def test_generic_split_folders_and_layout_errors(tmp_path, make):
    root = make(tmp_path / "g", "train/real/a.png", "train/fake/DF/b.png", "val/real/v.png",
                "test/real/a.png", "test/fake/c.png", "test/other.txt")
    v = by_video(build_generic(root))
    assert {k: x[0] for k, x in v.items()} == {
        "generic/real/train/a.png": "train", "generic/DF/train/b.png": "train", "generic/real/val/v.png": "val",
        "generic/real/test/a.png": "test", "generic/fake/test/c.png": "test"}
    make(root, "real/z.png")
    with pytest.raises(ManifestError, match="both split folders"):
        build_generic(root)
    bad = make(tmp_path / "bad", "fake/real/a.png")
    with pytest.raises(ManifestError, match="cannot be called 'real'"):
        build_generic(bad)


# -- shared behaviour --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_unknown_option_missing_root_and_wrong_layout(tmp_path, name):
    build = BUILDERS[name]
    with pytest.raises(ManifestError, match="'bogus'") as err:
        build(tmp_path, bogus=1)
    assert "\n" not in str(err.value)
    with pytest.raises(ManifestError, match="dataset folder not found"):
        build(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="expected") as err:
        build(tmp_path / "empty")
    assert "\n" not in str(err.value)


def test_option_typo_suggests_the_known_name(tmp_path):
    with pytest.raises(ManifestError, match="did you mean 'compression'"):
        build_ffpp(tmp_path, compresion="c40")


@pytest.mark.parametrize("where", ["outside", "subfolder", "existing-dir"])
def test_manifest_outside_root_rewrites_paths(tmp_path, make, capsys, where):
    root = make(tmp_path / "data" / "g", *GENERIC)
    out = {"outside": tmp_path / "manifests" / "g.jsonl", "subfolder": root / "lists" / "g.jsonl",
           "existing-dir": tmp_path / "here"}[where]
    if where == "existing-dir":
        out.mkdir()
    path = build_manifest("generic", root, out, seed=1)
    assert capsys.readouterr() == ("", "")
    prefix = {"outside": "../data/g/", "subfolder": "../", "existing-dir": "../data/g/"}[where]
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert all(x["path"].startswith(prefix) for x in lines)
    m = read_manifest(path, check_files=True)
    inside = build_generic(root, seed=1)
    assert sorted(m.df["path"]) == sorted(prefix + p for p in inside["path"])
    assert report_path(path).is_file() and json.loads(report_path(path).read_text())["skipped_count"] == 2


def test_frame_indices_parse_digits_or_fall_back_to_natural_order():
    P = Path
    assert frame_indices([P("f_2.png"), P("f_10.png"), P("vid3_f_1.png")]) == [2, 10, 1]
    assert frame_indices([P("b.png"), P("a.png")]) == [1, 0]
    assert frame_indices([P("x1.png"), P("y1.png")]) == [0, 1]  # duplicate numbers -> order


def test_unknown_builder_name_suggests_the_closest():
    from visec.errors import RegistryError

    with pytest.raises(RegistryError, match="did you mean 'ffpp'"):
        build_manifest("ffp", "/nonexistent")
