"""Bad input never crashes and is never silent: numbers, images, videos, dataset trees and output
paths, generated (Hypothesis) and fed to the public entry points, in process.

For every input the outcome is one of two: the command refuses it (exit 2; one ``error:`` line or
click's usage error naming the option; never a traceback), or it goes on and names and counts what
it could not use (a skipped file, a frame without a face, a partly decodable video).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from visec.cli import main
from visec.config import load_config
from visec.errors import ConfigError, DataError, VisecError

FUZZ = dict(deadline=None, derandomize=True,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _refused(capsys, argv: list[str], name: str) -> str:
    """Run ``visec ARGV``; it must exit 2 without a traceback, with click's usage error or one
    ``error:`` line, either naming ``name``. Returns stderr."""
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, (argv, rc, err)
    assert "Traceback" not in err, err
    if "error:" in err and "Error: " not in err:  # visec's own: exactly one line
        assert len(err.strip().splitlines()) == 1, err
    assert name in err, (name, err)
    return err


# -- 1. numbers: every numeric option is range-checked while parsing ------------------------------
# (argv before the option, option, int or float, lowest accepted, highest accepted (None: no bound))
FAKE = "/nonexistent/visec-robustness"
NUMERIC = [
    (["detect", FAKE, "x.png"], "--frames", int, 1, 10_000),
    (["detect", FAKE, "x.png"], "--size", int, 16, 2048),
    (["detect", FAKE, "x.png"], "--margin", float, 0.0, 2.0),
    (["preprocess", FAKE, "--out", FAKE], "--frames", int, 1, 10_000),
    (["preprocess", FAKE, "--out", FAKE], "--size", int, 16, 2048),
    (["preprocess", FAKE, "--out", FAKE], "--margin", float, 0.0, 2.0),
    (["preprocess", FAKE, "--out", FAKE], "--workers", int, 1, 256),
    (["attack", "--method", "pgd", "--model", FAKE], "--steps", int, 1, 100_000),
    (["attack", "--method", "pgd", "--model", FAKE], "--max-samples", int, 1, None),
    (["attack", "--method", "pgd", "--model", FAKE], "--seed", int, 0, 2**32 - 1),
    (["analyze", "x.png"], "--frames", int, 1, 10_000),
    (["analyze", "x.png"], "--size", int, 16, 2048),
    (["analyze", "x.png"], "--margin", float, 0.0, 2.0),
    (["serve"], "--port", int, 1, 65535),
    (["serve"], "--workers", int, 1, 64),
    (["serve"], "--max-mb", float, 0.001, 10000.0),
    (["data", "toy"], "--seed", int, 0, 2**32 - 1),
    (["data", "toy"], "--size", int, 8, 1024),
    (["data", "synth"], "--identities", int, 1, 1_000_000),
    (["data", "synth"], "--frames", int, 1, 1000),
    (["data", "synth"], "--size", int, 16, 1024),
    (["bench"], "--seed", int, 0, 2**32 - 1),
    (["tit", "simulate", "--out", FAKE], "--objects", int, 1, 10_000_000),
    (["tit", "simulate", "--out", FAKE], "--attributes", int, 1, 10_000),
    (["tit", "simulate", "--out", FAKE], "--seed", int, 0, 2**32 - 1),
    (["tit", "trace", "--population", FAKE, "--queries", FAKE], "--seed", int, 0, 2**32 - 1),
    (["fed", "client", "--superlink", "127.0.0.1:1"], "--num-partitions", int, 1, 10_000),
    (["fed", "client", "--superlink", "127.0.0.1:1"], "--port", int, 1, 65535),
    (["fed", "superlink"], "--port", int, 1, 65535),
]


@st.composite
def bad_number(draw):
    """An entry of NUMERIC and a text that is not an accepted value for it."""
    argv, option, kind, low, high = draw(st.sampled_from(NUMERIC))
    outside = [st.integers(max_value=int(np.floor(low)) - 1) if kind is int else
               st.floats(max_value=low, exclude_max=True, allow_nan=False)]
    if high is not None:
        outside.append(st.integers(min_value=int(high) + 1) if kind is int else
                       st.floats(min_value=high, exclude_min=True))
    value = draw(st.one_of(*outside).map(str)
                 | st.sampled_from(["nan", "inf", "-inf", "", "abc", "1e999", "0x1g"]))
    if kind is int:
        value = draw(st.sampled_from([value, f"{low}.5"]))  # a fraction where a count is expected
    return argv, option, value


def test_out_of_range_numbers_are_refused_naming_the_option(capsys):
    @settings(max_examples=50, **FUZZ)
    @given(bad_number())
    def check(case):
        argv, option, value = case
        _refused(capsys, [*argv, f"{option}={value}"], option)

    check()


@pytest.mark.parametrize("argv,name", [
    (["attack", "--method", "pgd", "--model", FAKE, "--device", "foo"], "device 'foo'"),
    (["attack", "--method", "pgd", "--model", FAKE, "--device", "cuda:99"], "device 'cuda:99'"),
    (["attack", "--method", "pgd", "--model", FAKE, "--device", "xla"], "device 'xla'"),
    (["attack", "--method", "pgd", "--model", FAKE, "--alpha", "0"], "alpha (the step size)"),
    (["attack", "--method", "pgd", "--model", FAKE, "--alpha", "-1/255"], "alpha (the step size)"),
    (["attack", "--method", "pgd", "--model", FAKE, "--eps", "inf"], "eps"),
    (["fed", "client", "--superlink", "x:1", "--partition-id", "3", "--num-partitions", "2"], "--partition-id"),
])
def test_attack_and_fed_values_are_checked_before_any_work(capsys, argv, name):
    """The device, the step size and the budget are checked before the run is loaded (the model
    folder does not even exist), each error naming its own option."""
    err = _refused(capsys, argv, name)
    assert "not a visec run folder" not in err


CONFIG_VALUES = {  # key -> values Lightning, torch or numpy would reject (or silently change)
    "train.seed": [-1, 2**32, 1.5, "x"],
    "train.accelerator": ["tpu", "gpuu", 3, ""],
    "train.devices": [0, -1, 1.5, "all", True, [0, 1]],
    "train.strategy": ["dpp", "deepspeed", "xla", 1],
    "train.precision": ["8-true", 16, "bf32"],
    "train.limit_train_batches": [0, -2, 1.5, 0.0, True, ".nan"],
    "train.num_nodes": [0, -1],
    "train.threads": [0, 100_000],
    "train.milestones": ["[0]", "[-3, 2]"],
    "train.sam_beta1": [-2, 1.5],
    "data.image_size": [0, 4, 5000],
    "data.batch_size": [0, -8],
    "fed.clients": [0, -1],  # `visec fed run --clients` passes through here
    "fed.rounds": [0],
    "fed.local_epochs": [0],
}


def test_out_of_range_config_values_are_refused_naming_the_key():
    @settings(max_examples=50, **FUZZ)
    @given(st.sampled_from(sorted(CONFIG_VALUES)).flatmap(
        lambda key: st.tuples(st.just(key), st.sampled_from(CONFIG_VALUES[key]))))
    def check(case):
        key, value = case
        text = json.dumps(value) if isinstance(value, (list, bool)) else str(value)
        with pytest.raises(ConfigError) as info:
            load_config("classifier", [f"{key}={text}"])
        message = str(info.value)
        assert f"'{key}" in message and "\n" not in message, message

    check()


@pytest.mark.parametrize("backbone,kwargs,phrase", [
    ("tiny_cnn", {"width": 0}, "width=0"),
    ("tiny_cnn", {"widht": 8}, "no keyword argument 'widht'"),
    ("tiny_cnn", {"width": 2.5}, "width=2.5"),
    ("mobilenetv2", {"width_mult": -1}, "width_mult=-1"),
    ("resnet18", {"drop_rate": 1.5}, "drop_rate=1.5"),
    ("resnet18", {"no_such_arg": 1}, "no_such_arg"),
])
def test_backbone_keyword_arguments_are_checked(backbone, kwargs, phrase):
    from visec.engine.engine import build_module

    cfg = load_config("classifier", [f"model.backbone={backbone}",
                                     *(f"model.backbone_kwargs.{k}={v}" for k, v in kwargs.items())])
    with pytest.raises(ConfigError, match=f"backbone '.*{backbone[:6]}.*'") as info:
        build_module(cfg)
    assert phrase in str(info.value) and "\n" not in str(info.value)


def test_lightning_settings_this_machine_cannot_honour_are_refused_first():
    from visec.runtime import check_accelerator

    if not __import__("torch").cuda.is_available():
        with pytest.raises(ConfigError, match="train.accelerator=gpu"):
            check_accelerator("gpu", 1)
    check_accelerator("cpu", 4)  # processes on the CPU: fine
    check_accelerator("auto", "auto")


# -- a tiny trained detector, shared --------------------------------------------------------------
@pytest.fixture(scope="module")
def run(tmp_path_factory, one_torch_thread_module):
    from visec.data.toy import make_toy_dataset
    from visec.engine import Engine

    tmp = tmp_path_factory.mktemp("robust_run")
    manifest = make_toy_dataset(tmp / "toy", size=32, sources=20)
    engine = Engine(load_config("classifier", [f"data.manifest={manifest}", f"output_dir={tmp}", "name=run",
                                               "train.max_epochs=1", "train.bootstrap=0"]))
    engine.fit()
    return engine


@pytest.fixture(scope="module")
def one_torch_thread_module():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- 2. images at the edges -----------------------------------------------------------------------
def _png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width x height`` pixels but holds almost nothing."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


SMALL, LARGE = st.integers(1, 48), st.sampled_from([300, 700, 1500])
# tiny images and extreme aspect ratios (1 x 1500, 1500 x 3 ...)
SHAPES = st.tuples(SMALL, SMALL) | st.tuples(SMALL, LARGE) | st.tuples(LARGE, SMALL)


def test_tiny_and_extreme_images_reach_the_face_detectors_without_error():
    """Any size, 1 x 1 to 1 x 1500: a list of faces (usually none), never an exception."""
    from visec.preprocess.detect import build_detector

    detectors = [build_detector("haar"), build_detector("mtcnn")]

    @settings(max_examples=40, **FUZZ)
    @given(SHAPES, st.integers(0, 2**31), st.sampled_from([0, 1]))
    def check(shape, seed, which):
        h, w = shape
        rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
        faces = detectors[which].detect(rgb)
        assert isinstance(faces, list)

    check()


def test_tiny_and_extreme_images_through_detect_are_scored_or_counted(run, tmp_path):
    from visec.inference import detect

    counted = []

    @settings(max_examples=20, **FUZZ)
    @given(SHAPES, st.integers(0, 2**31))
    def check(shape, seed):
        h, w = shape
        rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
        path = tmp_path / f"img_{h}x{w}.png"
        cv2.imwrite(str(path), rgb)
        try:
            result = detect(run, path, detector="haar", size=64)
        except VisecError:
            return
        assert len(result.frames) + len(result.frames_without_face) + len(result.frames_unreadable) == 1
        assert result.frames_expected == result.frames_decoded == 1
        if not result.frames:
            assert "no face found" in result.summary() and "1 frame(s) without a face" in result.summary()
            counted.append(path)

    check()
    assert counted  # the images were read and reached the detector (not all refused)


@pytest.mark.parametrize("width,height", [(7000, 7000), (100_000, 100_000), (1, 50_000_000)])
def test_decompression_bombs_are_refused_by_every_reader(run, tmp_path, width, height):
    from visec.apps.analyze import _read_image
    from visec.data.images import image_problem, load_rgb
    from visec.inference import detect

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_declaring(width, height))
    for read in (load_rgb, lambda p: detect(run, p, detector="haar"), lambda p: _read_image(p, 40_000_000, p.name)):
        with pytest.raises(DataError, match="decompression bomb"):
            read(bomb)
    assert "decompression bomb" in image_problem(bomb)


def _special_files(folder: Path) -> dict[str, str]:
    """A FIFO, a dangling link, two link loops and two over-long names in ``folder``: name -> a
    phrase of the reason each must be skipped with."""
    folder.mkdir(parents=True, exist_ok=True)
    os.mkfifo(folder / "pipe.png")
    os.symlink("nowhere.png", folder / "dangling.png")
    os.symlink("loop.png", folder / "loop.png")
    os.symlink("x" * 300 + ".png", folder / "longname.png")
    return {"pipe.png": "FIFO", "dangling.png": "dangling", "loop.png": "loop", "longname.png": "too long"}


def _deep_path(folder: Path, image: Path) -> str:
    """An image nested deeper than the file system's path limit (4096 bytes); returns the first
    folder's name."""
    name = "d" * 250
    fd = os.open(folder, os.O_RDONLY)
    try:
        for _ in range(18):
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = child
        out = os.open("deep.png", os.O_WRONLY | os.O_CREAT, dir_fd=fd)
        os.write(out, image.read_bytes())
        os.close(out)
    finally:
        os.close(fd)
    return name


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are a POSIX thing")
def test_data_build_names_and_counts_special_files(tmp_path, capsys):
    """FIFOs, dangling links, link loops, over-long names and too-deep paths inside a dataset tree:
    each skipped by name with what it is (never opened: hashing a FIFO would block for ever), and
    the manifest built from the rest."""
    root = tmp_path / "ds"
    for i in range(4):
        for cls in ("real", "fake/swap"):
            p = root / cls / f"{cls[0]}{i}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(p), np.full((16, 16, 3), 30 * i + (cls == "real"), np.uint8))
    expected = {f"real/{k}": v for k, v in _special_files(root / "real").items()}
    expected |= {f"fake/swap/{k}": v for k, v in _special_files(root / "fake" / "swap").items()}
    os.symlink(".", root / "real" / "up")  # a link back to a folder already walked
    os.symlink("../..", root / "fake" / "swap" / "top")  # to an ancestor: it would walk real/ as fakes
    expected |= {"real/up/": "loop", "fake/swap/top/": "loop"}
    deep = _deep_path(root / "real", root / "real" / "r0.png")
    assert main(["data", "build", "generic", "--root", str(root)]) == 0, capsys.readouterr().err
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    report = json.loads((root / "manifest.report.json").read_text())
    reasons = {s["path"]: s["reason"] for s in report["skipped"]}
    for path, phrase in expected.items():
        assert path in reasons and phrase in reasons[path], (path, reasons)
    assert any(p.startswith(f"real/{deep}") and "too long" in r for p, r in reasons.items()), reasons
    assert report["skipped_count"] == len(report["skipped"]) >= len(expected) + 1
    assert report["rows"] == 8


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are a POSIX thing")
def test_preprocess_counts_special_files_and_bombs_named_in_a_manifest(tmp_path, capsys):
    from visec.data.manifest import make_record, write_manifest
    from visec.preprocess.pipeline import REPORT_NAME

    root = tmp_path / "data"
    reasons = _special_files(root)
    (root / "bomb.png").write_bytes(_png_declaring(100_000, 100_000))
    reasons["bomb.png"] = "decompression bomb"
    face = root / "face.png"
    from skimage.data import astronaut

    cv2.imwrite(str(face), cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR))
    rows = [make_record(root, root / name, dataset="t", split="test", label=0, manipulation="real",
                        video_id=f"v{i}", frame_index=0, hash=False)
            for i, name in enumerate([*reasons, "face.png"])]
    manifest = write_manifest(rows, root / "manifest.jsonl")
    assert main(["preprocess", str(manifest), "--out", str(tmp_path / "faces"), "--detector", "haar",
                 "--size", "64"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    report = json.loads((tmp_path / "faces" / REPORT_NAME).read_text())
    unreadable = {Path(v["path"]).name: v["reason"] for v in report["videos_unreadable"]}
    for name, phrase in reasons.items():
        assert name in unreadable and phrase in unreadable[name], (name, unreadable)
    assert f"{len(reasons)} unreadable" in captured.out


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are a POSIX thing")
def test_retrieve_never_opens_special_files_in_a_gallery(tmp_path, capsys):
    gallery = tmp_path / "gallery"
    _special_files(gallery)
    query = tmp_path / "q.png"
    cv2.imwrite(str(query), np.zeros((16, 16, 3), np.uint8))
    _refused(capsys, ["retrieve", FAKE, "--query", str(query), "--gallery", str(gallery)], "no image found")
    _refused(capsys, ["retrieve", FAKE, "--query", str(gallery / "pipe.png"), "--gallery", str(gallery)], "FIFO")


# -- 3. videos that decode only partly ------------------------------------------------------------
@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 30-frame MJPG AVI (its index is at the end: a truncated copy still opens) of a face."""
    from skimage.data import astronaut

    face = cv2.resize(cv2.cvtColor(astronaut()[:400, 50:450], cv2.COLOR_RGB2BGR), (192, 192))
    path = tmp_path_factory.mktemp("clip") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (192, 192))
    for i in range(30):
        writer.write(np.roll(face, i % 3, axis=1))
    writer.release()
    return path


def test_truncated_and_scrambled_videos_report_decoded_vs_declared_frames(run, clip, tmp_path):
    from visec.inference import detect

    data = clip.read_bytes()
    partial = []

    @settings(max_examples=20, **FUZZ)
    @given(st.floats(0.02, 1.0), st.booleans(), st.integers(0, 2**31))
    def check(keep, scramble, seed):
        cut = bytearray(data[:max(1, int(len(data) * keep))])
        if scramble:  # overwrite a stretch after the header with noise
            start = min(len(cut) - 1, 400)
            n = len(cut) // 4
            cut[start:start + n] = np.random.default_rng(seed).integers(0, 256, len(cut[start:start + n]),
                                                                        dtype=np.uint8).tobytes()
        path = tmp_path / "cut.avi"
        path.write_bytes(bytes(cut))
        try:
            result = detect(run, path, n_frames=4, detector="haar", size=64)
        except VisecError:  # nothing decodes: refused, naming the file
            return
        assert 1 <= result.frames_decoded <= result.frames_expected
        assert result.to_dict()["frames_expected"] == result.frames_expected
        if result.frames_decoded < result.frames_expected:
            assert (f"{result.frames_decoded} of {result.frames_expected} declared frames decode"
                    in result.summary())
            partial.append(keep)
        assert (result.warning is not None) == (result.frames_decoded < result.frames_expected / 2)

    check()
    assert partial  # some cuts decoded in part and were scored as such


def test_half_a_video_is_scored_with_a_warning_naming_it(run, clip, tmp_path, capsys):
    half = tmp_path / "half.avi"
    half.write_bytes(clip.read_bytes()[: len(clip.read_bytes()) * 4 // 10])
    assert main(["detect", str(run.run_dir), str(half), "--detector", "haar", "--frames", "4",
                 "--size", "64"]) == 0
    captured = capsys.readouterr()
    assert "of 30 declared frames decode" in captured.out
    assert "warning:" in captured.err and "half.avi" in captured.err and "of the 30 frames" in captured.err
    # and in preprocess's report, per video, with the same warning
    from visec.data.manifest import make_record, write_manifest

    rows = [make_record(tmp_path, p, dataset="t", split="test", label=0, manipulation="real",
                        video_id=p.stem, hash=False) for p in (half, clip)]
    manifest = write_manifest(rows, tmp_path / "videos.jsonl")
    assert main(["preprocess", str(manifest), "--out", str(tmp_path / "faces"), "--detector", "haar",
                 "--frames", "3", "--size", "64"]) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "faces" / "preprocess_report.json").read_text())
    counts = {Path(v["path"]).name: (v["frames_decoded"], v["frames_expected"]) for v in report["video_frames"]}
    assert counts["clip.avi"] == (30, 30) and counts["half.avi"][1] == 30 and counts["half.avi"][0] < 15
    assert "partly decodable videos: 1" in out and "warning: half.avi" in out


# -- 6. every command that reads a manifest counts and names its skips ----------------------------
def test_predict_and_attack_name_and_count_unreadable_images(run, tmp_path, capsys):
    src = Path(run.cfg.data.manifest).parent
    data = tmp_path / "toy"
    shutil.copytree(src, data)
    from visec.data.manifest import read_manifest

    df = read_manifest(data / "manifest.jsonl").df
    broken = [df[df["split"] == s]["path"].iloc[0] for s in ("test", "train")]
    for rel in broken:
        (data / rel).write_bytes(b"not a png at all")
    assert main(["predict", str(run.run_dir), "--data", str(data / "manifest.jsonl"),
                 "--out", str(tmp_path / "p.csv")]) == 0
    err = capsys.readouterr().err
    assert "skipped 2 unreadable image(s)" in err and all(rel in err for rel in broken), err
    assert main(["attack", "--method", "fgsm", "--model", str(run.run_dir), "--data", str(data / "manifest.jsonl"),
                 "--max-samples", "4", "--out", str(tmp_path / "attack")]) == 0
    err = capsys.readouterr().err
    assert "1 unreadable image(s) skipped" in err and broken[0] in err and broken[1] not in err, err
    card = json.loads(next((tmp_path / "attack" / "cards").glob("*.card.json")).read_text())
    assert [Path(p).name for p, _ in card["extra"]["skipped"]["test"]] == [Path(broken[0]).name]


# -- 7. outputs of the wrong kind are refused before any work -------------------------------------
@pytest.mark.parametrize("argv,option", [
    (["preprocess", FAKE, "--out", "{file}"], "--out"),
    (["bench", "--out", "{file}"], "--out"),
    (["attack", "--method", "pgd", "--model", FAKE, "--out", "{file}"], "--out"),
    (["analyze", FAKE, "--out", "{file}"], "--out"),
    (["data", "synth", "--out", "{file}"], "--out"),
    (["data", "toy", "--out", "{file}"], "--out"),
    (["detect", FAKE, "x.png", "--out", "{file}"], "--out"),
    (["tit", "trace", "--population", FAKE, "--queries", FAKE, "--out", "{file}"], "--out"),
    (["fed", "app", "{file}", "--config", "classifier", "--run-dir", "{dir}"], "OUT"),
    (["fed", "app", "{dir}", "--config", "classifier", "--run-dir", "{file}"], "--run-dir"),
    (["predict", FAKE, "--data", FAKE, "--out", "{dir}"], "--out"),
    (["tit", "simulate", "--out", "{dir}"], "--out"),
    (["fed", "superlink", "--database", "{dir}"], "--database"),
    (["preprocess", FAKE, "--out", "{file}/sub"], "--out"),
    (["predict", FAKE, "--data", FAKE, "--out", "{file}/p.csv"], "--out"),
])
def test_an_output_of_the_wrong_kind_is_one_line_before_any_work(tmp_path, capsys, argv, option):
    file, folder = tmp_path / "a-file", tmp_path / "a-folder"
    file.write_text("keep me")
    folder.mkdir()
    argv = [a.format(file=file, dir=folder) for a in argv]
    err = _refused(capsys, argv, option)
    assert err.startswith("error:") and ("not a folder" in err or "is a folder" in err), err
    assert file.read_text() == "keep me" and not any(folder.iterdir())


@pytest.mark.parametrize("method,override,phrase", [
    ("mmnet", ["model.d_model=30"], "divisible by model.heads"),
    ("mmnet", ["model.heads=3"], "divisible by model.heads"),
    ("mmnet", ["model.d_model=18", "model.heads=2"], "multiple of 4"),
    ("hfc_mffd", ["model.nhead=3"], "divisible by model.nhead"),
])
def test_widths_the_attention_cannot_split_are_one_line_errors(method, override, phrase):
    from visec.config import load_config
    from visec.engine.engine import build_module
    from visec.errors import VisecError

    with pytest.raises(VisecError) as info:
        build_module(load_config(method, override))
    assert phrase in str(info.value) and "\n" not in str(info.value)
