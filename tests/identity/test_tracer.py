"""TIT tracer: crisp invariants, noisy model, twins, baselines, evaluation (visec.identity.tracer)."""

from __future__ import annotations

import json
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
    Tracer,
    encode_population,
    entropy_curve,
    evaluate,
    explain,
    make_tracer,
    run_baselines,
    simulate,
    summarize,
    trace,
)
from visec.identity.entropy import entropy_bits
from visec.identity.simulate import SEPARATING
from visec.identity.gain import crisp_gain, noisy_gain


def random_table(rng, n, m, card=3, missing=0.0):
    data = rng.integers(0, card, size=(n, m)).astype(float)
    if missing:
        data[rng.random((n, m)) < missing] = np.nan
    return pd.DataFrame(data, columns=[f"a{j}" for j in range(m)], index=[f"u{i}" for i in range(n)])


@pytest.fixture(scope="module")
def sim_clean():
    return simulate(1000, 20, 0, "clean", n_queries=100)


# ------------------------------------------------------------------------------ crisp
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), n=st.integers(1, 60), m=st.integers(1, 6), card=st.integers(2, 4),
       miss=st.sampled_from([0.0, 0.2]))
def test_crisp_never_loses_truth_and_entropy_never_rises(seed, n, m, card, miss):
    rng = np.random.default_rng(seed)
    df = random_table(rng, n, m, card, missing=miss)
    u = int(rng.integers(0, n))
    obs = df.iloc[u].to_dict()
    tr = Tracer(df, mode="crisp").trace(obs, truth=df.index[u])
    ent = tr.entropies
    assert all(b <= a + 1e-12 for a, b in zip(ent, ent[1:]))
    assert tr.truth["truth_probability"] > 0
    assert df.index[u] in [c for c, _ in tr.candidates] or tr.n_candidates > len(tr.candidates)
    assert tr.final_entropy == pytest.approx(math.log2(tr.n_candidates))
    assert tr.reason in ("identified", "no_gain", "exhausted")
    if miss == 0.0 and not df.duplicated(keep=False).iloc[u]:
        assert tr.identified and tr.identity == df.index[u] and tr.final_entropy == 0.0


def test_crisp_with_all_attributes_identifies_every_object(sim_clean):
    pop, schema, queries = sim_clean
    tracer = Tracer(pop, schema, mode="crisp")
    for qid, row in queries.head(30).iterrows():
        tr = tracer.trace(row, truth=row["true_id"])
        assert tr.identified and tr.identity == row["true_id"] and tr.final_entropy == 0.0


def test_twins_with_separating_attributes_hidden_end_at_one_bit(sim_clean):
    pop, schema, _ = sim_clean
    twins = schema.meta["twins"]
    assert len(twins) == 10
    for a, b in twins[:4]:
        obs = pop.loc[a].to_dict()
        for name in SEPARATING:
            obs[name] = None
        tr = Tracer(pop, schema, mode="crisp").trace(obs, truth=a)
        assert not tr.identified
        assert tr.final_entropy == 1.0
        assert sorted(c for c, _ in tr.candidates) == sorted([a, b])
        assert tr.truth["top1_credit"] == 0.5
        assert set(tr.skipped) <= set(SEPARATING)
        # noisy mode on the clean schema (all reliabilities 1) gives the same answer
        trn = Tracer(pop, schema, mode="noisy").trace(obs)
        assert trn.final_entropy == pytest.approx(1.0) and not trn.identified
        # revealing the fingerprint separates them
        obs["fingerprint_id"] = pop.loc[a, "fingerprint_id"]
        assert Tracer(pop, schema, mode="crisp").trace(obs).identity == a


def test_crisp_gain_is_entropy_of_candidate_value_distribution():
    x = np.array([0, 0, 1, 1, 1, 1, 2, 2])
    assert crisp_gain(x) == pytest.approx(entropy_bits(np.bincount(x)))
    assert crisp_gain(np.array([5, 5, 5])) == 0.0
    # wildcard: 2 unknown rows stay in every outcome
    x = np.array([0, 0, 1, 1, -1, -1])
    assert crisp_gain(x) == pytest.approx(math.log2(6) - math.log2(4))


