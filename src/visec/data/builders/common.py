"""What every dataset builder shares: sorted walking, videos and frame folders -> rows, bookkeeping.

A builder creates one :class:`Collector` for the dataset root, asks it to scan folders into
:class:`Video` items (a video file, or a folder of extracted frames), decides split / label /
manipulation / ``video_id`` for each item and hands it back with :meth:`Collector.add`. Every file
the collector sees but does not turn into a row is recorded with a reason (``skipped``); data the
layout promises but that is not on disk (e.g. a video named in an official split file) is recorded
in ``missing``. Both lists end up in ``df.attrs`` and in the build report: nothing is dropped
silently.

Rules shared by all builders:

* Walking is sorted by name at every level, so the same folder always gives the same manifest.
* A video file is one row (``media="video"``, ``frame_index=-1``).
* A folder of frames is one video; each image is a row whose ``frame_index`` is the last run of
  digits in its file name (``0012.png`` -> 12, ``frame_7.jpg`` -> 7). When a name has no digits, or
  two frames of one folder give the same number, the whole folder falls back to its natural sort
  order (0, 1, 2, ...), so frame indices are always unique within a video.
* When the same video is found twice (``videos/000.mp4`` and ``frames/000/``, or ``000.mp4`` and
  ``000.avi``) one copy is used, chosen by the ``prefer`` option (``frames`` by default), and the
  other is recorded as skipped.
* Only folders and regular files are walked (symbolic links followed). Everything else met on the
  way is recorded as skipped with what it is, never opened (a FIFO would block the hashing for ever):
  FIFOs, devices and sockets, dangling links, link loops (``a -> a``, and a link back to a folder
  already walked), names too long for the file system and folders that cannot be listed.
"""

from __future__ import annotations

import inspect
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pandas as pd

from visec.data.manifest import SPLITS, make_record, media_kind, seeded_split, validate
from visec.errors import ManifestError
from visec.paths import entry_problem, os_reason, shown
from visec.utils import did_you_mean

VIDEO_SUBDIRS = ("videos",)
FRAME_SUBDIRS = ("frames", "images")
PREFER = ("frames", "videos")
_DIGITS = re.compile(r"\d+")


# -- small utilities -----------------------------------------------------------------------------
#: ``skip(path, reason)``: where the walkers report what they leave out (``Collector.skip``).
Skip = Callable[[str, str], None]

LINK_LOOP = "a symbolic link back to a folder already walked (a loop)"


def entries(folder: str | os.PathLike, skip: Skip | None = None) -> list[os.DirEntry]:
    """The folders and regular files in ``folder`` (symbolic links followed), sorted by name
    (deterministic across file systems).

    Anything else -- a FIFO, a device, a socket, a dangling or looping link, a name too long for
    the file system -- is left out and handed to ``skip(path, reason)``; so is ``folder`` itself
    when it cannot be listed (without ``skip`` that is a :class:`ManifestError`)."""
    try:
        with os.scandir(folder) as it:
            items = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        if skip is None:
            raise ManifestError(f"cannot list folder {shown(folder)}: {os_reason(exc)}") from None
        skip(os.fspath(folder), f"folder that cannot be listed: {os_reason(exc)}")
        return []
    good = []
    for e in items:
        reason = entry_problem(e)
        if reason is None:
            good.append(e)
        elif skip is not None:
            skip(e.path, reason)
    return good


def _is_dir(entry: os.DirEntry) -> bool:
    """``entry.is_dir()`` for an entry :func:`entries` returned (a folder or a regular file)."""
    try:
        return entry.is_dir()
    except OSError:  # changed since it was listed
        return False


def walk_files(folder: str | os.PathLike, skip: Skip | None = None) -> list[Path]:
    """Every regular file below ``folder``, depth first, sorted by name at each level; follows
    symlinks once. What is left out goes to ``skip`` (see :func:`entries`)."""
    return [f for _, files in walk_folders(folder, skip) for f in files]


def walk_folders(folder: str | os.PathLike, skip: Skip | None = None) -> list[tuple[Path, list[Path]]]:
    """``(folder, regular files directly in it)`` for ``folder`` and every folder below it, sorted,
    depth first; a link back to a folder already walked is not followed. What is left out goes to
    ``skip`` (see :func:`entries`)."""
    out: list[tuple[Path, list[Path]]] = []
    seen: set[str] = set()
    stack = [os.fspath(folder)]  # depth first without recursion: a tree may nest thousands deep
    top = os.path.join(os.path.realpath(stack[0]), "")
    while stack:
        d = stack.pop()
        real = os.path.realpath(d)
        # a link loop: back to a folder already walked, or up to a folder holding the walk's own top
        if real in seen or (seen and top.startswith(os.path.join(real, ""))):
            if skip is not None:
                skip(d, LINK_LOOP)
            continue
        seen.add(real)
        items = entries(d, skip)
        out.append((Path(d), [Path(e.path) for e in items if not _is_dir(e)]))
        stack.extend(reversed([e.path for e in items if _is_dir(e)]))
    return out


