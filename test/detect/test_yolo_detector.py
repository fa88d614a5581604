"""YoloDetector end to end on tiny exported ONNX models with known boxes."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
from tiny_yolo_models import GRAY, LAYOUTS, NAMES, NET_H, NET_W, expected_detections

from ivfusion_ros.config import DetectorConfig
from ivfusion_ros.detect import create_detector
from ivfusion_ros.detect.coco import COCO_NAMES
from ivfusion_ros.detect.yolo import YoloDetector, parse_names_metadata
from ivfusion_ros.errors import ConfigError, InputError, ModelError


def _cfg(model: Path, **kw) -> DetectorConfig:
    kw.setdefault("class_names", NAMES)
    return DetectorConfig(type="yolo", model=str(model), **kw)


def _check(det, expected) -> None:
    assert len(det) == len(expected), (det.to_dicts(), [e[0] for e in expected])
    np.testing.assert_allclose(det.boxes, np.array([e[1] for e in expected]).reshape(-1, 4), atol=1.0)
    # atol: ORT sums ~80k float32 values for the input mean, so "F" is off by ~1e-4.
    np.testing.assert_allclose(det.scores, [e[2] for e in expected], atol=1e-3)
    np.testing.assert_array_equal(det.class_ids, [e[3] for e in expected])
    assert det.boxes.dtype == np.float32 and det.scores.dtype == np.float32
    assert det.class_ids.dtype == np.int64
    assert det.names() == [NAMES[e[3]] for e in expected]


@pytest.mark.parametrize("size", [(640, 480), (300, 500), (NET_W, NET_H)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("layout", LAYOUTS)
def test_known_boxes_end_to_end(tiny_models, gray_image, layout, size) -> None:
    w, h = size
    det = YoloDetector(_cfg(tiny_models[layout]))
    assert det.layout == layout  # auto-detected from the static output shape
    assert det.input_size == (NET_W, NET_H)
    result = det.detect(gray_image(w, h))
    expected = expected_detections(layout, w, h)
    _check(result, expected)
    keys = {e[0] for e in expected}
    assert "F" in keys  # the box scored by the input mean
    assert ("B" in keys) == (layout == "end2end")  # NMS ran for raw heads only
    assert "C" in keys  # overlaps A, other class: class-wise NMS keeps it
    assert result.class_names == NAMES


def test_tall_image_drops_boxes_in_padding_and_clips(tiny_models, gray_image) -> None:
    det = YoloDetector(_cfg(tiny_models["yolov8"]))
    result = det.detect(gray_image(300, 500))
    keys = [e[0] for e in expected_detections("yolov8", 300, 500)]
    assert "G" not in keys  # lay in the left padding
    assert (result.boxes[:, 0::2] >= 0).all() and (result.boxes[:, 0::2] <= 300).all()
    assert (result.boxes[:, 1::2] >= 0).all() and (result.boxes[:, 1::2] <= 500).all()
    assert np.isclose(result.boxes[:, 2], 300).any()  # "D" reached into the right padding


def test_boxes_in_padding_do_not_count_towards_max_detections(tiny_models, gray_image) -> None:
    # On a 300x500 image "G" (score 0.5) lies in the padding; the 4 kept boxes are the 4 best real ones.
    det = YoloDetector(_cfg(tiny_models["yolov8"], max_detections=4))
    result = det.detect(gray_image(300, 500))
    np.testing.assert_allclose(result.scores, [0.9, 0.8, 0.7, 0.45], atol=1e-6)


def test_score_follows_the_input(tiny_models, gray_image) -> None:
    det = YoloDetector(_cfg(tiny_models["yolov5"]))
    dark = det.detect(gray_image(640, 480, level=20))  # mean well below 0.25 -> "F" is gone
    assert len(dark) == len(expected_detections("yolov5", 640, 480)) - 1
    assert not np.isclose(dark.scores, GRAY / 255, atol=1e-3).any()


def test_repeated_calls_and_size_changes(tiny_models, gray_image) -> None:
    det = YoloDetector(_cfg(tiny_models["yolov8"]))
    for w, h in [(640, 480), (300, 500), (640, 480)]:
        _check(det.detect(gray_image(w, h)), expected_detections("yolov8", w, h))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layout_override(tiny_models, gray_image, layout) -> None:
    det = YoloDetector(_cfg(tiny_models[layout], layout=layout))
    assert det.layout == layout
    _check(det.detect(gray_image(640, 480)), expected_detections(layout, 640, 480))


def test_layout_override_that_does_not_fit(tiny_models) -> None:
    with pytest.raises(ModelError, match=r"\[1, 7, 9\] does not fit detector\.layout end2end"):
        YoloDetector(_cfg(tiny_models["yolov8"], layout="end2end"))


def test_max_detections_and_threshold(tiny_models, gray_image) -> None:
    det = YoloDetector(_cfg(tiny_models["yolov8"], max_detections=2))
    result = det.detect(gray_image(640, 480))
    np.testing.assert_allclose(result.scores, [0.9, 0.8], atol=1e-6)
    det = YoloDetector(_cfg(tiny_models["yolov8"], score_threshold=0.75))
    np.testing.assert_allclose(det.detect(gray_image(640, 480)).scores, [0.9, 0.8], atol=1e-6)


def test_float16_model(tiny_models, gray_image) -> None:
    det = YoloDetector(_cfg(tiny_models["yolov8_half"]))
    result = det.detect(gray_image(640, 480))
    expected = expected_detections("yolov8", 640, 480)
    assert len(result) == len(expected)
    np.testing.assert_allclose(result.boxes, np.array([e[1] for e in expected]), atol=1.0)
    np.testing.assert_allclose(result.scores, [e[2] for e in expected], atol=2e-3)


# --- input size ------------------------------------------------------------------------------------------


def test_dynamic_model_defaults_to_640(tiny_models, gray_image) -> None:
    det = YoloDetector(_cfg(tiny_models["yolov8_dynamic"]))
    assert det.input_size == (640, 640)
    result = det.detect(gray_image(640, 480))
    _check(result, expected_detections("yolov8", 640, 480, net_w=640, net_h=640))


def test_dynamic_model_with_configured_size(tiny_models, gray_image) -> None:
    det = YoloDetector(_cfg(tiny_models["yolov8_dynamic"], input_size=(NET_W, NET_H)))
    assert det.input_size == (NET_W, NET_H)
    _check(det.detect(gray_image(300, 500)), expected_detections("yolov8", 300, 500))


def test_configured_size_must_match_static_model(tiny_models) -> None:
    with pytest.raises(
        ConfigError,
        match=r"detector\.input_size: \[640, 640\] does not match the fixed input 320x256 \(WxH\) of model "
        r".*yolov8\.onnx",
    ):
        YoloDetector(_cfg(tiny_models["yolov8"], input_size=(640, 640)))
    with pytest.raises(ConfigError, match=r"detector\.input_size: \[320, 0\] sets only one side"):
        YoloDetector(_cfg(tiny_models["yolov8"], input_size=(320, 0)))


# --- class names -----------------------------------------------------------------------------------------


def test_names_from_metadata(tiny_models, gray_image) -> None:
    det = YoloDetector(_cfg(tiny_models["yolov8_names"], class_names=()))
    assert det.class_names == NAMES
    result = det.detect(gray_image(640, 480))
    assert result.names() == [NAMES[e[3]] for e in expected_detections("yolov8", 640, 480)]


def test_config_names_win_over_metadata(tiny_models) -> None:
    det = YoloDetector(_cfg(tiny_models["yolov8_names"], class_names=("a", "b", "c")))
    assert det.class_names == ("a", "b", "c")


def test_names_from_file(tiny_models, tmp_path: Path) -> None:
    names_file = tmp_path / "classes.txt"
    names_file.write_text("car\n  person \n\ndog\n", encoding="utf-8")
    det = YoloDetector(_cfg(tiny_models["yolov8_names"], class_names=(), class_names_file=str(names_file)))
    assert det.class_names == NAMES


def test_names_file_errors(tiny_models, tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(ConfigError, match=rf"class_names_file: file not found: {re.escape(str(missing))}"):
        YoloDetector(_cfg(tiny_models["yolov8"], class_names=(), class_names_file=str(missing)))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.txt is not UTF-8 text"):
        YoloDetector(_cfg(tiny_models["yolov8"], class_names=(), class_names_file=str(latin1)))
    blank = tmp_path / "blank.txt"
    blank.write_text("\n \n")
    with pytest.raises(ConfigError, match=r"blank\.txt holds no class names"):
        YoloDetector(_cfg(tiny_models["yolov8"], class_names=(), class_names_file=str(blank)))


def test_coco_fallback_warns_about_class_count(tiny_models, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ivfusion_ros.detect.yolo"):
        det = YoloDetector(_cfg(tiny_models["yolov8"], class_names=()))
    assert det.class_names == COCO_NAMES
    assert "predicts 3 classes but the class table (coco) has 80 names" in caplog.text


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("{0: 'person', 1: 'bicycle'}", ("person", "bicycle")),
        ('{"0": "person", "1": "bicycle"}', ("person", "bicycle")),
        ("['a', 'b', 'c']", ("a", "b", "c")),
        ("{0: 'a', 2: 'c'}", ("a", "1", "c")),
        ("__import__('os').system('true')", None),
        ("{'x': 'a'}", None),
        ("{-1: 'a'}", None),
        ("not a literal", None),
        ("42", None),
        ("", None),
    ],
)
def test_parse_names_metadata(text, names) -> None:
    assert parse_names_metadata(text) == names


# --- errors and the registry -----------------------------------------------------------------------------


def test_missing_and_corrupt_model(tmp_path: Path) -> None:
    missing = tmp_path / "missing.onnx"
    with pytest.raises(ModelError, match=rf"model file not found: {re.escape(str(missing))}"):
        YoloDetector(_cfg(missing))
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(np.random.default_rng(1).bytes(2048))
    with pytest.raises(ModelError, match=rf"{re.escape(str(corrupt))}: the file is corrupt or not an ONNX"):
        create_detector(_cfg(corrupt))
    with pytest.raises(ConfigError, match=r"detector\.model: is empty"):
        YoloDetector(DetectorConfig(type="yolo"))


@pytest.mark.parametrize(
    ("image", "message", "reason"),
    [
        (np.zeros((48, 64, 2), np.uint8), r"expected 3 channels \(H, W, 3\) RGB, got shape \(48, 64, 2\)",
         "bad_channels"),
        (np.zeros((48, 64), np.uint8), r"expected 3 channels .* got shape \(48, 64\)", "bad_channels"),
        (np.zeros((0, 0, 3), np.uint8), r"the image is empty \(shape \(0, 0, 3\)\)", "empty"),
        (np.zeros((48, 64, 3), np.float32), r"expected a uint8 RGB image, got dtype float32", "bad_encoding"),
        ([[1, 2, 3]], r"expected a numpy uint8 RGB image .* got list", "bad_type"),
    ],
    ids=["2-channel", "gray-2d", "empty", "float", "list"],
)
def test_bad_input(tiny_models, image, message, reason) -> None:
    det = YoloDetector(_cfg(tiny_models["yolov8"]))
    with pytest.raises(InputError, match=rf"^yolo detector input: {message}") as info:
        det.detect(image)
    assert info.value.reason == reason


def test_created_through_registry(tiny_models, gray_image) -> None:
    det = create_detector(_cfg(tiny_models["end2end"]), device="cpu", threads=1)
    assert isinstance(det, YoloDetector)
    assert det.name == "yolo"
    assert det.describe() == f"yolo end2end.onnx (end2end, {NET_W}x{NET_H}, CPU)"
    assert len(det.detect(gray_image(64, 48))) > 0
