"""The YOLOX training loss: SimOTA label assignment, IoU + objectness + classification terms.

Assignment (Ge et al. 2021, section 2.4 "SimOTA"), per image:

1. candidates: anchor points whose centre lies inside a ground-truth box or within 2.5 strides of its centre;
2. cost of assigning candidate ``a`` to object ``g``: binary cross-entropy of the predicted class probability
   (``sqrt(sigmoid(cls) * sigmoid(obj))``) against ``g``'s class, plus ``3 * -log IoU(pred_a, g)``, plus a large
   constant when ``a`` is not both inside the box and near its centre;
3. each object takes its ``k`` cheapest candidates, ``k = max(1, floor(sum of its 10 best IoUs))``; an anchor
   claimed by several objects keeps the cheapest one.

Losses, summed and divided by the number of assigned anchors: ``5 * (1 - IoU^2)`` on the assigned boxes,
objectness BCE on every anchor (target 1 where assigned), class BCE on the assigned anchors with target
``one_hot * IoU``. Assignment is computed without gradient, as in the original.

It works on any network whose :meth:`raw` output is ``(B, N, 5 + C)`` over the anchor points of
:func:`~ivfusion_ros.detect.nets.yolox.make_grid` (the shipped :class:`~ivfusion_ros.detect.nets.yolox.YoloxNano`,
and the detection-guided fusion training, which back-propagates this loss into a fusion network).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["DetectionLoss", "box_iou", "pred_boxes"]

Targets = Sequence[tuple[torch.Tensor, torch.Tensor]]


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU matrix ``(M, K)`` of xyxy boxes ``a (M, 4)`` and ``b (K, 4)``."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None] - inter).clamp(min=1e-9)


def _paired_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1) + (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1) - inter
    return inter / union.clamp(min=1e-9)


def pred_boxes(raw: torch.Tensor, grid: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """xyxy pixel boxes ``(B, N, 4)`` from raw predictions ``(B, N, 5 + C)``."""
    s = strides[:, None]
    xy = (raw[..., :2] + grid) * s
    wh = raw[..., 2:4].clamp(max=12.0).exp() * s
    return torch.cat((xy - wh / 2, xy + wh / 2), dim=-1)


class DetectionLoss:
    """YOLOX loss for ``num_classes`` classes (see the module docstring).

    Call with raw predictions ``(B, N, 5 + C)``, the anchor grid ``(N, 2)`` and strides ``(N,)``, and per image
    ``(boxes (M, 4) xyxy pixels, classes (M,))``. Returns the total loss and its detached terms.
    """

    def __init__(self, num_classes: int, reg_weight: float = 5.0, center_radius: float = 2.5) -> None:
        self.num_classes = num_classes
        self.reg_weight = reg_weight
        self.center_radius = center_radius

    @torch.no_grad()
    def assign(self, raw: torch.Tensor, boxes: torch.Tensor, grid: torch.Tensor, strides: torch.Tensor,
               gt: torch.Tensor, gt_cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """SimOTA for one image: ``(anchor indices, matched object per anchor, IoU with it)``."""
        centers = (grid + 0.5) * strides[:, None]  # (N, 2)
        cx, cy = centers[:, 0][None], centers[:, 1][None]
        in_box = (cx > gt[:, 0:1]) & (cx < gt[:, 2:3]) & (cy > gt[:, 1:2]) & (cy < gt[:, 3:4])  # (M, N)
        gcx, gcy = (gt[:, 0:1] + gt[:, 2:3]) / 2, (gt[:, 1:2] + gt[:, 3:4]) / 2
        r = self.center_radius * strides[None]
        in_ctr = ((cx - gcx).abs() < r) & ((cy - gcy).abs() < r)
        cand = (in_box | in_ctr).any(0)
        idx = cand.nonzero().squeeze(1)
        empty = torch.zeros(0, dtype=torch.long, device=raw.device)
        if idx.numel() == 0:
            return empty, empty, raw.new_zeros(0)
        ious = box_iou(gt, boxes[idx])  # (M, K)
        p = (raw[idx, 5:].sigmoid() * raw[idx, 4:5].sigmoid()).clamp(1e-6, 1 - 1e-6).sqrt()  # (K, C)
        onehot = F.one_hot(gt_cls, self.num_classes).to(p.dtype)  # (M, C)
        # BCE summed over classes, for every (object, candidate) pair, without an (M, K, C) tensor
        cls_cost = -(onehot @ p.log().T + (1 - onehot) @ (1 - p).log().T)
        cost = cls_cost + 3.0 * -torch.log(ious + 1e-8) + 1e5 * (~(in_box & in_ctr)[:, idx]).to(p.dtype)
        k = min(10, idx.numel())
        dyn_k = ious.topk(k, dim=1).values.sum(1).int().clamp(min=1)
        kth = cost.sort(dim=1).values.gather(1, (dyn_k - 1).long()[:, None])
        match = cost <= kth  # (M, K)
        multi = match.sum(0) > 1
        if multi.any():
            best = cost[:, multi].argmin(0)
            match[:, multi] = False
            match[best, multi.nonzero().squeeze(1)] = True
        fg = match.any(0)
        matched = match[:, fg].float().argmax(0)
        return idx[fg], matched, ious[matched, fg.nonzero().squeeze(1)]

    def __call__(self, raw: torch.Tensor, grid: torch.Tensor, strides: torch.Tensor, targets: Targets
                 ) -> tuple[torch.Tensor, dict[str, float]]:
        raw = raw.float()
        boxes = pred_boxes(raw, grid, strides)
        obj_target = torch.zeros(raw.shape[:2], device=raw.device)
        reg_pred, reg_gt, cls_pred, cls_gt = [], [], [], []
        for b, (gt, gt_cls) in enumerate(targets):
            if gt.numel() == 0:
                continue
            gt, gt_cls = gt.to(raw.device), gt_cls.to(raw.device)
            fg, matched, iou = self.assign(raw[b].detach(), boxes[b].detach(), grid, strides, gt, gt_cls)
            if fg.numel() == 0:
                continue
            obj_target[b, fg] = 1.0
            reg_pred.append(boxes[b, fg])
            reg_gt.append(gt[matched])
            cls_pred.append(raw[b, fg, 5:])
            cls_gt.append(F.one_hot(gt_cls[matched], self.num_classes).float() * iou[:, None])
        num_fg = max(1.0, float(obj_target.sum()))
        loss_obj = F.binary_cross_entropy_with_logits(raw[..., 4], obj_target, reduction="sum")
        if reg_pred:
            iou = _paired_iou(torch.cat(reg_pred), torch.cat(reg_gt))
            loss_iou = (1 - iou.pow(2)).sum()
            loss_cls = F.binary_cross_entropy_with_logits(torch.cat(cls_pred), torch.cat(cls_gt), reduction="sum")
        else:
            loss_iou = loss_cls = raw.sum() * 0.0
        total = (self.reg_weight * loss_iou + loss_obj + loss_cls) / num_fg
        terms = {"iou": float(loss_iou.detach()) / num_fg, "obj": float(loss_obj.detach()) / num_fg,
                 "cls": float(loss_cls.detach()) / num_fg,
                 "fg": num_fg / max(1, raw.shape[0])}
        return total, terms
