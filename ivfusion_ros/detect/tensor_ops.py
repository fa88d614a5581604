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

import torch
import torch.nn.functional as F

from ivfusion_ros.detect.letterbox import Letterbox
from ivfusion_ros.errors import ModelError

__all__ = ["PRE_NMS_TOPK", "decode_dense", "letterbox_tensor", "nms_fixed_point", "postprocess", "unmap_boxes"]

#: Candidates that enter NMS at most (best scores first). Ultralytics caps at 30000; a real frame has at most a few
#: hundred above a 0.25 score threshold, and the suppression matrix grows with the square of this.
PRE_NMS_TOPK = 1024
_NMS_ROUNDS_PER_CHECK = 4


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
    if lb.src_size != (w, h):
        lb.fit(w, h)
        out.fill_(lb.pad_value).mul_(1.0 / 255.0)  # the border only changes with the geometry
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


def nms_fixed_point(boxes: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor, iou_threshold: float
                    ) -> torch.Tensor:
    """Greedy class-wise NMS of boxes already sorted best first; returns the ``keep`` mask.

    Args:
        boxes: ``(k, 4)`` xyxy, best first.
        ids: ``(k,)`` class ids (boxes of different classes never suppress each other).
        valid: ``(k,)`` bool, candidates that take part (score above threshold, inside the image).
        iou_threshold: a box is suppressed when its IoU with a kept better box of its class exceeds this.
    """
    k = boxes.shape[0]
    if k == 0:
        return valid.clone()
    before = torch.ones(k, k, dtype=torch.bool, device=boxes.device).triu_(diagonal=1)  # i ranked before j
    suppress = (_iou_matrix(boxes.double()) > iou_threshold) & (ids[:, None] == ids[None, :]) & before
    suppress &= valid[:, None]
    keep = valid.clone()
    for _ in range(0, k, _NMS_ROUNDS_PER_CHECK):
        previous = keep
        for _ in range(_NMS_ROUNDS_PER_CHECK):
            keep = valid & ~(suppress & keep[:, None]).any(dim=0)
        if torch.equal(keep, previous):  # a fixed point: no further round changes anything
            break
    return keep


def unmap_boxes(boxes: torch.Tensor, lb: Letterbox) -> torch.Tensor:
    """Network pixels -> pixels of the letterboxed image, clipped to it (as ``Letterbox.unmap_boxes``)."""
    w, h = lb.src_size or (0, 0)
    left, top = lb.pad
    sx, sy = lb.scale
    offset = boxes.new_tensor([left, top, left, top])
    scale = boxes.new_tensor([sx, sy, sx, sy])
    out = (boxes - offset) / scale
    limit = boxes.new_tensor([w, h, w, h])
    return torch.minimum(out.clamp_(min=0.0), limit)


def postprocess(out: torch.Tensor, layout: str, lb: Letterbox, score_threshold: float, iou_threshold: float,
                max_detections: int) -> torch.Tensor:
    """Decode, threshold, NMS and unmap one output on its device; ``(M, 6)`` rows ``x1 y1 x2 y2 score class``.

    Everything before the last line has data-independent shapes; the final selection of the kept rows is the one
    point where the device and the host meet (the caller copies the result to the host anyway).
    """
    boxes, scores, ids = decode_dense(out, layout)
    k = min(int(scores.shape[0]), PRE_NMS_TOPK if layout != "end2end" else int(scores.shape[0]))
    order = torch.sort(scores, descending=True, stable=True).indices[:k]  # ties: lower index first, as on the CPU
    boxes, scores, ids = boxes[order], scores[order], ids[order]
    x1, y1, x2, y2 = lb.content_box
    valid = (scores >= score_threshold) & (boxes[:, 0] < x2) & (boxes[:, 2] > x1) & (boxes[:, 1] < y2) & (
        boxes[:, 3] > y1)
    keep = valid if layout == "end2end" else nms_fixed_point(boxes, ids, valid, iou_threshold)
    rank = torch.cumsum(keep, 0)
    keep &= rank <= max_detections
    mapped = unmap_boxes(boxes, lb)
    keep &= (mapped[:, 2] > mapped[:, 0]) & (mapped[:, 3] > mapped[:, 1])
    rows = torch.cat((mapped, scores.clamp(0.0, 1.0)[:, None], ids[:, None].to(mapped.dtype)), dim=1)
    return rows[keep]
