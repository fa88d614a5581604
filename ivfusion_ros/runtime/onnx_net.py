"""Run an exported fusion network with ONNX Runtime behind the same call as the torch network.

``OnnxNetRunner(path)(ir, vis, illum, glare) -> fused`` takes and returns torch tensors ``(B, 1, H, W)`` so
:class:`~ivfusion_ros.fusion.learned.LearnedFuser` runs a ``.pt`` and a ``.onnx`` file the same way; height
and width must be multiples of :attr:`OnnxNetRunner.multiple` (the fuser pads). On the CPU the tensors are
shared with numpy without copies; on CUDA they go through the host (ONNX Runtime's I/O binding would avoid
that and is left for the GPU runtime work).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ivfusion_ros.errors import ModelError
from ivfusion_ros.fusion.nets.weights import WeightsFile, read_onnx_header
from ivfusion_ros.runtime.export import INPUT_NAMES
from ivfusion_ros.runtime.onnx_session import OnnxModel

__all__ = ["OnnxNetRunner"]


class OnnxNetRunner:
    """An exported fusion network in an ONNX Runtime session.

    Args:
        path: ``.onnx`` file written by ``ivfusion export``.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (providers as for the detectors).
        threads: intra-op CPU threads (0: ONNX Runtime's default).
        families: accepted fusion variants (``None``: any).

    Raises:
        ModelError: missing or corrupt file, no ivfusion header, a network of another variant, or a graph whose
            inputs are not ``ir, vis, illum, glare``.
    """

    def __init__(self, path: str | Path, device: str = "cpu", threads: int = 0,
                 families: tuple[str, ...] | None = None) -> None:
        self.path = Path(path)
        self.header: WeightsFile = read_onnx_header(self.path, families=families)
        self.model = OnnxModel(self.path, device=device, threads=threads, single_input=False)
        names = self.model.input_names
        if sorted(names) != sorted(INPUT_NAMES):
            raise ModelError(f"{self.path}: inputs {names}, expected {list(INPUT_NAMES)} (not a fusion network "
                             "exported by ivfusion export)")
        self.variant = self.header.variant
        self.family = self.header.family
        multiple = self.header.meta.get("multiple")
        if multiple is None:  # a header written by hand or by an older export: the architecture knows
            from ivfusion_ros.fusion.nets.registry import create_net

            multiple = create_net(self.variant, **self.header.config).multiple
        self.multiple = int(multiple)

    def __call__(self, ir: torch.Tensor, vis: torch.Tensor, illum: torch.Tensor, glare: torch.Tensor) -> torch.Tensor:
        h, w = ir.shape[-2:]
        if h % self.multiple or w % self.multiple:
            raise ModelError(f"{self.path}: input {h}x{w} is not a multiple of {self.multiple} (pad it first)")
        feeds = {name: np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy())
                 for name, t in zip(INPUT_NAMES, (ir, vis, illum, glare))}
        out = self.model.run_feeds(feeds)[0]
        return torch.from_numpy(out).to(ir.device)

    def __repr__(self) -> str:
        return f"OnnxNetRunner({str(self.path)!r}, {self.variant}, providers={self.model.providers})"
