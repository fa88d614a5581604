"""Gaussian / Laplacian pyramids in torch (Burt & Adelson), with OpenCV's 5-tap kernel.

``pyr_down`` blurs with [1, 4, 6, 4, 1] / 16 and keeps every second pixel (output ``ceil(n / 2)``);
``pyr_up`` inserts zeros, blurs with twice that kernel per axis and crops to the requested size, so
``reconstruct(laplacian_pyramid(x))`` returns ``x`` up to float rounding for any image size.
"""

from __future__ import annotations

import torch

from ivfusion_ros.core.filters import sep_filter

__all__ = ["gaussian_pyramid", "laplacian_pyramid", "max_levels", "pyr_down", "pyr_up", "reconstruct"]

BURT_TAPS = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)
_UP_TAPS = tuple(2 * t for t in BURT_TAPS)
#: Smallest side a pyramid level may have.
MIN_SIDE = 4


def max_levels(h: int, w: int, wanted: int) -> int:
    """Clamp the number of downsamplings so the coarsest level keeps at least ``MIN_SIDE`` pixels a side."""
    levels = 0
    while levels < wanted and min(h, w) >= 2 * MIN_SIDE:
        h, w = (h + 1) // 2, (w + 1) // 2
        levels += 1
    return levels


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    """Blur and halve: ``(B, C, H, W)`` -> ``(B, C, ceil(H/2), ceil(W/2))``."""
    return sep_filter(x, BURT_TAPS)[..., ::2, ::2]


def pyr_up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Double and interpolate ``x`` to ``size = (H, W)``, where ``ceil(H/2), ceil(W/2)`` is x's size."""
    b, c, h, w = x.shape
    up = x.new_zeros((b, c, 2 * h, 2 * w))
    up[..., ::2, ::2] = x
    return sep_filter(up, _UP_TAPS)[..., : size[0], : size[1]]


def gaussian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """``[x, down(x), ...]`` with ``levels + 1`` entries."""
    pyr = [x]
    for _ in range(levels):
        pyr.append(pyr_down(pyr[-1]))
    return pyr


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Band-pass details ``L_0 .. L_{levels-1}`` followed by the low-pass base (``levels + 1`` entries)."""
    gauss = gaussian_pyramid(x, levels)
    lap = [g - pyr_up(gn, g.shape[-2:]) for g, gn in zip(gauss[:-1], gauss[1:])]
    lap.append(gauss[-1])
    return lap


def reconstruct(lap: list[torch.Tensor]) -> torch.Tensor:
    """Collapse a Laplacian pyramid back into an image."""
    out = lap[-1]
    for detail in reversed(lap[:-1]):
        out = detail + pyr_up(out, detail.shape[-2:])
    return out
