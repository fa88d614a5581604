"""The synthetic night street: determinism, radiometry, geometry and the properties the demo relies on.

The demo only makes its point if the scene really is what it claims: pedestrians that plain OpenCV HOG
finds in thermal but that are buried in noise in RGB, a glare that saturates the RGB camera, a thermal
image that needs the homography to line up. These tests measure exactly that, with plain cv2 code.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from ivfusion_ros.demo.scene import CLASS_NAMES, DEFAULT_H, DEFAULT_H_TUPLE, NightStreetScene, SceneFrame
from ivfusion_ros.detect.base import Detections
from ivfusion_ros.errors import ConfigError

W, H = 640, 512
FRAME = 12


@pytest.fixture(scope="module")
def scene() -> NightStreetScene:
    return NightStreetScene(seed=0)


@pytest.fixture(scope="module")
def frame(scene: NightStreetScene) -> SceneFrame:
    return scene.frame(FRAME)


def register(thermal: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Thermal (centi-K, thermal grid) -> kelvin float32 on the RGB grid, and the valid-pixel mask."""
    kelvin = cv2.warpPerspective(thermal.astype(np.float32) / 100.0, h, (W, H), flags=cv2.INTER_LINEAR)
    valid = cv2.warpPerspective(np.ones(thermal.shape, np.uint8), h, (W, H), flags=cv2.INTER_NEAREST) > 0
    return kelvin, valid