def test_crisp_contradiction_and_no_gain():
    df = pd.DataFrame({"a": ["x", "x", "y", "y"], "b": ["p", "p", "p", "p"], "c": [1, 2, 3, 4]},
                      index=list("ABCD"))
    tr = trace(df, {"a": "z"}, mode="crisp")
    assert tr.reason == "contradiction" and not tr.identified and tr.n_candidates == 4
    assert tr.attributes_used == ["a"] and tr.steps[0].entropy_after == tr.steps[0].entropy_before == 2.0
    tr = trace(df, {"a": "x", "b": "p"}, mode="crisp")  # c missing; b carries no information
    assert tr.reason == "no_gain" and tr.final_entropy == 1.0 and tr.skipped == ["c"]
    assert tr.attributes_used == ["a"]


def test_missing_query_attributes_are_skipped_in_gain_order():
    df = pd.DataFrame({"id": [f"i{k}" for k in range(8)], "half": [0, 0, 0, 0, 1, 1, 1, 1],
                       "quarter": [0, 0, 1, 1, 2, 2, 3, 3]})
    tr = trace(df, {"id": None, "half": 1, "quarter": 2}, mode="crisp")
    assert tr.skipped == ["id"]
    assert tr.attributes_used == ["quarter"]  # 2 bits before 1 bit
    assert tr.final_entropy == 1.0 and tr.reason == "no_gain"


def test_use_cost_prefers_cheap_informative_attributes():
    df = pd.DataFrame({"id": [f"i{k}" for k in range(8)], "half": [0, 0, 0, 0, 1, 1, 1, 1],
                       "quarter": [0, 0, 1, 1, 2, 2, 3, 3]})
    schema = Schema([AttributeSpec("id", kind="id", cost=10.0), AttributeSpec("half", cost=1.0),
                     AttributeSpec("quarter", cost=1.0)])
    obs = df.iloc[5].to_dict()
    assert trace(df, obs, schema, mode="crisp").attributes_used == ["id"]
    assert trace(df, obs, schema, mode="crisp", use_cost=True).attributes_used == ["quarter", "id"]


# ------------------------------------------------------------------------------ noisy model
def dense_L(model):
    L = np.full((model.K + 1, model.K), model.c)
    L[model.rows, model.cols] = model.vals
    return L


@pytest.mark.parametrize("spec", [
    AttributeSpec("a", kind="categorical", reliability=0.8),
    AttributeSpec("a", kind="ordinal", levels=(0, 1, 2, 3, 4), reliability=0.7),
    AttributeSpec("a", kind="numeric", bins=(1.5, 2.5, 3.5), reliability=0.6, confusion="gaussian", noise_sd=0.8),
    AttributeSpec("a", kind="categorical", reliability=0.9, confusion="neighbours", neighbours={0: [1, 2], 3: [4]}),
])
def test_confusion_rows_sum_to_one_and_noisy_gain_matches_brute_force(spec):
    rng = np.random.default_rng(0)
    vals = rng.integers(0, 5, 40).astype(float)
    vals[:5] = np.nan  # unknown population values
    df = pd.DataFrame({"a": vals})
    enc = encode_population(df, Schema([spec], leak=0.1))
    model = enc.model(0)
    L = dense_L(model)
    assert np.allclose(L.sum(axis=0), 1.0)
    assert np.allclose(np.diag(L[: model.K]), spec.reliability)
    p = rng.random(40)
    p /= p.sum()
    x = enc.codes[:, 0]
    H = entropy_bits(p)
    # oracle: outcome weights from known-valued objects, posterior with likelihood r for unknown ones
    lik = np.where(x[None, :] >= 0, L[:, np.maximum(x, 0)], model.r)
    pres = x >= 0
    w = (L[:, x[pres]] * p[pres]).sum(axis=1) / p[pres].sum()
    exp_h = sum(w[o] * entropy_bits(p * lik[o]) for o in range(model.K + 1) if w[o] > 0)
    got = noisy_gain(x, p, p * np.log2(p), H, model)
    assert got == pytest.approx(H - exp_h, abs=1e-10)


