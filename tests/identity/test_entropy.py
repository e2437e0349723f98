"""Known answers and properties of the TIT identity model (visec.identity.entropy)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from visec.errors import VisecError
from visec.identity import (
    AttributeSpec,
    Schema,
    conditional_identity_entropy,
    core_identification_set,
    core_identification_sets,
    encode_population,
    identity_entropy,
    individual_conditional_entropies,
    individual_conditional_entropy,
    joint_attribute_entropy,
    population_core_set,
)
from visec.identity.errors import ObjectIndexError, UnknownAttributeError

LOG1000 = math.log2(1000)


def uniform_pop(n: int = 1000, **cols) -> pd.DataFrame:
    df = pd.DataFrame({k: v for k, v in cols.items()}, index=[f"u{i}" for i in range(n)])
    return df if cols else pd.DataFrame(index=[f"u{i}" for i in range(n)])


def random_table(rng: np.random.Generator, n: int, m: int, card: int = 3, missing: float = 0.0) -> pd.DataFrame:
    data = rng.integers(0, card, size=(n, m)).astype(float)
    if missing:
        data[rng.random((n, m)) < missing] = np.nan
    return pd.DataFrame(data, columns=[f"a{j}" for j in range(m)])


def brute_counts(df: pd.DataFrame, cols: list[str]) -> np.ndarray:
    """|C_u(S)| by the definition (wildcard rule), with Python loops: the oracle."""
    vals = df[cols].to_numpy()
    out = []
    for u in range(len(df)):
        c = 0
        for v in range(len(df)):
            ok = True
            for j in range(len(cols)):
                a, b = vals[u, j], vals[v, j]
                if not (pd.isna(a) or pd.isna(b)) and a != b:
                    ok = False
                    break
            c += ok
        out.append(c)
    return np.array(out)


# ------------------------------------------------------------------------------ known answers
def test_uniform_population_entropy_is_log2_n():
    pop = uniform_pop(1000, a=np.zeros(1000))
    assert identity_entropy(pop) == pytest.approx(LOG1000, abs=1e-12)
    assert LOG1000 == pytest.approx(9.9658, abs=1e-4)
    assert conditional_identity_entropy(pop, []) == pytest.approx(LOG1000, abs=1e-12)


def test_balanced_binary_attribute_lowers_entropy_by_one_bit():
    pop = uniform_pop(1000, sex=np.repeat(["m", "f"], 500))
    h = conditional_identity_entropy(pop, ["sex"])
    assert h == pytest.approx(LOG1000 - 1.0, abs=1e-12)
    assert h == pytest.approx(8.9658, abs=1e-4)
    assert np.allclose(individual_conditional_entropies(pop, ["sex"]), math.log2(500))


def test_counts_500_250_250_lower_entropy_by_1_5_bits():
    pop = uniform_pop(1000, blood=["O"] * 500 + ["A"] * 250 + ["B"] * 250)
    h = conditional_identity_entropy(pop, ["blood"])
    assert h == pytest.approx(LOG1000 - 1.5, abs=1e-12)
    assert h == pytest.approx(8.4658, abs=1e-4)
    assert joint_attribute_entropy(pop, ["blood"]) == pytest.approx(1.5, abs=1e-12)
    assert individual_conditional_entropy(pop, 0, ["blood"]) == pytest.approx(math.log2(500))
    assert individual_conditional_entropy(pop, 999, ["blood"]) == pytest.approx(math.log2(250))


def test_unique_id_attribute_gives_zero():
    pop = uniform_pop(1000, fp=[f"FP{i}" for i in range(1000)], sex=np.repeat(["m", "f"], 500))
    assert conditional_identity_entropy(pop, ["fp"]) == 0.0
    assert conditional_identity_entropy(pop, ["sex", "fp"]) == 0.0
    assert individual_conditional_entropy(pop, 17, ["fp"]) == 0.0


def test_prior_entropy():
    pop = uniform_pop(4, a=[0, 1, 2, 3])
    assert identity_entropy(pop, prior=[0.5, 0.25, 0.25, 0.0]) == pytest.approx(1.5)
    with pytest.raises(VisecError):
        identity_entropy(pop, prior=[1, 2])


def test_numeric_bins_compare_by_bin():
    pop = pd.DataFrame({"age": [20.0, 21.0, 30.0, 31.0, 45.0, np.nan]})
    schema = Schema([AttributeSpec("age", kind="numeric", bins=(25, 40))])
    # bins: <25 {20, 21}, [25,40) {30, 31}, >=40 {45}; row 5 unknown -> matches everything
    h = individual_conditional_entropies(pop, ["age"], schema=schema)
    assert np.allclose(2 ** h, [3, 3, 3, 3, 2, 6])


# ------------------------------------------------------------------------------ identities
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), n=st.integers(1, 40), m=st.integers(1, 4), card=st.integers(1, 5),
       k=st.integers(0, 4))
def test_mean_individual_equals_conditional_equals_log_n_minus_joint(seed, n, m, card, k):
    rng = np.random.default_rng(seed)
    df = random_table(rng, n, m, card)
    cols = list(df.columns[: min(k, m)])
    hu = individual_conditional_entropies(df, cols)
    hc = conditional_identity_entropy(df, cols)
    assert hu.mean() == pytest.approx(hc, abs=1e-9)
    assert hc == pytest.approx(math.log2(n) - joint_attribute_entropy(df, cols), abs=1e-9)
    assert individual_conditional_entropy(df, n - 1, cols) == pytest.approx(hu[-1], abs=1e-12)


@pytest.mark.parametrize("missing,m", [(0.3, 3), (0.4, 8)])  # few patterns / many patterns (pairwise path)
def test_wildcard_counts_match_definition(missing, m):
    rng = np.random.default_rng(7)
    df = random_table(rng, 40, m, card=3, missing=missing)
    cols = list(df.columns)
    want = brute_counts(df, cols)
    got = 2 ** individual_conditional_entropies(df, cols)
    assert np.allclose(got, want)
    assert conditional_identity_entropy(df, cols) == pytest.approx(np.log2(want).mean())
    for u in (0, 13, 39):
        assert individual_conditional_entropy(df, u, cols) == pytest.approx(math.log2(want[u]))


# ------------------------------------------------------------------------------ core sets
def is_valid(df, u, attrs, floor):
    return individual_conditional_entropy(df, u, list(attrs)) <= floor + 1e-12


@pytest.mark.parametrize("table_seed", range(30))
def test_exact_core_set_valid_minimal_and_not_larger_than_greedy(table_seed):
    rng = np.random.default_rng(1000 + table_seed)
    df = random_table(rng, 64, 10, card=int(rng.integers(2, 5)))
    enc = encode_population(df)
    bound = 1 + math.log(64)
    for u in rng.choice(64, size=4, replace=False):
        ex = core_identification_set(enc, int(u), exact=True)
        gr = core_identification_set(enc, int(u), exact=False)
        floor = individual_conditional_entropy(enc, int(u), None)
        assert ex.residual_entropy == pytest.approx(floor)
        assert is_valid(enc, u, ex.attributes, floor) and is_valid(enc, u, gr.attributes, floor)
        for a in ex.attributes:  # minimal: dropping any attribute breaks it
            assert not is_valid(enc, u, [b for b in ex.attributes if b != a], floor)
        assert ex.size <= gr.size <= ex.size * bound
        if ex.size > 1:  # minimum: no valid set of smaller size exists
            for combo in itertools.combinations(enc.names, ex.size - 1):
                assert not is_valid(enc, u, combo, floor)


def test_core_set_of_unique_attribute_and_twins():
    df = pd.DataFrame({"sex": ["m", "f", "m", "f"], "town": ["a", "a", "b", "b"],
                       "fp": ["x1", "x2", "x3", "x3"]})
    cs = core_identification_set(df, 0)
    assert cs.attributes == ("fp",) and cs.identifiable and cs.residual_entropy == 0.0
    twin = core_identification_set(df, 2)  # rows 2 and 3 differ only in sex
    assert twin.attributes == ("sex", "town") and twin.identifiable
    dup = pd.DataFrame({"a": [1, 1, 2], "b": [5, 5, 6]})
    cs = core_identification_set(dup, 0)
    assert not cs.identifiable and cs.residual_entropy == pytest.approx(1.0) and cs.size == 1


def test_core_set_costs():
    df = pd.DataFrame({"a": [0, 1, 2, 3], "b": [0, 0, 1, 1], "c": [0, 1, 0, 1], "d": [9, 8, 7, 6]})
    assert core_identification_set(df, 0).attributes == ("a",)  # lexicographic among size 1
    # exact = minimum cardinality first, then the cheapest of those
    cheap = core_identification_set(df, 0, costs={"a": 10.0, "b": 1.0, "c": 1.0, "d": 3.0})
    assert cheap.attributes == ("d",) and cheap.cost == 3.0
    # greedy per unit cost prefers two cheap attributes: b (2 objects / 1) then c
    greedy = core_identification_set(df, 0, exact=False, costs={"a": 10.0, "b": 1.0, "c": 1.0, "d": 10.0})
    assert greedy.attributes == ("b", "c") and greedy.cost == 2.0


@pytest.mark.parametrize("missing", [0.0, 0.15])
def test_all_objects_core_sets_match_single_object_search(missing):
    rng = np.random.default_rng(3)
    df = random_table(rng, 80, 7, card=3, missing=missing)
    table = core_identification_sets(df, exact=True)
    greedy = core_identification_sets(df, exact=False)
    for u in range(len(df)):
        one = core_identification_set(df, u, exact=True)
        assert table.iloc[u]["attributes"] == one.attributes
        assert table.iloc[u]["residual_entropy"] == pytest.approx(one.residual_entropy)
        assert greedy.iloc[u]["size"] >= one.size


def test_population_core_set():
    df = pd.DataFrame({"a": [0, 0, 1, 1], "b": [0, 1, 0, 1], "c": [0, 0, 0, 1]})
    key, h = population_core_set(df)
    assert key == ("a", "b") and h == 0.0
    gkey, gh = population_core_set(df, exact=False)
    assert gh == 0.0 and len(gkey) >= 2


# ------------------------------------------------------------------------------ errors
def test_errors_are_one_line_visec_errors():
    df = pd.DataFrame({"sex": ["m", "f"]})
    with pytest.raises(UnknownAttributeError, match="did you mean 'sex'") as e:
        conditional_identity_entropy(df, ["sx"])
    assert isinstance(e.value, VisecError) and "\n" not in str(e.value)
    with pytest.raises(VisecError, match="empty"):
        identity_entropy(pd.DataFrame({"a": []}))
    with pytest.raises(VisecError, match="empty"):
        conditional_identity_entropy(pd.DataFrame({"a": []}), ["a"])
    with pytest.raises(ObjectIndexError, match="out of range"):
        individual_conditional_entropy(df, 2, ["sex"])
    with pytest.raises(ObjectIndexError):
        core_identification_set(df, 5)
    with pytest.raises(VisecError):
        Schema([AttributeSpec("x", kind="weird")])
    with pytest.raises(VisecError):
        AttributeSpec("x", reliability=0.0)
