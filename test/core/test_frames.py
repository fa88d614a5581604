from __future__ import annotations

import cv2
import numpy as np
import pytest

from ivfusion_ros.config import ThermalConfig
from ivfusion_ros.core.frames import ThermalNormalizer, decode_rgb
from ivfusion_ros.errors import InputError


def _rgb(h: int = 4, w: int = 5) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 200, 100, 10
    return img


@pytest.mark.parametrize(
    ("encoding", "convert"),
    [
        ("rgb8", lambda x: x),
        ("bgr8", lambda x: cv2.cvtColor(x, cv2.COLOR_RGB2BGR)),
        ("rgba8", lambda x: cv2.cvtColor(x, cv2.COLOR_RGB2RGBA)),
        ("bgra8", lambda x: cv2.cvtColor(x, cv2.COLOR_RGB2BGRA)),
    ],
)
def test_rgb_encodings_decode_to_rgb(encoding: str, convert) -> None:
    src = _rgb()
    out = decode_rgb(convert(src), encoding)
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, src)


def test_mono8_visible_is_replicated() -> None:
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5)
    out = decode_rgb(gray, "mono8")
    assert out.shape == (4, 5, 3)
    np.testing.assert_array_equal(out[..., 1], gray)


@pytest.mark.parametrize(
    ("img", "encoding", "reason", "match"),
    [
        (np.zeros((4, 5, 3), np.uint8), "yuv422", "bad_encoding", "unsupported encoding 'yuv422'"),
        (np.zeros((0, 5, 3), np.uint8), "rgb8", "empty", "empty"),
        (np.zeros((4, 5, 2), np.uint8), "rgb8", "channel_mismatch", "needs 3 channel"),
        (np.zeros((4, 5, 4), np.uint8), "rgb8", "channel_mismatch", "needs 3 channel"),
        (np.zeros((4, 5, 3), np.uint16), "rgb8", "bad_encoding", "needs dtype uint8"),
    ],
)
def test_bad_rgb_inputs_raise_input_error(img, encoding, reason, match) -> None:
    with pytest.raises(InputError, match=match) as err:
        decode_rgb(img, encoding)
    assert err.value.reason == reason


def test_mono8_thermal_scales_to_unit_range() -> None:
    img = np.array([[0, 255], [51, 102]], np.uint8)
    out = ThermalNormalizer(ThermalConfig())(img, "mono8")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, img / 255.0, atol=1e-6)


@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
def test_16bit_percentile_agc_ignores_outliers(encoding: str, rng) -> None:
    # a radiometric scene: 29000..29600 centi-Kelvin, plus a few extremely hot pixels (the sun, a muffler)
    img = rng.integers(29000, 29600, (64, 64)).astype(np.uint16)
    img[0, :8] = 65000
    norm = ThermalNormalizer(ThermalConfig(agc="percentile", low_percentile=1, high_percentile=99,
                                           agc_smoothing=0))
    out = norm(img, encoding)
    assert out.min() == 0.0 and out.max() == 1.0
    # the bulk of the scene spans most of the range instead of being squashed by the outliers
    assert np.percentile(out, 90) - np.percentile(out, 10) > 0.6
    minmax = ThermalNormalizer(ThermalConfig(agc="minmax", agc_smoothing=0))(img, encoding)
    assert np.percentile(minmax, 90) - np.percentile(minmax, 10) < 0.02


def test_fixed_agc_maps_the_configured_range() -> None:
    img = np.array([[27315, 37315], [32315, 20000]], np.uint16)  # 0 C, 100 C, 50 C, below range
    out = ThermalNormalizer(ThermalConfig(agc="fixed", fixed_min=27315, fixed_max=37315))(img, "mono16")
    np.testing.assert_allclose(out, [[0.0, 1.0], [0.5, 0.0]], atol=1e-6)


def test_agc_smoothing_follows_slowly() -> None:
    norm = ThermalNormalizer(ThermalConfig(agc="minmax", agc_smoothing=0.5))
    a = np.array([[1000, 2000]], np.uint16)
    norm(a, "mono16")
    assert (norm.state.lo, norm.state.hi) == (1000, 2000)
    norm(a + 1000, "mono16")  # the scene warms up by 1000 counts
    assert (norm.state.lo, norm.state.hi) == (1500, 2500)


def test_float_thermal_with_nan_and_inf(rng) -> None:
    img = rng.uniform(280.0, 310.0, (32, 32)).astype(np.float32)
    img[3, 4] = np.nan
    img[5, 6] = np.inf
    img[7, 8] = -np.inf
    norm = ThermalNormalizer(ThermalConfig(agc_smoothing=0))
    out = norm(img, "32FC1")
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert out[3, 4] == 0.0 and out[5, 6] == 0.0
    assert norm.invalid_fraction == pytest.approx(3 / img.size)


def test_all_nan_thermal_is_rejected() -> None:
    with pytest.raises(InputError, match="no finite pixels") as err:
        ThermalNormalizer(ThermalConfig())(np.full((4, 4), np.nan, np.float32), "32FC1")
    assert err.value.reason == "nan"


@pytest.mark.parametrize(
    ("img", "encoding", "match"),
    [
        (np.zeros((4, 4), np.uint16), "mono8", "needs dtype uint8"),
        (np.zeros((4, 4, 3), np.uint8), "mono8", "needs 1 channel"),
        (np.zeros((4, 4), np.uint8), "bgr8", "unsupported encoding 'bgr8'"),
        (np.zeros((0, 0), np.uint8), "mono8", "empty"),
    ],
)
def test_bad_thermal_inputs(img, encoding, match) -> None:
    with pytest.raises(InputError, match=match):
        ThermalNormalizer(ThermalConfig())(img, encoding)


def test_invert_for_black_hot_cameras() -> None:
    img = np.array([[0, 255]], np.uint8)
    out = ThermalNormalizer(ThermalConfig(invert=True))(img, "mono8")
    np.testing.assert_allclose(out, [[1.0, 0.0]])
