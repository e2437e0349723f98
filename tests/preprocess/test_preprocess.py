"""Preprocessing: frame sampling, reading, face detection, alignment, the resumable pipeline.

Videos are written here from public-domain photos shipped by scikit-image (astronaut) and
matplotlib (grace_hopper); nothing is downloaded.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from visec.data.manifest import make_record, read_manifest, write_manifest
from visec.errors import DataError, VisecError
from visec.preprocess import (
    REFERENCE_5PTS,
    Face,
    align_face,
    alignment_matrix,
    build_detector,
    count_frames,
    pick_face,
    preprocess,
    read_frames,
    sample_indices,
    similarity_transform,
    template_points,
    transform_points,
)
from visec.preprocess.pipeline import DONE_DIR, REPORT_NAME, PreprocessReport

N_VIDEO_FRAMES = 20
# Eye centres of the astronaut photo (512 x 512), measured once with MTCNN.
ASTRO_LEFT_EYE = np.array([205.0, 102.0])
ASTRO_RIGHT_EYE = np.array([247.0, 104.0])
ASTRO_LANDMARKS = np.array([[205.0, 101.7], [246.8, 103.7], [224.7, 129.0],
                            [201.7, 139.2], [245.3, 141.9]])


# ------------------------------------------------------------------------------ media helpers


def _write_video(stem: Path, frames_rgb: list[np.ndarray], fps: int = 25) -> Path:
    """Write frames with mp4v/.mp4, or MJPG/.avi where mp4v does not round-trip."""
    h, w = frames_rgb[0].shape[:2]
    for fourcc, ext in (("mp4v", ".mp4"), ("MJPG", ".avi")):
        path = stem.with_suffix(ext)
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
        if not writer.isOpened():
            continue
        for f in frames_rgb:
            writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        writer.release()
        cap = cv2.VideoCapture(str(path))
        ok, _ = cap.read()
        cap.release()
        if ok:
            return path
        path.unlink(missing_ok=True)
    pytest.skip("OpenCV can neither write mp4v nor MJPG video here")


def _astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def _hopper() -> np.ndarray:
    import matplotlib.cbook as cbook

    bgr = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _astro_frames() -> list[np.ndarray]:
    img = _astronaut()
    return [np.ascontiguousarray(img[10 + 2 * i: 266 + 2 * i, 90 + 3 * i: 346 + 3 * i])
            for i in range(N_VIDEO_FRAMES)]


def _hopper_frames() -> list[np.ndarray]:
    img = cv2.resize(_hopper(), (256, 300), interpolation=cv2.INTER_AREA)
    return [np.ascontiguousarray(img[2 * i: 256 + 2 * i]) for i in range(N_VIDEO_FRAMES)]


def _noface_frames() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8), (0, 0), 8)
    return [np.roll(base, 5 * i, axis=1) for i in range(N_VIDEO_FRAMES)]


def _index_frame(i: int) -> np.ndarray:
    """An 80x80 frame whose bright 10x10 cell (row-major in an 8x8 grid) encodes ``i``."""
    f = np.full((80, 80, 3), 30, np.uint8)
    r, c = divmod(i, 8)
    f[10 * r: 10 * r + 10, 10 * c: 10 * c + 10] = 230
    return f


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    out = {
        "astro": _write_video(d / "astro", _astro_frames()),
        "hopper": _write_video(d / "hopper", _hopper_frames()),
        "noface": _write_video(d / "noface", _noface_frames()),
        "grey": _write_video(d / "grey", [_index_frame(i) for i in range(40)]),
    }
    still = d / "astro_still.png"
    cv2.imwrite(str(still), cv2.cvtColor(_astro_frames()[0], cv2.COLOR_RGB2BGR))
    out["still"] = still
    (d / "empty.mp4").write_bytes(b"")
    (d / "garbage.avi").write_bytes(np.random.default_rng(1).bytes(4096))
    out["empty"], out["garbage"] = d / "empty.mp4", d / "garbage.avi"
    out["dir"] = d
    return out


def _manifest(media, tmp_path: Path, names=("astro", "hopper", "noface"), name="in.jsonl"):
    spec = {
        "astro": dict(label=1, manipulation="Deepfakes", split="test"),
        "hopper": dict(label=0, manipulation="real", split="test"),
        "noface": dict(label=0, manipulation="real", split="train"),
        "empty": dict(label=0, manipulation="real", split="train"),
        "garbage": dict(label=1, manipulation="FaceSwap", split="train"),
        "still": dict(label=1, manipulation="Deepfakes", split="val"),
    }
    # sources live in another folder: manifest paths are "../media0/<name>"
    rows = [make_record(tmp_path, media[n], dataset="toyvid", video_id=f"toyvid/{n}",
                        hash=False, **spec[n]) for n in names]
    return write_manifest(rows, tmp_path / name)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _check_invariants(rep: PreprocessReport) -> None:
    assert rep.videos_total == rep.videos_processed + rep.videos_resumed + len(rep.videos_unreadable)
    assert rep.frames_requested == rep.frames_read + len(rep.frames_unread)
    assert rep.frames_read == rep.frames_written + len(rep.frames_without_face)


# -------------------------------------------------------------------------------- sampling


def test_sample_indices_known_answers():
    assert sample_indices(10, 5) == [1, 3, 5, 7, 9]
    assert sample_indices(100, 4) == [12, 37, 62, 87]
    assert sample_indices(10, 10) == list(range(10))
    assert sample_indices(3, 32) == [0, 1, 2]
    assert sample_indices(0, 5) == []
    assert sample_indices(7, 1) == [3]
    for bad in (0, -3):
        with pytest.raises(ValueError, match="positive"):
            sample_indices(10, bad)


@pytest.mark.parametrize("n_total", [1, 2, 7, 31, 32, 33, 100, 301, 1000])
@pytest.mark.parametrize("n", [1, 3, 8, 32])
def test_sample_indices_evenly_spaced(n_total, n):
    idx = sample_indices(n_total, n)
    assert len(idx) == min(n, n_total)
    assert idx == sorted(set(idx)) and 0 <= idx[0] and idx[-1] < n_total
    if n < n_total:
        seg = n_total / n
        assert idx[-1] >= n_total - seg  # reaches the last segment: not the first-N frames
        gaps = np.diff(idx)
        assert gaps.size == 0 or (gaps.max() - gaps.min() <= 1)


# ---------------------------------------------------------------------------------- reading


def _decoded_index(rgb: np.ndarray) -> int:
    cells = rgb.astype(float).mean(axis=2).reshape(8, 10, 8, 10).mean(axis=(1, 3))
    return int(np.argmax(cells))


def test_read_frames_returns_requested_frames(media):
    assert count_frames(media["grey"]) == 40
    want = [33, 3, 17, 39, 3, 0]
    got = read_frames(media["grey"], want)
    assert [i for i, _ in got] == want
    for i, rgb in got:
        assert rgb is not None and rgb.dtype == np.uint8 and rgb.shape == (80, 80, 3)
        assert _decoded_index(rgb) == i
    seq = read_frames(media["grey"], want, seek=False)
    assert all(_decoded_index(a[1]) == _decoded_index(b[1]) for a, b in zip(got, seq))
    # past the end: None, not an exception and not silently missing
    tail = read_frames(media["grey"], [38, 40, 41])
    assert [i for i, _ in tail] == [38, 40, 41]
    assert _decoded_index(tail[0][1]) == 38 and tail[1][1] is None and tail[2][1] is None


class _LyingCapture:
    """A VideoCapture whose seeks do nothing and whose frame count is wrong."""

    real = cv2.VideoCapture

    def __init__(self, *args):
        self._cap = _LyingCapture.real(*args)

    def set(self, prop, value):
        return True

    def get(self, prop):
        if prop == cv2.CAP_PROP_FRAME_COUNT:
            return 100.0
        return self._cap.get(prop)

    def __getattr__(self, name):
        return getattr(self._cap, name)


def test_read_frames_falls_back_when_seeking_fails(media, monkeypatch):
    monkeypatch.setattr(cv2, "VideoCapture", _LyingCapture)
    assert count_frames(media["grey"]) == 40  # container count not trusted blindly
    for seek in (True, None):
        got = read_frames(media["grey"], [5, 17, 33], seek=seek)
        assert [_decoded_index(f) for _, f in got] == [5, 17, 33]


def test_every_read_mode_gives_the_same_frames(media, monkeypatch):
    import visec.preprocess.video as video

    monkeypatch.setattr(video, "SEEK_MIN_GAP", 4)  # the default mode both seeks and grabs forward
    want = [1, 2, 9, 11, 30, 31, 39]
    modes = {seek: read_frames(media["grey"], want, seek=seek) for seek in (None, True, False)}
    for seek, got in modes.items():
        assert [_decoded_index(f) for _, f in got] == want, seek
        assert all(np.array_equal(a[1], b[1]) for a, b in zip(got, modes[False])), seek


@pytest.mark.parametrize("name", ["empty", "garbage"])
def test_unreadable_video_raises_data_error_naming_file(media, name):
    with pytest.raises(DataError, match=media[name].name):
        count_frames(media[name])
    with pytest.raises(DataError, match=media[name].name):
        read_frames(media[name], [0])
    with pytest.raises(DataError, match="not found"):
        count_frames(media["dir"] / "missing.mp4")


# -------------------------------------------------------------------------------- detection


def _detector_or_skip(name: str):
    try:
        return build_detector(name)
    except VisecError as exc:
        if name == "dlib":
            pytest.skip(f"dlib backend unavailable: {exc}")
        raise


@pytest.mark.parametrize("name", ["haar", "mtcnn", "dlib"])
def test_detectors_find_astronaut_face(name, one_torch_thread):
    det = _detector_or_skip(name)
    faces = det.detect(_astronaut())
    face = pick_face(faces)
    assert isinstance(face, Face)
    x1, y1, x2, y2 = face.box
    for eye in (ASTRO_LEFT_EYE, ASTRO_RIGHT_EYE):
        assert x1 < eye[0] < x2 and y1 < eye[1] < y2
    assert face.landmarks.shape == (5, 2)
    assert np.linalg.norm(face.landmarks[0] - ASTRO_LEFT_EYE) < 12
    assert np.linalg.norm(face.landmarks[1] - ASTRO_RIGHT_EYE) < 12
    lm = face.landmarks  # nose below the eyes, mouth below the nose, left < right
    assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]
    assert lm[:2, 1].max() < lm[2, 1] < lm[3:, 1].min()
    assert det.detect(_noface_frames()[0]) == []


def test_pick_face_policies():
    small_sure = Face([0, 0, 10, 10], 0.99, np.zeros((5, 2)))
    big_unsure = Face([0, 0, 50, 50], 0.70, np.zeros((5, 2)))
    assert pick_face([small_sure, big_unsure]) is big_unsure
    assert pick_face([small_sure, big_unsure], policy="score") is small_sure
    assert pick_face([]) is None
    with pytest.raises(ValueError):
        pick_face([small_sure], policy="nearest")


def test_missing_optional_package_names_pip_package(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "dlib", None)  # makes `import dlib` fail
    with pytest.raises(VisecError, match="pip install dlib-bin"):
        build_detector("dlib")


# -------------------------------------------------------------------------------- alignment


def test_similarity_transform_recovers_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    a, s, t = np.deg2rad(23.0), 1.7, np.array([12.0, -4.0])
    rot = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    dst = src @ rot.T + t
    m = similarity_transform(src, dst)
    np.testing.assert_allclose(m[:, :2], rot, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], t, atol=1e-9)
    np.testing.assert_allclose(transform_points(m, src), dst, atol=1e-9)
    with pytest.raises(ValueError, match="degenerate"):
        similarity_transform(np.ones((5, 2)), dst)


def test_template_geometry():
    np.testing.assert_allclose(template_points(112, 0.0), REFERENCE_5PTS)
    t = template_points(256, 0.3)  # 1.3x context: the template shrinks towards the centre
    np.testing.assert_allclose(t, (REFERENCE_5PTS - 56) * 256 / (112 * 1.3) + 128)


def test_align_identity_on_template():
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 255, (112, 112, 3), dtype=np.uint8), (0, 0), 2)
    m = alignment_matrix(REFERENCE_5PTS, 112, 0.0)
    np.testing.assert_allclose(m, [[1, 0, 0], [0, 1, 0]], atol=1e-9)
    crop = align_face(img, REFERENCE_5PTS, size=112, margin=0.0)
    assert crop.shape == img.shape
    assert np.abs(crop.astype(int) - img.astype(int)).max() <= 1


def test_align_undoes_rotation_and_scale():
    img = _astronaut()
    ref = align_face(img, ASTRO_LANDMARKS, size=128, margin=0.3)
    m = cv2.getRotationMatrix2D((256.0, 256.0), 25.0, 0.8)
    m[:, 2] += (20.0, -10.0)
    moved = cv2.warpAffine(img, m, (512, 512), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT_101)
    back, m2 = align_face(moved, transform_points(m, ASTRO_LANDMARKS), size=128, margin=0.3,
                          return_matrix=True)
    assert back.shape == (128, 128, 3)
    centre = (slice(24, 104), slice(24, 104))
    diff = np.abs(back[centre].astype(float) - ref[centre].astype(float))
    assert diff.mean() < 6, diff.mean()
    # the landmarks land on the template in both cases
    np.testing.assert_allclose(transform_points(m2, transform_points(m, ASTRO_LANDMARKS)),
                               transform_points(alignment_matrix(ASTRO_LANDMARKS, 128, 0.3),
                                                ASTRO_LANDMARKS), atol=1e-6)


# --------------------------------------------------------------------------------- pipeline


@pytest.fixture(scope="module")
def haar_run(media, tmp_path_factory):
    """Reference run: 2 face videos + 1 no-face video, haar, 6 frames each."""
    tmp = tmp_path_factory.mktemp("haar")
    src = _manifest(media, tmp)
    out = tmp / "faces"
    rep = preprocess(src, out, n_frames=6, detector="haar", size=128)
    return src, out, rep


def _check_output(src: Path, out: Path, rep: PreprocessReport, n_frames: int, size: int):
    _check_invariants(rep)
    assert rep.videos_total == 3 and not rep.videos_unreadable
    assert rep.frames_requested == 3 * n_frames == rep.frames_read
    wanted = sample_indices(N_VIDEO_FRAMES, n_frames)
    noface_path = rep.videos_without_face[0]
    assert rep.videos_without_face == [noface_path] and Path(noface_path).stem == "noface"
    assert [(p, i) for p, i in rep.frames_without_face if p == noface_path] == \
        [(noface_path, i) for i in wanted]
    m = read_manifest(out / "manifest.jsonl")  # valid, and every crop exists
    df = m.df
    assert len(df) == rep.frames_written > 0
    assert set(df["media"]) == {"image"}
    assert set(df["video_id"]) <= {"toyvid/astro", "toyvid/hopper"}
    assert "toyvid/noface" not in set(df["video_id"])
    for _, row in df.iterrows():
        assert row["frame_index"] in wanted
        assert row["path"] == f"{row['video_id']}/{row['frame_index']:06d}.png"
        crop = cv2.imread(str(out / row["path"]))
        assert crop.shape == (size, size, 3)
        assert (out / row["source_path"]).resolve().name.startswith(row["video_id"].split("/")[1])
        assert np.asarray(row["landmarks"]).shape == (5, 2)
        assert row["dataset"] == "toyvid"
        assert (row["label"], row["manipulation"]) == (
            (1, "Deepfakes") if row["video_id"].endswith("astro") else (0, "real"))
    saved = json.loads((out / REPORT_NAME).read_text())
    assert saved == json.loads(rep.to_json())
    assert PreprocessReport.from_dict(saved).frames_without_face == rep.frames_without_face


def test_pipeline_haar_end_to_end(haar_run):
    src, out, rep = haar_run
    _check_output(src, out, rep, n_frames=6, size=128)
    assert rep.videos_processed == 3 and rep.videos_resumed == 0
    df = read_manifest(out).df
    assert (df["video_id"] == "toyvid/astro").sum() == 6  # the astronaut is found in every frame


def test_pipeline_mtcnn_end_to_end(media, tmp_path, one_torch_thread):
    src = _manifest(media, tmp_path)
    rep = preprocess(src, tmp_path / "faces", n_frames=4, detector="mtcnn", size=112, margin=0.0)
    _check_output(src, tmp_path / "faces", rep, n_frames=4, size=112)
    df = read_manifest(tmp_path / "faces").df
    assert rep.frames_written == 8  # both faces in all 4 frames
    # MTCNN's landmarks are real, so they sit close to the template after alignment
    lm = np.stack([np.asarray(v) for v in df["landmarks"]])
    assert np.abs(lm - REFERENCE_5PTS).max() < 8


def test_resume_redoes_only_the_missing_video(media, haar_run, tmp_path):
    _, ref_out, _ = haar_run
    out = tmp_path / "faces"
    shutil.copytree(ref_out, out)
    src = _manifest(media, tmp_path)
    first = preprocess(src, out, n_frames=6, detector="haar", size=128)
    assert (first.videos_processed, first.videos_resumed) == (0, 3)
    from visec.preprocess.pipeline import _done_path

    shutil.rmtree(out / "toyvid" / "astro")
    _done_path(out, "toyvid/astro").unlink()
    calls = []
    again = preprocess(src, out, n_frames=6, detector="haar", size=128,
                       progress=lambda d, t: calls.append((d, t)))
    assert (again.videos_processed, again.videos_resumed) == (1, 2)
    assert calls == [(2, 3), (3, 3)]
    _check_invariants(again)
    assert again.frames_written == first.frames_written
    assert _rows(out / "manifest.jsonl") == _rows(ref_out / "manifest.jsonl")
    # changed settings invalidate the done records
    other = preprocess(src, out, n_frames=6, detector="haar", size=96)
    assert (other.videos_processed, other.videos_resumed) == (3, 0)
    assert cv2.imread(str(out / "toyvid/astro/000001.png")).shape == (96, 96, 3)


def test_interrupted_run_resumes_without_redoing_finished_videos(media, haar_run, tmp_path):
    _, ref_out, _ = haar_run
    src = _manifest(media, tmp_path)
    out = tmp_path / "faces"

    class Killed(RuntimeError):
        pass

    def kill_after_first(done, total):
        if done >= 1:
            raise Killed

    with pytest.raises(Killed):
        preprocess(src, out, n_frames=6, detector="haar", size=128, progress=kill_after_first)
    assert len(list((out / DONE_DIR).glob("*.json"))) == 1
    assert not (out / "manifest.jsonl").exists()
    rep = preprocess(src, out, n_frames=6, detector="haar", size=128)
    assert (rep.videos_processed, rep.videos_resumed) == (2, 1)
    _check_invariants(rep)
    assert _rows(out / "manifest.jsonl") == _rows(ref_out / "manifest.jsonl")


def test_unreadable_videos_are_reported_not_fatal(media, tmp_path):
    src = _manifest(media, tmp_path, names=("astro", "empty", "garbage"))
    rep = preprocess(src, tmp_path / "faces", n_frames=3, detector="haar", size=64)
    _check_invariants(rep)
    assert rep.videos_processed == 1
    bad = {Path(v["path"]).name: v["reason"] for v in rep.videos_unreadable}
    assert set(bad) == {"empty.mp4", "garbage.avi"}
    assert "empty.mp4" in bad["empty.mp4"] and "garbage.avi" in bad["garbage.avi"]
    assert rep.frames_written == 3
    # a rerun retries unreadable videos (they have no done record) and keeps reporting them
    again = preprocess(src, tmp_path / "faces", n_frames=3, detector="haar", size=64)
    assert (again.videos_resumed, len(again.videos_unreadable)) == (1, 2)


def test_image_rows_and_nothing_found(media, tmp_path):
    src = _manifest(media, tmp_path, names=("still", "noface"))
    rep = preprocess(src, tmp_path / "faces", n_frames=2, detector="haar", size=64)
    df = read_manifest(tmp_path / "faces").df
    assert list(df["path"]) == ["toyvid/still/000000.png"]
    assert rep.frames_requested == 3 and rep.frames_written == 1
    empty = _manifest(media, tmp_path, names=("noface",), name="noface.jsonl")
    with pytest.raises(DataError, match="no face crop"):
        preprocess(empty, tmp_path / "none", n_frames=2, detector="haar")
    saved = json.loads((tmp_path / "none" / REPORT_NAME).read_text())
    assert saved["videos_without_face"] and len(saved["frames_without_face"]) == 2
    with pytest.raises(VisecError, match="input manifest"):
        preprocess(_manifest(media, tmp_path, name="manifest.jsonl"), tmp_path)


def test_two_workers_match_one(media, haar_run, tmp_path):
    _, ref_out, ref = haar_run
    src = _manifest(media, tmp_path)
    seen = []
    rep = preprocess(src, tmp_path / "faces", n_frames=6, detector="haar", size=128, workers=2,
                     progress=lambda d, t: seen.append(d))
    assert seen == [0, 1, 2, 3]
    assert rep.videos_processed == 3 and rep.frames_written == ref.frames_written
    assert sorted(rep.frames_without_face) == sorted(ref.frames_without_face)
    assert _rows(tmp_path / "faces" / "manifest.jsonl") == _rows(ref_out / "manifest.jsonl")
