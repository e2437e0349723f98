"""One-call inference: image or video in, per-frame and per-video scores out, missing faces listed."""

import cv2
import numpy as np
import pytest
from skimage.data import astronaut

from visec.config import load_config
from visec.engine import Engine
from visec.errors import VisecError
from visec.inference import detect


@pytest.fixture(scope="module")
def run(toy_manifest, tmp_path_factory):
    engine = Engine(load_config("classifier", [f"data.manifest={toy_manifest}", "train.max_epochs=1",
                                               f"output_dir={tmp_path_factory.mktemp('runs')}", "name=d"]))
    engine.fit()
    return engine


def _video(path, frames):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (192, 192))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_video_and_image_scores(run, tmp_path):
    face = astronaut()
    frames = [cv2.resize(face[i * 3: i * 3 + 400, i * 3: i * 3 + 400], (192, 192)) for i in range(8)]
    noise = [np.random.default_rng(i).integers(0, 255, (192, 192, 3), dtype=np.uint8) for i in range(2)]
    video = _video(tmp_path / "clip.mp4", frames[:4] + noise + frames[4:])
    result = detect(run, video, n_frames=5, detector="haar")
    scored = [f["frame_index"] for f in result.frames]
    assert len(scored) + len(result.frames_without_face) == 5
    assert set(result.frames_without_face) <= {4, 5} and len(scored) >= 3
    assert all(0 <= f["prob"] <= 1 for f in result.frames)
    assert result.video_prob == pytest.approx(np.mean([f["prob"] for f in result.frames]))
    cv2.imwrite(str(tmp_path / "face.png"), cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
    single = detect(run, tmp_path / "face.png", detector="haar")
    assert [f["frame_index"] for f in single.frames] == [0]


def test_no_face_gives_no_score_and_lists_frames(run, tmp_path):
    noise = [np.random.default_rng(i).integers(0, 255, (192, 192, 3), dtype=np.uint8) for i in range(6)]
    result = detect(run, _video(tmp_path / "noise.mp4", noise), n_frames=3, detector="haar")
    assert result.video_prob is None and len(result.frames_without_face) == 3
    assert "no face found" in result.summary()


def test_non_detector_runs_are_refused(tmp_path):
    engine = Engine(load_config("ancra", [f"output_dir={tmp_path}", "name=a", "train.max_epochs=1",
                                          "train.limit_train_batches=1", "model.steps=1", "model.eval_steps=1"]))
    engine.fit()
    with pytest.raises(VisecError, match="not one"):
        detect(engine, tmp_path / "x.png", detector="haar")
