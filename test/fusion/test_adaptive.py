from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from reference_adaptive import adaptive_reference

from ivfusion_ros.config import FusionConfig, IlluminationConfig
from ivfusion_ros.core.filters import sep_filter
from ivfusion_ros.core.illumination import IlluminationEstimator
from ivfusion_ros.fusion import FusionContext, create_fuser
from ivfusion_ros.fusion.adaptive import normalize_light
from ivfusion_ros.fusion.pyramid import BURT_TAPS, laplacian_pyramid, pyr_down, pyr_up, reconstruct


@pytest.mark.parametrize("shape", [(64, 64), (101, 77), (9, 13)])
def test_pyramid_reconstructs_exactly(shape) -> None:
    x = torch.rand(2, 1, *shape)
    np.testing.assert_allclose(reconstruct(laplacian_pyramid(x, 5)), x, atol=1e-5)


@pytest.mark.parametrize("shape", [(64, 80), (17, 9), (5, 3), (3, 3), (2, 7), (1, 5)])
def test_fast_pyramid_steps_equal_their_definitions(shape) -> None:
    """pyr_down = blur then keep even pixels; pyr_up = insert zeros then blur with twice the taps."""
    x = torch.rand(2, 3, *shape)
    np.testing.assert_allclose(pyr_down(x), sep_filter(x, BURT_TAPS)[..., ::2, ::2], atol=1e-6)
    h, w = shape
    stuffed = x.new_zeros((2, 3, 2 * h, 2 * w))
    stuffed[..., ::2, ::2] = x
    direct = sep_filter(stuffed, tuple(2 * t for t in BURT_TAPS))
    for size in [(2 * h, 2 * w), (2 * h - 1, 2 * w - 1)]:
        np.testing.assert_allclose(pyr_up(x, size), direct[..., : size[0], : size[1]], atol=1e-6)


def _inputs(night_pair):
    thermal, rgb = night_pair
    ir = torch.from_numpy(thermal).float()[None, None] / 255
    vis = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    y = 0.299 * vis[:, 0:1] + 0.587 * vis[:, 1:2] + 0.114 * vis[:, 2:3]
    ill = IlluminationEstimator(IlluminationConfig())(y)
    return ir, vis, y, FusionContext(ill.map, ill.glare, ill.level, ill.regime.value)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"levels": 2, "light_normalization": 0.0}, {"detail_gain": 1.5, "glare_suppression": 0.3}],
)
def test_torch_matches_numpy_reference(night_pair, overrides) -> None:
    ir, _, y, ctx = _inputs(night_pair)
    cfg = dataclasses.replace(FusionConfig(), **overrides)
    fuser = create_fuser("adaptive", cfg)
    got = fuser.fuse_luma(ir, y, ctx)[0, 0].numpy()
    ref = adaptive_reference(ir[0, 0].numpy(), y[0, 0].numpy(), ctx.illumination[0, 0].numpy(),
                             ctx.glare[0, 0].numpy(), cfg)
    np.testing.assert_allclose(got, ref, atol=2e-4)


def test_dark_regions_take_thermal_and_lit_regions_keep_visible(night_pair) -> None:
    ir, _vis, y, ctx = _inputs(night_pair)
    out = create_fuser("adaptive").fuse_luma(ir, y, ctx)[0, 0]
    # the warm figure stands in the dark half: visible there, though the RGB camera shows nothing
    figure, around = out[50:90, 34:46].mean(), out[50:90, 60:90].mean()
    assert y[0, 0, 50:90, 34:46].mean() < 0.06
    assert figure - around > 0.3
    # in the lit half the visible luminance dominates: the result stays close to it
    lit = (slice(80, 120), slice(105, 160))
    assert abs(float(out[lit].mean() - y[0, 0][lit].mean())) < abs(float(out[lit].mean() - ir[0, 0][lit].mean()))


def test_glare_is_suppressed(night_pair) -> None:
    ir, _, y, ctx = _inputs(night_pair)
    core = (slice(26, 34), slice(126, 134))
    assert y[0, 0][core].mean() > 0.95
    out = create_fuser("adaptive").fuse_luma(ir, y, ctx)[0, 0]
    no_suppr = create_fuser("adaptive", glare_suppression=0.0).fuse_luma(ir, y, ctx)[0, 0]
    assert out[core].mean() < 0.7
    assert out[core].mean() < no_suppr[core].mean() - 0.2


def test_normalize_light_lifts_dark_and_compresses_bright() -> None:
    x = torch.linspace(0, 1, 101)
    y = normalize_light(x, 0.5)
    assert torch.all(y[1:50] > x[1:50]) and torch.all(y[51:100] < x[51:100])
    assert torch.all(torch.diff(normalize_light(x, 1.0)) >= 0)  # monotone at full strength
    assert torch.equal(normalize_light(x, 0.0), x)


