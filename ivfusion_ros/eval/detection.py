"""COCO-style detection accuracy (mAP@0.5 and mAP@0.5:0.95, overall and per class) of :class:`Detections`.

:class:`DetectionEvaluator` collects ``(image id, ground truth, detections)`` triples, builds the COCO ground
truth and result structures in memory (no files) and runs the COCO protocol through ``faster-coco-eval``
(a C++ reimplementation that reproduces ``pycocotools`` numbers) or, when that is not installed,
``pycocotools`` itself. The result names the backend and its version.

The protocol is COCO's, unchanged: per class, detections of all images ranked by score (at most ``max_dets``
per image, the highest scored), greedily matched to the unmatched ground truth of best IoU >= t; precision
made monotone and sampled at the 101 recall points 0, 0.01, ..., 1; AP@t is the mean of those samples.
``mAP@0.5`` is AP at t = 0.5, ``mAP@0.5:0.95`` the mean of AP over t = 0.50, 0.55, ..., 0.95, each averaged
over the classes that have ground truth (a class without any ground truth object has no AP: NaN, left out
of the means). One ground-truth box and one detection at IoU x thus give AP@t = 1 for t <= x and 0 above, so
mAP@0.5:0.95 is the fraction of the ten thresholds that x reaches.

Classes are matched by *name* (case-insensitively, after the optional ``aliases`` map), so a detector's
table (e.g. COCO-80) and a data set's table (e.g. LLVIP's single ``person``, M3FD's ``People``) can differ.
Detections whose class is not in the evaluator's table are dropped, as are ground-truth objects of other
classes; both are counted in the result. Ground truth marked ``ignore`` (VOC difficult, COCO iscrowd) is
passed as a COCO crowd region.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ivfusion_ros.detect.base import Detections
from ivfusion_ros.errors import ConfigError, InputError
from ivfusion_ros.eval.labels import GroundTruth

__all__ = ["BACKENDS", "ClassAP", "DetectionEvaluator", "DetectionMetrics"]

#: Evaluation backends, in order of preference for ``backend="auto"``.
BACKENDS = ("faster-coco-eval", "pycocotools")

# Exactly pycocotools' Params.iouThrs (np.linspace: its 0.9 is 0.8999999999999999, which matters at IoU = 0.9).
_IOU_THRESHOLDS = tuple(float(t) for t in np.linspace(0.5, 0.95, 10))


def _nan_to_none(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


@dataclass
class ClassAP:
    """Average precision of one class. ``ap50``/``ap50_95`` are NaN when the class has no ground truth."""

    name: str
    ap50: float
    ap50_95: float
    num_gt: int
    num_det: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "ap50": _nan_to_none(self.ap50),
            "ap50_95": _nan_to_none(self.ap50_95),
            "num_gt": self.num_gt,
            "num_det": self.num_det,
        }


@dataclass
class DetectionMetrics:
    """COCO-style accuracy over all images added to a :class:`DetectionEvaluator`.

    Attributes:
        map50: mean over classes with ground truth of AP at IoU 0.5 (NaN when no class has ground truth).
        map50_95: the same for AP averaged over IoU 0.50:0.05:0.95.
        per_class: :class:`ClassAP` per class of the evaluator's table, in table order.
        num_images: images added (with or without objects or detections).
        num_gt: ground-truth objects evaluated (table classes, not ``ignore``).
        num_det: detections evaluated (table classes; before the per-image ``max_dets`` cut).
        ignored_gt: ground-truth objects dropped because their class is not in the table.
        ignored_det: detections dropped because their class is not in the table.
        ignored_classes: the names of those classes, sorted.
        backend: the evaluation library and version, e.g. ``"faster-coco-eval 1.8.0"``.
        max_dets: detections per image kept (COCO: the highest-scored 100).
    """

    map50: float
    map50_95: float
    per_class: dict[str, ClassAP]
    num_images: int
    num_gt: int
    num_det: int
    ignored_gt: int
    ignored_det: int
    ignored_classes: tuple[str, ...]
    backend: str
    max_dets: int
    iou_thresholds: tuple[float, ...] = field(default=_IOU_THRESHOLDS)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; NaN (no ground truth) becomes ``None``."""
        return {
            "map50": _nan_to_none(self.map50),
            "map50_95": _nan_to_none(self.map50_95),
            "per_class": {k: v.to_dict() for k, v in self.per_class.items()},
            "num_images": self.num_images,
            "num_gt": self.num_gt,
            "num_det": self.num_det,
            "ignored_gt": self.ignored_gt,
            "ignored_det": self.ignored_det,
            "ignored_classes": list(self.ignored_classes),
            "backend": self.backend,
            "max_dets": self.max_dets,
            "iou_thresholds": [round(t, 2) for t in self.iou_thresholds],
        }


def _quiet(*_args: object, **_kwargs: object) -> None:
    """Print function that prints nothing (faster-coco-eval logs progress through it)."""


