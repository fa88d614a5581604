"""TSJNet: split attention, neighbourhood attention against a brute-force reference, DSM gating, shapes, loss,
joint-driven task hooks, training and ONNX parity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ivfusion_ros.errors import ConfigError, ModelError
from ivfusion_ros.fusion.learned import run_padded
from ivfusion_ros.fusion.nets import create_net, list_nets, net_info
from ivfusion_ros.fusion.nets.losses import create_loss, ssim
from ivfusion_ros.fusion.nets.tsjnet import (
    DetailSalience,
    NeighborhoodAttention,
    SpatialAttention,
    SplitAttention,
    neighborhood_attention,
    reconstruction_loss,
    ssim_grad_loss,
)
from ivfusion_ros.train import TrainConfig, train
from ivfusion_ros.train.data import Pair, PairSet

TINY = {"channels": (4, 8), "heads": 2, "kernel": 3, "att_groups": 2, "se_reduction": 2}


def _inputs(b: int = 1, h: int = 32, w: int = 48, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(b, 1, h, w, generator=g) for _ in range(4))


# --- registry -------------------------------------------------------------------------------------------------------


def test_registry_contract() -> None:
    assert {"tsjnet", "tsjnet-s"} <= set(list_nets("tsjnet*"))
    for name in ("tsjnet-s", "tsjnet"):
        net = create_net(name)
        assert net.variant == name and net.family == "tsjnet" and net_info(name).family == "tsjnet"
        json.dumps(net.config)
        again = create_net(name, **net.config)
        assert again.config == net.config and again.state_dict().keys() == net.state_dict().keys()
    assert create_net("tsjnet-s").multiple == 8 and create_net("tsjnet").multiple == 2


def test_bad_config_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="tsjnet-s"):
        create_net("tsjnet-s", kernel=4)  # neighbourhoods have a centre
    with pytest.raises(ConfigError, match="tsjnet-s"):
        create_net("tsjnet-s", scale=3)


def test_param_counts() -> None:
    n_s = sum(p.numel() for p in create_net("tsjnet-s").parameters())
    n_l = sum(p.numel() for p in create_net("tsjnet").parameters())
    assert 5_000 <= n_s <= 150_000
    assert n_l > 10 * n_s


# --- split attention ------------------------------------------------------------------------------------------------


def test_split_attention_shape_and_radix_softmax() -> None:
    torch.manual_seed(0)
    sa = SplitAttention(8, 6, radix=2)
    x = torch.randn(3, 8, 9, 11)
    assert sa(x).shape == (3, 6, 9, 11)
    a = sa.attention(x)
    assert a.shape == (3, 2, 6)
    torch.testing.assert_close(a.sum(1), torch.ones(3, 6))
    assert bool((a > 0).all())
    # the weights depend on the image (they are computed from its global squeeze), not fixed per channel
    assert not torch.allclose(a[0], sa.attention(5.0 * torch.randn(1, 8, 9, 11))[0])
    sa4 = SplitAttention(8, 4, radix=4)
    torch.testing.assert_close(sa4.attention(x).sum(1), torch.ones(3, 4))
    with pytest.raises(ValueError, match="radix"):
        SplitAttention(7, 4, radix=2)


# --- neighbourhood attention ----------------------------------------------------------------------------------------


def _reference_na(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, kernel: int,
                  bias: torch.Tensor) -> torch.Tensor:
    """Per-pixel loops: softmax over the neighbours inside the image, raster-order offsets index the bias."""
    b, c, h, w = q.shape
    d, r = c // heads, kernel // 2
    out = torch.zeros_like(q)
    for n in range(b):
        for hd in range(heads):
            sl = slice(hd * d, (hd + 1) * d)
            for y in range(h):
                for x in range(w):
                    logits, vals = [], []
                    for o, (dy, dx) in enumerate((a, bb) for a in range(-r, r + 1) for bb in range(-r, r + 1)):
                        yy, xx = y + dy, x + dx
                        if 0 <= yy < h and 0 <= xx < w:
                            logits.append(float(q[n, sl, y, x] @ k[n, sl, yy, xx]) / d**0.5 + float(bias[hd, o]))
                            vals.append(v[n, sl, yy, xx])
                    wts = torch.softmax(torch.tensor(logits, dtype=torch.float64), 0).to(q.dtype)
                    out[n, sl, y, x] = (wts[:, None] * torch.stack(vals)).sum(0)
    return out


@pytest.mark.parametrize(("h", "w", "kernel"), [(5, 6, 3), (4, 3, 5), (2, 2, 5)])
def test_neighborhood_attention_matches_brute_force(h: int, w: int, kernel: int) -> None:
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 4, h, w, generator=g) for _ in range(3))
    bias = torch.randn(2, kernel * kernel, generator=g)
    got = neighborhood_attention(q, k, v, heads=2, kernel=kernel, bias=bias)
    torch.testing.assert_close(got, _reference_na(q, k, v, 2, kernel, bias), rtol=1e-5, atol=1e-5)


def test_neighborhood_attention_respects_the_window() -> None:
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 4, 9, 9, generator=g) for _ in range(3))
    base = neighborhood_attention(q, k, v, 2, 3)
    k2, v2 = k.clone(), v.clone()
    k2[..., 0, 0] += 5.0  # pixel (0, 0): inside the 3x3 windows of (0..1, 0..1) only
    v2[..., 0, 0] += 5.0
    out = neighborhood_attention(q, k2, v2, 2, 3)
    changed = (out - base).abs().amax(1)[0] > 1e-6
    expected = torch.zeros(9, 9, dtype=torch.bool)
    expected[:2, :2] = True
    assert torch.equal(changed, expected)
    # a window as large as the image is plain global attention
    full = neighborhood_attention(q, k, v, 2, 17)
    qh, kh, vh = (t.reshape(1, 2, 2, 81) for t in (q, k, v))
    att = torch.softmax(qh.transpose(-1, -2) @ kh / 2**0.5, dim=-1)
    torch.testing.assert_close(full, (vh @ att.transpose(-1, -2)).reshape(1, 4, 9, 9), rtol=1e-5, atol=1e-5)


def test_neighborhood_attention_module_and_bias() -> None:
    torch.manual_seed(0)
    na = NeighborhoodAttention(8, 2, 3)
    x = torch.randn(1, 8, 6, 7)
    y0 = na(x)
    assert y0.shape == x.shape
    with torch.no_grad():
        na.rpb[:, 4] = 50.0  # offset (0, 0): each pixel attends to itself only
        v = na.qkv(x).chunk(3, dim=1)[2]
    torch.testing.assert_close(na(x), na.proj(v), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="odd"):
        NeighborhoodAttention(8, 2, 4)


# --- detail salience, spatial attention -----------------------------------------------------------------------------


@pytest.mark.parametrize("separable", [True, False])
def test_dsm_gate_range_and_shapes(separable: bool) -> None:
    torch.manual_seed(0)
    dsm = DetailSalience(8, reduction=2, separable=separable)
    for scale in (1e-3, 1.0, 1e3):
        p = scale * torch.randn(2, 8, 5, 5)
        gate = dsm.gate(p)
        assert gate.shape == (2, 8, 1, 1)
        assert bool(((gate >= 0) & (gate <= 1)).all())
    assert bool(((dsm.gate(torch.randn(2, 8, 5, 5)) > 0) & (dsm.gate(torch.randn(2, 8, 5, 5)) < 1)).all())
    for h, w in ((7, 9), (1, 1), (8, 6)):  # odd sizes: ceil-mode pooling, upsampled back to the input size
        assert dsm(torch.randn(1, 8, h, w)).shape == (1, 8, h, w)


def test_spatial_attention_gates_each_group() -> None:
    torch.manual_seed(0)
    spa = SpatialAttention(8, 4)
    x = torch.randn(2, 8, 5, 6)
    m = spa.maps(x)
    assert m.shape == (2, 4, 5, 6) and bool(((m > 0) & (m < 1)).all())
    torch.testing.assert_close(spa(x), x * m.repeat_interleave(2, dim=1))


# --- the network ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("h", "w"), [(37, 53), (8, 8), (65, 17), (5, 3)])
def test_odd_sizes_through_the_padding(h: int, w: int) -> None:
    for name, over in (("tsjnet-s", TINY), ("tsjnet", {**TINY, "enc_blocks": 1, "dec_blocks": 1, "nat_depth": 1})):
        net = create_net(name, **over).eval()
        with torch.no_grad():
            out = run_padded(net, net.multiple, *_inputs(2, h, w))
        assert out.shape == (2, 1, h, w)
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_training_forward_publishes_reconstruction() -> None:
    torch.manual_seed(0)
    net = create_net("tsjnet-s", **TINY).train()
    ir, vis, illum, glare = _inputs(2, 16, 24)
    fused = net(ir, vis, illum, glare)
    assert set(net.aux_losses) == {"reconstruction"} and net.tasks == ()
    ir_hat, vis_hat = net.reconstructions
    assert fused.shape == ir_hat.shape == vis_hat.shape == (2, 1, 16, 24)
    torch.testing.assert_close(net.aux_losses["reconstruction"], reconstruction_loss(ir, vis, ir_hat, vis_hat))
    # the eval forward gives the same fused image and publishes nothing
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(ir, vis, illum, glare), fused.detach())
    assert net.aux_losses == {} and net.reconstructions is None


class _TinyDetector(nn.Module):
    """Stands in for a detector: a conv 'objectness' map whose loss pulls a region towards 'object'."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, fused: torch.Tensor) -> torch.Tensor:
        target = torch.zeros_like(fused)
        target[..., 4:10, 4:10] = 1.0
        return nn.functional.binary_cross_entropy_with_logits(self.conv(fused), target)


