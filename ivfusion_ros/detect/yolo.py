"""``detector.type: yolo``: any YOLO-family detector, run with ONNX Runtime, TensorRT or torch.

Pipeline per frame: letterbox (persistent buffers) -> network -> decode the output layout -> class-wise NMS
(skipped for end-to-end models, which already did it) -> map boxes back to image pixels -> clip.

Two paths compute that. On the CPU with ONNX Runtime: numpy and OpenCV (:mod:`letterbox`, :mod:`yolo_decode`,
:mod:`nms`). Everywhere else (CUDA, or the torch backend): the same steps on torch tensors
(:mod:`tensor_ops`), so on a GPU the fused frame goes from the fusion stage into the network input without a
host round trip and only the final detections are copied to the host. The tests hold the two paths to the same
detections.

Nothing is downloaded: the model is a local file (``detector.model``): an ``.onnx`` file for onnxruntime and
tensorrt, a TorchScript file (e.g. Ultralytics' ``format=torchscript`` export) for torch.
"""

from __future__ import annotations

import ast
import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ivfusion_ros.config import DetectorConfig, RuntimeConfig
from ivfusion_ros.detect import tensor_ops
from ivfusion_ros.detect.base import Detections, Detector, check_rgb
from ivfusion_ros.detect.coco import COCO_NAMES
from ivfusion_ros.detect.letterbox import Letterbox
from ivfusion_ros.detect.nms import batched_nms
from ivfusion_ros.detect.registry import register_detector
from ivfusion_ros.detect.yolo_decode import check_layout, decode, detect_layout
from ivfusion_ros.errors import ConfigError, ModelError
from ivfusion_ros.runtime.backend import Backend, BackendOptions, OrtBackend, TorchBackend
from ivfusion_ros.runtime.device import resolve_device
from ivfusion_ros.runtime.graphs import StageGraphs
from ivfusion_ros.runtime.onnx_session import OnnxModel

__all__ = ["DEFAULT_INPUT_SIZE", "YoloDetector", "parse_names_metadata"]

_LOG = logging.getLogger(__name__)

#: Network input ``(width, height)`` when neither the config nor the model fixes it.
DEFAULT_INPUT_SIZE = (640, 640)
_INPUT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
_MAX_NAMES = 100_000  # guards against absurd metadata such as {10**9: 'x'}


def parse_names_metadata(text: str) -> tuple[str, ...] | None:
    """Parse the class table Ultralytics stores in the ONNX metadata key ``names``.

    Accepts a Python/JSON literal: ``"{0: 'person', 1: 'bicycle'}"`` (ids may be strings, gaps are filled
    with the id as text) or ``"['person', 'bicycle']"``. Uses :func:`ast.literal_eval`, which evaluates
    literals only (no code). Returns ``None`` for anything else.
    """
    if not text or len(text) > 1_000_000:
        return None
    try:
        obj = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if isinstance(obj, (list, tuple)):
        return tuple(str(v) for v in obj) if obj else None
    if isinstance(obj, dict) and obj:
        table: dict[int, str] = {}
        for k, v in obj.items():
            if isinstance(k, str) and k.strip().isdigit():
                k = int(k)
            if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k < _MAX_NAMES:
                return None
            table[k] = str(v)
        return tuple(table.get(i, str(i)) for i in range(max(table) + 1))
    return None


def _read_names_file(path: str) -> tuple[str, ...]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"detector.class_names_file: file not found: {p}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"detector.class_names_file: {p} is not UTF-8 text") from None
    except OSError as err:
        raise ConfigError(f"detector.class_names_file: cannot read {p}: {err.strerror or err}") from None
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not names:
        raise ConfigError(f"detector.class_names_file: {p} holds no class names (expected one per line)")
    return names


