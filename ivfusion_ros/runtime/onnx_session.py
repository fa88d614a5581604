"""A thin, error-translating wrapper around :class:`onnxruntime.InferenceSession`.

Why a wrapper: ONNX Runtime raises its own pybind exception types (``InvalidProtobuf``, ``Fail``, ...) whose
messages do not always name the file, and it silently falls back to the CPU when the CUDA provider cannot
start. This class turns every load or run failure into a :class:`~ivfusion_ros.errors.ModelError` that
names the file, picks the providers from a plain ``device`` string, logs a warning when CUDA was asked for
but cannot be used, and exposes the few facts the detectors need (input name/shape/type, output names,
custom metadata).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from ivfusion_ros.errors import ConfigError, ModelError

__all__ = ["OnnxModel", "available_providers"]

_LOG = logging.getLogger(__name__)

_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"
# ONNX Runtime exception class names, and message fragments, that mean "these bytes are not a valid ONNX
# model". Both are needed: the class for one problem differs across ORT versions (an empty file gives
# InvalidArgument in 1.32 but Fail in 1.16), the messages are stabler.
_CORRUPT_ERRORS = frozenset({"InvalidProtobuf", "InvalidGraph", "NoModel"})
_CORRUPT_HINTS = ("protobuf", "no graph", "not have a graph", "invalid model")
_DEVICES = ("auto", "cpu", "cuda")


def available_providers() -> list[str]:
    """The execution providers this ONNX Runtime build offers (e.g. ``["CPUExecutionProvider"]``)."""
    return list(ort.get_available_providers())


def _is_corrupt(err: BaseException) -> bool:
    text = str(err).lower()
    return type(err).__name__ in _CORRUPT_ERRORS or any(h in text for h in _CORRUPT_HINTS)


def _short(err: BaseException) -> str:
    """First line of an ONNX Runtime message without the ``[ONNXRuntimeError] : 7 : ...`` prefix."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text.split(" : ")[-1].strip()