def test_task_losses_reach_the_fusion_network() -> None:
    torch.manual_seed(0)
    det = _TinyDetector()
    seg_calls: list[tuple[int, ...]] = []

    def seg(fused: torch.Tensor) -> torch.Tensor:
        seg_calls.append(tuple(fused.shape))
        return (fused[..., :8, :] - 1.0).pow(2).mean()  # 'road' pixels should be bright

    net = create_net("tsjnet-s", **TINY, detector=det, segmenter=seg)
    assert net.tasks == ("detection", "segmentation")
    assert "detector" not in net.config and not any(k.startswith("_tasks") for k in net.state_dict())
    assert all(p is not q for p in net.parameters() for q in det.parameters())  # not the fusion net's parameters
    net.train()
    xs = _inputs(2, 16, 16)
    net(*xs)
    assert seg_calls == [(2, 1, 16, 16)] and {"detection", "segmentation"} <= set(net.aux_losses)
    net.aux_losses["detection"].backward()
    assert det.conv.weight.grad is not None
    grads = [p.grad for p in net.stem.parameters()]
    assert all(g is not None and float(g.abs().sum()) > 0 for g in grads)  # through the fused image
    # through the loss: a weight of 0 ignores the task, a positive weight adds it
    net.zero_grad()
    fused = net(*xs)
    on = create_loss("tsjnet", detection=1.0, segmentation=0.5)
    off = create_loss("tsjnet")
    total_on, parts = on(xs[0], xs[1], fused, xs[2], xs[3], net.aux_losses)
    total_off, parts_off = off(xs[0], xs[1], fused, xs[2], xs[3], net.aux_losses)
    assert "detection" in parts and "detection" not in parts_off
    want = float(total_off.detach()) + parts["detection"] + 0.5 * parts["segmentation"]
    assert float(total_on.detach()) == pytest.approx(want, rel=1e-5)
    # detaching and bad hooks
    net.attach_tasks(detection=None)
    assert net.tasks == ("segmentation",)
    with pytest.raises(TypeError, match="callable"):
        net.attach_tasks(detection=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown task"):
        net.attach_tasks(depth=seg)
    # eval (and ONNX export) never calls them
    seg_calls.clear()
    net.eval()
    with torch.no_grad():
        net(*xs)
    assert seg_calls == []


# --- loss -----------------------------------------------------------------------------------------------------------


def test_tsjnet_loss_terms() -> None:
    loss = create_loss("tsjnet")
    assert loss.weights["reconstruction"] > 0 and loss.weights["ssim_grad"] > 0
    ir, vis, illum, glare = _inputs(2, 24, 24)
    fused = 0.5 * (ir + vis)
    with pytest.raises(ModelError, match="reconstruction"):
        loss(ir, vis, fused, illum, glare, {})  # the network must publish it
    total, parts = loss(ir, vis, fused, illum, glare, {"reconstruction": torch.tensor(0.1)})
    assert parts["reconstruction"] == pytest.approx(0.1) and float(total) > 0
    # gradient-weighted SSIM: with a flat visible image the structure to keep is the thermal one
    flat = torch.full_like(vis, 0.3)
    assert float(ssim_grad_loss(ir, flat, fused)) == pytest.approx(1.0 - float(ssim(fused, ir)), abs=1e-5)
    same = ssim_grad_loss(ir, ir, ir)
    assert float(same) == pytest.approx(0.0, abs=1e-5)
    # reconstruction: visible weighs 6 : 1
    zero, one = torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4)
    assert float(reconstruction_loss(zero, zero, zero, one)) == pytest.approx(6 / 7)
    assert float(reconstruction_loss(zero, zero, one, zero)) == pytest.approx(1 / 7)


