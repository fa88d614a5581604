"""Pixel-wise baselines for evaluation: the floor every other variant must beat."""

from __future__ import annotations

import torch

from ivfusion_ros.fusion.base import FusionContext, LuminanceFuser
from ivfusion_ros.fusion.registry import register_fuser

__all__ = ["AverageFuser", "MaxFuser"]


@register_fuser("average", "Pixel-wise mean of thermal and visible luminance (baseline).")
class AverageFuser(LuminanceFuser):
    def fuse_luma(self, ir: torch.Tensor, vis_y: torch.Tensor, ctx: FusionContext) -> torch.Tensor:
        return 0.5 * (ir + vis_y)


@register_fuser("max", "Pixel-wise maximum of thermal and visible luminance (baseline).")
class MaxFuser(LuminanceFuser):
    def fuse_luma(self, ir: torch.Tensor, vis_y: torch.Tensor, ctx: FusionContext) -> torch.Tensor:
        return torch.maximum(ir, vis_y)
