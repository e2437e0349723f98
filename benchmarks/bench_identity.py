"""TIT identity model and tracer: speed against a naive pandas-filtering reference (same run).

Two measurements, each checked for identical results against its reference:

1. **Core identification sets of every object** of the simulated 1000 x 20 table, once over all
   20 attributes and once over the 15 non-identifier attributes (where core sets need 2-3
   attributes). visec: exact search for all objects in one vectorised subset enumeration, and
   greedy set cover with packed bitsets. Reference: the same searches by filtering a DataFrame
   (``df[(df[S] == x_S).all(axis=1)]``) per object; the exact reference runs on a sample of objects
   and is extrapolated (it is slow).
2. **One crisp trace** over populations of 1e4, 1e5 (and with ``--full`` 1e6) simulated objects,
   on the non-identifier attributes so the trace takes several steps. Reference: the same greedy
   information-gain loop with ``value_counts`` and boolean filtering on a pandas DataFrame. One
   noisy trace (realistic query, all attributes) is timed too (no reference).

Run: ``python benchmarks/bench_identity.py [--full] [--sample 100]``. Not a test.
"""

from __future__ import annotations

import argparse
import itertools
import math
import time

import numpy as np
import pandas as pd

from visec.identity import (
    Tracer,
    core_identification_set,
    core_identification_sets,
    encode_population,
    simulate,
)
from visec.identity.simulate import _schema, simulate_population, simulate_queries


def timed(fn, repeat: int = 1):
    best, out = math.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def binned_frame(enc) -> pd.DataFrame:
    """The reference's input: the population with numeric columns binned (codes as values)."""
    return pd.DataFrame(enc.codes, columns=enc.names)


# ------------------------------------------------------------------------------ naive core sets
def naive_greedy(df: pd.DataFrame, u: int, attrs: list[str]) -> tuple[str, ...]:
    row = df.iloc[u]
    others = df.drop(index=df.index[u])
    reachable = ~(others[attrs] == row[attrs]).all(axis=1)
    remaining = others[reachable]
    chosen: list[str] = []
    while len(remaining):
        gains = {a: int((remaining[a] != row[a]).sum()) for a in attrs if a not in chosen}
        best = max(gains.values())
        a = next(a for a in attrs if a in gains and gains[a] == best)
        chosen.append(a)
        remaining = remaining[remaining[a] == row[a]]
    return tuple(chosen)


def naive_exact(df: pd.DataFrame, u: int, attrs: list[str]) -> tuple[str, ...]:
    row = df.iloc[u]
    floor = int((df[attrs] == row[attrs]).all(axis=1).sum())
    for k in range(0, len(attrs) + 1):
        for combo in itertools.combinations(attrs, k):
            c = list(combo)
            if int((df[c] == row[c]).all(axis=1).sum()) == floor:
                return combo
    raise AssertionError


def bench_core_sets(sample: int) -> None:
    pop, schema, _ = simulate(1000, 20, 0, "clean", n_queries=0)
    enc = encode_population(pop, schema)
    df = binned_frame(enc)
    soft = [a.name for a in schema.attributes if a.kind != "id"]
    print("\n== core identification sets, all 1000 objects of the simulated 1000 x 20 table ==")
    print(f"{'attributes':<12} {'method':<34} {'seconds':>9} {'ratio':>9}  result")
    for label, attrs in (("all 20", list(enc.names)), ("15 non-id", soft)):
        t_ex, ex = timed(lambda: core_identification_sets(enc, exact=True, attributes=attrs), 3)
        t_exo, exo = timed(lambda: [core_identification_set(enc, u, exact=True, attributes=attrs)
                                    for u in range(enc.N)])
        t_gr, gr = timed(lambda: core_identification_sets(enc, exact=False, attributes=attrs))
        rng = np.random.default_rng(0)
        idx = np.sort(rng.choice(enc.N, size=min(sample, enc.N), replace=False))
        t_nex_s, nex = timed(lambda: [naive_exact(df, int(u), attrs) for u in idx])
        t_nex = t_nex_s * enc.N / len(idx)
        t_ngr, ngr = timed(lambda: [naive_greedy(df, u, attrs) for u in range(enc.N)])
        same_ex = all(tuple(ex.iloc[int(u)]["attributes"]) == nex[k] for k, u in enumerate(idx))
        same_exo = all(tuple(ex.iloc[u]["attributes"]) == exo[u].attributes for u in range(enc.N))
        same_gr = all(tuple(gr.iloc[u]["attributes"]) == ngr[u] for u in range(enc.N))
        sizes = f"mean |CIS| exact {ex['size'].mean():.3f} (max {ex['size'].max()}), greedy {gr['size'].mean():.3f}"
        print(f"{label:<12} {'visec exact (vectorised, all objects)':<34} {t_ex:>9.3f} {t_nex / t_ex:>8.0f}x  {sizes}")
        print(f"{'':<12} {'visec exact (bitsets, per object)':<34} {t_exo:>9.3f} {t_nex / t_exo:>8.0f}x  "
              f"same sets as vectorised: {same_exo}")
        print(f"{'':<12} {'pandas exact (extrapolated)':<34} {t_nex:>9.2f} {1:>8.0f}x  "
              f"{len(idx)} objects timed, same sets: {same_ex}")
        print(f"{'':<12} {'visec greedy (bitsets)':<34} {t_gr:>9.3f} {t_ngr / t_gr:>8.0f}x")
        print(f"{'':<12} {'pandas greedy':<34} {t_ngr:>9.2f} {1:>8.0f}x  same sets: {same_gr}")


