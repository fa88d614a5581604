"""YOLO output decoders and layout detection, on hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest

from ivfusion_ros.detect.yolo_decode import (
    check_layout,
    decode,
    decode_end2end,
    decode_yolov5,
    decode_yolov8,
    detect_layout,
)
from ivfusion_ros.errors import ModelError

# --- layout detection ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "num_classes", "layout"),
    [
        ((1, 25200, 85), None, "yolov5"),
        ((1, 84, 8400), None, "yolov8"),
        ((1, 300, 6), None, "end2end"),
        ((1, 1000, 6), None, "end2end"),
        ((1, 25200, 6), None, "yolov5"),  # one-class YOLOv5: too many rows for an NMS-ed output
        ((1, 5, 8400), None, "yolov8"),  # one-class YOLOv8
        ((84, 8400), None, "yolov8"),  # batch dimension omitted
        ((1, 84, 8400), 80, "yolov8"),
        ((1, 25200, 85), 80, "yolov5"),
        ((1, 300, 6), 80, "end2end"),
        # the class count breaks ties that the shape alone cannot:
        ((1, 84, 84), 80, "yolov8"),
        ((1, 85, 85), 80, "yolov5"),
        ((1, 6, 300), 2, "yolov8"),  # a == 4 + C although b != 6
        ((1, 2000, 6), 1, "yolov5"),  # b == 5 + C and b == 6 match; K > 1000 decides
        ((1, 300, 6), 1, "end2end"),  # same two matches; K <= 1000 decides
        ((1, 84, 8400), 3, "yolov8"),  # class count that matches nothing: shape heuristics
    ],
)
def test_detect_layout(shape, num_classes, layout) -> None:
    assert detect_layout(shape, num_classes) == layout


@pytest.mark.parametrize(
    ("shape", "why"),
    [
        ((1, 84, 84), "both dimensions are 84"),
        ((1, 84, None), "dynamic dimensions"),
        ((2, 84, 8400), "batch size 1"),
        ((1, 4, 3), "too small"),
        ((8400,), "batch size 1"),
    ],
)
def test_detect_layout_refuses(shape, why) -> None:
    with pytest.raises(ModelError, match=rf"cannot tell the YOLO output layout from shape .*{why}.*"
                                         r"set detector\.layout"):
        detect_layout(shape)


def test_ambiguous_square_message_shows_shape() -> None:
    with pytest.raises(ModelError, match=r"shape \[1, 84, 84\]"):
        detect_layout((1, 84, 84), num_classes=3)


@pytest.mark.parametrize(
    ("shape", "layout"),
    [((1, 84, 8400), "end2end"), ((1, 8400, 5), "yolov5"), ((1, 4, 8400), "yolov8")],
)
def test_check_layout_rejects_misfit(shape, layout) -> None:
    with pytest.raises(ModelError, match=rf"does not fit detector\.layout {layout}"):
        check_layout(shape, layout)


def test_check_layout_accepts_fit_and_dynamic() -> None:
    check_layout((1, 84, 8400), "yolov8")
    check_layout((1, None, 6), "end2end")
    check_layout((None, 84, None), "yolov8")


# --- decoders --------------------------------------------------------------------------------------------


def test_yolov5_score_is_obj_times_best_class() -> None:
    out = np.array(
        [
            [[50, 40, 20, 10, 0.8, 0.1, 0.9, 0.2],  # class 1, 0.72
             [10, 10, 4, 4, 0.9, 0.2, 0.1, 0.2],  # best class 0.2 -> 0.18, below
             [30, 30, 10, 20, 0.2, 0.0, 0.0, 1.0],  # obj below threshold
             [70, 80, 10, 10, 0.5, 0.0, 0.0, 0.6]]  # class 2, 0.3
        ],
        np.float32,
    )
    boxes, scores, ids = decode_yolov5(out, 0.25)
    np.testing.assert_allclose(boxes, [[40, 35, 60, 45], [65, 75, 75, 85]])
    np.testing.assert_allclose(scores, [0.72, 0.3], rtol=1e-6)
    np.testing.assert_array_equal(ids, [1, 2])
    assert boxes.dtype == np.float32 and scores.dtype == np.float32 and ids.dtype == np.int64


def test_yolov8_transposed_layout() -> None:
    rows = np.array(
        [[50, 40, 20, 10, 0.1, 0.9],  # class 1
         [10, 10, 4, 4, 0.2, 0.1],  # below
         [30, 30, 10, 20, 0.6, 0.3]],  # class 0
        np.float32,
    )
    boxes, scores, ids = decode_yolov8(rows.T[None], 0.25)
    np.testing.assert_allclose(boxes, [[40, 35, 60, 45], [25, 20, 35, 40]])
    np.testing.assert_allclose(scores, [0.9, 0.6], rtol=1e-6)
    np.testing.assert_array_equal(ids, [1, 0])


def test_end2end_rows() -> None:
    out = np.array([[[1, 2, 30, 40, 0.9, 2.0], [5, 5, 9, 9, 0.1, 1.0], [0, 0, 0, 0, 0.0, 0.0]]], np.float32)
    boxes, scores, ids = decode_end2end(out, 0.25)
    np.testing.assert_allclose(boxes, [[1, 2, 30, 40]])
    np.testing.assert_allclose(scores, [0.9], rtol=1e-6)
    np.testing.assert_array_equal(ids, [2])


@pytest.mark.parametrize("layout", ["yolov5", "yolov8", "end2end"])
def test_nothing_above_threshold_gives_empty_arrays(layout) -> None:
    shape = {"yolov5": (1, 100, 8), "yolov8": (1, 7, 100), "end2end": (1, 50, 6)}[layout]
    boxes, scores, ids = decode(np.zeros(shape, np.float32), layout, 0.25)
    assert boxes.shape == (0, 4) and scores.shape == (0,) and ids.shape == (0,)
    assert boxes.dtype == np.float32 and scores.dtype == np.float32 and ids.dtype == np.int64


def test_decode_accepts_float16() -> None:
    rows = np.array([[50, 40, 20, 10, 0.1, 0.9]], np.float16)
    boxes, _, ids = decode(rows.T[None], "yolov8", 0.25)
    assert boxes.dtype == np.float32
    np.testing.assert_array_equal(ids, [1])


def test_decoder_rejects_wrong_shape() -> None:
    with pytest.raises(ModelError, match=r"end2end layout needs \[1, K, 6\].*got \[1, 84, 8400\]"):
        decode(np.zeros((1, 84, 8400), np.float32), "end2end", 0.25)
    with pytest.raises(ModelError, match=r"cannot decode a YOLO output of shape \[2, 84, 8400\]"):
        decode(np.zeros((2, 84, 8400), np.float32), "yolov8", 0.25)
    with pytest.raises(ModelError, match=r"unknown YOLO layout 'ssd'"):
        decode(np.zeros((1, 84, 8400), np.float32), "ssd", 0.25)
