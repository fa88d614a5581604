"""RGB <-> YCrCb in torch (BT.601 full range, the same constants as OpenCV's ``COLOR_RGB2YCrCb``).

Fusion works on luminance: the literature fuses Y of YCrCb and restores the visible chroma, which keeps
colours natural where the RGB camera sees them and stays neutral where only thermal does.
"""

from __future__ import annotations

import torch

__all__ = ["CHROMA_FULL", "CHROMA_NONE", "luma", "restore_chroma", "rgb_to_ycrcb", "ycrcb_to_rgb"]

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


#: Visible luminance at and below which the visible chroma is not used (sensor noise, not colour) ...
CHROMA_NONE = 0.03
#: ... and at and above which it is used in full (linear between).
CHROMA_FULL = 0.10


def restore_chroma(vis: torch.Tensor, vis_y: torch.Tensor, fused_y: torch.Tensor,
                   keep: torch.Tensor | None = None) -> torch.Tensor:
    """The fused luminance ``fused_y`` with the visible image's chroma, where that chroma is reliable.

    The chroma of a pixel is its offset from grey, ``vis - vis_y`` per channel (adding it to a new Y keeps Cr and
    Cb of YCrCb: the conversion is linear with unit Y weight in every channel). It is scaled by a gain that is 1
    where the visible image is reliable and falls to 0 where it is not:

    * dark pixels (``vis_y`` below :data:`CHROMA_FULL`, none below :data:`CHROMA_NONE`, linear between): the
      colour of an amplified dark pixel is noise, and once thermal has lifted it that noise becomes blue blobs
      in tree crowns and teal fringes along warm edges;
    * ``keep`` (optional, e.g. ``1 - glare``): where the caller replaced the visible content (the orange bloom
      of a headlight is not the colour of the car's thermal shape).

    Out-of-gamut results are brought back by scaling the chroma down (towards grey at the same Y), not by
    clipping channels: clipping one channel changes the hue and the luminance, which is where the casts of
    lifted or darkened regions came from. The output's BT.601 luma equals ``fused_y`` (clamped to [0, 1]).
    """
    y = fused_y.clamp(0.0, 1.0)
    gain = (vis_y - CHROMA_NONE).mul_(1.0 / (CHROMA_FULL - CHROMA_NONE)).clamp_(0.0, 1.0)
    if keep is not None:
        gain.mul_(keep)
    chroma = vis - vis_y
    # per-channel max / min as two reductions (torch.aminmax over dim 1 is ~10x slower on the CPU)
    hi, lo = chroma.amax(dim=1, keepdim=True), chroma.amin(dim=1, keepdim=True)
    # the largest scale <= gain that keeps y + scale * chroma inside [0, 1] in every channel
    scale = torch.minimum(gain, (1.0 - y).div_(hi.clamp_(min=1e-6)))
    scale = torch.minimum(scale, y.div(lo.neg_().clamp_(min=1e-6)))
    return torch.addcmul(y, chroma, scale).clamp_(0.0, 1.0)
