"""One interface for running a network, whatever runs it: torch, ONNX Runtime or TensorRT.

The fusion variants and the YOLO detector hand torch tensors on the pipeline's device to a :class:`Backend` and
get torch tensors back on the same device, so a frame stays on the GPU from upload to the detections whichever
runtime executes the network. Which backend runs a model is a per-model setting (``fusion.backend``,
``detector.backend``); the numerics knobs (precision, CUDA graphs, channels-last, ``torch.compile``) come from the
``runtime`` section and are resolved once by :class:`BackendOptions`.

Outputs may be views of buffers the backend reuses (CUDA graphs and TensorRT write into static buffers): a
caller must consume or copy them before the next call, which the pipeline does by construction (one frame at a
time per pipeline).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ivfusion_ros.config import RuntimeConfig
from ivfusion_ros.errors import ConfigError, ModelError
from ivfusion_ros.runtime.graphs import CapturedGraph
from ivfusion_ros.runtime.tensorrt_backend import default_cache_dir

__all__ = ["BACKENDS", "Backend", "BackendOptions", "OrtBackend", "TorchBackend", "describe_failure"]

_LOG = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "tensorrt")
_TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class BackendOptions:
    """The ``runtime`` settings a backend needs, resolved for one device.

    ``precision: auto`` means fp16 on CUDA (the tensor cores' native format, half the memory traffic) and fp32 on
    the CPU (CPU fp16 convolutions are slower than fp32 in torch). CUDA graphs and channels-last apply on CUDA only.
    """

    device: torch.device
    precision: str = "fp32"
    cuda_graphs: bool = False
    channels_last: bool = False
    compile: bool = False
    engine_cache: Path | None = None
    calibration_dir: Path | None = None
    threads: int = 0

    @classmethod
    def from_config(cls, cfg: RuntimeConfig, device: torch.device) -> BackendOptions:
        cuda = device.type == "cuda"
        precision = cfg.precision if cfg.precision != "auto" else ("fp16" if cuda else "fp32")
        if precision == "fp16" and not cuda:
            raise ConfigError("runtime.precision=fp16 needs a CUDA device (torch runs fp16 convolutions slowly or not "
                              "at all on the CPU); use auto, fp32 or bf16")
        return cls(device=device, precision=precision, cuda_graphs=cfg.cuda_graphs and cuda,
                   channels_last=cfg.channels_last and cuda, compile=cfg.compile,
                   engine_cache=Path(cfg.engine_cache).expanduser() if cfg.engine_cache else None,
                   calibration_dir=Path(cfg.calibration_dir).expanduser() if cfg.calibration_dir else None,
                   threads=cfg.threads)

    @property
    def cache_dir(self) -> Path:
        return self.engine_cache or default_cache_dir()


def describe_failure(err: BaseException, model: str, shapes: Sequence[Sequence[int]], backend: str) -> ModelError:
    """A :class:`ModelError` that names what failed where: model, input shapes and backend (OOM called out)."""
    where = f"on input {', '.join('x'.join(str(d) for d in s) for s in shapes)}" if shapes else "while loading"
    if isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower():
        why = "the GPU ran out of memory (free memory, use a smaller input or fp16)"
    else:
        why = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
    return ModelError(f"{model}: backend {backend} failed {where}: {why}")


class Backend(ABC):
    """A loaded network: ``backend(*inputs) -> outputs``, torch tensors on :attr:`device` in and out.

    Inputs come in the order of :attr:`input_names`; outputs are float32 (half precision stays inside the backend)
    in the order of :attr:`output_names` and may be views of buffers the next call overwrites.
    """

    name: str = ""
    device: torch.device
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()

    @abstractmethod
    def __call__(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        """Run the network on one set of inputs."""

    @abstractmethod
    def describe(self) -> str:
        """One line for logs and ``ivfusion bench``: backend, precision, model."""


def _as_list(out: object) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for t in out if isinstance(t, torch.Tensor)]
    if isinstance(out, dict):
        return [t for t in out.values() if isinstance(t, torch.Tensor)]
    raise ModelError(f"the network returned {type(out).__name__}, not tensors")


class TorchBackend(Backend):
    """A torch module on the pipeline's device, in the configured precision and memory layout.

    On CUDA with ``cuda_graphs`` each new input-shape signature is captured once into a CUDA graph (after a
    warm-up) and replayed afterwards: a small network is hundreds of kernel launches whose CPU cost would otherwise
    exceed its GPU time. A camera stream has one size, so one graph serves the whole run. The cast to the
    network's precision and back to float32 is inside the graph.

    Args:
        module: the network (``eval()`` and moved here); its ``forward`` takes the inputs positionally.
        options: device and numerics.
        label: the model's name in messages (file name).
        input_names, output_names: names for :meth:`describe` and the bench.
    """

    name = "torch"

    def __init__(self, module: nn.Module, options: BackendOptions, label: str = "",
                 input_names: Sequence[str] = (), output_names: Sequence[str] = ()) -> None:
        self.device = options.device
        self.options = options
        self.label = label or type(module).__name__
        self.input_names, self.output_names = tuple(input_names), tuple(output_names)
        if options.precision not in _TORCH_DTYPES:
            raise ConfigError(f"runtime.precision={options.precision} is not available with the torch backend "
                              f"(int8 needs tensorrt); use one of {', '.join(_TORCH_DTYPES)}")
        self.dtype = _TORCH_DTYPES[options.precision]
        self._memory_format = torch.channels_last if options.channels_last else torch.contiguous_format
        try:
            module = module.to(self.device).eval()
            if self.dtype != torch.float32:
                module = module.to(self.dtype)
            if options.channels_last:
                module = module.to(memory_format=torch.channels_last)
        except Exception as err:  # OOM or an unsupported module: name the model
            raise describe_failure(err, self.label, [], self.name) from None
        self.module = module
        self._forward: Callable[..., object] = module
        if options.compile:
            self._forward = torch.compile(module)
        self._graphs: dict[tuple, CapturedGraph] = {}

    def _run(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        xs = [x.to(self.dtype, memory_format=self._memory_format) if x.dim() == 4 else x.to(self.dtype)
              for x in inputs]
        return [o.float() if o.is_floating_point() else o for o in _as_list(self._forward(*xs))]

    def __call__(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        try:
            with torch.inference_mode():
                if not self.options.cuda_graphs:
                    return self._run(*inputs)
                key = tuple((tuple(x.shape), x.dtype) for x in inputs)
                graph = self._graphs.get(key)
                if graph is None:
                    _LOG.info("%s: capturing a CUDA graph for input %s", self.label,
                              ", ".join("x".join(map(str, k[0])) for k in key))
                    graph = self._graphs[key] = CapturedGraph(self._run, inputs, warmup=3)
                return list(graph(inputs))
        except ModelError:
            raise
        except Exception as err:  # name the model, its input and the backend
            raise describe_failure(err, self.label, [tuple(x.shape) for x in inputs], self.name) from None

    def describe(self) -> str:
        extras = [self.options.precision]
        if self.options.cuda_graphs:
            extras.append("cuda-graphs")
        if self.options.channels_last:
            extras.append("channels-last")
        if self.options.compile:
            extras.append("compiled")
        return f"torch {' '.join(extras)} {self.label} on {self.device}"


class OrtBackend(Backend):
    """An ONNX model in ONNX Runtime, with torch tensors in and out.

    On the CPU the tensors are shared with numpy without copies. On CUDA, with an ONNX Runtime build that has the
    CUDA execution provider (onnxruntime-gpu), inputs and outputs are bound to device memory through I/O binding so
    the frame never visits the host; a CPU-only ONNX Runtime on a CUDA pipeline works through the host, with a
    warning at load. (TensorRT is its own backend, :mod:`ivfusion_ros.runtime.tensorrt_backend`.)

    Args:
        path: the ``.onnx`` file.
        options: device and thread count (ONNX Runtime runs the graph in the precision it was exported in).
    """

    name = "onnxruntime"

    def __init__(self, path: str | Path, options: BackendOptions) -> None:
        from ivfusion_ros.runtime.onnx_session import OnnxModel

        self.device = options.device
        self.path = Path(path)
        cuda = self.device.type == "cuda"
        self.model = OnnxModel(self.path, device="cuda" if cuda else "cpu", threads=options.threads,
                               single_input=False)
        self.input_names = tuple(self.model.input_names)
        self.output_names = tuple(self.model.output_names)
        self._bound = cuda and self.model.on_gpu
        if cuda and not self._bound:
            _LOG.warning("%s: this ONNX Runtime has no CUDA provider; the network runs on the CPU and the frame goes "
                         "through the host (install onnxruntime-gpu, or use backend torch or tensorrt)", self.path)

    def __call__(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        if self._bound:
            return self.model.run_bound(dict(zip(self.input_names, inputs)), self.device)
        feeds = {n: np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
                 for n, x in zip(self.input_names, inputs)}
        return [torch.from_numpy(o).to(self.device) for o in self.model.run_feeds(feeds)]

    def describe(self) -> str:
        provider = self.model.providers[0].replace("ExecutionProvider", "") if self.model.providers else "?"
        return f"onnxruntime {provider} {self.path.name}"
