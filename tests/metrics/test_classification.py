"""Tests for visec.metrics.classification: known answers, sklearn agreement, bootstrap behaviour."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score

from visec.errors import MetricError
from visec.metrics import (
    accuracy,
    average_precision,
    binary_metrics,
    eer,
    format_metrics,
    roc_auc,
    video_scores,
)
from visec.metrics.classification import _weighted_stats

METRICS = ("auc", "eer", "ap", "acc", "acc_eer")


# --------------------------------------------------------------------------- reference EER
def reference_eer(labels, scores):
    """Literal, loop-based, exact (Fraction) implementation of the documented EER rule."""
    labels = [int(v) for v in labels]
    scores = [float(v) for v in scores]
    n_pos = sum(labels)
    n_neg = len(labels) - n_pos
    thresholds = sorted(set(scores), reverse=True)
    points = [(Fraction(0), Fraction(1), math.inf)]  # (FPR, FNR, threshold) at threshold +inf
    for t in thresholds:
        tp = sum(1 for y, s in zip(labels, scores) if y == 1 and s >= t)
        fp = sum(1 for y, s in zip(labels, scores) if y == 0 and s >= t)
        points.append((Fraction(fp, n_neg), 1 - Fraction(tp, n_pos), t))
    for k in range(1, len(points)):
        fpr, fnr, t = points[k]
        if fnr <= fpr:
            fpr0, fnr0, _ = points[k - 1]
            d0, d1 = fnr0 - fpr0, fnr - fpr
            a = d0 / (d0 - d1)
            return fpr0 + a * (fpr - fpr0), fnr0 + a * (fnr - fnr0), t
    raise AssertionError("unreachable: the last ROC point has FNR = 0 <= FPR = 1")


# --------------------------------------------------------------------------- hand-computed cases
# (labels, scores, auc, ap, eer, eer_threshold, acc@0.5, acc@eer), all worked out by hand.
HAND_CASES = [
    # distinct scores; at t=0.4: FPR=1/2, FNR=1/2 exactly -> EER 0.5, no interpolation
    ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75, 5 / 6, 0.5, 0.4, 0.75, 0.5),
    # fake/real tie at 0.5: pairs (0.5>0.2)=1, (0.5=0.5)=1/2, (0.9>.)=2 -> AUC 3.5/4.
    # ROC: (0,1) -> t=.9 (FPR 0, FNR 1/2) -> t=.5 (FPR 1/2, FNR 0): crossing at a=1/2, EER 1/4.
    # AP: t=.9 P=1 R=1/2; t=.5 P=2/3 R=1 -> 1/2 + 1/2*2/3.
    ([0, 0, 1, 1], [0.2, 0.5, 0.5, 0.9], 0.875, 5 / 6, 0.25, 0.5, 0.75, 0.75),
    # 3 real (.1 .3 .6), 2 fake (.5 .8): t=.8 (0, 1/2) d=1/2; t=.6 (1/3, 1/2) d=1/6;
    # t=.5 (1/3, 0) d=-1/3 -> vertical segment at FPR 1/3: EER 1/3, threshold .5.
    ([0, 0, 0, 1, 1], [0.1, 0.3, 0.6, 0.5, 0.8], 5 / 6, 5 / 6, 1 / 3, 0.5, 0.8, 0.8),
    # perfectly separable: at t=.7 FPR=0 and FNR=0 -> EER 0, threshold = lowest fake score
    ([0, 0, 1, 1], [0.1, 0.2, 0.7, 0.9], 1.0, 1.0, 0.0, 0.7, 1.0, 1.0),
    # perfectly inverted: t=.9 (1/2, 1); t=.7 (1, 1) d=0 -> EER 1, threshold = lowest real score.
    # AP: t=.2 P=1/3 R=1/2; t=.1 P=1/2 R=1 -> 1/6 + 1/4 = 5/12
    ([1, 1, 0, 0], [0.1, 0.2, 0.7, 0.9], 0.0, 5 / 12, 1.0, 0.7, 0.0, 0.0),
    # every score tied: (0,1) -> (1,0): EER 1/2 at that score; AP = prevalence
    ([0, 1, 0, 1, 1], [0.3] * 5, 0.5, 0.6, 0.5, 0.3, 0.4, 0.6),
]


@pytest.mark.parametrize("case", HAND_CASES, ids=lambda c: str(c[1]))
def test_hand_computed(case):
    y, s, auc, ap, e, thr, acc, acc_e = case
    assert roc_auc(y, s) == pytest.approx(auc, abs=1e-12)
    assert average_precision(y, s) == pytest.approx(ap, abs=1e-12)
    got_e, got_thr = eer(y, s)
    assert got_e == pytest.approx(e, abs=1e-12)
    assert got_thr == thr
    assert accuracy(y, s) == pytest.approx(acc, abs=1e-12)
    assert accuracy(y, s, threshold=got_thr) == pytest.approx(acc_e, abs=1e-12)
    m = binary_metrics(y, s, n_bootstrap=0)["frame"]
    for name, want in zip(METRICS, (auc, e, ap, acc, acc_e)):
        assert m[name]["value"] == pytest.approx(want, abs=1e-12), name
        assert m[name]["ci"] is None
    assert m["eer_threshold"] == thr
    assert (m["n"], m["n_real"], m["n_fake"]) == (len(y), len(y) - sum(y), sum(y))


def test_hand_cases_match_sklearn_and_reference():
    # guards the hand-computed table itself
    for y, s, auc, ap, e, thr, *_ in HAND_CASES:
        assert roc_auc_score(y, s) == pytest.approx(auc)
        assert average_precision_score(y, s) == pytest.approx(ap)
        ref_fpr, ref_fnr, ref_t = reference_eer(y, s)
        assert float(ref_fpr) == pytest.approx(e) and float(ref_fnr) == pytest.approx(e)
        assert ref_t == thr


def test_accuracy_threshold_is_inclusive():
    assert accuracy([1, 0], [0.5, 0.49]) == 1.0
    assert accuracy([0, 0], [0.5, 0.49]) == 0.5  # single class is fine for accuracy
    assert accuracy([1, 0], [0.5, 0.49], threshold=0.6) == 0.5


def test_any_real_scores_accepted():
    y = [0, 1, 0, 1]
    s = [-3.0, 7.5, 2, 1e6]
    assert roc_auc(y, s) == 1.0
    assert roc_auc(np.array(y, dtype=bool), np.array([-3, 7, 2, 10**6])) == 1.0
    assert eer(y, s) == (0.0, 7.5)


# --------------------------------------------------------------------------- sklearn agreement
labelled = st.integers(min_value=2, max_value=40).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 1), min_size=n, max_size=n),
        st.one_of(
            st.lists(st.integers(0, 4).map(lambda v: v / 4), min_size=n, max_size=n),  # many ties
            st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=n, max_size=n),
        ),
    )
).filter(lambda t: 0 < sum(t[0]) < len(t[0]))


@settings(max_examples=150, deadline=None)
@given(labelled)
def test_auc_ap_match_sklearn(data):
    y, s = data
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)


@settings(max_examples=150, deadline=None)
@given(labelled)
def test_eer_matches_reference_definition(data):
    y, s = data
    value, thr = eer(y, s)
    ref_fpr, ref_fnr, ref_t = reference_eer(y, s)
    assert value == pytest.approx(float(ref_fpr), abs=1e-12)
    assert value == pytest.approx(float(ref_fnr), abs=1e-12)
    assert thr == ref_t
    assert 0.0 <= value <= 1.0


def test_sklearn_large_random_with_ties():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 5000)
    s = np.round(rng.normal(y * 0.7, 1.0), 1)  # ~60 distinct values: heavy ties
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(labelled, st.integers(0, 2**32 - 1))
def test_weighted_formulas_equal_metrics_on_repeated_data(data, seed):
    """The vectorised bootstrap statistics equal the metrics of the explicitly resampled data."""
    y, s = np.array(data[0]), np.array(data[1], dtype=float)
    rng = np.random.default_rng(seed)
    w = rng.integers(0, 4, size=(5, len(y)))
    stats = _weighted_stats(y, s, w)
    for b in range(w.shape[0]):
        yr, sr = np.repeat(y, w[b]), np.repeat(s, w[b])
        if yr.size == 0 or yr.min() == yr.max():
            assert not stats["valid"][b]
            continue
        assert stats["valid"][b]
        assert stats["auc"][b] == pytest.approx(roc_auc_score(yr, sr), abs=1e-12)
        assert stats["ap"][b] == pytest.approx(average_precision_score(yr, sr), abs=1e-12)
        e, t = eer(yr, sr)
        assert stats["eer"][b] == pytest.approx(e, abs=1e-12)
        assert stats["eer_threshold"][b] == t
        assert stats["acc"][b] == pytest.approx(accuracy(yr, sr), abs=1e-12)
        assert stats["acc_eer"][b] == pytest.approx(accuracy(yr, sr, t), abs=1e-12)


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("fn", [roc_auc, average_precision, eer])
@pytest.mark.parametrize("y", [[1, 1, 1], [0, 0], [1]])
def test_single_class_raises(fn, y):
    with pytest.raises(MetricError, match="undefined: the labels hold only class"):
        fn(y, [0.2] * len(y))


def test_single_class_message_exact():
    with pytest.raises(MetricError) as exc:
        roc_auc([1, 1], [0.1, 0.9])
    assert str(exc.value) == ("AUC is undefined: the labels hold only class 1 (fake); "
                              "evaluation needs both real and fake samples")
    assert isinstance(exc.value, ValueError)
    with pytest.raises(MetricError, match="only class 0 \\(real\\)"):
        binary_metrics([0, 0], [0.1, 0.9])
    with pytest.raises(MetricError, match="frame-level AUC is undefined"):
        binary_metrics([1, 1, 1], [0.1, 0.2, 0.3], ["a", "a", "b"])


@pytest.mark.parametrize(
    "y, s, pattern",
    [
        ([], [], "empty"),
        ([0, 1], [0.5], "differ in length"),
        ([0, 1, 1], [0.1, np.nan, 0.3], "non-finite"),
        ([0, 1, 1], [0.1, np.inf, 0.3], "non-finite"),
        ([0, 2, 1], [0.1, 0.2, 0.3], "0 \\(real\\) or 1 \\(fake\\)"),
        ([0, -1, 1], [0.1, 0.2, 0.3], "0 \\(real\\) or 1 \\(fake\\)"),
        ([0, 0.5, 1], [0.1, 0.2, 0.3], "0 \\(real\\) or 1 \\(fake\\)"),
        ([0, np.nan, 1], [0.1, 0.2, 0.3], "0 \\(real\\) or 1 \\(fake\\)"),
        (["real", "fake"], [0.1, 0.2], "numeric"),
        ([[0, 1]], [[0.1, 0.2]], "1-D"),
    ],
)
def test_bad_input_raises(y, s, pattern):
    for fn in (roc_auc, average_precision, eer, accuracy, binary_metrics):
        with pytest.raises(MetricError, match=pattern):
            fn(y, s)


def test_bad_bootstrap_arguments():
    y, s = [0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8]
    with pytest.raises(MetricError, match="n_bootstrap"):
        binary_metrics(y, s, n_bootstrap=-1)
    with pytest.raises(MetricError, match="ci must"):
        binary_metrics(y, s, ci=95)
    with pytest.raises(MetricError, match="differ in length"):
        binary_metrics(y, s, ["a", "b"])


@settings(max_examples=40, deadline=None)
@given(labelled)
def test_never_nan(data):
    y, s = data
    out = binary_metrics(y, s, n_bootstrap=20, seed=3)
    for name in METRICS:
        m = out["frame"][name]
        assert math.isfinite(m["value"])
        if m["ci"] is not None:
            assert all(math.isfinite(v) for v in m["ci"])
            assert m["ci"][0] <= m["ci"][1]
    json.dumps(out)  # plain Python types only


# --------------------------------------------------------------------------- video aggregation
def test_video_scores_known_answer():
    ids = ["b", "a", "b", "a", "c"]
    y = [1, 0, 1, 0, 1]
    s = [0.2, 0.4, 0.6, 0.8, 0.5]
    y_v, s_v, ids_v = video_scores(y, s, ids)
    assert ids_v.tolist() == ["a", "b", "c"]
    assert y_v.tolist() == [0, 1, 1]
    np.testing.assert_allclose(s_v, [0.6, 0.4, 0.5])


def test_video_scores_integer_ids_sorted():
    y_v, s_v, ids_v = video_scores([0, 1, 1, 0], [0.0, 1.0, 0.5, 0.25], [10, 2, 2, 10])
    assert ids_v.tolist() == [2, 10]
    assert y_v.tolist() == [1, 0]
    np.testing.assert_allclose(s_v, [0.75, 0.125])


def test_video_scores_mixed_labels_raise():
    with pytest.raises(MetricError, match="both real and fake frames: 'v1'"):
        video_scores([0, 1, 1], [0.1, 0.2, 0.3], ["v1", "v1", "v2"])


def test_binary_metrics_video_level_uses_mean_scores():
    ids = ["a", "a", "b", "b", "c", "c", "d"]
    y = [0, 0, 0, 0, 1, 1, 1]
    s = [0.1, 0.9, 0.3, 0.3, 0.4, 0.8, 0.2]
    # video means: a .5 (real), b .3 (real), c .6 (fake), d .2 (fake)
    out = binary_metrics(y, s, ids, n_bootstrap=0)
    video = out["video"]
    assert (video["n"], video["n_real"], video["n_fake"]) == (4, 2, 2)
    assert video["auc"]["value"] == pytest.approx(roc_auc([0, 0, 1, 1], [0.5, 0.3, 0.6, 0.2]))
    assert video["auc"]["value"] == pytest.approx(0.5)
    assert out["frame"]["auc"]["value"] == pytest.approx(roc_auc_score(y, s))
    assert out["frame"]["n"] == 7
    assert "video" not in binary_metrics(y, s, n_bootstrap=0)


# --------------------------------------------------------------------------- bootstrap
def _synthetic(n, seed=0, shift=1.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.round(1 / (1 + np.exp(-rng.normal(y * shift - shift / 2, 1.0))), 2)
    return y, s


def test_bootstrap_deterministic_with_seed():
    y, s = _synthetic(300)
    a = binary_metrics(y, s, n_bootstrap=200, seed=7)
    b = binary_metrics(y, s, n_bootstrap=200, seed=7)
    c = binary_metrics(y, s, n_bootstrap=200, seed=8)
    assert a == b
    assert a["frame"]["auc"]["ci"] != c["frame"]["auc"]["ci"]


def test_ci_contains_point_estimate():
    y, s = _synthetic(500, seed=2)
    out = binary_metrics(y, s, n_bootstrap=500, seed=0)["frame"]
    for name in METRICS:
        lo, hi = out[name]["ci"]
        assert lo <= out[name]["value"] <= hi, name
        assert lo < hi, name
    assert out["bootstrap_skipped"] == 0


def test_ci_width_shrinks_with_n():
    widths = []
    for n in (100, 2500):
        y, s = _synthetic(n, seed=n)
        ci = binary_metrics(y, s, n_bootstrap=300, seed=0)["frame"]
        widths.append({k: ci[k]["ci"][1] - ci[k]["ci"][0] for k in METRICS})
    for k in METRICS:
        # 25x the data: widths should shrink ~5x; demand at least 2.5x
        assert widths[1][k] < widths[0][k] / 2.5, k


def test_ci_level_orders_intervals():
    y, s = _synthetic(400, seed=5)
    narrow = binary_metrics(y, s, n_bootstrap=300, ci=0.5, seed=1)["frame"]["auc"]["ci"]
    wide = binary_metrics(y, s, n_bootstrap=300, ci=0.99, seed=1)["frame"]["auc"]["ci"]
    assert wide[0] < narrow[0] < narrow[1] < wide[1]


def test_bootstrap_skipped_single_class_resamples():
    # 1 real + 1 fake: half the resamples hold one class only (P = 2 * 1/4)
    out = binary_metrics([0, 1], [0.2, 0.8], n_bootstrap=1000, seed=0)["frame"]
    assert 400 < out["bootstrap_skipped"] < 600
    assert out["auc"]["ci"] == [1.0, 1.0]  # every valid resample is perfectly separated
    assert out["eer"]["ci"] == [0.0, 0.0]
    assert binary_metrics([0, 1], [0.2, 0.8], n_bootstrap=0)["frame"]["bootstrap_skipped"] == 0


def test_all_resamples_skipped_gives_none():
    # with n_bootstrap=1 the one resample may be single-class; then no interval, no NaN
    for seed in range(20):
        out = binary_metrics([0, 1], [0.2, 0.8], n_bootstrap=1, seed=seed)["frame"]
        if out["bootstrap_skipped"] == 1:
            assert all(out[k]["ci"] is None for k in METRICS)
            return
    pytest.fail("no seed in 0..19 gave a single-class resample")  # pragma: no cover


def _clustered(n_videos, frames, seed=0):
    rng = np.random.default_rng(seed)
    y_v = rng.integers(0, 2, n_videos)
    y_v[:2] = [0, 1]
    s_v = np.round(1 / (1 + np.exp(-rng.normal(y_v - 0.5, 1.0))), 3)
    ids = np.repeat(np.arange(n_videos), frames)
    return y_v, s_v, np.repeat(y_v, frames), np.repeat(s_v, frames), ids


def test_cluster_bootstrap_resamples_videos():
    # every frame of a video carries the video's score: frames add no information, so the frame
    # level cluster bootstrap must give exactly the video-level intervals (same seed, same draws),
    # while an i.i.d. frame bootstrap (no video ids) is far too narrow.
    y_v, s_v, y, s, ids = _clustered(60, frames=20)
    out = binary_metrics(y, s, ids, n_bootstrap=300, seed=4)
    frame, video = out["frame"], out["video"]
    for name in METRICS:
        assert frame[name]["value"] == pytest.approx(video[name]["value"], abs=1e-12), name
        np.testing.assert_allclose(frame[name]["ci"], video[name]["ci"], atol=1e-12, err_msg=name)
    assert frame["n"] == 1200 and video["n"] == 60
    iid = binary_metrics(y, s, n_bootstrap=300, seed=4)["frame"]["auc"]["ci"]
    cluster = frame["auc"]["ci"]
    assert (iid[1] - iid[0]) < 0.5 * (cluster[1] - cluster[0])


def test_cluster_bootstrap_with_singleton_videos_is_iid():
    y, s = _synthetic(200, seed=9)
    with_ids = binary_metrics(y, s, np.arange(200), n_bootstrap=100, seed=2)["frame"]
    without = binary_metrics(y, s, n_bootstrap=100, seed=2)["frame"]
    assert with_ids == without


def test_bootstrap_chunking_does_not_matter(monkeypatch):
    import visec.metrics.classification as cls

    y, s = _synthetic(150, seed=11)
    ref = binary_metrics(y, s, n_bootstrap=50, seed=0)
    monkeypatch.setattr(cls, "_CHUNK_ELEMENTS", 1)  # one resample per chunk
    assert binary_metrics(y, s, n_bootstrap=50, seed=0) == ref


# --------------------------------------------------------------------------- formatting
def test_format_metrics():
    y_v, s_v, y, s, ids = _clustered(30, frames=3, seed=1)
    out = binary_metrics(y, s, ids, n_bootstrap=50, seed=0)
    text = format_metrics(out)
    assert "\n" not in text
    frame_part, video_part = text.split(" | ")
    assert frame_part.startswith("frame AUC ")
    assert video_part.startswith("video AUC ")
    for token in ("EER", "AP", "ACC", "ACC@EER", "(n=90:", "(n=30:"):
        assert token in text
    lo, hi = out["frame"]["auc"]["ci"]
    assert f"AUC {out['frame']['auc']['value']:.3f} [{lo:.3f}, {hi:.3f}]" in frame_part
    no_ci = format_metrics(binary_metrics([0, 1], [0.1, 0.9], n_bootstrap=0))
    assert no_ci.startswith("frame AUC 1.000  EER 0.000") and "[" not in no_ci


# -- paired comparison (model A minus model B on the same images) -----------------------------------------
def test_paired_difference_of_identical_scores_is_zero_with_a_zero_width_interval():
    from visec.metrics import paired_difference

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 40)
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    vids = np.repeat(np.arange(20), 4)
    out = paired_difference(y, s, s.copy(), vids, n_bootstrap=300)
    for level in ("frame", "video"):
        for name in ("auc", "eer", "ap", "acc", "acc_eer"):
            m = out[level][name]
            assert m["diff"] == 0.0 and m["ci"] == [0.0, 0.0] and m["a"] == m["b"]


def test_paired_difference_of_a_constant_gap_is_that_gap_on_every_resample():
    """A perfect model against the worst one: AUC differs by exactly 1 on every resample."""
    from visec.metrics import paired_difference

    y = np.repeat([0, 1], 30)
    out = paired_difference(y, y.astype(float), 1.0 - y, n_bootstrap=200)["frame"]
    assert out["auc"]["a"] == 1.0 and out["auc"]["b"] == 0.0
    assert out["auc"]["diff"] == 1.0 and out["auc"]["ci"] == [1.0, 1.0]


def test_paired_interval_is_narrower_than_the_unpaired_one_when_errors_are_shared():
    """Two models that find the same videos hard: the difference's paired interval is far narrower
    than the two separate intervals laid side by side (what pairing the resamples is for)."""
    from visec.metrics import binary_metrics, paired_difference

    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 200)
    vids = np.repeat(np.arange(100), 4)
    hard = rng.normal(0, 0.25, 100)[vids]  # per-video difficulty both models share
    sa = 0.4 * y + hard + rng.normal(0, 0.05, 400)
    sb = sa - 0.02 * y  # B: slightly weaker on every fake
    paired = paired_difference(y, sa, sb, vids, n_bootstrap=400)["frame"]["auc"]
    a = binary_metrics(y, sa, vids, n_bootstrap=400)["frame"]["auc"]["ci"]
    b = binary_metrics(y, sb, vids, n_bootstrap=400)["frame"]["auc"]["ci"]
    assert paired["diff"] > 0 and paired["ci"][0] > 0  # the paired interval sees B is weaker
    assert a[0] < b[1]  # while the two separate intervals overlap
    assert (paired["ci"][1] - paired["ci"][0]) < 0.25 * (a[1] - a[0])


def test_paired_difference_refuses_scores_of_another_length():
    from visec.errors import MetricError
    from visec.metrics import paired_difference

    with pytest.raises(MetricError, match="differ in length"):
        paired_difference([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8], [0.1, 0.9, 0.2])