class OnnxModel:
    """One ONNX model loaded into an ONNX Runtime session, ready to run single-input inference.

    Args:
        path: the ``.onnx`` file.
        device: ``"cpu"``, ``"cuda"`` (CUDA provider first, CPU as the fallback for unsupported nodes; when
            this ONNX Runtime build has no CUDA provider, a warning is logged and the CPU is used) or
            ``"auto"`` (CUDA when available, else CPU, without a warning).
        threads: intra-op CPU threads; 0 keeps ONNX Runtime's default (one per physical core).
        single_input: require exactly one input (detectors); ``False`` for models with several named inputs
            (fusion networks), run with :meth:`run_feeds`.

    Raises:
        ModelError: the file is missing, is a directory, is corrupt / not an ONNX model, or ONNX Runtime
            cannot build a session for it.
        ConfigError: ``device`` is not one of auto, cpu, cuda, or ``threads`` is negative.
    """

    def __init__(self, path: str | Path, device: str = "cpu", threads: int = 0, single_input: bool = True) -> None:
        self.path = Path(path)
        if device not in _DEVICES:
            raise ConfigError(f"runtime.device: {device!r} is not one of {', '.join(_DEVICES)}")
        if threads < 0:
            raise ConfigError(f"runtime.threads: {threads} is below the minimum 0")
        if not self.path.exists():
            raise ModelError(f"model file not found: {self.path}")
        if self.path.is_dir():
            raise ModelError(f"model path is a directory, not an ONNX file: {self.path}")

        if self.path.stat().st_size == 0:
            raise ModelError(
                f"cannot load model {self.path}: the file is corrupt or not an ONNX model (it is empty)"
            )
        providers = self._pick_providers(device)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # errors only: ORT's own warnings would bypass the node's logging
        if threads > 0:
            opts.intra_op_num_threads = threads
        # ORT's worker threads spin after each run by default, which on a few cores starves the torch stages
        # that run next in the same process (fusion took twice as long beside a spinning YOLO session)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(str(self.path), sess_options=opts, providers=providers)
        except Exception as err:  # ORT's pybind exceptions derive from Exception only
            if _is_corrupt(err):
                raise ModelError(
                    f"cannot load model {self.path}: the file is corrupt or not an ONNX model ({_short(err)})"
                ) from None
            raise ModelError(
                f"cannot load model {self.path}: ONNX Runtime rejected it "
                f"({type(err).__name__}: {_short(err)})"
            ) from None

        if device == "cuda" and _CUDA in providers and _CUDA not in self._session.get_providers():
            _LOG.warning("CUDA provider failed to start for %s; running on the CPU", self.path)

        inp = self._session.get_inputs()
        self._inputs = inp
        if single_input and len(inp) != 1:
            raise ModelError(
                f"model {self.path} has {len(inp)} inputs ({', '.join(i.name for i in inp)}); "
                f"expected one image"
            )
        self._input = inp[0]  # the single input of detectors
        self._outputs = self._session.get_outputs()
        self._metadata: dict[str, str] = dict(self._session.get_modelmeta().custom_metadata_map)
        self._bound_outputs: dict[tuple, list[Any]] = {}  # torch output buffers of run_bound, per input signature

    @staticmethod
    def _pick_providers(device: str) -> list[str]:
        available = ort.get_available_providers()
        if device == "cpu":
            return [_CPU]
        if _CUDA in available:
            return [_CUDA, _CPU]
        if device == "cuda":
            _LOG.warning(
                "device 'cuda' requested but this onnxruntime build has no %s (available: %s); using the CPU",
                _CUDA, ", ".join(available),
            )
        return [_CPU]

    # --- facts about the model -------------------------------------------------------------------------

    @property
    def input_name(self) -> str:
        """Name of the single input tensor (``"images"`` for Ultralytics exports)."""
        return str(self._input.name)

    @property
    def input_names(self) -> list[str]:
        """Names of all inputs, in the model's order."""
        return [str(i.name) for i in self._inputs]

    @property
    def input_shape(self) -> tuple[int | None, ...]:
        """Input shape, ``None`` for dynamic (symbolic or unknown) dimensions, e.g. ``(1, 3, None, None)``."""
        return tuple(d if isinstance(d, int) and d > 0 else None for d in self._input.shape)

    @property
    def input_type(self) -> str:
        """ONNX element type of the input, e.g. ``"tensor(float)"`` or ``"tensor(float16)"``."""
        return str(self._input.type)

    @property
    def output_names(self) -> list[str]:
        """Names of the outputs, in the order :meth:`run` returns them."""
        return [str(o.name) for o in self._outputs]

    @property
    def output_shapes(self) -> list[tuple[int | None, ...]]:
        """Declared output shapes, ``None`` for dynamic dimensions."""
        return [tuple(d if isinstance(d, int) and d > 0 else None for d in o.shape) for o in self._outputs]

    @property
    def metadata(self) -> dict[str, str]:
        """The model's custom metadata map (Ultralytics stores ``names``, ``imgsz``, ``stride`` ... here)."""
        return dict(self._metadata)

    @property
    def providers(self) -> list[str]:
        """Providers the session actually uses, in priority order."""
        return list(self._session.get_providers())

    @property
    def on_gpu(self) -> bool:
        """Whether the session runs on ONNX Runtime's CUDA provider."""
        return _CUDA in self._session.get_providers()

    # --- inference ---------------------------------------------------------------------------------------

    def run(self, inputs: np.ndarray) -> list[np.ndarray]:
        """Run the model on one input tensor (e.g. ``[1, 3, H, W]`` float32) and return all outputs.

        Raises:
            ModelError: ONNX Runtime failed (wrong shape or dtype for this model, out of memory, ...).
        """
        try:
            outs: list[Any] = self._session.run(None, {self._input.name: inputs})
        except Exception as err:
            raise ModelError(
                f"inference with {self.path} failed on input {tuple(inputs.shape)} {inputs.dtype}: "
                f"{_short(err)}"
            ) from None
        return [np.asarray(o) for o in outs]

    def run_feeds(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run a model with several named inputs; errors as in :meth:`run`."""
        try:
            outs: list[Any] = self._session.run(None, feeds)
        except Exception as err:
            shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in feeds.items())
            raise ModelError(f"inference with {self.path} failed on inputs {shapes}: {_short(err)}") from None
        return [np.asarray(o) for o in outs]

    def run_bound(self, feeds: dict[str, Any], device: Any) -> list[Any]:
        """Run on CUDA torch tensors without host copies (I/O binding); returns torch tensors on ``device``.

        The outputs are buffers this model keeps per input-shape signature and overwrites on the next call with that
        signature. The first call of a signature runs once with ONNX Runtime allocating the outputs to learn their
        shapes, then binds torch buffers of those shapes.

        Raises:
            ModelError: ONNX Runtime failed (as in :meth:`run`).
        """
        import torch

        index = device.index or 0
        xs = {k: v.detach().float().contiguous() for k, v in feeds.items()}
        key = tuple((k, tuple(v.shape)) for k, v in xs.items())
        torch.cuda.current_stream(device).synchronize()  # ORT reads the inputs on its own stream
        try:
            io = self._session.io_binding()
            for name, x in xs.items():
                io.bind_input(name, "cuda", index, np.float32, tuple(x.shape), x.data_ptr())
            outs = self._bound_outputs.get(key)
            if outs is None:
                for name in self.output_names:
                    io.bind_output(name, "cuda", index)
                self._session.run_with_iobinding(io)
                shapes = [tuple(v.shape()) for v in io.get_outputs()]
                outs = [torch.empty(s, dtype=torch.float32, device=device) for s in shapes]
                self._bound_outputs[key] = outs
                io = self._session.io_binding()
                for name, x in xs.items():
                    io.bind_input(name, "cuda", index, np.float32, tuple(x.shape), x.data_ptr())
            for name, out in zip(self.output_names, outs):
                io.bind_output(name, "cuda", index, np.float32, tuple(out.shape), out.data_ptr())
            self._session.run_with_iobinding(io)
        except Exception as err:
            shapes_text = ", ".join(f"{k} {tuple(v.shape)}" for k, v in xs.items())
            raise ModelError(f"inference with {self.path} failed on inputs {shapes_text}: {_short(err)}") from None
        return outs

    def __repr__(self) -> str:
        return f"OnnxModel({str(self.path)!r}, providers={self.providers})"
