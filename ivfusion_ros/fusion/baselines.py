"""Pixel-wise baselines for evaluation: the floor every other variant must beat."""

from __future__ import annotations

import torch

from ivfusion_ros.fusion.base import FusionContext, LuminanceFuser
from ivfusion_ros.fusion.pyramid import laplacian_pyramid, max_levels, reconstruct
from ivfusion_ros.fusion.registry import register_fuser

__all__ = ["AverageFuser", "LaplacianFuser", "MaxFuser"]


@register_fuser("average", "Pixel-wise mean of thermal and visible luminance (baseline).")
class AverageFuser(LuminanceFuser):
    def fuse_luma(self, ir: torch.Tensor, vis_y: torch.Tensor, ctx: FusionContext) -> torch.Tensor:
        return 0.5 * (ir + vis_y)


@register_fuser("max", "Pixel-wise maximum of thermal and visible luminance (baseline).")
class MaxFuser(LuminanceFuser):
    def fuse_luma(self, ir: torch.Tensor, vis_y: torch.Tensor, ctx: FusionContext) -> torch.Tensor:
        return torch.maximum(ir, vis_y)


@register_fuser("laplacian", "Laplacian pyramid: max-abs detail, averaged base (baseline of the multi-scale family).")
class LaplacianFuser(LuminanceFuser):
    """The textbook multi-scale fusion (Burt & Kolczynski): at every detail level the coefficient of larger
    magnitude, the two bases averaged. ``adaptive`` is built on it and must beat it."""

    def fuse_luma(self, ir: torch.Tensor, vis_y: torch.Tensor, ctx: FusionContext) -> torch.Tensor:
        h, w = vis_y.shape[-2:]
        lap = laplacian_pyramid(torch.cat((ir, vis_y), dim=1), max_levels(h, w, self.cfg.levels))
        fused = [torch.where(d[:, 0:1].abs() >= d[:, 1:2].abs(), d[:, 0:1], d[:, 1:2]) for d in lap[:-1]]
        fused.append(lap[-1].mean(dim=1, keepdim=True))
        return reconstruct(fused).clamp_(0.0, 1.0)
