"""Learned fusion variants: a network from :mod:`ivfusion_ros.fusion.nets` behind the :class:`Fuser` interface.

The fuser loads a weights file (``fusion.weights``, or the weights shipped in ``ivfusion_ros/fusion/weights/``),
checks that it was made for this variant (an ``amfusion`` fuser refuses weights of another family, with the
names of the networks it would accept), pads the frame to the network's ``multiple`` and crops the result,
and runs without autograd on the pipeline's device through one of the backends of
:mod:`ivfusion_ros.runtime.backend` (``fusion.backend``: torch, onnxruntime or tensorrt).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from ivfusion_ros.config import FusionConfig, RuntimeConfig
from ivfusion_ros.errors import ModelError
from ivfusion_ros.fusion.base import FusionContext, LuminanceFuser
from ivfusion_ros.fusion.nets.registry import create_net
from ivfusion_ros.fusion.nets.weights import WeightsFile, build_from_weights, load_weights, read_onnx_header
from ivfusion_ros.fusion.registry import register_fuser
from ivfusion_ros.runtime.backend import Backend, BackendOptions, OrtBackend, TorchBackend
from ivfusion_ros.runtime.export import INPUT_NAMES, OUTPUT_NAME
from ivfusion_ros.runtime.onnx_net import OnnxNetRunner

__all__ = ["WEIGHTS_DIR", "LearnedFuser", "default_weights", "pad_to_multiple", "register_learned", "run_padded"]

#: Where the package keeps its shipped weights (package data).
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: The network whose shipped weights a variant uses when ``fusion.weights`` is empty.
DEFAULT_NETS: dict[str, str] = {}
#: Variants whose default network's weights are part of the package.
SHIPPED: set[str] = set()
#: What ``ivfusion train`` needs beyond ``--variant`` for a variant that ships no weights (shown in its error).
TRAIN_HINTS: dict[str, str] = {}

NetFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def default_weights(variant: str) -> Path:
    """The shipped weights file of ``variant`` (it may be missing in a source checkout without weights)."""
    return WEIGHTS_DIR / f"{DEFAULT_NETS.get(variant, variant)}.pt"


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad ``(B, C, H, W)`` at the bottom and right to multiples of ``multiple``.

    Reflect padding continues the image's texture, so the network sees no artificial edge at the border (zero
    padding would make a strong one that leaks into the fused border); tiny images whose pad would exceed the
    image fall back to replicate padding.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def run_padded(net: NetFn, multiple: int, ir: torch.Tensor, vis: torch.Tensor, illum: torch.Tensor,
               glare: torch.Tensor) -> torch.Tensor:
    """``net(ir, vis, illum, glare)`` on inputs padded to ``multiple``, cropped back to the input size."""
    h, w = ir.shape[-2:]
    out = net(*(pad_to_multiple(t, multiple) for t in (ir, vis, illum, glare)))
    return out[..., :h, :w]


def exported_onnx(weights: Path, header: WeightsFile, cache_dir: Path) -> Path:
    """The ONNX export of a ``.pt`` weights file, made once into ``cache_dir`` (keyed by the file's bytes).

    ``backend: onnxruntime`` or ``tensorrt`` with ``.pt`` weights (the shipped ones, say) need an ONNX graph; the
    fast torchscript exporter writes it in about a second, and the parity check of ``ivfusion export`` is skipped
    here because the backends are compared with torch in the tests and the bench.
    """
    from ivfusion_ros.runtime.export import export_onnx

    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    path = cache_dir / f"{weights.stem}-{digest}.onnx"
    if not path.is_file():
        net = build_from_weights(header).eval()
        tmp = path.with_suffix(f".{os.getpid()}.tmp.onnx")
        export_onnx(net, tmp, meta=header.meta, exporter="torchscript", check=False)
        tmp.replace(path)  # atomic: a concurrent node sees the whole file or none
    return path


class _PerShape:
    """Static-shape backends (TensorRT engines) built on first sight of each padded frame size."""

    def __init__(self, make: Callable[[dict[str, tuple[int, ...]]], Backend]) -> None:
        self._make = make
        self._by_shape: dict[tuple[int, ...], Backend] = {}

    def __call__(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        key = tuple(inputs[0].shape)
        backend = self._by_shape.get(key)
        if backend is None:
            backend = self._by_shape[key] = self._make({n: tuple(x.shape) for n, x in zip(INPUT_NAMES, inputs)})
        return backend(*inputs)

    def describe(self) -> str:
        return next(iter(self._by_shape.values())).describe() if self._by_shape else "tensorrt (no engine yet)"


class LearnedFuser(LuminanceFuser):
    """Runs a fusion network whose weights file belongs to this variant (``family == name``).

    The network runs on ``fusion.backend``: torch (``.pt`` weights; precision, CUDA graphs, channels-last from the
    ``runtime`` section), onnxruntime (an ``.onnx`` file, or the ONNX export of the ``.pt`` weights made once into
    ``runtime.engine_cache``) or tensorrt (an engine built from that ONNX for each frame size and cached). An
    ``.onnx`` weights file with ``backend: torch`` runs on ONNX Runtime: there is no torch network to run.

    Attributes:
        weights: the weights file in use.
        header: its metadata (variant, config, training record).
        multiple: frame sizes are padded to multiples of this.
        guidance: ``"detector-guided"`` when DSFM attends to a detector's features (``--guide-detector``), else
            ``"self-guided"``.
        backend: the backend's name.
    """

    graph_safe = False  # the backend captures its own graph (torch) or runs an engine (TensorRT, ONNX Runtime)

    def __init__(self, cfg: FusionConfig, device: torch.device, runtime: RuntimeConfig | None = None) -> None:
        super().__init__(cfg, device, runtime)
        self.weights = Path(cfg.weights).expanduser() if cfg.weights else default_weights(self.name)
        if not cfg.weights and not self.weights.is_file():
            if self.name not in SHIPPED:
                raise ModelError(f"variant {self.name!r} ships no trained weights: train them with `ivfusion train "
                                 f"--variant {DEFAULT_NETS.get(self.name, self.name)} "
                                 f"{TRAIN_HINTS.get(self.name, '...')}` and pass fusion.weights=FILE")
            raise ModelError(f"variant {self.name!r}: the shipped weights {self.weights} are missing (broken "
                             "installation?); pass fusion.weights=FILE")
        options = BackendOptions.from_config(self.runtime, device)
        if self.weights.suffix.lower() == ".onnx":
            self.header: WeightsFile = read_onnx_header(self.weights, families=(self.name,))
            onnx_path = self.weights
            self.multiple = int(create_net(self.header.variant, **self.header.config).multiple)
            self.guidance = "detector-guided" if self.header.config.get("guide") else "self-guided"
            backend = cfg.backend if cfg.backend != "torch" else "onnxruntime"
        else:
            self.header = load_weights(self.weights, families=(self.name,))
            net = build_from_weights(self.header).eval()
            self.multiple, self.guidance, backend = int(net.multiple), net.guidance, cfg.backend
            if backend == "torch":
                self.runner: Backend | _PerShape | OnnxNetRunner = TorchBackend(net, options, label=self.weights.name,
                                                                input_names=INPUT_NAMES, output_names=(OUTPUT_NAME,))
            else:
                onnx_path = exported_onnx(self.weights, self.header, options.cache_dir)
        if backend == "onnxruntime" and onnx_path == self.weights:  # the user's export: check it is one
            self.runner = OnnxNetRunner(onnx_path, device=str(device), threads=options.threads,
                                        families=(self.name,))
        elif backend == "onnxruntime":
            self.runner = OrtBackend(onnx_path, options)
        elif backend == "tensorrt":
            from ivfusion_ros.runtime.tensorrt_backend import TensorRTBackend

            self.runner = _PerShape(lambda shapes: TensorRTBackend(
                onnx_path, device=device, precision=options.precision, input_shapes=shapes,
                cache_dir=options.cache_dir, calibration_dir=options.calibration_dir))
        self.backend = backend
        self.net: NetFn = self._fused

    def _fused(self, *xs: torch.Tensor) -> torch.Tensor:
        out = self.runner(*xs)  # backends return a list; the checked ONNX runner returns the fused tensor
        return out if isinstance(out, torch.Tensor) else out[0]

    def describe(self) -> str:
        return f"{self.name}({self.header.variant}, {self.weights.name}, {self.runner.describe()}, {self.guidance})"

    def warmup(self, height: int, width: int) -> None:
        """Run one frame of ``height x width`` now, so that engine builds, graph captures and out-of-memory errors
        happen at start, not on the first camera frame."""
        x = torch.rand(1, 1, height, width, device=self.device)
        self.fuse_luma(x, x, FusionContext.uniform(x))

    def fuse(self, ir: torch.Tensor, vis: torch.Tensor, ctx: FusionContext) -> torch.Tensor:
        with torch.inference_mode():
            return super().fuse(ir, vis, ctx)

    def fuse_luma(self, ir: torch.Tensor, vis_y: torch.Tensor, ctx: FusionContext) -> torch.Tensor:
        illum, glare = ctx.maps_at(tuple(vis_y.shape[-2:]))
        return run_padded(self.net, self.multiple, ir, vis_y, illum, glare)

def register_learned(family: str, description: str, default_net: str, shipped: bool,
                     train_hint: str = "") -> type[LearnedFuser]:
    """Register fusion variant ``family``: a :class:`LearnedFuser` for networks of that family.

    Args:
        family: variant name, equal to the networks' ``family``.
        description: one line for ``ivfusion variants``.
        default_net: the network whose weights ``fusion.weights: ''`` means (``WEIGHTS_DIR/<net>.pt``).
        shipped: whether the package ships those weights (else an empty ``fusion.weights`` is a clear error).
        train_hint: the ``ivfusion train`` options that error should show after ``--variant`` (default ``...``).
    """
    cls = type(f"{family.title().replace('-', '')}Fuser", (LearnedFuser,), {"__doc__": description})
    DEFAULT_NETS[family] = default_net
    if shipped:
        SHIPPED.add(family)
    if train_hint:
        TRAIN_HINTS[family] = train_hint
    return register_fuser(family, description, needs_weights=True)(cls)


register_learned("amfusion", "AMFusion network: illumination-guided detail fusion and detection-guided semantic "
                             "fusion (learned; shipped weights: amfusion-s).", "amfusion-s", shipped=True)
register_learned("ldfusion", "LDFusion network: content encoders, style codes and an AdaIN decoder, trained with a "
                             "language-driven loss in CLIP space (learned; no shipped weights: train with your CLIP "
                             "weights).", "ldfusion-s", shipped=False,
                 train_hint="--data DIRS --out DIR --clip-weights YOUR_CLIP_WEIGHTS (pip install open_clip_torch)")
register_learned("tsjnet", "TSJNet network: split-attention encoder, LSM (neighbourhood attention + detail salience), "
                           "spatial-attention decoder (learned; shipped weights: tsjnet-s).", "tsjnet-s", shipped=True)
register_learned("t2p", "Text-to-Pixels network: prompt embeddings (cached in the weights) steer the fusion gates and "
                        "attention, codebook on the semantic features (learned; shipped weights: t2p-s).", "t2p-s",
                 shipped=True)
