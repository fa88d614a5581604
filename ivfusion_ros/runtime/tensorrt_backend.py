"""A TensorRT backend: builds an engine from an ONNX model once per GPU, caches it, runs it on torch CUDA tensors.

Why TensorRT: on a Jetson or a desktop GPU a TensorRT engine of a fusion network or a YOLO detector runs several
times faster than the same ONNX graph in ONNX Runtime or the eager torch module. Why this much code around it:

* Building an engine takes seconds to minutes and an engine only runs on the GPU model, compute capability and
  TensorRT version it was built with. So engines are cached on disk under a key made of everything that changes
  the engine (:func:`engine_cache_key`), written atomically (a crash during the slow build leaves no half file),
  and a cached engine that no longer deserializes (a driver or TensorRT upgrade, a corrupt file) is deleted and
  rebuilt instead of failing the robot's start.
* TensorRT reports most failures as a ``None`` return and a line in its own logger. Every failure here becomes a
  :class:`~ivfusion_ros.errors.ModelError` or :class:`~ivfusion_ros.errors.ConfigError` whose message names the
  model file, the input shape(s), the precision and TensorRT, with TensorRT's own error lines appended.
* No pycuda / cuda-python: torch CUDA tensors are the I/O buffers (``tensor.data_ptr()``) and the engine runs on
  torch's current stream, so it orders with the torch pre- and post-processing around it without a sync.

TensorRT itself is an optional user install (``pip install tensorrt-cu12`` or JetPack): this module imports it
lazily, inside the constructor, and the settings checks that need no TensorRT run before that import.
The API used is TensorRT 10's (``create_network(0)``, named I/O tensors, ``execute_async_v3``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ivfusion_ros.errors import ConfigError, ModelError

__all__ = [
    "CALIBRATION_SUFFIXES",
    "PRECISIONS",
    "EngineCache",
    "TensorRTBackend",
    "calibration_fingerprint",
    "default_cache_dir",
    "engine_cache_key",
    "file_sha256",
    "load_calibration_images",
    "resolve_input_shapes",
]

_LOG = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
#: Image files the int8 calibrator reads (OpenCV decodes all of them; 16-bit PNG/TIFF thermal frames included).
CALIBRATION_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_INSTALL_HINT = (
    "TensorRT is not installed (pip install tensorrt-cu12, or JetPack on a Jetson); "
    "use backend onnxruntime or torch instead"
)
# Fragments of TensorRT / CUDA messages that mean the GPU ran out of memory.
_OOM_HINTS = ("out of memory", "outofmemory", "cudaerrormemoryallocation", "memory allocation", "allocation failed",
              "insufficient memory", "failed to allocate")

# TensorRT wants I/O addresses 256-byte aligned; torch's allocator gives that, a view at an offset may not.
_ALIGNMENT = 256

Shapes = dict[str, tuple[int, ...]]


# --- cache key and engine cache (pure: no TensorRT, no GPU) ----------------------------------------------------------


def engine_cache_key(onnx_sha256: str, input_shapes: Mapping[str, Sequence[int]], precision: str, gpu_name: str,
                     compute_capability: tuple[int, int], trt_version: str, calibration: str = "") -> str:
    """The sha256 hex of a canonical JSON of everything that makes one engine differ from another.

    An engine is only valid for the exact model bytes, input shapes, precision, GPU model and compute capability,
    and TensorRT version it was built with, so each of them is part of the key and a change of any gives another
    key, hence a rebuild rather than a crash or silently wrong results. ``calibration`` (int8 only) is the
    fingerprint of the calibration images (:func:`calibration_fingerprint`): new images give a new int8 engine.
    It is left out of the JSON when empty so fp32/fp16 keys depend only on the six documented fields.
    The JSON is sorted and compact, so dict order and tuple-vs-list make no difference.
    """
    fields: dict[str, Any] = {
        "onnx_sha256": onnx_sha256.lower(),
        "input_shapes": {str(k): [int(d) for d in v] for k, v in input_shapes.items()},
        "precision": precision,
        "gpu_name": gpu_name,
        "compute_capability": [int(c) for c in compute_capability],
        "trt_version": trt_version,
    }
    if calibration:
        fields["calibration"] = calibration
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/ivfusion/engines``, else ``~/.cache/ivfusion/engines``.

    The XDG base directory spec says a relative (or empty) ``$XDG_CACHE_HOME`` is invalid and must be ignored.
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "ivfusion" / "engines"


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks (YOLO models are tens of MB)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _atomic_write(path: Path, data: bytes | bytearray | memoryview) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync it and ``os.replace`` it over ``path``.

    ``os.replace`` is atomic on one file system, so a reader (or the next start after a crash or a power cut during
    a minutes-long build) sees either the old file, the complete new one, or none, never half an engine.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)  # os.replace: atomic within one file system
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class EngineCache:
    """Engines on disk, one file per cache key, each with a JSON sidecar that records how it was made.

    Layout: ``<cache_dir>/<model stem>-<key[:16]>.engine`` plus ``.json`` (every key field, the full key, the model
    path, the build time) and, for int8, ``.calib`` (TensorRT's calibration cache). The model stem keeps the folder
    readable; the full key in the sidecar guards against a clash of the 16-character prefix. An engine without its
    sidecar (a crash between the two writes) counts as missing and is rebuilt. The model hash covers the ``.onnx``
    file only: a model whose weights live in a separate external-data file must be re-exported (or the engine
    deleted) when only those weights change.
    """

    def __init__(self, cache_dir: str | Path | None = None) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()

    def path_for(self, model_path: str | Path, key: str) -> Path:
        """Where the engine of ``model_path`` under ``key`` lives (whether or not it exists)."""
        return self.cache_dir / f"{Path(model_path).stem}-{key[:16]}.engine"

    @staticmethod
    def sidecar_for(engine_path: Path) -> Path:
        """The JSON record beside an engine file."""
        return engine_path.with_suffix(".json")

    def calibration_path_for(self, model_path: str | Path, key: str) -> Path:
        """Where TensorRT's int8 calibration cache for this engine is kept (beside the engine)."""
        return self.path_for(model_path, key).with_suffix(".calib")

    def read_record(self, engine_path: Path) -> dict[str, Any] | None:
        """The sidecar of ``engine_path`` as a dict, or ``None`` when it is missing or unreadable."""
        try:
            record = json.loads(self.sidecar_for(engine_path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def lookup(self, model_path: str | Path, key: str) -> Path | None:
        """The cached engine for ``key``, or ``None`` when there is none (or its sidecar names another key)."""
        path = self.path_for(model_path, key)
        if not path.is_file():
            return None
        record = self.read_record(path)
        if record is None or record.get("key") != key:
            return None
        return path

    def store(self, model_path: str | Path, key: str, engine: bytes | bytearray | memoryview,
              fields: Mapping[str, Any], build_seconds: float) -> Path:
        """Write the engine, then its sidecar, each atomically; return the engine's path.

        ``fields`` are the key's fields (recorded as given, for people and tools reading the cache folder).
        """
        path = self.path_for(model_path, key)
        _atomic_write(path, engine)
        record = {
            **{k: _jsonable(v) for k, v in fields.items()},
            "key": key,
            "model": str(model_path),
            "build_seconds": round(float(build_seconds), 3),
            "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        _atomic_write(self.sidecar_for(path), (json.dumps(record, indent=2, sort_keys=True) + "\n").encode("utf-8"))
        return path

    def remove(self, model_path: str | Path, key: str) -> None:
        """Delete the engine and its sidecar (the calibration cache is kept: it stays valid for a rebuild)."""
        path = self.path_for(model_path, key)
        path.unlink(missing_ok=True)
        self.sidecar_for(path).unlink(missing_ok=True)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


# --- input shapes from the ONNX model -------------------------------------------------------------------------------


def _shape_text(shapes: Mapping[str, Sequence[int]]) -> str:
    """``1x1x512x640`` when every input has that shape (fusion nets), else ``ir 1x1x512x640, vis 1x3x512x640``."""
    if not shapes:
        return "shapes from the model"
    texts = {name: "x".join(str(d) if d > 0 else "?" for d in shape) for name, shape in shapes.items()}
    unique = set(texts.values())
    if len(unique) == 1:
        return unique.pop()
    return ", ".join(f"{name} {text}" for name, text in texts.items())


def _onnx_input_dims(onnx_path: Path) -> dict[str, tuple[int, ...]] | None:
    """The graph inputs of an ONNX model with ``-1`` for dynamic dimensions, or ``None`` without ``onnx``.

    Initializers are skipped: old exporters list the weights as graph inputs too. External weight data is not
    loaded: only the graph's declarations are read.
    """
    try:
        import onnx
    except ImportError:
        return None
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as err:  # onnx raises DecodeError, ValueError, ... for a file that is not a model
        raise ModelError(f"cannot read ONNX model {onnx_path} for TensorRT: {type(err).__name__}: {err}") from None
    initializers = {init.name for init in model.graph.initializer}
    dims: dict[str, tuple[int, ...]] = {}
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        shape = inp.type.tensor_type.shape
        dims[inp.name] = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in shape.dim)
    return dims


def resolve_input_shapes(onnx_path: Path, declared: Mapping[str, tuple[int, ...]],
                         requested: Mapping[str, Sequence[int]] | None) -> Shapes:
    """The static shape to build each input for: ``requested`` where given, else the model's own static shape.

    Why strict: an engine here is built for exactly one shape per input (the cache key holds it, and the pipeline
    feeds one camera resolution), so a dynamic dimension the caller did not fix is a settings error, named with
    the input, rather than a guess.

    Raises:
        ConfigError: an input is dynamic and not in ``requested``; ``requested`` names an unknown input, has the
            wrong rank, a non-positive dimension, or contradicts a static dimension of the model.
    """
    requested = dict(requested or {})
    unknown = sorted(set(requested) - set(declared))
    if unknown:
        raise ConfigError(
            f"input_shapes for TensorRT names input(s) {', '.join(unknown)} that model {onnx_path} does not have "
            f"(its inputs: {', '.join(declared)})"
        )
    shapes: Shapes = {}
    for name, dims in declared.items():
        if name not in requested:
            if any(d < 0 for d in dims):
                raise ConfigError(
                    f"model {onnx_path} input {name!r} has dynamic shape {_shape_text({name: dims})}; TensorRT "
                    f"builds for static shapes here: pass input_shapes={{{name!r}: (...)}} with the size to build for"
                )
            shapes[name] = tuple(dims)
            continue
        want = tuple(int(d) for d in requested[name])
        if len(want) != len(dims) or any(d <= 0 for d in want) or any(0 < m != w for m, w in zip(dims, want)):
            raise ConfigError(
                f"input_shapes[{name!r}] = {want} does not fit model {onnx_path}, whose input {name!r} is "
                f"{_shape_text({name: dims})} (-1/? = dynamic), for TensorRT"
            )
        shapes[name] = want
    return shapes


# --- int8 calibration images (pure: OpenCV and numpy) ----------------------------------------------------------------


def calibration_fingerprint(folder: Path, max_images: int) -> str:
    """A short hash of the names, sizes and mtimes of the images the calibrator would read (part of the key)."""
    files = _calibration_files(folder)[:max_images]
    digest = hashlib.sha256()
    for f in files:
        st = f.stat()
        digest.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return f"{len(files)}:{digest.hexdigest()[:16]}"


def _calibration_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in CALIBRATION_SUFFIXES)


def load_calibration_images(folder: str | Path, max_images: int, channels: int, height: int,
                            width: int) -> np.ndarray:
    """Up to ``max_images`` images of ``folder`` as ``(N, channels, height, width)`` float32 in [0, 1].

    Images are read unchanged (16-bit thermal frames keep their range: divided by 65535, 8-bit by 255), resized to
    the network's input size with area interpolation, and converted to its channel count (1: grey, 3: RGB, as the
    pipeline feeds the networks), so the activation ranges TensorRT measures match what inference will see.

    Raises:
        ConfigError: the folder is missing or holds no readable image.
    """
    import cv2

    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"calibration_dir {folder} for TensorRT int8 is not a folder")
    batch: list[np.ndarray] = []
    for path in _calibration_files(folder)[:max_images]:
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None:
            _LOG.warning("int8 calibration: cannot read %s, skipped", path)
            continue
        scale = 65535.0 if img.dtype == np.uint16 else 255.0 if img.dtype == np.uint8 else 1.0
        img = img.astype(np.float32) / scale
        if img.ndim == 3 and img.shape[2] == 4:
            img = img[:, :, :3]
        if channels == 1 and img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        elif channels == 3 and img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
        elif channels == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
        img = img[None] if img.ndim == 2 else img.transpose(2, 0, 1)
        if img.shape[0] != channels:  # a network with an unusual channel count: repeat or cut the grey channel
            img = np.repeat(img.mean(axis=0, keepdims=True), channels, axis=0)
        batch.append(np.clip(img, 0.0, 1.0))
    if not batch:
        raise ConfigError(
            f"calibration_dir {folder} holds no readable image ({', '.join(CALIBRATION_SUFFIXES)}) for TensorRT int8"
        )
    return np.ascontiguousarray(np.stack(batch), dtype=np.float32)


# --- TensorRT glue (classes defined lazily: their bases live in the tensorrt module) --------------------------------


def _make_logger(trt: Any) -> Any:
    """A ``trt.ILogger`` that forwards to Python logging and keeps TensorRT's error lines for our messages."""

    class _Logger(trt.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self._lock = threading.Lock()

        def log(self, severity: Any, msg: str) -> None:
            sev = trt.ILogger.Severity
            if severity in (sev.INTERNAL_ERROR, sev.ERROR):
                with self._lock:
                    self.errors.append(str(msg))
                _LOG.debug("TensorRT error: %s", msg)  # reported in our exception or warning, not twice
            elif severity == sev.WARNING:
                _LOG.warning("TensorRT: %s", msg)
            elif severity == sev.INFO:
                _LOG.debug("TensorRT: %s", msg)

        def note(self, message: str) -> None:
            with self._lock:
                self.errors.append(message)

        def take_errors(self) -> list[str]:
            with self._lock:
                errors, self.errors = self.errors, []
            return errors

    return _Logger()


def _make_progress_monitor(trt: Any, what: str) -> Any:
    """A ``trt.IProgressMonitor`` (TensorRT >= 10.0) logging phase names and percentages of the build.

    Why: the first build of a YOLO engine on a Jetson takes minutes; without progress an operator cannot tell it
    from a hang. Top-level phases log at INFO in 25 % steps, nested ones at DEBUG. TensorRT calls it from several
    threads, hence the lock.
    """

    class _Progress(trt.IProgressMonitor):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._lock = threading.Lock()
            self._phases: dict[str, tuple[int, int, bool]] = {}  # name -> (steps, last logged %, top level)

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            top = parent_phase is None
            with self._lock:
                self._phases[phase_name] = (max(int(num_steps), 1), 0, top)
            _LOG.log(logging.INFO if top else logging.DEBUG, "TensorRT build of %s: %s (%d steps)",
                     what, phase_name, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            with self._lock:
                steps, last, top = self._phases.get(phase_name, (1, 0, False))
                pct = int(100 * (step + 1) / steps)
                due = pct >= last + 25 and pct < 100
                if due:
                    self._phases[phase_name] = (steps, pct - pct % 25, top)
            if due:
                _LOG.log(logging.INFO if top else logging.DEBUG, "TensorRT build of %s: %s %d%%",
                         what, phase_name, pct - pct % 25)
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            with self._lock:
                _, _, top = self._phases.pop(phase_name, (1, 0, False))
            _LOG.log(logging.INFO if top else logging.DEBUG, "TensorRT build of %s: %s done", what, phase_name)

    return _Progress()


def _make_calibrator(trt: Any, images: np.ndarray, shapes: Shapes, device: torch.device, cache_file: Path) -> Any:
    """An entropy calibrator (``trt.IInt8EntropyCalibrator2``) feeding ``images`` in batches from GPU buffers.

    Every input gets the same image converted to its channel count: the calibration folder is one set of frames,
    and what matters for int8 scales is that each input sees realistic value ranges. The calibration cache is
    read from / written to ``cache_file`` so an int8 rebuild (new TensorRT, corrupt engine) skips calibration.
    """

    class _Calibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batch = next(iter(shapes.values()))[0]
            self._buffers = {name: torch.empty(shape, dtype=torch.float32, device=device)
                             for name, shape in shapes.items()}
            self._next = 0

        def get_batch_size(self) -> int:
            return int(self._batch)

        def get_batch(self, names: list[str], *_: Any) -> list[int] | None:
            if self._next + self._batch > len(images):
                return None
            chunk = torch.from_numpy(images[self._next:self._next + self._batch]).to(device)
            self._next += self._batch
            ptrs = []
            for name in names:
                buf = self._buffers[name]
                c = buf.shape[1]
                src = chunk if chunk.shape[1] == c else chunk.mean(dim=1, keepdim=True).expand(-1, c, -1, -1)
                buf.copy_(src)
                ptrs.append(int(buf.data_ptr()))
            torch.cuda.current_stream(device).synchronize()  # TensorRT reads the buffers on its own stream
            return ptrs

        def read_calibration_cache(self, *_: Any) -> bytes | None:
            return cache_file.read_bytes() if cache_file.is_file() else None

        def write_calibration_cache(self, cache: Any) -> None:
            _atomic_write(cache_file, memoryview(cache))

    return _Calibrator()


def _torch_dtype(trt: Any, dtype: Any) -> torch.dtype | None:
    table = {
        "FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT32": torch.int32,
        "INT64": torch.int64, "BOOL": torch.bool, "INT8": torch.int8, "UINT8": torch.uint8,
    }
    for name, tdtype in table.items():
        member = getattr(trt.DataType, name, None)
        if member is not None and dtype == member:
            return tdtype
    return None


def _float_needed(dtype: torch.dtype) -> bool:
    """Whether an output of ``dtype`` is converted when ``float_outputs`` is on (half and bfloat16 only)."""
    return dtype in (torch.float16, torch.bfloat16)


def _is_oom(texts: Sequence[str]) -> bool:
    joined = " ".join(texts).lower()
    return any(h in joined for h in _OOM_HINTS)


class TensorRTBackend:
    """One ONNX model as a TensorRT engine, built for static input shapes and run on torch CUDA tensors.

    Fits the package's ``Backend`` interface by duck typing (``name``, ``device``, ``input_names``,
    ``output_names``, ``__call__``, ``describe``) without importing it.

    Args:
        onnx_path: the ``.onnx`` model (a fusion net with inputs ``ir, vis, illum, glare`` or a YOLO detector).
        device: a CUDA :class:`torch.device`; the engine is built for, and runs on, that GPU.
        precision: ``fp32``, ``fp16`` (default: the usual choice on Jetson and RTX) or ``int8`` (needs
            ``calibration_dir``; layers TensorRT cannot run in int8 fall back to fp16).
        input_shapes: the static shape to build each input for. ``None``: the model's own shapes, which must
            then all be static. Needed for the package's fusion exports, whose B, H, W are dynamic.
        cache_dir: where engines are cached; ``None``: :func:`default_cache_dir`.
        calibration_dir: int8 only: a folder of images (frames like those the robot will see).
        workspace_gb: the builder's scratch memory limit (GiB); more lets TensorRT try more tactics.
        float_outputs: return float32 outputs even when the engine's are float16 (converted into a persistent
            float32 buffer), so callers need not care about the precision.
        calibration_images: at most this many images are read for int8 calibration.

    Raises:
        ConfigError: bad precision, non-CUDA device, int8 without a calibration folder, a dynamic input without
            ``input_shapes``, ``input_shapes`` that do not fit the model, a non-positive workspace.
        ModelError: TensorRT missing, the model missing or unparsable, the build or the engine failing (out of GPU
            memory included).
    """

    name = "tensorrt"
    input_names: tuple[str, ...] = ()  # set from the engine once it is loaded
    output_names: tuple[str, ...] = ()

    def __init__(self, onnx_path: str | Path, device: torch.device, precision: str = "fp16",
                 input_shapes: Mapping[str, Sequence[int]] | None = None, cache_dir: Path | None = None,
                 calibration_dir: Path | None = None, workspace_gb: float = 2.0, float_outputs: bool = True,
                 calibration_images: int = 64) -> None:
        self.onnx_path = Path(onnx_path)
        self.device = torch.device(device)
        self.precision = precision
        self.float_outputs = float_outputs
        self.cached = False
        self._shapes: Shapes = {k: tuple(int(d) for d in v) for k, v in (input_shapes or {}).items()}

        # 1. checks that need neither TensorRT nor a GPU (testable anywhere)
        if not self.onnx_path.is_file():
            raise ModelError(f"{self._what()}: model file not found")
        if precision not in PRECISIONS:
            raise ConfigError(f"{self._what()}: precision must be one of {', '.join(PRECISIONS)}")
        declared = _onnx_input_dims(self.onnx_path)
        if declared is not None:
            self._shapes = resolve_input_shapes(self.onnx_path, declared, input_shapes)
        if self.device.type != "cuda":
            raise ConfigError(f"{self._what()}: TensorRT runs on a CUDA device, not {self.device}")
        if precision == "int8":
            if calibration_dir is None:
                raise ConfigError(f"{self._what()}: int8 needs calibration_dir, a folder of representative images")
            if not Path(calibration_dir).is_dir():
                raise ConfigError(f"{self._what()}: calibration_dir {calibration_dir} is not a folder")
            if calibration_images < 1:
                raise ConfigError(f"{self._what()}: calibration_images must be at least 1")
        if not workspace_gb > 0:
            raise ConfigError(f"{self._what()}: workspace_gb must be positive, not {workspace_gb}")

        # 2. TensorRT and the GPU
        try:
            import tensorrt as trt
        except ImportError:
            raise ModelError(f"{self._what()}: {_INSTALL_HINT}") from None
        if not torch.cuda.is_available():
            raise ConfigError(f"{self._what()}: torch sees no CUDA device for {self.device}")
        if self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self._trt = trt
        self.trt_version = str(trt.__version__)
        self._logger = _make_logger(trt)
        onnx_bytes = self.onnx_path.read_bytes()
        if declared is None:  # no onnx package: let TensorRT's parser tell the input shapes
            self._shapes = resolve_input_shapes(self.onnx_path, self._parsed_input_dims(onnx_bytes), input_shapes)

        # 3. the cache key: everything that makes the engine differ
        gpu_name = torch.cuda.get_device_name(self.device)
        capability = tuple(torch.cuda.get_device_capability(self.device))
        calibration = ""
        if precision == "int8":
            assert calibration_dir is not None
            calibration = calibration_fingerprint(Path(calibration_dir), calibration_images)
        self._fields: dict[str, Any] = {
            "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest(), "input_shapes": self._shapes,
            "precision": precision, "gpu_name": gpu_name, "compute_capability": capability,
            "trt_version": self.trt_version,
        }
        if calibration:
            self._fields["calibration"] = calibration
        self.cache = EngineCache(cache_dir)
        key = engine_cache_key(**self._fields)  # type: ignore[arg-type]
        self.cache_key = key

        # 4. load the cached engine, or build (and cache) one
        with torch.cuda.device(self.device):
            self._runtime = trt.Runtime(self._logger)
            engine = None
            cached_path = self.cache.lookup(self.onnx_path, key)
            if cached_path is not None:
                engine = self._deserialize(cached_path.read_bytes())
                if engine is None:
                    _LOG.warning("cached TensorRT engine %s for %s could not be loaded (%s); deleting and rebuilding",
                                 cached_path, self._what(), "; ".join(self._logger.take_errors()) or "corrupt or "
                                 "built by another TensorRT/GPU")
                    self.cache.remove(self.onnx_path, key)
                else:
                    self.cached = True
                    self.engine_path = cached_path
                    _LOG.info("loaded cached engine %s for %s", cached_path, self._what())
            if engine is None:
                serialized = self._build(onnx_bytes, workspace_gb, calibration_dir, calibration_images)
                engine = self._deserialize(serialized)
                if engine is None:
                    self.cache.remove(self.onnx_path, key)
                    raise ModelError(f"{self._what()}: the freshly built engine does not load"
                                     f"{self._errors_suffix()}")
            self._engine = engine
            self._setup_io()

    # --- construction helpers ------------------------------------------------------------------------------------

    def _what(self) -> str:
        """The subject of every message: model file, input shape(s), precision, TensorRT."""
        return f"TensorRT {self.precision} engine for {self.onnx_path} ({_shape_text(self._shapes)})"

    def _errors_suffix(self) -> str:
        errors = self._logger.take_errors()
        return f": {'; '.join(errors)}" if errors else ""

    def _deserialize(self, data: bytes | bytearray | memoryview) -> Any:
        """The engine, or ``None`` when TensorRT rejects the bytes (it returns None or raises, by version)."""
        try:
            return self._runtime.deserialize_cuda_engine(data)
        except Exception as err:  # pybind raises RuntimeError/TypeError for some corrupt inputs
            self._logger.note(f"{type(err).__name__}: {err}")
            return None

    def _parse(self, onnx_bytes: bytes) -> tuple[Any, Any, Any]:
        """Builder, network and parser (kept together: the network must outlive nothing it points to)."""
        trt = self._trt
        builder = trt.Builder(self._logger)
        network = builder.create_network(0)  # TensorRT 10: always explicit batch; the flag is deprecated
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse(onnx_bytes, str(self.onnx_path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)] + self._logger.take_errors()
            raise ModelError(f"{self._what()}: the ONNX parser failed: {'; '.join(errors) or 'no detail'}")
        return builder, network, parser

    def _parsed_input_dims(self, onnx_bytes: bytes) -> dict[str, tuple[int, ...]]:
        _, network, _ = self._parse(onnx_bytes)
        return {network.get_input(i).name: tuple(int(d) for d in network.get_input(i).shape)
                for i in range(network.num_inputs)}

    def _build(self, onnx_bytes: bytes, workspace_gb: float, calibration_dir: Path | None,
               calibration_images: int) -> bytes:
        """Parse, configure and build; store the engine in the cache; return its bytes."""
        trt = self._trt
        what = self._what()
        _LOG.info("building %s; this takes a while the first time", what)
        start = time.perf_counter()
        builder, network, _parser = self._parse(onnx_bytes)
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
        if self.precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)  # int8: layers without an int8 kernel fall back to fp16
        profile = builder.create_optimization_profile()
        dynamic = False
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            shape = self._shapes[tensor.name]
            if any(int(d) < 0 for d in tensor.shape):
                profile.set_shape(tensor.name, shape, shape, shape)  # min = opt = max: one static size
                dynamic = True
        if dynamic:
            config.add_optimization_profile(profile)
        monitor = None
        if hasattr(trt, "IProgressMonitor"):
            monitor = _make_progress_monitor(trt, what)
            config.progress_monitor = monitor
        calibrator = None
        if self.precision == "int8":
            assert calibration_dir is not None
            config.set_flag(trt.BuilderFlag.INT8)
            first = next(iter(self._shapes.values()))
            images = load_calibration_images(calibration_dir, calibration_images, first[1] if len(first) > 1 else 1,
                                             first[-2], first[-1])
            if len(images) < first[0]:
                raise ConfigError(f"{what}: calibration_dir {calibration_dir} has {len(images)} readable image(s), "
                                  f"fewer than the batch size {first[0]}")
            cache_file = self.cache.calibration_path_for(self.onnx_path, self.cache_key)
            try:
                calibrator = _make_calibrator(trt, images, self._shapes, self.device, cache_file)
            except torch.cuda.OutOfMemoryError:
                raise ModelError(f"{what}: CUDA out of memory allocating int8 calibration buffers") from None
            config.int8_calibrator = calibrator
            if dynamic and hasattr(config, "set_calibration_profile"):
                config.set_calibration_profile(profile)
        try:
            serialized = builder.build_serialized_network(network, config)
        except torch.cuda.OutOfMemoryError:  # raised inside our calibrator's callbacks
            raise ModelError(f"{what}: CUDA out of memory during the build (calibration)") from None
        del monitor, calibrator  # they had to live until the build returned
        if serialized is None:
            errors = self._logger.take_errors()
            if _is_oom(errors):
                raise ModelError(f"{what}: CUDA out of memory during the engine build (try a smaller input shape, "
                                 f"a smaller workspace_gb, or free the GPU): {'; '.join(errors)}")
            raise ModelError(f"{what}: the engine build failed: {'; '.join(errors) or 'no detail from TensorRT'}")
        data = memoryview(serialized).tobytes()
        seconds = time.perf_counter() - start
        self.engine_path = self.cache.store(self.onnx_path, self.cache_key, data, self._fields, seconds)
        _LOG.info("built %s in %.1f s; cached as %s", what, seconds, self.engine_path)
        return data

    def _setup_io(self) -> None:
        """Execution context, static input shapes, persistent output (and float32 conversion) buffers."""
        trt = self._trt
        engine = self._engine
        context = engine.create_execution_context()
        if context is None:
            errors = self._logger.take_errors()
            kind = "CUDA out of memory creating the execution context" if _is_oom(errors) else \
                "cannot create an execution context"
            raise ModelError(f"{self._what()}: {kind}{': ' + '; '.join(errors) if errors else ''}")
        self._context = context
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if set(inputs) != set(self._shapes):
            raise ModelError(f"{self._what()}: the engine's inputs {inputs} are not the model's {list(self._shapes)}")
        self.input_names = tuple(inputs)
        self.output_names = tuple(outputs)
        self._in_dtype: dict[str, torch.dtype] = {}
        for name in inputs:
            if not context.set_input_shape(name, self._shapes[name]):
                raise ModelError(f"{self._what()}: the engine rejects input shape {self._shapes[name]} for {name!r}"
                                 f"{self._errors_suffix()}")
            dtype = _torch_dtype(trt, engine.get_tensor_dtype(name))
            if dtype is None:
                raise ModelError(f"{self._what()}: input {name!r} has unsupported type {engine.get_tensor_dtype(name)}")
            self._in_dtype[name] = dtype
        self._in_buffers: dict[str, torch.Tensor] = {}  # allocated on first need (a cast or a copy to contiguous)
        self._bound: dict[str, int] = {}
        self._outputs: dict[str, torch.Tensor] = {}
        self._float_outputs: dict[str, torch.Tensor] = {}
        try:
            for name in outputs:
                shape = tuple(int(d) for d in context.get_tensor_shape(name))
                dtype = _torch_dtype(trt, engine.get_tensor_dtype(name))
                if any(d < 0 for d in shape) or dtype is None:
                    raise ModelError(f"{self._what()}: output {name!r} has a data-dependent shape {shape} or an "
                                     f"unsupported type {engine.get_tensor_dtype(name)}")
                out = torch.empty(shape, dtype=dtype, device=self.device)
                self._outputs[name] = out
                if not context.set_tensor_address(name, out.data_ptr()):
                    raise ModelError(f"{self._what()}: cannot bind output {name!r}{self._errors_suffix()}")
                if _float_needed(dtype) and self.float_outputs:
                    self._float_outputs[name] = torch.empty(shape, dtype=torch.float32, device=self.device)
        except torch.cuda.OutOfMemoryError:
            raise ModelError(f"{self._what()}: CUDA out of memory allocating the output buffers") from None

    # --- the Backend interface --------------------------------------------------------------------------------------

    def __call__(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        """Run the engine on ``inputs`` (CUDA tensors in ``input_names`` order) on torch's current stream.

        A tensor already of the engine's dtype and contiguous is bound directly (no copy); others are cast into a
        persistent buffer. The returned tensors are the backend's persistent output buffers: the next call
        overwrites them, so clone what must be kept.

        Raises:
            ModelError: wrong number of inputs, a shape other than the built one, a tensor on another device, or
                TensorRT failing to enqueue.
        """
        if len(inputs) != len(self.input_names):
            raise ModelError(f"{self._what()}: expected {len(self.input_names)} inputs "
                             f"({', '.join(self.input_names)}), got {len(inputs)}")
        context = self._context
        for name, tensor in zip(self.input_names, inputs):
            want = self._shapes[name]
            if tuple(tensor.shape) != want:
                raise ModelError(f"{self._what()}: input {name!r} has shape {'x'.join(map(str, tensor.shape))}, "
                                 f"the engine was built for {_shape_text(self._shapes)} (build another engine with "
                                 f"input_shapes for a new size)")
            if tensor.device != self.device:
                raise ModelError(f"{self._what()}: input {name!r} is on {tensor.device}, the engine on {self.device}")
            if (tensor.dtype == self._in_dtype[name] and tensor.is_contiguous()
                    and tensor.data_ptr() % _ALIGNMENT == 0):
                ptr = tensor.data_ptr()
            else:
                buf = self._in_buffers.get(name)
                if buf is None:
                    buf = torch.empty(want, dtype=self._in_dtype[name], device=self.device)
                    self._in_buffers[name] = buf
                buf.copy_(tensor)
                ptr = buf.data_ptr()
            if self._bound.get(name) != ptr:
                if not context.set_tensor_address(name, ptr):
                    raise ModelError(f"{self._what()}: cannot bind input {name!r}{self._errors_suffix()}")
                self._bound[name] = ptr
        stream = torch.cuda.current_stream(self.device)
        with torch.cuda.device(self.device):
            ok = context.execute_async_v3(stream.cuda_stream)
        if not ok:
            raise ModelError(f"{self._what()}: execution failed{self._errors_suffix()}")
        results = []
        for name in self.output_names:
            out = self._outputs[name]
            conv = self._float_outputs.get(name)
            if conv is not None:
                conv.copy_(out)
                out = conv
            results.append(out)
        return results

    def describe(self) -> str:
        """E.g. ``tensorrt 10.3.0 fp16 amfusion-s.onnx 1x1x512x640 (cached)``."""
        return (f"tensorrt {self.trt_version} {self.precision} {self.onnx_path.name} {_shape_text(self._shapes)} "
                f"({'cached' if self.cached else 'built'})")

    @property
    def input_shapes(self) -> Shapes:
        """The static shape each input was built for."""
        return dict(self._shapes)

    def __repr__(self) -> str:
        return f"TensorRTBackend({self.describe()!r})"

