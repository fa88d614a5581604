"""Tiny ONNX "YOLO" models with known outputs, for tests and benchmarks of the YOLO detector.

Each model is a real ONNX graph (ReduceMean, Mul, Add) whose output is a constant table of candidate boxes
in one of the three output layouts, plus one candidate (``"F"``) whose score is the mean of the input
tensor. Feeding a uniform gray image of level 114 (the letterbox pad value) makes that mean exactly
114/255 whatever the image size, so every expected detection is known in closed form.

Usable outside pytest (no fixtures here), e.g. from a benchmark::

    from tiny_yolo_models import build_model
    path = build_model("yolov8", tmp_dir / "v8.onnx")

Export uses torch's legacy TorchScript exporter (``torch.onnx.export(..., dynamo=False)``, opset 17): in
torch 2.13 it works offline, takes ~0.1 s per model and needs no onnxscript. The dynamo exporter also works
but takes ~3 s per model and lifts the opset to 18 before converting down.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Network input of the static models (width, height): non-square on purpose.
NET_W, NET_H = 320, 256
NAMES: tuple[str, ...] = ("car", "person", "dog")
NUM_CLASSES = len(NAMES)
#: Class score of the non-winning classes of every candidate (so the argmax matters).
OTHER_CLASS_SCORE = 0.05
#: Rows of the end-to-end output (padded with score-0 rows).
END2END_K = 20
GRAY = 114


@dataclass(frozen=True)
class Candidate:
    """One candidate box in network pixels; its score is ``obj * cls_score`` (``obj`` only differs from 1
    in the YOLOv5 encoding; the other layouts store the product)."""

    key: str
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in network pixels
    cls: int
    cls_score: float
    obj: float = 1.0
    from_mean: bool = False  # score (obj in v5) replaced by the input mean

    @property
    def score(self) -> float:
        return self.obj * self.cls_score


CANDIDATES: tuple[Candidate, ...] = (
    Candidate("A", (70, 80, 130, 120), 0, 0.90),
    Candidate("B", (74, 82, 134, 122), 0, 0.60),  # IoU 0.80 with A, same class: NMS removes it
    Candidate("C", (74, 82, 134, 122), 1, 0.80),  # same place as B, other class: survives NMS
    Candidate("D", (225, 140, 275, 220), 2, 0.70),  # partly in the side padding of tall images: clipped
    Candidate("E", (20, 30, 60, 90), 1, 0.10),  # below the 0.25 threshold
    Candidate("F", (100, 180, 140, 210), 1, 1.0, obj=0.0, from_mean=True),  # score = input mean
    Candidate("G", (5, 60, 40, 100), 2, 0.50),  # inside the side padding of tall images: dropped there
    Candidate("H", (150, 30, 200, 70), 2, 0.90, obj=0.5),  # 0.45 = obj * cls (YOLOv5 product)
    Candidate("I", (210, 20, 250, 60), 0, 1.0, obj=0.2),  # 0.20: below threshold
)
#: Candidates that class-wise NMS at IoU 0.45 removes (not applied to end-to-end models).
NMS_SUPPRESSED = frozenset({"B"})
LAYOUTS = ("yolov5", "yolov8", "end2end")


def _cxcywh(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = box
    return (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1


def output_tables(layout: str) -> tuple[np.ndarray, np.ndarray]:
    """Constant output table and the mask that receives the input mean, both shaped like the output."""
    n, c = len(CANDIDATES), NUM_CLASSES
    if layout in ("yolov5", "yolov8"):
        rows = np.zeros((n, 5 + c), np.float32)
        mask = np.zeros_like(rows)
        for i, cand in enumerate(CANDIDATES):
            rows[i, :4] = _cxcywh(cand.box)
            if layout == "yolov5":
                rows[i, 4] = cand.obj
                rows[i, 5:] = OTHER_CLASS_SCORE
                rows[i, 5 + cand.cls] = cand.cls_score
                if cand.from_mean:
                    rows[i, 4], mask[i, 4] = 0.0, 1.0
            else:
                rows[i, 4:] = 0.0
                rows[i, 5:] = OTHER_CLASS_SCORE
                rows[i, 5 + cand.cls] = cand.score
                if cand.from_mean:
                    rows[i, 5 + cand.cls], mask[i, 5 + cand.cls] = 0.0, 1.0
        if layout == "yolov5":
            return rows[None], mask[None]
        # v8: drop the objectness column and transpose to [1, 4 + C, N]
        keep = [0, 1, 2, 3, *range(5, 5 + c)]
        return rows[:, keep].T[None].copy(), mask[:, keep].T[None].copy()
    if layout == "end2end":
        rows = np.zeros((END2END_K, 6), np.float32)
        mask = np.zeros_like(rows)
        for i, cand in enumerate(CANDIDATES):
            rows[i, :4] = cand.box
            rows[i, 4] = 0.0 if cand.from_mean else cand.score
            rows[i, 5] = cand.cls
            mask[i, 4] = 1.0 if cand.from_mean else 0.0
        return rows[None], mask[None]
    raise ValueError(layout)


def make_module(layout: str):  # -> torch.nn.Module (torch imported lazily)
    """``nn.Module`` returning ``table + mean(input) * mask`` in the given layout."""
    import torch

    table, mask = output_tables(layout)

    class ConstantHead(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("table", torch.from_numpy(table))
            self.register_buffer("mask", torch.from_numpy(mask))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.table + x.mean() * self.mask

    return ConstantHead().eval()


def export_onnx(
    module, path: Path, *, width: int = NET_W, height: int = NET_H, dynamic: bool = False,
    half: bool = False, opset: int = 17,
) -> Path:
    """Export ``module`` with input ``images [1, 3, height, width]`` and output ``output0``."""
    import torch

    dummy = torch.zeros(1, 3, height, width)
    if half:
        module, dummy = module.half(), dummy.half()
    kwargs: dict = {"input_names": ["images"], "output_names": ["output0"], "opset_version": opset}
    if dynamic:
        kwargs["dynamic_axes"] = {"images": {2: "height", 3: "width"}}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # torch >= 2.5 (where the default later became the dynamo exporter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter announces its deprecation
        torch.onnx.export(module, (dummy,), str(path), **kwargs)
    return Path(path)


def add_metadata(path: Path, **items: str) -> Path:
    """Add ``metadata_props`` entries (as Ultralytics does for ``names``) to an ONNX file in place."""
    import onnx

    model = onnx.load(str(path))
    for key, value in items.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return Path(path)


def build_model(
    layout: str, path: Path, *, dynamic: bool = False, half: bool = False, names_metadata: str | None = None,
) -> Path:
    """Export the tiny model of ``layout`` to ``path`` (optionally with ``names`` metadata)."""
    export_onnx(make_module(layout), path, dynamic=dynamic, half=half)
    if names_metadata is not None:
        add_metadata(path, names=names_metadata)
    return Path(path)


def expected_detections(
    layout: str, img_w: int, img_h: int, *, net_w: int = NET_W, net_h: int = NET_H, gray: int = GRAY,
    score_threshold: float = 0.25,
) -> list[tuple[str, np.ndarray, float, int]]:
    """``[(key, box in image pixels, score, class)]`` by decreasing score, for a uniform ``gray`` image.

    Independent of the package: recomputes the YOLO letterbox geometry (scale ``min(W/w, H/h)``, rounded
    resized size, centred with ``round(pad/2 - 0.1)``), clips to the image and drops empty boxes.
    Valid when the image is uniform (the input mean is then exactly ``gray / 255``).
    """
    r = min(net_w / img_w, net_h / img_h)
    nw, nh = round(img_w * r), round(img_h * r)
    left, top = round((net_w - nw) / 2 - 0.1), round((net_h - nh) / 2 - 0.1)
    mean = gray / 255.0
    out = []
    for cand in CANDIDATES:
        score = (mean * cand.cls_score if layout == "yolov5" else mean) if cand.from_mean else cand.score
        if score < score_threshold:
            continue
        if layout != "end2end" and cand.key in NMS_SUPPRESSED:
            continue
        x1, y1, x2, y2 = cand.box
        box = np.array(
            [(x1 - left) * img_w / nw, (y1 - top) * img_h / nh, (x2 - left) * img_w / nw,
             (y2 - top) * img_h / nh]
        )
        box[0::2] = box[0::2].clip(0, img_w)
        box[1::2] = box[1::2].clip(0, img_h)
        if box[2] <= box[0] or box[3] <= box[1]:
            continue
        out.append((cand.key, box, score, cand.cls))
    out.sort(key=lambda t: -t[2])
    return out
