"""Drawing and saving images for people: detections, side-by-side strips, PNG output.

Everything here takes and returns RGB (the package's convention); only :func:`to_bgr` and
:func:`save_rgb` deal with OpenCV's BGR order. The functions never modify their inputs. Sizes of lines
and text scale with the image, so a 320x256 thumbnail and a 1280x1024 frame are equally legible.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ivfusion_ros.detect.base import Detections
from ivfusion_ros.errors import InputError, IvfusionError

__all__ = ["class_color", "draw_detections", "save_rgb", "side_by_side", "to_bgr"]

Color = tuple[int, int, int]

# Distinct, saturated RGB colours that stay visible on both dark night scenes and white-hot thermal.
_PALETTE: tuple[Color, ...] = (
    (0, 255, 0), (255, 64, 64), (0, 200, 255), (255, 200, 0), (255, 0, 255), (0, 255, 200),
    (255, 128, 0), (160, 96, 255),
)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def class_color(class_id: int) -> Color:
    """The RGB colour used for a class index when no colour is given (stable across runs)."""
    return _PALETTE[int(class_id) % len(_PALETTE)]


def _as_rgb8(img: np.ndarray, what: str) -> np.ndarray:
    """Return ``img`` as a contiguous ``(H, W, 3)`` uint8 RGB copy; gray is replicated to 3 channels.

    Raises:
        InputError: not uint8, or not shaped ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``.
    """
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        raise InputError(f"{what}: expected a uint8 image, got dtype {arr.dtype}", reason="bad_dtype")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        return np.ascontiguousarray(np.repeat(arr[..., None], 3, axis=2))
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        return np.array(arr[..., :3], order="C", copy=True)  # always a copy: we draw on it
    raise InputError(f"{what}: expected an (H, W) or (H, W, 3) image, got shape {arr.shape}",
                     reason="bad_shape")


def _text_color(bg: Color) -> Color:
    """Black or white, whichever reads better on ``bg`` (by Rec. 601 luma)."""
    r, g, b = bg
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def _put_label(img: np.ndarray, text: str, x: int, y: int, color: Color, scale: float, thick: int,
               above: bool = True) -> None:
    """Draw ``text`` on a filled tag of ``color`` with its lower-left corner at (x, y), in place.

    With ``above`` the tag sits on top of y (on the box edge); it moves inside the image when it would
    leave it, so labels of boxes touching the top or right border stay readable.
    """
    h, w = img.shape[:2]
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, thick)
    pad = max(1, thick)
    tag_h = th + base + 2 * pad
    y0 = y - tag_h if above else y
    y0 = min(max(0, y0), max(0, h - tag_h))
    x0 = min(max(0, x), max(0, w - tw - 2 * pad))
    cv2.rectangle(img, (x0, y0), (x0 + tw + 2 * pad, y0 + tag_h), color, -1)
    cv2.putText(img, text, (x0 + pad, y0 + pad + th), _FONT, scale, _text_color(color), thick, cv2.LINE_AA)


def draw_detections(
    rgb: np.ndarray,
    detections: Detections,
    color: Color | None = None,
    gt_boxes: np.ndarray | None = None,
    gt_color: Color = (255, 255, 255),
) -> np.ndarray:
    """Draw detection boxes with ``"<class> <score>"`` tags, and optionally ground-truth boxes.

    Args:
        rgb: ``(H, W, 3)`` uint8 RGB (or ``(H, W)`` uint8 gray, drawn on as RGB); not modified.
        detections: boxes in ``rgb``'s pixel coordinates (``x1, y1, x2, y2``), any count incl. zero.
        color: one RGB colour for all boxes; ``None`` colours each class with :func:`class_color`.
        gt_boxes: ``(M, 4)`` ``x1, y1, x2, y2`` ground truth, drawn first as thin boxes in
            ``gt_color`` so the detections stay on top.

    Returns:
        A new ``(H, W, 3)`` uint8 RGB image.

    Raises:
        InputError: ``rgb`` is not a uint8 image.
    """
    out = _as_rgb8(rgb, "draw_detections")
    h, w = out.shape[:2]
    thick = max(1, round(min(h, w) / 320))
    scale = max(0.35, min(h, w) / 900)
    if gt_boxes is not None:
        for x1, y1, x2, y2 in np.asarray(gt_boxes, np.float64).reshape(-1, 4).tolist():
            cv2.rectangle(out, (round(x1), round(y1)), (round(x2) - 1, round(y2) - 1), gt_color,
                          max(1, thick // 2), cv2.LINE_8)
    names = detections.names()
    boxes = np.asarray(detections.boxes, np.float64).reshape(-1, 4).tolist()  # Python floats for round()
    rows = zip(boxes, detections.scores.tolist(), detections.class_ids.tolist(), names, strict=True)
    for box, score, cid, name in rows:
        c = color if color is not None else class_color(cid)
        x1, y1, x2, y2 = (round(v) for v in box)
        cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), c, thick, cv2.LINE_8)  # crisp, exact colour
        _put_label(out, f"{name} {score:.2f}", x1, y1, c, scale, max(1, thick // 2 + (thick > 1)))
    return out


def side_by_side(images: Sequence[np.ndarray], labels: Sequence[str]) -> np.ndarray:
    """Put images next to each other under a title bar naming each one.

    Every image is scaled to the first one's height (keeping its aspect ratio); gray images become
    3-channel. The result is ``(H + bar, sum of scaled widths, 3)`` uint8 RGB with
    ``bar = max(18, round(0.06 * H))``; a 1-px dark line separates the panels (drawn over them, so the
    width is exactly the sum).

    Raises:
        InputError: no images, a count mismatch between images and labels, or a non-uint8 image.
    """
    if len(images) == 0:
        raise InputError("side_by_side: no images given", reason="empty")
    if len(images) != len(labels):
        raise InputError(f"side_by_side: {len(images)} images but {len(labels)} labels", reason="bad_input")
    panels = [_as_rgb8(img, f"side_by_side image {i}") for i, img in enumerate(images)]
    h = panels[0].shape[0]
    scaled = []
    for p in panels:
        ph, pw = p.shape[:2]
        if ph != h:
            nw = max(1, round(pw * h / ph))
            p = cv2.resize(p, (nw, h), interpolation=cv2.INTER_AREA if ph > h else cv2.INTER_LINEAR)
        scaled.append(p)
    bar = max(18, round(0.06 * h))
    body = np.concatenate(scaled, axis=1)
    title = np.full((bar, body.shape[1], 3), 24, np.uint8)
    scale = bar / 40.0
    thick = max(1, round(bar / 22))
    x = 0
    for p, text in zip(scaled, labels, strict=True):
        pw = p.shape[1]
        (tw, th), _ = cv2.getTextSize(text, _FONT, scale, thick)
        s = scale * min(1.0, (pw - 8) / max(tw, 1))  # shrink labels wider than their panel
        (tw, th), _ = cv2.getTextSize(text, _FONT, s, thick)
        cv2.putText(title, text, (x + max(2, (pw - tw) // 2), (bar + th) // 2), _FONT, s, (235, 235, 235),
                    thick, cv2.LINE_AA)
        if x > 0:
            body[:, x - 1 : x + 0] = 16
            title[:, x - 1 : x + 0] = 64
        x += pw
    return np.concatenate([title, body], axis=0)


def to_bgr(img: np.ndarray) -> np.ndarray:
    """RGB ``(H, W, 3)`` -> BGR for OpenCV; gray ``(H, W)`` -> 3-channel BGR; RGBA drops alpha.

    Keeps the dtype (uint8, uint16 or float32 all work). Returns a new contiguous array.
    """
    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        return np.ascontiguousarray(np.repeat(arr[..., None], 3, axis=2))
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        return np.ascontiguousarray(arr[..., 2::-1])
    raise InputError(f"to_bgr: expected an (H, W) or (H, W, 3) image, got shape {arr.shape}",
                     reason="bad_shape")


def save_rgb(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an RGB (or gray) image as a PNG (or whatever the suffix names) via OpenCV.

    ``(H, W, 3)`` RGB is converted to BGR for OpenCV; ``(H, W)`` gray is written as gray, uint16 gray
    as a 16-bit PNG (e.g. raw centi-kelvin thermal). The parent directory must exist.

    Returns:
        The path written.

    Raises:
        IvfusionError: the file cannot be written (missing directory, permissions, unknown suffix,
            unsupported dtype); the message names the path.
    """
    p = Path(path)
    arr = np.asarray(rgb)
    try:
        data = arr if arr.ndim == 2 else to_bgr(arr)
        ok = cv2.imwrite(str(p), data)
    except (cv2.error, InputError) as err:
        raise IvfusionError(f"cannot write image {p}: {err}") from None
    if not ok:
        reason = "directory does not exist" if not p.parent.is_dir() else "OpenCV could not encode/write it"
        raise IvfusionError(f"cannot write image {p}: {reason}")
    return p
