"""Letterbox geometry, buffer reuse and the inverse box mapping."""

from __future__ import annotations

import numpy as np
import pytest

from ivfusion_ros.detect.letterbox import Letterbox
from ivfusion_ros.errors import InputError


@pytest.mark.parametrize(
    ("w", "h", "new", "pad"),
    [
        (640, 480, (320, 240), (0, 8)),
        (300, 500, (154, 256), (83, 0)),
        (320, 256, (320, 256), (0, 0)),
        (163, 128, (320, 251), (0, 2)),  # odd remainder (5 rows): the extra row goes to the bottom
    ],
)
def test_geometry(w, h, new, pad) -> None:
    lb = Letterbox(320, 256)
    out = lb(np.zeros((h, w, 3), np.uint8))
    assert out.shape == (1, 3, 256, 320) and out.dtype == np.float32 and out.flags.c_contiguous
    assert lb.pad == pad
    assert lb.src_size == (w, h)
    np.testing.assert_allclose(lb.scale, (new[0] / w, new[1] / h))


def test_values_padding_and_channel_order() -> None:
    lb = Letterbox(64, 64)
    img = np.zeros((32, 64, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 255, 0, 51
    out = lb(img)
    assert lb.pad == (0, 16)
    np.testing.assert_allclose(out[0, :, 16:48, :].reshape(3, -1).mean(axis=1), [1.0, 0.0, 0.2], atol=1e-6)
    np.testing.assert_allclose(out[0, :, :16], 114 / 255, atol=1e-6)
    np.testing.assert_allclose(out[0, :, 48:], 114 / 255, atol=1e-6)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_buffers_are_reused_and_border_refreshed_on_size_change() -> None:
    lb = Letterbox(64, 64)
    wide = np.full((32, 64, 3), 200, np.uint8)
    tall = np.full((64, 32, 3), 10, np.uint8)
    a = lb(wide)
    b = lb(wide)
    assert a is b  # same persistent buffer
    c = lb(tall)
    assert c is a
    # The rows that held the wide image are padding now: no stale pixels.
    np.testing.assert_allclose(c[0, :, :, :16], 114 / 255, atol=1e-6)
    np.testing.assert_allclose(c[0, :, :, 16:48], 10 / 255, atol=1e-6)


def test_non_contiguous_input() -> None:
    lb = Letterbox(64, 64)
    img = np.arange(32 * 64 * 3, dtype=np.uint8).reshape(32, 64, 3)
    a = lb(img[:, ::-1]).copy()
    b = lb(np.ascontiguousarray(img[:, ::-1]))
    np.testing.assert_array_equal(a, b)


def test_unmap_inverts_forward_mapping_and_clips() -> None:
    lb = Letterbox(320, 256)
    lb(np.zeros((500, 300, 3), np.uint8))
    sx, sy = lb.scale
    left, top = lb.pad
    orig = np.array([[10, 20, 110, 220], [200, 300, 290, 490]], np.float32)
    net = orig * [sx, sy, sx, sy] + [left, top, left, top]
    np.testing.assert_allclose(lb.unmap_boxes(net), orig, atol=1e-3)
    # A box reaching into the padding is clipped to the image; one fully inside it collapses.
    out = lb.unmap_boxes(np.array([[0, -5, 100, 300], [0, 10, 40, 50]], np.float32))
    assert out[0, 0] == 0 and out[0, 1] == 0 and out[0, 3] == 500
    assert out[1, 2] <= out[1, 0]
    assert out.dtype == np.float32


def test_rejects_bad_images() -> None:
    lb = Letterbox(64, 64)
    with pytest.raises(InputError, match=r"letterbox: expected a non-empty uint8 image"):
        lb(np.zeros((10, 10), np.uint8))
    with pytest.raises(InputError, match=r"letterbox"):
        lb(np.zeros((0, 10, 3), np.uint8))
    with pytest.raises(ValueError, match=r"letterbox size must be positive"):
        Letterbox(0, 10)
