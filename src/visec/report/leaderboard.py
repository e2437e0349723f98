"""The leaderboard: result cards as one table (a row per card, flattened metric values)."""

from __future__ import annotations

from typing import Iterable

import pandas as pd

from visec.cards import ResultCard, flatten_metrics
from visec.errors import VisecError


def leaderboard(cards: Iterable[ResultCard], metrics: list[str] | None = None) -> pd.DataFrame:
    """One row per card: identity columns plus flattened metric values (no CI columns)."""
    rows = []
    for c in cards:
        row = {"method": c.method, "train_data": c.train_data, "test_data": c.test_data,
               "protocol": c.protocol, "seed": c.seed, "selection": c.selection}
        flat = {k: v for k, v in flatten_metrics(c.metrics).items() if not k.endswith("_ci")}
        if metrics is not None:
            flat = {k: flat.get(k) for k in metrics}
        row.update(flat)
        rows.append(row)
    if not rows:
        raise VisecError("no result cards to tabulate")
    df = pd.DataFrame(rows)
    sort_key = next((k for k in ("video/auc", "frame/auc") if k in df.columns), None)
    if sort_key:
        df = df.sort_values(sort_key, ascending=False, kind="stable", na_position="last")
    return df.reset_index(drop=True)


def seed_spread(cards: Iterable[ResultCard], metric: str = "frame/auc") -> pd.DataFrame:
    """One row per (model, test data, protocol) over its seeds: how many, the mean and sample standard
    deviation of ``metric`` (training noise), and the first seed's value with its bootstrap interval
    (test-set noise), so the two spreads can be read side by side."""
    rows = []
    for c in cards:
        flat = flatten_metrics(c.metrics)
        if metric in flat:
            rows.append({"method": c.method, "test_data": c.test_data, "protocol": c.protocol, "seed": c.seed,
                         "value": flat[metric], "ci": flat.get(f"{metric}_ci")})
    if not rows:
        raise VisecError(f"no result card has {metric}")
    df = pd.DataFrame(rows).sort_values("seed", kind="stable")
    out = []
    for (method, data, protocol), g in df.groupby(["method", "test_data", "protocol"], sort=False):
        first = g.iloc[0]
        ci = first["ci"]
        out.append({"method": method, "test_data": data, "protocol": protocol, "seeds": len(g),
                    "mean": float(g["value"].mean()), "sd": float(g["value"].std(ddof=1)) if len(g) > 1 else float("nan"),
                    "first_seed": int(first["seed"]), "first_seed_value": float(first["value"]),
                    "first_seed_ci": f"[{ci[0]:.3f}, {ci[1]:.3f}]" if isinstance(ci, (list, tuple)) and len(ci) == 2
                    else ""})
    return pd.DataFrame(out)
