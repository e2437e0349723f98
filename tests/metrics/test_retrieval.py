"""Retrieval metrics: known answers of the research notes (VOC AP, truncation, class-balanced
means, the two Prec@K), agreement with scikit-learn and with a plain per-query reference, the
chunked embedding path against the full distance matrix, and the tie rule."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from visec.errors import MetricError, VisecError
from visec.metrics import ranked_average_precision, retrieval_metrics, retrieval_per_query
from visec.metrics.retrieval import average_precision


# --------------------------------------------------------------------------- helpers
def ranking_dist(relevance: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One query of label 1 whose gallery, ranked by distance, has the given relevance."""
    n = len(relevance)
    return np.array([1]), np.array(relevance), np.arange(n, dtype=np.float32)[None, :]


def reference_per_query(dist, qlabels, glabels, ks, map_at, precision, interpolation):
    """Plain Python: sort (distance, gallery index), then the definitions of the notes."""
    out = {"ap@all": [], **{f"ap@{k}": [] for k in map_at}, **{f"p@{k}": [] for k in ks}}

    def ap(rel, n_pos):
        if n_pos == 0:
            return 0.0
        prec = [sum(rel[: r + 1]) / (r + 1) for r in range(len(rel))]
        total = 0.0
        for r, hit in enumerate(rel):
            if hit:
                total += max(prec[r:]) if interpolation == "voc" else prec[r]
        return total / n_pos

    for i, ql in enumerate(qlabels):
        order = sorted(range(len(glabels)), key=lambda j: (float(dist[i][j]), j))
        rel = [int(glabels[j] == ql) for j in order]
        n_pos = sum(rel)
        out["ap@all"].append(ap(rel, n_pos))
        for k in map_at:
            out[f"ap@{k}"].append(ap(rel[:k], min(k, n_pos)))
        for k in ks:
            denom = k if precision == "sake" else min(k, n_pos)
            out[f"p@{k}"].append(sum(rel[:k]) / denom if denom else 0.0)
    return {key: np.array(v) for key, v in out.items()}


def integer_embeddings(rng, n, dim=6, low=-2, high=3):
    """Small integers: every distance formula is exact in float32, and ties are frequent."""
    return rng.integers(low, high, size=(n, dim)).astype(np.float32)


# --------------------------------------------------------------------------- AP known answers
@pytest.mark.parametrize("rel,voc,plain", [([1, 0, 1, 0], 5 / 6, 5 / 6), ([0, 1, 1], 2 / 3, 7 / 12),
                                           ([0, 0, 1], 1 / 3, 1 / 3), ([1, 1, 1], 1.0, 1.0)])
def test_average_precision_known_answers(rel, voc, plain):
    assert average_precision(rel)[0] == pytest.approx(voc, abs=1e-12)
    assert average_precision(rel, interpolation="none")[0] == pytest.approx(plain, abs=1e-12)
    # the same through the full pipeline (ranking by distance)
    ql, gl, d = ranking_dist(rel)
    assert retrieval_metrics(ql, gl, dist=d, ks=(), map_at=())["map@all"] == pytest.approx(voc, abs=1e-12)


