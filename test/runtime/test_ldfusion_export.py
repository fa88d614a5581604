"""LDFusion exports to ONNX with dynamic size (all four inputs kept) and matches torch in ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ivfusion_ros.fusion import FusionContext, create_fuser
from ivfusion_ros.fusion.nets import create_net
from ivfusion_ros.runtime.export import PARITY_TOL, export_onnx
from ivfusion_ros.runtime.onnx_net import OnnxNetRunner

TINY = {"ldfusion-s": {"dim": 4, "style_channels": 4, "decoder_dim": 8, "mlp_hidden": 8},
        "ldfusion": {"dim": 2, "downsample": 2, "content_blocks": 1, "style_channels": 4, "decoder_blocks": 1,
                     "mlp_hidden": 8}}


@pytest.mark.parametrize("name", ["ldfusion-s", "ldfusion"])
def test_export_parity_and_fuser(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = create_net(name, **TINY[name]).eval()
    for p in net.mlp.parameters():  # non-trivial AdaIN parameters
        torch.nn.init.normal_(p, std=0.3)
    res = export_onnx(net, tmp_path / f"{name}.onnx", exporter="torchscript", meta={"trained": False})
    assert max(res.max_abs_diff.values()) <= PARITY_TOL
    runner = OnnxNetRunner(res.path)
    g = torch.Generator().manual_seed(5)
    xs = [torch.rand(2, 1, 24, 40, generator=g) for _ in range(4)]  # another size than the export's
    with torch.inference_mode():
        ref = net(*xs)
    assert float((runner(*xs) - ref).abs().max()) <= PARITY_TOL
    fuser = create_fuser("ldfusion", weights=str(res.path))
    ir = torch.rand(1, 1, 30, 41)
    assert fuser.fuse(ir, torch.rand(1, 3, 30, 41), FusionContext.uniform(ir)).shape == (1, 3, 30, 41)
    assert fuser.backend == "onnxruntime"
