from __future__ import annotations

import numpy as np
import pytest

from ivfusion_ros.config import PipelineConfig, update_config
from ivfusion_ros.detect.base import Detections, Detector
from ivfusion_ros.errors import InputError, ModelError
from ivfusion_ros.pipeline import STAGES, Pipeline


class RecordingDetector(Detector):
    """Finds one 'blob' box around the brightest region of whatever image it is given."""

    name = "recording"

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []

    @property
    def class_names(self) -> tuple[str, ...]:
        return ("blob",)

    def detect(self, rgb: np.ndarray) -> Detections:
        self.seen.append(rgb)
        ys, xs = np.nonzero(rgb.mean(axis=2) > 200)
        if len(xs) == 0:
            return Detections.empty(self.class_names)
        box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
        return Detections(box, np.array([0.9], np.float32), np.array([0]), self.class_names)


def _cfg(**flat) -> PipelineConfig:
    return update_config(PipelineConfig(), **{"runtime.device": "cpu", "detector.type": "none", **flat})


def _night_frame(shift: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """Radiometric thermal (mono16, centi-Kelvin) with a warm person, and a dark RGB image."""
    h, w = 96, 128
    thermal = np.full((h, w), 28500, np.uint16)
    thermal[30 + shift[1]:70 + shift[1], 50 + shift[0]:62 + shift[0]] = 30800
    rgb = np.full((h, w, 3), 10, np.uint8)
    return thermal, rgb


def test_process_night_pair_end_to_end() -> None:
    det = RecordingDetector()
    pipe = Pipeline(_cfg(), detector=det)
    thermal, rgb = _night_frame()
    res = pipe.process(thermal, rgb, stamp=12.5, keep_inputs=True)
    assert res.fused.shape == (96, 128, 3) and res.fused.dtype == np.uint8
    assert res.stamp == 12.5 and res.regime == "night" and res.variant == "adaptive"
    assert set(res.timings) == set(STAGES) and all(v >= 0 for v in res.timings.values())
    # the warm person, invisible in RGB, is bright in the fused image and detected there
    assert res.fused[35:65, 52:60].mean() > 150 > res.rgb[35:65, 52:60].mean() + 100
    assert len(res.detections) == 1
    np.testing.assert_allclose(res.detections.boxes[0], [50, 30, 62, 70], atol=3)
    assert det.seen[-1] is res.fused  # detector input: fused by default


def test_registration_is_applied() -> None:
    # the thermal camera sees the scene shifted by (+10, +5) px: H maps thermal pixel -> RGB pixel
    h = [1, 0, -10, 0, 1, -5, 0, 0, 1]
    pipe = Pipeline(_cfg(**{"registration.homography": h}), detector=RecordingDetector())
    thermal, rgb = _night_frame(shift=(10, 5))
    res = pipe.process(thermal, rgb)
    np.testing.assert_allclose(res.detections.boxes[0], [50, 30, 62, 70], atol=3)


@pytest.mark.parametrize(("source", "expect_bright"), [("rgb", False), ("thermal", True)])
def test_detector_input_source(source: str, expect_bright: bool) -> None:
    det = RecordingDetector()
    pipe = Pipeline(_cfg(**{"detector.input": source}), detector=det)
    pipe.process(*_night_frame())
    assert det.seen[-1].shape == (96, 128, 3)
    assert bool(det.seen[-1].max() > 200) == expect_bright


def test_output_size() -> None:
    pipe = Pipeline(_cfg(**{"registration.output_width": 64, "registration.output_height": 48}))
    res = pipe.process(*_night_frame(), keep_inputs=True)
    assert res.fused.shape == (48, 64, 3) and res.thermal.shape == (48, 64) and res.rgb.shape == (48, 64, 3)


def test_variant_per_regime() -> None:
    pipe = Pipeline(_cfg(**{"fusion.variant_night": "max", "fusion.variant_day": "average"}))
    thermal, rgb = _night_frame()
    assert pipe.process(thermal, rgb).variant == "max"
    assert pipe.process(thermal, np.full_like(rgb, 200)).variant == "average"
    assert pipe.process(thermal, np.full_like(rgb, 70)).variant == "adaptive"  # dusk


def test_bad_input_raises_input_error() -> None:
    pipe = Pipeline(_cfg())
    thermal, rgb = _night_frame()
    with pytest.raises(InputError, match="cannot infer an encoding from dtype int32"):
        pipe.process(thermal.astype(np.int32), rgb)
    with pytest.raises(InputError, match="needs 3 channel"):
        pipe.process(thermal, rgb[:, :, :2])
    with pytest.raises(InputError, match="unsupported encoding"):
        pipe.process(thermal, rgb, rgb_encoding="yuv422")


def test_runtime_update_keeps_state_and_structural_update_rebuilds() -> None:
    pipe = Pipeline(_cfg())
    thermal, rgb = _night_frame()
    pipe.process(thermal, rgb)
    fuser = pipe.fusers["adaptive"]
    changed = pipe.update_config(update_config(pipe.config, **{"fusion.ir_weight_dark": 0.5,
                                                               "illumination.hysteresis": 0.1}))
    assert sorted(changed) == ["fusion.ir_weight_dark", "illumination.hysteresis"]
    assert pipe.fusers["adaptive"] is fuser and fuser.cfg.ir_weight_dark == 0.5
    assert pipe.illumination.tracker.regime is not None  # regime state kept
    pipe.update_config(update_config(pipe.config, **{"fusion.variant": "max"}))
    assert list(pipe.fusers) == ["max"] and pipe.process(thermal, rgb).variant == "max"


def test_failed_rebuild_leaves_pipeline_unchanged() -> None:
    pipe = Pipeline(_cfg())
    old = pipe.config
    bad = update_config(old, **{"detector.type": "yolo", "detector.model": "/nonexistent/model.onnx"})
    with pytest.raises(ModelError, match="/nonexistent/model.onnx"):
        pipe.update_config(bad)
    assert pipe.config is old
    pipe.process(*_night_frame())


def test_process_single_rgb_detects_on_the_rgb_image() -> None:
    det = RecordingDetector()
    pipe = Pipeline(_cfg(**{"registration.output_width": 64, "registration.output_height": 48}), detector=det)
    _, rgb = _night_frame()
    rgb[10:20, 10:20] = 255
    res = pipe.process_single(rgb, "rgb", stamp=3.0)
    assert res.mode == "rgb_only" and res.variant == "none" and res.stamp == 3.0
    assert res.fused.shape == (48, 64, 3) and det.seen[-1] is res.fused
    assert res.regime == "night" and 0.0 <= res.illumination < 0.2
    np.testing.assert_allclose(res.detections.boxes[0], [5, 5, 10, 10], atol=1.5)
    assert set(res.timings) == {"preprocess", "illumination", "postprocess", "detect"}
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    np.testing.assert_array_equal(Pipeline(_cfg()).process_single(bgr, "rgb", encoding="bgr8").fused, rgb)


def test_process_single_thermal_in_rgb_geometry_or_its_own() -> None:
    h = [1, 0, -10, 0, 1, -5, 0, 0, 1]
    det = RecordingDetector()
    pipe = Pipeline(_cfg(**{"registration.homography": h}), detector=det)
    thermal, _ = _night_frame(shift=(10, 5))
    res = pipe.process_single(thermal, "thermal", rgb_size=(128, 96))
    assert res.mode == "thermal_only" and res.regime == "unknown" and res.fused.shape == (96, 128, 3)
    np.testing.assert_allclose(res.detections.boxes[0], [50, 30, 62, 70], atol=3)  # registered
    small = thermal[::2, ::2]
    res = pipe.process_single(small, "thermal", encoding="mono16")
    assert res.fused.shape == (48, 64, 3)  # no RGB geometry known: the thermal camera's own
    np.testing.assert_allclose(res.detections.boxes[0], [30, 17.5, 36, 37.5], atol=2)


def test_process_single_errors() -> None:
    pipe = Pipeline(_cfg())
    thermal, rgb = _night_frame()
    with pytest.raises(ValueError, match="modality must be rgb or thermal"):
        pipe.process_single(rgb, "depth")
    with pytest.raises(InputError, match="cannot infer an encoding") as err:
        pipe.process_single(thermal.astype(np.int64), "thermal")
    assert err.value.reason == "bad_encoding"
    with pytest.raises(InputError, match="needs 3 channel"):
        pipe.process_single(thermal.astype(np.uint8), "rgb")


def test_read_only_inputs_are_accepted_without_warnings() -> None:
    import warnings

    thermal, rgb = _night_frame()
    thermal.flags.writeable = False
    rgb.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = Pipeline(_cfg()).process(thermal, rgb)
    assert res.fused.shape == (96, 128, 3)
