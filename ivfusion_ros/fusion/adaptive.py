"""``adaptive``: training-free, illumination-guided multi-scale fusion (the default variant).

In the spirit of AMFusion (Beyond Night Visibility, arXiv 2403.01083), without a network:

1. **Decompose** visible luminance ``V`` and thermal ``T`` into Laplacian pyramids (``fusion.levels``).
2. **Base layer** (coarsest, carries illumination): ``B = w * B_T + (1 - w) * B_V`` where the thermal share
   ``w`` follows the local illumination ``L``: ``ir_weight_dark`` where ``L <= dark_level``,
   ``ir_weight_bright`` where ``L >= bright_level``, a smoothstep between. In glare ``G`` the share moves
   towards 1 (``w += (1 - w) * glare_suppression * G``) so headlights give way to thermal structure
   instead of being kept as a blinding blob.
3. **Detail layers** (carry structure): visible detail is attenuated first,
   ``D_V <- D_V (1 - glare_suppression G) (1 - 0.8 s(L))``, because in glare it is flare and bloom and in
   the dark it is mostly sensor noise and light streaks, not scene structure. Then per pixel the source
   with more local energy ``E = box5(D^2)`` wins, softly: ``w_d = E_T / (E_T + E_V)``.
4. **Light normalisation** of the fused base: ``B' = B ** gamma(B)`` with
   ``gamma = 2 ** (2 alpha (B - 0.5))`` (``alpha = light_normalization``) lifts dark regions (gamma < 1)
   and compresses over-exposed ones (gamma > 1); it is monotone for ``alpha <= 1``. This is the
   training-free counterpart of AMFusion's illumination loss, which pulls the result to normal light.
5. **Reconstruct** with ``detail_gain`` on the details, clamp to [0, 1]; chroma comes from the visible image.

Everything is tensor ops on the input's device: the same code runs on the CPU and the GPU.
``test/reference_adaptive.py`` re-implements it with numpy/OpenCV and the tests compare the two.
"""

from __future__ import annotations

import torch

from ivfusion_ros.core.filters import box_blur
from ivfusion_ros.fusion.base import FusionContext, LuminanceFuser
from ivfusion_ros.fusion.pyramid import laplacian_pyramid, max_levels, reconstruct
from ivfusion_ros.fusion.registry import register_fuser

__all__ = ["AdaptiveFuser", "darkness", "normalize_light"]

_EPS = 1e-6
#: Size of the local-energy window of the detail rule.
ENERGY_WINDOW = 5
#: How much of the visible detail energy darkness removes (0.8: dark detail counts 20 %).
DARK_DETAIL_DISCOUNT = 0.8


def darkness(illum: torch.Tensor, dark_level: float, bright_level: float) -> torch.Tensor:
    """Smoothstep ``s(L)``: 1 at and below ``dark_level``, 0 at and above ``bright_level``."""
    s = ((bright_level - illum) / (bright_level - dark_level)).clamp(0.0, 1.0)
    return s * s * (3.0 - 2.0 * s)


def normalize_light(base: torch.Tensor, alpha: float) -> torch.Tensor:
    """Lift dark and compress bright values: ``x ** (2 ** (2 alpha (x - 0.5)))`` on [0, 1]."""
    if alpha <= 0:
        return base
    x = base.clamp(_EPS, 1.0)
    return x.pow(torch.exp2(2.0 * alpha * (x - 0.5)))


@register_fuser("adaptive", "Training-free illumination-guided multi-scale fusion with glare suppression.")
class AdaptiveFuser(LuminanceFuser):
    def fuse_luma(self, ir: torch.Tensor, vis_y: torch.Tensor, ctx: FusionContext) -> torch.Tensor:
        cfg = self.cfg
        h, w = vis_y.shape[-2:]
        levels = max_levels(h, w, cfg.levels)
        # both sources as the two channels of one pyramid: every filter pass runs once over both
        lap = laplacian_pyramid(torch.cat((ir, vis_y), dim=1), levels)

        fused = []
        for d in lap[:-1]:
            illum, glare = ctx.maps_at(tuple(d.shape[-2:]))
            a_vis = 1.0 - DARK_DETAIL_DISCOUNT * darkness(illum, cfg.dark_level, cfg.bright_level)
            d_ir = d[:, 0:1]
            d_vis = d[:, 1:2] * ((1.0 - cfg.glare_suppression * glare) * a_vis)  # light effects, dark noise
            both = torch.cat((d_ir, d_vis), dim=1)
            energy = box_blur(both * both, ENERGY_WINDOW)
            e_ir, e_vis = energy[:, 0:1], energy[:, 1:2]
            w_d = e_ir / (e_ir + e_vis + _EPS)
            fused.append(cfg.detail_gain * (w_d * d_ir + (1.0 - w_d) * d_vis))

        b_ir, b_vis = lap[-1][:, 0:1], lap[-1][:, 1:2]
        illum, glare = ctx.maps_at(tuple(b_ir.shape[-2:]))
        s = darkness(illum, cfg.dark_level, cfg.bright_level)
        w_b = cfg.ir_weight_bright + (cfg.ir_weight_dark - cfg.ir_weight_bright) * s
        w_b = w_b + (1.0 - w_b) * (cfg.glare_suppression * glare)
        base = w_b * b_ir + (1.0 - w_b) * b_vis
        fused.append(normalize_light(base, cfg.light_normalization))
        return reconstruct(fused).clamp_(0.0, 1.0)
