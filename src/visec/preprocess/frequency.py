"""Frequency transforms shared by the detectors: centred FFT high-pass, orthonormal 2-D DCT-II,
and streaming per-coefficient statistics.

All functions are batched torch ops on the last two axes, differentiable, and free of extra
dependencies (the DCT is two matrix products with the orthonormal DCT-II basis, so torch-dct is
not needed).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch


@lru_cache(maxsize=16)
def _dct_basis(n: int) -> torch.Tensor:
    """The ``n x n`` orthonormal DCT-II matrix ``C`` (rows are frequencies): ``X = C x``, ``x = C^T X``."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    c = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    c[0] /= math.sqrt(2.0)
    return c


def dct_matrix(n: int, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    return _dct_basis(n).to(dtype=dtype, device=device)


def dct2(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2-D DCT-II over the last two axes (energy preserving: Parseval holds)."""
    h, w = x.shape[-2:]
    ch, cw = dct_matrix(h, x.dtype, x.device), dct_matrix(w, x.dtype, x.device)
    return ch @ x @ cw.T


def idct2(coeffs: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dct2` (the orthonormal DCT-III)."""
    h, w = coeffs.shape[-2:]
    ch, cw = dct_matrix(h, coeffs.dtype, coeffs.device), dct_matrix(w, coeffs.dtype, coeffs.device)
    return ch.T @ coeffs @ cw


def low_frequency_box(h: int, w: int, d: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean ``(h, w)`` mask of the centred ``2d x 2d`` box of a *shifted* spectrum
    (rows and columns ``mid - d ... mid + d - 1``, as ACMF's ``P_low``)."""
    box = torch.zeros(h, w, dtype=torch.bool, device=device)
    if d > 0:
        ch, cw = h // 2, w // 2
        box[max(ch - d, 0):ch + d, max(cw - d, 0):cw + d] = True
    return box


def fft_highpass(x: torch.Tensor, d: int, *, absolute: bool = True) -> torch.Tensor:
    """The high-frequency image ``H`` of ACMF: zero the centred low-frequency box of half-width
    ``d`` in the shifted spectrum of every channel and transform back.

    ``absolute`` takes ``|Re(.)|`` (the official torch variant); otherwise the signed real part.
    ``x - H`` is then the low-frequency remainder ``L`` with ``x = L + H``.
    """
    h, w = x.shape[-2:]
    spec = torch.fft.fftshift(torch.fft.fft2(x.float()), dim=(-2, -1))
    spec = spec.masked_fill(low_frequency_box(h, w, d, x.device), 0)
    high = torch.fft.ifft2(torch.fft.ifftshift(spec, dim=(-2, -1))).real
    return (high.abs() if absolute else high).to(x.dtype)


class WelfordStats:
    """Streaming mean and (population) variance of same-shaped tensors, e.g. per DCT coefficient.

    ``update(batch)`` takes ``(N, *shape)``; merging uses Chan et al.'s parallel formula, so the
    result equals ``mean`` / ``var(ddof=0)`` over everything seen, in float64.
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None
        self._m2: torch.Tensor | None = None

    def update(self, batch: torch.Tensor) -> None:
        batch = batch.detach().to(torch.float64)
        n = batch.shape[0]
        if n == 0:
            return
        b_mean = batch.mean(0)
        b_m2 = ((batch - b_mean) ** 2).sum(0)
        if self.mean is None:
            self.count, self.mean, self._m2 = n, b_mean, b_m2
            return
        total = self.count + n
        delta = b_mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self._m2 = self._m2 + b_m2 + delta**2 * (self.count * n / total)
        self.count = total

    @property
    def var(self) -> torch.Tensor:
        if self.mean is None or self._m2 is None:
            raise ValueError("WelfordStats: no data seen yet")
        return self._m2 / self.count