@register_detector("yolo")
class YoloDetector(Detector):
    """A YOLO ONNX model (YOLOv5/v7, YOLOv8/v9/v11, YOLOv10/end-to-end exports).

    Args:
        cfg: the ``detector`` config section. Used: ``model``, ``layout``, ``score_threshold``,
            ``nms_threshold``, ``max_detections``, ``input_size``, ``class_names``, ``class_names_file``.
        device: ``auto``, ``cpu`` or ``cuda`` (see :class:`~ivfusion_ros.runtime.OnnxModel`).
        threads: ONNX Runtime intra-op threads, 0 = its default.

    Input size: ``cfg.input_size`` when non-zero (must match a model with a fixed input), else the model's
    fixed input size, else 640x640. Dynamic-size Ultralytics models want multiples of 32.

    Class names: ``cfg.class_names``, else ``cfg.class_names_file`` (one name per line, blank lines
    ignored), else the model's ``names`` metadata, else the 80 COCO names.

    Not thread-safe: the letterbox buffers are reused across calls, use one instance per thread.

    Raises:
        ConfigError: ``cfg.model`` is empty, ``input_size`` is half-set or contradicts the model, or the
            class names file is missing/unreadable/empty.
        ModelError: the model is missing/corrupt, its input is not an image tensor ``[1, 3, H, W]`` of
            float/float16, or its output layout cannot be decoded (set ``detector.layout``).
    """

    name = "yolo"

    def __init__(self, cfg: DetectorConfig, device: str = "cpu", threads: int = 0,
                 runtime: RuntimeConfig | None = None) -> None:
        if not cfg.model:
            raise ConfigError(
                "detector.model: is empty; set it to a YOLO .onnx file when detector.type is yolo"
            )
        self.cfg = cfg
        self.device = resolve_device(device)
        runtime = runtime or RuntimeConfig(threads=threads)
        options = BackendOptions.from_config(runtime, self.device)
        self.model: OnnxModel | None = None
        self._runner: Backend | None = None
        self._meta: dict[str, str] = {}
        if cfg.backend == "torch":
            self._runner, shape = self._load_torch(cfg.model, options)
            in_type = "tensor(float)"
        elif cfg.backend == "onnxruntime" and self.device.type == "cuda":
            ort_backend = OrtBackend(cfg.model, options)
            self._runner, self.model = ort_backend, ort_backend.model
        else:  # onnxruntime on the CPU (numpy path); tensorrt reads the model's facts from a CPU session
            self.model = OnnxModel(cfg.model, device="cpu", threads=threads)
        path = Path(cfg.model)
        if self.model is not None:
            self._meta = self.model.metadata
            shape, in_type = self.model.input_shape, self.model.input_type
            if len(shape) != 4 or shape[0] not in (1, None) or shape[1] not in (3, None):
                raise ModelError(
                    f"model {path}: input {self.model.input_name!r} has shape {list(shape)}; expected an image "
                    f"batch [1, 3, H, W]"
                )
        dtype = _INPUT_DTYPES.get(in_type)
        if dtype is None:
            raise ModelError(
                f"model {path}: input type {in_type} is not supported (float or float16 only)"
            )
        self._input_w, self._input_h = self._pick_input_size(cfg, shape[3], shape[2])
        self._letterbox = Letterbox(self._input_w, self._input_h)
        self._half: np.ndarray | None = None
        if dtype == np.float16:  # float16 exports: cast into a second persistent buffer
            self._half = np.empty((1, 3, self._input_h, self._input_w), np.float16)

        self._names, self._names_source = self._pick_names(cfg)

        self._layout: str | None = None if cfg.layout == "auto" else cfg.layout
        out_shape = self.model.output_shapes[0] if self.model is not None and self.model.output_shapes else ()
        if all(d is not None for d in out_shape) and len(out_shape) > 0:
            self._settle_layout(out_shape)

        if cfg.backend == "tensorrt":
            from ivfusion_ros.runtime.tensorrt_backend import TensorRTBackend

            assert self.model is not None
            self._runner = TensorRTBackend(
                path, device=self.device, precision=options.precision,
                input_shapes={self.model.input_name: (1, 3, self._input_h, self._input_w)},
                cache_dir=options.cache_dir, calibration_dir=options.calibration_dir)
        self._input = None
        self._graphs = StageGraphs(self.device.type == "cuda" and runtime.cuda_graphs)
        if self._runner is not None:
            # the tensor path: a persistent network-input buffer on the device, and one warm-up frame so that
            # engine builds, graph captures, out-of-memory and the output layout are settled at start
            self._input = torch.full((1, 3, self._input_h, self._input_w), 114 / 255.0, device=self.device)
            out = self._runner(self._input)[0]
            self._settle_layout(tuple(out.shape))

    def _load_torch(self, model: str, options: BackendOptions) -> tuple[Backend, tuple[int | None, ...]]:
        """The torch backend's network and its input shape: here a TorchScript YOLO (subclasses load their own
        checkpoints). Ultralytics ``format=torchscript`` stores its class names and
        ``imgsz = [h, w]`` in the extra file ``config.txt``; without them the shape is dynamic)."""
        path = Path(model)
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        extra = {"config.txt": ""}
        try:
            module = torch.jit.load(str(path), map_location=self.device, _extra_files=extra)
        except Exception as err:  # torch raises RuntimeError or ValueError depending on what is wrong
            raise ModelError(f"cannot load model {path} as TorchScript (detector.backend torch): "
                             f"{str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}"
                             ) from None
        try:
            config = json.loads(extra["config.txt"] or "{}")
        except (ValueError, UnicodeDecodeError):
            config = {}
        shape: tuple[int | None, ...] = (1, 3, None, None)
        if isinstance(config, dict):
            if "names" in config:
                self._meta = {"names": json.dumps(config["names"])}
            imgsz = config.get("imgsz")
            if isinstance(imgsz, list) and len(imgsz) == 2 and all(isinstance(v, int) and v > 0 for v in imgsz):
                shape = (1, 3, imgsz[0], imgsz[1])
        backend = TorchBackend(module, options, label=path.name, input_names=("images",), output_names=("output0",))
        return backend, shape

    # --- setup helpers -----------------------------------------------------------------------------------

    def _pick_input_size(self, cfg: DetectorConfig, mw: int | None, mh: int | None) -> tuple[int, int]:
        cw, ch = (int(v) for v in cfg.input_size)
        if cw or ch:
            if cw <= 0 or ch <= 0:
                raise ConfigError(
                    f"detector.input_size: [{cw}, {ch}] sets only one side; give [width, height] or [0, 0]"
                )
            if (mw is not None and mw != cw) or (mh is not None and mh != ch):
                raise ConfigError(
                    f"detector.input_size: [{cw}, {ch}] does not match the fixed input {mw}x{mh} (WxH) of "
                    f"model {self.cfg.model}; use [0, 0] or [{mw}, {mh}]"
                )
            return cw, ch
        return mw or DEFAULT_INPUT_SIZE[0], mh or DEFAULT_INPUT_SIZE[1]

    def _pick_names(self, cfg: DetectorConfig) -> tuple[tuple[str, ...], str]:
        if cfg.class_names:
            return tuple(cfg.class_names), "config"
        if cfg.class_names_file:
            return _read_names_file(cfg.class_names_file), "file"
        meta = self._meta.get("names")
        if meta:
            names = parse_names_metadata(meta)
            if names is not None:
                return names, "metadata"
            _LOG.warning("model %s: cannot parse its 'names' metadata; using the COCO names", self.cfg.model)
        return COCO_NAMES, "coco"

    def _settle_layout(self, out_shape: tuple[int | None, ...]) -> str:
        """Fix the layout from the first known output shape and warn once about class-count mismatches."""
        if self._layout is None:
            self._layout = detect_layout(out_shape, len(self._names))
            _LOG.debug("model %s: output %s decoded as %s", self.cfg.model, list(out_shape), self._layout)
        else:
            check_layout(out_shape, self._layout)
        dims = out_shape[-2:]
        n_model = {"yolov5": dims[1] - 5, "yolov8": dims[0] - 4}.get(self._layout) if len(dims) == 2 else None
        if n_model is not None and n_model != len(self._names):
            _LOG.warning(
                "model %s predicts %d classes but the class table (%s) has %d names; unknown ids are "
                "reported by number (set detector.class_names or detector.class_names_file)",
                self.cfg.model, n_model, self._names_source, len(self._names),
            )
        return self._layout

    # --- Detector API --------------------------------------------------------------------------------------

    @property
    def class_names(self) -> tuple[str, ...]:
        return self._names

    @property
    def input_size(self) -> tuple[int, int]:
        """Network input ``(width, height)``."""
        return self._input_w, self._input_h

    @property
    def layout(self) -> str | None:
        """Output layout in use; ``None`` until the first frame for models with dynamic output shapes."""
        return self._layout

    def detect(self, rgb: np.ndarray) -> Detections:
        """Detect objects in an RGB uint8 ``(H, W, 3)`` image.

        Returns:
            :class:`Detections` in image pixels (clipped to the image, boxes of zero area dropped), by
            decreasing score, at most ``max_detections``; scores clipped to [0, 1].

        Raises:
            InputError: the image is not a non-empty uint8 ``(H, W, 3)`` array.
            ModelError: inference failed or the output cannot be decoded with the layout in use.
        """
        check_rgb(rgb, "yolo detector")
        if self._runner is not None:
            return self.detect_tensor(torch.from_numpy(np.ascontiguousarray(rgb)).to(self.device))
        cfg = self.cfg
        blob = self._letterbox(rgb)
        if self._half is not None:
            self._half[...] = blob
            blob = self._half
        assert self.model is not None
        out = self.model.run(blob)[0]
        layout = self._layout or self._settle_layout(tuple(out.shape))
        boxes, scores, ids = decode(out, layout, cfg.score_threshold)
        # Drop candidates that do not overlap the image area (they would be empty after clipping) before
        # NMS, so that max_detections counts real boxes only.
        x1, y1, x2, y2 = self._letterbox.content_box
        inside = np.flatnonzero(
            (boxes[:, 0] < x2) & (boxes[:, 2] > x1) & (boxes[:, 1] < y2) & (boxes[:, 3] > y1)
        )
        if inside.size == 0:
            return Detections.empty(self._names)
        boxes, scores, ids = boxes[inside], scores[inside], ids[inside]
        if layout == "end2end":
            keep = np.argsort(-scores, kind="stable")[: cfg.max_detections]
        else:
            keep = batched_nms(boxes, scores, ids, cfg.nms_threshold, cfg.max_detections)
        boxes = self._letterbox.unmap_boxes(boxes[keep])
        scores, ids = scores[keep], ids[keep]
        # Float rounding at the image border can still leave a zero-area box after clipping.
        valid = np.flatnonzero((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))
        return Detections(
            boxes[valid],
            np.clip(scores[valid], 0.0, 1.0).astype(np.float32, copy=False),
            ids[valid].astype(np.int64, copy=False),
            self._names,
        )

    @property
    def accepts_tensors(self) -> bool:
        return self._runner is not None

    def detect_tensor(self, image: torch.Tensor) -> Detections:
        """Detect on an image already on the device: ``(1, 3, H, W)`` float RGB in [0, 1] or ``(H, W, 3)`` uint8.

        Letterbox, network, decode and NMS run on the device; the kept detections are the one copy to the host.
        Detectors on the numpy path (ONNX Runtime on the CPU) take the image through the host instead.
        """
        if self._runner is None or self._input is None:
            hwc = image if image.dtype == torch.uint8 else image[0].mul(255).round_().clamp_(0, 255).to(
                torch.uint8).permute(1, 2, 0)
            return self.detect(np.ascontiguousarray(hwc.cpu().numpy()))
        cfg, lb, buf = self.cfg, self._letterbox, self._input
        image = image.to(self.device)
        h, w = image.shape[:2] if image.dtype == torch.uint8 else image.shape[-2:]
        tensor_ops.fit_letterbox(lb, buf, int(w), int(h))  # geometry on the host, before any replay
        blob = self._graphs.run("letterbox", lambda img: (tensor_ops.letterbox_tensor(img, lb, buf),), image)[0]
        out = self._runner(blob)[0]
        layout = self._layout or self._settle_layout(tuple(out.shape))
        args = (layout, lb, cfg.score_threshold, cfg.nms_threshold, cfg.max_detections)
        dense = self._graphs.run("postprocess", lambda o: tensor_ops.postprocess_dense(o, *args), out,
                                 key=(*args[:1], lb.content_box, lb.scale, *args[2:]))
        rows = tensor_ops.select(dense, cfg.max_detections)
        return Detections(rows[:, :4].astype(np.float32), rows[:, 4].astype(np.float32),
                          rows[:, 5].astype(np.int64), self._names)

    def network_only(self) -> Callable[[], object]:
        """A call of the network alone on an input of its size, the way :meth:`detect` runs it (the backend on the
        device input buffer, or the ONNX Runtime session on a host blob): for model-only timings."""
        if self._runner is not None and self._input is not None:
            return functools.partial(self._runner, self._input)
        assert self.model is not None
        blob = np.full((1, 3, self._input_h, self._input_w), 0.45, np.float16 if self._half is not None else np.float32)
        return functools.partial(self.model.run, blob)

    def describe(self) -> str:
        if self._runner is not None:
            runtime = self._runner.describe()
        else:
            assert self.model is not None
            runtime = self.model.providers[0].replace("ExecutionProvider", "") if self.model.providers else "?"
        size = f"{self._input_w}x{self._input_h}"
        return f"{self.name} {Path(self.cfg.model).name} ({self._layout or 'auto'}, {size}, {runtime})"
