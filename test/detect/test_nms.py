"""batched_nms against a plain numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

from ivfusion_ros.detect.nms import batched_nms


def _area(b: np.ndarray) -> np.ndarray:
    return np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)


def _iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = _area(box) + _area(boxes) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def reference_nms(boxes, scores, class_ids, iou_threshold, max_detections):
    """Textbook greedy NMS, one class at a time, then merged by score (ties: lower index first)."""
    keep_all = []
    for c in np.unique(class_ids):
        idx = np.flatnonzero(class_ids == c)
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        while idx.size:
            i = idx[0]
            keep_all.append(i)
            rest = idx[1:]
            idx = rest[_iou_one_to_many(boxes[i], boxes[rest]) <= iou_threshold]
    keep = np.array(sorted(keep_all, key=lambda i: (-scores[i], i)), np.int64)
    return keep[:max_detections]


def _random_boxes(rng, n, n_classes, lo=-50.0, hi=600.0):
    xy = rng.uniform(lo, hi, (n, 2))
    wh = rng.uniform(5.0, 120.0, (n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    scores = rng.permutation(n).astype(np.float32) / n + 0.01  # distinct scores
    ids = rng.integers(0, n_classes, n)
    return boxes, scores, ids


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("iou", [0.3, 0.45, 0.7])
def test_matches_reference(seed: int, iou: float) -> None:
    rng = np.random.default_rng(seed)
    boxes, scores, ids = _random_boxes(rng, 300, 4)
    got = batched_nms(boxes, scores, ids, iou, 1000)
    want = reference_nms(boxes.astype(np.float64), scores, ids, iou, 1000)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)


def test_classwise_overlapping_boxes_of_different_classes_both_survive() -> None:
    boxes = np.array([[10, 10, 50, 50], [12, 12, 52, 52], [11, 11, 51, 51]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    ids = np.array([0, 1, 0])
    np.testing.assert_array_equal(batched_nms(boxes, scores, ids, 0.5, 10), [0, 1])


def test_sorted_by_score_and_truncated() -> None:
    boxes = np.array([[0, 0, 10, 10], [100, 0, 110, 10], [200, 0, 210, 10], [300, 0, 310, 10]], np.float32)
    scores = np.array([0.2, 0.9, 0.5, 0.7], np.float32)
    ids = np.zeros(4, np.int64)
    np.testing.assert_array_equal(batched_nms(boxes, scores, ids, 0.5, 10), [1, 3, 2, 0])
    np.testing.assert_array_equal(batched_nms(boxes, scores, ids, 0.5, 2), [1, 3])


def test_threshold_is_strict_greater() -> None:
    # IoU of these two is exactly 0.5 (intersection 50, union 100): kept at threshold 0.5, removed below.
    boxes = np.array([[0, 0, 10, 7.5], [0, 2.5, 10, 10]], np.float64)
    scores = np.array([0.9, 0.8])
    ids = np.zeros(2, np.int64)
    np.testing.assert_array_equal(batched_nms(boxes, scores, ids, 0.5, 10), [0, 1])
    np.testing.assert_array_equal(batched_nms(boxes, scores, ids, 0.49, 10), [0])


def test_zero_and_equal_scores() -> None:
    # cv2.dnn.NMSBoxes drops scores <= its threshold; ranks make scores of 0 and ties safe.
    boxes = np.array([[0, 0, 10, 10], [100, 0, 110, 10], [200, 0, 210, 10]], np.float32)
    scores = np.array([0.0, 0.5, 0.5], np.float32)
    np.testing.assert_array_equal(batched_nms(boxes, scores, np.zeros(3), 0.5, 10), [1, 2, 0])


def test_empty_and_no_budget() -> None:
    empty = batched_nms(np.zeros((0, 4), np.float32), np.zeros(0), np.zeros(0, np.int64), 0.5, 10)
    assert empty.shape == (0,) and empty.dtype == np.int64
    boxes = np.array([[0, 0, 10, 10]], np.float32)
    assert batched_nms(boxes, np.ones(1), np.zeros(1), 0.5, 0).shape == (0,)


@pytest.mark.parametrize("max_detections", [1, 10, 200, 350, 5000])
def test_matches_reference_when_candidates_must_be_grown(max_detections: int) -> None:
    # 3000 boxes packed into a small area: few survive, so the first window of best candidates is not
    # enough and batched_nms has to widen it (and must still agree with the full pass).
    rng = np.random.default_rng(7)
    boxes, scores, ids = _random_boxes(rng, 3000, 3, lo=0.0, hi=100.0)  # 387 survive, 98 of the best 256
    got = batched_nms(boxes, scores, ids, 0.3, max_detections)
    want = reference_nms(boxes.astype(np.float64), scores, ids, 0.3, max_detections)
    np.testing.assert_array_equal(got, want)
