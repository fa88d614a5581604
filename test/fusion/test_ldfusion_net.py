"""LDFusion network: registry contract, shapes, AdaIN statistics, style and scene codes, sizes, the fuser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ivfusion_ros.errors import ConfigError, ModelError
from ivfusion_ros.fusion import FusionContext, create_fuser
from ivfusion_ros.fusion.nets import create_net, list_nets, net_info
from ivfusion_ros.fusion.nets.ldfusion import AdaIN, adain, instance_norm
from ivfusion_ros.fusion.nets.weights import save_weights

TINY_S = {"dim": 4, "style_channels": 4, "decoder_dim": 8, "mlp_hidden": 8}
TINY_L = {"dim": 2, "downsample": 2, "content_blocks": 1, "style_channels": 4, "decoder_blocks": 1, "mlp_hidden": 8}


def _inputs(b: int = 1, h: int = 32, w: int = 48, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(b, 1, h, w, generator=g) for _ in range(4))


def test_registry_contract() -> None:
    assert {"ldfusion", "ldfusion-s"} <= set(list_nets("ldfusion*"))
    for name, multiple in (("ldfusion-s", 8), ("ldfusion", 8)):
        net = create_net(name)
        assert net.variant == name and net.family == "ldfusion" and net_info(name).family == "ldfusion"
        json.dumps(net.config)
        again = create_net(name, **net.config)
        assert again.config == net.config and again.state_dict().keys() == net.state_dict().keys()
        assert net.multiple == multiple and net.guidance == "unguided"
    with pytest.raises(ConfigError, match="ldfusion-s"):
        create_net("ldfusion-s", widht=3)


def test_param_counts() -> None:
    """The real-time size stays small; the paper size is the official release's width (millions)."""
    n_s = sum(p.numel() for p in create_net("ldfusion-s").parameters())
    n_l = sum(p.numel() for p in create_net("ldfusion").parameters())
    assert 50_000 <= n_s <= 150_000
    assert 3_000_000 <= n_l <= 8_000_000


@pytest.mark.parametrize(("name", "cfg"), [("ldfusion-s", TINY_S), ("ldfusion", TINY_L)])
@pytest.mark.parametrize(("h", "w"), [(32, 48), (8, 8)])
def test_forward_shapes_range_and_gradients(name: str, cfg: dict, h: int, w: int) -> None:
    net = create_net(name, **cfg)
    out = net(*_inputs(2, h, w))
    assert out.shape == (2, 1, h, w)
    assert float(out.detach().min()) >= 0.0 and float(out.detach().max()) <= 1.0
    out.mean().backward()
    for part in ("content_ir", "content_vis", "style_ir", "style_vis", "mlp", "head"):
        grads = [p.grad for p in getattr(net, part).parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), part


def test_adain_sets_the_channel_statistics_of_the_style() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 9, 11, generator=g) * 5 + 2
    mean = torch.tensor([[0.5, -1.0, 3.0], [0.0, 2.0, -0.25]])
    std = torch.tensor([[0.1, 2.0, 1.0], [3.0, 0.5, 0.75]])
    y = AdaIN(3)(x, mean, std)
    torch.testing.assert_close(y.mean(dim=(2, 3)), mean, atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(dim=(2, 3), unbiased=False), std, atol=1e-4, rtol=1e-4)
    # the spatial pattern is the content's: same normalised map whatever the style
    torch.testing.assert_close(instance_norm(y), instance_norm(x), atol=5e-3, rtol=0)  # eps: up to 1e-3
    # a 1x1 map (a tiny input at 1/8 resolution) is no error: it normalises to the style's mean
    torch.testing.assert_close(adain(torch.randn(1, 3, 1, 1), mean[:1], std[:1]), mean[:1, :, None, None])


def test_style_and_scene_codes_steer_the_output_statistics() -> None:
    """The same content with another style code (or another scene illumination) changes the fused image."""
    torch.manual_seed(0)
    net = create_net("ldfusion-s", **TINY_S).eval()
    for p in net.mlp.parameters():
        torch.nn.init.normal_(p, std=0.5)
    ir, vis, illum, glare = _inputs(1, 32, 32)
    with torch.no_grad():
        base = net(ir, vis, illum, glare)
        assert (net(ir, vis, torch.zeros_like(illum), glare) - base).abs().max() > 1e-3
        assert (net(ir, vis * 0.3, illum, glare) - base).abs().max() > 1e-3


def test_untrained_adain_starts_as_instance_norm() -> None:
    net = create_net("ldfusion-s", **TINY_S)
    params = net.style_params(*_inputs(1, 16, 16))
    c = net.blocks[0].num_params // 4
    torch.testing.assert_close(params[:, c:2 * c], torch.ones(1, c), atol=0.05, rtol=0)  # std chunk
    torch.testing.assert_close(params[:, :c], torch.zeros(1, c), atol=0.05, rtol=0)  # mean chunk


def test_fuser_needs_trained_weights_and_runs_them(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="clip-weights"):
        create_fuser("ldfusion")
    path = save_weights(tmp_path / "ldfusion-s.pt", create_net("ldfusion-s", **TINY_S), {"epochs": 0})
    fuser = create_fuser("ldfusion", weights=str(path))
    ir = torch.rand(1, 1, 30, 41)
    out = fuser.fuse(ir, torch.rand(1, 3, 30, 41), FusionContext.uniform(ir))
    assert out.shape == (1, 3, 30, 41) and "ldfusion-s" in fuser.describe()
    with pytest.raises(ModelError):
        create_fuser("amfusion", weights=str(path))  # another family's weights are refused
