"""Small evaluation data sets generated on the fly (tests never read the development data).

* :func:`write_scene_dataset`: frames of the synthetic night street (16-bit thermal, RGB) with YOLO labels
  written from the scene's ground truth.
* :func:`write_blob_dataset` + :class:`BlobDetector`: bright squares on dark images, found exactly by a
  threshold detector, so detection numbers are known in advance.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ivfusion_ros.demo.scene import NightStreetScene
from ivfusion_ros.detect.base import Detections, Detector, check_rgb


def yolo_line(cls: int, box: tuple[float, float, float, float], size: tuple[int, int]) -> str:
    x1, y1, x2, y2 = box
    w, h = size
    return f"{cls} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"


def write_scene_dataset(root: Path, n: int = 4, seed: int = 1, size: tuple[int, int] = (320, 256)) -> str:
    """Write ``root/{ir,vi,labels}`` with ``n`` night-street pairs; return the ``--set`` for the homography."""
    scene = NightStreetScene(width=size[0], height=size[1], num_frames=n, seed=seed)
    for d in ("ir", "vi", "labels"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "labels" / "classes.txt").write_text("person\ncar\n")
    for i in range(n):
        f = scene.frame(i)
        cv2.imwrite(str(root / "ir" / f"{i:04d}.png"), f.thermal)
        cv2.imwrite(str(root / "vi" / f"{i:04d}.png"), cv2.cvtColor(f.rgb, cv2.COLOR_RGB2BGR))
        lines = [yolo_line(c, tuple(b), size) for b, c in zip(f.boxes.tolist(), f.class_ids.tolist())]
        (root / "labels" / f"{i:04d}.txt").write_text("\n".join(lines) + "\n")
    h = ",".join(f"{v:.9f}" for v in scene.homography.ravel())  # fixed-point: YAML reads 1e-06 as a string
    return f"registration.homography=[{h}]"


#: Squares of the blob data set: (x1, y1, x2, y2) in a 160x128 image, and whether the visible camera sees it.
BLOBS = (((10, 20, 40, 60), True), ((60, 30, 84, 70), False), ((100, 10, 130, 50), True), ((120, 70, 150, 110), False))
BLOB_SIZE = (160, 128)


def write_blob_dataset(root: Path, n: int = 3, classes: str = "Person\ncar\n") -> None:
    """``n`` pairs of 160x128 images: every square is hot in thermal, half of them are lit in the visible image.

    Labels (YOLO): each square is a ``Person`` (class 0; capitalised on purpose, the detector says ``person``)
    and one unlit ``car`` (class 1) that no detector sees.
    """
    w, h = BLOB_SIZE
    for d in ("ir", "vi", "labels"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "labels" / "classes.txt").write_text(classes)
    for i in range(n):
        ir = np.full((h, w), 20, np.uint8)
        vis = np.full((h, w, 3), 10, np.uint8)
        lines = []
        for (x1, y1, x2, y2), lit in BLOBS:
            ir[y1:y2, x1:x2] = 255
            if lit:
                vis[y1:y2, x1:x2] = 255
            lines.append(yolo_line(0, (x1, y1, x2, y2), BLOB_SIZE))
        lines.append(yolo_line(1, (2, 100, 30, 126), BLOB_SIZE))
        cv2.imwrite(str(root / "ir" / f"b{i}.png"), ir)
        cv2.imwrite(str(root / "vi" / f"b{i}.png"), vis)
        (root / "labels" / f"b{i}.txt").write_text("\n".join(lines) + "\n")


class BlobDetector(Detector):
    """Boxes of the bright connected regions (gray > 60) as ``person`` with score 0.9."""

    name = "blobs"

    @property
    def class_names(self) -> tuple[str, ...]:
        return ("person",)

    def detect(self, rgb: np.ndarray) -> Detections:
        gray = cv2.cvtColor(check_rgb(rgb), cv2.COLOR_RGB2GRAY)
        n, _, stats, _ = cv2.connectedComponentsWithStats((gray > 60).astype(np.uint8))
        boxes = [[x, y, x + bw, y + bh] for x, y, bw, bh, _ in stats[1:n].tolist()]
        k = len(boxes)
        return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.full(k, 0.9, np.float32),
                          np.zeros(k, np.int64), self.class_names)
