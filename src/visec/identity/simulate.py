"""Seeded simulator of a TIT population (the "gallery") and noisy, partially missing queries.

The TIT paper reports a simulated set of 1000 objects with 20 labelled identity attributes but does
not publish it; this generator follows the reconstruction in the method notes (table in section
2.4). **All values are synthetic; no real persons are involved. Numbers measured on it are "on our
simulated data" and are not comparable to the paper.**

Attributes, in dependency order (name: kind, cardinality, dependence; query noise; missing rate):

=====================  ============  ==============================  =====================  =======
attribute              kind          values / dependence             realistic noise        missing
=====================  ============  ==============================  =====================  =======
gender                 categorical   M/F (0.51/0.49)                 flip 1%                2%
age                    numeric       18-80, skewed pyramid           +N(0,4) yrs, 13 bins   5%
height                 numeric       N(172,6) M / N(160,5.5) F       +N(0,2) cm, 5-cm bins  10%
build                  ordinal       4 BMI classes | age             adjacent class 10%     15%
blood_type             categorical   O/A/B/AB .34/.28/.29/.09        none                   60%
face_id                id            one template per object;        one of 5 look-alikes   20%
                                     twin pairs share one            10%
fingerprint_id         id            unique                          0.5%                   85%
gait_cluster           categorical   50, Dirichlet | height, build   15%                    40%
glasses                categorical   yes/no, p~0.35 | age            5%                     10%
distinctive_mark       categorical   6, 90% "none"                   5%                     30%
surname                categorical   300, Zipf (top 3 ~20%) | prov.  homophone swap 3%      20%
home_province          categorical   34, population-weighted         2%                     15%
residence_district     categorical   50 | province                   5%                     10%
occupation             categorical   25 | education, age             10%                    20%
education              ordinal       6 | age                         adjacent 5%            20%
marital_status         categorical   4 | age                         5%                     25%
phone_number           id            unique 11-digit                 one-digit error 2%     50%
vehicle_plate          id            unique for ~60%, else "none"    OCR char error 5%      60%
frequent_location      categorical   200 grid cells | district       adjacent cell 10%      30%
device_id              id            unique for ~70%, else "none"    none                   70%
=====================  ============  ==============================  =====================  =======

Beyond 20 attributes, ``extra_<k>`` categoricals (3-30 values, Dirichlet-skewed, 5% flip, 20%
missing) are appended; fewer than 20 keeps the first ones (the first ``M`` columns of the 20-column
table for the same seed). ``N // 100`` twin pairs share every attribute except fingerprint, phone
and device id (so every full 20-attribute vector stays unique; checked).

**Regimes**: ``clean`` (queries are exact copies: no noise, nothing missing), ``realistic`` (the
table) and ``harsh`` (error rates and noise s.d. doubled, missing rates +20 points, capped at 95%).
The regime changes the queries and the schema's reliabilities, never the population. Queries are
drawn for a seeded subset of ``n_queries`` objects (default ``min(N, 200)``, the same subset in
every regime) from random streams separate from the generator's.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from visec.identity.encoding import _gaussian_band
from visec.identity.errors import IdentityError
from visec.identity.schema import AttributeSpec, Schema, sidecar_paths, write_population, write_queries

REGIMES = ("clean", "realistic", "harsh")
GENERATOR_VERSION = 1
BUILD_LEVELS = ("underweight", "normal", "overweight", "obese")
EDUCATION_LEVELS = ("primary", "middle", "high", "vocational", "bachelor", "postgraduate")
OCCUPATIONS = ("student", "retired", "farmer", "factory_worker", "driver", "teacher", "nurse", "doctor",
               "engineer", "programmer", "accountant", "salesperson", "civil_servant", "police", "soldier",
               "chef", "cleaner", "construction", "shop_owner", "artist", "journalist", "lawyer",
               "researcher", "courier", "unemployed")
MARKS = ("none", "tattoo_arm", "tattoo_neck", "scar_face", "mole_cheek", "piercing")
GRID = (20, 10)  # frequent-location grid: 200 cells
AGE_BINS = tuple(float(x) for x in range(23, 79, 5))  # 12 edges -> 13 bins
HEIGHT_BINS = tuple(float(x) for x in range(145, 196, 5))
FACE_LOOKALIKE_OFFSETS = (-2, -1, 1, 2, 3)

# name, kind, noise type, error rate or s.d., missing rate, cost
ATTRIBUTE_TABLE: tuple[tuple[str, str, str, float, float, float], ...] = (
    ("gender", "categorical", "flip", 0.01, 0.02, 1.0),
    ("age", "numeric", "gauss", 4.0, 0.05, 1.0),
    ("height", "numeric", "gauss", 2.0, 0.10, 1.0),
    ("build", "ordinal", "adjacent", 0.10, 0.15, 1.0),
    ("blood_type", "categorical", "flip", 0.0, 0.60, 3.0),
    ("face_id", "id", "lookalike", 0.10, 0.20, 2.0),
    ("fingerprint_id", "id", "flip", 0.005, 0.85, 5.0),
    ("gait_cluster", "categorical", "flip", 0.15, 0.40, 2.0),
    ("glasses", "categorical", "flip", 0.05, 0.10, 1.0),
    ("distinctive_mark", "categorical", "flip", 0.05, 0.30, 1.0),
    ("surname", "categorical", "homophone", 0.03, 0.20, 2.0),
    ("home_province", "categorical", "flip", 0.02, 0.15, 2.0),
    ("residence_district", "categorical", "flip", 0.05, 0.10, 2.0),
    ("occupation", "categorical", "flip", 0.10, 0.20, 2.0),
    ("education", "ordinal", "adjacent", 0.05, 0.20, 2.0),
    ("marital_status", "categorical", "flip", 0.05, 0.25, 2.0),
    ("phone_number", "id", "digit", 0.02, 0.50, 4.0),
    ("vehicle_plate", "id", "ocr", 0.05, 0.60, 3.0),
    ("frequent_location", "categorical", "cell", 0.10, 0.30, 3.0),
    ("device_id", "id", "flip", 0.0, 0.70, 5.0),
)
SEPARATING = ("fingerprint_id", "phone_number", "device_id")  # what twins do not share
CONFUSION_OF_NOISE = {"flip": "uniform", "gauss": "gaussian", "adjacent": "adjacent", "lookalike": "neighbours",
                      "homophone": "neighbours", "digit": "uniform", "ocr": "uniform", "cell": "neighbours"}
_REGIME_CODE = {r: i for i, r in enumerate(REGIMES)}


class Simulation(NamedTuple):
    """``(population, schema, queries)``; unpacks like a tuple."""

    population: pd.DataFrame
    schema: Schema
    queries: pd.DataFrame


# ------------------------------------------------------------------------------------ sampling
def _sample_rows(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One categorical draw per row of a (n, k) probability matrix (inverse CDF, vectorised)."""
    cum = np.cumsum(probs, axis=1)
    cum[:, -1] = 1.0
    u = rng.random(len(probs))
    return (u[:, None] > cum).sum(axis=1)


