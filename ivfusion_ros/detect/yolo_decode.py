"""Decoding of the raw output tensors of YOLO-family ONNX exports into boxes, scores and class ids.

Three output layouts cover the common exports (batch size 1):

``yolov5``  ``[1, N, 5 + C]``: rows ``cx, cy, w, h, objectness, class scores...``; score = obj * cls.
            YOLOv5/v7 and YOLOX-style exports, N = 25200 at 640x640.
``yolov8``  ``[1, 4 + C, N]``: columns ``cx, cy, w, h, class scores...``; no objectness.
            YOLOv8 / YOLO11 / YOLOv9 Ultralytics exports, N = 8400 at 640x640.
``end2end`` ``[1, K, 6]``: rows ``x1, y1, x2, y2, score, class`` already filtered by NMS inside the model.
            YOLOv10, YOLO26 and Ultralytics ``nms=True`` exports, K = 300 typically.

All decoders are vectorised (one pass of numpy reductions over the tensor) and return boxes as
``x1, y1, x2, y2`` in network-input pixels; mapping back to the image is the letterbox's job. Only the best
class of each candidate is kept (no multi-label output), as in the Ultralytics predictors' default.
"""

from __future__ import annotations

import numpy as np

from ivfusion_ros.errors import ModelError

__all__ = [
    "END2END_MAX_K",
    "LAYOUTS",
    "check_layout",
    "decode",
    "decode_end2end",
    "decode_yolov5",
    "decode_yolov8",
    "detect_layout",
]

LAYOUTS = ("yolov5", "yolov8", "end2end")
#: Largest K for which a ``[1, K, 6]`` output is taken as end-to-end (NMS-ed) rather than YOLOv5 with one
#: class: end-to-end exports keep at most a few hundred boxes, raw YOLOv5 heads have thousands of anchors.
END2END_MAX_K = 1000

Decoded = tuple[np.ndarray, np.ndarray, np.ndarray]


def _squeeze_batch(out: np.ndarray) -> np.ndarray:
    """``[1, a, b]`` -> ``[a, b]``; ``[a, b]`` passes through; anything else cannot be decoded."""
    if out.ndim == 3 and out.shape[0] == 1:
        return out[0]
    if out.ndim == 2:
        return out
    raise ModelError(
        f"cannot decode a YOLO output of shape {list(out.shape)}: expected [1, N, 5+C], [1, 4+C, N] or "
        f"[1, K, 6] (batch size 1)"
    )


def _xywh_to_xyxy(cx: np.ndarray, cy: np.ndarray, w: np.ndarray, h: np.ndarray) -> np.ndarray:
    hw, hh = w * 0.5, h * 0.5
    return np.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=1).astype(np.float32, copy=False)


def _empty() -> Decoded:
    return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64)


def decode_yolov5(out: np.ndarray, score_threshold: float) -> Decoded:
    """Decode ``[1, N, 5 + C]`` (``cx, cy, w, h, obj, cls...``); score = obj * best class score.

    Returns:
        ``boxes (M, 4)`` float32 xyxy in network pixels, ``scores (M,)`` float32, ``class_ids (M,)`` int64
        for the M candidates with score >= ``score_threshold``.
    """
    a = _squeeze_batch(out)
    if a.shape[1] < 6:
        raise ModelError(f"yolov5 layout needs [1, N, 5+C] with C >= 1, got {list(out.shape)}")
    obj = a[:, 4]
    # Prefilter on objectness (cheap, one column) when class scores are probabilities (<= 1), which makes
    # obj an upper bound of the final score: cuts the argmax work from N rows to the few candidates.
    cand = np.flatnonzero(obj >= score_threshold) if score_threshold > 0 else np.arange(a.shape[0])
    if cand.size == 0:
        return _empty()
    rows = a[cand]
    cls = rows[:, 5:]
    ids = cls.argmax(axis=1)
    scores = rows[:, 4] * cls[np.arange(cls.shape[0]), ids]
    keep = scores >= score_threshold
    rows = rows[keep]
    boxes = _xywh_to_xyxy(rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3])
    return boxes, scores[keep].astype(np.float32, copy=False), ids[keep].astype(np.int64, copy=False)


def decode_yolov8(out: np.ndarray, score_threshold: float) -> Decoded:
    """Decode ``[1, 4 + C, N]`` (``cx, cy, w, h, cls...`` along dim 1); score = best class score.

    Returns the same triple as :func:`decode_yolov5`.
    """
    a = _squeeze_batch(out)
    if a.shape[0] < 5:
        raise ModelError(f"yolov8 layout needs [1, 4+C, N] with C >= 1, got {list(out.shape)}")
    cls = a[4:]  # (C, N)
    scores = cls.max(axis=0)
    cand = np.flatnonzero(scores >= score_threshold)
    if cand.size == 0:
        return _empty()
    ids = cls[:, cand].argmax(axis=0)
    boxes = _xywh_to_xyxy(a[0, cand], a[1, cand], a[2, cand], a[3, cand])
    return boxes, scores[cand].astype(np.float32, copy=False), ids.astype(np.int64, copy=False)


