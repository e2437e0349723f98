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
