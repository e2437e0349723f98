"""Corruptions by name (quality levels of the embedded data, the robustness sweep)."""

from __future__ import annotations

import numpy as np
import pytest

from visec.data.corruptions import ROBUSTNESS_SWEEP, corrupt, parse_corruption
from visec.errors import ConfigError, RegistryError


@pytest.fixture()
def img():
    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, 48, dtype=np.float32)
    smooth = (base[None, :, None] * 0.5 + base[:, None, None] * 0.5).repeat(3, 2)
    return np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255).astype(np.uint8)


def test_identity_settings_change_nothing(img):
    assert corrupt(img, None) is img and corrupt(img, "none") is img
    assert np.array_equal(corrupt(img, "blur-0"), img)
    assert np.array_equal(corrupt(img, "resize-1"), img)
    assert np.array_equal(corrupt(img, "noise-0"), img)


def test_stronger_settings_lose_more(img):
    def err(spec):
        return np.abs(corrupt(img, spec).astype(float) - img).mean()

    assert err("jpeg-95") < err("jpeg-70") < err("jpeg-30")
    assert err("blur-0.5") < err("blur-1") < err("blur-3")
    assert err("resize-0.8") < err("resize-0.5") < err("resize-0.25")
    assert 1.5 < err("noise-4") < 4.5  # E|N(0, 4)| = 3.19, minus clipping and rounding


def test_shape_dtype_and_determinism(img):
    for spec in ROBUSTNESS_SWEEP + ("noise-5",):
        out = corrupt(img, spec, seed=1)
        assert out.shape == img.shape and out.dtype == np.uint8
        assert np.array_equal(out, corrupt(img, spec, seed=1))
    assert not np.array_equal(corrupt(img, "noise-5", seed=1), corrupt(img, "noise-5", seed=2))


def test_jpeg_matches_a_pillow_round_trip_closely(img):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=70)
    ref = np.asarray(Image.open(buf).convert("RGB")).astype(float)
    assert np.abs(corrupt(img, "jpeg-70").astype(float) - ref).mean() < 2.0


@pytest.mark.parametrize("spec,err,match", [("jpg-70", RegistryError, "did you mean 'jpeg'"),
                                             ("jpeg-0", ConfigError, r"\[1, 100\]"),
                                             ("jpeg", ConfigError, "NAME-VALUE"),
                                             ("blur-x", ConfigError, "NAME-VALUE"),
                                             ("resize-2", ConfigError, "resize takes")])
def test_bad_specs_are_one_line_errors(spec, err, match):
    with pytest.raises(err, match=match):
        parse_corruption(spec)


def test_config_rejects_a_bad_corruption_at_load():
    from visec.config import load_config

    with pytest.raises(ConfigError, match="jpeg takes"):
        load_config("classifier", ["data.corruption=jpeg-500"])
