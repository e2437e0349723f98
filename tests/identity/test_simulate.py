"""TIT simulator: determinism, structure, regimes, noise rates, file round trip (visec.identity.simulate)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from visec.errors import VisecError
from visec.identity import (
    dataset_hash,
    encode_population,
    evaluate,
    make_tracer,
    read_population,
    read_queries,
    run_regimes,
    simulate,
    write_simulation,
)
from visec.identity.simulate import ATTRIBUTE_TABLE, SEPARATING, simulate_population


@pytest.fixture(scope="module")
def realistic():
    return simulate(1000, 20, 0, "realistic", n_queries=1000)


def test_same_seed_same_dataset_hash():
    a = simulate(500, 20, 3, "realistic")
    b = simulate(500, 20, 3, "realistic")
    c = simulate(500, 20, 4, "realistic")
    assert dataset_hash(a.population, a.queries) == dataset_hash(b.population, b.queries)
    assert a.schema.to_dict() == b.schema.to_dict()
    assert dataset_hash(a.population) != dataset_hash(c.population)
    assert dataset_hash(a.queries) != dataset_hash(c.queries)


def test_structure_of_1000_by_20(realistic):
    pop, schema, queries = realistic
    assert pop.shape == (1000, 20) and pop.index.is_unique
    assert list(pop.columns) == [t[0] for t in ATTRIBUTE_TABLE] == schema.names
    assert not pop.isna().any().any()  # the gallery is clean
    assert not pop.duplicated().any()  # every full 20-attribute vector is unique
    kinds = {a.name: a.kind for a in schema.attributes}
    assert kinds["age"] == "numeric" and kinds["build"] == "ordinal" and kinds["fingerprint_id"] == "id"
    assert pop["fingerprint_id"].is_unique and pop["phone_number"].is_unique
    assert pop["phone_number"].str.len().eq(11).all()
    assert pop["age"].between(18, 80).all()
    enc = encode_population(pop, schema)
    assert enc.K[schema.names.index("age")] == 13
    assert enc.K[schema.names.index("gender")] == 2
    assert 200 <= pop["surname"].nunique() <= 300  # ~300 names, Zipf: not all drawn
    top3 = pop["surname"].value_counts(normalize=True).iloc[:3].sum()
    assert 0.12 <= top3 <= 0.30
    assert 0.85 <= (pop["distinctive_mark"] == "none").mean() <= 0.95
    plate = (pop["vehicle_plate"] != "none").mean()
    assert 0.45 <= plate <= 0.75
    # dependence: height by gender
    assert pop.loc[pop.gender == "M", "height"].mean() - pop.loc[pop.gender == "F", "height"].mean() > 8


def test_twins_share_everything_but_the_separating_attributes(realistic):
    pop, schema, _ = realistic
    twins = schema.meta["twins"]
    assert len(twins) == 10 and len({x for p in twins for x in p}) == 20
    shared = [c for c in pop.columns if c not in SEPARATING]
    for a, b in twins:
        assert pop.loc[a, shared].equals(pop.loc[b, shared])
        assert pop.loc[a, "fingerprint_id"] != pop.loc[b, "fingerprint_id"]
    assert (pop["face_id"].value_counts() == 2).sum() == 10


def test_clean_queries_are_exact_copies():
    pop, schema, queries = simulate(300, 20, 1, "clean")
    assert len(queries) == 200 and not queries.isna().any().any()
    truth = pop.loc[queries["true_id"]].reset_index(drop=True)
    assert truth.equals(queries.drop(columns="true_id").reset_index(drop=True).astype(truth.dtypes.to_dict()))
    assert all(a.reliability == 1.0 for a in schema.attributes)


def test_realistic_missing_and_error_rates_follow_the_table(realistic):
    pop, schema, queries = realistic
    enc = encode_population(pop, schema)
    qc = enc.encode_queries(queries)
    tc = enc.codes[[enc.position_of(t) for t in queries["true_id"]]]
    for j, (name, _kind, _noise, _rate, miss, _cost) in enumerate(ATTRIBUTE_TABLE):
        observed = qc[:, j] >= 0
        assert abs((~observed).mean() - miss) < 0.05, name
        stay = (qc[observed, j] == tc[observed, j]).mean()
        # the schema's reliability is the probability that the encoded observation is right
        assert abs(stay - schema[name].reliability) < 0.06, (name, stay, schema[name].reliability)
    assert schema["face_id"].reliability == pytest.approx(0.90)
    assert schema["age"].confusion == "gaussian" and 0.3 < schema["age"].reliability < 0.6


def test_harsh_is_noisier_and_population_is_the_same_in_every_regime():
    r = simulate(400, 20, 0, "realistic", n_queries=400)
    h = simulate(400, 20, 0, "harsh", n_queries=400)
    assert r.population.equals(h.population)
    assert list(r.queries["true_id"]) == list(h.queries["true_id"])
    assert h.queries.isna().mean().mean() > r.queries.isna().mean().mean() + 0.15
    assert h.schema["face_id"].reliability == pytest.approx(0.80)
    assert h.schema["age"].reliability < r.schema["age"].reliability
    with pytest.raises(VisecError, match="regime"):
        simulate(10, 20, 0, "chaotic")


def test_fewer_and_more_attributes():
    full, _ = simulate_population(200, 20, 9)
    few, _ = simulate_population(200, 5, 9)
    assert few.equals(full.iloc[:, :5])
    more = simulate(200, 24, 9, "realistic", n_queries=10)
    assert more.population.shape == (200, 24) and more.population.iloc[:, :20].equals(full)
    assert more.schema.names[-1] == "extra_24"
    with pytest.raises(VisecError):
        simulate(0, 20, 0)


def test_files_round_trip(tmp_path):
    paths = write_simulation(tmp_path / "pop.csv", objects=300, attributes=20, seed=2, regime="harsh", n_queries=25)
    assert paths["schema"].name == "pop.schema.json" and paths["queries"].name == "pop.queries.csv"
    meta = json.loads(paths["schema"].read_text())
    assert meta["format"] == "visec-tit-population" and meta["meta"]["regime"] == "harsh"
    pop, schema = read_population(paths["population"])
    queries = read_queries(paths["queries"], schema)
    mem = simulate(300, 20, 2, "harsh", n_queries=25)
    assert pop.index.tolist() == mem.population.index.tolist()
    e1, e2 = encode_population(pop, schema), encode_population(mem.population, mem.schema)
    assert np.array_equal(e1.codes, e2.codes)
    assert np.array_equal(e1.encode_queries(queries), e2.encode_queries(mem.queries))
    assert schema.to_dict() == mem.schema.to_dict()
    a = evaluate(make_tracer("tit", pop, schema), queries)
    b = evaluate(make_tracer("tit", mem.population, mem.schema), mem.queries)
    assert a.summary == b.summary
    with pytest.raises(VisecError, match="not found"):
        read_population(tmp_path / "nope.csv")


def test_run_regimes_small():
    res = run_regimes(200, 20, 0, 30, methods=("tit", "face_only"), keep_traces=False)
    assert set(res) == {"clean", "realistic", "harsh"}
    clean = res["clean"]["tit"].summary
    assert clean["identification_accuracy"] == 1.0 and clean["false_identification_rate"] == 0.0
    assert res["harsh"]["tit"].summary["mean_final_entropy"] >= 0.0
    assert res["clean"]["tit"].summary["mean_attributes_used"] <= res["harsh"]["tit"].summary["mean_attributes_used"]
