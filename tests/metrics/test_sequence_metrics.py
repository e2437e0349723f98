"""Sequence metrics (Fixed-Acc, Adaptive-Acc, CSM), recovery metrics (PSNR, SSIM) and dlib face
identity similarity: known answers worked out by hand."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from visec.errors import MetricError
from visec.metrics import (
    DlibFaceEmbedder,
    adaptive_accuracy,
    csm,
    csm_at_k,
    fixed_accuracy,
    majority_sequence_baseline,
    psnr,
    recovery_metrics,
    sequence_metrics,
    ssim,
    step_accuracy,
    step_confusion,
)

# the worked example of the spec (section 1.7)
Y_EX = [[1, 2, 4, 0, 0], [1, 2, 4, 0, 0], [0, 0, 0, 0, 0], [5, 3, 0, 0, 0]]
P_EX = [[1, 2, 4, 0, 0], [1, 4, 2, 0, 0], [0, 0, 0, 0, 0], [5, 3, 1, 0, 0]]


# --------------------------------------------------------------------------- known answers
def test_worked_example():
    assert fixed_accuracy(Y_EX, P_EX) == pytest.approx(17 / 20)
    assert adaptive_accuracy(Y_EX, P_EX) == pytest.approx(7 / 10)
    assert csm(Y_EX, P_EX) == pytest.approx(0.5)
    expected_prefix = {1: 1.0, 2: 0.75, 3: 0.5, 4: 0.5, 5: 0.5}
    for k, v in expected_prefix.items():
        assert csm_at_k(Y_EX, P_EX, k) == pytest.approx(v)
    # per slot: slot 1 all right; slot 2 sample 2 wrong; slot 3 samples 2 and 4 wrong
    assert step_accuracy(Y_EX, P_EX) == pytest.approx([1.0, 0.75, 0.5, 1.0, 1.0])


def test_sequence_metrics_dict_on_worked_example():
    r = sequence_metrics(Y_EX, P_EX, n_bootstrap=200)
    assert r["fixed_acc"] == pytest.approx(0.85)
    assert r["adaptive_acc"] == pytest.approx(0.70)
    assert r["csm"] == pytest.approx(0.50)
    assert [r[f"csm@{k}"] for k in range(1, 6)] == pytest.approx([1.0, 0.75, 0.5, 0.5, 0.5])
    assert r["csm@5"] == r["csm"]
    assert r["step_acc"] == pytest.approx([1.0, 0.75, 0.5, 1.0, 1.0])
    assert r["n"] == 4 and r["n_groups"] == 4
    assert set(r["ci"]) == {"fixed_acc", "adaptive_acc", "csm"}
    for name, (lo, hi) in r["ci"].items():
        assert 0.0 <= lo <= r[name] <= hi <= 1.0
    assert "ci" not in sequence_metrics(Y_EX, P_EX, n_bootstrap=0)


def test_all_original_gives_one_everywhere():
    y = np.zeros((7, 5), dtype=np.int64)
    r = sequence_metrics(y, y.copy(), n_bootstrap=50)
    for name in ("fixed_acc", "adaptive_acc", "csm", "csm@1", "csm@2", "csm@3", "csm@4", "csm@5"):
        assert r[name] == 1.0, name
    assert r["step_acc"] == [1.0] * 5
    # L = 0 for every sample: each counts 1 correct of 1
    assert adaptive_accuracy(y, y) == 1.0


def test_shift_by_one_position_breaks_every_sequence():
    y = np.array([[1, 2, 3, 0, 0], [4, 5, 0, 0, 0], [2, 0, 0, 0, 0], [5, 4, 3, 2, 1]])
    shifted = np.zeros_like(y)
    shifted[:, 1:] = y[:, :-1]
    assert csm(y, shifted) == 0.0
    assert csm_at_k(y, shifted, 1) == 0.0  # slot 1 is now 0 where the truth is not


def test_adaptive_counts_nonzero_entries_not_eos_position():
    # truth [1,0,0,0,0] (nnz 1) vs prediction [1,0,3,0,0] (nnz 2, non-contiguous): L = 2, and the
    # first two slots (1 = 1, 0 = 0) both match -> 2 of 2, although slot 3 is wrong.
    assert adaptive_accuracy([[1, 0, 0, 0, 0]], [[1, 0, 3, 0, 0]]) == 1.0
    assert fixed_accuracy([[1, 0, 0, 0, 0]], [[1, 0, 3, 0, 0]]) == pytest.approx(4 / 5)
    assert csm([[1, 0, 0, 0, 0]], [[1, 0, 3, 0, 0]]) == 0.0
    # micro average with a second sample: truth [2,3,0,0,0] vs [0,0,0,0,0] -> L = 2, 0 of 2.
    # total (2 + 0) / (2 + 2) = 0.5 (with L = end-of-sequence position it would be 2/3 or 2/5).
    y = [[1, 0, 0, 0, 0], [2, 3, 0, 0, 0]]
    p = [[1, 0, 3, 0, 0], [0, 0, 0, 0, 0]]
    assert adaptive_accuracy(y, p) == pytest.approx(0.5)
    # micro, not macro: sample A 3 of 3, sample B 0 of 1 -> 3/4 (the macro mean would be 1/2)
    assert adaptive_accuracy([[1, 2, 3, 0, 0], [4, 0, 0, 0, 0]],
                             [[1, 2, 3, 0, 0], [5, 0, 0, 0, 0]]) == pytest.approx(3 / 4)


def test_predictions_may_hold_large_ids_and_tensors_and_whole_floats():
    y = torch.tensor([[1, 2, 0, 0, 0], [3, 0, 0, 0, 0]])
    p = np.array([[1, 2, 7, 0, 0], [3, 0, 0, 0, 0]], dtype=np.float32)  # 7: e.g. a decoder token
    assert fixed_accuracy(y, p) == pytest.approx(9 / 10)
    assert adaptive_accuracy(y, p) == pytest.approx((2 + 1) / (3 + 1))
    assert csm(y, p) == 0.5


def test_step_confusion_hand_example():
    y = [[1, 2, 0, 0, 0], [1, 0, 0, 0, 0], [2, 2, 0, 0, 0]]
    p = [[1, 3, 0, 0, 0], [2, 0, 0, 0, 0], [2, 2, 1, 0, 0]]
    cm = step_confusion(y, p)
    assert cm.shape == (5, 4, 4) and cm.dtype.kind == "i"
    expected = np.zeros((5, 4, 4), dtype=np.int64)
    expected[0, 1, 1] = 1  # sample 1 slot 1: 1 -> 1
    expected[0, 1, 2] = 1  # sample 2 slot 1: 1 -> 2
    expected[0, 2, 2] = 1  # sample 3 slot 1: 2 -> 2
    expected[1, 2, 3] = 1  # 2 -> 3
    expected[1, 0, 0] = 1
    expected[1, 2, 2] = 1
    expected[2, 0, 0] = 2
    expected[2, 0, 1] = 1  # sample 3 slot 3: an extra step
    expected[3, 0, 0] = expected[4, 0, 0] = 3
    np.testing.assert_array_equal(cm, expected)
    # diagonal / rows = step accuracy
    acc = np.trace(cm, axis1=1, axis2=2) / cm.sum((1, 2))
    np.testing.assert_allclose(acc, step_accuracy(y, p))
    assert step_confusion(y, p, n_classes=6).shape == (5, 6, 6)
    with pytest.raises(MetricError, match="n_classes"):
        step_confusion(y, p, n_classes=3)


def test_majority_sequence_baseline():
    train = [[3, 0, 0, 0, 0], [1, 2, 0, 0, 0], [3, 0, 0, 0, 0], [0, 0, 0, 0, 0], [3, 0, 0, 0, 0]]
    pred = majority_sequence_baseline(train, np.zeros((4, 5), dtype=int))
    np.testing.assert_array_equal(pred, np.tile([3, 0, 0, 0, 0], (4, 1)))
    # a tie between [1,2,0,0,0] and [3,0,0,0,0] (2 each) goes to the lexicographically smallest
    tied = [[3, 0, 0, 0, 0], [1, 2, 0, 0, 0], [3, 0, 0, 0, 0], [1, 2, 0, 0, 0], [4, 0, 0, 0, 0]]
    pred = majority_sequence_baseline(tied, [[0, 0, 0, 0, 0]] * 2)
    np.testing.assert_array_equal(pred, [[1, 2, 0, 0, 0], [1, 2, 0, 0, 0]])
    test = np.array([[1, 2, 0, 0, 0], [3, 0, 0, 0, 0]])
    assert csm(test, majority_sequence_baseline(tied, test)) == 0.5


# --------------------------------------------------------------------------- bootstrap
def test_identical_inputs_give_zero_width_interval_at_one():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 6, size=(50, 5))
    r = sequence_metrics(y, y, groups=rng.integers(0, 10, 50), n_bootstrap=300)
    for name in ("fixed_acc", "adaptive_acc", "csm"):
        assert r["ci"][name] == [1.0, 1.0], name


def test_bootstrap_resamples_groups():
    # 20 samples in two groups whose errors are perfectly correlated: group "a" all right, "b"
    # all wrong. Resampling the two groups can give CSM 0, 1/2 or 1, so the interval is [0, 1];
    # resampling samples one by one pretends there are 20 independent trials.
    y = np.tile([1, 2, 0, 0, 0], (20, 1))
    p = y.copy()
    p[10:, 0] = 3
    groups = ["a"] * 10 + ["b"] * 10
    per_sample = sequence_metrics(y, p, n_bootstrap=1000, seed=1)["ci"]["csm"]
    by_group = sequence_metrics(y, p, groups=groups, n_bootstrap=1000, seed=1)
    assert by_group["n_groups"] == 2 and by_group["csm"] == 0.5
    assert by_group["ci"]["csm"] == [0.0, 1.0]
    assert by_group["ci"]["csm"][1] - by_group["ci"]["csm"][0] > per_sample[1] - per_sample[0]
    assert 0.0 < per_sample[0] < 0.5 < per_sample[1] < 1.0


def test_bootstrap_interval_is_reproducible_and_plausible():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 6, size=(2000, 5))
    p = y.copy()
    p[rng.random(2000) < 0.3, 0] = 7  # 30 % of the sequences wrong in their first slot
    a = sequence_metrics(y, p, n_bootstrap=1000, seed=5)
    b = sequence_metrics(y, p, n_bootstrap=1000, seed=5)
    assert a == b
    lo, hi = a["ci"]["csm"]
    se = np.sqrt(a["csm"] * (1 - a["csm"]) / 2000)  # binomial standard error
    assert lo < a["csm"] < hi
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.2)


# --------------------------------------------------------------------------- input checking
def test_sequence_input_errors():
    with pytest.raises(MetricError, match="non-integer.*1.5"):
        fixed_accuracy([[1, 0, 0, 0, 0]], [[1.5, 0, 0, 0, 0]])
    with pytest.raises(MetricError, match=r"shape \(N, 5\)"):
        fixed_accuracy([[1, 0, 0, 0]], [[1, 0, 0, 0]])
    with pytest.raises(MetricError, match="differ in shape"):
        csm([[1, 0, 0, 0, 0]], [[1, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    with pytest.raises(MetricError, match="ragged|cannot be read"):
        csm([[1, 0, 0, 0, 0], [1, 0]], [[1, 0, 0, 0, 0], [1, 0, 0, 0, 0]])
    with pytest.raises(MetricError, match="non-negative"):
        adaptive_accuracy([[1, 0, 0, 0, 0]], [[-1, 0, 0, 0, 0]])
    with pytest.raises(MetricError, match="empty"):
        csm(np.zeros((0, 5), int), np.zeros((0, 5), int))
    with pytest.raises(MetricError, match="integer"):
        csm([["a", "b", "c", "d", "e"]], [["a", "b", "c", "d", "e"]])
    with pytest.raises(MetricError, match="non-integer"):
        csm([[np.nan, 0, 0, 0, 0]], [[0, 0, 0, 0, 0]])
    with pytest.raises(MetricError, match="k must be"):
        csm_at_k(Y_EX, P_EX, 6)
    with pytest.raises(MetricError, match="one label per sample"):
        sequence_metrics(Y_EX, P_EX, groups=[0, 1])
    with pytest.raises(MetricError, match="level"):
        sequence_metrics(Y_EX, P_EX, level=95)
    with pytest.raises(MetricError, match="n_bootstrap"):
        sequence_metrics(Y_EX, P_EX, n_bootstrap=-1)


# --------------------------------------------------------------------------- recovery
def _images(n=3, h=24, w=20, seed=0, lo=0.0, hi=1.0):
    return np.random.default_rng(seed).uniform(lo, hi, size=(n, 3, h, w))


def test_psnr_known_answers():
    a = _images(lo=0.0, hi=0.9)
    np.testing.assert_allclose(psnr(a, a + 0.1), 20.0, atol=1e-9)
    np.testing.assert_allclose(psnr(torch.from_numpy(a), torch.from_numpy(a + 0.01)), 40.0, atol=1e-9)
    assert psnr(a, a).tolist() == [100.0] * 3  # identical images: the cap
    assert psnr(a, a, cap=60.0).tolist() == [60.0] * 3
    # max_val 255
    np.testing.assert_allclose(psnr(a * 255, a * 255 + 25.5, max_val=255.0), 20.0, atol=1e-9)


def test_ssim_known_answers_and_skimage_agreement():
    from skimage.metrics import structural_similarity

    a = _images(n=2, h=32, w=28)
    np.testing.assert_allclose(ssim(a, a), 1.0, atol=1e-9)
    assert (ssim(a, 1.0 - a) < 0.5).all()
    b = np.clip(a + np.random.default_rng(1).normal(0, 0.05, a.shape), 0, 1)
    ref = [structural_similarity(x, z, data_range=1.0, channel_axis=0, gaussian_weights=True,
                                 sigma=1.5, use_sample_covariance=False) for x, z in zip(a, b)]
    np.testing.assert_allclose(ssim(a, b), ref, atol=1e-6)
    assert ssim(torch.from_numpy(a).float(), torch.from_numpy(b).float()).shape == (2,)


def test_recovery_metrics_hand_case():
    o = _images(n=4, lo=0.2, hi=0.7, seed=2)
    forged = o + 0.1  # PSNR 20 for every image
    rec = np.stack([o[0] + 0.01, o[1] - 0.01, o[2] + 0.2, forged[3]])  # 40, 40, ~13.98, 20 dB
    r = recovery_metrics(rec, o, forged)
    p2 = 10 * np.log10(1 / 0.04)
    assert r["n"] == 4
    assert r["psnr"] == pytest.approx((40 + 40 + p2 + 20) / 4)
    assert r["psnr_forged"] == pytest.approx(20.0)
    assert r["psnr_gain"] == pytest.approx((20 + 20 + (p2 - 20) + 0) / 4)
    assert r["improved_frac"] == 0.5  # images 0 and 1; image 3 ties, image 2 is worse
    assert 0 < r["ssim_forged"] < 1 and 0 < r["ssim"] < 1
    only = recovery_metrics(o, o)
    assert only == {"psnr": 100.0, "ssim": pytest.approx(1.0), "n": 4}


def test_image_input_errors():
    a = _images()
    with pytest.raises(MetricError, match="uint8"):
        psnr((a * 255).astype(np.uint8), (a * 255).astype(np.uint8))
    with pytest.raises(MetricError, match="channel-last"):
        ssim(a.transpose(0, 2, 3, 1), a.transpose(0, 2, 3, 1))
    with pytest.raises(MetricError, match="differ in shape"):
        psnr(a, a[:2])
    with pytest.raises(MetricError, match="batch axis"):
        psnr(a[0], a[0])
    with pytest.raises(MetricError, match="outside"):
        psnr(a, a + 0.5)
    with pytest.raises(MetricError, match="at least 11x11"):
        ssim(a[:, :, :8, :8], a[:, :, :8, :8])


# --------------------------------------------------------------------------- identity (dlib)
def _needs_dlib():
    pytest.importorskip("dlib", reason="dlib is not installed (pip install dlib-bin)")
    for pkg in ("face_recognition_models", "gan_face_generate"):
        if importlib.util.find_spec(pkg) is None:
            pytest.skip(f"the package {pkg} is not installed")


def test_dlib_embedder_separates_identities():
    _needs_dlib()
    from scipy.ndimage import gaussian_filter

    from visec.data.synthetic.sources import gan_faces

    faces = gan_faces(2, seed=0)
    blurred = np.stack([np.clip(np.round(gaussian_filter(f.astype(np.float64), sigma=(0.7, 0.7, 0))),
                                0, 255).astype(np.uint8) for f in faces])
    emb = DlibFaceEmbedder()
    e = emb.embed(faces)
    assert e.shape == (2, 128) and np.isfinite(e).all()
    assert (np.linalg.norm(e, axis=1) > 0.5).all()
    self_sim = emb.identity_similarity(faces, faces)
    np.testing.assert_allclose(self_sim["distances"], 0.0, atol=1e-6)
    assert self_sim["match_frac"] == 1.0 and self_sim["threshold"] == 0.6
    blur = emb.identity_similarity(faces, blurred)["distances"]
    across = emb.identity_similarity(faces[:1], faces[1:])["distances"][0]
    assert (blur < across).all()
    with pytest.raises(MetricError, match="uint8"):
        emb.embed(faces.astype(np.float32))
    with pytest.raises(MetricError, match="different numbers"):
        emb.identity_similarity(faces, faces[:1])
