"""Expected information gain (bits) of observing one attribute, for the TIT tracer.

``crisp_gain``: uniform posterior over the candidates, exact matching; ``noisy_gain``: any
posterior, observations through the attribute's confusion model (:mod:`visec.identity.encoding`).
A missing population value (code ``-1``) is "unknown": it matches every observation.
"""

from __future__ import annotations

import math

import numpy as np

from visec.identity.encoding import ConfusionModel


def crisp_gain(x: np.ndarray, may_miss: bool = True) -> float:
    """Expected entropy reduction (bits) of observing an attribute whose codes over the current
    candidates are ``x`` (uniform posterior; ``-1`` = unknown value, matches everything).
    ``may_miss=False`` promises there is no ``-1`` (skips a pass)."""
    n = len(x)
    if n <= 1:
        return 0.0
    present = x[x >= 0] if may_miss else x
    n_p = len(present)
    if n_p == 0:
        return 0.0
    n_miss = n - n_p
    counts = np.unique(present, return_counts=True)[1] if n_p * 4 < int(present.max()) else np.bincount(present)
    counts = counts[counts > 0].astype(float)
    eh = float((counts * np.log2(counts + n_miss)).sum() / n_p)
    return max(0.0, math.log2(n) - eh)


def noisy_gain(x: np.ndarray, p: np.ndarray, plogp: np.ndarray, H: float, model: ConfusionModel) -> float:
    """Expected information gain (bits) of one attribute under the confusion ``model``, for a
    posterior ``p`` over objects whose codes are ``x`` (``plogp = p * log2 p``, ``H`` its entropy).
    Vectorised over the ``K + 1`` outcomes through the sparse model (see encoding)."""
    pres = x >= 0
    if pres.all():
        xp, pp, sp, mm, sm = x, p, plogp, 0.0, 0.0
    else:
        xp, pp, sp = x[pres], p[pres], plogp[pres]
        mm, sm = float(p[~pres].sum()), float(plogp[~pres].sum())
    Mp = float(pp.sum())
    if Mp <= 0.0:
        return 0.0
    K, c, r = model.K, model.c, model.r
    m = np.bincount(xp, weights=pp, minlength=K)
    s = np.bincount(xp, weights=sp, minlength=K)
    keep = m[model.cols] > 0
    rows, cols, vals = model.rows[keep], model.cols[keep], model.vals[keep]
    mc, sc = m[cols], s[cols]
    if c > 0:
        lc = math.log2(c)
        Sp = float(sp.sum())
        Zb, Wb = c * Mp, c * (Sp + Mp * lc)
        dZ = (vals - c) * mc
        dW = vals * (sc + mc * np.log2(vals)) - c * (sc + mc * lc)
    else:
        Zb = Wb = 0.0
        pos = vals > 0
        dZ = vals * mc
        dW = np.where(pos, vals * (sc + mc * np.log2(np.where(pos, vals, 1.0))), 0.0)
    Zp = Zb + np.bincount(rows, weights=dZ, minlength=K + 1)
    Wp = Wb + np.bincount(rows, weights=dW, minlength=K + 1)
    if mm > 0:
        Z = Zp + r * mm
        W = Wp + r * (sm + mm * math.log2(r))
    else:
        Z, W = Zp, Wp
    weight = Zp / Mp
    ok = (weight > 0) & (Z > 0)
    Ho = np.log2(Z[ok]) - W[ok] / Z[ok]
    return float(H - (weight[ok] * Ho).sum())
