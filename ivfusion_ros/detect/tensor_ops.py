"""The YOLO detector's pre- and post-processing on torch tensors, so detection stays on the GPU.

The CPU detector path (:mod:`~ivfusion_ros.detect.letterbox`, :mod:`~ivfusion_ros.detect.yolo_decode`,
:mod:`~ivfusion_ros.detect.nms`) works on numpy arrays with OpenCV; on CUDA that would cost a device->host copy
of the fused image, a host letterbox and a host->device copy of the network input per frame. These functions do
the same steps on the device with shapes that do not depend on the data, so the only synchronisation is the one
copy of the final detections to the host:

* :func:`letterbox_tensor`: the same geometry as :class:`~ivfusion_ros.detect.letterbox.Letterbox` (it computes
  it), bilinear resize, pad 114, into a persistent network-input buffer;
* :func:`decode_dense`: every candidate of the three output layouts as ``(N, 4)`` boxes, scores and class ids;
* :func:`nms_fixed_point`: exact greedy class-wise NMS on the best ``k`` candidates as a fixed point of a
  suppression matrix: ``keep[j] = valid[j] and no kept i ranked before j overlaps j by more than the
  threshold``. Iterating from ``keep = valid`` reaches greedy NMS's answer after as many rounds as the longest
  chain of suppressions (two or three in real frames), each round one matrix op instead of a Python loop over
  boxes.

The tests compare each with its numpy counterpart on the CPU.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ivfusion_ros.detect.letterbox import Letterbox
from ivfusion_ros.errors import ModelError

__all__ = ["GRAPH_NMS_ROUNDS", "PRE_NMS_TOPK", "decode_dense", "fit_letterbox", "letterbox_tensor", "nms_fixed_point",
           "postprocess_dense", "select", "unmap_boxes"]

#: Candidates that enter NMS at most (best scores first). Ultralytics caps at 30000; a real frame has at most a few
#: hundred above a 0.25 score threshold, and the suppression matrix grows with the square of this.
PRE_NMS_TOPK = 1024
_NMS_ROUNDS_PER_CHECK = 4


def fit_letterbox(lb: Letterbox, out: torch.Tensor, w: int, h: int) -> None:
    """Set ``lb``'s geometry for ``w x h`` images and refill ``out``'s border when it changed (host side, eager)."""
    if lb.src_size != (w, h):
        lb.fit(w, h)
        out.fill_(lb.pad_value).mul_(1.0 / 255.0)  # the border only changes with the geometry


def letterbox_tensor(img: torch.Tensor, lb: Letterbox, out: torch.Tensor) -> torch.Tensor:
    """Letterbox ``img`` into ``out`` with ``lb``'s geometry (which it updates, for :func:`unmap_boxes`).

    Args:
        img: ``(1, 3, h, w)`` float RGB in [0, 1], or ``(h, w, 3)`` uint8 RGB, on any device.
        lb: the geometry keeper (its numpy buffers are not used).
        out: ``(1, 3, H, W)`` float32 network input on ``img``'s device, overwritten.

    Values are rounded to 8-bit levels after the resize, as the uint8 OpenCV path does.
    """
    if img.dtype == torch.uint8:
        img = img.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
    h, w = img.shape[-2:]
    fit_letterbox(lb, out, int(w), int(h))
    x1, y1, x2, y2 = lb.content_box
    if (x2 - x1, y2 - y1) != (w, h):
        img = F.interpolate(img, size=(y2 - y1, x2 - x1), mode="bilinear", align_corners=False)
        img = img.mul(255.0).round_().div_(255.0)
    out[:, :, y1:y2, x1:x2].copy_(img)
    return out


def decode_dense(out: torch.Tensor, layout: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All candidates of one YOLO output: ``boxes (N, 4)`` xyxy in network pixels, ``scores (N,)``, ``ids (N,)``.

    Same formulas as :func:`~ivfusion_ros.detect.yolo_decode.decode` without the score threshold (applied later,
    as a mask, so shapes stay fixed).
    """
    a = out.float()
    if a.dim() == 3:
        if a.shape[0] != 1:
            raise ModelError(f"YOLO output has batch {a.shape[0]}; expected 1")
        a = a[0]
    if layout == "yolov8":  # (4 + C, N)
        scores, ids = a[4:].max(dim=0)
        boxes = _xywh_to_xyxy(a[:4].t())
    elif layout == "yolov5":  # (N, 5 + C)
        cls_score, ids = a[:, 5:].max(dim=1)
        scores = a[:, 4] * cls_score
        boxes = _xywh_to_xyxy(a[:, :4])
    elif layout == "end2end":  # (K, 6): x1, y1, x2, y2, score, class
        boxes, scores, ids = a[:, :4], a[:, 4], a[:, 5].round()
    else:
        raise ModelError(f"unknown YOLO layout {layout!r}")
    return boxes, scores, ids.long()


def _xywh_to_xyxy(xywh: torch.Tensor) -> torch.Tensor:
    half = xywh[:, 2:4] * 0.5
    return torch.cat((xywh[:, :2] - half, xywh[:, :2] + half), dim=1)


