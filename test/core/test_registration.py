from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from ivfusion_ros.core.registration import Registration, effective_homography
from ivfusion_ros.errors import ConfigError


def _pattern(h: int, w: int) -> np.ndarray:
    """A smooth but structured float image (bilinear interpolation of it is accurate)."""
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    return (0.5 + 0.25 * np.sin(xx / 7.0) * np.cos(yy / 9.0) + 0.2 * np.sin((xx + yy) / 23.0)).astype(
        np.float32)


def test_known_homography_matches_opencv() -> None:
    th, tw, rh, rw = 96, 128, 120, 160
    ang = np.deg2rad(2.0)
    H = np.array([[1.1 * np.cos(ang), -1.1 * np.sin(ang), 12.0],
                  [1.1 * np.sin(ang), 1.1 * np.cos(ang), -6.0],
                  [1e-5, 0.0, 1.0]])
    thermal = _pattern(th, tw)
    reg = Registration(H.ravel())
    out = reg.warp(torch.from_numpy(thermal)[None, None], (rw, rh))[0, 0].numpy()
    assert out.shape == (rh, rw)
    ref = cv2.warpPerspective(thermal, H, (rw, rh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    inside = cv2.warpPerspective(np.ones_like(thermal), H, (rw, rh), flags=cv2.INTER_NEAREST) > 0
    inside = cv2.erode(inside.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0  # skip the 1-px seam
    assert inside.mean() > 0.5
    np.testing.assert_allclose(out[inside], ref[inside], atol=2e-3)
    # outside the thermal view (beyond the 1-px bilinear seam) the output is zero
    near_view = cv2.dilate(reg.valid_mask((tw, th), (rw, rh)).astype(np.uint8), np.ones((3, 3), np.uint8))
    assert np.all(out[near_view == 0] == 0)


def test_point_lands_where_the_homography_sends_it() -> None:
    th, tw = 60, 80
    H = np.array([[1.0, 0, 20.5], [0, 1.0, 10.0], [0, 0, 1]])
    thermal = np.zeros((th, tw), np.float32)
    thermal[30, 40] = 1.0
    out = Registration(H.ravel()).warp(torch.from_numpy(thermal)[None, None], (tw + 40, th + 20))[0, 0]
    y, x = np.unravel_index(int(out.argmax()), out.shape)
    assert (y, x) in {(40, 60), (40, 61)} and out[40, 60] == pytest.approx(0.5, abs=1e-5)


def test_identity_with_other_size_is_a_resize() -> None:
    thermal = _pattern(64, 80)
    out = Registration(np.eye(3).ravel()).warp(torch.from_numpy(thermal)[None, None], (160, 128))[0, 0]
    ref = cv2.resize(thermal, (160, 128), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(out.numpy()[2:-2, 2:-2], ref[2:-2, 2:-2], atol=2e-3)


def test_identity_same_size_passes_through() -> None:
    t = torch.rand(1, 1, 10, 12)
    assert Registration(np.eye(3).ravel()).warp(t, (12, 10)) is t


def test_output_size_rescales_everything() -> None:
    reg = Registration(np.eye(3).ravel(), out_size=(80, 60))
    out = reg.warp(torch.rand(1, 1, 120, 160), (160, 120))
    assert out.shape == (1, 1, 60, 80)
    np.testing.assert_allclose(effective_homography(np.eye(3), (160, 120), (160, 120), (80, 60)),
                               [[0.5, 0, -0.25], [0, 0.5, -0.25], [0, 0, 1]])


@pytest.mark.parametrize(
    ("h", "match"),
    [(np.eye(2).ravel(), "expected 9 numbers"), (np.zeros(9), "singular")],
)
def test_bad_homography(h, match) -> None:
    with pytest.raises(ConfigError, match=match):
        Registration(h)
