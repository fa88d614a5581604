"""Offline evaluation: image-fusion quality metrics, ground-truth loaders and COCO-style detection mAP.

* :mod:`~ivfusion_ros.eval.metrics`: EN, SD, SF, AG, MI, SCD, CC, VIF, Qabf, Nabf, SSIM, PSNR as the
  infrared-visible fusion literature computes them, and :func:`fusion_metrics` for all of them at once.
* :mod:`~ivfusion_ros.eval.labels`: YOLO txt, Pascal VOC xml and COCO json into :class:`GroundTruth`.
* :mod:`~ivfusion_ros.eval.detection`: :class:`DetectionEvaluator` (faster-coco-eval, else pycocotools).
"""

from __future__ import annotations

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

__all__ = [
    "BACKENDS",
    "METRICS",
    "ClassAP",
    "DetectionEvaluator",
    "DetectionMetrics",
    "GroundTruth",
    "ag",
    "cc",
    "en",
    "fusion_metrics",
    "load_coco",
    "load_voc",
    "load_yolo",
    "load_yolo_classes",
    "mi",
    "mi_pair",
    "nabf",
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
]