def _iou_matrix(b: torch.Tensor) -> torch.Tensor:
    area = (b[:, 2] - b[:, 0]).clamp_(min=0) * (b[:, 3] - b[:, 1]).clamp_(min=0)
    lt = torch.maximum(b[:, None, :2], b[None, :, :2])
    rb = torch.minimum(b[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp_(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area[:, None] + area[None, :] - inter
    return inter / union.clamp_(min=1e-12)


def _suppression(boxes: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor, iou_threshold: float
                 ) -> torch.Tensor:
    """``S[i, j]``: valid ``i`` ranked before ``j``, same class, IoU above the threshold."""
    k = boxes.shape[0]
    before = torch.ones(k, k, dtype=torch.bool, device=boxes.device).triu_(diagonal=1)  # i ranked before j
    suppress = (_iou_matrix(boxes.double()) > iou_threshold) & (ids[:, None] == ids[None, :]) & before
    return suppress & valid[:, None]


def _rounds(suppress: torch.Tensor, valid: torch.Tensor, keep: torch.Tensor, n: int) -> torch.Tensor:
    for _ in range(n):
        keep = valid & ~(suppress & keep[:, None]).any(dim=0)
    return keep


def nms_fixed_point(boxes: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor, iou_threshold: float
                    ) -> torch.Tensor:
    """Greedy class-wise NMS of boxes already sorted best first; returns the ``keep`` mask.

    Args:
        boxes: ``(k, 4)`` xyxy, best first.
        ids: ``(k,)`` class ids (boxes of different classes never suppress each other).
        valid: ``(k,)`` bool, candidates that take part (score above threshold, inside the image).
        iou_threshold: a box is suppressed when its IoU with a kept better box of its class exceeds this.
    """
    if boxes.shape[0] == 0:
        return valid.clone()
    suppress = _suppression(boxes, ids, valid, iou_threshold)
    return _converge(suppress, valid, valid.clone())


def _converge(suppress: torch.Tensor, valid: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    for _ in range(0, suppress.shape[0] + 1, _NMS_ROUNDS_PER_CHECK):
        previous = keep
        keep = _rounds(suppress, valid, keep, _NMS_ROUNDS_PER_CHECK)
        if torch.equal(keep, previous):  # a fixed point: no further round changes anything
            break
    return keep


def unmap_boxes(boxes: torch.Tensor, lb: Letterbox) -> torch.Tensor:
    """Network pixels -> pixels of the letterboxed image, clipped to it (as ``Letterbox.unmap_boxes``)."""
    w, h = lb.src_size or (0, 0)
    left, top = lb.pad
    sx, sy = lb.scale
    # per-column scalars (no small host tensors: their copies would break CUDA graph capture)
    xs = ((boxes[:, 0::2] - left) / sx).clamp_(0.0, float(w))
    ys = ((boxes[:, 1::2] - top) / sy).clamp_(0.0, float(h))
    return torch.stack((xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]), dim=1)


#: Suppression rounds inside the captured detection graph; chains longer than this (rare) finish on the host side.
GRAPH_NMS_ROUNDS = 8


def postprocess_dense(out: torch.Tensor, layout: str, lb: Letterbox, score_threshold: float, iou_threshold: float,
                      max_detections: int) -> tuple[torch.Tensor, ...]:
    """Decode, threshold, NMS and unmap one output with fixed shapes (capturable in a CUDA graph); :func:`select`
    finishes on the host.

    Returns:
        ``table (k, 8)``: ``x1 y1 x2 y2 score class keep converged`` per candidate (best first; ``keep`` final if
        ``converged``), and the ``suppress``, ``valid``, ``keep`` tensors :func:`select` needs to finish NMS when a
        suppression chain is longer than :data:`GRAPH_NMS_ROUNDS`.
    """
    boxes, scores, ids = decode_dense(out, layout)
    k = min(int(scores.shape[0]), PRE_NMS_TOPK if layout != "end2end" else int(scores.shape[0]))
    order = torch.sort(scores, descending=True, stable=True).indices[:k]  # ties: lower index first, as on the CPU
    boxes, scores, ids = boxes[order], scores[order], ids[order]
    x1, y1, x2, y2 = lb.content_box
    valid = (scores >= score_threshold) & (boxes[:, 0] < x2) & (boxes[:, 2] > x1) & (boxes[:, 1] < y2) & (
        boxes[:, 3] > y1)
    if layout == "end2end":
        suppress = torch.zeros(k, k, dtype=torch.bool, device=boxes.device)
        keep = valid
        converged = torch.ones((), dtype=torch.bool, device=boxes.device)
    else:
        suppress = _suppression(boxes, ids, valid, iou_threshold)
        before = _rounds(suppress, valid, valid, GRAPH_NMS_ROUNDS - 1)
        keep = _rounds(suppress, valid, before, 1)
        converged = (keep == before).all()
    mapped = unmap_boxes(boxes, lb)
    rows = torch.cat((mapped, scores.clamp(0.0, 1.0)[:, None], ids[:, None].to(mapped.dtype)), dim=1)
    final = _final_keep(keep, mapped, max_detections)
    table = torch.cat((rows, final[:, None].to(rows.dtype), converged.expand(k)[:, None].to(rows.dtype)), dim=1)
    return table, suppress, valid, keep


def _final_keep(keep: torch.Tensor, mapped: torch.Tensor, max_detections: int) -> torch.Tensor:
    """At most ``max_detections`` survivors (best first), then the ones that still have an area in the image."""
    keep = keep & (torch.cumsum(keep, 0) <= max_detections)
    return keep & (mapped[:, 2] > mapped[:, 0]) & (mapped[:, 3] > mapped[:, 1])


def select(dense: tuple[torch.Tensor, ...], max_detections: int) -> np.ndarray:
    """The host side of the post-processing: ``(M, 6)`` rows ``x1 y1 x2 y2 score class`` of the kept candidates.

    One copy of the candidate table to the host; only when a suppression chain outlasted the graph's rounds does NMS
    continue on the device first (exactly, until the fixed point).
    """
    table, suppress, valid, keep = dense
    host = table.cpu().numpy()
    if host.shape[0] and not host[0, 7]:
        keep = _converge(suppress, valid, keep)
        final = _final_keep(keep, table[:, :4], max_detections)
        host = torch.cat((table[:, :6], final[:, None].to(table.dtype)), dim=1).cpu().numpy()
    return host[host[:, 6] > 0, :6]
