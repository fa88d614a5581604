"""Run an exported fusion network with ONNX Runtime behind the same call as the torch network.

``OnnxNetRunner(path)(ir, vis, illum, glare) -> fused`` takes and returns torch tensors ``(B, 1, H, W)`` so
:class:`~ivfusion_ros.fusion.learned.LearnedFuser` runs a ``.pt`` and a ``.onnx`` file the same way; height
and width must be multiples of :attr:`OnnxNetRunner.multiple` (the fuser pads). It is the ONNX Runtime backend
(:class:`~ivfusion_ros.runtime.backend.OrtBackend`: zero-copy on the CPU, I/O binding on CUDA) plus the checks that
the file is a fusion network exported by ``ivfusion export``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ivfusion_ros.errors import ModelError
from ivfusion_ros.fusion.nets.weights import WeightsFile, read_onnx_header
from ivfusion_ros.runtime.backend import BackendOptions, OrtBackend
from ivfusion_ros.runtime.device import resolve_device
from ivfusion_ros.runtime.export import INPUT_NAMES

__all__ = ["OnnxNetRunner"]


class OnnxNetRunner(OrtBackend):
    """An exported fusion network in an ONNX Runtime session, checked to be one.

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
        self.header: WeightsFile = read_onnx_header(Path(path), families=families)
        dev = resolve_device(device)
        super().__init__(path, BackendOptions(device=dev, threads=threads))
        names = list(self.input_names)
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

    def __call__(self, ir: torch.Tensor, vis: torch.Tensor, illum: torch.Tensor,  # type: ignore[override]
                 glare: torch.Tensor) -> torch.Tensor:
        """The fused image ``(B, 1, H, W)``; H and W must be multiples of :attr:`multiple`."""
        h, w = ir.shape[-2:]
        if h % self.multiple or w % self.multiple:
            raise ModelError(f"{self.path}: input {h}x{w} is not a multiple of {self.multiple} (pad it first)")
        by_name = dict(zip(INPUT_NAMES, (ir, vis, illum, glare)))
        return super().__call__(*(by_name[n] for n in self.input_names))[0]

    def __repr__(self) -> str:
        return f"OnnxNetRunner({str(self.path)!r}, {self.variant}, providers={self.model.providers})"
