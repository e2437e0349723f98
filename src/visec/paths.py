"""Checks on the paths a user hands to visec, before any work starts.

* :func:`file_problem` says why a path is not a readable regular file (missing, a dangling or
  looping symbolic link, a name the file system refuses as too long, a folder, a FIFO, a device or
  a socket), or ``None`` when it is one. Opening a FIFO would block forever and a device may never
  end, so readers call this before they open anything; :func:`require_file` turns the answer into
  a one-line :class:`~visec.errors.DataError`.
* :func:`entry_problem` is the same question for a directory entry met while walking a dataset
  tree, where folders are fine too.
* :func:`output_folder` and :func:`output_file` refuse an output that exists as the other kind (a
  file where a folder is expected, or the reverse), or that lies below a file, naming the option.
* :func:`shown` shortens a path for a message, so an over-long name never floods the terminal.

Core layer: the standard library and :mod:`visec.errors` only.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from visec.errors import ConfigError, DataError

__all__ = ["shown", "os_reason", "file_problem", "entry_problem", "require_file", "output_folder", "output_file"]

#: The most characters of a path a message shows (the middle is elided beyond that).
SHOWN_CHARS = 160


def shown(path: str | os.PathLike) -> str:
    """``path`` as text for a message, its middle elided when longer than :data:`SHOWN_CHARS`."""
    text = os.fsdecode(os.fspath(path))
    if len(text) <= SHOWN_CHARS:
        return text
    half = SHOWN_CHARS // 2 - 2
    return f"{text[:half]}...{text[-half:]} ({len(text)} characters)"


def os_reason(exc: OSError) -> str:
    """What an ``OSError`` met while looking a path up means, in a few words."""
    if exc.errno == errno.ELOOP:
        return "a symbolic link loop"
    if exc.errno == errno.ENAMETOOLONG:
        return "a name too long for the file system"
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return "not found"
    if exc.errno == errno.EACCES:
        return "not readable (permission denied)"
    return f"not readable ({exc.strerror or type(exc).__name__})"


def _mode_reason(mode: int) -> str | None:
    """Why a file of this ``st_mode`` is not a regular file or a folder (``None`` when it is one)."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe), not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file, not a regular file"
    if stat.S_ISSOCK(mode):
        return "a socket, not a regular file"
    return "not a regular file"


def _stat_problem(path: str | os.PathLike) -> tuple[str | None, int | None]:
    """``(reason, st_mode)``: why ``path`` (symbolic links followed) cannot be read, or its mode."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        try:
            os.lstat(path)
        except OSError:
            return "not found", None
        return "a dangling symbolic link (its target does not exist)", None
    except (OSError, ValueError) as exc:  # ValueError: an embedded NUL byte
        return (os_reason(exc) if isinstance(exc, OSError) else "not a valid path"), None
    return None, st.st_mode


def file_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a readable regular file, in a few words; ``None`` when it is one."""
    reason, mode = _stat_problem(path)
    if reason is not None:
        return reason
    if stat.S_ISDIR(mode):
        return "a folder, not a file"
    return _mode_reason(mode)


def entry_problem(entry: os.DirEntry | str | os.PathLike) -> str | None:
    """Why an entry of a dataset tree is neither a folder nor a regular file (symbolic links
    followed); ``None`` for a folder or a regular file."""
    reason, mode = _stat_problem(entry.path if isinstance(entry, os.DirEntry) else entry)
    return reason if reason is not None else _mode_reason(mode)


def require_file(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` when it is a readable regular file, else a one-line :class:`DataError` naming it."""
    reason = file_problem(path)
    if reason is not None:
        raise DataError(f"{what} {shown(path)}: {reason}")
    return Path(path)


def _below_a_file(path: Path) -> Path | None:
    """The first parent of ``path`` that exists and is not a folder, if any."""
    for parent in path.parents:
        reason, mode = _stat_problem(parent)
        if reason == "not found":
            continue
        if reason is not None or not stat.S_ISDIR(mode):
            return parent
        return None
    return None


def _creatable(p: Path, option: str, reason: str | None) -> Path:
    """``p`` once its own lookup problem (``reason``, other than "not found") and a file among its
    parents are ruled out."""
    if reason is not None and reason != "not found":
        raise ConfigError(f"{option} {shown(p)}: {reason}")
    blocker = _below_a_file(p)
    if blocker is not None:
        raise ConfigError(f"{option} {shown(p)}: {shown(blocker)} is not a folder")
    return p


def output_folder(path: str | os.PathLike, option: str = "--out") -> Path:
    """``path`` as an output folder: refused (one line naming ``option``) when it exists and is not
    a folder, when it cannot be looked up, or when a parent of it is a file."""
    p = Path(path)
    reason, mode = _stat_problem(p)
    if reason is None and not stat.S_ISDIR(mode):
        raise ConfigError(f"{option} {shown(p)}: exists and is not a folder; name a folder")
    return _creatable(p, option, reason)


def output_file(path: str | os.PathLike, option: str = "--out") -> Path:
    """``path`` as an output file: refused (one line naming ``option``) when it is an existing
    folder or anything but a regular file, when it cannot be looked up, or when a parent of it is a
    file."""
    p = Path(path)
    reason, mode = _stat_problem(p)
    if reason is None and stat.S_ISDIR(mode):
        raise ConfigError(f"{option} {shown(p)}: is a folder; name a file")
    if reason is None and not stat.S_ISREG(mode):
        raise ConfigError(f"{option} {shown(p)}: {_mode_reason(mode)}")
    return _creatable(p, option, reason)
