"""Reading images safely: every failure names the file; odd colour modes are converted."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, UnidentifiedImageError

from visec.errors import DataError
from visec.paths import file_problem, shown

#: The most pixels an image may declare before visec decodes it (a 6,300 x 6,300 image). A
#: decompression bomb declares far more in a few bytes; every reader checks the declared size
#: against this one limit (:func:`check_pixels`) before decoding.
MAX_PIXELS = 40_000_000


def pixels_problem(width: int, height: int, max_pixels: int = MAX_PIXELS) -> str | None:
    """The reason to refuse an image declaring ``width x height`` pixels, or ``None``: the one rule
    for decompression bombs."""
    if int(width) * int(height) > max_pixels:
        return (f"the image declares {width} x {height} pixels, more than the limit of {max_pixels:,} "
                f"(a decompression bomb, or raise max_pixels)")
    return None


def check_pixels(width: int, height: int, label: str, max_pixels: int = MAX_PIXELS) -> None:
    """:func:`pixels_problem` as a one-line :class:`DataError` naming ``label``."""
    reason = pixels_problem(width, height, max_pixels)
    if reason is not None:
        raise DataError(f"{label}: {reason}")


def image_problem(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> str | None:
    """Why ``path`` must not be decoded as an image (not a regular file, or a declared size over
    ``max_pixels``), read from the file system and the header only; ``None`` otherwise (which does
    not promise that it decodes)."""
    reason = file_problem(path)
    if reason is not None:
        return reason
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
    except Image.DecompressionBombError:
        return "a decompression bomb (declared size over PIL's limit)"
    except Exception:  # noqa: BLE001  (a header PIL cannot read: let the decoder say so)
        return None
    return pixels_problem(w, h, max_pixels)


def load_rgb(path: str | os.PathLike, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an image file to ``uint8`` RGB ``(H, W, 3)``.

    Grayscale, palette, CMYK, 16-bit and alpha images are converted to RGB. A missing, empty,
    truncated or undecodable file, anything but a regular file (a FIFO, a device, a dangling or
    looping symbolic link) and an image declaring more than ``max_pixels`` pixels (a decompression
    bomb, :func:`check_pixels`) raise :class:`DataError` naming the file and the reason.
    """
    path = Path(path)
    reason = file_problem(path)
    if reason is not None:
        raise DataError(f"{shown(path)}: {'file not found' if reason == 'not found' else reason}")
    if path.stat().st_size == 0:
        raise DataError(f"{shown(path)}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise DataError(f"{shown(path)}: refused as a decompression bomb ({str(exc).splitlines()[0]})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{shown(path)}: cannot decode image ({reason})") from None
    try:
        with im:
            check_pixels(*im.size, shown(path), max_pixels)
            im.load()  # full decode: a truncated file fails here, not later in a batch
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64)
                arr = (255.0 * arr / max(arr.max(), 1.0)).astype(np.uint8)
                im = Image.fromarray(arr)
            if im.mode != "RGB":
                im = im.convert("RGBA").convert("RGB") if "A" in im.getbands() or im.mode == "P" \
                    else im.convert("RGB")
            return np.asarray(im, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{shown(path)}: cannot decode image ({reason})") from None


@dataclass
class ScanReport:
    """Result of checking that every image in a list decodes."""

    checked: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    @property
    def ok(self) -> bool:
        return not self.bad


def scan_images(paths: list[Path], workers: int = 4,
                keep: Callable[[Path, np.ndarray], None] | None = None) -> ScanReport:
    """Decode every image (in threads; PIL releases the GIL) and collect the ones that fail.

    ``keep(path, rgb)`` receives every image that decodes (e.g. to fill an in-memory cache while
    the images are decoded anyway)."""

    def check(p: Path) -> tuple[str, str] | None:
        try:
            rgb = load_rgb(p)
        except DataError as exc:
            return str(p), str(exc).split(": ", 1)[-1]
        if keep is not None:
            keep(p, rgb)
        return None

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(check, paths))
    return ScanReport(checked=len(paths), bad=[r for r in results if r is not None])


def _file_key(path: Path, sha256: str = "") -> str:
    try:
        st = path.stat()
        return f"{path}\t{st.st_size}\t{st.st_mtime_ns}\t{sha256}"
    except OSError as exc:
        return f"{path}\t{type(exc).__name__}"


def scan_images_cached(paths: list[Path], sha256: list[str] | None = None, *, use_cache: bool = True,
                       keep: Callable[[Path, np.ndarray], None] | None = None) -> tuple[ScanReport, bool]:
    """:func:`scan_images`, remembered: ``(report, cached)``.

    The decode check of a file list is stored under visec's cache folder (``scans/``, see
    :func:`visec.utils.cache_dir`) by a hash of every file's path, size, modification time and
    manifest content hash (``sha256``, when the manifest has one). A list whose files all look the
    same is not decoded again; a file that changed in any of those makes a new check. Where the
    cache folder cannot be written the check simply runs every time.
    """
    if not use_cache:
        return scan_images(paths, keep=keep), False
    from visec.utils import cache_dir

    digest = hashlib.sha256()
    for i, p in enumerate(paths):
        digest.update(_file_key(p, sha256[i] if sha256 else "").encode("utf-8", "surrogateescape"))
        digest.update(b"\n")
    entry = cache_dir("scans") / f"{digest.hexdigest()}.json"
    try:
        data = json.loads(entry.read_text())
        if data.get("checked") == len(paths):
            return ScanReport(checked=len(paths), bad=[tuple(b) for b in data["bad"]]), True
    except (OSError, ValueError, KeyError, TypeError):
        pass
    report = scan_images(paths, keep=keep)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_name(f"{entry.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"checked": report.checked, "bad": report.bad}))
        os.replace(tmp, entry)
    except OSError:
        pass
    return report, False