def decode_end2end(out: np.ndarray, score_threshold: float) -> Decoded:
    """Decode ``[1, K, 6]`` (``x1, y1, x2, y2, score, class``); the model already applied NMS.

    Returns the same triple as :func:`decode_yolov5`; class ids are rounded from the float column.
    """
    a = _squeeze_batch(out)
    if a.shape[1] != 6:
        raise ModelError(
            f"end2end layout needs [1, K, 6] (x1, y1, x2, y2, score, class), got {list(out.shape)}"
        )
    keep = np.flatnonzero(a[:, 4] >= score_threshold)
    rows = a[keep]
    return (
        rows[:, :4].astype(np.float32, copy=True),
        rows[:, 4].astype(np.float32, copy=True),
        np.rint(rows[:, 5]).astype(np.int64),
    )


_DECODERS = {"yolov5": decode_yolov5, "yolov8": decode_yolov8, "end2end": decode_end2end}


def _cannot(shape: tuple[int | None, ...], why: str) -> ModelError:
    return ModelError(
        f"cannot tell the YOLO output layout from shape {list(shape)}: {why}; set detector.layout to "
        f"yolov5 ([1, N, 5+C]), yolov8 ([1, 4+C, N]) or end2end ([1, K, 6])"
    )


def detect_layout(shape: tuple[int | None, ...] | list[int | None], num_classes: int | None = None) -> str:
    """Guess the layout of a YOLO output from its shape.

    Heuristics, in order (``shape = [1, a, b]``; a leading batch 1 may be omitted):

    1. When ``num_classes`` (C) is known, the layouts whose size rule matches are the candidates:
       ``b == 5 + C`` -> yolov5, ``a == 4 + C`` -> yolov8, ``b == 6`` -> end2end. A single candidate wins.
       (C is only a hint: with none or several matches, step 2 decides.)
    2. ``b == 6 and a <= 1000`` -> end2end (NMS-ed outputs hold a few hundred boxes at most; a YOLOv5 head
       with one class has thousands of rows);
       ``a < b`` -> yolov8 (few channels, many anchors); ``a > b`` -> yolov5 (many anchor rows, few columns).
    3. ``a == b`` (or a dynamic dimension) cannot be decided from the shape: :class:`ModelError`.

    Raises:
        ModelError: the shape is not 2-D/3-D with batch 1, has dynamic dimensions, is too small for any
            layout, or is ambiguous; the message shows the shape and says to set ``detector.layout``.
    """
    shape = tuple(shape)
    dims = shape[1:] if len(shape) == 3 and shape[0] == 1 else shape
    if len(dims) != 2:
        raise _cannot(shape, "expected [1, a, b] with batch size 1")
    a, b = dims
    if a is None or b is None:
        raise _cannot(shape, "it has dynamic dimensions")
    if num_classes is not None and num_classes > 0:
        matches = []
        if b == 5 + num_classes and b >= 6:
            matches.append("yolov5")
        if a == 4 + num_classes and a >= 5:
            matches.append("yolov8")
        if b == 6:
            matches.append("end2end")
        if len(matches) == 1:
            return matches[0]
    if b == 6 and a <= END2END_MAX_K:
        return "end2end"
    if a < b and a >= 5:
        return "yolov8"
    if a > b and b >= 6:
        return "yolov5"
    if a == b:
        raise _cannot(shape, f"both dimensions are {a}")
    raise _cannot(shape, "it is too small for any layout")


def check_layout(shape: tuple[int | None, ...] | list[int | None], layout: str) -> None:
    """Raise :class:`ModelError` when an output of ``shape`` cannot be decoded as ``layout``.

    Dynamic (``None``) dimensions are accepted; the decoder checks the real shape per frame.
    """
    shape = tuple(shape)
    if layout not in _DECODERS:
        raise ModelError(f"unknown YOLO layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    dims = shape[1:] if len(shape) == 3 and shape[0] in (1, None) else shape
    if len(dims) != 2:
        raise ModelError(f"YOLO output of shape {list(shape)} cannot be decoded: expected [1, a, b]")
    a, b = dims
    ok = {
        "yolov5": b is None or b >= 6,
        "yolov8": a is None or a >= 5,
        "end2end": b is None or b == 6,
    }[layout]
    if not ok:
        raise ModelError(
            f"YOLO output of shape {list(shape)} does not fit detector.layout {layout} "
            f"(yolov5 [1, N, 5+C], yolov8 [1, 4+C, N], end2end [1, K, 6]); fix detector.layout or use auto"
        )


def decode(out: np.ndarray, layout: str, score_threshold: float) -> Decoded:
    """Decode ``out`` with the decoder for ``layout`` (one of :data:`LAYOUTS`).

    Raises:
        ModelError: unknown layout or an output shape that layout cannot decode.
    """
    try:
        fn = _DECODERS[layout]
    except KeyError:
        raise ModelError(f"unknown YOLO layout {layout!r}; expected one of {', '.join(LAYOUTS)}") from None
    if out.dtype != np.float32:
        out = out.astype(np.float32)  # float16 exports
    return fn(out, score_threshold)
