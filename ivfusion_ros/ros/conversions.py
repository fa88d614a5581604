"""Message <-> numpy conversions of the node, as pure functions of message *fields*.

Nothing here imports ROS. Inputs are any objects with the fields of ``sensor_msgs/Image`` or
``sensor_msgs/CompressedImage`` (rclpy messages, whose ``data`` is an ``array.array``/``bytes``, or
``rosbags`` messages, whose ``data`` is a numpy array), and outputs are plain values that the node copies into
rclpy messages and the tests into ``rosbags`` messages to check the wire layout for Humble and Jazzy.

Why not cv_bridge: the node needs exactly the conversions below, and owning them

* keeps the node working where cv_bridge is built against a different numpy than the one installed (the
  numpy 2 wheels pulled in by pip next to a ROS numpy-1 cv_bridge make ``import cv_bridge`` fail);
* handles ``step`` row padding and big-endian 16-bit data explicitly and reports every bad message as an
  :class:`~ivfusion_ros.errors.InputError` with a drop-counter ``reason`` (cv_bridge raises a generic
  ``CvBridgeError`` or returns a wrong view for padded rows);
* lets the offline bag tools (``rosbags``, no ROS install) run the very same decoding as the node.

cv_bridge stays an optional run dependency for users' own tooling; the node does not import it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from ivfusion_ros.core.frames import CANONICAL_ENCODINGS, IMAGE_ENCODINGS
from ivfusion_ros.errors import InputError

if TYPE_CHECKING:
    from ivfusion_ros.detect.base import Detections
    from ivfusion_ros.pipeline import Result

__all__ = [
    "IMAGE_ENCODINGS",
    "STATUS_MODES",
    "Detection2DFields",
    "ImageFields",
    "ImageLayout",
    "compressed_msg_to_array",
    "debug_overlay",
    "detections_to_fields",
    "image_fields",
    "image_layout",
    "image_msg_to_array",
    "message_bytes",
    "sec_to_stamp",
    "stamp_to_sec",
    "status_fields",
]

#: Values of ``FusionStatus.mode``.
STATUS_MODES = ("fused", "rgb_only", "thermal_only", "paused")


def stamp_to_sec(stamp: Any) -> float:
    """``builtin_interfaces/Time`` (``sec``, ``nanosec``) -> seconds as float."""
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def sec_to_stamp(t: float) -> tuple[int, int]:
    """Seconds -> ``(sec, nanosec)`` with ``0 <= nanosec < 1e9`` (the inverse of :func:`stamp_to_sec`)."""
    sec = math.floor(t)
    ns = round((t - sec) * 1e9)  # split first: t * 1e9 as a float loses the nanoseconds of today's epoch
    if ns >= 1_000_000_000:
        sec, ns = sec + 1, ns - 1_000_000_000
    return int(sec), int(ns)


def message_bytes(data: Any) -> np.ndarray:
    """The message's ``data`` as a flat uint8 array without copying (bytes, array.array, memoryview, numpy)."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    return np.frombuffer(data, dtype=np.uint8)


@dataclass(frozen=True)
class ImageLayout:
    """A validated ``sensor_msgs/Image``: pixel type, size, row stride and its bytes (unpadded when ``step == row``)."""

    encoding: str
    dtype: np.dtype
    channels: int
    height: int
    width: int
    step: int
    row: int  # bytes of pixels per row; step - row is padding
    data: np.ndarray  # flat uint8 view of msg.data


def image_layout(msg: Any) -> ImageLayout:
    """Check a ``sensor_msgs/Image``'s encoding and sizes before touching its pixels.

    Raises:
        InputError: ``reason="bad_encoding"`` for an unsupported encoding, ``"empty"`` for zero width,
            height or data, ``"size_mismatch"`` when ``len(data) != step * height`` or
            ``step < width * bytes_per_pixel``.
    """
    encoding = str(msg.encoding)
    if encoding not in IMAGE_ENCODINGS:
        raise InputError(
            f"unsupported image encoding {encoding!r} (supported: {', '.join(IMAGE_ENCODINGS)})",
            reason="bad_encoding",
        )
    dtype, channels = IMAGE_ENCODINGS[encoding]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    buf = message_bytes(msg.data)
    if h == 0 or w == 0 or buf.size == 0:
        raise InputError(f"empty image ({w}x{h}, {buf.size} bytes of data)", reason="empty")
    row = w * channels * dtype.itemsize
    if step < row:
        raise InputError(f"{encoding} image {w}x{h}: step {step} is smaller than a row ({row} bytes)",
                         reason="size_mismatch")
    if buf.size != step * h:
        raise InputError(f"{encoding} image {w}x{h}: data has {buf.size} bytes, step*height is {step * h}",
                         reason="size_mismatch")
    return ImageLayout(encoding, dtype, channels, h, w, step, row, buf)


