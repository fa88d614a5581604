"""AMFusion network: registry contract, shapes, IDFM's illumination prior, DSFM guidance, sizes."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from ivfusion_ros.errors import ConfigError
from ivfusion_ros.fusion.nets import create_net, list_nets, net_info
from ivfusion_ros.fusion.nets.amfusion import DSFM, IDFM

TINY = {"channels": (4, 8, 8), "semantic_blocks": 1, "heads": 2, "kv_pool": 2, "idfm_hidden": 4}


def _inputs(b: int = 1, h: int = 32, w: int = 48, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(b, 1, h, w, generator=g) for _ in range(4))


def test_registry_contract() -> None:
    assert {"amfusion", "amfusion-s"} <= set(list_nets("amfusion*"))
    for name in ("amfusion-s", "amfusion"):
        net = create_net(name)
        assert net.variant == name and net.family == "amfusion" and net_info(name).family == "amfusion"
        json.dumps(net.config)  # serialisable
        again = create_net(name, **net.config)
        assert again.config == net.config
        assert again.state_dict().keys() == net.state_dict().keys()
        assert net.multiple == 8


def test_bad_override_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="amfusion-s"):
        create_net("amfusion-s", widht=3)


def test_param_counts() -> None:
    """The real-time size stays small enough for CPU inference; the paper size is much wider."""
    n_s = sum(p.numel() for p in create_net("amfusion-s").parameters())
    n_l = sum(p.numel() for p in create_net("amfusion").parameters())
    assert 30_000 <= n_s <= 100_000
    assert n_l > 20 * n_s


@pytest.mark.parametrize(("h", "w"), [(32, 48), (8, 8), (64, 16)])
def test_forward_shapes_and_range(h: int, w: int) -> None:
    net = create_net("amfusion-s", **TINY).eval()
    with torch.no_grad():
        out = net(*_inputs(2, h, w))
    assert out.shape == (2, 1, h, w)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_untrained_net_is_the_idfm_mix() -> None:
    """The head starts at zero, so training starts from the illumination-guided mix, not from noise."""
    net = create_net("amfusion-s", **TINY).eval()
    ir, vis = torch.ones(1, 1, 16, 16), torch.zeros(1, 1, 16, 16)
    dark, lit = torch.zeros(1, 1, 16, 16), torch.ones(1, 1, 16, 16)
    no_glare = torch.zeros(1, 1, 16, 16)
    with torch.no_grad():
        out_dark = net(ir, vis, dark, no_glare)  # = w_ir where ir=1 and vis=0
        out_lit = net(ir, vis, lit, no_glare)
    assert float(out_dark.mean()) > 0.6 > 0.4 > float(out_lit.mean())


def test_idfm_moves_towards_ir_in_the_dark_and_in_glare() -> None:
    torch.manual_seed(0)
    idfm = IDFM(hidden=4)
    f_ir, f_vis = torch.rand(1, 4, 8, 8), torch.rand(1, 4, 8, 8)
    illum = torch.full((1, 1, 8, 8), 0.8)
    illum[..., :4] = 0.02  # left half dark
    glare = torch.zeros(1, 1, 8, 8)
    w_lit = idfm.attention(f_ir, f_vis, illum.new_full(illum.shape, 0.8), glare)
    w = idfm.attention(f_ir, f_vis, illum, glare)
    assert bool((w[..., :4] > w_lit[..., :4]).all())  # same features, darker -> more thermal
    torch.testing.assert_close(w[..., 4:], w_lit[..., 4:])
    glare_map = torch.zeros(1, 1, 8, 8)
    glare_map[..., 4:] = 1.0
    w_glare = idfm.attention(f_ir, f_vis, illum.new_full(illum.shape, 0.8), glare_map)
    assert bool((w_glare[..., 4:] > w_lit[..., 4:] + 0.2).all())  # glare gives way to thermal
    fused, w2 = idfm(f_ir, f_vis, illum, glare)
    torch.testing.assert_close(fused, w2 * f_ir + (1 - w2) * f_vis)


class _TinyGuide(nn.Module):
    """Stands in for a detector backbone: 3-channel image -> 6 channels at 1/8 resolution."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, stride=8, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


def test_dsfm_guided_vs_self_guided() -> None:
    torch.manual_seed(0)
    guide = _TinyGuide()
    net = create_net("amfusion-s", **TINY, guide=guide, guide_channels=6)
    plain = create_net("amfusion-s", **TINY)
    assert net.guidance == "detector-guided" and plain.guidance == "self-guided"
    assert not any(p.requires_grad for p in guide.parameters())  # the detector is frozen
    ir, vis, illum, glare = _inputs(1, 32, 32)
    out = net(ir, vis, illum, glare)
    out.mean().backward()
    assert out.shape == (1, 1, 32, 32)
    assert net.dsfm.kv.weight.grad is not None and net.dsfm.kv.weight.shape[1] == 6
    assert guide.conv.weight.grad is None
    net.train()
    assert not guide.training  # train() keeps the frozen backbone in eval mode

    # the detector features change the semantic fusion; self-guidance ignores them
    s_ir, s_vis = torch.rand(1, 8, 4, 4), torch.rand(1, 8, 4, 4)
    dsfm = DSFM(8, 2, 2, guide_channels=6)
    a = dsfm(s_ir, s_vis, torch.rand(1, 6, 4, 4))
    b = dsfm(s_ir, s_vis, torch.rand(1, 6, 4, 4))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="no detector features"):
        dsfm(s_ir, s_vis)
    with pytest.raises(ConfigError):
        create_net("amfusion-s", **TINY, guide=guide)  # guide without guide_channels


def test_gradients_reach_every_trainable_parameter() -> None:
    net = create_net("amfusion-s", **TINY)
    nn.init.normal_(net.head.weight, std=0.1)  # the zero-initialised head would block the decoder's gradients
    out = net(*_inputs(1, 16, 16))
    (out - 0.5).pow(2).mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