def unwrap(folder: Path) -> Path:
    """Descend through wrapper folders that hold only a folder of the same name (``x/x/``, as some
    archives extract)."""
    while os.path.isdir(folder):
        items = entries(folder)
        if len(items) == 1 and _is_dir(items[0]) and items[0].name.lower() == folder.name.lower():
            folder = Path(items[0].path)
        else:
            break
    return folder


def frame_number(name: str) -> int | None:
    """The last run of digits in a file name's stem, or ``None``."""
    runs = _DIGITS.findall(Path(name).stem)
    return int(runs[-1]) if runs else None


def natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def frame_indices(files: Sequence[Path]) -> list[int]:
    """Frame numbers parsed from the names, or natural-order positions when that is not unique."""
    parsed = [frame_number(f.name) for f in files]
    if None not in parsed and len(set(parsed)) == len(parsed):
        return [int(p) for p in parsed]  # type: ignore[arg-type]
    order = sorted(range(len(files)), key=lambda i: natural_key(files[i].name))
    pos = [0] * len(files)
    for rank, i in enumerate(order):
        pos[i] = rank
    return pos


# -- options -------------------------------------------------------------------------------------
def check_options(dataset: str, builder: Callable, options: dict[str, Any]) -> None:
    """Raise :class:`ManifestError` naming the unknown option(s), with a "did you mean" when close."""
    if not options:
        return
    known = [p.name for p in inspect.signature(builder).parameters.values() if p.kind is p.KEYWORD_ONLY]
    bad = sorted(options)
    hint = did_you_mean(bad[0], known)
    names = ", ".join(f"'{b}'" for b in bad)
    raise ManifestError(f"{dataset}: unknown option{'s' if len(bad) > 1 else ''} {names}{hint} "
                        f"(known options: {', '.join(known)})")


def check_choice(dataset: str, option: str, value: Any, choices: Iterable[Any]) -> Any:
    choices = tuple(choices)
    if value not in choices:
        raise ManifestError(f"{dataset}: option {option}={value!r} is not one of "
                            f"{', '.join(repr(c) for c in choices)}")
    return value


def parse_fractions(dataset: str, value: Any) -> tuple[float, float, float]:
    """``(train, val, test)`` from a sequence or a ``"0.7,0.15,0.15"`` string; must sum to 1."""
    if isinstance(value, str):
        value = [v for v in re.split(r"[,\s/]+", value.strip("()[] ")) if v]
    try:
        fr = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        fr = ()
    if len(fr) != 3 or min(fr) < 0 or abs(sum(fr) - 1.0) > 1e-6:
        raise ManifestError(f"{dataset}: option fractions={value!r} must be three numbers >= 0 "
                            f"(train, val, test) that sum to 1")
    return fr  # type: ignore[return-value]


def parse_fraction(dataset: str, option: str, value: Any) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        f = -1.0
    if not 0.0 <= f < 1.0:
        raise ManifestError(f"{dataset}: option {option}={value!r} must be a number in [0, 1)")
    return f


def require_root(dataset: str, root: str | os.PathLike) -> Path:
    """The dataset root as an absolute path; raises when it is not an existing folder."""
    path = Path(root).expanduser().absolute()
    if not os.path.isdir(path):
        problem = entry_problem(path)
        what = "not found" if problem == "not found" else "is not a folder" if problem is None else problem
        raise ManifestError(f"{dataset}: dataset folder {what}: {shown(path)}")
    return path


def layout_error(dataset: str, root: Path, expected: str) -> ManifestError:
    return ManifestError(f"{dataset}: {root} does not match the {dataset} layout: expected {expected}")


# -- videos and the collector --------------------------------------------------------------------
@dataclass
class Video:
    """One video found on disk: a single video (or still image) file, or a folder of frames."""

    name: str
    files: list[Path]
    indices: list[int]
    source: Path  # the file, or the frame folder
    folder: bool = False  # True for a frame folder

    @classmethod
    def single(cls, name: str, path: Path) -> "Video":
        return cls(name, [path], [-1 if media_kind(path) == "video" else 0], path, folder=False)

    @classmethod
    def frames(cls, name: str, files: Sequence[Path], folder: Path) -> "Video":
        idx = frame_indices(files)
        order = sorted(range(len(files)), key=lambda i: idx[i])
        return cls(name, [files[i] for i in order], [idx[i] for i in order], folder, folder=True)


