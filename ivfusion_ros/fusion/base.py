"""What every fusion variant receives and returns.

A fuser takes the registered thermal image and the visible image (same size, same device) plus the
frame's illumination and returns the fused RGB image. Most variants fuse luminance only and restore the
visible chroma (:class:`LuminanceFuser`), as the fusion literature does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F

from ivfusion_ros.config import FusionConfig, RuntimeConfig
from ivfusion_ros.core.color import luma, restore_chroma

__all__ = ["Fuser", "FusionContext", "LuminanceFuser"]


@dataclass
class FusionContext:
    """Per-frame side information for fusion.

    Attributes:
        illumination: ``(B, 1, h, w)`` local illumination in [0, 1] (low resolution).
        glare: ``(B, 1, h, w)`` soft glare weight in [0, 1] (low resolution).
        level: global illumination level in [0, 1].
        regime: ``"day"``, ``"dusk"`` or ``"night"``.
        vis_y: ``(B, 1, H, W)`` visible luminance when the caller has it already (saves recomputing it).
    """

    illumination: torch.Tensor
    glare: torch.Tensor
    level: float = 0.5
    regime: str = "dusk"
    vis_y: torch.Tensor | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    def maps_at(self, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Illumination and glare resampled (bilinear) to ``size = (H, W)``; cached per size."""
        if size not in self._cache:
            both = torch.cat((self.illumination, self.glare), dim=1)
            if tuple(both.shape[-2:]) != tuple(size):
                both = F.interpolate(both, size=size, mode="bilinear", align_corners=False)
            self._cache[size] = (both[:, 0:1], both[:, 1:2])
        return self._cache[size]

    @classmethod
    def uniform(cls, like: torch.Tensor, illumination: float = 0.5, glare: float = 0.0) -> FusionContext:
        """A context with constant maps (for tests and for callers without illumination estimation)."""
        b = like.shape[0]
        ones = like.new_ones((b, 1, 8, 8))
        return cls(ones * illumination, ones * glare, illumination)


class Fuser(ABC):
    """A fusion variant. Construct through :func:`ivfusion_ros.fusion.create_fuser`."""

    #: registry name, set by the registry decorator
    name: ClassVar[str] = ""
    #: ``fuse`` is pure tensor work whose kernels depend only on the config and the shapes (no read-back, no use of
    #: ``ctx.level`` / ``ctx.regime``), so the pipeline may capture it in a CUDA graph
    graph_safe: ClassVar[bool] = True

    def __init__(self, cfg: FusionConfig, device: torch.device, runtime: RuntimeConfig | None = None) -> None:
        self.cfg = cfg
        self.device = device
        #: precision, CUDA graphs, engine cache ... for variants that run a network
        self.runtime = runtime or RuntimeConfig()

    def update_config(self, cfg: FusionConfig) -> None:
        """Take new run-time parameters (weights, gains); structural ones need a new fuser."""
        self.cfg = cfg

    @abstractmethod
    def fuse(self, ir: torch.Tensor, vis: torch.Tensor, ctx: FusionContext) -> torch.Tensor:
        """Fuse one batch.

        Args:
            ir: ``(B, 1, H, W)`` registered thermal intensity in [0, 1].
            vis: ``(B, 3, H, W)`` visible RGB in [0, 1].
            ctx: illumination of the frame.

        Returns:
            ``(B, 3, H, W)`` fused RGB in [0, 1].
        """

    def describe(self) -> str:
        return self.name


class LuminanceFuser(Fuser):
    """Fuses thermal with the visible luminance and restores the visible chroma."""

    @abstractmethod
    def fuse_luma(self, ir: torch.Tensor, vis_y: torch.Tensor, ctx: FusionContext) -> torch.Tensor:
        """``(B, 1, H, W)`` thermal and visible Y in [0, 1] -> fused Y ``(B, 1, H, W)`` in [0, 1]."""

    def fuse(self, ir: torch.Tensor, vis: torch.Tensor, ctx: FusionContext) -> torch.Tensor:
        y = ctx.vis_y if ctx.vis_y is not None else luma(vis)
        fused_y = self.fuse_luma(ir, y, ctx)
        # the visible colour where it is reliable: not in the dark (noise) and not in the glare that fusion
        # replaced with thermal structure
        _, glare = ctx.maps_at(tuple(y.shape[-2:]))
        return restore_chroma(vis, y, fused_y, 1.0 - self.cfg.glare_suppression * glare)