@pytest.mark.parametrize("miss", [0.0, 0.25])
def test_noisy_with_reliability_one_equals_crisp(miss):
    rng = np.random.default_rng(11)
    for rep in range(12):
        df = random_table(rng, 50, 6, card=3, missing=miss)
        u = int(rng.integers(0, 50))
        obs = df.iloc[u].to_dict()
        obs[f"a{rep % 6}"] = None
        if rep % 3 == 0:
            obs["a1"] = 7.0  # an unseen value
        c = Tracer(df, mode="crisp").trace(obs, truth=df.index[u])
        n = Tracer(df, mode="noisy", epsilon=0.0, tau=1.0).trace(obs, truth=df.index[u])
        assert c.attributes_used == n.attributes_used and c.skipped == n.skipped
        assert c.reason == n.reason and c.status == n.status and c.identity == n.identity
        assert np.allclose(c.entropies, n.entropies, atol=1e-9)
        assert [s.candidates_left for s in c.steps] == [s.candidates_left for s in n.steps]
        assert np.allclose([s.expected_gain for s in c.steps], [s.expected_gain for s in n.steps], atol=1e-9)
        assert [k for k, _ in c.candidates] == [k for k, _ in n.candidates]


def test_noisy_equals_crisp_on_simulated_clean_schema(sim_clean):
    pop, schema, queries = sim_clean
    sim_r = simulate(1000, 20, 0, "realistic", n_queries=40)
    ones = schema.with_reliability(1.0)
    crisp = Tracer(pop, ones, mode="crisp")
    noisy = Tracer(pop, ones, mode="noisy", epsilon=0.0, tau=1.0)
    for _, row in sim_r.queries.iterrows():  # noisy, partially missing observations
        c, n = crisp.trace(row), noisy.trace(row)
        assert c.attributes_used == n.attributes_used and c.reason == n.reason
        assert np.allclose(c.entropies, n.entropies, atol=1e-9)


def test_noisy_posterior_normalised_truth_kept_and_entropy_may_rise():
    df = pd.DataFrame({"a": ["x", "x", "y", "y"], "b": ["p", "q", "p", "q"]}, index=list("ABCD"))
    schema = Schema([AttributeSpec("a", reliability=0.9), AttributeSpec("b", reliability=0.9)])
    tracer = Tracer(df, schema, policy="fixed", order=["a", "b"], epsilon=0.0, tau=1.0)
    tr = tracer.trace({"a": "x", "b": "q"}, truth="C")  # C has a=y: a contradicts the truth
    assert tr.truth["truth_probability"] > 0  # no hard elimination
    assert tr.n_candidates == 4
    assert sum(p for _, p in tr.candidates) == pytest.approx(1.0)
    # an observation that contradicts the current belief can raise the entropy
    df2 = pd.DataFrame({"a": ["x", "y", "y", "y"], "b": ["p", "q", "q", "q"]}, index=list("ABCD"))
    tr2 = Tracer(df2, schema, policy="fixed", order=["a", "b"], epsilon=0.0, tau=1.0).trace({"a": "x", "b": "q"})
    assert tr2.steps[1].entropy_after > tr2.steps[1].entropy_before
    assert tr2.steps[1].gain < 0


