"""`visec analyze`: the schema, the threshold from the card, tracks, videos, the ensemble, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest

from visec.apps.analyze import (SCHEMA_VERSION, Analyzer, DetectorVerdict, _ensemble, assign_tracks,
                                json_schema, load_detectors, sniff)
from visec.cli import main
from visec.errors import DataError, VisecError

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "docs" / "analysis.schema.json"


@pytest.fixture(scope="module")
def analyzer(tiny_runs):
    return Analyzer.from_runs(tiny_runs, face_detector="mtcnn", frames=5)


def _validate(result) -> dict:
    data = json.loads(result.to_json())
    jsonschema.validate(data, json_schema())
    return data


def test_published_schema_is_this_version():
    """docs/analysis.schema.json is what the code produces: a field change without a new published
    schema (and, when it breaks readers, a new SCHEMA_VERSION) fails here."""
    assert json.loads(SCHEMA_FILE.read_text()) == json_schema()
    assert json_schema()["properties"]["schema_version"]["default"] == SCHEMA_VERSION


def test_image_analysis_schema_and_content(analyzer, media):
    result = analyzer.analyze(media / "face.png")
    data = _validate(result)
    assert data["schema"] == "visec.analysis" and data["schema_version"] == SCHEMA_VERSION
    assert data["input"]["media"] == "image" and data["input"]["frames_sampled"] == [0]
    assert len(data["faces"]) == 1 and data["faces"][0]["det_score"] > 0.9
    x0, y0, x1, y1 = data["faces"][0]["box"]
    assert 150 < (x0 + x1) / 2 < 300 and 50 < (y0 + y1) / 2 < 200  # the astronaut's face
    [verdict] = data["detector_verdicts"]
    assert verdict["prob"] == pytest.approx(data["faces"][0]["probs"][verdict["detector"]])
    assert verdict["fake"] == (verdict["prob"] >= verdict["threshold"])
    assert data["ensemble"]["voters"] == 1 and data["ensemble"]["agreement"] == 1.0
    [ev] = data["evidence"]
    assert ev["face_png"] and ev["maps_png"][verdict["detector"]]  # tiny_cnn names a Grad-CAM layer
    assert any("sequential" in n for n in data["notes"])  # the absent kind of run is said


def test_threshold_comes_from_the_card(tiny_runs, media, tmp_path):
    """The decision uses the validation-EER threshold written on the run's card at training time:
    moving it on the card flips the decision; the analysed file never tunes it."""
    runs = tmp_path / "runs"
    shutil.copytree(tiny_runs, runs)
    [card] = (runs / "tiny" / "cards").glob("*.card.json")
    data = json.loads(card.read_text())
    stored = data["extra"]["val_eer_threshold"]
    [det], _ = load_detectors(runs)
    assert det.info.threshold == pytest.approx(stored) and card.name in det.info.threshold_source
    prob = Analyzer([det], faces="whole", maps=False).analyze(media / "face.png").detector_verdicts[0].prob
    for moved, fake in ((prob - 0.01, True), (prob + 0.01, False)):
        data["extra"]["val_eer_threshold"] = moved
        card.write_text(json.dumps(data))
        [det], _ = load_detectors(runs)
        v = Analyzer([det], faces="whole", maps=False).analyze(media / "face.png").detector_verdicts[0]
        assert v.threshold == pytest.approx(moved) and v.fake is fake


def test_video_tracks_frames_and_curve(analyzer, media):
    from visec.apps.analysis_html import render_page

    result = analyzer.analyze(media / "clip.mp4")
    data = _validate(result)
    assert data["input"]["media"] == "video" and data["input"]["frames_total"] == 10
    sampled = data["input"]["frames_sampled"]
    assert len(sampled) == 5
    scored = sorted({f["frame_index"] for f in data["faces"]})
    assert sorted(scored + data["frames_without_face"]) == sampled
    assert set(data["frames_without_face"]) <= {4, 5} and len(scored) >= 3
    # one face moving a little: one track, whose score is the mean of its frames
    [track] = data["tracks"]
    name = data["detectors"][0]["name"]
    probs = [f["probs"][name] for f in data["faces"]]
    assert track["probs"][name] == pytest.approx(sum(probs) / len(probs))
    assert data["detector_verdicts"][0]["prob"] == pytest.approx(track["probs"][name])
    page = render_page(result)
    assert "<svg" in page and "polyline" in page and "frames without a face" in page


def test_no_face_is_a_result_not_an_error(analyzer, media):
    result = analyzer.analyze(media / "noise.png")
    assert result.faces == [] and result.ensemble.verdict == "no face"
    assert result.detector_verdicts[0].prob is None and any("--faces whole" in n for n in result.notes)


def test_track_assignment_known_answer():
    a, b = [0, 0, 10, 10], [50, 50, 70, 70]
    frames = [[a, b], [[60, 60, 80, 80], [1, 1, 11, 11]], [[200, 200, 210, 210]]]
    # frame 1: the larger box overlaps b with IoU 100/700, the smaller overlaps a with 81/119
    ids = assign_tracks(frames, iou=0.1)
    assert ids[0] == [1, 0]  # the largest face opens track 0
    assert ids[1] == [0, 1]  # each box follows the track it overlaps, whatever the detection order
    assert ids[2] == [2]  # nothing overlaps: a new track
    assert assign_tracks([[a], [a]], iou=0.3) == [[0], [0]]
    assert assign_tracks([[a, a]]) == [[0, 1]]  # one track per face within a frame


def test_ensemble_majority_agreement_and_ties():
    def v(fake, prob):
        return DetectorVerdict(detector="d", prob=prob, threshold=0.5, fake=fake)

    e = _ensemble([v(True, 0.9), v(True, 0.7), v(False, 0.2)])
    assert (e.verdict, e.fake_votes, e.voters) == ("fake", 2, 3) and e.agreement == pytest.approx(2 / 3)
    assert e.mean_prob == pytest.approx(0.6)
    assert _ensemble([v(True, 0.9), v(False, 0.1)]).verdict == "split"
    assert _ensemble([v(False, 0.1)]).verdict == "real"
    assert _ensemble([v(None, None)]).verdict == "no face"


def test_sniff_reads_content_not_names(media, bad_files):
    assert sniff((media / "face.png").read_bytes()[:32]) == ("image", "png")
    assert sniff((media / "clip.mp4").read_bytes()[:32]) == ("video", "mp4")
    assert sniff(b"\xff\xd8\xff\xe0" + bytes(28)) == ("image", "jpeg")
    assert sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 " + bytes(16)) == ("image", "webp")
    assert sniff(b"RIFF\x00\x00\x00\x00AVI LIST" + bytes(16)) == ("video", "avi")
    assert sniff(bad_files["notes.png"][0][:32]) is None


@pytest.mark.parametrize("name", ["empty.png", "notes.png", "truncated.png", "bomb.png", "broken.mp4", "tiny.png"])
def test_bad_files_give_one_clear_error(analyzer, bad_files, tmp_path, name):
    content, _, phrase = bad_files[name]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=phrase) as info:
        analyzer.analyze(path)
    assert "\n" not in str(info.value) and name in str(info.value)


def test_discovery_leaves_out_holdout_and_non_detector_runs(tiny_runs, tmp_path):
    import yaml

    runs = tmp_path / "runs"
    shutil.copytree(tiny_runs / "tiny", runs / "intra")
    shutil.copytree(tiny_runs / "tiny", runs / "loo-faceswap")
    cfg = yaml.safe_load((runs / "loo-faceswap" / "config.yaml").read_text())
    cfg["data"]["holdout"] = "faceswap"
    (runs / "loo-faceswap" / "config.yaml").write_text(yaml.safe_dump(cfg))
    found, notes = load_detectors(runs)
    assert [d.info.run for d in found] == [str(runs / "intra")]
    assert any("1 leave-one-manipulation-out run(s) left out" in n for n in notes)
    (tmp_path / "in").mkdir()
    found, _ = load_detectors(runs, all_runs=True)
    assert len(found) == 2 and len({d.info.name for d in found}) == 2  # names stay unique
    with pytest.raises(VisecError, match="no trained face-forgery detector"):
        Analyzer.from_runs(tmp_path / "in")  # exists, holds no run


def test_cli_writes_json_and_html_and_counts_skips(tiny_runs, media, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(media / "face.png", inputs / "face.png")
    shutil.copy(media / "noise.png", inputs / "noise.png")
    (inputs / "readme.txt").write_text("not media")
    out = tmp_path / "out"
    code = main(["analyze", str(inputs), "--runs", str(tiny_runs), "--out", str(out), "--detector", "mtcnn"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert sorted(p.name for p in out.iterdir()) == ["face.analysis.json", "face.html",
                                                      "noise.analysis.json", "noise.html"]
    assert "skipped" in captured.err and "readme.txt" in captured.err and "1 skipped, 0 failed" in captured.err
    assert "classifier/tiny_cnn" in captured.out and "no face" in captured.out
    face = json.loads((out / "face.analysis.json").read_text())
    jsonschema.validate(face, json_schema())
    assert 'class="saliency"' in (out / "face.html").read_text()
    # a failing input among good ones: counted, named, exit status 1, no traceback
    (inputs / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    code = main(["analyze", str(inputs / "bad.png"), str(inputs / "face.png"), "--runs", str(tiny_runs),
                 "--out", str(out), "--no-maps"])
    captured = capsys.readouterr()
    assert code == 1 and "bad.png" in captured.err and "Traceback" not in captured.err + captured.out
    assert main(["analyze", str(tmp_path / "missing.png"), "--runs", str(tiny_runs)]) == 2
    assert main(["analyze", str(inputs / "face.png"), "--runs", str(tmp_path / "nowhere")]) == 2


def test_auto_mode_takes_small_square_images_as_crops(analyzer, media, tmp_path):
    """auto: a square image no larger than the detectors' training crops (the tiny run: 32 px, no
    preprocess report) is the face crop, said in the notes; a larger photo goes through detection."""
    import cv2

    crop = cv2.resize(cv2.imread(str(media / "face.png"))[60:180, 170:290], (32, 32))
    cv2.imwrite(str(tmp_path / "crop.png"), crop)
    assert analyzer.crop_side() == 32
    small = analyzer.analyze(tmp_path / "crop.png")
    assert small.faces_mode == "whole" and small.faces[0].box == [0.0, 0.0, 32.0, 32.0]
    assert any("taken as an aligned face crop" in n for n in small.notes)
    big = analyzer.analyze(media / "face.png")
    assert big.faces_mode == "detect" and not any("taken as an aligned" in n for n in big.notes)
    with pytest.raises(VisecError, match="faces must be one of"):
        Analyzer(analyzer.detectors, faces="guess")


@pytest.mark.slow
def test_a_sequential_run_answers_the_edit_sequence_and_the_recovered_face(tiny_runs, seq_small, tmp_path):
    """With an MMNet run beside the detectors, the analysis of a face gives its edits in order and the
    recovered face (JSON and page); the detectors' verdicts are unchanged by it."""
    import base64

    from visec.apps.analysis_html import render_page
    from visec.config import load_config
    from visec.data.sequences import SUBSETS, read_sequence_manifest
    from visec.engine import Engine

    runs = tmp_path / "runs"
    shutil.copytree(tiny_runs / "tiny", runs / "tiny")
    manifest = seq_small.manifests["facial_components"]
    Engine(load_config("mmnet", ["model.arch=tiny", "model.width=4", "model.d_model=16", "model.ffn=32",
                                 "model.recovery_width=8", "model.identity_metric=false", "data.image_size=32",
                                 f"data.manifest={manifest}", "train.max_epochs=1", f"output_dir={runs}",
                                 "name=mmnet"])).fit()
    m = read_sequence_manifest(manifest)
    face = m.root / m.df.loc[m.df["label"] == 1, "path"].iloc[0]
    plain = Analyzer.from_runs(tiny_runs, faces="whole", maps=False).analyze(face)
    a = Analyzer.from_runs(runs, faces="whole", maps=False).analyze(face)
    assert plain.sequence is None and any("no sequential-deepfake run" in n for n in plain.notes)
    assert a.sequence is not None and a.sequence.detector.startswith("mmnet")
    assert set(a.sequence.edits) <= set(SUBSETS["facial_components"]) and len(a.sequence.edits) <= 5
    assert base64.b64decode(a.sequence.recovered_png)[:8] == b"\x89PNG\r\n\x1a\n"
    assert [v.prob for v in a.detector_verdicts] == [v.prob for v in plain.detector_verdicts]
    assert "Edit sequence" in render_page(a) and "recovered face" in render_page(a)
