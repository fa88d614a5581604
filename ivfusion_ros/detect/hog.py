"""``detector.type: hog``: OpenCV's built-in HOG + linear SVM people detector (Dalal & Triggs).

It needs no weights file and no GPU, so it is the default that works on any robot out of the box; it finds
upright, roughly 64x128-pixel-or-larger pedestrians and nothing else. Runs on the CPU only.
"""

from __future__ import annotations

import cv2
import numpy as np

from ivfusion_ros.config import DetectorConfig
from ivfusion_ros.detect.base import Detections, Detector, check_rgb
from ivfusion_ros.detect.nms import batched_nms
from ivfusion_ros.detect.registry import register_detector

__all__ = ["WINDOW_MARGIN", "HogPeopleDetector", "margin_to_score"]

#: Share of a detection window's width/height that is margin around the person: left, top, right, bottom.
#: Measured, not assumed: the medians over the 85 HOG windows whose centre falls in an annotated person on the
#: MSRS validation pairs (``msrs-split/val.txt``; fused, thermal and visible images) put the person at 52 % of the
#: window's width (24 % off each side) and 73 % of its height (12 % off the top, 15 % off the bottom). OpenCV's
#: peopledetect sample trims 10 % per side, which left boxes about 1.5x wider than the person.
WINDOW_MARGIN = (0.24, 0.12, 0.24, 0.15)


def margin_to_score(margin: np.ndarray) -> np.ndarray:
    """Map HOG SVM margins to scores in (0, 1) with the logistic ``1 / (1 + exp(-margin))``.

    Monotone, so ranking and NMS are unchanged; margin 0 -> 0.5, 1 -> 0.73, 2 -> 0.88, 3 -> 0.95. The SVM
    is not calibrated, so the score is a confidence *rank*, not a probability. Windows must already beat
    ``hog_hit_threshold`` to be reported (0.3 -> score 0.57), so ``score_threshold`` only bites above that
    level (or with a negative hit threshold).
    """
    m = np.asarray(margin, np.float64)
    return (1.0 / (1.0 + np.exp(-m))).astype(np.float32)


@register_detector("hog")
class HogPeopleDetector(Detector):
    """People detector on the gray image with OpenCV's default HOG descriptor and people SVM.

    Args:
        cfg: the ``detector`` section. Used: ``hog_hit_threshold`` (SVM margin a window needs),
            ``hog_scale`` (pyramid step), ``nms_threshold``, ``score_threshold``, ``max_detections``.
        device, threads: accepted for the common factory signature; HOG runs on the CPU with OpenCV's
            global thread pool (``cv2.setNumThreads`` is process-wide, so it is not changed here).

    Speed: images whose longer side exceeds :attr:`MAX_SIDE` (640 px) are downscaled to it first (INTER_AREA)
    and boxes are scaled back. HOG cost grows with the pixel count, and a 1080p frame takes seconds at full
    size; the price is that people must be about 128 px tall *after* the downscale (e.g. 384 px in a
    1920x1080 frame) to be found. Images smaller than the 64x128 detection window give no detections
    (OpenCV can crash on images far below the window size, so they are not passed to it).

    Grouping: ``detectMultiScale`` keeps its default rectangle grouping (which removes isolated single-window
    hits); class-wise NMS with ``nms_threshold`` then removes the overlapping groups that remain.
    """

    name = "hog"
    #: Longer image side, in pixels, above which the image is downscaled before detection.
    MAX_SIDE = 640
    CLASS_NAMES: tuple[str, ...] = ("person",)

    def __init__(self, cfg: DetectorConfig | None = None, device: str = "cpu", threads: int = 0) -> None:
        del device, threads  # CPU only, see the class docstring
        self.cfg = cfg or DetectorConfig(type="hog")
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self._win_w, self._win_h = (int(v) for v in self._hog.winSize)
        self._src_shape: tuple[int, int] | None = None
        self._gray = np.empty((0, 0), np.uint8)
        self._small: np.ndarray | None = None
        self._ratio = (1.0, 1.0)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.CLASS_NAMES

    def _prepare(self, h: int, w: int) -> None:
        """(Re)allocate the gray and downscaled buffers for a new image size."""
        self._src_shape = (h, w)
        self._gray = np.empty((h, w), np.uint8)
        f = min(1.0, self.MAX_SIDE / max(h, w))
        if f < 1.0:
            sw, sh = max(1, round(w * f)), max(1, round(h * f))
            self._small = np.empty((sh, sw), np.uint8)
            self._ratio = (sw / w, sh / h)
        else:
            self._small = None
            self._ratio = (1.0, 1.0)

    def detect(self, rgb: np.ndarray) -> Detections:
        """Find people in an RGB uint8 ``(H, W, 3)`` image.

        Returns:
            :class:`Detections` with class 0 (``"person"``), boxes in image pixels clipped to the image,
            scores from :func:`margin_to_score`, by decreasing score, at most ``max_detections``.

        Raises:
            InputError: the image is not a non-empty uint8 ``(H, W, 3)`` array.
        """
        check_rgb(rgb, "hog detector")
        cfg = self.cfg
        h, w = rgb.shape[:2]
        if self._src_shape != (h, w):
            self._prepare(h, w)
        if not rgb.flags.c_contiguous:
            rgb = np.ascontiguousarray(rgb)
        cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY, dst=self._gray)
        img = self._gray
        if self._small is not None:
            cv2.resize(self._gray, self._small.shape[::-1], dst=self._small, interpolation=cv2.INTER_AREA)
            img = self._small
        if img.shape[0] < self._win_h or img.shape[1] < self._win_w:
            return Detections.empty(self.CLASS_NAMES)

        rects, weights = self._hog.detectMultiScale(
            img, hitThreshold=cfg.hog_hit_threshold, winStride=(8, 8), padding=(8, 8), scale=cfg.hog_scale
        )
        if len(rects) == 0:  # OpenCV returns () when nothing is found
            return Detections.empty(self.CLASS_NAMES)

        r = np.asarray(rects, np.float32).reshape(-1, 4)
        scores = margin_to_score(np.asarray(weights).reshape(-1))
        sel = np.flatnonzero(scores >= cfg.score_threshold)
        if sel.size == 0:
            return Detections.empty(self.CLASS_NAMES)
        r, scores = r[sel], scores[sel]
        sx, sy = self._ratio
        # A 64x128 HOG window holds a person of about 33x93 pixels with margins (WINDOW_MARGIN); shrink it to the
        # person so that boxes match tight ground truth (IoU >= 0.5) instead of the padded window.
        bw, bh = r[:, 2], r[:, 3]
        boxes = np.empty_like(r)
        boxes[:, 0] = (r[:, 0] + WINDOW_MARGIN[0] * bw) / sx
        boxes[:, 1] = (r[:, 1] + WINDOW_MARGIN[1] * bh) / sy
        boxes[:, 2] = (r[:, 0] + (1.0 - WINDOW_MARGIN[2]) * bw) / sx
        boxes[:, 3] = (r[:, 1] + (1.0 - WINDOW_MARGIN[3]) * bh) / sy
        np.clip(boxes[:, 0::2], 0.0, w, out=boxes[:, 0::2])
        np.clip(boxes[:, 1::2], 0.0, h, out=boxes[:, 1::2])

        ids = np.zeros(len(scores), np.int64)
        keep = batched_nms(boxes, scores, ids, cfg.nms_threshold, cfg.max_detections)
        return Detections(boxes[keep], scores[keep], ids[keep], self.CLASS_NAMES)