def test_noisy_realistic_queries_are_traced_with_few_false_identifications():
    pop, schema, queries = simulate(1000, 20, 1, "realistic", n_queries=60)
    ev = evaluate(make_tracer("tit", pop, schema), queries)
    s = ev.summary
    assert s["false_identification_rate"] <= 0.05
    assert s["identification_accuracy"] >= 0.85
    assert s["mean_attributes_used"] < 6
    for tr in ev.traces:
        if tr.identified:
            assert tr.final_entropy <= 0.05 + 1e-9 and tr.top_probability >= 0.95 - 1e-9


# ------------------------------------------------------------------------------ output & baselines
def test_trace_format_and_json(sim_clean):
    pop, schema, queries = sim_clean
    tr = Tracer(pop, schema).trace(queries.iloc[0], truth=queries.iloc[0]["true_id"])
    text = tr.format()
    assert "IDENTIFIED" in text and tr.attributes_used[0] in text and "H before" in text
    d = json.loads(json.dumps(tr.to_dict()))
    assert d["status"] == "identified" and d["steps"][0]["attribute"] == tr.attributes_used[0]
    assert d["steps"][0]["entropy_before"] == pytest.approx(math.log2(1000))


def test_same_seed_same_traces():
    a = simulate(300, 20, 5, "harsh", n_queries=20)
    b = simulate(300, 20, 5, "harsh", n_queries=20)
    for method in ("tit", "random_order"):
        ea = evaluate(make_tracer(method, a.population, a.schema, seed=3), a.queries)
        eb = evaluate(make_tracer(method, b.population, b.schema, seed=3), b.queries)
        assert [t.to_dict() for t in ea.traces] == [t.to_dict() for t in eb.traces]
    ec = evaluate(make_tracer("random_order", a.population, a.schema, seed=4), a.queries)
    assert [t.attributes_used for t in ec.traces] != [t.attributes_used for t in ea.traces]


def test_baselines_and_summary_metrics():
    pop, schema, queries = simulate(400, 20, 2, "realistic", n_queries=40)
    res = run_baselines(pop, queries, schema)
    assert set(res) == {"tit", "face_only", "random_order", "most_unique_first", "naive_bayes_all"}
    for name, ev in res.items():
        s = ev.summary
        assert s["identification_accuracy"] + s["false_identification_rate"] + s["rejection_rate"] == pytest.approx(1.0)
        assert 0 <= s["top1_accuracy"] <= 1
        assert len(ev.outcomes) == 40
    face = res["face_only"]
    assert all(set(t.attributes_used) <= {"face_id"} for t in face.traces)
    assert res["naive_bayes_all"].summary["mean_attributes_used"] > res["tit"].summary["mean_attributes_used"]
    mu = make_tracer("most_unique_first", pop, schema)
    assert mu.enc.names[mu.order[0]] in ("fingerprint_id", "phone_number", "face_id")
    curve = entropy_curve(res["tit"].traces)
    assert curve[0] == pytest.approx(math.log2(400)) and curve[-1] < 0.5
    again = summarize(res["tit"].outcomes)
    assert again["top1_accuracy"] == res["tit"].summary["top1_accuracy"]
    with pytest.raises(VisecError, match="unknown TIT method"):
        make_tracer("nope", pop, schema)


def test_explain_gives_core_sets_and_trace(sim_clean):
    pop, schema, _ = sim_clean
    ex = explain(pop, "U0003", schema=schema)
    assert ex.exact.size == 1 and ex.exact.identifiable and ex.greedy.size >= ex.exact.size
    assert ex.trace.identified and ex.trace.identity == "U0003"
    assert "core identification set" in ex.format()
    json.dumps(ex.to_dict())


def test_tracer_input_errors():
    df = pd.DataFrame({"a": [1, 2]})
    with pytest.raises(VisecError, match="unknown attribute 'b'"):
        trace(df, {"b": 1})
    with pytest.raises(VisecError, match="mode"):
        Tracer(df, mode="fuzzy")
    with pytest.raises(VisecError, match="empty"):
        Tracer(pd.DataFrame({"a": []}))
    with pytest.raises(VisecError, match="not in the population"):
        trace(df, {"a": 1}, truth="zz")
