"""``detector.type: ivdet``: the package's own person/bicycle/car detector for fused, thermal and visible images.

A YOLOX-nano (:mod:`ivfusion_ros.detect.nets.yolox`) fine-tuned from COCO on MSRS thermal, visible and fused
images (``detect/weights/MODEL_CARD.md``: data, recipe, licences, held-out numbers). It is a
:class:`~ivfusion_ros.detect.yolo.YoloDetector` in every respect but loading: the same letterbox, decode
(``yolov5`` layout) and NMS, on every backend.

* ``detector.model: ''`` (the default) means the shipped weights: ``ivdet-n.onnx`` for onnxruntime and tensorrt,
  ``ivdet-n.pt`` for torch.
* A weights file of your own from ``ivfusion train-detector``: its ``.pt`` for torch, its ``.onnx`` for the others
  (a ``.pt`` given to onnxruntime/tensorrt uses the ``.onnx`` written beside it).

Weights file (``torch.save`` of a plain dict, read with ``weights_only=True``)::

    {"kind": "ivfusion-detector", "arch": "yolox-nano", "class_names": [...], "input_size": [w, h],
     "meta": {...training record...}, "state_dict": {...}}
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ivfusion_ros.config import DetectorConfig, RuntimeConfig
from ivfusion_ros.detect.nets.yolox import YoloxNano
from ivfusion_ros.detect.registry import register_detector
from ivfusion_ros.detect.yolo import YoloDetector
from ivfusion_ros.errors import ConfigError, ModelError
from ivfusion_ros.io.atomic import atomic_path
from ivfusion_ros.runtime.backend import Backend, BackendOptions, TorchBackend

__all__ = ["ARCH", "KIND", "SHIPPED", "IvdetDetector", "export_detector_onnx", "load_detector_weights",
           "require_onnx", "save_detector_weights", "shipped_model"]

KIND = "ivfusion-detector"
ARCH = "yolox-nano"
#: The shipped weights: ``detect/weights/ivdet-n.{pt,onnx}``.
SHIPPED = Path(__file__).resolve().parent / "weights" / "ivdet-n"
OUTPUT_NAME = "output0"


def require_onnx(why: str) -> Any:
    """The ``onnx`` module, or a :class:`ModelError` saying to install it (it is not a run-time requirement)."""
    try:
        import onnx
    except ImportError:
        raise ModelError(f"{why} needs the onnx package: pip install onnx") from None
    return onnx


def shipped_model(backend: str) -> Path:
    """The shipped weights file for ``backend`` (``.pt`` for torch, ``.onnx`` otherwise)."""
    return SHIPPED.with_suffix(".pt" if backend == "torch" else ".onnx")


def save_detector_weights(net: YoloxNano, path: str | Path, input_size: tuple[int, int],
                          meta: dict[str, Any] | None = None) -> Path:
    """Write ``net`` as a detector weights file (atomically: a partial file never replaces a good one)."""
    path = Path(path)
    blob = {"kind": KIND, "arch": ARCH, "class_names": list(net.class_names), "input_size": list(input_size),
            "meta": meta or {}, "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}}
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)
    return path


def load_detector_weights(path: str | Path) -> tuple[YoloxNano, dict[str, Any]]:
    """Read a detector weights file: the network (eval mode, CPU) and the file's header (without the weights).

    Raises:
        ModelError: missing, unreadable, not a detector weights file, or weights that do not fit the architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"detector weights not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, pickle of other objects, not a torch file at all
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"cannot read detector weights {path}: {first[:160]}") from None
    if not isinstance(blob, dict) or blob.get("kind") != KIND:
        raise ModelError(f"{path} is not an ivfusion detector weights file (written by ivfusion train-detector)")
    if blob.get("arch") != ARCH:
        raise ModelError(f"{path}: architecture {blob.get('arch')!r} is not supported (only {ARCH})")
    names = blob.get("class_names")
    if not isinstance(names, list) or not names:
        raise ModelError(f"{path}: no class names")
    net = YoloxNano(tuple(str(n) for n in names))
    try:
        net.load_state_dict(blob["state_dict"])
    except (RuntimeError, KeyError, TypeError) as err:
        raise ModelError(f"{path}: weights do not fit {ARCH} with {len(names)} classes: "
                         f"{str(err).strip().splitlines()[0][:160]}") from None
    header = {k: v for k, v in blob.items() if k != "state_dict"}
    return net.eval(), header


def export_detector_onnx(net: YoloxNano, path: str | Path, input_size: tuple[int, int], opset: int = 17) -> Path:
    """Export ``net`` to ONNX with a fixed ``(1, 3, h, w)`` input ``images`` and the decoded ``(1, N, 5 + C)``
    output, class names in the ``names`` metadata (as Ultralytics writes them). Written atomically."""
    onnx = require_onnx("exporting the detector to ONNX")
    path = Path(path)
    w, h = input_size
    net = net.eval()
    with atomic_path(path) as tmp:
        try:
            torch.onnx.export(net, (torch.zeros(1, 3, h, w),), str(tmp), input_names=["images"],
                              output_names=[OUTPUT_NAME], opset_version=opset, dynamo=False)
            model = onnx.load(str(tmp))
            for key, value in (("names", json.dumps(dict(enumerate(net.class_names)))),
                               ("imgsz", json.dumps([h, w])), ("arch", ARCH)):
                entry = model.metadata_props.add()
                entry.key, entry.value = key, value
            onnx.save(model, str(tmp))
        except Exception as err:
            raise ModelError(f"exporting the detector to ONNX failed: {type(err).__name__}: {str(err)[:200]}"
                             ) from None
    return path


@register_detector("ivdet")
class IvdetDetector(YoloDetector):
    """The shipped detector, or a :func:`save_detector_weights` file (see the module docstring).

    Args:
        cfg, device, threads, runtime: as :class:`~ivfusion_ros.detect.yolo.YoloDetector`.
        network: an in-memory network to run instead of a file (training validation), torch backend only.
    """

    name = "ivdet"

    def __init__(self, cfg: DetectorConfig, device: str = "cpu", threads: int = 0,
                 runtime: RuntimeConfig | None = None, network: YoloxNano | None = None) -> None:
        self._network = network
        if network is not None and cfg.backend != "torch":
            raise ConfigError("an in-memory detector network runs on the torch backend only")
        # an in-memory network is named as such (descriptions, messages), not as the shipped file it is not
        model = "in-memory network" if network is not None else cfg.model or str(shipped_model(cfg.backend))
        if cfg.backend != "torch" and model.endswith(".pt"):
            onnx_path = Path(model).with_suffix(".onnx")
            if not onnx_path.is_file():
                raise ModelError(f"detector.backend {cfg.backend} needs the .onnx of {model}; none beside it "
                                 f"(ivfusion train-detector writes both)")
            model = str(onnx_path)
        super().__init__(replace(cfg, model=model), device, threads, runtime)

    def _load_torch(self, model: str, options: BackendOptions) -> tuple[Backend, tuple[int | None, ...]]:
        if self._network is not None:
            net, size, label = self._network, None, "ivdet (in memory)"
        else:
            if model.endswith(".onnx"):
                model = str(Path(model).with_suffix(".pt"))
            net, header = load_detector_weights(model)
            size, label = header.get("input_size"), Path(model).name
        self._meta = {"names": json.dumps(dict(enumerate(net.class_names)))}
        shape: tuple[int | None, ...] = (1, 3, None, None)
        if isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size):
            shape = (1, 3, size[1], size[0])
        return TorchBackend(net, options, label=label, input_names=("images",), output_names=(OUTPUT_NAME,)), shape