def _resolve_backend(backend: str) -> tuple[str, str]:
    """Return ``(name, "name version")`` of the backend to use."""
    if backend not in ("auto", *BACKENDS):
        raise ConfigError(f"detection eval backend: unknown {backend!r} (available: auto, {', '.join(BACKENDS)})")
    for name in BACKENDS if backend == "auto" else (backend,):
        try:
            if name == "faster-coco-eval":
                import faster_coco_eval

                version = str(faster_coco_eval.__version__)
            else:
                import pycocotools.cocoeval  # noqa: F401

                try:
                    from importlib.metadata import version as dist_version

                    version = dist_version("pycocotools")
                except Exception:  # metadata missing (vendored copy): the name alone still says which
                    version = "(version unknown)"
        except ImportError:
            continue
        return name, f"{name} {version}"
    if backend == "auto":
        raise ConfigError("detection eval backend: neither faster-coco-eval nor pycocotools is installed")
    raise ConfigError(f"detection eval backend: {backend!r} is not installed")


def _run_coco(backend: str, gt: dict, dets: list[dict], max_dets: int) -> np.ndarray:
    """Evaluate with the chosen library; return ``precision[T, R, K]`` for area 'all' and ``max_dets``."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink):  # pycocotools prints progress
        if backend == "faster-coco-eval":
            from faster_coco_eval import COCO, COCOeval_faster

            coco_gt = COCO(gt, print_function=_quiet)
            coco_dt = coco_gt.loadRes(dets)
            ev = COCOeval_faster(coco_gt, coco_dt, "bbox", print_function=_quiet)
        else:
            import pycocotools.coco as pycoco
            from pycocotools.cocoeval import COCOeval

            coco_gt = pycoco.COCO()
            coco_gt.dataset = gt
            coco_gt.createIndex()
            coco_dt = coco_gt.loadRes(dets)
            ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.iouThrs = np.array(_IOU_THRESHOLDS)
        ev.params.maxDets = [max_dets]
        ev.params.areaRng = [[0.0, 1e10]]
        ev.params.areaRngLbl = ["all"]
        ev.evaluate()
        ev.accumulate()
    return np.asarray(ev.eval["precision"])[:, :, :, 0, 0]


class DetectionEvaluator:
    """Accumulates ground truth and detections per image; :meth:`compute` gives COCO mAP@0.5 and @0.5:0.95.

    Args:
        class_names: the classes to evaluate, by name (usually the data set's table).
        aliases: optional ``{name: table name}`` applied to detector and ground-truth names before matching,
            e.g. ``{"person": "People"}`` for a COCO detector on M3FD.
        max_dets: detections kept per image, highest scores first (COCO's 100).
        backend: ``"auto"`` (faster-coco-eval, else pycocotools), ``"faster-coco-eval"`` or ``"pycocotools"``.

    Raises:
        ConfigError: empty or repeated (case-insensitively) class names, an alias to a name outside the
            table, ``max_dets < 1``, an unknown or uninstalled backend.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        aliases: Mapping[str, str] | None = None,
        max_dets: int = 100,
        backend: str = "auto",
    ) -> None:
        names = tuple(str(n) for n in class_names)
        if not names:
            raise ConfigError("detection eval: class_names is empty")
        self.class_names = names
        self._index: dict[str, int] = {}
        for i, n in enumerate(names):
            key = n.strip().casefold()
            if not key:
                raise ConfigError(f"detection eval: class_names[{i}] is empty")
            if key in self._index:
                raise ConfigError(f"detection eval: class name {n!r} repeats {names[self._index[key]]!r}")
            self._index[key] = i
        for src, dst in (aliases or {}).items():
            if dst.strip().casefold() not in self._index:
                raise ConfigError(f"detection eval: alias {src!r} -> {dst!r}: {dst!r} is not in class_names {names}")
        self._aliases = {str(k).strip().casefold(): str(v).strip().casefold() for k, v in (aliases or {}).items()}
        if isinstance(max_dets, bool) or not isinstance(max_dets, int) or max_dets < 1:
            raise ConfigError(f"detection eval: max_dets must be a positive integer, got {max_dets!r}")
        self.max_dets = max_dets
        self.backend, self.backend_version = _resolve_backend(backend)
        self.reset()

    def reset(self) -> None:
        """Forget every image added so far."""
        self._images: dict[Hashable, int] = {}
        self._gt: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []  # image, boxes, class index, ignore
        self._det: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []  # image, boxes, class index, score
        self._ignored_gt = 0
        self._ignored_det = 0
        self._ignored_names: set[str] = set()

    def __len__(self) -> int:
        return len(self._images)

    def _map_names(self, names: list[str]) -> np.ndarray:
        """Table index of each name, -1 (and remembered) for names outside the table."""
        out = np.empty(len(names), np.int64)
        for k, n in enumerate(names):
            key = n.strip().casefold()
            idx = self._index.get(self._aliases.get(key, key), -1)
            if idx < 0:
                self._ignored_names.add(n)
            out[k] = idx
        return out

    def add(self, image_id: Hashable, ground_truth: GroundTruth, detections: Detections) -> None:
        """Add one image: its ground truth and the detector's output, both in that image's pixels.

        An image may have no objects and no detections (it still counts: detections on an image without
        objects are false positives). Raises :class:`InputError` for a repeated ``image_id`` or malformed
        detections (shapes, non-finite values, ``x2 < x1``).
        """
        if image_id in self._images:
            raise InputError(f"detection eval: image {image_id!r} was already added")
        if not isinstance(ground_truth, GroundTruth):
            raise InputError(f"detection eval: image {image_id!r}: ground truth must be a GroundTruth, "
                             f"got {type(ground_truth).__name__}")  # fmt: skip
        if not isinstance(detections, Detections):
            raise InputError(f"detection eval: image {image_id!r}: detections must be a Detections, "
                             f"got {type(detections).__name__}")  # fmt: skip
        boxes = np.asarray(detections.boxes, np.float64)
        scores = np.asarray(detections.scores, np.float64)
        n = len(detections)
        if boxes.shape != (n, 4) or scores.shape != (n,) or np.asarray(detections.class_ids).shape != (n,):
            raise InputError(
                f"detection eval: image {image_id!r}: detections need boxes (N, 4), scores (N,), class_ids (N,); "
                f"got {boxes.shape}, {scores.shape}, {np.asarray(detections.class_ids).shape}"
            )
        if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
            raise InputError(f"detection eval: image {image_id!r}: detections have non-finite boxes or scores")
        if n and ((boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any()):
            raise InputError(f"detection eval: image {image_id!r}: detection boxes need x2 >= x1 and y2 >= y1")

        img = len(self._images)
        self._images[image_id] = img
        gcls = self._map_names(ground_truth.names())
        keep = gcls >= 0
        self._ignored_gt += int((~keep).sum())
        self._gt.append((img, ground_truth.boxes[keep].astype(np.float64), gcls[keep], ground_truth.ignore[keep]))
        dcls = self._map_names(detections.names())
        keep = dcls >= 0
        self._ignored_det += int((~keep).sum())
        self._det.append((img, boxes[keep], dcls[keep], scores[keep]))

    def _coco_dicts(self) -> tuple[dict, list[dict]]:
        images = [{"id": i + 1} for i in range(len(self._images))]
        annotations = []
        for img, boxes, cls, ignore in self._gt:
            for b, c, ig in zip(boxes.tolist(), cls.tolist(), ignore.tolist()):
                w, h = b[2] - b[0], b[3] - b[1]
                annotations.append({
                    "id": len(annotations) + 1, "image_id": img + 1, "category_id": c + 1,
                    "bbox": [b[0], b[1], w, h], "area": w * h, "iscrowd": int(ig),
                })  # fmt: skip
        categories = [{"id": i + 1, "name": n} for i, n in enumerate(self.class_names)]
        dets = [
            {"image_id": img + 1, "category_id": c + 1, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s}
            for img, boxes, cls, scores in self._det
            for b, c, s in zip(boxes.tolist(), cls.tolist(), scores.tolist())
        ]
        return {"images": images, "annotations": annotations, "categories": categories}, dets

    def compute(self) -> DetectionMetrics:
        """Run the COCO protocol over everything added so far (the evaluator keeps its data)."""
        k = len(self.class_names)
        num_gt = np.zeros(k, np.int64)
        num_det = np.zeros(k, np.int64)
        for _, _, cls, ignore in self._gt:
            num_gt += np.bincount(cls[~ignore], minlength=k)
        for _, _, cls, _ in self._det:
            num_det += np.bincount(cls, minlength=k)
        if num_det.sum() == 0 or not self._images:
            # Nothing to rank: every class with ground truth has AP 0 (pycocotools cannot load empty results).
            ap = np.where(num_gt > 0, 0.0, np.nan)[None, :].repeat(len(_IOU_THRESHOLDS), axis=0)
        else:
            gt, dets = self._coco_dicts()
            precision = _run_coco(self.backend, gt, dets, self.max_dets)  # [T, R, K]
            valid = precision > -1
            sums = np.where(valid, precision, 0.0).sum(axis=1)
            counts = valid.sum(axis=1)
            ap = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)  # [T, K]
            ap[:, num_gt == 0] = np.nan
        per_class = {
            name: ClassAP(name, float(ap[0, i]), float(np.mean(ap[:, i])), int(num_gt[i]), int(num_det[i]))
            for i, name in enumerate(self.class_names)
        }
        has_gt = num_gt > 0
        map50 = float(np.mean(ap[0, has_gt])) if has_gt.any() else math.nan
        map50_95 = float(np.mean(ap[:, has_gt])) if has_gt.any() else math.nan
        return DetectionMetrics(
            map50=map50,
            map50_95=map50_95,
            per_class=per_class,
            num_images=len(self._images),
            num_gt=int(num_gt.sum()),
            num_det=int(num_det.sum()),
            ignored_gt=self._ignored_gt,
            ignored_det=self._ignored_det,
            ignored_classes=tuple(sorted(self._ignored_names)),
            backend=self.backend_version,
            max_dets=self.max_dets,
        )
