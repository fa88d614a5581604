"""Warping thermal images onto the RGB camera's pixel grid.

Thermal and RGB cameras on a robot sit a few centimetres apart with different lenses, so their images are
not pixel-aligned. For a scene far away compared with the baseline a homography ``H`` (thermal pixel ->
RGB pixel, OpenCV's pixel-centre convention) aligns them; it comes from calibration
(``registration.homography``). The fused output lives in the RGB camera's frame, optionally resized to
``registration.output_width/height``.

The sampling grid depends only on the sizes and ``H``, so it is computed once per size and reused: each
frame is then one ``grid_sample`` on whatever device the tensors live on.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ivfusion_ros.errors import ConfigError

__all__ = ["Registration", "effective_homography"]


def _resize_homography(src_wh: tuple[int, int], dst_wh: tuple[int, int]) -> np.ndarray:
    """The homography of a plain resize, with the pixel-centre convention of ``cv2.resize``."""
    sx, sy = dst_wh[0] / src_wh[0], dst_wh[1] / src_wh[1]
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]], dtype=np.float64)


def effective_homography(
    h: np.ndarray | tuple[float, ...], thermal_wh: tuple[int, int], rgb_wh: tuple[int, int],
    out_wh: tuple[int, int] | None = None,
) -> np.ndarray:
    """The 3x3 map from thermal pixels to output pixels.

    An identity ``h`` between images of different sizes means "same field of view": a resize. Otherwise
    ``h`` maps thermal pixels to RGB pixels, and the RGB -> output resize is appended.

    Raises:
        ConfigError: ``h`` is not 3x3 (9 numbers) or is singular.
    """
    hm = np.asarray(h, dtype=np.float64)
    if hm.size != 9:
        raise ConfigError(f"registration.homography: expected 9 numbers (3x3), got shape {hm.shape}")
    hm = hm.reshape(3, 3)
    if abs(np.linalg.det(hm)) < 1e-12:
        raise ConfigError("registration.homography: the matrix is singular (not invertible)")
    hm = hm / hm[2, 2] if hm[2, 2] != 0 else hm
    if np.allclose(hm, np.eye(3)) and tuple(thermal_wh) != tuple(rgb_wh):
        hm = _resize_homography(thermal_wh, rgb_wh)
    out_wh = out_wh or rgb_wh
    if tuple(out_wh) != tuple(rgb_wh):
        hm = _resize_homography(rgb_wh, out_wh) @ hm
    return hm


class Registration:
    """Warps thermal ``(B, C, h, w)`` tensors onto the output grid; caches one grid per input size.

    Args:
        homography: 3x3 (or 9 numbers), thermal pixel -> RGB pixel.
        out_size: ``(width, height)`` of the output, or ``None`` for the RGB size.
    """

    def __init__(self, homography: np.ndarray | tuple[float, ...], out_size: tuple[int, int] | None = None):
        self.homography = np.asarray(homography, dtype=np.float64).reshape(-1)
        effective_homography(self.homography, (1, 1), (1, 1))  # validate now, not on the first frame
        self.out_size = out_size if out_size and out_size[0] > 0 and out_size[1] > 0 else None
        self._key: tuple | None = None
        self._grid: torch.Tensor | None = None
        self._identity = False

    def output_size(self, rgb_wh: tuple[int, int]) -> tuple[int, int]:
        """``(width, height)`` of the fused output for an RGB image of size ``rgb_wh``."""
        return self.out_size or rgb_wh

    def matrix(self, thermal_wh: tuple[int, int], rgb_wh: tuple[int, int]) -> np.ndarray:
        """The 3x3 thermal-pixel -> output-pixel homography for these sizes."""
        return effective_homography(self.homography, thermal_wh, rgb_wh, self.output_size(rgb_wh))

    def _prepare(self, thermal_wh: tuple[int, int], rgb_wh: tuple[int, int], device: torch.device,
                 dtype: torch.dtype) -> None:
        key = (thermal_wh, rgb_wh, device, dtype)
        if key == self._key:
            return
        out_w, out_h = self.output_size(rgb_wh)
        hm = self.matrix(thermal_wh, rgb_wh)
        self._identity = tuple(thermal_wh) == (out_w, out_h) and np.allclose(hm, np.eye(3), atol=1e-9)
        if not self._identity:
            inv = np.linalg.inv(hm)
            xs, ys = np.meshgrid(np.arange(out_w, dtype=np.float64), np.arange(out_h, dtype=np.float64))
            pts = np.stack((xs, ys, np.ones_like(xs)), axis=-1) @ inv.T
            z = pts[..., 2:3]
            z = np.where(np.abs(z) < 1e-12, 1e-12, z)
            src = pts[..., :2] / z  # thermal pixel coordinates (pixel centres at integers)
            tw, th = thermal_wh
            norm = np.empty_like(src)
            norm[..., 0] = (2.0 * src[..., 0] + 1.0) / tw - 1.0  # align_corners=False convention
            norm[..., 1] = (2.0 * src[..., 1] + 1.0) / th - 1.0
            self._grid = torch.from_numpy(norm[None].astype(np.float32)).to(device=device, dtype=dtype)
        else:
            self._grid = None
        self._key = key

    def warp(self, thermal: torch.Tensor, rgb_wh: tuple[int, int]) -> torch.Tensor:
        """Warp ``thermal`` ``(B, C, h, w)`` onto the output grid; pixels from outside the thermal view are 0.

        Returns:
            ``(B, C, out_h, out_w)`` on the input's device and dtype.
        """
        b, _, th, tw = thermal.shape
        self._prepare((tw, th), rgb_wh, thermal.device, thermal.dtype)
        if self._identity:
            return thermal
        assert self._grid is not None
        grid = self._grid.expand(b, -1, -1, -1) if b > 1 else self._grid
        return F.grid_sample(thermal, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def valid_mask(self, thermal_wh: tuple[int, int], rgb_wh: tuple[int, int]) -> np.ndarray:
        """Boolean ``(out_h, out_w)``: where the thermal camera sees the output (for evaluation masks)."""
        hm = self.matrix(thermal_wh, rgb_wh)
        out_w, out_h = self.output_size(rgb_wh)
        ones = np.ones((thermal_wh[1], thermal_wh[0]), np.uint8)
        return cv2.warpPerspective(ones, hm, (out_w, out_h), flags=cv2.INTER_NEAREST) > 0
