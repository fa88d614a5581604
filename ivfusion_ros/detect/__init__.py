"""Object detection: the :class:`Detector` interface, YOLO decoding, NMS, and the detectors.

Create detectors with :func:`create_detector`; the detector modules (and onnxruntime, for ``yolo``) are
imported only when their detector is created.
"""

from ivfusion_ros.detect.base import Detections, Detector, check_rgb
from ivfusion_ros.detect.registry import create_detector, list_detectors, register_detector

__all__ = ["Detections", "Detector", "check_rgb", "create_detector", "list_detectors", "register_detector"]