def image_msg_to_array(msg: Any) -> tuple[np.ndarray, str]:
    """Decode a ``sensor_msgs/Image`` into a numpy image in native byte order.

    Returns:
        ``(image, encoding)``: ``(H, W)`` for one channel, ``(H, W, C)`` otherwise, dtype per
        :data:`IMAGE_ENCODINGS`; ``encoding`` is the message's with ``8UC1``/``16UC1`` given as
        ``mono8``/``mono16``. Rows are unpadded; without padding or byte swapping the array is a read-only
        view of ``msg.data``.

    Raises:
        InputError: as :func:`image_layout`.
    """
    lay = image_layout(msg)
    rows = lay.data.reshape(lay.height, lay.step)
    if lay.step != lay.row:
        rows = np.ascontiguousarray(rows[:, : lay.row])  # drop the padding (numpy < 1.23 cannot view it)
    order = ">" if msg.is_bigendian else "<"
    img = rows.view(lay.dtype.newbyteorder(order)) if lay.dtype.itemsize > 1 else rows
    img = img.reshape((lay.height, lay.width) if lay.channels == 1 else (lay.height, lay.width, lay.channels))
    if img.dtype != lay.dtype:  # foreign byte order -> native
        img = img.astype(lay.dtype)
    return img, CANONICAL_ENCODINGS.get(lay.encoding, lay.encoding)


def compressed_msg_to_array(msg: Any) -> tuple[np.ndarray, str]:
    """Decode a ``sensor_msgs/CompressedImage`` (JPEG or PNG) with OpenCV.

    16-bit PNGs stay 16-bit (radiometric thermal). The ``format`` field is only used to reject what
    ``image_transport`` writes for depth (``compressedDepth``); the image type comes from the data.

    Returns:
        ``(image, encoding)`` with encoding ``mono8``, ``mono16``, ``bgr8`` or ``bgra8``.

    Raises:
        InputError: ``"empty"`` without data, ``"bad_encoding"`` for compressedDepth or an unsupported pixel
            type, ``"decode_failed"`` when OpenCV cannot decode the data.
    """
    fmt = str(getattr(msg, "format", ""))
    if "compresseddepth" in fmt.lower().replace(" ", ""):
        raise InputError(f"compressed format {fmt!r} is not supported (use png or jpeg)", reason="bad_encoding")
    buf = message_bytes(msg.data)
    if buf.size == 0:
        raise InputError("empty compressed image", reason="empty")
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(f"cannot decode compressed image (format {fmt!r}, {buf.size} bytes)",
                         reason="decode_failed")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    channels = 1 if img.ndim == 2 else img.shape[2]
    table = {(np.dtype(np.uint8), 1): "mono8", (np.dtype(np.uint16), 1): "mono16",
             (np.dtype(np.uint8), 3): "bgr8", (np.dtype(np.uint8), 4): "bgra8"}
    encoding = table.get((img.dtype, channels))
    if encoding is None:
        raise InputError(f"compressed image has unsupported pixel type {img.dtype} x{channels}",
                         reason="bad_encoding")
    return img, encoding


