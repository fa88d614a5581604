from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ivfusion_ros.config import IlluminationConfig
from ivfusion_ros.core.filters import max_filter, min_filter
from ivfusion_ros.core.illumination import IlluminationEstimator, Regime, RegimeTracker


def test_regimes_from_thresholds() -> None:
    for level, regime in [(0.05, Regime.NIGHT), (0.25, Regime.DUSK), (0.6, Regime.DAY)]:
        assert RegimeTracker(0.18, 0.35, 0.03).update(level) is regime


def test_hysteresis_prevents_flicker() -> None:
    tr = RegimeTracker(0.18, 0.35, 0.03)
    assert tr.update(0.17) is Regime.NIGHT
    # hovering around the night threshold, within the margin: stays night
    for level in (0.19, 0.17, 0.20, 0.18, 0.205):
        assert tr.update(level) is Regime.NIGHT
    assert tr.update(0.22) is Regime.DUSK  # crossed 0.18 + 0.03
    for level in (0.17, 0.16, 0.19):
        assert tr.update(level) is Regime.DUSK
    assert tr.update(0.14) is Regime.NIGHT  # crossed 0.18 - 0.03
    assert tr.update(0.9) is Regime.DAY  # a jump crosses both thresholds at once
    assert tr.update(0.33) is Regime.DAY
    assert tr.update(0.31) is Regime.DUSK


def test_zero_hysteresis_switches_immediately() -> None:
    tr = RegimeTracker(0.2, 0.4, 0.0)
    assert [tr.update(v).value for v in (0.1, 0.21, 0.19, 0.41)] == ["night", "dusk", "night", "day"]


def _scene(level: float, lamp: tuple[int, int, int] | None = None, h: int = 240, w: int = 320) -> torch.Tensor:
    y = torch.full((1, 1, h, w), level)
    if lamp is not None:
        cy, cx, r = lamp
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        y[0, 0][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1.0
    return y


def test_glare_mask_finds_a_headlight_but_not_speckles() -> None:
    cfg = IlluminationConfig(glare_threshold=0.9, glare_min_area=0.002)
    y = _scene(0.05, lamp=(60, 200, 14))
    y[0, 0, 200, 40] = 1.0  # a single saturated pixel (specular speckle)
    y[0, 0, 150:152, 100:102] = 1.0  # a 2x2 speckle
    ill = IlluminationEstimator(cfg)(y)
    area = 3.14159 * 14 * 14 / (240 * 320)
    assert ill.glare_fraction == pytest.approx(area, rel=0.3)
    g = torch.nn.functional.interpolate(ill.glare, size=(240, 320), mode="bilinear")[0, 0]
    assert g[60, 200] > 0.9  # on the headlight
    assert g[200, 40] < 0.05 and g[150, 100] < 0.05  # speckles are not glare
    assert g[230, 10] < 0.01  # far away


def test_glare_is_excluded_from_the_level() -> None:
    est = IlluminationEstimator(IlluminationConfig())
    dark = est(_scene(0.05))
    with_lights = IlluminationEstimator(IlluminationConfig())(_scene(0.05, lamp=(60, 200, 40)))
    assert dark.regime is Regime.NIGHT and with_lights.regime is Regime.NIGHT
    assert with_lights.level == pytest.approx(dark.level, abs=0.02)
    assert with_lights.glare_fraction > 0.05


def test_illumination_map_is_local() -> None:
    y = _scene(0.05)
    y[..., 160:] = 0.5  # level (0.05 + 0.5) / 2: dusk
    ill = IlluminationEstimator(IlluminationConfig())(y)
    m = ill.map[0, 0]
    w = m.shape[1]
    assert m[:, : w // 4].mean() < 0.1 and m[:, -w // 4:].mean() > 0.45
    assert ill.regime is Regime.DUSK


def test_run_time_threshold_change_keeps_state() -> None:
    est = IlluminationEstimator(IlluminationConfig(night_threshold=0.1, day_threshold=0.3))
    assert est(_scene(0.2)).regime is Regime.DUSK
    est.update_config(IlluminationConfig(night_threshold=0.25, day_threshold=0.5, hysteresis=0.0))
    assert est(_scene(0.2)).regime is Regime.NIGHT


def test_glare_weight_only_at_night() -> None:
    night = IlluminationEstimator(IlluminationConfig())(_scene(0.05, lamp=(60, 200, 20)))
    day = IlluminationEstimator(IlluminationConfig())(_scene(0.6, lamp=(60, 200, 20)))
    assert day.regime is Regime.DAY and night.regime is Regime.NIGHT
    assert float(night.glare.max()) > 0.9
    assert float(day.glare.max()) == 0.0
    assert day.glare_fraction == pytest.approx(night.glare_fraction)  # the saturated area is still reported


@pytest.mark.parametrize("size", [1, 3, 5, 7, 15, 31])
def test_max_min_filters_equal_max_pooling(size: int) -> None:
    x = torch.rand(2, 1, 37, 53)
    r = size // 2
    ref = F.max_pool2d(F.pad(x, (r, r, 0, 0), mode="replicate"), (1, size), stride=1)
    ref = F.max_pool2d(F.pad(ref, (0, 0, r, r), mode="replicate"), (size, 1), stride=1)
    torch.testing.assert_close(max_filter(x, size), ref, rtol=0, atol=0)
    torch.testing.assert_close(min_filter(-x, size), -ref, rtol=0, atol=0)


def test_glare_fraction_counts_saturated_pixels_in_surviving_blobs() -> None:
    y = torch.full((1, 1, 480, 640), 0.1)
    y[..., 100:140, 200:260] = 1.0  # a lamp: 2400 px, well above the minimum area
    y[..., 300, 300] = 1.0  # a hot pixel: below the minimum area, not glare
    ill = IlluminationEstimator(IlluminationConfig())(y)
    assert ill.glare_fraction == pytest.approx(2400 / (480 * 640))