def test_output_range_shape_and_chroma(night_pair) -> None:
    ir, vis, _, ctx = _inputs(night_pair)
    out = create_fuser("adaptive").fuse(ir, vis, ctx)
    assert out.shape == vis.shape and out.dtype == torch.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_uniform_context_and_batches() -> None:
    ir, vis = torch.rand(2, 1, 33, 47), torch.rand(2, 3, 33, 47)
    out = create_fuser("adaptive").fuse(ir, vis, FusionContext.uniform(ir, 0.1))
    assert out.shape == (2, 3, 33, 47)


def test_chroma_is_the_visible_one_where_reliable_and_luma_is_exact(night_pair) -> None:
    from ivfusion_ros.core.color import CHROMA_FULL, luma, rgb_to_ycrcb, ycrcb_to_rgb

    ir, vis, y, ctx = _inputs(night_pair)
    fuser = create_fuser("adaptive")
    fused_y = fuser.fuse_luma(ir, y, ctx)
    out = fuser.fuse(ir, vis, ctx)
    # the luminance is the fused one everywhere: chroma never shifts it (clipping channels did)
    torch.testing.assert_close(luma(out), fused_y, atol=1e-5, rtol=0)
    # lit, glare-free, in gamut: Cr and Cb of the visible image, exactly as a YCrCb round trip
    expected = ycrcb_to_rgb(torch.cat((fused_y, rgb_to_ycrcb(vis)[:, 1:]), dim=1))
    _, glare = ctx.maps_at(tuple(y.shape[-2:]))
    in_gamut = ((vis + (fused_y - y) >= 0) & (vis + (fused_y - y) <= 1)).all(dim=1, keepdim=True)
    reliable = ((y >= CHROMA_FULL) & (glare < 1e-6) & in_gamut).expand_as(out)
    assert int(reliable.sum()) > 3000
    torch.testing.assert_close(out[reliable], expected[reliable], atol=2e-3, rtol=0)


def test_chroma_is_dropped_in_the_dark_and_scaled_not_clipped_out_of_gamut() -> None:
    from ivfusion_ros.core.color import CHROMA_NONE, restore_chroma

    vis = torch.tensor([[0.02, 0.03, 0.01], [0.8, 0.2, 0.1]]).t().reshape(1, 3, 1, 2)
    vis_y = 0.299 * vis[:, 0:1] + 0.587 * vis[:, 1:2] + 0.114 * vis[:, 2:3]
    assert float(vis_y[0, 0, 0, 0]) < CHROMA_NONE
    fused_y = torch.tensor([0.6, 0.9]).reshape(1, 1, 1, 2)  # the dark pixel lifted by thermal; the red one lifted
    out = restore_chroma(vis, vis_y, fused_y)
    dark, red = out[0, :, 0, 0], out[0, :, 0, 1]
    torch.testing.assert_close(dark, torch.full((3,), 0.6))  # noise colour of a dark pixel is not kept: grey
    assert float(red.max()) <= 1.0 and float(red.min()) >= 0.0
    # the hue is kept: the offset from grey is proportional to the visible one (clipping would change the ratios)
    offset, source = red - 0.9, vis[0, :, 0, 1] - vis_y[0, 0, 0, 1]
    ratio = offset / source
    torch.testing.assert_close(ratio, ratio.mean().expand(3), atol=1e-5, rtol=0)
    assert 0 < float(ratio.mean()) < 1


def test_empty_night_sky_stays_black_and_dim_content_is_lifted() -> None:
    """No veil: a black sky over a dim street stays black; the street is lifted."""
    h, w = 96, 128
    vis_y = torch.full((1, 1, h, w), 0.005)
    vis_y[..., 48:, :] = 0.12  # dim street below a black sky
    ir = torch.full((1, 1, h, w), 0.0)  # cold sky, cold street: nothing for thermal to add
    cfg = dataclasses.replace(FusionConfig(), detail_noise=0.0)
    out = create_fuser("adaptive", cfg).fuse_luma(ir, vis_y, FusionContext.uniform(ir, 0.05))[0, 0]
    assert float(out[:32].mean()) < 0.01
    assert float(out[64:].mean()) > 0.12


def test_noise_in_the_dark_is_shrunk_and_strong_structure_kept() -> None:
    g = torch.Generator().manual_seed(0)
    h, w = 128, 128
    clean = torch.full((1, 1, h, w), 0.08)
    clean[..., :, 60:68] = 0.4  # a road marking in the dark
    vis_y = (clean + 0.02 * torch.randn(1, 1, h, w, generator=g)).clamp(0, 1)
    ir = torch.full((1, 1, h, w), 0.05)
    ctx = FusionContext.uniform(ir, 0.05)  # dark everywhere
    quiet = create_fuser("adaptive").fuse_luma(ir, vis_y, ctx)[0, 0]
    noisy = create_fuser("adaptive", detail_noise=0.0).fuse_luma(ir, vis_y, ctx)[0, 0]
    flat = (slice(8, 120), slice(8, 48))
    assert float(quiet[flat].std()) < 0.75 * float(noisy[flat].std())
    marking = float(quiet[:, 61:67].mean() - quiet[flat].mean())
    assert marking > 0.9 * float(clean[0, 0, :, 61:67].mean() - clean[0, 0][flat].mean())