class Collector:
    """Collects manifest rows for one dataset root, and every file skipped on the way (with a reason)."""

    def __init__(self, dataset: str, root: Path, *, hash: bool = True) -> None:
        self.dataset = dataset
        self.root = Path(root)
        self.hash = bool(hash)
        self.rows: list[dict[str, Any]] = []
        self.skipped: list[tuple[str, str]] = []
        self.missing: list[tuple[str, str]] = []
        self._skipped_set: set[tuple[str, str]] = set()

    # bookkeeping
    def rel(self, path: str | os.PathLike) -> str:
        return Path(os.path.relpath(path, self.root)).as_posix()

    def _record(self, item: tuple[str, str]) -> None:
        if item not in self._skipped_set:  # a folder listed twice records its odd entries once
            self._skipped_set.add(item)
            self.skipped.append(item)

    def skip(self, path: str | os.PathLike, reason: str) -> None:
        """Record one skipped file (or, with a trailing ``/`` in the path, a skipped folder)."""
        is_dir = entry_problem(path) is None and os.path.isdir(path)
        self._record((self.rel(path) + ("/" if is_dir else ""), reason))

    def skip_folder(self, path: str | os.PathLike, reason: str) -> None:
        """Record a whole folder as skipped, counting the files in it."""
        n = len(walk_files(path))
        self._record((self.rel(path) + "/", f"{reason} ({n} file{'s' if n != 1 else ''})"))

    def entries(self, folder: str | os.PathLike) -> list[os.DirEntry]:
        """:func:`entries`, recording what it leaves out as skipped."""
        return entries(folder, self.skip)

    def skip_video(self, video: Video, reason: str) -> None:
        if video.folder:
            self.skip_folder(video.source, reason)
        else:
            self.skip(video.source, reason)

    def miss(self, path: str, reason: str) -> None:
        """Record something the layout promises that is not on disk (``path`` relative to the root)."""
        self.missing.append((path, reason))

    # scanning
    def frame_folder(self, folder: Path, name: str) -> Video | None:
        """The images directly in ``folder`` as one video; other entries are recorded as skipped."""
        images: list[Path] = []
        for e in self.entries(folder):
            if _is_dir(e):
                self.skip_folder(e.path, "sub-folder inside a frame folder")
            elif media_kind(e.name) == "image":
                images.append(Path(e.path))
            else:
                self.skip(e.path, "not an image file (inside a frame folder)")
        if not images:
            self.skip(folder, "frame folder without images")
            return None
        return Video.frames(name, images, folder)

    def scan(self, base: Path, *, prefer: str = "frames", loose_frames: bool = False,
             video_subdirs: Sequence[str] = VIDEO_SUBDIRS, frame_subdirs: Sequence[str] = FRAME_SUBDIRS,
             layout: str = "") -> list[Video]:
        """The videos in one folder of a published layout.

        Understood: video files directly in ``base`` or in ``base/videos/``; frame folders
        ``base/frames/<video>/`` or ``base/images/<video>/``; with ``loose_frames`` also
        ``base/<video>/`` when that folder holds images directly. Everything else is skipped.
        """
        found: list[Video] = []
        what = f"the {layout} layout" if layout else "the layout"
        for e in self.entries(base):
            p = Path(e.path)
            if _is_dir(e):
                if e.name in video_subdirs:
                    for f in self.entries(p):
                        if _is_dir(f):
                            self.skip_folder(f.path, "folder inside a videos folder")
                        elif media_kind(f.name) == "video":
                            found.append(Video.single(Path(f.name).stem, Path(f.path)))
                        else:
                            self.skip(f.path, "not a video file")
                elif e.name in frame_subdirs:
                    for f in self.entries(p):
                        if _is_dir(f):
                            v = self.frame_folder(Path(f.path), f.name)
                            if v is not None:
                                found.append(v)
                        else:
                            self.skip(f.path, "file outside a per-video frame folder")
                elif loose_frames and any(media_kind(x.name) == "image" for x in entries(p) if not _is_dir(x)):
                    v = self.frame_folder(p, e.name)
                    if v is not None:
                        found.append(v)
                else:
                    self.skip_folder(p, f"folder not part of {what}")
            elif media_kind(e.name) == "video":
                found.append(Video.single(p.stem, p))
            elif media_kind(e.name) == "image":
                self.skip(p, "image outside a per-video frame folder")
            else:
                self.skip(p, "not an image or video file")
        return self.dedupe(found, prefer)

    def leaves(self, base: Path, *, folder_is_video: bool = True, prefer: str = "frames") -> list[Video]:
        """Videos in a free-form tree (WildDeepfake, generic).

        Every video file is a video (named by its path below ``base`` without the extension). With
        ``folder_is_video`` every folder below ``base`` that holds images directly is one video of
        frames (named by its path below ``base``); images lying directly in ``base`` -- and, without
        ``folder_is_video``, every image -- are one-frame videos named by their path *with* the
        extension, so they never clash with a video or a folder.
        """
        found: list[Video] = []
        for folder, files in walk_folders(base, self.skip):
            images = [f for f in files if media_kind(f.name) == "image"]
            if folder_is_video and folder != base and images:
                found.append(Video.frames(Path(os.path.relpath(folder, base)).as_posix(), images, folder))
                files = [f for f in files if media_kind(f.name) != "image"]
            found.extend(self.loose(files, base))
        return self.dedupe(found, prefer)

    def loose(self, files: Iterable[Path], base: Path) -> list[Video]:
        """Each media file as its own video, named by its path below ``base`` (images keep the
        extension); non-media files are recorded as skipped. Not de-duplicated."""
        out = []
        for f in files:
            kind = media_kind(f.name)
            rel = Path(os.path.relpath(f, base))
            if kind == "video":
                out.append(Video.single(rel.with_suffix("").as_posix(), f))
            elif kind == "image":
                out.append(Video.single(rel.as_posix(), f))
            else:
                self.skip(f, "not an image or video file")
        return out

    def dedupe(self, videos: list[Video], prefer: str = "frames") -> list[Video]:
        """Keep one video per name (frames or video file, by ``prefer``); record the others as skipped."""
        check_choice(self.dataset, "prefer", prefer, PREFER)
        groups: dict[str, list[Video]] = {}
        for v in videos:
            groups.setdefault(v.name, []).append(v)
        out = []
        for name, group in groups.items():
            ranked = sorted(group, key=lambda v: v.folder != (prefer == "frames"))  # stable
            keep = ranked[0]
            out.append(keep)
            for other in ranked[1:]:
                self.skip_video(other, f"same video as {self.rel(keep.source)} (prefer={prefer})")
        return sorted(out, key=lambda v: v.name)

    # rows
    def add(self, video: Video, *, split: str, label: int, manipulation: str, video_id: str,
            **extra: Any) -> None:
        if split not in SPLITS:  # a builder bug, not a user error
            raise ValueError(f"bad split {split!r}")
        for f, idx in zip(video.files, video.indices):
            self.rows.append(make_record(self.root, f, dataset=self.dataset, split=split, label=label,
                                         manipulation=manipulation, video_id=video_id, frame_index=idx,
                                         hash=self.hash, **extra))

    def result(self, expected: str) -> pd.DataFrame:
        """The rows as a validated DataFrame with ``attrs['skipped']`` and ``attrs['missing']``."""
        if not self.rows:
            note = ""
            if self.skipped:
                first = "; ".join(f"{p}: {r}" for p, r in self.skipped[:2])
                note = f"; {len(self.skipped)} file(s)/folder(s) skipped, e.g. {first}"
            raise ManifestError(f"{self.dataset}: no usable images or videos in {self.root} "
                                f"(expected {expected}){note}")
        df = validate(pd.DataFrame(self.rows), name=f"{self.dataset} manifest")
        df = df.reset_index(drop=True)
        df.attrs["skipped"] = list(self.skipped)
        df.attrs["missing"] = list(self.missing)
        return df


def group_split(groups: dict[str, str], seed: int, fractions: tuple[float, float, float],
                strata: dict[str, str] | None = None) -> dict[str, str]:
    """``{key: split}`` for keys mapped to groups; with ``strata`` ({key: stratum}) each stratum is split on its own.

    A thin layer over :func:`visec.data.manifest.seeded_split`: every group lands in one split, so
    no group spans two splits. Keys of one group must share a stratum.
    """
    by_stratum: dict[str, set[str]] = {}
    for key, g in groups.items():
        by_stratum.setdefault(strata[key] if strata else "", set()).add(g)
    group_to_split: dict[str, str] = {}
    for stratum in sorted(by_stratum):
        part = seeded_split(sorted(by_stratum[stratum]), seed=seed, fractions=fractions)
        for g, s in part.items():
            if group_to_split.setdefault(g, s) != s:
                raise ValueError(f"group {g!r} appears in two strata")
    return {key: group_to_split[g] for key, g in groups.items()}
