"""``detector.type: none``: a detector that finds nothing, for fusion-only runs and benchmarks."""

from __future__ import annotations

import numpy as np

from ivfusion_ros.config import DetectorConfig
from ivfusion_ros.detect.base import Detections, Detector, check_rgb
from ivfusion_ros.detect.registry import register_detector

__all__ = ["NullDetector"]


@register_detector("none")
class NullDetector(Detector):
    """Returns empty :class:`Detections` for every valid image (the input is still checked, so a broken
    frame fails the same way whichever detector is configured)."""

    name = "none"

    def __init__(self, cfg: DetectorConfig | None = None, device: str = "cpu", threads: int = 0) -> None:
        del cfg, device, threads  # nothing to configure

    @property
    def class_names(self) -> tuple[str, ...]:
        return ()

    def detect(self, rgb: np.ndarray) -> Detections:
        check_rgb(rgb, "none detector")
        return Detections.empty(self.class_names)