# --- training and export --------------------------------------------------------------------------------------------


def _pairs() -> PairSet:
    rng = np.random.default_rng(0)
    xx = np.mgrid[:48, :48][1]
    pairs = []
    for i in range(3):
        vis = np.clip(0.1 + 0.4 * (xx > 24) + rng.normal(0, 0.03, (48, 48)), 0, 1).astype(np.float32)
        ir = np.full((48, 48), 0.3, np.float32)
        ir[10:40, 8 + 4 * i:18 + 4 * i] = 0.85
        pairs.append(Pair(f"p{i}", ir, vis))
    return PairSet(pairs, [{"name": "synthetic", "pairs": 3}])


def test_training_reduces_the_loss_and_attaches_tasks(tmp_path: Path) -> None:
    calls = {"n": 0}

    def det(fused: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return fused.mean() * 0.0 + (fused[..., :4, :4] - 1.0).abs().mean()

    cfg = TrainConfig(variant="tsjnet-s", out=str(tmp_path), epochs=4, steps=4, batch=2, crop=32, lr=5e-3, seed=0,
                      val_pairs=0, net=dict(TINY), loss={"detection": 0.5}, device="cpu")
    res = train(cfg, data=_pairs(), setup_net=lambda net: net.attach_tasks(detection=det))
    losses = [r["loss"] for r in res.history]
    assert losses[-1] < losses[0]
    assert calls["n"] == 16 and all(r["detection"] > 0 and r["reconstruction"] > 0 for r in res.history)
    assert "detection" in (tmp_path / "metrics.csv").read_text().splitlines()[0]


def test_detail_skip_adds_the_gated_finest_detail_of_the_sources() -> None:
    from ivfusion_ros.fusion.nets.tsjnet import high_pass

    torch.manual_seed(0)
    net = create_net("tsjnet-s", **TINY, detail_skip=True)
    assert net.config["detail_skip"] is True and "detail_skip" not in create_net("tsjnet-s", **TINY).config
    assert net.decoder.head.out_channels == 2 * 4  # image and gate, each 2x2 pixel-shuffled
    nn.init.zeros_(net.decoder.head.weight)
    nn.init.zeros_(net.decoder.head.bias)  # logits 0: image 0.5, gate 0.5
    ir, vis, illum, glare = _inputs(2, 32, 48)
    with torch.no_grad():
        out = net.eval()(ir, vis, illum, glare)
    want = (0.5 + 0.5 * (high_pass(ir) + high_pass(vis))).clamp(0, 1)
    torch.testing.assert_close(out, want)
    net.train()(ir, vis, illum, glare)
    ir_hat, vis_hat = net.reconstructions
    torch.testing.assert_close(ir_hat, (0.5 + high_pass(ir)).clamp(0, 1))  # each source keeps its own detail
    torch.testing.assert_close(vis_hat, (0.5 + high_pass(vis)).clamp(0, 1))
    flat = torch.full((1, 1, 8, 8), 0.3)
    assert float(high_pass(flat).abs().max()) < 1e-6  # borders included: a flat image has no detail


@pytest.mark.parametrize("detail_skip", [False, True])
def test_onnx_export_parity(tmp_path: Path, detail_skip: bool) -> None:
    pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed")
    pytest.importorskip("onnx", reason="onnx is not installed")
    from ivfusion_ros.runtime.export import PARITY_TOL, export_onnx
    from ivfusion_ros.runtime.onnx_net import OnnxNetRunner

    torch.manual_seed(0)
    net = create_net("tsjnet-s", **TINY, detail_skip=detail_skip).eval()
    res = export_onnx(net, tmp_path / "t.onnx", exporter="torchscript", meta={"data": "unit test"})
    assert max(res.max_abs_diff.values()) <= PARITY_TOL
    runner = OnnxNetRunner(res.path)
    for b, h, w in ((1, 24, 40), (2, 48, 16)):  # sizes other than the export example: dynamic H and W
        xs = _inputs(b, h, w, seed=5)
        with torch.no_grad():
            want = net(*xs)
        torch.testing.assert_close(runner(*xs), want, rtol=0, atol=PARITY_TOL)


def test_tsjnet_fuser_runs_a_weights_file(tmp_path: Path) -> None:
    """The ``tsjnet`` variant loads a tsjnet weights file, pads odd frames and keeps the visible chroma."""
    from ivfusion_ros.fusion import FusionContext, create_fuser, fuser_info
    from ivfusion_ros.fusion.nets.weights import save_weights

    assert fuser_info("tsjnet").needs_weights
    torch.manual_seed(0)
    net = create_net("tsjnet-s", **TINY)
    path = save_weights(tmp_path / "tiny.pt", net, {"note": "test"})
    fuser = create_fuser("tsjnet", weights=str(path))
    assert fuser.multiple == 8 and "tsjnet-s" in fuser.describe()
    g = torch.Generator().manual_seed(3)
    ir, vis = torch.rand(1, 1, 37, 53, generator=g), torch.rand(1, 3, 37, 53, generator=g)
    out = fuser.fuse(ir, vis, FusionContext.uniform(ir, illumination=0.2))
    assert out.shape == (1, 3, 37, 53) and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    with pytest.raises(ModelError, match="amfusion"):  # a weights file of another family is refused
        create_fuser("amfusion", weights=str(path))


def test_shipped_weights_load_and_fuse_both_sources() -> None:
    """`tsjnet` without fusion.weights loads the package's tsjnet-s.pt, trained and documented."""
    from ivfusion_ros.fusion import FusionContext, create_fuser
    from ivfusion_ros.fusion.learned import default_weights

    path = default_weights("tsjnet")
    assert path.name == "tsjnet-s.pt" and path.with_suffix(".md").is_file()
    assert path.stat().st_size < 2_000_000
    fuser = create_fuser("tsjnet")
    assert fuser.weights == path and fuser.header.variant == "tsjnet-s"
    meta = fuser.header.meta
    assert meta["epochs"] >= 1 and meta["loss_weights"]["reconstruction"] > 0
    assert meta["command"].startswith("ivfusion train --variant tsjnet-s")
    # trained behaviour: the warm figure shows on a dark visible background, and a visible edge survives
    ir = torch.full((1, 1, 64, 64), 0.3)
    ir[..., 16:48, 8:24] = 0.9
    vis = torch.full((1, 3, 64, 64), 0.03)
    vis[..., 40:, :] = 0.6  # a bright band below row 40, absent from the thermal image
    out = fuser.fuse(ir, vis, FusionContext.uniform(ir, 0.3)).mean(1, keepdim=True)
    assert float(out[..., 18:38, 10:22].mean()) > float(out[..., 18:38, 30:60].mean()) + 0.2
    assert float(out[..., 44:60, 30:60].mean()) > float(out[..., 20:36, 30:60].mean()) + 0.1
