"""The TIT tracer's posterior over the population: its support and, in noisy mode, probabilities."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from visec.identity.encoding import ConfusionModel
from visec.identity.gain import crisp_gain, noisy_gain

TIE = 1e-9  # relative tolerance for probabilities tied at the top


class Posterior:
    """Support (positions with p > 0, ascending) and, in noisy mode, their probabilities."""

    def __init__(self, N: int, crisp: bool) -> None:
        self.crisp = crisp
        self.fresh = True  # no observation applied yet
        self.idx = np.arange(N, dtype=np.int64)
        self.p: np.ndarray | None = None if crisp else np.full(N, 1.0 / N)
        self._refresh()

    def _refresh(self) -> None:
        if self.crisp:
            self.plogp = None
            self.H = math.log2(len(self.idx)) if len(self.idx) else 0.0
        else:
            self.plogp = self.p * np.log2(self.p)
            self.H = float(max(0.0, -self.plogp.sum()))

    @property
    def n(self) -> int:
        return len(self.idx)

    def top(self) -> tuple[int, float, int]:
        """(position of the top candidate, its probability, number tied at the top)."""
        if self.n == 0:
            return -1, 0.0, 0
        if self.crisp:
            return int(self.idx[0]), 1.0 / self.n, self.n
        a = int(np.argmax(self.p))
        pm = float(self.p[a])
        ties = int((self.p >= pm * (1 - TIE)).sum())
        return int(self.idx[a]), pm, ties

    def gain(self, x: np.ndarray, model: Callable[[], ConfusionModel], may_miss: bool = True) -> float:
        if self.crisp:
            return crisp_gain(x, may_miss)
        return noisy_gain(x, self.p, self.plogp, self.H, model())

    def update(self, x: np.ndarray, o: int, model: Callable[[], ConfusionModel]) -> bool:
        """Apply observation code ``o`` given the support's codes ``x``; False on contradiction."""
        self.fresh = False
        if self.crisp:
            keep = (x == o) | (x < 0)
            if not keep.any():
                return False
            self.idx = self.idx[keep]
        else:
            mdl = model()
            lik = np.where(x >= 0, mdl.likelihood_row(o)[np.maximum(x, 0)], mdl.r)
            q = self.p * lik
            z = float(q.sum())
            if not z > 0:
                return False
            q /= z
            keep = q > 0
            if not keep.all():
                self.idx, q = self.idx[keep], q[keep]
            self.p = q
        self._refresh()
        return True

    def prob_of(self, pos: int) -> float:
        k = int(np.searchsorted(self.idx, pos))
        if k >= self.n or self.idx[k] != pos:
            return 0.0
        return 1.0 / self.n if self.crisp else float(self.p[k])

    def ranked(self, k: int) -> list[tuple[int, float]]:
        n = self.n
        if n == 0 or k <= 0:
            return []
        if self.crisp:
            return [(int(i), 1.0 / n) for i in self.idx[:k]]
        p = self.p
        if n > k:
            kth = np.partition(p, n - k)[n - k]
            cand = np.nonzero(p >= kth)[0]
        else:
            cand = np.arange(n)
        order = cand[np.lexsort((self.idx[cand], -p[cand]))][:k]
        return [(int(self.idx[i]), float(p[i])) for i in order]
