"""Export a fusion network to ONNX with its weights header, and check that ONNX Runtime computes the same.

The exported graph has the network's four inputs ``ir``, ``vis``, ``illum``, ``glare`` and one output
``fused``, all ``(B, 1, H, W)`` float32 in [0, 1], with dynamic batch, height and width. Height and width must
be multiples of the network's ``multiple`` (the runtime pads); the header, stored as JSON in the model's
metadata under ``ivfusion`` (see :mod:`ivfusion_ros.fusion.nets.weights`), records the network, its config and
hash, ``multiple`` and the training record of the weights it was exported from, so
:class:`~ivfusion_ros.runtime.onnx_net.OnnxNetRunner` and the ``amfusion`` variant can check what they load.

Two exporters: ``dynamo`` (``torch.export``, the one PyTorch develops; about 20 s for amfusion-s on two CPU
cores) and ``torchscript`` (the legacy tracer, deprecated by PyTorch but under a second). Both give the same
graph semantics; the parity check below runs either way.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ivfusion_ros.errors import ConfigError, ModelError
from ivfusion_ros.fusion.nets.weights import FORMAT, FORMAT_VERSION, config_hash

__all__ = ["EXPORTERS", "INPUT_NAMES", "OUTPUT_NAME", "ExportResult", "export_onnx", "onnx_header", "parity"]

_LOG = logging.getLogger(__name__)

INPUT_NAMES = ("ir", "vis", "illum", "glare")
OUTPUT_NAME = "fused"
EXPORTERS = ("dynamo", "torchscript")
#: ONNX opset of exported networks (>= 17: LayerNormalization; 18 is what the dynamo exporter targets).
DEFAULT_OPSET = 18
#: Largest |torch - ONNX Runtime| accepted by the parity check, on [0, 1] images.
PARITY_TOL = 1e-4


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote and measured."""

    path: Path
    header: dict[str, Any]
    max_abs_diff: dict[str, float]  # "BxHxW" -> max |torch - ORT| (empty without a check)


def onnx_header(net: nn.Module, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The weights header of ``net`` (as in a ``.pt`` file, without the state dict) plus ``multiple``."""
    config = dict(net.config)
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "variant": net.variant, "family": net.family,
            "config": config, "config_hash": config_hash(net.variant, config),
            "meta": {**dict(meta or {}), "multiple": int(net.multiple)}}


def _example_inputs(net: nn.Module, batch: int, h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(batch, 1, h, w, generator=g) for _ in INPUT_NAMES)


def _export_graph(net: nn.Module, path: Path, opset: int, exporter: str) -> None:
    m = int(net.multiple)
    # batch 2 and a non-square size: torch.export specialises dimensions whose example value is 1
    args = _example_inputs(net, 2, 4 * m, 5 * m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' deprecation and tracer chatter, not the user's business
        if exporter == "dynamo":
            from torch.export import Dim

            batch, hm, wm = Dim("batch", min=1, max=256), Dim("h_blocks", min=1, max=1024), Dim("w_blocks", min=1,
                                                                                                   max=1024)
            shapes = {n: {0: batch, 2: m * hm, 3: m * wm} for n in INPUT_NAMES}
            torch.onnx.export(net, args, str(path), input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
                              opset_version=opset, dynamo=True, dynamic_shapes=shapes, external_data=False,
                              verbose=False)
        else:
            axes = {n: {0: "batch", 2: "height", 3: "width"} for n in (*INPUT_NAMES, OUTPUT_NAME)}
            torch.onnx.export(net, args, str(path), input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
                              opset_version=opset, dynamo=False, dynamic_axes=axes)


def _write_header(path: Path, header: dict[str, Any]) -> None:
    import onnx

    model = onnx.load(str(path))
    for old in [p for p in model.metadata_props if p.key == "ivfusion"]:
        model.metadata_props.remove(old)
    entry = model.metadata_props.add()
    entry.key, entry.value = "ivfusion", json.dumps(header, sort_keys=True)
    model.producer_name = "ivfusion_ros"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def parity(net: nn.Module, path: Path, sizes: tuple[tuple[int, int, int], ...]) -> dict[str, float]:
    """Max |torch - ONNX Runtime| of ``net`` and the model at ``path`` for each ``(batch, H, W)`` in ``sizes``."""
    from ivfusion_ros.runtime.onnx_net import OnnxNetRunner

    runner = OnnxNetRunner(path)
    out: dict[str, float] = {}
    for i, (b, h, w) in enumerate(sizes):
        xs = _example_inputs(net, b, h, w, seed=1 + i)
        with torch.inference_mode():
            ref = net(*xs)
        got = runner(*xs)
        out[f"{b}x{h}x{w}"] = float((got - ref).abs().max())
    return out


def export_onnx(net: nn.Module, path: str | Path, *, meta: dict[str, Any] | None = None,
                opset: int = DEFAULT_OPSET, exporter: str = "dynamo", check: bool = True,
                sizes: tuple[tuple[int, int, int], ...] | None = None) -> ExportResult:
    """Export ``net`` (a registered fusion network) to ``path`` with its header; optionally check parity.

    Args:
        net: a network from :func:`~ivfusion_ros.fusion.nets.registry.create_net` (weights loaded).
        path: the ``.onnx`` file to write (one file: weights are embedded, not external data).
        meta: the training record to carry (from the ``.pt`` file), e.g. data, epochs, metrics.
        opset: ONNX opset, at least 17.
        exporter: ``"dynamo"`` or ``"torchscript"``.
        check: run torch and ONNX Runtime on random inputs of ``sizes`` (default: two sizes other than the
            export example, one with batch 2) and raise when they differ by more than ``PARITY_TOL``.

    Raises:
        ConfigError: bad opset or exporter. ModelError: the export failed or parity does not hold.
    """
    if opset < 17:
        raise ConfigError(f"--opset {opset}: fusion networks need opset 17 or newer")
    if exporter not in EXPORTERS:
        raise ConfigError(f"--exporter {exporter!r} is not one of {', '.join(EXPORTERS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = net.eval()
    header = onnx_header(net, meta)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "graph.onnx"
        try:
            _export_graph(net, raw, opset, exporter)
        except Exception as err:  # the exporters raise many types; all mean "this network did not export"
            raise ModelError(f"exporting {net.variant} to ONNX ({exporter}, opset {opset}) failed: "
                             f"{type(err).__name__}: {str(err)[:300]}") from err
        _write_header(raw, header)
        path.write_bytes(raw.read_bytes())
    diffs: dict[str, float] = {}
    if check:
        m = int(net.multiple)
        diffs = parity(net, path, sizes or ((1, 3 * m, 7 * m), (2, 9 * m, 6 * m)))
        worst = max(diffs.values())
        if not np.isfinite(worst) or worst > PARITY_TOL:
            raise ModelError(f"{path}: ONNX Runtime differs from torch by {worst:.2e} (> {PARITY_TOL:.0e}) "
                             f"at {diffs}")
        _LOG.info("exported %s to %s; parity %s", net.variant, path, diffs)
    return ExportResult(path, header, diffs)
