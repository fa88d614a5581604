"""``adaptive``: training-free, illumination-guided multi-scale fusion (the no-weights variant).

In the spirit of AMFusion (Beyond Night Visibility, arXiv 2403.01083), without a network. It starts from the
textbook Laplacian-pyramid fusion (``laplacian``: max-abs detail, averaged base) and changes what that gets
wrong on night driving scenes:

1. **Decompose** visible luminance ``V`` and thermal ``T`` into Laplacian pyramids (``fusion.levels``).
2. **Detail layers** (carry structure).

   * Light effects: visible detail is attenuated in glare ``G``, ``D_V <- D_V (1 - glare_suppression G)``:
     the rim of a headlight's bloom is the strongest visible edge of a night street and is not scene structure.
   * Noise: the visible sensor noise ``sigma`` is measured on every frame (median absolute finest-level detail
     in the dark regions, / 0.6745) and visible detail is shrunk where its local energy ``E_V = box3(D_V^2)`` is
     not above the noise level, ``D_V <- D_V E_V / (E_V + (detail_noise sigma)^2 s(L))``, ``s(L)`` the
     darkness, on the finest level (where white noise lives: its std halves with every level below). Strong
     structure in the dark (road markings, signs, lit windows) has energy far above the noise and is kept; the
     grain of an amplified dark sensor is not. (The former rule discounted all visible detail in the dark by
     80 %, which erased road markings.)
   * Selection: per pixel the source with more local energy wins, sharply but smoothly,
     ``w_T = E_T^2 / (E_T^2 + E_V^2)`` (energies before the noise shrink): close to the max-abs rule, without
     its salt-and-pepper seams.
   * ``detail_gain`` (1.2, chosen on msrs-split val) restores the contrast the pyramid's averaging loses.
3. **Base layer** (coarsest, carries brightness): ``B = B_V + w relu(B_T - B_V)``: thermal is taken where it is
   *brighter* than the visible base (warm people and cars, the unlit scene), never where it would darken a lit
   region. The share ``w`` is ``ir_weight_dark`` in the dark and ``ir_weight_bright`` where lit. In glare the
   base moves to thermal, ``B <- B + glare_suppression G (B_T - B)``, so a headlight gives way to the car's
   thermal shape. (The former base, a weighted average of the two, laid a grey veil of thermal background over
   the night sky and lowered the contrast below plain averaging.)
4. **Light normalisation** of the fused base, ``B' = B ** gamma(B)`` with ``gamma = 2 ** (2 alpha (B - 0.5))``
   (``alpha = light_normalization``), lifts dark and compresses over-exposed regions. It fades out below the
   black level (``BLACK_LEVEL``, smoothstep from 1x to 2x it), so an empty night sky stays black instead of
   being lifted into a veil, while dim content (a street at 0.1) is lifted.
5. **Reconstruct**, clamp to [0, 1]; chroma comes from the visible image where it is reliable
   (:meth:`~ivfusion_ros.fusion.base.LuminanceFuser.fuse`).

Everything is tensor ops on the input's device, with no read-back: the same code runs on the CPU and the GPU
and can be captured in a CUDA graph. ``test/reference_adaptive.py`` re-implements it with numpy/OpenCV and the
tests compare the two.
"""

from __future__ import annotations

import torch

from ivfusion_ros.core.filters import box_blur
from ivfusion_ros.fusion.base import FusionContext, LuminanceFuser
from ivfusion_ros.fusion.pyramid import laplacian_pyramid, max_levels, reconstruct
from ivfusion_ros.fusion.registry import register_fuser

__all__ = ["AdaptiveFuser", "darkness", "lift_light", "noise_sigma", "normalize_light"]

_EPS = 1e-12
#: Size of the local-energy window of the detail rule.
ENERGY_WINDOW = 3
#: Base level below which light normalisation does not lift (fades in up to twice this level).
BLACK_LEVEL = 0.05
#: Darkness above which a pixel counts for the noise estimate.
NOISE_DARKNESS = 0.5
#: Step of the sub-sampling grid of the noise estimate (the median of every 4th pixel in each direction).
NOISE_STRIDE = 4
#: Median absolute deviation of Gaussian noise, in standard deviations.
_MAD_TO_SIGMA = 0.6745


def darkness(illum: torch.Tensor, dark_level: float, bright_level: float) -> torch.Tensor:
    """Smoothstep ``s(L)``: 1 at and below ``dark_level``, 0 at and above ``bright_level``."""
    s = ((bright_level - illum) / (bright_level - dark_level)).clamp(0.0, 1.0)
    return s * s * (3.0 - 2.0 * s)


