"""HogPeopleDetector plumbing (no-detection cases, score map, scaling, NMS); finding a real person is tested
elsewhere."""

from __future__ import annotations

import numpy as np
import pytest

from ivfusion_ros.config import DetectorConfig
from ivfusion_ros.detect import Detections, create_detector
from ivfusion_ros.detect.hog import HogPeopleDetector, margin_to_score
from ivfusion_ros.errors import InputError


def _assert_empty(det: Detections) -> None:
    assert isinstance(det, Detections)
    assert det.boxes.shape == (0, 4) and det.boxes.dtype == np.float32
    assert det.scores.shape == (0,) and det.scores.dtype == np.float32
    assert det.class_ids.shape == (0,) and det.class_ids.dtype == np.int64
    assert det.class_names == ("person",)


@pytest.mark.parametrize("size", [(640, 480), (1280, 960), (20, 20), (64, 127)], ids=str)
def test_blank_image_gives_no_detections(size) -> None:
    w, h = size
    det = HogPeopleDetector(DetectorConfig(type="hog"))
    _assert_empty(det.detect(np.zeros((h, w, 3), np.uint8)))
    _assert_empty(det.detect(np.full((h, w, 3), 128, np.uint8)))


def test_created_through_registry() -> None:
    det = create_detector(DetectorConfig(type="hog"), device="cuda", threads=2)
    assert isinstance(det, HogPeopleDetector)
    assert det.name == "hog" and det.class_names == ("person",)


def test_rejects_bad_input() -> None:
    det = HogPeopleDetector()
    with pytest.raises(InputError, match=r"^hog detector input: expected 3 channels"):
        det.detect(np.zeros((200, 100, 2), np.uint8))
    with pytest.raises(InputError, match=r"^hog detector input: the image is empty"):
        det.detect(np.zeros((0, 100, 3), np.uint8))


def test_margin_to_score_is_monotone_in_unit_interval() -> None:
    m = np.linspace(-10, 10, 101)
    s = margin_to_score(m)
    assert s.dtype == np.float32
    assert (np.diff(s) >= 0).all() and s.min() >= 0 and s.max() <= 1
    np.testing.assert_allclose(margin_to_score(np.array([0.0, 1.0])), [0.5, 0.7310586], atol=1e-6)


class _FakeHog:
    """Stands in for cv2.HOGDescriptor and returns fixed windows in the (downscaled) image it is given."""

    winSize = (64, 128)  # noqa: N815 (OpenCV's attribute name)

    def __init__(self, rects, weights) -> None:
        self.rects, self.weights = rects, weights
        self.seen_shape: tuple[int, ...] | None = None
        self.kwargs: dict = {}

    def detectMultiScale(self, img, **kwargs):  # noqa: N802 (OpenCV's method name)
        self.seen_shape, self.kwargs = img.shape, kwargs
        return self.rects, self.weights


def test_downscale_scaling_back_nms_and_score_filter() -> None:
    cfg = DetectorConfig(type="hog", score_threshold=0.6, nms_threshold=0.45, hog_hit_threshold=0.1,
                         hog_scale=1.1)
    det = HogPeopleDetector(cfg)
    rects = np.array([[100, 50, 64, 128], [104, 54, 64, 128], [400, 300, 64, 128], [10, 10, 64, 128]],
                     np.int32)
    weights = np.array([[2.0], [1.0], [0.8], [0.2]])  # scores 0.88, 0.73, 0.69, 0.55 (below 0.6)
    fake = _FakeHog(rects, weights)
    det._hog = fake  # type: ignore[assignment]
    result = det.detect(np.zeros((960, 1280, 3), np.uint8))
    assert fake.seen_shape == (480, 640)  # longer side brought down to MAX_SIDE
    assert fake.kwargs == {"hitThreshold": 0.1, "winStride": (8, 8), "padding": (8, 8), "scale": 1.1}
    # second window overlaps the first (IoU 0.8): removed; the last is below score_threshold.
    # Windows shrink to the person inside (WINDOW_MARGIN) and scale back by 2.
    def person(x, y):
        return [2 * (x + 0.24 * 64), 2 * (y + 0.12 * 128), 2 * (x + 0.76 * 64), 2 * (y + 0.85 * 128)]

    np.testing.assert_allclose(result.boxes, [person(100, 50), person(400, 300)], rtol=1e-5)
    np.testing.assert_allclose(result.scores, margin_to_score(np.array([2.0, 0.8])))
    np.testing.assert_array_equal(result.class_ids, [0, 0])
    assert result.names() == ["person", "person"]


def test_boxes_clipped_and_max_detections() -> None:
    det = HogPeopleDetector(DetectorConfig(type="hog", max_detections=1))
    det._hog = _FakeHog(np.array([[-20, 300, 64, 128], [200, 0, 64, 128]]), np.array([1.0, 0.5]))  # type: ignore[assignment]
    result = det.detect(np.zeros((400, 300, 3), np.uint8))
    np.testing.assert_allclose(result.boxes, [[0, 300 + 0.12 * 128, -20 + 0.76 * 64, 400]], rtol=1e-5)


def test_hog_finds_rendered_pedestrians_in_thermal() -> None:
    """The real OpenCV people detector on a rendered night scene's thermal image, as the pipeline sees it."""
    import cv2

    from ivfusion_ros.demo.scene import NightStreetScene
    from ivfusion_ros.detect.boxes import count_matches

    scene = NightStreetScene(num_frames=4, seed=0)
    frame = scene.frame(2)
    t = frame.thermal.astype(np.float32)
    lo, hi = np.percentile(t, (1, 99))
    gray = np.clip((t - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)
    h, w = gray.shape
    registered = cv2.warpPerspective(gray, scene.homography, (w, h))
    result = HogPeopleDetector(DetectorConfig(type="hog")).detect(cv2.cvtColor(registered, cv2.COLOR_GRAY2RGB))
    people = frame.boxes[np.asarray(frame.class_ids) == 0]
    assert len(people) == 3
    assert count_matches(people, result.boxes, result.scores, iou_threshold=0.5) >= 2
    assert len(result) <= len(people) + 1  # NMS leaves about one box per person
