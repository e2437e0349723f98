"""Frame reading with OpenCV (which frames to read: :func:`visec.data.sampling.sample_indices`).

* :func:`count_frames` trusts the container's frame count only after checking it: the last claimed
  frame must decode and the one after it must not; otherwise the frames are counted by decoding.
* :func:`read_frames` seeks to each wanted frame and checks, through ``CAP_PROP_POS_FRAMES``, that
  the decoder landed where it was asked to. On the first failed or misplaced seek it reopens the
  file and decodes sequentially instead, so a container with a broken index still yields the right
  frames. A frame that cannot be decoded at all comes back as ``None``, never silently left out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from visec.errors import DataError
from visec.paths import file_problem, shown

__all__ = ["count_frames", "frame_counts", "FrameCounts", "read_frames", "open_video", "PARTIAL_WARN_FRACTION"]


def open_video(path: str | os.PathLike):
    """An opened :class:`cv2.VideoCapture`; raises :class:`DataError` naming the file otherwise."""
    import cv2

    p = Path(path)
    reason = file_problem(p)  # before opening: a FIFO or a device would never end
    if reason == "not found":
        raise DataError(f"video not found: {shown(p)}")
    if reason is not None:
        raise DataError(f"cannot read video {shown(p)}: {reason}")
    if p.stat().st_size == 0:
        raise DataError(f"cannot read video {shown(p)}: the file is empty (0 bytes)")
    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        cap.release()
        raise DataError(f"cannot read video {shown(p)}: OpenCV could not open it (corrupt file or "
                        f"unsupported codec)")
    return cap


def _pos(cap) -> int:
    import cv2

    return int(round(cap.get(cv2.CAP_PROP_POS_FRAMES)))


def _count_by_decoding(path: Path) -> int:
    cap = open_video(path)
    try:
        n = 0
        while cap.grab():
            n += 1
        return n
    finally:
        cap.release()


#: A video of which fewer than this fraction of the frames its container declares decode is
#: named in a warning line by ``visec detect`` and ``visec preprocess`` (truncated or scrambled).
PARTIAL_WARN_FRACTION = 0.5


@dataclass(frozen=True)
class FrameCounts:
    """How many frames a video's container declares (``expected``; the decoded count when the
    container does not say, or says fewer) and how many actually decode (``decoded``)."""

    expected: int
    decoded: int

    @property
    def partial(self) -> bool:
        """Fewer frames decode than the container declares (a truncated or scrambled file)."""
        return self.decoded < self.expected

    @property
    def badly_partial(self) -> bool:
        """Fewer than :data:`PARTIAL_WARN_FRACTION` of the declared frames decode."""
        return self.decoded < PARTIAL_WARN_FRACTION * self.expected

    def describe(self) -> str:
        """``"12 of 30 declared frames decode"`` (``""`` when every declared frame decodes)."""
        return f"{self.decoded} of {self.expected} declared frames decode" if self.partial else ""


def frame_counts(path: str | os.PathLike) -> FrameCounts:
    """The frames the container declares and the frames that decode (the container's count, when
    its last frame decodes and the next does not; else counted by decoding).

    Raises :class:`DataError` when the file cannot be opened or holds no decodable frame.
    """
    import cv2

    p = Path(path)
    cap = open_video(p)
    try:
        claimed = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        verified = False
        if claimed > 0:
            cap.set(cv2.CAP_PROP_POS_FRAMES, claimed - 1)
            if cap.grab() and _pos(cap) == claimed and not cap.grab():
                verified = True
    finally:
        cap.release()
    n = claimed if verified else _count_by_decoding(p)
    if n <= 0:
        raise DataError(f"cannot read video {shown(p)}: no decodable frame"
                        + (f" (the container declares {claimed})" if claimed > 0 else ""))
    return FrameCounts(expected=max(claimed, n), decoded=n)


def count_frames(path: str | os.PathLike) -> int:
    """Number of decodable frames in the video (container count, verified; else counted).

    Raises :class:`DataError` when the file cannot be opened or holds no decodable frame.
    """
    return frame_counts(path).decoded


def _to_rgb(frame: np.ndarray) -> np.ndarray:
    import cv2

    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def _read_sequential(path: Path, wanted: list[int]) -> dict[int, np.ndarray | None]:
    out: dict[int, np.ndarray | None] = {}
    cap = open_video(path)
    try:
        pos = 0
        for idx in wanted:
            ok = True
            while pos < idx and ok:
                ok = cap.grab()
                pos += 1
            if not ok:
                break
            ok, frame = cap.read()
            pos += 1
            out[idx] = _to_rgb(frame) if ok and frame is not None else None
            if not ok:
                break
    finally:
        cap.release()
    for idx in wanted:
        out.setdefault(idx, None)
    return out


# A seek costs about as much as decoding this many frames forward (OpenCV seeks to the previous key
# frame and decodes from there): measured with benchmarks/bench_baseline.py on mp4v and MJPG videos.
SEEK_MIN_GAP = 24


def read_frames(path: str | os.PathLike, indices: Iterable[int], *, seek: bool | None = None
                ) -> list[tuple[int, np.ndarray | None]]:
    """Decode the frames at ``indices``: a list of ``(index, RGB uint8 array or None)``.

    The result follows the order of ``indices`` (duplicates allowed). ``None`` marks a frame that
    does not exist or could not be decoded. By default (``seek=None``) the reader seeks only across
    gaps longer than :data:`SEEK_MIN_GAP` frames and grabs forward over shorter ones;
    ``seek=True`` seeks to every frame, ``seek=False`` decodes sequentially. Raises
    :class:`DataError` naming the file when it cannot be opened at all.
    """
    import cv2

    p = Path(path)
    idx_list = [int(i) for i in indices]
    if any(i < 0 for i in idx_list):
        raise ValueError(f"frame indices must be >= 0, got {min(idx_list)}")
    wanted = sorted(set(idx_list))
    got: dict[int, np.ndarray | None] = {}
    fallback = seek is False
    if not fallback and wanted:
        cap = open_video(p)
        try:
            pos = 0
            for idx in wanted:
                if idx != pos and (seek or idx - pos > SEEK_MIN_GAP):
                    cap.set(cv2.CAP_PROP_POS_FRAMES, idx)
                else:
                    while pos < idx and cap.grab():
                        pos += 1
                ok, frame = cap.read()
                if not ok or frame is None or _pos(cap) != idx + 1:
                    # failed or misplaced seek (or past the end): decode sequentially instead
                    fallback = True
                    break
                got[idx] = _to_rgb(frame)
                pos = idx + 1
        finally:
            cap.release()
    if fallback and wanted:
        rest = [i for i in wanted if i not in got]
        got.update(_read_sequential(p, rest))
    return [(i, got.get(i)) for i in idx_list]
