"""Turning camera images (as ROS encodings name them) into the pipeline's two inputs.

* Thermal: ``mono8``/``8UC1``, ``mono16``/``16UC1`` (radiometric counts, e.g. centi-Kelvin) and
  ``32FC1`` (temperatures, may hold NaN/inf for invalid pixels) become float32 intensity in [0, 1] via a
  robust automatic gain control (AGC). Raw 16-bit thermal spans a few hundred counts of a 65536 range, so a
  fixed /65535 scaling would be black; percentiles ignore the hot/cold outliers (sun, sky) that min/max
  would chase, and temporal smoothing stops the picture from pumping when a hot object enters.
* RGB: ``rgb8``, ``bgr8``, ``rgba8``, ``bgra8`` and ``mono8`` become RGB uint8 ``(H, W, 3)``.

Everything wrong with an image raises :class:`~ivfusion_ros.errors.InputError` with a ``reason`` that the
node and the replay tool count drops under.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ivfusion_ros.config import ThermalConfig
from ivfusion_ros.errors import InputError

__all__ = ["CANONICAL_ENCODINGS", "IMAGE_ENCODINGS", "RGB_ENCODINGS", "THERMAL_ENCODINGS", "ThermalNormalizer",
           "agc_stride", "check_image", "decode_rgb", "thermal_to_display"]

#: encoding -> (numpy dtype, channels)
THERMAL_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "mono8": (np.dtype(np.uint8), 1),
    "8UC1": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}
RGB_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
}

#: Every ``sensor_msgs/Image`` encoding the pipeline reads (thermal or RGB side): encoding -> (dtype, channels).
IMAGE_ENCODINGS: dict[str, tuple[np.dtype, int]] = {**THERMAL_ENCODINGS, **RGB_ENCODINGS}
#: Aliases reported under their usual name (``8UC1`` is mono8, ``16UC1`` mono16).
CANONICAL_ENCODINGS = {"8UC1": "mono8", "16UC1": "mono16"}

_TO_RGB = {
    "bgr8": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
    "mono8": cv2.COLOR_GRAY2RGB,
}

# Percentile AGC reads a strided subsample of about this many pixels: percentiles of a regular subsample of
# a camera image differ from the full image's by far less than one gray level, at a fraction of the work.
_AGC_SAMPLES = 65536


def agc_stride(size: int) -> int:
    """Stride of the regular subsample (about ``_AGC_SAMPLES`` pixels) that percentile AGC reads."""
    return max(1, int((size / _AGC_SAMPLES) ** 0.5))


def check_image(img: np.ndarray, encoding: str, table: dict[str, tuple[np.dtype, int]], what: str) -> np.ndarray:
    """Validate dtype, channel count and size against the encoding; return a 2-D or 3-D view."""
    if encoding not in table:
        raise InputError(
            f"{what} image: unsupported encoding {encoding!r} (supported: {', '.join(table)})",
            reason="bad_encoding",
        )
    if not isinstance(img, np.ndarray):
        raise InputError(f"{what} image: expected a numpy array, got {type(img).__name__}", reason="bad_input")
    if img.size == 0 or img.ndim < 2 or img.shape[0] == 0 or img.shape[1] == 0:
        raise InputError(f"{what} image is empty (shape {img.shape})", reason="empty")
    dtype, channels = table[encoding]
    got = 1 if img.ndim == 2 else img.shape[2]
    if img.ndim > 3 or got != channels:
        raise InputError(
            f"{what} image: encoding {encoding} needs {channels} channel(s), got shape {img.shape}",
            reason="channel_mismatch",
        )
    if img.dtype != dtype:
        raise InputError(
            f"{what} image: encoding {encoding} needs dtype {dtype}, got {img.dtype}", reason="bad_encoding"
        )
    return img[:, :, 0] if img.ndim == 3 and channels == 1 else img


def decode_rgb(img: np.ndarray, encoding: str = "rgb8") -> np.ndarray:
    """Return the visible image as contiguous RGB uint8 ``(H, W, 3)``.

    Raises:
        InputError: unknown encoding, wrong dtype or channel count, or an empty image.
    """
    img = check_image(img, encoding, RGB_ENCODINGS, "RGB")
    if encoding in _TO_RGB:
        return cv2.cvtColor(np.ascontiguousarray(img), _TO_RGB[encoding])
    return np.ascontiguousarray(img)


@dataclass
class AgcState:
    """The smoothed AGC range of the previous frame (raw units)."""

    lo: float
    hi: float


class ThermalNormalizer:
    """Stateful thermal decoder: raw thermal image -> float32 ``(H, W)`` intensity in [0, 1].

    One instance per thermal stream: the AGC range is smoothed across its frames.
    """

    def __init__(self, cfg: ThermalConfig) -> None:
        self.cfg = cfg
        self.state: AgcState | None = None
        #: fraction of non-finite pixels in the last 32FC1 frame (reported in the status message)
        self.invalid_fraction = 0.0

    def reset(self) -> None:
        """Forget the smoothed AGC range (e.g. after the camera restarted)."""
        self.state = None

    def _range(self, img: np.ndarray, finite: np.ndarray | None) -> tuple[float, float]:
        cfg = self.cfg
        if cfg.agc == "fixed":
            return cfg.fixed_min, cfg.fixed_max
        if cfg.agc == "minmax":  # exact: a stride would miss the single hottest pixel
            valid = img if finite is None else img[finite]
            lo, hi = float(valid.min()), float(valid.max())
        else:
            k = agc_stride(img.size)
            sample = img[::k, ::k] if finite is None else img[::k, ::k][finite[::k, ::k]]
            if sample.size == 0:  # every finite pixel was skipped by the stride
                sample = img[finite]
            lo, hi = (float(v) for v in np.percentile(sample, (cfg.low_percentile, cfg.high_percentile)))
        if self.state is not None and cfg.agc_smoothing > 0:
            a = cfg.agc_smoothing
            lo = a * self.state.lo + (1 - a) * lo
            hi = a * self.state.hi + (1 - a) * hi
        self.state = AgcState(lo, hi)
        return lo, hi

    def __call__(self, img: np.ndarray, encoding: str = "mono8") -> np.ndarray:
        """Decode one thermal image.

        Raises:
            InputError: unknown encoding, wrong dtype or channel count, empty image, or a float image
                without a single finite pixel.
        """
        img = check_image(img, encoding, THERMAL_ENCODINGS, "thermal")
        finite = None
        if img.dtype == np.uint8:
            out = img.astype(np.float32) * np.float32(1.0 / 255.0)
        else:
            if img.dtype == np.float32:
                finite = np.isfinite(img)
                n_bad = img.size - int(np.count_nonzero(finite))
                self.invalid_fraction = n_bad / img.size
                if n_bad == img.size:
                    raise InputError("thermal image has no finite pixels (all NaN/inf)", reason="nan")
                if n_bad == 0:
                    finite = None
            lo, hi = self._range(img, finite)
            scale = np.float32(1.0 / max(hi - lo, 1e-6))
            out = (img.astype(np.float32) - np.float32(lo)) * scale
            if finite is not None:
                out[~finite] = 0.0  # invalid pixels read as the coldest value, never as NaN downstream
            np.clip(out, 0.0, 1.0, out=out)
        if self.cfg.invert:
            np.subtract(np.float32(1.0), out, out=out)
        return out


def thermal_to_display(intensity: np.ndarray) -> np.ndarray:
    """float [0, 1] ``(H, W)`` -> uint8 RGB ``(H, W, 3)`` gray, for strips and debug images."""
    gray = np.clip(intensity * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