@dataclass(frozen=True)
class ImageFields:
    """Field values of a ``sensor_msgs/Image`` (without the header)."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: bytes


def image_fields(img: np.ndarray, encoding: str = "rgb8", *, step: int | None = None,
                 bigendian: bool = False) -> ImageFields:
    """Field values of an Image message holding ``img``.

    Args:
        img: ``(H, W)`` or ``(H, W, C)`` array matching ``encoding`` (the node publishes RGB uint8 as rgb8).
        encoding: one of :data:`IMAGE_ENCODINGS`.
        step: row length in bytes (``None`` = unpadded); larger values pad each row with zeros.
        bigendian: store multi-byte pixels big-endian.

    Raises:
        InputError: the array does not match the encoding (``"bad_encoding"``) or ``step`` is too small.
    """
    if encoding not in IMAGE_ENCODINGS:
        raise InputError(f"unsupported image encoding {encoding!r}", reason="bad_encoding")
    dtype, channels = IMAGE_ENCODINGS[encoding]
    got = 1 if img.ndim == 2 else img.shape[2]
    if img.dtype != dtype or got != channels or img.ndim not in (2, 3):
        raise InputError(f"{encoding} needs {dtype} x{channels}, got {img.dtype} {img.shape}",
                         reason="bad_encoding")
    h, w = img.shape[:2]
    row = w * channels * dtype.itemsize
    step = row if step is None else int(step)
    if step < row:
        raise InputError(f"step {step} is smaller than a row ({row} bytes)", reason="size_mismatch")
    arr = np.ascontiguousarray(img, dtype=dtype.newbyteorder(">" if bigendian else "<"))
    raw = arr.view(np.uint8).reshape(h, row)
    if step != row:
        padded = np.zeros((h, step), np.uint8)
        padded[:, :row] = raw
        raw = padded
    return ImageFields(height=h, width=w, encoding=encoding, is_bigendian=int(bool(bigendian)), step=step,
                       data=raw.tobytes())


@dataclass(frozen=True)
class Detection2DFields:
    """Field values of one ``vision_msgs/Detection2D`` (vision_msgs 4.x, Humble and newer).

    ``bbox.center.position.x/y`` = ``cx/cy`` (box centre, pixels), ``bbox.center.theta`` = 0,
    ``bbox.size_x/size_y`` = width/height, one ``results[0].hypothesis`` with ``class_id`` and ``score``
    (the pose of the hypothesis stays zero), ``id`` = the detection's index in the frame.
    """

    cx: float
    cy: float
    size_x: float
    size_y: float
    class_id: str
    score: float
    id: str


def detections_to_fields(dets: Detections, class_id_format: str = "name") -> list[Detection2DFields]:
    """Detections (``x1, y1, x2, y2`` boxes in fused-image pixels) -> Detection2D field values.

    Args:
        class_id_format: ``"name"`` puts the class name in ``hypothesis.class_id``, ``"index"`` its index.
    """
    if class_id_format not in ("name", "index"):
        raise ValueError(f"class_id_format must be name or index, got {class_id_format!r}")
    ids = dets.names() if class_id_format == "name" else [str(int(i)) for i in dets.class_ids.tolist()]
    out = []
    for k, (box, score, cid) in enumerate(zip(dets.boxes.tolist(), dets.scores.tolist(), ids)):
        x1, y1, x2, y2 = (float(v) for v in box)
        out.append(Detection2DFields(cx=(x1 + x2) / 2.0, cy=(y1 + y2) / 2.0, size_x=x2 - x1, size_y=y2 - y1,
                                     class_id=cid, score=float(score), id=str(k)))
    return out


def _f32(v: float) -> float:
    v = float(v)
    return v if math.isfinite(v) else 0.0


def status_fields(
    result: Result | None,
    *,
    mode: str,
    sync_skew: float = 0.0,
    end_to_end_ms: float = 0.0,
    frames_in_thermal: int = 0,
    frames_in_rgb: int = 0,
    frames_fused: int = 0,
    drops: Mapping[str, int] | None = None,
    detector: str = "",
    device: str = "",
    variant: str = "",
) -> dict[str, Any]:
    """Field values of ``ivfusion_ros/msg/FusionStatus`` except ``header``, keyed by field name.

    Args:
        result: the pipeline result of the pair, or ``None`` for a status without a processed frame (a
            stream-health change, e.g. ``mode="paused"``).
        mode: one of :data:`STATUS_MODES`.
        variant: reported when ``result`` is ``None`` (the configured variant).
        drops: dropped messages/pairs by reason; ``frames_dropped`` is their sum.

    Lists are plain Python lists (rclpy converts them); ``stage_latency_ms`` follows ``stage_names``.
    """
    if mode not in STATUS_MODES:
        raise ValueError(f"mode must be one of {', '.join(STATUS_MODES)}, got {mode!r}")
    drops = dict(sorted((drops or {}).items()))
    timings = dict(result.timings) if result is not None else {}
    return {
        "variant": result.variant if result is not None else variant,
        "regime": result.regime if result is not None else "",
        "mode": mode,
        "illumination": _f32(result.illumination) if result is not None else 0.0,
        "glare_fraction": _f32(result.glare_fraction) if result is not None else 0.0,
        "sync_skew": _f32(abs(sync_skew)),
        "stage_names": list(timings),
        "stage_latency_ms": [_f32(v) for v in timings.values()],
        "latency_ms": _f32(sum(timings.values())),
        "end_to_end_ms": _f32(end_to_end_ms),
        "frames_in_thermal": int(frames_in_thermal),
        "frames_in_rgb": int(frames_in_rgb),
        "frames_fused": int(frames_fused),
        "frames_dropped": int(sum(drops.values())),
        "drop_reasons": list(drops),
        "drop_counts": [int(v) for v in drops.values()],
        "detections": len(result.detections) if result is not None else 0,
        "detector": detector,
        "device": device,
    }


def debug_overlay(rgb: np.ndarray, dets: Detections, lines: list[str]) -> np.ndarray:
    """The fused image with the detections (drawn by :func:`ivfusion_ros.viz.draw_detections`, as in the CLI's
    output) and a few lines of text top-left (mode, regime, variant, latency).

    Args:
        rgb: ``(H, W, 3)`` uint8 RGB; not modified.
        lines: text lines.

    Returns:
        a new ``(H, W, 3)`` uint8 RGB image.
    """
    from ivfusion_ros.viz import draw_detections

    out = draw_detections(rgb, dets)
    h, w = out.shape[:2]
    scale = max(0.35, min(w, h) / 900.0)
    thick = max(1, round(min(w, h) / 320))
    y = 0
    for text in lines:
        (_, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        y += th + base + 4
        cv2.putText(out, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
        cv2.putText(out, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 0), thick, cv2.LINE_AA)
    return out
