"""``ivfusion export``: a fusion network's weights file -> ONNX, with the parity check."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from ivfusion_ros.errors import ConfigError, ModelError
from ivfusion_ros.fusion.nets.registry import create_net, list_nets
from ivfusion_ros.fusion.nets.weights import build_from_weights, load_weights
from ivfusion_ros.runtime.export import ExportResult, export_onnx

__all__ = ["run_export"]


def run_export(variant: str, out: Path, *, weights: Path | None, fmt: str = "onnx", opset: int = 18,
               exporter: str = "dynamo", check: bool = True, console: Console | None = None) -> ExportResult:
    """Build ``variant`` from ``weights`` (random weights when ``None``, flagged untrained) and export it."""
    console = console or Console(stderr=True)
    if fmt != "onnx":
        raise ConfigError(f"--format {fmt!r}: only onnx is supported (TensorRT engines are built from the ONNX file)")
    if variant not in list_nets():
        raise ConfigError(f"--variant {variant!r}: unknown network (available: {', '.join(list_nets())})")
    if weights is not None:
        wf = load_weights(weights)
        if wf.variant != variant:
            raise ModelError(f"{weights}: weights are for {wf.variant!r}, not {variant!r}")
        net, meta = build_from_weights(wf), {**wf.meta, "source_weights": Path(weights).name}
    else:
        console.print(f"[yellow]warning:[/] no --weights: exporting {variant} with random weights "
                      "(for benchmarks and tests only; metadata says trained=false)")
        net, meta = create_net(variant), {"trained": False}
    result = export_onnx(net, out, meta=meta, opset=opset, exporter=exporter, check=check)
    parity = ", ".join(f"{k}: {v:.1e}" for k, v in result.max_abs_diff.items()) or "not checked"
    console.print(f"wrote {result.path} ({variant}, opset {opset}, {exporter}); max |torch - ORT| {parity}")
    return result
