"""The detector registry and the null detector."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ivfusion_ros.config import DetectorConfig
from ivfusion_ros.detect import Detections, Detector, create_detector, list_detectors, register_detector
from ivfusion_ros.detect.null import NullDetector
from ivfusion_ros.detect.registry import _REGISTRY
from ivfusion_ros.errors import ConfigError, InputError

REPO = Path(__file__).resolve().parents[2]


def test_builtins_listed() -> None:
    assert {"hog", "yolo", "none"} <= set(list_detectors())


def test_unknown_type_lists_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"detector\.type: unknown detector 'ssd'; valid: .*hog.*none"):
        create_detector(DetectorConfig(type="ssd"))


def test_null_detector() -> None:
    det = create_detector(DetectorConfig(type="none"))
    assert isinstance(det, NullDetector) and det.name == "none"
    result = det.detect(np.zeros((4, 4, 3), np.uint8))
    assert len(result) == 0 and result.boxes.shape == (0, 4)
    with pytest.raises(InputError, match=r"none detector input: expected 3 channels"):
        det.detect(np.zeros((4, 4), np.uint8))


def test_register_custom_detector() -> None:
    @register_detector("test_fixed")
    class Fixed(Detector):
        def __init__(self, cfg, device="cpu", threads=0) -> None:
            self.device = device

        @property
        def class_names(self):
            return ("thing",)

        def detect(self, rgb):
            return Detections(np.array([[0, 0, 1, 1]], np.float32), np.ones(1, np.float32),
                              np.zeros(1, np.int64), self.class_names)

    try:
        assert "test_fixed" in list_detectors()
        det = create_detector(DetectorConfig(type="test_fixed"), device="cuda")
        assert isinstance(det, Fixed) and det.name == "test_fixed" and det.device == "cuda"
        with pytest.raises(ValueError, match=r"detector 'test_fixed' is already registered"):
            register_detector("test_fixed")(NullDetector)
    finally:
        _REGISTRY.pop("test_fixed", None)


def test_hog_does_not_import_onnxruntime() -> None:
    code = (
        "import sys, numpy as np\n"
        "from ivfusion_ros.config import DetectorConfig\n"
        "from ivfusion_ros.detect import create_detector\n"
        "create_detector(DetectorConfig(type='hog')).detect(np.zeros((64, 64, 3), np.uint8))\n"
        "assert 'onnxruntime' not in sys.modules and 'torch' not in sys.modules\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=env)
