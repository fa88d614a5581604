"""Class-wise non-maximum suppression on top of OpenCV's ``cv2.dnn.NMSBoxes``.

``cv2.dnn.NMSBoxesBatched`` only exists from OpenCV 4.7 and ROS 2 Humble ships 4.5, so class-wise NMS uses
the usual coordinate-offset trick: every class is shifted to its own region of the plane (offset = class
index x the extent of all boxes) so boxes of different classes can never overlap, and one class-agnostic
NMS call does the work in C++.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["batched_nms"]


def batched_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    iou_threshold: float,
    max_detections: int,
) -> np.ndarray:
    """Greedy NMS applied independently per class.

    Args:
        boxes: ``(N, 4)`` ``x1, y1, x2, y2`` (any float or int dtype, any units).
        scores: ``(N,)``, any real values; only their order matters.
        class_ids: ``(N,)`` integer class of each box; boxes of different classes never suppress each other.
        iou_threshold: a box is removed when its IoU (area-based, no +1) with a higher-scoring box of the
            same class is greater than this, in [0, 1].
        max_detections: keep at most this many boxes (the highest-scoring survivors); <= 0 keeps none.

    Returns:
        ``(K,)`` int64 indices into the inputs of the kept boxes, by decreasing score (ties: lower index
        first).
    """
    n = int(boxes.shape[0])
    if n == 0 or max_detections <= 0:
        return np.zeros((0,), np.int64)
    b = np.asarray(boxes, np.float64).reshape(n, 4)
    ids = np.asarray(class_ids, np.int64).reshape(n)
    s = np.asarray(scores, np.float64).reshape(n)

    order = np.argsort(-s, kind="stable")  # best first; ties: lower index first

    lo, hi = float(b.min()), float(b.max())
    span = hi - lo + 1.0
    offset = (ids - ids.min()).astype(np.float64) * span
    xywh = np.empty_like(b)
    xywh[:, 0] = b[:, 0] + offset
    xywh[:, 1] = b[:, 1] + offset
    xywh[:, 2] = b[:, 2] - b[:, 0]
    xywh[:, 3] = b[:, 3] - b[:, 1]
    xywh = xywh[order]

    # Greedy NMS is prefix-consistent: whether the k-th best box survives depends only on the boxes before
    # it. So run it on the best m candidates and grow m only while fewer than max_detections survive; with
    # thousands of low-score candidates (an unconfident frame) this avoids the O(N x survivors) full pass.
    m = min(n, max(256, 4 * max_detections))
    while True:
        keep = _nms_sorted(xywh[:m], float(iou_threshold))
        if keep.size >= max_detections or m == n:
            break
        m = min(n, 4 * m)
    return order[keep[:max_detections]]


def _nms_sorted(xywh: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Class-agnostic NMS of ``(m, 4)`` ``x, y, w, h`` boxes already sorted best first; kept positions."""
    m = xywh.shape[0]
    # NMSBoxes needs scores > score_threshold >= 0 and its own sort may break ties arbitrarily: give it
    # exact decreasing integer ranks (float32-exact up to 2**24 boxes) instead of the real scores.
    ranks = np.arange(m, 0, -1, dtype=np.float32)
    # Lists work with every OpenCV 4.x binding (4.5 rejects some array layouts); top_k is not used because
    # it limits the candidates *before* suppression, not the survivors.
    keep = cv2.dnn.NMSBoxes(xywh.tolist(), ranks.tolist(), 0.0, iou_threshold)
    # NMSBoxes returns survivors by decreasing rank already; sort anyway so we do not depend on it.
    return np.sort(np.asarray(keep, np.int64).reshape(-1))
