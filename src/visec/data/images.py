"""Reading images safely: every failure names the file; odd colour modes are converted."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from visec.errors import DataError


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to ``uint8`` RGB ``(H, W, 3)``.

    Grayscale, palette, CMYK, 16-bit and alpha images are converted to RGB. A missing, empty,
    truncated or undecodable file raises :class:`DataError` naming the file and the reason.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    try:
        with Image.open(path) as im:
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
        raise DataError(f"{path}: cannot decode image ({reason})") from None


@dataclass
class ScanReport:
    """Result of checking that every image in a list decodes."""

    checked: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    @property
    def ok(self) -> bool:
        return not self.bad


def scan_images(paths: list[Path], workers: int = 4) -> ScanReport:
    """Decode every image (in threads; PIL releases the GIL) and collect the ones that fail."""

    def check(p: Path) -> tuple[str, str] | None:
        try:
            load_rgb(p)
        except DataError as exc:
            return str(p), str(exc).split(": ", 1)[-1]
        return None

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(check, paths))
    return ScanReport(checked=len(paths), bad=[r for r in results if r is not None])
