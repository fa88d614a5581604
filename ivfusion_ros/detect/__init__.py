"""Object detection: the :class:`Detector` interface, YOLO decoding, NMS, and the detectors."""

from ivfusion_ros.detect.base import Detections, Detector

__all__ = ["Detections", "Detector"]