def _sample_grouped(rng: np.random.Generator, group: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Draw a category per object from ``table[group]`` (loops over groups, not objects)."""
    out = np.empty(len(group), dtype=np.int64)
    for g in np.unique(group):
        rows = np.nonzero(group == g)[0]
        out[rows] = rng.choice(table.shape[1], size=len(rows), p=table[g] / table[g].sum())
    return out


def _unique_ints(rng: np.random.Generator, n: int, low: int, high: int) -> np.ndarray:
    """``n`` distinct integers in ``[low, high)``, in random order."""
    if high - low < n:
        raise IdentityError(f"cannot draw {n} distinct values from a range of {high - low}")
    got = np.zeros(0, dtype=np.int64)
    while len(got) < n:
        extra = rng.integers(low, high, size=int((n - len(got)) * 1.1) + 16)
        got = pd.unique(np.concatenate([got, extra]))
    return got[:n]


def _labels(prefix: str, codes: np.ndarray, width: int) -> np.ndarray:
    s = pd.Series(codes).astype(str).str.zfill(width)
    return (prefix + s).to_numpy(dtype=object)


def _interp(t: np.ndarray, young: np.ndarray, old: np.ndarray) -> np.ndarray:
    p = (1 - t)[:, None] * young[None, :] + t[:, None] * old[None, :]
    return p / p.sum(axis=1, keepdims=True)


def _province_district_block(n_prov: int = 34, n_dist: int = 50) -> list[list[int]]:
    return [[(p * n_dist // n_prov + k) % n_dist for k in range(3)] for p in range(n_prov)]


# ------------------------------------------------------------------------------------ population
def _base_population(N: int, seed: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    rng = np.random.default_rng([seed, 0])
    cols: dict[str, np.ndarray] = {}
    aux: dict[str, Any] = {}
    female = rng.random(N) < 0.49
    cols["gender"] = np.where(female, "F", "M").astype(object)
    age = np.minimum(80, np.floor(18 + 63 * rng.beta(1.5, 2.2, N))).astype(float)
    cols["age"] = age
    t = (age - 18) / 62.0
    height = np.where(female, rng.normal(160, 5.5, N), rng.normal(172, 6.0, N))
    cols["height"] = np.round(height, 1)
    build = _sample_rows(rng, _interp(t, np.array([.10, .60, .22, .08]), np.array([.04, .35, .37, .24])))
    cols["build"] = np.asarray(BUILD_LEVELS, dtype=object)[build]
    cols["blood_type"] = np.asarray(["O", "A", "B", "AB"], dtype=object)[
        rng.choice(4, size=N, p=[.34, .28, .29, .09])]
    # face templates: one per object; look-alikes are ring neighbours in a random embedding order
    w = max(4, len(str(N - 1)))
    template = rng.permutation(N)
    ring = rng.permutation(N)  # ring[pos] = template at that position
    pos_of = np.empty(N, dtype=np.int64)
    pos_of[ring] = np.arange(N)
    nb = np.stack([ring[(pos_of + off) % N] for off in FACE_LOOKALIKE_OFFSETS], axis=1) if N > 1 else np.zeros((N, 0), int)
    aux["face_templates"] = _labels("F", np.arange(N), w)
    aux["face_neighbours"] = nb  # template index -> look-alike template indices
    cols["face_id"] = aux["face_templates"][template]
    cols["fingerprint_id"] = _labels("FP", rng.permutation(N), w + 1)
    hter = np.digitize(height, [162.0, 171.0])
    gait_tab = rng.dirichlet(np.full(50, 0.3), size=12)
    cols["gait_cluster"] = _labels("G", _sample_grouped(rng, hter * 4 + build, gait_tab), 2)
    cols["glasses"] = np.where(rng.random(N) < 0.15 + 0.45 * t, "yes", "no").astype(object)
    cols["distinctive_mark"] = np.asarray(MARKS, dtype=object)[
        rng.choice(6, size=N, p=[.90, .02, .02, .02, .02, .02])]
    prov_w = np.exp(rng.normal(0, 0.8, 34))
    province = rng.choice(34, size=N, p=prov_w / prov_w.sum())
    zipf = 1.0 / np.arange(1, 301) ** 0.85
    sur_tab = zipf[None, :] * np.exp(rng.normal(0, 0.5, (34, 300)))
    surname = _sample_grouped(rng, province, sur_tab)
    cols["surname"] = _labels("S", surname, 3)
    pairs = rng.permutation(300).reshape(150, 2)
    partner = np.empty(300, dtype=np.int64)
    partner[pairs[:, 0]], partner[pairs[:, 1]] = pairs[:, 1], pairs[:, 0]
    aux["surname_partner"] = partner
    cols["home_province"] = _labels("P", province + 1, 2)
    block = np.asarray(_province_district_block())
    local = block[province, rng.integers(0, 3, N)]
    district = np.where(rng.random(N) < 0.7, local, rng.integers(0, 50, N))
    cols["residence_district"] = _labels("D", district, 2)
    edu = _sample_rows(rng, _interp(t, np.array([.05, .15, .25, .20, .28, .07]),
                                    np.array([.25, .30, .20, .12, .10, .03])))
    occ_tab = rng.dirichlet(np.full(len(OCCUPATIONS), 0.6), size=6)
    occ_tab[:, :2] = 0.0  # student / retired come from the age rules below
    occ = _sample_grouped(rng, edu, occ_tab)
    u = rng.random(N)
    occ = np.where((age < 23) & (u < 0.6), 0, occ)
    occ = np.where((age >= 62) & (u < 0.7), 1, occ)
    cols["occupation"] = np.asarray(OCCUPATIONS, dtype=object)[occ]
    cols["education"] = np.asarray(EDUCATION_LEVELS, dtype=object)[edu]
    mar = _sample_rows(rng, _interp(t, np.array([.70, .28, .02, .00]), np.array([.05, .60, .12, .23])))
    cols["marital_status"] = np.asarray(["single", "married", "divorced", "widowed"], dtype=object)[mar]
    phone = _unique_ints(rng, N, 10**10, 2 * 10**10)
    cols["phone_number"] = pd.Series(phone).astype(str).to_numpy(dtype=object)
    own_p = np.clip(rng.beta(6, 4, len(OCCUPATIONS)), 0.05, 0.95)
    owns = rng.random(N) < own_p[occ]
    plates = _unique_ints(rng, N, 0, 26 * 10**5)
    letters = np.asarray(list("ABCDEFGHJKLMNPQRSTUVWXYZAB"), dtype=object)[plates // 10**5]
    plate_str = ("P" + pd.Series(letters).astype(str) + pd.Series(plates % 10**5).astype(str).str.zfill(5))
    cols["vehicle_plate"] = np.where(owns, plate_str.to_numpy(dtype=object), "none").astype(object)
    centre_r = rng.integers(0, GRID[0], 50)
    centre_c = rng.integers(0, GRID[1], 50)
    lr = np.clip(np.round(centre_r[district] + rng.normal(0, 1.5, N)), 0, GRID[0] - 1).astype(int)
    lc = np.clip(np.round(centre_c[district] + rng.normal(0, 1.5, N)), 0, GRID[1] - 1).astype(int)
    cols["frequent_location"] = _cell_labels(lr, lc)
    has_dev = rng.random(N) < 0.9 - 0.5 * t
    dev = _unique_ints(rng, N, 0, 10**9)
    cols["device_id"] = np.where(has_dev, _labels("DEV", dev, 9), "none").astype(object)
    # twins: copy everything except the separating attributes
    n_twins = N // 100 if N >= 4 else 0
    pick = rng.choice(N, size=2 * n_twins, replace=False)
    a, b = pick[:n_twins], pick[n_twins:]
    for name in cols:
        if name not in SEPARATING:
            cols[name][b] = cols[name][a]
    aux["twins"] = np.stack([a, b], axis=1)
    return cols, aux


def _cell_labels(r: np.ndarray, c: np.ndarray) -> np.ndarray:
    return ("L" + pd.Series(r).astype(str).str.zfill(2) + "_" + pd.Series(c).astype(str).str.zfill(2)).to_numpy(dtype=object)


def _grid_neighbours() -> dict[str, list[str]]:
    out = {}
    for r in range(GRID[0]):
        for c in range(GRID[1]):
            nb = [(r + dr, c + dc) for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1))
                  if 0 <= r + dr < GRID[0] and 0 <= c + dc < GRID[1]]
            out[f"L{r:02d}_{c:02d}"] = [f"L{a:02d}_{b:02d}" for a, b in nb]
    return out


def _extra_attributes(N: int, M: int, seed: int) -> dict[str, np.ndarray]:
    cols = {}
    for k in range(21, M + 1):
        rng = np.random.default_rng([seed, 1, k])
        card = int(rng.integers(3, 31))
        p = rng.dirichlet(np.full(card, 0.7))
        cols[f"extra_{k}"] = _labels("V", rng.choice(card, size=N, p=p), 2)
    return cols


def _noise_spec(regime: str, M: int) -> list[tuple[str, str, str, float, float, float]]:
    table = list(ATTRIBUTE_TABLE[:M]) + [(f"extra_{k}", "categorical", "flip", 0.05, 0.20, 1.0)
                                         for k in range(21, M + 1)]
    out = []
    for name, kind, noise, rate, miss, cost in table:
        if regime == "clean":
            rate_eff, miss_eff = 0.0, 0.0
        elif regime == "realistic":
            rate_eff, miss_eff = rate, miss
        else:
            rate_eff, miss_eff = 2 * rate, min(0.95, miss + 0.20)
        out.append((name, kind, noise, rate_eff, miss_eff, cost))
    return out


def _schema(pop: pd.DataFrame, aux: dict[str, Any], regime: str, M: int, seed: int) -> Schema:
    specs = []
    for (name, kind, noise, rate, miss, cost), base in zip(_noise_spec(regime, M), list(ATTRIBUTE_TABLE) + [None] * M):
        kw: dict[str, Any] = {"name": name, "kind": kind, "cost": cost, "confusion": CONFUSION_OF_NOISE[noise]}
        if name == "age":
            kw["bins"] = AGE_BINS
        if name == "height":
            kw["bins"] = HEIGHT_BINS
        if name == "build":
            kw["levels"] = BUILD_LEVELS
        if name == "education":
            kw["levels"] = EDUCATION_LEVELS
        if noise == "gauss":
            sd = base[3] if base else 1.0
            kw["noise_sd"] = rate if rate > 0 else sd
            if rate > 0:
                G = _gaussian_band(kw["bins"], rate)
                codes = np.searchsorted(np.asarray(kw["bins"]), pop[name].to_numpy(dtype=float), side="right")
                freq = np.bincount(codes, minlength=G.shape[0]) / len(codes)
                kw["reliability"] = float(min(1.0, (np.diag(G) * freq).sum()))
            else:
                kw["reliability"] = 1.0
        else:
            kw["reliability"] = 1.0 - rate
        if name == "face_id":
            t = aux["face_templates"]
            kw["neighbours"] = dict(zip(t.tolist(), t[aux["face_neighbours"]].tolist()))
        elif name == "surname":
            names = [f"S{i:03d}" for i in range(300)]
            kw["neighbours"] = {names[i]: [names[int(aux["surname_partner"][i])]] for i in range(300)}
        elif name == "frequent_location":
            kw["neighbours"] = _grid_neighbours()
        kw["description"] = f"{noise} noise {rate:g}, missing {miss:g} ({regime})"
        specs.append(AttributeSpec(**kw))
    meta = {"generator": "visec.identity.simulate", "generator_version": GENERATOR_VERSION, "seed": seed,
            "regime": regime, "objects": len(pop), "attributes": M,
            "twins": [[str(pop.index[a]), str(pop.index[b])] for a, b in aux["twins"]],
            "missing_rates": {s[0]: s[4] for s in _noise_spec(regime, M)},
            "note": "synthetic data; TIT numbers on it are not comparable to the paper"}
    return Schema(specs, meta=meta)


def simulate_population(objects: int = 1000, attributes: int = 20, seed: int = 0) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The clean population table (index ``object_id``) and generator side information."""
    if int(objects) < 1:
        raise IdentityError(f"objects must be >= 1, got {objects}")
    if int(attributes) < 1:
        raise IdentityError(f"attributes must be >= 1, got {attributes}")
    N, M = int(objects), int(attributes)
    cols, aux = _base_population(N, seed)
    cols.update(_extra_attributes(N, M, seed))
    names = [t[0] for t in ATTRIBUTE_TABLE[:M]] + [f"extra_{k}" for k in range(21, M + 1)]
    w = max(4, len(str(N - 1)))
    pop = pd.DataFrame({n: cols[n] for n in names}, index=pd.Index(_labels("U", np.arange(N), w), name="object_id"))
    for n in names:
        if pop[n].dtype != float:
            pop[n] = pop[n].astype(object)
    aux["names"] = names
    if M >= 20 and pop.duplicated().any():  # guaranteed by construction; keep the check
        raise IdentityError("simulated population has duplicate full attribute vectors")
    return pop, aux


# ------------------------------------------------------------------------------------ queries
def _noisy_column(rng: np.random.Generator, name: str, noise: str, rate: float, true: np.ndarray,
                  pop_col: np.ndarray, aux: dict[str, Any]) -> np.ndarray:
    Q = len(true)
    out = true.copy()
    if noise == "gauss":
        return np.round(true.astype(float) + (rng.normal(0, rate, Q) if rate > 0 else 0.0), 1)
    err = rng.random(Q) < rate
    idx = np.nonzero(err)[0]
    if len(idx) == 0:
        return out
    if noise == "flip":
        cats = pd.unique(pd.Series(pop_col, dtype=object)) if name not in _CATEGORIES else np.asarray(_CATEGORIES[name], dtype=object)
        cats = np.asarray(cats, dtype=object)
        if len(cats) > 1:
            pos = pd.Index(cats).get_indexer(true[idx])
            new = (pos + rng.integers(1, len(cats), len(idx))) % len(cats)
            out[idx] = cats[new]
    elif noise == "adjacent":
        levels = BUILD_LEVELS if name == "build" else EDUCATION_LEVELS
        pos = pd.Index(levels).get_indexer(true[idx])
        step = np.where(rng.random(len(idx)) < 0.5, -1, 1)
        step = np.where(pos == 0, 1, np.where(pos == len(levels) - 1, -1, step))
        out[idx] = np.asarray(levels, dtype=object)[pos + step]
    elif noise == "lookalike":
        t = aux["face_templates"]
        pos = pd.Index(t).get_indexer(true[idx])
        nb = aux["face_neighbours"]
        if nb.shape[1]:
            out[idx] = t[nb[pos, rng.integers(0, nb.shape[1], len(idx))]]
    elif noise == "homophone":
        k = np.array([int(v[1:]) for v in true[idx]])
        out[idx] = np.array([f"S{int(aux['surname_partner'][i]):03d}" for i in k], dtype=object)
    elif noise == "digit":
        posd = rng.integers(1, 11, len(idx))
        shift = rng.integers(1, 10, len(idx))
        vals = []
        for v, p_, s_ in zip(true[idx], posd, shift):
            d = (int(v[p_]) + int(s_)) % 10
            vals.append(v[:p_] + str(d) + v[p_ + 1:])
        out[idx] = np.asarray(vals, dtype=object)
    elif noise == "ocr":
        alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
        vals = []
        for v in true[idx]:
            if v == "none":
                vals.append(v)
                continue
            p_ = int(rng.integers(1, len(v)))
            ch = alphabet[int(rng.integers(0, len(alphabet)))]
            if ch == v[p_]:
                ch = alphabet[(alphabet.index(ch) + 1) % len(alphabet)]
            vals.append(v[:p_] + ch + v[p_ + 1:])
        out[idx] = np.asarray(vals, dtype=object)
    elif noise == "cell":
        r = np.array([int(v[1:3]) for v in true[idx]])
        c = np.array([int(v[4:6]) for v in true[idx]])
        moves = np.array([(-1, 0), (1, 0), (0, -1), (0, 1)])
        m = moves[rng.integers(0, 4, len(idx))]
        nr, nc = r + m[:, 0], c + m[:, 1]
        bad = (nr < 0) | (nr >= GRID[0]) | (nc < 0) | (nc >= GRID[1])
        nr, nc = np.where(bad, r - m[:, 0], nr), np.where(bad, c - m[:, 1], nc)
        out[idx] = _cell_labels(nr, nc)
    else:  # pragma: no cover
        raise IdentityError(f"unknown noise type {noise!r}")
    return out


_CATEGORIES: dict[str, tuple[str, ...]] = {
    "gender": ("M", "F"), "blood_type": ("O", "A", "B", "AB"), "glasses": ("yes", "no"),
    "distinctive_mark": MARKS, "occupation": OCCUPATIONS,
    "marital_status": ("single", "married", "divorced", "widowed"),
    "gait_cluster": tuple(f"G{i:02d}" for i in range(50)),
    "home_province": tuple(f"P{i:02d}" for i in range(1, 35)),
    "residence_district": tuple(f"D{i:02d}" for i in range(50)),
}


def simulate_queries(population: pd.DataFrame, aux: dict[str, Any], *, seed: int = 0, regime: str = "realistic",
                     n_queries: int | None = None) -> pd.DataFrame:
    """Noisy, partially missing observations of a seeded subset of objects (``true_id`` column)."""
    if regime not in REGIMES:
        raise IdentityError(f"regime must be one of {', '.join(REGIMES)}, got {regime!r}")
    N = len(population)
    M = len(aux["names"])
    Q = min(N, 200) if n_queries is None else int(n_queries)
    if not 0 <= Q <= N:
        raise IdentityError(f"n_queries must be between 0 and {N}, got {n_queries}")
    sub = np.sort(np.random.default_rng([seed, 2]).choice(N, size=Q, replace=False))
    data: dict[str, Any] = {"true_id": population.index.to_numpy()[sub]}
    for j, (name, kind, noise, rate, miss, _cost) in enumerate(_noise_spec(regime, M)):
        rng = np.random.default_rng([seed, 3, _REGIME_CODE[regime], j])
        pop_col = population[name].to_numpy()
        true = pop_col[sub].copy()
        vals = _noisy_column(rng, name, noise, rate, true, pop_col, aux)
        gone = rng.random(Q) < miss
        if noise == "gauss":
            vals = np.where(gone, np.nan, vals.astype(float))
        else:
            vals = np.asarray(vals, dtype=object)
            vals[gone] = None
        data[name] = vals
    w = max(4, len(str(max(Q - 1, 0))))
    return pd.DataFrame(data, index=pd.Index(_labels("Q", np.arange(Q), w), name="query_id"))


def simulate(objects: int = 1000, attributes: int = 20, seed: int = 0, regime: str = "realistic",
             n_queries: int | None = None) -> Simulation:
    """Population, schema (reliabilities of ``regime``) and queries; deterministic in ``seed``."""
    if regime not in REGIMES:
        raise IdentityError(f"regime must be one of {', '.join(REGIMES)}, got {regime!r}")
    pop, aux = simulate_population(objects, attributes, seed)
    schema = _schema(pop, aux, regime, int(attributes), seed)
    queries = simulate_queries(pop, aux, seed=seed, regime=regime, n_queries=n_queries)
    return Simulation(pop, schema, queries)


def write_simulation(out: str | Path, objects: int = 1000, attributes: int = 20, seed: int = 0,
                     regime: str = "realistic", n_queries: int | None = None) -> dict[str, Path]:
    """Write ``out`` (population CSV), ``<stem>.schema.json`` and ``<stem>.queries.csv``."""
    sim = simulate(objects, attributes, seed, regime, n_queries)
    paths = write_population(sim.population, sim.schema, out)
    paths["queries"] = write_queries(sim.queries, sidecar_paths(out)["queries"])
    return paths


def dataset_hash(*frames: pd.DataFrame) -> str:
    """SHA-256 over the contents (values, index, column names) of one or more tables."""
    h = hashlib.sha256()
    for df in frames:
        h.update(",".join(map(str, df.columns)).encode())
        h.update(pd.util.hash_pandas_object(df.astype(object).where(df.notna(), None), index=True).to_numpy().tobytes())
    return h.hexdigest()