def normalize_light(base: torch.Tensor, alpha: float) -> torch.Tensor:
    """Lift dark and compress bright values: ``x ** (2 ** (2 alpha (x - 0.5)))`` on [0, 1]."""
    if alpha <= 0:
        return base
    x = base.clamp(1e-6, 1.0)
    return x.pow(torch.exp2(2.0 * alpha * (x - 0.5)))


def lift_light(base: torch.Tensor, alpha: float, black: float = BLACK_LEVEL) -> torch.Tensor:
    """:func:`normalize_light`, faded out below ``black`` (smoothstep from ``black`` to ``2 black``): black stays
    black, so the curve lifts dim content without veiling an empty night sky."""
    if alpha <= 0:
        return base
    t = ((base - black) / black).clamp(0.0, 1.0)
    t = t * t * (3.0 - 2.0 * t)
    return base + t * (normalize_light(base, alpha) - base)


def noise_sigma(detail: torch.Tensor, dark: torch.Tensor) -> torch.Tensor:
    """``(B, 1, 1, 1)`` noise std of an image from its finest Laplacian level: the median absolute detail over
    the pixels where ``dark > NOISE_DARKNESS`` (on a ``NOISE_STRIDE`` grid), / 0.6745; 0 without dark pixels.

    Dark regions because that is where the noise matters (an amplified sensor) and where texture does not
    dominate the median; a fixed-shape NaN mask instead of indexing keeps it free of read-backs.
    """
    s = NOISE_STRIDE
    d = detail[..., ::s, ::s].abs()
    masked = torch.where(dark[..., ::s, ::s] > NOISE_DARKNESS, d, torch.full_like(d, float("nan")))
    med = masked.flatten(1).nanmedian(dim=1).values
    return torch.nan_to_num(med, nan=0.0).view(-1, 1, 1, 1) / _MAD_TO_SIGMA


@register_fuser("adaptive", "Training-free illumination-guided multi-scale fusion with glare and noise handling.")
class AdaptiveFuser(LuminanceFuser):
    def fuse_luma(self, ir: torch.Tensor, vis_y: torch.Tensor, ctx: FusionContext) -> torch.Tensor:
        cfg = self.cfg
        h, w = vis_y.shape[-2:]
        levels = max_levels(h, w, cfg.levels)
        # both sources as the two channels of one pyramid: every filter pass runs once over both
        lap = laplacian_pyramid(torch.cat((ir, vis_y), dim=1), levels)

        fused = []
        for k, d in enumerate(lap[:-1]):
            _, glare = ctx.maps_at(tuple(d.shape[-2:]))
            # in place: the pyramid's own level (not used again), so the two sources stay one tensor for the blur
            d[:, 1:2].mul_(1.0 - cfg.glare_suppression * glare)  # light effects are not structure
            d_ir, d_vis = d[:, 0:1], d[:, 1:2]
            energy = box_blur(d.square(), ENERGY_WINDOW).square_()
            e2_ir, e2_vis = energy[:, 0:1], energy[:, 1:2]  # squared local energies
            if k == 0 and cfg.detail_noise > 0:
                # sensor noise lives in the finest level (white noise halves its std per level, so the shrink
                # would be negligible below): shrink by E_V / (E_V + noise), E_V from the squared energy
                dark = darkness(ctx.maps_at(tuple(d.shape[-2:]))[0], cfg.dark_level, cfg.bright_level)
                sigma = noise_sigma(d_vis, dark)
                noise = dark.mul_((cfg.detail_noise * sigma).square())
                e_vis = e2_vis.sqrt()
                d_vis = d_vis * (e_vis / e_vis.add(noise).add_(_EPS))
            w_ir = e2_ir / (e2_ir + e2_vis).add_(_EPS)
            fused.append((d_ir - d_vis).mul_(w_ir).add_(d_vis).mul_(cfg.detail_gain))

        b_ir, b_vis = lap[-1][:, 0:1], lap[-1][:, 1:2]
        illum, glare = ctx.maps_at(tuple(b_ir.shape[-2:]))
        s = darkness(illum, cfg.dark_level, cfg.bright_level)
        w_b = cfg.ir_weight_bright + (cfg.ir_weight_dark - cfg.ir_weight_bright) * s
        base = b_vis + w_b * (b_ir - b_vis).clamp(min=0.0)
        base = base + (cfg.glare_suppression * glare) * (b_ir - base)
        fused.append(lift_light(base, cfg.light_normalization))
        return reconstruct(fused).clamp_(0.0, 1.0)
