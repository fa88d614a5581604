"""AMFusion network: registry contract, shapes, IDFM's illumination prior, DSFM guidance by the package's
detector (its backbone, saved with the weights, exported), sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from train.tiny_detector import random_detector

from ivfusion_ros.errors import ConfigError
from ivfusion_ros.fusion.nets import create_net, list_nets, net_info
from ivfusion_ros.fusion.nets.amfusion import DSFM, GUIDES, IDFM, DetectorGuide
from ivfusion_ros.fusion.nets.weights import build_from_weights, load_weights, save_weights

pytestmark = pytest.mark.usefixtures("one_thread")

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


def test_detector_guide_is_the_detectors_stride8_backbone() -> None:
    """The guide computes exactly the detector's stride-8 feature, on the detector's own input convention."""
    det = random_detector()
    guide = DetectorGuide(det)
    x = torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        want = det.backbone(x.flip(1) * 255.0)[0]
        got = guide(x)
    assert got.shape == (2, GUIDES["yolox-nano"], 4, 6)
    torch.testing.assert_close(got, want)
    assert not any(p.requires_grad for p in guide.parameters())
    guide.train()
    assert not guide.training  # a fixed feature extractor, whatever its parent does
    with torch.no_grad():  # a copy: changing the detector afterwards (bilevel fine-tuning) leaves the guide alone
        det.backbone.dark3[1].conv3.conv.weight.mul_(2.0)
    torch.testing.assert_close(guide(x), got)


def test_dsfm_attends_to_the_detector() -> None:
    det = random_detector()
    net = create_net("amfusion-s", **TINY, guide=det)
    plain = create_net("amfusion-s", **TINY)
    assert net.guidance == "detector-guided" and plain.guidance == "self-guided"
    assert net.config["guide"] == "yolox-nano" and net.config["guide_channels"] == 64
    assert net.config["guide_scale"] == 2  # amfusion-s: the guide sees half-resolution sources (cost)
    assert "guide" not in plain.config and "guide_scale" not in plain.config and plain.config["guide_channels"] == 0
    assert net.dsfm.kv.weight.shape[1] == 64
    nn.init.normal_(net.head.weight, std=0.1)  # the zero-initialised head would hide DSFM from the output
    ir, vis, illum, glare = _inputs(1, 32, 32)

    # the gradient trains DSFM's attention over the detector features, never the detector
    out = net(ir, vis, illum, glare)
    out.mean().backward()
    assert net.dsfm.kv.weight.grad is not None and float(net.dsfm.kv.weight.grad.abs().sum()) > 0
    assert all(p.grad is None and not p.requires_grad for p in net.det_guide.parameters())

    # the keys/values are the detector's features of both sources: other detector weights, other fusion
    with torch.no_grad():
        before = net(ir, vis, illum, glare)
        feats = net.guide_features(ir, vis)
        half = F.avg_pool2d(torch.cat((ir, vis)), 2)
        both = det.backbone(half.expand(-1, 3, -1, -1).flip(1) * 255.0)[0]
        torch.testing.assert_close(feats, 0.5 * (both[:1] + both[1:]))
        full = create_net("amfusion-s", **TINY, guide=det, guide_scale=1)
        both = det.backbone(torch.cat((ir, vis)).expand(-1, 3, -1, -1).flip(1) * 255.0)[0]
        torch.testing.assert_close(full.guide_features(ir, vis), 0.5 * (both[:1] + both[1:]))
        net.det_guide.dark3[0].pconv.conv.weight.mul_(-1.0)
        after = net(ir, vis, illum, glare)
    assert float((after - before).abs().max()) > 1e-6  # deterministic: any change is the guide's

    # DSFM itself: other guide features, other output; a guided DSFM without features is a bug
    s_ir, s_vis = torch.rand(1, 8, 4, 4), torch.rand(1, 8, 4, 4)
    dsfm = DSFM(8, 2, 2, guide_channels=6)
    a = dsfm(s_ir, s_vis, torch.rand(1, 6, 4, 4))
    b = dsfm(s_ir, s_vis, torch.rand(1, 6, 4, 4))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="no detector features"):
        dsfm(s_ir, s_vis)


@pytest.mark.parametrize("bad", [{"guide": "resnet"}, {"guide": nn.Conv2d(3, 6, 3)},
                                 {"guide": "yolox-nano", "guide_channels": 6}, {"guide_channels": 64}])
def test_bad_guides_are_config_errors(bad: dict) -> None:
    with pytest.raises(ConfigError, match="amfusion-s"):
        create_net("amfusion-s", **TINY, **bad)


def test_guided_weights_carry_the_backbone(tmp_path: Path) -> None:
    """The weights file rebuilds the guided network without the detector file: same output."""
    net = create_net("amfusion-s", **TINY, guide=random_detector()).eval()
    nn.init.normal_(net.head.weight, std=0.1)
    wf = load_weights(save_weights(tmp_path / "g.pt", net))
    assert any(k.startswith("det_guide.") for k in wf.state_dict)
    again = build_from_weights(wf).eval()
    x = _inputs(1, 24, 40)
    with torch.no_grad():
        torch.testing.assert_close(again(*x), net(*x))
    assert again.guidance == "detector-guided"


def test_guided_onnx_export_parity(tmp_path: Path) -> None:
    """Guidance does not cost the export: the backbone is plain convolutions (torchscript exporter: fast)."""
    pytest.importorskip("onnx", reason="ONNX export needs the onnx package")
    pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed")
    from ivfusion_ros.runtime.export import PARITY_TOL, export_onnx

    net = create_net("amfusion-s", **TINY, guide=random_detector()).eval()
    nn.init.normal_(net.head.weight, std=0.1)
    res = export_onnx(net, tmp_path / "g.onnx", exporter="torchscript")
    assert max(res.max_abs_diff.values()) < PARITY_TOL
    assert res.header["config"]["guide"] == "yolox-nano"


def test_gradients_reach_every_trainable_parameter() -> None:
    net = create_net("amfusion-s", **TINY)
    nn.init.normal_(net.head.weight, std=0.1)  # the zero-initialised head would block the decoder's gradients
    out = net(*_inputs(1, 16, 16))
    (out - 0.5).pow(2).mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
