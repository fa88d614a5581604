"""Drawing helpers: boxes land where they should, inputs are untouched, strips have the promised size."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from ivfusion_ros.detect.base import Detections
from ivfusion_ros.errors import InputError, IvfusionError
from ivfusion_ros.viz import class_color, draw_detections, save_rgb, side_by_side, to_bgr


def _dets(boxes: list[list[float]], ids: list[int] | None = None) -> Detections:
    n = len(boxes)
    return Detections(
        np.asarray(boxes, np.float32).reshape(-1, 4),
        np.linspace(0.5, 0.9, n).astype(np.float32),
        np.asarray(ids if ids is not None else [0] * n, np.int64),
        ("person", "car"),
    )


@pytest.fixture()
def dark() -> np.ndarray:
    return np.full((240, 320, 3), 10, np.uint8)


def test_draw_detections_outlines_the_box_and_labels_it(dark: np.ndarray) -> None:
    before = dark.copy()
    out = draw_detections(dark, _dets([[100, 80, 180, 200]]), color=(0, 255, 0))
    np.testing.assert_array_equal(dark, before)  # input untouched
    assert out.shape == dark.shape and out.dtype == np.uint8
    changed = np.any(out != dark, axis=2)
    # All four sides of the outline are drawn ...
    assert changed[80:200, 100].mean() > 0.9 and changed[80:200, 179].mean() > 0.9
    assert changed[199, 100:180].mean() > 0.9 and changed[80:82, 100:180].any(axis=0).mean() > 0.9
    # ... the interior and far-away pixels are not, ...
    assert not changed[120:180, 110:170].any()
    assert not changed[:, 250:].any()
    # ... and a filled tag with the text sits right above the box.
    tag = out[60:80, 100:160]
    assert np.all(tag == (0, 255, 0), axis=2).mean() > 0.3
    assert (tag.max(axis=2) < 100).sum() > 10  # dark text on the bright green tag


def test_draw_detections_per_class_colours_gt_and_gray_input() -> None:
    gray = np.full((200, 300), 30, np.uint8)
    gt = np.array([[20, 20, 80, 150]], np.float32)
    out = draw_detections(gray, _dets([[150, 60, 250, 180]], ids=[1]), gt_boxes=gt)
    assert out.shape == (200, 300, 3)
    assert np.all(out[100, 150] == class_color(1))  # car colour from the palette
    assert np.all(out[100, 20] == 255)  # white GT outline
    assert not np.any(out[60:120, 40:60] != 30)  # GT interior untouched


def test_draw_detections_empty_and_bad_input(dark: np.ndarray) -> None:
    np.testing.assert_array_equal(draw_detections(dark, Detections.empty(("person",))), dark)
    with pytest.raises(InputError):
        draw_detections(dark.astype(np.float32), _dets([[1, 1, 5, 5]]))
    # A box touching the top border keeps its tag inside the image.
    out = draw_detections(dark, _dets([[10, 0, 60, 50]]), color=(255, 0, 0))
    assert np.all(out[2:12, 12:40] == (255, 0, 0), axis=2).mean() > 0.3


def test_side_by_side_size_and_titles() -> None:
    a = np.full((100, 160, 3), 50, np.uint8)
    b = np.full((50, 40), 200, np.uint8)  # gray, half height -> scaled to 100 x 80
    c = np.full((200, 100, 3), 120, np.uint8)  # double height -> 100 x 50
    strip = side_by_side([a, b, c], ["rgb", "thermal", "fused"])
    bar = 18
    assert strip.shape == (100 + bar, 160 + 80 + 50, 3) and strip.dtype == np.uint8
    assert np.all(strip[bar + 50, 200] == 200)  # the gray panel was promoted to 3 channels
    assert strip[:bar].max() > 200 and strip[:bar].min() < 40  # light title text on a dark bar
    big = side_by_side([np.zeros((600, 800, 3), np.uint8)], ["x"])
    assert big.shape == (600 + 36, 800, 3)
    with pytest.raises(InputError):
        side_by_side([a, b], ["only one"])
    with pytest.raises(InputError):
        side_by_side([], [])


def test_to_bgr_and_save_rgb_round_trip(tmp_path: Path) -> None:
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    assert np.all(to_bgr(rgb)[..., 2] == 255) and np.all(to_bgr(rgb)[..., 0] == 0)
    assert to_bgr(np.zeros((4, 5), np.uint8)).shape == (4, 5, 3)
    path = save_rgb(tmp_path / "red.png", rgb)
    assert path == tmp_path / "red.png"
    np.testing.assert_array_equal(cv2.imread(str(path))[..., ::-1], rgb)
    raw = (np.arange(600, dtype=np.uint16).reshape(20, 30) + 28000)  # centi-kelvin thermal
    back = cv2.imread(str(save_rgb(tmp_path / "t.png", raw)), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(back, raw)


def test_save_rgb_failures_name_the_path(tmp_path: Path) -> None:
    img = np.zeros((8, 8, 3), np.uint8)
    missing = tmp_path / "no" / "such" / "dir" / "x.png"
    with pytest.raises(IvfusionError, match=re.escape(str(missing))):
        save_rgb(missing, img)
    with pytest.raises(IvfusionError, match=re.escape("x.unknownext")):
        save_rgb(tmp_path / "x.unknownext", img)
