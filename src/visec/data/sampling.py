"""Which frames of a video to use: evenly spaced over the whole video.

Shared by the data modules (``data.frames_per_video``) and preprocessing (frame extraction), so it
lives in the data layer, below both."""

from __future__ import annotations


def sample_indices(n_total: int, n: int) -> list[int]:
    """``n`` evenly spaced frame indices over ``n_total`` frames (all frames if ``n >= n_total``).

    Index ``i`` is the centre frame of the ``i``-th of ``n`` equal segments,
    ``floor((i + 0.5) * n_total / n)``; e.g. ``sample_indices(10, 5) == [1, 3, 5, 7, 9]``.
    The result is sorted and free of duplicates.
    """
    if isinstance(n, bool) or int(n) != n or n <= 0:
        raise ValueError(f"number of frames to sample must be a positive integer, got {n!r}")
    if isinstance(n_total, bool) or int(n_total) != n_total or n_total < 0:
        raise ValueError(f"frame count must be a non-negative integer, got {n_total!r}")
    n, n_total = int(n), int(n_total)
    if n >= n_total:
        return list(range(n_total))
    # Segments are longer than one frame, so the centres are strictly increasing.
    return [int((2 * i + 1) * n_total // (2 * n)) for i in range(n)]
