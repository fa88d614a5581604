"""RGB <-> YCrCb in torch (BT.601 full range, the same constants as OpenCV's ``COLOR_RGB2YCrCb``).

Fusion works on luminance: the literature fuses Y of YCrCb and restores the visible chroma, which keeps
colours natural where the RGB camera sees them and stays neutral where only thermal does.
"""

from __future__ import annotations

import torch

__all__ = ["luma", "rgb_to_ycrcb", "ycrcb_to_rgb"]

_KR, _KG, _KB = 0.299, 0.587, 0.114
_CR, _CB = 0.713, 0.564  # OpenCV's delta scale factors


def luma(rgb: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` RGB in [0, 1] -> ``(B, 1, H, W)`` Y (BT.601)."""
    return _KR * rgb[:, 0:1] + _KG * rgb[:, 1:2] + _KB * rgb[:, 2:3]


def rgb_to_ycrcb(rgb: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` RGB in [0, 1] -> ``(B, 3, H, W)`` Y, Cr, Cb in [0, 1] (chroma centred on 0.5)."""
    r, g, b = rgb[:, 0:1], rgb[:, 1:2], rgb[:, 2:3]
    y = _KR * r + _KG * g + _KB * b
    return torch.cat((y, (r - y) * _CR + 0.5, (b - y) * _CB + 0.5), dim=1)


def ycrcb_to_rgb(ycrcb: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycrcb`; the result is clamped to [0, 1]."""
    y, cr, cb = ycrcb[:, 0:1], ycrcb[:, 1:2] - 0.5, ycrcb[:, 2:3] - 0.5
    r = y + cr / _CR
    b = y + cb / _CB
    g = (y - _KR * r - _KB * b) / _KG
    return torch.cat((r, g, b), dim=1).clamp_(0.0, 1.0)
