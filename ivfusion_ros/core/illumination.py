"""Scene illumination: a global level, the day / dusk / night regime, a local illumination map and glare.

Why each piece exists:

* the **global level** (mean RGB luminance outside glare) picks the regime; headlights in a dark street
  must not make the scene look like day, hence glare is excluded from the mean;
* the **regime** (``day``/``dusk``/``night`` from ``night_threshold < day_threshold``) can switch the fusion
  variant; hysteresis keeps it from flickering when the level hovers at a threshold;
* the **illumination map** (smoothed luminance) tells fusion where the RGB camera sees well and where it
  is dark, region by region: a lamp-lit pavement keeps its colour while the dark verge takes thermal;
* the **glare mask** marks saturated light sources (headlights, floodlights) large enough to matter
  (``glare_min_area``); fusion replaces their light effect with thermal structure instead of keeping it.
  Only at night: the weight fades to zero as the scene level rises to ``day_threshold``, since by day the
  saturated regions are sky or sunlit surfaces, not light effects.

All maps are computed at a low resolution (about 160 px wide): illumination is smooth by nature, and that
keeps the map work small; the only full-resolution passes are one threshold and two block poolings (about
2 ms at 640x512 on one CPU core). Maps are returned at that resolution; consumers resample them
to the size they work at (:meth:`FusionContext.maps_at <ivfusion_ros.fusion.base.FusionContext.maps_at>`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import torch
import torch.nn.functional as F

from ivfusion_ros.config import IlluminationConfig
from ivfusion_ros.core.filters import max_filter, min_filter, smooth

__all__ = ["Illumination", "IlluminationEstimator", "Regime", "RegimeTracker"]

#: Width of the working resolution for illumination maps.
MAP_WIDTH = 160


class Regime(str, Enum):
    """Scene illumination regime."""

    NIGHT = "night"
    DUSK = "dusk"
    DAY = "day"


class RegimeTracker:
    """Day / dusk / night from the global level, with hysteresis.

    The regime changes only once the level has crossed a threshold by more than ``hysteresis``; a level
    hovering at a threshold keeps the current regime. The first frame is classified by the bare thresholds.
    """

    def __init__(self, night_threshold: float, day_threshold: float, hysteresis: float) -> None:
        self.night = night_threshold
        self.day = day_threshold
        self.h = hysteresis
        self.regime: Regime | None = None

    def reset(self) -> None:
        self.regime = None

    def update(self, level: float) -> Regime:
        """Feed one frame's level; return the (possibly unchanged) regime."""
        if self.regime is None:
            if level < self.night:
                self.regime = Regime.NIGHT
            elif level > self.day:
                self.regime = Regime.DAY
            else:
                self.regime = Regime.DUSK
            return self.regime
        lo_night, hi_night = self.night - self.h, self.night + self.h
        lo_day, hi_day = self.day - self.h, self.day + self.h
        if self.regime is Regime.NIGHT:
            if level > hi_day:
                self.regime = Regime.DAY
            elif level > hi_night:
                self.regime = Regime.DUSK
        elif self.regime is Regime.DAY:
            if level < lo_night:
                self.regime = Regime.NIGHT
            elif level < lo_day:
                self.regime = Regime.DUSK
        else:
            if level < lo_night:
                self.regime = Regime.NIGHT
            elif level > hi_day:
                self.regime = Regime.DAY
        return self.regime


@dataclass
class Illumination:
    """Illumination of one frame.

    Attributes:
        level: global level in [0, 1]: mean luminance outside glare.
        regime: the tracked regime after this frame.
        map: ``(B, 1, h, w)`` local illumination in [0, 1] at the working resolution.
        glare: ``(B, 1, h, w)`` soft glare weight in [0, 1] (1 on light sources, fading over their halo),
            scaled down as the scene level rises from the night to the day threshold (0 by day).
        glare_core: ``(B, 1, h, w)`` bool, the light-source pixels after the minimum-area filter.
        glare_fraction: share of the image covered by glare cores.
    """

    level: float
    regime: Regime
    map: torch.Tensor
    glare: torch.Tensor
    glare_core: torch.Tensor
    glare_fraction: float


