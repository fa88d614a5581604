"""Fusion loss terms on crafted inputs: each is minimal where its docstring says it is."""

from __future__ import annotations

import pytest
import torch

from ivfusion_ros.errors import ConfigError
from ivfusion_ros.fusion.nets.losses import (
    create_loss,
    glare_loss,
    gradient_loss,
    illumination_loss,
    intensity_loss,
    sobel_magnitude,
    ssim,
    ssim_loss,
)


def _pair(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, 1, 32, 32, generator=g), torch.rand(2, 1, 32, 32, generator=g)


def test_intensity_loss_is_zero_at_the_max_and_ignores_glare() -> None:
    ir, vis = _pair()
    top = torch.maximum(ir, vis)
    assert float(intensity_loss(ir, vis, top)) == 0.0
    assert float(intensity_loss(ir, vis, top * 0.5)) > 0.1
    glare = torch.ones_like(ir)
    assert float(intensity_loss(ir, vis, torch.zeros_like(ir), glare)) == 0.0  # full glare: not this term's job


def test_gradient_loss_zero_with_max_gradients() -> None:
    ir = torch.zeros(1, 1, 16, 16)
    ir[..., :, 8:] = 1.0  # vertical edge
    vis = torch.zeros(1, 1, 16, 16)
    fused = ir.clone()  # has exactly the stronger edges (vis has none)
    assert float(gradient_loss(ir, vis, fused)) == 0.0
    assert float(gradient_loss(ir, vis, torch.zeros_like(ir))) > 0.0
    mag = sobel_magnitude(ir)
    assert float(mag[..., 0, :].sum()) == float(mag[..., 5, :].sum())  # replicate padding: no border edges
    assert float(mag[..., :, 0].sum()) == 0.0


def test_ssim_identity_and_loss() -> None:
    ir, vis = _pair()
    assert float(ssim(ir, ir)) == pytest.approx(1.0, abs=1e-5)
    assert float(ssim(ir, 1 - ir)) < 0.0
    assert float(ssim_loss(ir, ir, ir)) == pytest.approx(0.0, abs=1e-5)
    assert float(ssim_loss(ir, vis, 0.5 * (ir + vis))) < float(ssim_loss(ir, vis, torch.rand_like(ir)))
    assert torch.isfinite(ssim(ir[..., :4, :4], vis[..., :4, :4]))  # window shrinks to tiny crops


def test_illumination_loss_prefers_normal_light() -> None:
    g = torch.Generator().manual_seed(1)
    texture = torch.rand(1, 1, 64, 64, generator=g) * 0.2
    normal = 0.4 + texture
    dark = 0.02 + 0.1 * texture
    saturated = (0.9 + texture).clamp(max=1.0)
    l_normal, l_dark, l_sat = (float(illumination_loss(x)) for x in (normal, dark, saturated))
    assert l_normal == 0.0
    assert l_dark > 0.2 and l_sat > 0.2
    glare = torch.ones_like(saturated)
    assert float(illumination_loss(saturated, glare)) == pytest.approx(2 * l_sat)  # glare counts twice
    # lifting a dark region lowers the loss
    assert float(illumination_loss(dark + 0.2)) < l_dark


def test_create_loss_total_parts_and_gradients() -> None:
    ir, vis = _pair()
    illum, glare = torch.full_like(ir, 0.3), torch.zeros_like(ir)
    fused = torch.rand_like(ir).requires_grad_(True)
    loss = create_loss("amfusion", ssim=0.25)
    assert loss.weights["ssim"] == 0.25
    total, parts = loss(ir, vis, fused, illum, glare)
    assert set(parts) == {"intensity", "gradient", "ssim", "illumination", "glare"}
    expected = sum(loss.weights[k] * v for k, v in parts.items())
    assert float(total.detach()) == pytest.approx(expected, rel=1e-5)
    total.backward()
    assert fused.grad is not None and float(fused.grad.abs().sum()) > 0
    _, parts = create_loss("amfusion", ssim=0)(ir, vis, fused.detach(), illum, glare)
    assert "ssim" not in parts
    with pytest.raises(ConfigError, match="unknown loss term"):
        create_loss("amfusion", perceptual=1.0)
    with pytest.raises(ConfigError, match="no loss defined"):
        create_loss("no-such-family")


def test_glare_loss_pulls_light_effects_to_thermal_and_gradient_ignores_their_edges() -> None:
    """In glare, the fused image should be the thermal one and the bloom's rim is no edge to keep."""
    ir = torch.full((1, 1, 32, 32), 0.3)
    vis = torch.full((1, 1, 32, 32), 0.1)
    vis[..., 8:24, 8:24] = 1.0  # a headlight
    glare = torch.zeros_like(ir)
    glare[..., 6:26, 6:26] = 1.0
    assert float(glare_loss(ir, ir, glare)) == 0.0
    kept = float(glare_loss(ir, torch.maximum(ir, vis), glare))
    assert kept == pytest.approx(0.7 * 256 / 400, rel=1e-5)  # normalised by the glare area, not the image
    assert float(glare_loss(ir, vis, torch.zeros_like(ir))) == 0.0
    # the headlight's rim is a target edge without glare, none with it
    assert float(gradient_loss(ir, vis, ir)) > 0.0
    assert float(gradient_loss(ir, vis, ir, glare)) == pytest.approx(0.0, abs=1e-6)
