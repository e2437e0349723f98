"""SBKA's search and one-to-many cluster matching: the PQ known answer, equal distances inside a cell
with Euclidean tie-breaking, nearest-mean (not posterior) codes, the blobs property (cluster matching
beats plain Euclidean ranking under a modality gap), faiss against the exact distances, and the
choice of (m, k_ratio) on a validation split only."""

from __future__ import annotations

import numpy as np
import pytest

from visec.errors import ConfigError, DataError, MetricError
from visec.methods.sbka.matching import (ClusterMatcher, build_index, cluster_count, euclidean, l2_normalise,
                                         select_matching)


def mean_ap(dist, query_labels, gallery_labels) -> float:
    """Plain (non-interpolated) mAP over queries: enough to compare rankings in these tests."""
    order = np.argsort(dist, axis=1, kind="stable")
    rel = np.asarray(gallery_labels)[order] == np.asarray(query_labels)[:, None]
    prec = np.cumsum(rel, axis=1) / np.arange(1, rel.shape[1] + 1)
    return float(np.mean((prec * rel).sum(1) / rel.sum(1)))


def blobs(seed=0, photo_noise=0.5, sketch_noise=0.8, gap=1.0, classes=5, dim=16, photos=20, sketches=10):
    """Photos = centre + small noise; sketches = centre + one fixed modality-gap vector + larger
    noise; both L2-normalised."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    gap_vector = gap * rng.normal(size=dim)
    yg, yq = np.repeat(np.arange(classes), photos), np.repeat(np.arange(classes), sketches)
    gallery = l2_normalise(centres[yg] + photo_noise * rng.normal(size=(yg.size, dim)))
    queries = l2_normalise(centres[yq] + gap_vector + sketch_noise * rng.normal(size=(yq.size, dim)))
    return queries, yq, gallery, yg


# ------------------------------------------------------------------------------------------ basics
def test_l2_normalise_unit_rows_and_zero_rows():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [-1e-3, 0.0]])
    y = l2_normalise(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [[0.6, 0.8], [0.0, 0.0], [-1.0, 0.0]], atol=1e-6)
    with pytest.raises(DataError):
        l2_normalise(np.ones(3))


def test_euclidean_matches_brute_force_and_keeps_dtype():
    rng = np.random.default_rng(1)
    q, g = rng.normal(size=(7, 12)), rng.normal(size=(9, 12))
    brute = np.linalg.norm(q[:, None, :] - g[None, :, :], axis=2)
    d64 = euclidean(q, g)
    assert d64.dtype == np.float64 and d64.shape == (7, 9)
    np.testing.assert_allclose(d64, brute, rtol=1e-10, atol=1e-10)
    d32 = euclidean(q.astype(np.float32), g.astype(np.float32))
    assert d32.dtype == np.float32
    np.testing.assert_allclose(d32, brute, atol=1e-4)
    same = euclidean(g.astype(np.float32), g.astype(np.float32))  # cancellation must not give NaN
    assert np.all(np.isfinite(same)) and np.all(np.diag(same) < 2e-3)
    with pytest.raises(DataError):
        euclidean(q, g[:, :5])
    with pytest.raises(DataError):
        euclidean(q, np.zeros((0, 12)))


def test_cluster_count_rounds_half_up_and_is_at_least_one():
    assert cluster_count(1.0, 25) == 25
    assert cluster_count(0.9, 25) == 23  # 22.5 -> 23
    assert cluster_count(0.9, 5) == 5 and cluster_count(1.1, 5) == 6
    assert cluster_count(0.01, 5) == 1
    with pytest.raises(ConfigError):
        cluster_count(0.0, 5)


# ------------------------------------------------------------------------------- cluster matching
@pytest.mark.parametrize("codebook", ["gmm", "kmeans"])
def test_pq_known_answer(codebook):
    gallery = np.array([[-1.1], [-1.0], [1.0], [1.1]])
    matcher = ClusterMatcher(m=1, k=2, codebook=codebook, weight=0.8).fit(gallery)
    np.testing.assert_allclose(np.sort(matcher.centres.ravel()), [-1.05, 1.05], atol=1e-6)
    assert matcher.codes.shape == (4, 1)
    assert matcher.codes[0, 0] == matcher.codes[1, 0] != matcher.codes[2, 0] == matcher.codes[3, 0]
    d_pq = matcher.pq_distances([[0.9]])
    np.testing.assert_allclose(d_pq, [[3.8025, 3.8025, 0.0225, 0.0225]], atol=1e-6)
    d = matcher.distances([[0.9]])
    np.testing.assert_allclose(d, [[0.8 * 3.8025 + 0.2 * 2.0, 0.8 * 3.8025 + 0.2 * 1.9, 0.038, 0.058]], atol=1e-6)
    assert np.argsort(d[0]).tolist() == [2, 3, 1, 0]  # 1.0 above 1.1, then the left cluster


def test_equal_pq_distance_inside_a_cell_and_euclidean_breaks_ties():
    # two cells in 2-d with m=2 (one dim per block), four items each; every item of a cell shares its codes
    right = np.array([[1.0, 1.0], [1.3, 1.0], [1.0, 1.25], [1.15, 1.1]])
    gallery = np.concatenate([right, -right])
    query = np.array([[0.9, 0.95], [1.2, 1.2]])
    matcher = ClusterMatcher(m=2, k=2, codebook="gmm", weight=0.8).fit(gallery)
    codes = matcher.codes
    assert len({tuple(c) for c in codes[:4]}) == 1 and len({tuple(c) for c in codes[4:]}) == 1
    assert tuple(codes[0]) != tuple(codes[4])
    d_pq, d_e, d = matcher.pq_distances(query), euclidean(query, gallery), matcher.distances(query)
    for row in range(2):
        assert np.all(d_pq[row, :4] == d_pq[row, 0]) and np.all(d_pq[row, 4:] == d_pq[row, 4])
        order = np.argsort(d[row]).tolist()
        assert set(order[:4]) == {0, 1, 2, 3}  # the query's cell first ...
        assert order[:4] == np.argsort(d_e[row, :4]).tolist()  # ... ordered by the Euclidean term
    np.testing.assert_allclose(d, 0.8 * d_pq + 0.2 * d_e, atol=1e-12)
    pure_pq = ClusterMatcher(m=2, k=2, weight=1.0).fit(gallery)
    np.testing.assert_allclose(pure_pq.distances(query), d_pq, atol=1e-12)
    pure_e = ClusterMatcher(m=2, k=2, weight=0.0).fit(gallery)
    np.testing.assert_allclose(pure_e.distances(query), d_e, atol=1e-12)


def test_gmm_codes_are_nearest_mean_not_posterior():
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(0)
    # a narrow component at 0 and a wide one at 4; the item at 0.6 is nearest to the narrow mean
    # but the wide component has almost all its posterior mass
    x = np.concatenate([rng.normal(0, 0.01, 30), rng.normal(4, 1.5, 30), [0.6]])[:, None]
    matcher = ClusterMatcher(m=1, k=2, codebook="gmm", seed=123).fit(x)
    narrow = int(np.argmin(np.abs(matcher.centres[0, :, 0])))
    assert matcher.codes[-1, 0] == narrow == matcher.codes[0, 0]
    gmm = GaussianMixture(2, covariance_type="full", random_state=123).fit(x)
    assert gmm.predict(x[-1:])[0] != gmm.predict(x[:1])[0]  # the posterior would put it elsewhere


@pytest.mark.parametrize("codebook", ["gmm", "kmeans"])
def test_blobs_cluster_matching_beats_euclidean_under_a_modality_gap(codebook):
    queries, yq, gallery, yg = blobs(seed=0)
    plain = mean_ap(euclidean(queries, gallery), yq, yg)
    cluster = mean_ap(ClusterMatcher(m=1, k=5, codebook=codebook).fit(gallery).distances(queries), yq, yg)
    assert plain < 0.9  # the gap makes the task non-trivial for one-to-one ranking
    assert cluster >= plain + 0.03  # measured: 0.805 -> 0.893 for both codebooks at seed 0


@pytest.mark.parametrize("codebook", ["gmm", "kmeans"])
def test_blobs_map_is_one_when_sketches_equal_photos(codebook):
    _, _, gallery, yg = blobs(seed=0, photo_noise=0.1)
    assert mean_ap(euclidean(gallery, gallery), yg, yg) == 1.0
    for m in (1, 2, 4):
        matcher = ClusterMatcher(m=m, k=5, codebook=codebook).fit(gallery)
        assert mean_ap(matcher.distances(gallery), yg, yg) == 1.0


def test_cluster_matcher_validates_its_settings_and_inputs():
    gallery = np.random.default_rng(0).normal(size=(10, 6))
    with pytest.raises(ConfigError, match="m=4"):
        ClusterMatcher(m=4, k=2).fit(gallery)  # 4 does not divide 6
    with pytest.raises(ConfigError, match="k=11"):
        ClusterMatcher(m=1, k=11).fit(gallery)
    for bad in (dict(weight=1.5), dict(weight=-0.1), dict(codebook="pq"), dict(m=0), dict(k=0)):
        with pytest.raises(ConfigError):
            ClusterMatcher(**bad)
    with pytest.raises(ConfigError, match="not fitted"):
        ClusterMatcher(m=1, k=2).pq_distances(gallery)
    matcher = ClusterMatcher(m=2, k=2).fit(gallery)
    with pytest.raises(DataError):
        matcher.distances(gallery[:, :4])
    with pytest.raises(DataError):
        ClusterMatcher(m=1, k=1).fit(np.full((3, 2), np.nan))


@pytest.mark.filterwarnings("ignore:Number of distinct clusters")  # the k-means initialisation on 2 points
def test_gmm_that_cannot_fit_raises_one_line_error_naming_m_and_k():
    collapsed = np.array([[0.0], [0.0], [0.0], [0.0], [1.0]])  # 3 components, 2 distinct points
    with pytest.raises(ConfigError) as info:
        ClusterMatcher(m=1, k=3, reg_covar=0.0).fit(collapsed)
    message = str(info.value)
    assert "m=1" in message and "k=3" in message and "\n" not in message
    ClusterMatcher(m=1, k=3).fit(collapsed)  # sklearn's default reg_covar makes it well-defined


# ------------------------------------------------------------------------------------------- faiss
def test_faiss_flat_equals_exact_distances_and_argsort():
    rng = np.random.default_rng(2)
    gallery, queries = rng.normal(size=(300, 24)).astype(np.float32), rng.normal(size=(20, 24)).astype(np.float32)
    dist, ids = build_index(gallery, "flat", threads=1).search(queries, 10)
    exact = euclidean(queries, gallery)
    expected = np.argsort(exact, axis=1, kind="stable")[:, :10]
    assert dist.shape == ids.shape == (20, 10) and ids.dtype == np.int64
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(dist, np.take_along_axis(exact, expected, axis=1), atol=1e-4)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_faiss_approximate_recall_at_10(kind):
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(20, 32))
    gallery = l2_normalise(centres[rng.integers(0, 20, 1000)] + 0.3 * rng.normal(size=(1000, 32)))
    queries = l2_normalise(centres[rng.integers(0, 20, 50)] + 0.3 * rng.normal(size=(50, 32)))
    index = build_index(gallery, kind, seed=0, threads=1)
    if kind == "ivf":
        assert index.nlist == 25 and index.nprobe == 8  # min(4 sqrt(1000), 1000 // 39)
    _, ids = index.search(queries, 10)
    exact = np.argsort(euclidean(queries, gallery), axis=1)[:, :10]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact)])
    assert recall >= 0.9


def test_faiss_errors_and_thread_count():
    import faiss

    gallery = np.random.default_rng(4).normal(size=(30, 8)).astype(np.float32)
    index = build_index(gallery, "flat", threads=1)
    assert faiss.omp_get_max_threads() == 1
    with pytest.raises(ConfigError, match="k=31"):
        index.search(gallery[:2], 31)
    with pytest.raises(DataError):
        index.search(gallery[:2, :5], 3)
    with pytest.raises(DataError):
        build_index(np.zeros((0, 8), dtype=np.float32))
    with pytest.raises(ConfigError):
        build_index(gallery, "lsh")
    with pytest.raises(ConfigError):
        build_index(gallery, "ivf", nlist=31)


# ---------------------------------------------------------------------------------------- selection
def test_select_matching_picks_the_best_pair_of_its_table_deterministically():
    queries, yq, gallery, yg = blobs(seed=1, photos=8, sketches=4)
    kw = dict(ms=(1, 2, 3, 4), k_ratios=(0.8, 1.0, 1.2), score_fn=mean_ap, codebook="kmeans")
    out = select_matching(queries, yq, gallery, yg, **kw)
    assert out == select_matching(queries, yq, gallery, yg, **kw)
    assert out["m"] in (1, 2, 4) and out["k_ratio"] in (0.8, 1.0, 1.2)
    assert out["n_classes"] == 5 and out["k"] == cluster_count(out["k_ratio"], 5)
    table = out["table"]
    assert [(row["m"], row["k_ratio"]) for row in table] == [(m, r) for m in (1, 2, 3, 4) for r in (0.8, 1.0, 1.2)]
    assert all(row["score"] is None and "does not divide" in row["skipped"] for row in table if row["m"] == 3)
    assert out["score"] == max(row["score"] for row in table if row["score"] is not None)
    assert out["euclidean_score"] == pytest.approx(mean_ap(euclidean(queries, gallery), yq, yg))
    m1k5 = next(row for row in table if row["m"] == 1 and row["k_ratio"] == 1.0)
    direct = ClusterMatcher(m=1, k=5, codebook="kmeans").fit(gallery).distances(queries)
    assert m1k5["score"] == pytest.approx(mean_ap(direct, yq, yg))


def test_select_matching_sees_only_the_validation_split_and_takes_the_first_best():
    queries, yq, gallery, yg = blobs(seed=2, classes=10, dim=8, photos=3, sketches=2)
    scripted = iter([0.5, 0.1, 0.7, 0.3, 0.7, 0.2, 0.6, 0.7, 0.0, 0.1, 0.4])  # Euclidean first, then the grid
    calls = []

    def score(dist, q_labels, g_labels):
        calls.append((dist.shape, q_labels, g_labels))
        return next(scripted)

    out = select_matching(queries, yq, gallery, yg, ms=(1, 2), k_ratios=(0.8, 0.9, 1.0, 1.1, 1.2),
                          score_fn=score, codebook="kmeans")
    assert len(calls) == 11  # ks 8..12 are distinct for 10 classes: no pair reuses another's score
    assert all(shape == (20, 30) and qa is yq and ga is yg for shape, qa, ga in calls)
    assert (out["m"], out["k_ratio"], out["k"], out["score"]) == (1, 0.9, 9, 0.7)  # first of three 0.7s
    assert out["euclidean_score"] == 0.5
    assert [row["score"] for row in out["table"]] == [0.1, 0.7, 0.3, 0.7, 0.2, 0.6, 0.7, 0.0, 0.1, 0.4]


def test_select_matching_errors_on_bad_inputs():
    queries, yq, gallery, yg = blobs(seed=0, photos=4, sketches=2)
    ok = dict(ms=(1,), k_ratios=(1.0,), score_fn=mean_ap, codebook="kmeans")
    with pytest.raises(DataError):
        select_matching(queries, yq[:-1], gallery, yg, **ok)
    with pytest.raises(DataError):
        select_matching(queries[:, :8], yq, gallery, yg, **ok)
    for bad in (dict(ms=()), dict(ms=(0,)), dict(ms=(3,)), dict(k_ratios=(-1.0,)), dict(k_ratios=()),
                dict(weight=2.0), dict(score_fn=None), dict(codebook="pq"), dict(k_ratios=(100.0,))):
        with pytest.raises(ConfigError):
            select_matching(queries, yq, gallery, yg, **{**ok, **bad})
    with pytest.raises(MetricError):
        select_matching(queries, yq, gallery, yg, **{**ok, "score_fn": lambda *a: float("nan")})
