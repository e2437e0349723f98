"""What the analysis tests share: one tiny trained detector (with its test card), a face photo, a
short video, and hand-made bad files."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest
from skimage.data import astronaut


@pytest.fixture(scope="session")
def tiny_runs(toy_manifest, tmp_path_factory):
    """A runs folder with one trained tiny-CNN detector and its intra test card (which carries the
    validation-EER threshold fixed at training)."""
    from visec.config import load_config
    from visec.engine import Engine

    runs = tmp_path_factory.mktemp("runs")
    engine = Engine(load_config("classifier", [f"data.manifest={toy_manifest}", "train.max_epochs=1",
                                               "train.bootstrap=0", f"output_dir={runs}", "name=tiny"]))
    engine.fit()
    engine.test()
    return runs


@pytest.fixture(scope="session")
def media(tmp_path_factory):
    """``face.png`` (a photo with one face), ``noise.png`` (no face), ``clip.mp4`` (4 face frames, 2
    noise frames, 4 face frames)."""
    folder = tmp_path_factory.mktemp("media")
    face = astronaut()
    cv2.imwrite(str(folder / "face.png"), cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
    noise = np.random.default_rng(0).integers(0, 255, (160, 160, 3), dtype=np.uint8)
    cv2.imwrite(str(folder / "noise.png"), noise)
    frames = [cv2.resize(face[i * 3: i * 3 + 400, i * 3: i * 3 + 400], (192, 192)) for i in range(8)]
    noise_frames = [np.random.default_rng(i).integers(0, 255, (192, 192, 3), dtype=np.uint8) for i in range(2)]
    writer = cv2.VideoWriter(str(folder / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (192, 192))
    for f in frames[:4] + noise_frames + frames[4:]:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return folder


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width x height`` pixels but holds one row (a decompression bomb's
    header: reading it costs nothing, decoding it would)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="session")
def bad_files(media, tmp_path_factory):
    """name -> (bytes, the HTTP status visec serve must answer, a phrase of its message)."""
    truncated = (media / "face.png").read_bytes()[:3000]
    return {
        "empty.png": (b"", 400, "empty"),
        "notes.png": (b"this is a text file, whatever its name says\n" * 4, 415, "not an image or video"),
        "truncated.png": (truncated, 422, "cannot decode image"),
        "bomb.png": (png_declaring(100_000, 100_000), 422, "decompression bomb"),
        "broken.mp4": (b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8, 422, "video"),
        "tiny.png": (png_declaring(1, 1), 422, "too small"),
    }