class IlluminationEstimator:
    """Computes :class:`Illumination` from the RGB luminance; keeps the regime state of one stream."""

    def __init__(self, cfg: IlluminationConfig) -> None:
        self.cfg = cfg
        self.tracker = RegimeTracker(cfg.night_threshold, cfg.day_threshold, cfg.hysteresis)

    def update_config(self, cfg: IlluminationConfig) -> None:
        """Apply new thresholds at run time, keeping the current regime."""
        self.cfg = cfg
        self.tracker.night, self.tracker.day, self.tracker.h = (
            cfg.night_threshold, cfg.day_threshold, cfg.hysteresis)

    def reset(self) -> None:
        self.tracker.reset()

    def __call__(self, y: torch.Tensor) -> Illumination:
        """Estimate illumination from luminance ``y``: ``(B, 1, H, W)`` in [0, 1]."""
        return self.finish(*self.measure(y))

    def measure(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The device part: ``(illumination map, glare weight, glare core, stats)``, ``stats = [glare fraction,
        level]``. No read-back and fixed shapes, so the pipeline can capture it in a CUDA graph."""
        cfg = self.cfg
        _, _, h, w = y.shape
        f = max(1, round(w / MAP_WIDTH))
        saturated = (y >= cfg.glare_threshold).to(y.dtype)
        if f > 1:
            mean = F.avg_pool2d(y, f, stride=f, ceil_mode=True)
            # saturated pixels per block (a sum: divisor 1); a block with any is a candidate light source
            n_saturated = F.avg_pool2d(saturated, f, stride=f, ceil_mode=True, divisor_override=1)
            core = (n_saturated > 0).to(y.dtype)
        else:
            mean, core = y, saturated
            n_saturated = saturated
        hs, ws = mean.shape[-2:]

        # Minimum area as an opening: a blob survives when it contains a square of the minimum area.
        side = math.sqrt(cfg.glare_min_area * hs * ws)
        k = 2 * int(side / 2) + 1
        if k >= 3:
            core = max_filter(min_filter(core, k), k)
        # the saturated pixels inside surviving blobs, as a share of the full-resolution image
        glare_fraction = (n_saturated * core).sum() / (y.shape[0] * h * w)
        # Soft weight: the cores dilated by their own size plus a halo, then blurred, so the bloom around a
        # headlight is treated as glare too while the weight falls off smoothly (no seams in the fusion).
        halo = 2 * max(k, 3) + 1
        sigma = max(1.0, cfg.map_scale * ws)
        glare = torch.maximum(core, smooth(max_filter(core, halo), sigma).mul_(1.5).clamp_(0.0, 1.0))

        outside = 1.0 - core
        n = outside.sum()
        level = torch.where(n > 0, (mean * outside).sum() / n.clamp(min=1.0), torch.ones_like(n))
        illum = smooth(mean, sigma).clamp_(0.0, 1.0)
        # Light effects are a problem of dark scenes: by day, saturated regions are sky, snow or sunlit road,
        # and replacing them with thermal would darken the scene. The glare weight fades out from the night
        # threshold to the day threshold of the global level (a factor of exactly 1 at night).
        nightness = ((cfg.day_threshold - level) / (cfg.day_threshold - cfg.night_threshold)).clamp(0.0, 1.0)
        glare = glare.mul_(nightness)
        return illum, glare, core, torch.stack((glare_fraction, level))

    def finish(self, illum: torch.Tensor, glare: torch.Tensor, core: torch.Tensor, stats: torch.Tensor
               ) -> Illumination:
        """The host part: read the two numbers back (one small copy) and update the regime."""
        glare_fraction, level = (float(v) for v in stats.tolist())
        regime = self.tracker.update(level)
        return Illumination(level, regime, illum, glare, core > 0, glare_fraction)
