"""The detection result type and the interface every detector implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ivfusion_ros.errors import InputError

__all__ = ["Detections", "Detector", "check_rgb"]


def check_rgb(image: object, who: str = "detector") -> np.ndarray:
    """Check that ``image`` is what :meth:`Detector.detect` accepts and return it.

    Detectors call this first so that a wrong frame fails with a message naming the problem instead of an
    OpenCV assertion deep inside the pipeline.

    Raises:
        InputError: not a numpy array (reason ``bad_type``), not uint8 (``bad_encoding``), empty
            (``empty``), or not ``(H, W, 3)`` (``bad_channels``).
    """
    if not isinstance(image, np.ndarray):
        raise InputError(
            f"{who} input: expected a numpy uint8 RGB image of shape (H, W, 3), got {type(image).__name__}",
            reason="bad_type",
        )
    if image.dtype != np.uint8:
        raise InputError(
            f"{who} input: expected a uint8 RGB image, got dtype {image.dtype} (scale to 0..255 first)",
            reason="bad_encoding",
        )
    if image.size == 0:
        raise InputError(f"{who} input: the image is empty (shape {image.shape})", reason="empty")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(
            f"{who} input: expected 3 channels (H, W, 3) RGB, got shape {image.shape}", reason="bad_channels"
        )
    return image


@dataclass
class Detections:
    """Detections of one image, in that image's pixel coordinates.

    Attributes:
        boxes: ``(N, 4)`` float32, ``x1, y1, x2, y2`` in pixels of the image given to the detector.
        scores: ``(N,)`` float32 in [0, 1].
        class_ids: ``(N,)`` int64 indices into ``class_names``.
        class_names: the detector's class table (shared by all results of one detector).
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    class_names: tuple[str, ...] = field(default=())

    @classmethod
    def empty(cls, class_names: tuple[str, ...] = ()) -> Detections:
        return cls(
            np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64), class_names
        )

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def names(self) -> list[str]:
        """Class name of each detection (the index as text when the table has no entry for it)."""
        table = self.class_names
        return [table[i] if 0 <= i < len(table) else str(i) for i in self.class_ids.tolist()]

    def to_dicts(self) -> list[dict]:
        """JSON-ready list: ``[{"box": [x1, y1, x2, y2], "score": s, "class_id": i, "class_name": n}]``."""
        return [
            {"box": [round(float(v), 2) for v in b], "score": round(float(s), 4), "class_id": int(c),
             "class_name": n}
            for b, s, c, n in zip(self.boxes, self.scores, self.class_ids, self.names(), strict=False)
        ]


class Detector(ABC):
    """A detector: loaded once, then called per frame.

    Implementations take an RGB ``uint8`` image ``(H, W, 3)`` (thermal-only detection passes the thermal
    intensity replicated to three channels) and return :class:`Detections` in that image's pixels.
    """

    #: Registry name ("hog", "yolo", "none").
    name: str = ""

    @property
    @abstractmethod
    def class_names(self) -> tuple[str, ...]:
        """The class table indexed by ``Detections.class_ids``."""

    @abstractmethod
    def detect(self, rgb: np.ndarray) -> Detections:
        """Detect objects in one RGB uint8 image of shape ``(H, W, 3)``."""

    @property
    def accepts_tensors(self) -> bool:
        """Whether :meth:`detect_tensor` keeps the image on its device (else the pipeline passes host images)."""
        return False

    def detect_tensor(self, image: Any) -> Detections:
        """Detect on a torch image already on the pipeline's device (see :attr:`accepts_tensors`)."""
        raise NotImplementedError(f"detector {self.name!r} takes host images (detect)")

    def describe(self) -> str:
        """Short human-readable description (backend, model) for logs and the status message."""
        return self.name
