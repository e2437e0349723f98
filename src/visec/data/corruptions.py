"""Image corruptions by name: the quality levels of the embedded data and the robustness sweep.

A corruption spec is ``NAME-VALUE`` (``jpeg-70``, ``blur-1.5``, ``resize-0.5``, ``noise-4``) or
``none``. Every corruption maps a ``uint8 (H, W, 3)`` RGB image to one of the same shape and is
deterministic (noise draws from a generator seeded by the caller), so a sweep can be repeated
exactly. They act on the stored image, before the resize to the model's input size, the way
compression or a re-upload degrades a real face crop.

=========== =========================================== ==========================
name        what                                        value
=========== =========================================== ==========================
jpeg        JPEG encode + decode (OpenCV, 4:2:0)        quality 1-100
blur        Gaussian blur                               sigma in pixels
resize      downscale (area) then upscale (bilinear)    scale in (0, 1)
noise       additive Gaussian noise, clipped            sigma in 0-255 grey levels
=========== =========================================== ==========================
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import cv2
import numpy as np

from visec.errors import ConfigError
from visec.config import corruption_spec
from visec.registry import CORRUPTIONS

Corruption = Callable[..., np.ndarray]


@CORRUPTIONS.register("jpeg", summary="JPEG re-compression at the given quality (1-100)", low=1, high=100)
def jpeg(rgb: np.ndarray, value: float, seed: int = 0) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(value)])
    if not ok:  # pragma: no cover - OpenCV always encodes a valid uint8 image
        raise ConfigError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@CORRUPTIONS.register("blur", summary="Gaussian blur with the given sigma in pixels", low=0.0, high=50.0)
def blur(rgb: np.ndarray, value: float, seed: int = 0) -> np.ndarray:
    if value <= 0:
        return rgb.copy()
    return cv2.GaussianBlur(rgb, (0, 0), sigmaX=float(value), borderType=cv2.BORDER_REFLECT)


@CORRUPTIONS.register("resize", summary="downscale by the given factor, then back up (resampling loss)",
                      low=0.01, high=1.0)
def resize(rgb: np.ndarray, value: float, seed: int = 0) -> np.ndarray:
    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (max(1, round(w * value)), max(1, round(h * value))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


@CORRUPTIONS.register("noise", summary="additive Gaussian noise, sigma in grey levels (0-255)", low=0.0, high=255.0)
def noise(rgb: np.ndarray, value: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = rgb.astype(np.float32) + rng.normal(0.0, float(value), rgb.shape).astype(np.float32)
    return np.clip(out.round(), 0, 255).astype(np.uint8)


def parse_corruption(spec: str | None) -> Callable[[np.ndarray, int], np.ndarray] | None:
    """``"jpeg-70"`` -> a function ``(rgb, seed) -> rgb``; ``None`` / ``"none"`` -> ``None``.

    Raises :class:`ConfigError` (one line, with "did you mean") for an unknown name or a value
    outside the corruption's range.
    """
    parsed = corruption_spec(spec)
    if parsed is None:
        return None
    name, value = parsed
    entry = CORRUPTIONS.get(name)
    fn = partial(entry.obj, value=value)
    return lambda rgb, seed=0: fn(rgb, seed=seed)


def corrupt(rgb: np.ndarray, spec: str | None, seed: int = 0) -> np.ndarray:
    """Apply the corruption ``spec`` to one uint8 RGB image (a copy; ``none`` returns the input)."""
    fn = parse_corruption(spec)
    return rgb if fn is None else fn(rgb, seed)


# The robustness sweep of `visec bench` (one AUC per entry), in report order.
ROBUSTNESS_SWEEP = ("jpeg-90", "jpeg-70", "jpeg-50", "blur-1", "resize-0.5")
