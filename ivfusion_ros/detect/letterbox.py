"""Aspect-preserving resize + constant padding to a fixed network input ("letterbox"), and its inverse.

YOLO models are trained on letterboxed images: the image is scaled by one factor so that it fits the
network input, centred, and the borders are filled with gray 114. Feeding a plain stretched resize works
but costs accuracy on non-square cameras, so the detectors use this class. It keeps the canvas and the
NCHW float buffer between calls (a camera stream has one size), and remembers the geometry of the last call
so that boxes predicted in network pixels can be mapped back with :meth:`Letterbox.unmap_boxes`.
"""

from __future__ import annotations

import cv2
import numpy as np

from ivfusion_ros.errors import InputError

__all__ = ["Letterbox"]


class Letterbox:
    """Letterbox RGB images into a fixed ``width x height`` network input.

    Args:
        width, height: network input size in pixels (both >= 1).
        pad_value: gray level of the border (114 as in YOLOv5/v8 training).

    The geometry follows Ultralytics' ``LetterBox(center=True)``: scale ``r = min(W/w, H/h)``, resized size
    ``(round(w*r), round(h*r))``, left/top padding ``round(dw/2 - 0.1)`` so odd remainders go to the
    right/bottom. :meth:`unmap_boxes` uses the exact per-axis ratios of that rounded size, which is at least
    as accurate as Ultralytics' single gain.

    Not thread-safe (one set of buffers and one remembered geometry per instance).
    """

    def __init__(self, width: int, height: int, pad_value: int = 114) -> None:
        if width < 1 or height < 1:
            raise ValueError(f"letterbox size must be positive, got {width}x{height}")
        self.width = int(width)
        self.height = int(height)
        self.pad_value = int(pad_value)
        self._canvas = np.full((self.height, self.width, 3), self.pad_value, np.uint8)
        self._blob = np.empty((1, 3, self.height, self.width), np.float32)
        self._resized: np.ndarray | None = None
        self._src_size: tuple[int, int] | None = None  # (w, h) of the last image
        self._new_size = (self.width, self.height)  # (w, h) of the resized image inside the canvas
        self._pad = (0, 0)  # (left, top)
        self._ratio = (1.0, 1.0)  # (x, y) resized / original

    # --- geometry ----------------------------------------------------------------------------------------

    @property
    def src_size(self) -> tuple[int, int] | None:
        """``(width, height)`` of the last image letterboxed, ``None`` before the first call."""
        return self._src_size

    @property
    def scale(self) -> tuple[float, float]:
        """Per-axis ratio ``(sx, sy)`` of network pixels to original pixels for the last image."""
        return self._ratio

    @property
    def pad(self) -> tuple[int, int]:
        """``(left, top)`` padding in network pixels for the last image."""
        return self._pad

    @property
    def content_box(self) -> tuple[int, int, int, int]:
        """``(x1, y1, x2, y2)`` of the image area inside the network input (the rest is padding)."""
        left, top = self._pad
        return left, top, left + self._new_size[0], top + self._new_size[1]

    def fit(self, w: int, h: int) -> None:
        """Set the geometry for ``w x h`` images without letterboxing one (the tensor path does the pixels)."""
        self._set_geometry(int(w), int(h))

    def _set_geometry(self, w: int, h: int) -> None:
        r = min(self.width / w, self.height / h)
        nw = min(self.width, max(1, round(w * r)))
        nh = min(self.height, max(1, round(h * r)))
        dw, dh = (self.width - nw) / 2.0, (self.height - nh) / 2.0
        left, top = round(dw - 0.1), round(dh - 0.1)
        left, top = max(0, left), max(0, top)
        self._src_size = (w, h)
        self._new_size = (nw, nh)
        self._pad = (left, top)
        self._ratio = (nw / w, nh / h)
        self._resized = np.empty((nh, nw, 3), np.uint8) if (nw, nh) != (w, h) else None
        # Refill the border once per geometry change; the image area is overwritten on every call.
        self._canvas[...] = self.pad_value

    # --- forward / inverse ---------------------------------------------------------------------------------

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """Letterbox one image.

        Args:
            rgb: ``(h, w, 3)`` uint8 image, RGB order (the order is passed through unchanged).

        Returns:
            ``(1, 3, H, W)`` float32 in [0, 1], C-contiguous. This is an internal buffer: it is overwritten
            by the next call, copy it if you need to keep it.
        """
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or rgb.size == 0:
            raise InputError(
                f"letterbox: expected a non-empty uint8 image of shape (H, W, 3), got {rgb.dtype} {rgb.shape}"
            )
        h, w = rgb.shape[:2]
        if self._src_size != (w, h):
            self._set_geometry(w, h)
        if not rgb.flags.c_contiguous:
            rgb = np.ascontiguousarray(rgb)
        nw, nh = self._new_size
        left, top = self._pad
        if self._resized is not None:
            cv2.resize(rgb, (nw, nh), dst=self._resized, interpolation=cv2.INTER_LINEAR)
            self._canvas[top : top + nh, left : left + nw] = self._resized
        else:
            self._canvas[top : top + nh, left : left + nw] = rgb
        # HWC uint8 -> CHW float32 in the persistent buffer, then scale in place (no temporaries).
        self._blob[0] = self._canvas.transpose(2, 0, 1)
        self._blob *= np.float32(1.0 / 255.0)
        return self._blob

    def unmap_boxes(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Map ``(N, 4)`` ``x1, y1, x2, y2`` boxes from network pixels to pixels of the last image.

        Returns a new float32 ``(N, 4)`` array clipped to ``[0, w] x [0, h]`` of that image. Boxes lying
        entirely in the padding collapse to zero width or height (callers drop those).
        """
        if self._src_size is None:
            raise RuntimeError("Letterbox.unmap_boxes called before any image was letterboxed")
        w, h = self._src_size
        out = np.asarray(boxes_xyxy, np.float32).reshape(-1, 4).copy()
        left, top = self._pad
        sx, sy = self._ratio
        out[:, 0::2] -= left
        out[:, 1::2] -= top
        out[:, 0::2] /= sx
        out[:, 1::2] /= sy
        np.clip(out[:, 0::2], 0.0, w, out=out[:, 0::2])
        np.clip(out[:, 1::2], 0.0, h, out=out[:, 1::2])
        return out
