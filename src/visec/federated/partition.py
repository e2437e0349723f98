"""How a manifest's training split is shared among federated clients: by whole videos (a video's
frames never sit on two clients), IID, one manipulation family per client, or Dirichlet skew."""

from __future__ import annotations

import numpy as np
import pandas as pd

from visec.errors import ConfigError


def _groups(df: pd.DataFrame) -> pd.DataFrame:
    """One row per video: its rows' positions, its label and its family ('real' for reals)."""
    key = df["video_id"].astype(str).to_numpy()
    fam = np.where(df["label"].to_numpy() == 1, df["manipulation"].astype(str).to_numpy(), "real")
    g = pd.DataFrame({"video": key, "family": fam, "pos": np.arange(len(df))})
    return g.groupby("video", sort=True).agg(family=("family", "first"), pos=("pos", list)).reset_index()


def partition(df: pd.DataFrame, clients: int, scheme: str = "iid", seed: int = 0,
              alpha: float = 0.5) -> list[np.ndarray]:
    """Row positions of ``df`` (a training split) for each of ``clients`` clients.

    * ``iid``: videos shuffled and dealt round-robin;
    * ``family``: the paper's non-IID setting by artifact: client ``k`` holds the fakes of family
      ``k mod F`` (a family held by several clients is dealt among them) and an even share of the
      real videos;
    * ``dirichlet``: for each family (reals included) the client shares are drawn from
      Dirichlet(``alpha``), so both label balance and family mix vary across clients.

    Every video lands on exactly one client; a client left with no video is an error.
    """
    if clients < 1:
        raise ConfigError(f"fed.clients must be >= 1, got {clients}")
    rng = np.random.default_rng(seed)
    g = _groups(df)
    owner = np.full(len(g), -1)
    if scheme == "iid":
        order = rng.permutation(len(g))
        owner[order] = np.arange(len(g)) % clients
    elif scheme == "family":
        fams = sorted(set(g["family"]) - {"real"})
        if not fams:
            raise ConfigError("fed.partition=family needs fake rows with a manipulation family")
        holders = {f: [k for k in range(clients) if fams[k % len(fams)] == f] for f in fams}
        for f in [*fams, "real"]:
            idx = rng.permutation(np.flatnonzero(g["family"].to_numpy() == f))
            who = holders[f] if f != "real" else list(range(clients))
            if not who:  # more families than clients: the families beyond go round-robin
                who = [fams.index(f) % clients]
            owner[idx] = np.asarray(who)[np.arange(len(idx)) % len(who)]
    elif scheme == "dirichlet":
        for f in sorted(set(g["family"])):
            idx = rng.permutation(np.flatnonzero(g["family"].to_numpy() == f))
            shares = rng.dirichlet(np.full(clients, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).round().astype(int)
            for k, part in enumerate(np.split(idx, cuts)):
                owner[part] = k
    else:
        raise ConfigError(f"unknown fed.partition '{scheme}' (iid, family, dirichlet)")
    empty = [k for k in range(clients) if not (owner == k).any()]
    if empty:
        raise ConfigError(f"fed.partition={scheme}: client(s) {empty} get no training video "
                          f"({len(g)} videos for {clients} clients)")
    return [np.sort(np.concatenate([np.asarray(p, dtype=np.int64) for p in g["pos"][owner == k]]))
            for k in range(clients)]


def describe(df: pd.DataFrame, parts: list[np.ndarray]) -> list[dict[str, int]]:
    """Per client: number of images, reals and fakes of each family (for the card and the report)."""
    out = []
    for rows in parts:
        sub = df.iloc[rows]
        fakes = sub.loc[sub["label"] == 1, "manipulation"].astype(str).value_counts().to_dict()
        out.append({"images": int(len(sub)), "real": int((sub["label"] == 0).sum()),
                    **{f"fake:{k}": int(v) for k, v in sorted(fakes.items())}})
    return out
