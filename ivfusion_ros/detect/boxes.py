"""Box geometry shared by NMS, the demo's ground-truth check and evaluation."""

from __future__ import annotations

import numpy as np

__all__ = ["box_iou", "count_matches"]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``(N, 4)`` and ``(M, 4)`` xyxy boxes -> ``(N, M)`` float64."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def count_matches(gt: np.ndarray, pred: np.ndarray, scores: np.ndarray | None = None,
                  iou_threshold: float = 0.5) -> int:
    """Greedy one-to-one matching (highest score first): how many ground-truth boxes are found."""
    if len(gt) == 0 or len(pred) == 0:
        return 0
    order = np.argsort(-scores) if scores is not None else np.arange(len(pred))
    iou = box_iou(pred[order], gt)
    taken = np.zeros(len(gt), bool)
    for row in iou:  # one iteration per detection, not per pixel
        row = np.where(taken, -1.0, row)
        j = int(row.argmax())
        if row[j] >= iou_threshold:
            taken[j] = True
    return int(taken.sum())
