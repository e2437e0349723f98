"""Face identity attack metrics (Adv-Diffusion / AMT-GAN protocol): known answers worked out by
hand, each chosen so that it fails when the mechanism breaks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from visec.errors import DataError, MetricError
from visec.metrics import (
    FARS,
    PAPER_THRESHOLDS,
    attack_success_rate,
    far_thresholds,
    fid,
    fid_from_features,
    frechet_distance,
    impostor_scores,
    inception_features,
    pair_files,
    pair_quality,
    read_pairs,
    write_pairs,
)
from visec.metrics import face_verification as fv


# --------------------------------------------------------------------------- thresholds and ASR
def test_paper_thresholds_table():
    assert set(PAPER_THRESHOLDS) == {"ir152", "irse50", "facenet", "mobileface"}
    for row in PAPER_THRESHOLDS.values():
        assert tuple(row) == FARS
        taus = [row[f] for f in FARS]
        assert taus == sorted(taus)  # a lower FAR needs a higher threshold
    assert PAPER_THRESHOLDS["ir152"][0.1] == 0.094632
    assert PAPER_THRESHOLDS["facenet"][0.001] == 0.591191


def test_asr_notes_example():
    # spec 2.9 #6: scores [0.10, 0.20, 0.30] against IR152 -> 3/3, 2/3, 1/3
    res = attack_success_rate(np.array([0.10, 0.20, 0.30]), PAPER_THRESHOLDS["ir152"])
    assert [res[f]["successes"] for f in FARS] == [3, 2, 1]
    assert [res[f]["asr"] for f in FARS] == pytest.approx([1.0, 2 / 3, 1 / 3])
    for f in FARS:
        r = res[f]
        assert r["n"] == 3 and r["threshold"] == PAPER_THRESHOLDS["ir152"][f]
        assert r["ci_low"] <= r["asr"] <= r["ci_high"]
    assert res[0.1]["ci_high"] == 1.0 and res[0.1]["ci_low"] < 1.0


def test_asr_is_strictly_above_and_wilson():
    res = attack_success_rate([0.5, 0.5, 0.7, 0.2], {0.1: 0.5})
    assert res[0.1]["successes"] == 1  # a score equal to the threshold is a failure
    # Wilson 95% interval of 1/4 (hand value)
    assert res[0.1]["ci_low"] == pytest.approx(0.045586, abs=1e-5)
    assert res[0.1]["ci_high"] == pytest.approx(0.699358, abs=1e-5)


def test_asr_refuses_bad_input():
    with pytest.raises(MetricError):
        attack_success_rate([], {0.1: 0.2})
    with pytest.raises(MetricError):
        attack_success_rate([0.1, float("nan")], {0.1: 0.2})
    with pytest.raises(MetricError):
        attack_success_rate([0.1], {1.5: 0.2})
    with pytest.raises(MetricError):
        attack_success_rate([0.1], {})


def test_far_thresholds_hand_made():
    s = np.array([0.3, 0.9, 0.1, 0.7, 0.5, 1.0, 0.2, 0.8, 0.6, 0.4])  # 10 scores, shuffled
    t = far_thresholds(s, fars=(0.1, 0.2, 0.5))
    assert t == {0.1: 0.9, 0.2: 0.8, 0.5: 0.5}
    for far, tau in t.items():
        assert (s > tau).mean() == pytest.approx(far)
    # 25 scores, FAR 0.1: k = floor(2.5) = 2 -> the third largest
    s25 = np.arange(25, dtype=float)
    assert far_thresholds(s25, fars=(0.1,)) == {0.1: 22.0}
    # ties with the threshold: nothing can separate them, the observed FAR drops below
    tied = np.array([0.5] * 5 + [0.1] * 5)
    t = far_thresholds(tied, fars=(0.2,))
    assert t == {0.2: 0.5} and (tied > 0.5).mean() == 0.0


def test_far_thresholds_normal_draws():
    rng = np.random.default_rng(0)
    s = rng.standard_normal(100_000)
    t = far_thresholds(s)
    assert tuple(t) == FARS
    quantiles = {0.1: 1.2815516, 0.01: 2.3263479, 0.001: 3.0902323}
    for far, tau in t.items():
        observed = (s > tau).mean()
        assert far - 1 / len(s) <= observed <= far  # exact up to one score (no ties)
        assert observed == pytest.approx(far, rel=1e-9)
        assert tau == pytest.approx(quantiles[far], abs=0.05 if far < 0.01 else 0.02)


def test_far_thresholds_refuse_too_few():
    with pytest.raises(MetricError, match="at least 1000"):
        far_thresholds(np.linspace(0, 1, 999))
    assert set(far_thresholds(np.linspace(0, 1, 1000))) == set(FARS)
    with pytest.raises(MetricError, match="at least 10 "):
        far_thresholds(np.linspace(0, 1, 9), fars=(0.1,))
    with pytest.raises(MetricError):
        far_thresholds(np.linspace(0, 1, 100), fars=(0.0,))


def test_impostor_scores_known_vectors():
    e = np.eye(4) * np.array([[3.0], [1.0], [0.5], [2.0]])  # orthogonal rows, various norms
    s = impostor_scores(e)
    assert s.shape == (6,) and np.allclose(s, 0.0)
    same = np.tile([[1.0, 2.0, 2.0]], (5, 1)) * np.arange(1, 6)[:, None]  # one direction
    assert np.allclose(impostor_scores(same), 1.0) and impostor_scores(same).shape == (10,)
    # order of the pairs: (0,1), (0,2), (1,2)
    v = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    assert impostor_scores(torch.tensor(v)) == pytest.approx([0.0, -1.0, 0.0])


def test_impostor_scores_blocks_match_dense(monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((23, 5))
    monkeypatch.setattr(fv, "_ROW_BLOCK", 4)
    blocked = impostor_scores(x)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    i, j = np.triu_indices(23, k=1)
    assert np.allclose(blocked, (xn[i] * xn[j]).sum(1))


def test_impostor_scores_refuses():
    with pytest.raises(MetricError):
        impostor_scores(np.ones((1, 4)))
    with pytest.raises(MetricError, match="row 1"):
        impostor_scores(np.array([[1.0, 0.0], [0.0, 0.0]]))


# --------------------------------------------------------------------------- pairing
def _image(path: Path, value: int, size: int = 16) -> None:
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)


def _folder(root: Path, names: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(names):
        _image(root / n, 10 * i)
    return root


def test_pair_files_natural_order(tmp_path):
    names = [f"{i}.png" for i in range(1, 13)]  # 1..12: string order would put 10, 11, 12 after 1
    src = _folder(tmp_path / "src", names[::-1])  # creation order must not matter either
    tgt = _folder(tmp_path / "tgt", ["t10.JPG", "t2.jpg", "t1.png"])
    (src / "notes.txt").write_text("not an image")
    (src / ".hidden.png").write_bytes(b"")
    df = pair_files(src, tgt)
    assert list(df.columns) == ["index", "source", "target"]
    assert [Path(p).name for p in df["source"]] == names
    assert df["index"].tolist() == list(range(12))
    # source #2 is 2.png (the original string sort made it 1, 10, 11, 12, 2, ...)
    assert Path(df["source"][1]).name == "2.png"
    assert [Path(p).name for p in df["target"]][:4] == ["t1.png", "t2.jpg", "t10.JPG", "t1.png"]


def test_pair_files_index_file(tmp_path):
    src = _folder(tmp_path / "src", ["1.png", "2.png", "10.png"])
    tgt = _folder(tmp_path / "tgt", ["a.png", "b.png"])
    idx = tmp_path / "pairs.csv"
    pd.DataFrame({"source": ["10.png", "1.png"], "target": ["a.png", "a.png"],
                  "index": [7, 3]}).to_csv(idx, index=False)
    df = pair_files(src, tgt, index_file=idx)
    assert df["index"].tolist() == [7, 3]
    assert [Path(p).name for p in df["source"]] == ["10.png", "1.png"]
    assert [Path(p).name for p in df["target"]] == ["a.png", "a.png"]
    # no index column: 0..n-1; a missing file is named
    pd.DataFrame({"source": ["2.png", "3.png"], "target": ["b.png", "a.png"]}).to_csv(idx, index=False)
    with pytest.raises(DataError, match=r"row 2: source .*3\.png not found") as err:
        pair_files(src, tgt, index_file=idx)
    assert "\n" not in str(err.value)


def test_pair_files_refuses_empty_and_missing(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")
    tgt = _folder(tmp_path / "tgt", ["a.png"])
    with pytest.raises(DataError, match="no images"):
        pair_files(tmp_path / "empty", tgt)
    with pytest.raises(DataError, match="not found"):
        pair_files(tmp_path / "nope", tgt)


def test_write_read_pairs_round_trip_and_quality(tmp_path):
    # 12 sources 1..12.png with distinct content; the "attack" copies each source to adv_<i>.png
    names = [f"{i}.png" for i in range(1, 13)]
    src = tmp_path / "src"
    src.mkdir()
    for i, n in enumerate(names, start=1):
        _image(src / n, 20 * i)
    tgt = _folder(tmp_path / "tgt", ["t1.png"])
    run = tmp_path / "run"
    (run / "img").mkdir(parents=True)
    pairs = pair_files(src, tgt)
    adv = []
    for i, s in zip(pairs["index"], pairs["source"]):
        out = run / "img" / f"{i}.png"  # 0.png, 1.png, 10.png, ...: string order differs
        Image.open(s).save(out)
        adv.append(str(out))
    pairs["adversarial"] = adv
    written = write_pairs(pairs, run / "pairs.csv")
    raw = pd.read_csv(written)
    assert list(raw.columns) == ["index", "source", "target", "adversarial"]
    assert raw["adversarial"][0] == "img/0.png"  # inside the run folder: stored relative

    back = read_pairs(written)
    assert back["index"].tolist() == list(range(12))
    assert back["adversarial"].tolist() == [str(Path(p).absolute()) for p in adv]
    assert [Path(p).name for p in back["source"]] == names

    def load(paths):
        return np.stack([np.asarray(Image.open(p), np.float64).transpose(2, 0, 1) / 255 for p in paths])

    q = pair_quality(load(back["adversarial"]), load(back["source"]))
    assert np.all(q["psnr"] == 100.0) and np.allclose(q["ssim"], 1.0)
    # pairing by sorted names (the original bug) would compare different images
    by_string = sorted(back["adversarial"], key=lambda p: Path(p).name)
    assert pair_quality(load(by_string), load(back["source"]))["psnr_mean"] < 100.0

    Path(adv[3]).unlink()
    with pytest.raises(DataError, match=r"row 4: adversarial .*3\.png not found"):
        read_pairs(written)
    assert len(read_pairs(written, check_files=False)) == 12


def test_write_pairs_needs_columns(tmp_path):
    with pytest.raises(DataError, match="adversarial"):
        write_pairs(pd.DataFrame({"index": [0], "source": ["a"], "target": ["b"]}), tmp_path / "p.csv")
    df = pd.DataFrame({"index": [0, 0], "source": ["a", "b"], "target": ["c", "d"], "adversarial": ["e", "f"]})
    with pytest.raises(DataError, match="twice"):
        write_pairs(df, tmp_path / "p.csv")


# --------------------------------------------------------------------------- image quality
def test_pair_quality_identity_and_known_psnr():
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 16, 16))
    q = pair_quality(x, x.copy())
    assert q["psnr"].tolist() == [100.0, 100.0] and np.allclose(q["ssim"], 1.0)
    assert q["n"] == 2 and q["source_resized"] is False
    y = np.clip(x + 0.1 * np.where(rng.random(x.shape) < 0.5, 1, -1), 0, 1)
    mse = ((x - y) ** 2).reshape(2, -1).mean(1)
    q = pair_quality(y, x)
    assert q["psnr"] == pytest.approx(10 * np.log10(1 / mse))
    assert np.all(q["ssim"] < 1.0)


def test_pair_quality_resizes_source():
    adv = np.full((1, 3, 16, 16), 0.25)
    src = np.full((1, 3, 32, 32), 0.25)
    q = pair_quality(adv, src)
    assert q["source_resized"] is True and q["psnr"][0] == pytest.approx(100.0)
    with pytest.raises(MetricError, match="different numbers"):
        pair_quality(adv, np.concatenate([src, src]))


# --------------------------------------------------------------------------- Frechet distance
def test_frechet_distance_known_answers():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((6, 6))
    sigma = a @ a.T + 0.1 * np.eye(6)
    mu = rng.standard_normal(6)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-6)
    m = np.array([1.0, -2.0, 0.5, 0.0])
    assert frechet_distance(np.zeros(4), np.eye(4), m, np.eye(4)) == pytest.approx(float(m @ m))
    # 1-D: (mu1-mu2)^2 + (s1 - s2)^2 with standard deviations s
    assert frechet_distance([0.0], [[4.0]], [1.0], [[9.0]]) == pytest.approx(1.0 + (2.0 - 3.0) ** 2)
    # singular covariances (rank 1) still give a finite value
    v = np.array([[1.0, 1.0], [1.0, 1.0]])
    assert frechet_distance([0, 0], v, [0, 0], v) == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(MetricError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))


def test_fid_from_features_shift():
    rng = np.random.default_rng(0)
    f = rng.standard_normal((4000, 3))
    shift = np.array([0.5, 0.0, 1.0])
    assert fid_from_features(f, f) == pytest.approx(0.0, abs=1e-6)
    assert fid_from_features(f, f + shift) == pytest.approx(float(shift @ shift), rel=1e-6)


# --------------------------------------------------------------------------- Inception
def test_inception_refuses_missing_weights(tmp_path):
    x = np.zeros((1, 3, 8, 8))
    with pytest.raises(MetricError, match="never downloads"):
        inception_features(x, None)
    with pytest.raises(MetricError, match="not found"):
        inception_features(x, tmp_path / "inception.safetensors")
    wrong = tmp_path / "wrong.pt"
    torch.save({"conv.weight": torch.zeros(2, 2)}, wrong)
    with pytest.raises(MetricError, match="does not match"):
        inception_features(x, wrong)


def test_inception_features_shape_and_fid_wiring(tmp_path, monkeypatch):
    from safetensors.torch import save_file
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    net = inception_v3(weights=None, aux_logits=False, init_weights=False)
    path = tmp_path / "inception.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    images = torch.rand(2, 3, 40, 48)
    # the network sees 299x299 ImageNet-range inputs...
    batches = list(fv._image_batches(images, 1, "images"))
    assert [tuple(b.shape) for b in batches] == [(1, 3, 299, 299)] * 2
    assert 0.0 <= float(batches[0].min()) and float(batches[0].max()) <= 1.0
    # ...but a 299 px forward pass takes seconds on a CPU: run the real network at 96 px (the
    # smallest size Inception-v3 accepts is 75), which keeps its 2048-d pool output
    monkeypatch.setattr(fv, "INCEPTION_SIZE", 96)
    feats = inception_features(images, path, batch_size=1, device="cpu")
    assert feats.shape == (2, 2048) and np.isfinite(feats).all()
    assert not np.allclose(feats[0], feats[1])  # the features depend on the image

    # FID wiring with a stand-in network (a 2048-d sqrtm is too slow for a unit test): per-channel
    # means of the normalised images as 3-d features
    class Means(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return x.mean((2, 3))

    monkeypatch.setattr(fv, "_load_inception", lambda weights, device=None: Means())
    a = torch.rand(6, 3, 8, 8) * 0.5
    assert fid(a, a, "unused") == pytest.approx(0.0, abs=1e-9)
    shifted = fid(a, a + 0.229 * 0.2, "unused")  # +0.2 per channel after ImageNet normalisation
    std = np.array([0.229, 0.224, 0.225])
    assert shifted == pytest.approx(float(((0.229 * 0.2 / std) ** 2).sum()), rel=1e-4)
    assert math.isfinite(shifted)