# ------------------------------------------------------------------------------ naive trace
def naive_trace(df: pd.DataFrame, obs: dict[str, int], attrs: list[str]) -> tuple[list[str], int]:
    cand = df
    used: list[str] = []
    remaining = [a for a in attrs if obs.get(a, -1) >= 0]
    while len(cand) > 1 and remaining:
        n = len(cand)
        gains = {}
        for a in remaining:
            c = cand[a].value_counts().to_numpy(dtype=float)
            gains[a] = math.log2(n) - float((c / n * np.log2(c)).sum())
        best = max(gains.values())
        if best <= 1e-9:
            break
        a = next(a for a in remaining if gains[a] >= best - 1e-9)
        remaining.remove(a)
        cand = cand[cand[a] == obs[a]]
        used.append(a)
    return used, len(cand)


def bench_trace(sizes: list[int]) -> None:
    print("\n== one trace over a large population (crisp, 15 non-id attributes, clean query) ==")
    print("visec cold: new tracer, first-step scores computed; warm: first-step scores cached (they are")
    print("query-independent), as when evaluating many queries. noisy: realistic query, all 20 attributes,")
    print("after building the confusion models once (models column).")
    print(f"{'objects':>9} {'simulate':>9} {'encode':>8} {'visec cold':>10} {'warm':>8} {'pandas':>8} "
          f"{'ratio cold':>10} {'ratio warm':>10} {'steps':>5} {'same':>5} {'models':>7} {'noisy':>7}")
    for N in sizes:
        t0 = time.perf_counter()
        pop, aux = simulate_population(N, 20, 0)
        schema = _schema(pop, aux, "realistic", 20, 0)
        t_sim = time.perf_counter() - t0
        t_enc, enc = timed(lambda: encode_population(pop, schema))
        soft = [a.name for a in schema.attributes if a.kind != "id"]
        u = N // 3
        obs_codes = enc.codes[u].copy()
        t_cold, tr = timed(lambda: Tracer(enc, mode="crisp", attributes=soft).trace_codes(obs_codes), 3)
        crisp = Tracer(enc, mode="crisp", attributes=soft)
        crisp.trace_codes(enc.codes[0].copy())
        t_warm, tr_w = timed(lambda: crisp.trace_codes(obs_codes), 3)
        df = binned_frame(enc)
        obs = {n: int(obs_codes[j]) for j, n in enumerate(enc.names)}
        t_pd, (used, n_left) = timed(lambda: naive_trace(df, obs, soft), 1 if N >= 10**6 else 3)
        same = used == tr.attributes_used == tr_w.attributes_used and n_left == tr.n_candidates
        q = simulate_queries(pop, aux, seed=0, regime="realistic", n_queries=1)
        t_models, _ = timed(lambda: [enc.model(j) for j in range(enc.M)])
        qc = enc.encode_queries(q)[0]
        t_noisy, trn = timed(lambda: Tracer(enc, mode="noisy").trace_codes(qc), 1 if N >= 10**6 else 3)
        print(f"{N:>9} {t_sim:>9.2f} {t_enc:>8.2f} {t_cold:>10.4f} {t_warm:>8.4f} {t_pd:>8.4f} "
              f"{t_pd / t_cold:>9.1f}x {t_pd / t_warm:>9.1f}x {len(tr.steps):>5} {str(same):>5} "
              f"{t_models:>7.2f} {t_noisy:>7.3f}")
        print(f"{'':>9} trace: {' -> '.join(f'{s.attribute}({s.candidates_left})' for s in tr.steps)}; "
              f"noisy: {trn.status}, {len(trn.steps)} steps, H={trn.final_entropy:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="also trace over 1e6 objects (about a minute, ~4 GB)")
    ap.add_argument("--sample", type=int, default=100, help="objects timed for the naive exact core-set reference")
    ap.add_argument("--skip-core", action="store_true")
    args = ap.parse_args()
    print("TIT benchmark (simulated data, seed 0; times in seconds, ratio = pandas reference / visec)")
    if not args.skip_core:
        bench_core_sets(args.sample)
    bench_trace([10**4, 10**5] + ([10**6] if args.full else []))


if __name__ == "__main__":
    main()