def to8(img: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Percentile 1..99 normalisation over the valid pixels to uint8 (invalid -> 0)."""
    lo, hi = np.percentile(img[valid], [1, 99])
    return np.where(valid, np.clip((img - lo) / (hi - lo) * 255.0, 0, 255), 0).astype(np.uint8)


def hog_people(gray: np.ndarray) -> np.ndarray:
    """OpenCV's default people detector, boxes x1y1x2y2 shrunk to the person inside the 64x128 window
    (the package's measured margins, ``WINDOW_MARGIN``)."""
    from ivfusion_ros.detect.hog import WINDOW_MARGIN

    ml, mt, mr, mb = WINDOW_MARGIN

    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    rects, _ = hog.detectMultiScale(gray, winStride=(8, 8), padding=(8, 8), scale=1.05)
    r = np.asarray(rects, np.float32).reshape(-1, 4)
    return np.stack([r[:, 0] + ml * r[:, 2], r[:, 1] + mt * r[:, 3],
                     r[:, 0] + (1 - mr) * r[:, 2], r[:, 1] + (1 - mb) * r[:, 3]], axis=1)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (N, 4) and (M, 4) x1y1x2y2 boxes -> (N, M)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def box_contrast(img: np.ndarray, box: np.ndarray) -> float:
    """|mean of the box's central column band - mean of a surrounding ring| / 255."""
    x0, y0, x1, y1 = (int(v) for v in box)
    w, h = x1 - x0, y1 - y0
    core = img[y0 + h // 10 : y1 - h // 10, x0 + w // 3 : x1 - w // 3].astype(np.float64)
    ox0, oy0, ox1, oy1 = max(0, x0 - w // 2), max(0, y0 - h // 8), min(W, x1 + w // 2), min(H, y1 + h // 8)
    outer = img[oy0:oy1, ox0:ox1].astype(np.float64)
    ring = np.ones(outer.shape[:2], bool)
    ring[y0 - oy0 : y1 - oy0, x0 - ox0 : x1 - ox0] = False
    return abs(core.mean() - outer[ring].mean()) / 255.0


# ----------------------------------------------------------------------------- API, shapes, determinism
def test_default_homography_is_the_documented_small_misalignment() -> None:
    assert DEFAULT_H.shape == (3, 3) and DEFAULT_H.dtype == np.float64
    assert len(DEFAULT_H_TUPLE) == 9
    np.testing.assert_array_equal(DEFAULT_H.ravel(), np.asarray(DEFAULT_H_TUPLE))
    a, b = DEFAULT_H[0, 0], DEFAULT_H[1, 0]
    assert math.degrees(math.atan2(b, a)) == pytest.approx(1.5, abs=0.05)
    assert math.hypot(a, b) == pytest.approx(0.96, abs=0.005)
    centre = DEFAULT_H @ np.array([320.0, 256.0, 1.0])
    np.testing.assert_allclose(centre[:2] / centre[2], [335.0, 246.0], atol=1.0)


def test_frame_shapes_dtypes_and_ground_truth(scene: NightStreetScene, frame: SceneFrame) -> None:
    assert len(scene) == 24
    assert frame.index == FRAME and frame.stamp == pytest.approx(FRAME / 10.0)
    assert frame.thermal.shape == (H, W) and frame.thermal.dtype == np.uint16
    assert frame.rgb.shape == (H, W, 3) and frame.rgb.dtype == np.uint8
    n = len(frame.boxes)
    assert frame.boxes.shape == (n, 4) and frame.boxes.dtype == np.float32
    assert frame.class_ids.shape == (n,) and frame.class_ids.dtype == np.int64
    assert frame.visible_in_rgb.shape == (n,) and frame.visible_in_rgb.dtype == bool
    assert frame.class_names == CLASS_NAMES == ("person", "car")
    assert sorted(frame.class_ids.tolist()) == [0, 0, 0, 1]
    assert np.all(frame.boxes[:, 2] > frame.boxes[:, 0]) and np.all(frame.boxes[:, 3] > frame.boxes[:, 1])
    assert frame.boxes.min() >= 0 and np.all(frame.boxes[:, [2, 3]] <= [W, H])
    heights = (frame.boxes[:, 3] - frame.boxes[:, 1])[frame.class_ids == 0]
    assert np.all((heights > 130) & (heights < 230)), heights
    gt = frame.gt_detections()
    assert isinstance(gt, Detections) and len(gt) == n and np.all(gt.scores == 1.0)
    assert gt.names().count("person") == 3


def test_iteration_and_index_errors() -> None:
    small = NightStreetScene(width=160, height=128, num_frames=3, fps=5.0, seed=4)
    frames = list(small)
    assert [f.index for f in frames] == [0, 1, 2]
    assert [f.stamp for f in frames] == pytest.approx([0.0, 0.2, 0.4])
    assert frames[0].rgb.shape == (128, 160, 3) and frames[0].thermal.shape == (128, 160)
    assert small.frame(-1).index == 2
    with pytest.raises(IndexError):
        small.frame(3)


@pytest.mark.parametrize(
    "kwargs",
    [{"width": 32}, {"num_frames": 0}, {"fps": 0.0}, {"seed": -1}, {"homography": np.zeros((3, 3))},
     {"homography": (1.0, 0.0, 0.0)}, {"homography": [1, 0, 0, 0, 1, 0, 0, 0, float("nan")]}],
)
def test_bad_parameters_raise_config_error(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        NightStreetScene(**kwargs)


def test_same_seed_same_frames_other_seed_differs(scene: NightStreetScene, frame: SceneFrame) -> None:
    again = NightStreetScene(seed=0).frame(FRAME)
    np.testing.assert_array_equal(again.thermal, frame.thermal)
    np.testing.assert_array_equal(again.rgb, frame.rgb)
    np.testing.assert_array_equal(again.boxes, frame.boxes)
    np.testing.assert_array_equal(scene.frame(FRAME).rgb, frame.rgb)  # no state carried between calls
    other = NightStreetScene(seed=1).frame(FRAME)
    assert not np.array_equal(other.rgb, frame.rgb)
    assert not np.array_equal(other.thermal, frame.thermal)
    assert not np.array_equal(other.boxes, frame.boxes)


def test_pedestrians_move_between_frames(scene: NightStreetScene, frame: SceneFrame) -> None:
    first = scene.frame(0)
    people0 = first.boxes[first.class_ids == 0]
    people1 = frame.boxes[frame.class_ids == 0]
    assert np.all(np.abs(people1 - people0).max(axis=1) > 5.0)


# ----------------------------------------------------------------------------- radiometry
def test_thermal_is_radiometric_and_people_are_warm(scene: NightStreetScene, frame: SceneFrame) -> None:
    kelvin, valid = register(frame.thermal, scene.homography)
    assert frame.thermal.min() > 24000 and frame.thermal.max() < 34000  # 240..340 K in centi-kelvin
    background = float(np.median(kelvin[valid]))
    assert 279.0 < background < 288.0  # a cool night street
    for box in frame.boxes[frame.class_ids == 0]:
        x0, y0, x1, y1 = box.astype(int)
        core = kelvin[y0 + (y1 - y0) // 5 : y1 - (y1 - y0) // 3, (x0 + x1) // 2 - 3 : (x0 + x1) // 2 + 3]
        assert 300.0 < float(np.median(core)) < 312.0  # clothed body surface
        assert float(np.median(core)) - background > 15.0


def test_headlights_glare_in_rgb_but_are_not_hot(scene: NightStreetScene, frame: SceneFrame) -> None:
    kelvin, _ = register(frame.thermal, scene.homography)
    assert frame.light_sources.shape == (2, 2) and frame.light_sources.dtype == np.float32
    car = frame.boxes[frame.class_ids == 1][0]
    for x, y in frame.light_sources.astype(int):
        assert car[0] <= x <= car[2] and car[1] <= y <= car[3]  # the headlights are on the car
        assert np.all(frame.rgb[y - 2 : y + 3, x - 2 : x + 3] == 255)  # saturating the RGB camera
        assert float(np.median(kelvin[y - 1 : y + 2, x - 1 : x + 2])) < 300.0  # but not hot
    x0, y0, x1, y1 = car.astype(int)
    assert kelvin[y0:y1, x0:x1].max() > 305.0  # while engine, radiator or exhaust are warm


def test_rgb_is_night_with_a_large_saturated_glare(frame: SceneFrame) -> None:
    gray = cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2GRAY)
    assert 0.03 < gray.mean() / 255.0 < 0.15
    saturated = np.all(frame.rgb == 255, axis=2).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(saturated, connectivity=8)
    largest = stats[1:, cv2.CC_STAT_AREA].max() if n > 1 else 0
    assert largest >= 0.0025 * W * H  # far above the pipeline's default glare_min_area (0.0005)
    bloom = (gray >= 200).sum()
    assert bloom >= 1.5 * largest  # a halo around the core, not a hard disc


def test_both_cameras_have_sensor_noise(scene: NightStreetScene, frame: SceneFrame) -> None:
    nxt = scene.frame(FRAME + 1)
    dark = cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2GRAY)[460:, 300:400].astype(np.float64)
    assert 2.0 < dark.std() < 20.0
    diff = frame.thermal.astype(np.float64)[450:, 250:350] - nxt.thermal.astype(np.float64)[450:, 250:350]
    assert 3.0 < diff.std() < 20.0  # temporal noise of a few centi-kelvin (NETD ~ 50 mK)


# ----------------------------------------------------------------------------- geometry
def test_homography_round_trip_puts_warm_blobs_in_gt_boxes(
    scene: NightStreetScene, frame: SceneFrame
) -> None:
    kelvin, valid = register(frame.thermal, scene.homography)
    unregistered = frame.thermal.astype(np.float32) / 100.0  # the thermal grid taken as if it were RGB's
    people = frame.boxes[frame.class_ids == 0]
    ious_h, ious_raw = [], []
    for box in people:
        x0, y0, x1, y1 = box.astype(int)
        pad_x, pad_y = (x1 - x0) // 2, (y1 - y0) // 6
        sl = (slice(max(0, y0 - pad_y), min(H, y1 + pad_y)), slice(max(0, x0 - pad_x), min(W, x1 + pad_x)))
        for img, out in ((kelvin, ious_h), (unregistered, ious_raw)):
            warm = (img[sl] > 298.0) & valid[sl]
            ys, xs = np.nonzero(warm)
            if ys.size == 0:
                out.append(0.0)
                continue
            blob = np.array([[xs.min() + sl[1].start, ys.min() + sl[0].start,
                              xs.max() + 1 + sl[1].start, ys.max() + 1 + sl[0].start]], np.float32)
            out.append(float(iou(blob, box[None])[0, 0]))
    assert min(ious_h) > 0.8, ious_h  # registered: each warm silhouette fills its box
    assert np.mean(ious_raw) < np.mean(ious_h) - 0.2, (ious_raw, ious_h)  # and the homography matters


# ----------------------------------------------------------------------------- what the demo shows
def test_dark_pedestrians_are_nearly_invisible_in_rgb(scene: NightStreetScene, frame: SceneFrame) -> None:
    kelvin, valid = register(frame.thermal, scene.homography)
    thermal8 = to8(kelvin, valid)
    gray = cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2GRAY)
    dark = (frame.class_ids == 0) & ~frame.visible_in_rgb
    assert dark.sum() >= 2
    for box in frame.boxes[dark]:
        c_rgb, c_th = box_contrast(gray, box), box_contrast(thermal8, box)
        assert c_rgb < 0.05 and c_rgb < 0.2 * c_th, (c_rgb, c_th)
        x0, y0, x1, y1 = box.astype(int)
        assert gray[y0:y1, x0:x1].mean() < 0.2 * 255  # and dark


def test_hog_finds_pedestrians_in_registered_thermal_not_in_rgb(
    scene: NightStreetScene, frame: SceneFrame
) -> None:
    kelvin, valid = register(frame.thermal, scene.homography)
    people = frame.boxes[frame.class_ids == 0]
    hits_thermal = (iou(people, hog_people(to8(kelvin, valid))) >= 0.4).any(axis=1)
    assert hits_thermal.sum() >= 1, "HOG found no pedestrian in the registered thermal image"
    gray = cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2GRAY)
    hits_rgb = (iou(people, hog_people(gray)) >= 0.4).any(axis=1)
    assert not (hits_rgb & ~frame.visible_in_rgb[frame.class_ids == 0]).any()
