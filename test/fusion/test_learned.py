"""The `amfusion` fuser: weights files, padding to the network's multiple, wrong/missing/corrupt weights."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ivfusion_ros.config import PipelineConfig, update_config
from ivfusion_ros.core.color import restore_chroma
from ivfusion_ros.errors import ModelError
from ivfusion_ros.fusion import FusionContext, create_fuser, fuser_info
from ivfusion_ros.fusion.learned import pad_to_multiple, run_padded
from ivfusion_ros.fusion.nets import create_net, list_nets, register_net
from ivfusion_ros.fusion.nets.weights import save_weights
from ivfusion_ros.pipeline import Pipeline

TINY = {"channels": [4, 8, 8], "semantic_blocks": 1, "heads": 2, "kv_pool": 2, "idfm_hidden": 4}


class _OtherNet(nn.Module):
    multiple = 1

    def forward(self, ir: torch.Tensor, vis: torch.Tensor, illum: torch.Tensor, glare: torch.Tensor) -> torch.Tensor:
        return ir


if "other-family-net" not in list_nets():

    @register_net("otherfamily", "A network of another fusion variant (test only).")
    def other_family_net(**overrides: object) -> nn.Module:
        net = _OtherNet()
        net.variant, net.family, net.config = "other-family-net", "otherfamily", {}
        return net


@pytest.fixture
def tiny_weights(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    net = create_net("amfusion-s", **TINY)
    nn.init.normal_(net.head.weight, std=0.05)  # not the identity-like untrained net
    return save_weights(tmp_path / "tiny.pt", net, {"note": "test"})


def test_registered_as_learned_variant() -> None:
    assert fuser_info("amfusion").needs_weights


@pytest.mark.parametrize(("h", "w"), [(37, 53), (5, 3), (16, 24)])
def test_fuses_odd_sizes_by_padding_and_cropping(tiny_weights: Path, h: int, w: int) -> None:
    fuser = create_fuser("amfusion", weights=str(tiny_weights))
    assert fuser.multiple == 8 and fuser.guidance == "self-guided"
    assert "amfusion-s" in fuser.describe()
    g = torch.Generator().manual_seed(3)
    ir, vis = torch.rand(1, 1, h, w, generator=g), torch.rand(1, 3, h, w, generator=g)
    ctx = FusionContext.uniform(ir, illumination=0.2)
    out = fuser.fuse(ir, vis, ctx)
    assert out.shape == (1, 3, h, w)
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    # the same as running the network on the reflect-padded frame and cropping
    y = 0.299 * vis[:, 0:1] + 0.587 * vis[:, 1:2] + 0.114 * vis[:, 2:3]
    illum, glare = ctx.maps_at((h, w))
    with torch.no_grad():
        ref = run_padded(fuser.net, 8, ir, y, illum, glare)
    torch.testing.assert_close(out, restore_chroma(vis, y, ref, 1.0 - fuser.cfg.glare_suppression * glare),
                               atol=1e-5, rtol=0)


def test_pad_to_multiple_reflects() -> None:
    x = torch.arange(9.0).view(1, 1, 3, 3)
    p = pad_to_multiple(x, 4)
    assert p.shape == (1, 1, 4, 4)
    assert p[0, 0, 0].tolist() == [0.0, 1.0, 2.0, 1.0]  # reflected, not zero
    assert p[0, 0, :, 0].tolist() == [0.0, 3.0, 6.0, 3.0]
    tiny = pad_to_multiple(x[..., :2, :], 4)  # a pad as large as the image: replicate
    assert tiny[0, 0, :, 0].tolist() == [0.0, 3.0, 3.0, 3.0]
    assert pad_to_multiple(x, 1) is x


def test_missing_corrupt_and_wrong_family(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        create_fuser("amfusion", weights=str(tmp_path / "nope.pt"))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelError, match="corrupt"):
        create_fuser("amfusion", weights=str(bad))
    other = save_weights(tmp_path / "other.pt", create_net("other-family-net"))
    with pytest.raises(ModelError, match=r"other-family-net.*expected one of: amfusion"):
        create_fuser("amfusion", weights=str(other))


def test_pipeline_runs_the_learned_variant(tiny_weights: Path) -> None:
    cfg = update_config(PipelineConfig(), **{"fusion.variant": "amfusion", "fusion.weights": str(tiny_weights),
                                             "detector.type": "none", "runtime.device": "cpu"})
    pipe = Pipeline(cfg)
    thermal = np.full((45, 61), 120, np.uint8)
    rgb = np.full((45, 61, 3), 30, np.uint8)
    res = pipe.process(thermal, rgb)
    assert res.fused.shape == (45, 61, 3) and res.variant == "amfusion"


@pytest.mark.skipif(importlib.util.find_spec("ivfusion_ros.runtime.onnx_net") is None,
                    reason="the ONNX runner (ivfusion_ros.runtime.onnx_net) is not in this branch")
def test_onnx_weights_go_through_the_runner(tiny_weights: Path, tmp_path: Path) -> None:  # pragma: no cover
    """A .onnx file with the weights header (as `ivfusion export` writes it) runs like the .pt file."""
    import json

    import onnx

    from ivfusion_ros.fusion.nets.weights import build_from_weights, load_weights

    wf = load_weights(tiny_weights)
    net = build_from_weights(wf).eval()
    x = torch.rand(1, 1, 16, 24)
    names = ["ir", "vis", "illum", "glare"]
    path = tmp_path / "tiny.onnx"
    torch.onnx.export(net, (x, x, x, x), str(path), input_names=names, output_names=["fused"], opset_version=17,
                      dynamic_axes={k: {2: "h", 3: "w"} for k in [*names, "fused"]}, dynamo=False)
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = "ivfusion", json.dumps(wf.header())
    onnx.save(model, str(path))
    fuser = create_fuser("amfusion", weights=str(path))
    ref = create_fuser("amfusion", weights=str(tiny_weights))
    ir, vis = torch.rand(1, 1, 37, 53), torch.rand(1, 3, 37, 53)
    ctx = FusionContext.uniform(ir, 0.3)
    torch.testing.assert_close(fuser.fuse(ir, vis, ctx), ref.fuse(ir, vis, ctx), atol=1e-4, rtol=0)


def test_shipped_weights_load_and_carry_their_record() -> None:
    """`amfusion` without fusion.weights loads the package's amfusion-s.pt, trained and documented."""
    from ivfusion_ros.fusion.learned import default_weights

    path = default_weights("amfusion")
    assert path.name == "amfusion-s.pt" and path.with_suffix(".md").is_file()
    assert path.stat().st_size < 5_000_000
    fuser = create_fuser("amfusion")
    assert fuser.weights == path and fuser.header.variant == "amfusion-s"
    meta = fuser.header.meta
    assert meta["epochs"] >= 1 and meta["loss_weights"] and meta["command"].startswith("ivfusion train")
    # trained behaviour: a dark visible region takes the warm thermal target, a lit one keeps visible structure
    ir = torch.full((1, 1, 64, 64), 0.3)
    ir[..., 16:48, 8:24] = 0.9
    vis = torch.full((1, 3, 64, 64), 0.03)
    vis[..., 32:] = 0.6
    ctx = FusionContext.uniform(ir, 0.5)
    ctx.illumination = torch.where(torch.arange(8).view(1, 1, 1, 8) < 4, 0.03, 0.6).expand(1, 1, 8, 8)
    out = fuser.fuse(ir, vis, ctx)
    y = out.mean(1, keepdim=True)
    assert float(y[..., 16:48, 8:24].mean()) > 0.5  # warm figure visible in the dark
    assert float(y[..., 16:48, 8:24].mean()) > float(y[..., 16:48, 26:30].mean()) + 0.2


def test_variant_without_shipped_weights_says_how_to_get_them() -> None:
    from ivfusion_ros.fusion.learned import register_learned
    from ivfusion_ros.fusion.registry import list_fusers

    if "unshipped-test" not in [f.name for f in list_fusers()]:
        register_learned("unshipped-test", "A learned variant without shipped weights (test only).", "unshipped-s",
                         shipped=False)
    assert fuser_info("unshipped-test").needs_weights
    with pytest.raises(ModelError, match="ships no trained weights: train them with `ivfusion train --variant "
                                         "unshipped-s"):
        create_fuser("unshipped-test")
