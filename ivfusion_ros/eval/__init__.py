"""Offline evaluation: image-fusion quality metrics, ground-truth loaders and COCO-style detection mAP.

* :mod:`~ivfusion_ros.eval.metrics`: EN, SD, SF, AG, MI, SCD, CC, VIF, Qabf, Nabf, SSIM, PSNR as the
  infrared-visible fusion literature computes them, and :func:`fusion_metrics` for all of them at once.
* :mod:`~ivfusion_ros.eval.labels`: YOLO txt, Pascal VOC xml and COCO json into :class:`GroundTruth`.
* :mod:`~ivfusion_ros.eval.detection`: :class:`DetectionEvaluator` (faster-coco-eval, else pycocotools).
* :mod:`~ivfusion_ros.eval.dataset`: data sets on disk (image pairs + labels), :func:`open_datasets`.
* :mod:`~ivfusion_ros.eval.harness`: :func:`evaluate`, the engine of ``ivfusion eval`` (imported on first use:
  it loads the pipeline and torch).
* :mod:`~ivfusion_ros.eval.report`: :func:`write_report` (``report.json``, ``report.html``, ``report.md``) from
  per-frame :class:`FrameRecord` s, for ``ivfusion eval`` and the bag replay alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ivfusion_ros.eval.dataset import Dataset, LabelSet, open_dataset, open_datasets
from ivfusion_ros.eval.detection import BACKENDS, ClassAP, DetectionEvaluator, DetectionMetrics
from ivfusion_ros.eval.labels import GroundTruth, load_coco, load_voc, load_yolo, load_yolo_classes
from ivfusion_ros.eval.metrics import (
    METRICS,
    ag,
    cc,
    en,
    fusion_metrics,
    mi,
    mi_pair,
    nabf,
    psnr,
    qabf,
    scd,
    sd,
    sf,
    ssim,
    ssim_pair,
    to_gray,
    vif,
    vif_pair,
)
from ivfusion_ros.eval.report import FramePicker, FrameRecord, Thumbnail, build_report, write_report

if TYPE_CHECKING:
    from ivfusion_ros.eval.harness import EvalResult, evaluate

__all__ = [
    "BACKENDS",
    "METRICS",
    "ClassAP",
    "Dataset",
    "DetectionEvaluator",
    "DetectionMetrics",
    "EvalResult",
    "FramePicker",
    "FrameRecord",
    "GroundTruth",
    "LabelSet",
    "Thumbnail",
    "ag",
    "build_report",
    "cc",
    "en",
    "evaluate",
    "fusion_metrics",
    "load_coco",
    "load_voc",
    "load_yolo",
    "load_yolo_classes",
    "mi",
    "mi_pair",
    "nabf",
    "open_dataset",
    "open_datasets",
    "psnr",
    "qabf",
    "scd",
    "sd",
    "sf",
    "ssim",
    "ssim_pair",
    "to_gray",
    "vif",
    "vif_pair",
    "write_report",
]


def __getattr__(name: str) -> Any:
    if name in ("evaluate", "EvalResult"):
        from ivfusion_ros.eval import harness

        return getattr(harness, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