def test_average_precision_rows_and_zero_positive_convention():
    rel = np.array([[1, 0, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=bool)
    np.testing.assert_allclose(average_precision(rel), [5 / 6, 2 / 3, 0.0], atol=1e-12)
    assert ranked_average_precision is average_precision  # the exported, non-clashing name


def test_truncated_ap_uses_min_k_npos():
    # [0,1,1] truncated at 2: n_pos = min(2, 2) = 2, recall reaches 1/2 at precision 1/2 -> 0.25
    assert average_precision([[0, 1]], n_pos=[2])[0] == pytest.approx(0.25)
    ql, gl, d = ranking_dist([0, 1, 1])
    assert retrieval_metrics(ql, gl, dist=d, ks=(), map_at=(2,))["map@2"] == pytest.approx(0.25)
    # n_pos = 4 > K = 2 and both top items relevant: n_pos := min(2, 4) = 2, so AP@2 = 1 (not 0.5)
    ql, gl, d = ranking_dist([1, 1, 0, 1, 1])
    assert retrieval_metrics(ql, gl, dist=d, ks=(), map_at=(2,))["map@2"] == pytest.approx(1.0)


def test_ap_agrees_with_sklearn_without_ties():
    rng = np.random.default_rng(0)
    for case in range(20):
        n = int(rng.integers(2, 80))
        y = rng.integers(0, 2, n)
        y[rng.integers(n)] = 1  # at least one positive
        scores = rng.permutation(n).astype(np.float64) + rng.random(n) * 0.5  # no ties
        expected = average_precision_score(y, scores)
        rel = y[np.argsort(-scores)]
        assert average_precision(rel, interpolation="none")[0] == pytest.approx(expected, abs=1e-12), case
        # through the ranking: distance = -score, the query's label is 1
        got = retrieval_per_query([1], y, dist=-scores[None, :], ks=(), map_at=(), interpolation="none")
        assert got["ap@all"][0] == pytest.approx(expected, abs=1e-12), case
        assert average_precision(rel)[0] >= expected - 1e-12  # VOC never below plain AP


# --------------------------------------------------------------------------- averaging, Prec@K
def test_class_versus_query_balanced_means():
    # class A: one query, its item ranks first (AP 1). Class B: three queries, no B item in the
    # gallery (AP 0 by convention). Class-balanced 0.5, query-balanced 0.25.
    ql = np.array(["A", "B", "B", "B"])
    gl = np.array(["A", "C", "C"])
    d = np.tile(np.array([0.0, 1.0, 2.0], dtype=np.float32), (4, 1))
    kw = dict(dist=d, ks=(2,), map_at=())
    assert retrieval_metrics(ql, gl, averaging="class", **kw)["map@all"] == pytest.approx(0.5)
    assert retrieval_metrics(ql, gl, averaging="query", **kw)["map@all"] == pytest.approx(0.25)
    per = retrieval_per_query(ql, gl, precision="zse", **kw)
    np.testing.assert_array_equal(per["n_pos"], [1, 0, 0, 0])
    np.testing.assert_array_equal(per["ap@all"], [1, 0, 0, 0])
    np.testing.assert_array_equal(per["p@2"], [1, 0, 0, 0])  # zse with n_pos = 0: 0, not NaN
    # with non-zero APs: A -> 1.0; B -> 1/2, 1/2, 1/3 (its only item ranks 2, 2, 3)
    gl2 = np.array(["A", "B", "C"])
    d2 = np.array([[0, 1, 2], [0, 1, 2], [1, 0.5, 0], [0, 2, 1]], dtype=np.float32)
    m_class = retrieval_metrics(ql, gl2, dist=d2, ks=(), map_at=(), averaging="class")
    m_query = retrieval_metrics(ql, gl2, dist=d2, ks=(), map_at=(), averaging="query")
    assert m_class["map@all"] == pytest.approx((1 + (1 / 2 + 1 / 2 + 1 / 3) / 3) / 2)
    assert m_query["map@all"] == pytest.approx((1 + 1 / 2 + 1 / 2 + 1 / 3) / 4)
    assert m_class["n_queries"] == 4


def test_precision_at_k_sake_versus_zse():
    ql, gl, d = ranking_dist([1, 0, 0])
    assert retrieval_metrics(ql, gl, dist=d, ks=(2,), map_at=(), precision="sake")["p@2"] == pytest.approx(0.5)
    assert retrieval_metrics(ql, gl, dist=d, ks=(2,), map_at=(), precision="zse")["p@2"] == pytest.approx(1.0)
    # they agree when n_pos >= K
    ql, gl, d = ranking_dist([1, 0, 1, 1])
    for precision in ("sake", "zse"):
        assert retrieval_metrics(ql, gl, dist=d, ks=(2,), map_at=(), precision=precision)["p@2"] == 0.5


def test_keys_follow_ks_and_map_at():
    ql, gl, d = ranking_dist([1, 0, 1, 0])
    m = retrieval_metrics(ql, gl, dist=d, ks=(1, 3), map_at=(2,))
    assert set(m) == {"map@all", "map@2", "p@1", "p@3", "n_queries"}
    assert m["p@1"] == 1.0 and m["p@3"] == pytest.approx(2 / 3) and m["n_queries"] == 1
    assert set(retrieval_metrics(ql, gl, dist=d)) == {"map@all", "map@200", "p@100", "p@200", "n_queries"}


# --------------------------------------------------------------------------- ties, paths
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_ties_break_by_gallery_index(dtype):
    d = np.zeros((2, 300), dtype=dtype)  # all 300 items tied (long enough for any sort algorithm)
    d[:, 100] = 1  # one item further away
    gl = np.zeros(300, dtype=int)
    gl[[0, 299]] = [1, 2]
    per = retrieval_per_query([1, 2], gl, dist=d, ks=(1,), map_at=())
    np.testing.assert_allclose(per["ap@all"], [1.0, 1 / 299])  # item 0 ranks 1st, item 299 ranks 299th
    np.testing.assert_array_equal(per["p@1"], [1.0, 0.0])


def test_ties_by_index_with_negative_and_signed_zero_distances():
    # -0.0 and +0.0 are equal (tie -> index), negatives rank before both
    d = np.array([[0.0, -0.0, -1.0, -0.5]], dtype=np.float32)
    for label, expected in ((0, 1 / 3), (1, 1 / 4), (2, 1.0), (3, 1 / 2)):
        gl = np.full(4, 9)
        gl[label] = 5
        got = retrieval_per_query([5], gl, dist=d, ks=(), map_at=())["ap@all"][0]
        assert got == pytest.approx(expected), label
        got64 = retrieval_per_query([5], gl, dist=d.astype(np.float64), ks=(), map_at=())["ap@all"][0]
        assert got64 == pytest.approx(expected), label


def test_ties_by_index_on_the_embedding_path():
    gallery = np.array([[1, 0], [0, 1], [0, 1], [1, 0]], dtype=np.float32)  # two tied pairs
    per = retrieval_per_query([7, 8], [8, 9, 9, 7], queries=gallery[[0, 1]], gallery=gallery,
                              ks=(1,), map_at=())
    # query 0 ties items 0 (label 8) and 3 (label 7): item 3 ranks 2nd; query 1 finds item 0 3rd
    np.testing.assert_allclose(per["ap@all"], [0.5, 1 / 3])


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_chunked_embedding_path_equals_full_matrix_and_reference(metric):
    rng = np.random.default_rng(1)
    nq, ng = 37, 53
    if metric == "euclidean":
        q, g = integer_embeddings(rng, nq), integer_embeddings(rng, ng)
        full = np.sqrt(((q[:, None, :] - g[None, :, :]) ** 2).sum(-1))
    else:  # four +-1 entries per row: norm 2, so every cosine is exact
        def signs(n):
            x = np.zeros((n, 8), dtype=np.float32)
            for row in x:
                row[rng.choice(8, 4, replace=False)] = rng.choice([-1.0, 1.0], 4)
            return x
        q, g = signs(nq), signs(ng)
        full = 1.0 - (q @ g.T) / 4.0
    ql, gl = rng.integers(0, 4, nq), rng.integers(0, 4, ng)
    gl[:3] = [0, 1, 2]
    ql[0] = 7  # a query class missing from the gallery
    assert len(np.unique(full)) < full.size / 4  # many ties
    for precision in ("sake", "zse"):
        for interpolation in ("voc", "none"):
            kw = dict(ks=(1, 5, 80), map_at=(3, 10), precision=precision, interpolation=interpolation)
            want = reference_per_query(full, ql, gl, kw["ks"], kw["map_at"], precision, interpolation)
            by_matrix = retrieval_per_query(ql, gl, dist=full, **kw)
            by_matrix64 = retrieval_per_query(ql, gl, dist=full.astype(np.float64), **kw)
            for key, value in want.items():
                np.testing.assert_allclose(by_matrix[key], value, rtol=0, atol=1e-12, err_msg=key)
                np.testing.assert_array_equal(by_matrix64[key], by_matrix[key], err_msg=key)
            for chunk in (1, 5, 8, 36, 37, 100):
                by_chunks = retrieval_per_query(ql, gl, queries=q, gallery=g, metric=metric, chunk=chunk, **kw)
                for key in by_matrix:
                    np.testing.assert_array_equal(by_chunks[key], by_matrix[key], err_msg=f"{key} chunk {chunk}")
    # averages go through the same path
    m1 = retrieval_metrics(ql, gl, queries=q, gallery=g, metric=metric, chunk=5)
    m2 = retrieval_metrics(ql, gl, dist=full)
    assert m1 == m2


def test_map_is_one_when_every_relevant_item_ranks_first():
    rng = np.random.default_rng(2)
    centres = rng.standard_normal((5, 16)).astype(np.float32) * 5
    gl = rng.integers(0, 5, 60)
    gl[:5] = np.arange(5)
    gallery = centres[gl] + rng.standard_normal((60, 16)).astype(np.float32) * 0.01
    ql = np.repeat(np.arange(5), 3)
    m = retrieval_metrics(ql, gl, queries=centres[ql], gallery=gallery, ks=(3,), map_at=(2, 100),
                          precision="zse")
    assert m["map@all"] == pytest.approx(1.0) and m["map@2"] == pytest.approx(1.0)
    assert m["map@100"] == pytest.approx(1.0) and m["p@3"] == pytest.approx(1.0)
    # and a wrong label map (every query looks for the next class) is far from 1
    assert retrieval_metrics((ql + 1) % 5, gl, queries=centres[ql], gallery=gallery)["map@all"] < 0.5


# --------------------------------------------------------------------------- input checking
@pytest.mark.parametrize("kwargs,message", [
    (dict(dist=np.zeros((2, 3))), "shape"),
    (dict(dist=np.zeros((2, 4)), ks=(-1,)), "positive"),
    (dict(dist=np.zeros((2, 4)), map_at=(0,)), "positive"),
    (dict(dist=np.zeros((2, 4)), chunk=0), "chunk"),
    (dict(dist=np.full((2, 4), np.nan)), "NaN"),
    (dict(dist=np.zeros((2, 4)), averaging="mean"), "averaging"),
    (dict(dist=np.zeros((2, 4)), precision="x"), "precision"),
    (dict(dist=np.zeros((2, 4)), interpolation="x"), "interpolation"),
    (dict(dist=np.zeros((2, 4)), queries=np.zeros((2, 3)), gallery=np.zeros((4, 3))), "not both"),
    (dict(), "either"),
    (dict(queries=np.zeros((2, 3)), gallery=np.zeros((4, 2))), "dimension"),
    (dict(queries=np.zeros((2, 3)), gallery=np.zeros((5, 3))), "gallery has 5 rows"),
    (dict(queries=np.zeros((2, 3)), gallery=np.ones((4, 3)), metric="cosine"), "all-zero"),
    (dict(queries=np.zeros((2, 3)), gallery=np.ones((4, 3)), metric="l1"), "metric"),
])
def test_invalid_inputs_raise_one_line_errors(kwargs, message):
    with pytest.raises(MetricError, match=message) as info:
        retrieval_metrics([0, 1], [0, 1, 0, 1], **kwargs)
    assert isinstance(info.value, (ValueError, VisecError)) and "\n" not in str(info.value)


def test_invalid_labels_and_relevance():
    with pytest.raises(MetricError, match="gallery holds no items"):
        retrieval_metrics([0], [], dist=np.zeros((1, 0)))
    with pytest.raises(MetricError, match="no queries"):
        retrieval_metrics([], [0], dist=np.zeros((0, 1)))
    with pytest.raises(MetricError, match="0 and 1"):
        average_precision([[0, 2, 1]])
    with pytest.raises(MetricError, match="smaller than"):
        average_precision([[1, 1, 0]], n_pos=[1])
    with pytest.raises(MetricError, match="shape"):
        average_precision([[1, 1, 0]], n_pos=[1, 2])
