"""COCO-style mAP of Detections: hand-computed cases on both backends, class mapping, empty inputs, errors."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

from ivfusion_ros.detect.base import Detections
from ivfusion_ros.errors import ConfigError, InputError
from ivfusion_ros.eval.detection import DetectionEvaluator
from ivfusion_ros.eval.labels import GroundTruth

DET_TABLE = ("person", "bicycle", "car", "dog")  # a detector's own class table


def _gt(boxes: list[list[float]], names: list[str], ignore: list[bool] | None = None) -> GroundTruth:
    table = tuple(dict.fromkeys(names))
    return GroundTruth(
        np.array(boxes, np.float32).reshape(-1, 4), np.array([table.index(n) for n in names], np.int64), table, ignore
    )


def _det(boxes: list[list[float]], scores: list[float], names: list[str]) -> Detections:
    return Detections(
        np.array(boxes, np.float32).reshape(-1, 4),
        np.array(scores, np.float32),
        np.array([DET_TABLE.index(n) for n in names], np.int64),
        DET_TABLE,
    )


BACKENDS = ["faster-coco-eval", "pycocotools"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


# ------------------------------------------------------------------------------------------ hand-computed
# pycocotools divides by (tp + fp + eps), so its perfect precision is 1 - 2e-16: compare with abs=1e-12.


def test_perfect_detections_score_1(backend: str) -> None:
    ev = DetectionEvaluator(("person", "car"), backend=backend)
    ev.add("a", _gt([[10, 10, 50, 90], [60, 20, 120, 60]], ["person", "car"]),
           _det([[10, 10, 50, 90], [60, 20, 120, 60]], [0.9, 0.8], ["person", "car"]))  # fmt: skip
    ev.add("b", _gt([[0, 0, 30, 30]], ["person"]), _det([[0, 0, 30, 30]], [0.3], ["person"]))
    res = ev.compute()
    assert res.map50 == pytest.approx(1.0, abs=1e-12) and res.map50_95 == pytest.approx(1.0, abs=1e-12)
    assert res.per_class["person"].ap50_95 == pytest.approx(1.0, abs=1e-12)
    assert res.per_class["car"].ap50 == pytest.approx(1.0, abs=1e-12)
    assert (res.num_images, res.num_gt, res.num_det) == (2, 3, 3)
    assert res.backend.startswith(backend + " ")


@pytest.mark.parametrize(
    ("height", "expected"),
    [(62, 0.3), (50, 0.1), (74, 0.5), (90, 0.9), (97, 1.0), (45, 0.0)],  # IoU = height / 100; >= t matches
)
def test_single_box_at_iou_x_gives_the_fraction_of_thresholds_reached(
    backend: str, height: int, expected: float
) -> None:
    # One GT box 100x100 and one detection covering its top `height` rows: IoU = height / 100. AP at threshold
    # t is 1 if IoU >= t else 0, so mAP@.5:.95 = (number of t in 0.50, 0.55, ..., 0.95 with t <= IoU) / 10.
    ev = DetectionEvaluator(("person",), backend=backend)
    ev.add(0, _gt([[0, 0, 100, 100]], ["person"]), _det([[0, 0, 100, height]], [0.9], ["person"]))
    res = ev.compute()
    assert res.map50 == pytest.approx(1.0 if height >= 50 else 0.0, abs=1e-12)
    assert res.map50_95 == pytest.approx(expected, abs=1e-12)


def test_false_positive_ranked_above_the_true_positive_halves_ap(backend: str) -> None:
    # Ranked FP (0.9) then TP (0.8): precision 0 then 1/2 at recall 1; made monotone it is 1/2 at every recall.
    ev = DetectionEvaluator(("person",), backend=backend)
    ev.add(1, _gt([[0, 0, 10, 10]], ["person"]), _det([[50, 50, 60, 60], [0, 0, 10, 10]], [0.9, 0.8], ["person"] * 2))
    res = ev.compute()
    assert res.map50 == pytest.approx(0.5) and res.map50_95 == pytest.approx(0.5)
    # The same FP scored below the TP costs nothing: precision is 1 up to full recall.
    ev = DetectionEvaluator(("person",), backend=backend)
    ev.add(1, _gt([[0, 0, 10, 10]], ["person"]), _det([[50, 50, 60, 60], [0, 0, 10, 10]], [0.7, 0.8], ["person"] * 2))
    assert ev.compute().map50 == pytest.approx(1.0, abs=1e-12)


def test_interleaved_ranking_by_hand(backend: str) -> None:
    # Two GT; ranked TP (0.9), FP (0.8), TP (0.7): (P, R) = (1, .5), (.5, .5), (2/3, 1). Monotone precision is 1
    # for the 51 recall points 0..0.50 and 2/3 for the 50 points 0.51..1: AP = (51 + 50 * 2/3) / 101.
    ev = DetectionEvaluator(("person",), backend=backend)
    gt = _gt([[0, 0, 10, 10], [20, 20, 30, 30]], ["person"] * 2)
    ev.add("x", gt, _det([[0, 0, 10, 10], [40, 40, 50, 50], [20, 20, 30, 30]], [0.9, 0.8, 0.7], ["person"] * 3))
    assert ev.compute().map50 == pytest.approx((51 + 50 * 2 / 3) / 101, abs=1e-12)


def test_detections_on_an_image_without_objects_are_false_positives(backend: str) -> None:
    ev = DetectionEvaluator(("person",), backend=backend)
    ev.add("with", _gt([[0, 0, 10, 10]], ["person"]), _det([[0, 0, 10, 10]], [0.5], ["person"]))
    ev.add("without", GroundTruth.empty(("person",)), _det([[0, 0, 10, 10]], [0.9], ["person"]))
    ev.add("nothing", GroundTruth.empty(), Detections.empty(DET_TABLE))
    res = ev.compute()
    assert res.map50 == pytest.approx(0.5) and res.num_images == 3


def test_ignored_ground_truth_is_a_crowd_region(backend: str) -> None:
    ev = DetectionEvaluator(("person",), backend=backend)
    gt = _gt([[0, 0, 10, 10], [50, 50, 80, 80]], ["person"] * 2, ignore=[False, True])
    ev.add(0, gt, _det([[0, 0, 10, 10], [52, 52, 78, 78]], [0.5, 0.9], ["person"] * 2))
    res = ev.compute()
    # the detection on the difficult/crowd object is neither a match nor a false positive
    assert res.map50 == pytest.approx(1.0, abs=1e-12) and res.num_gt == 1


def test_max_dets_keeps_the_highest_scores(backend: str) -> None:
    ev = DetectionEvaluator(("person",), max_dets=1, backend=backend)
    ev.add(0, _gt([[0, 0, 10, 10]], ["person"]), _det([[50, 50, 60, 60], [0, 0, 10, 10]], [0.9, 0.8], ["person"] * 2))
    assert ev.compute().map50 == 0.0


# -------------------------------------------------------------------------------------------- class names


def test_class_mapping_missing_and_foreign_classes(backend: str) -> None:
    ev = DetectionEvaluator(("People", "Car", "Lamp"), aliases={"person": "People"}, backend=backend)
    gt = _gt([[0, 0, 10, 10], [20, 0, 40, 10], [50, 0, 60, 10]], ["People", "car", "Truck"])
    dets = _det([[0, 0, 10, 10], [70, 70, 90, 90]], [0.9, 0.95], ["person", "dog"])
    ev.add("m3fd_0001", gt, dets)
    res = ev.compute()
    assert res.per_class["People"].ap50 == pytest.approx(1.0, abs=1e-12)  # detector "person" -> "People" by alias
    assert res.per_class["Car"].ap50 == 0.0  # ground truth "car" (case-insensitive) with no detection
    assert math.isnan(res.per_class["Lamp"].ap50)  # no ground truth: no AP, left out of the mean
    assert res.map50 == pytest.approx(0.5) and res.map50_95 == pytest.approx(0.5)
    assert (res.ignored_det, res.ignored_gt, res.ignored_classes) == (1, 1, ("Truck", "dog"))
    assert (res.num_gt, res.num_det) == (2, 1)
    d = res.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["per_class"]["Lamp"] == {"ap50": None, "ap50_95": None, "num_gt": 0, "num_det": 0}
    assert d["backend"] == res.backend and d["iou_thresholds"][0] == 0.5 and d["iou_thresholds"][-1] == 0.95


# ------------------------------------------------------------------------------------------- empty inputs


def test_empty_inputs(backend: str) -> None:
    ev = DetectionEvaluator(("person",), backend=backend)
    res = ev.compute()
    assert res.num_images == 0 and math.isnan(res.map50) and math.isnan(res.map50_95)
    assert res.to_dict()["map50"] is None
    ev.add(0, GroundTruth.empty(), Detections.empty())
    assert math.isnan(ev.compute().map50)  # an image with neither objects nor detections: still no AP
    ev.add(1, _gt([[0, 0, 5, 5]], ["person"]), Detections.empty(DET_TABLE))
    res = ev.compute()
    assert res.map50 == 0.0 and res.map50_95 == 0.0 and res.num_det == 0  # objects, no detection at all
    ev.reset()
    ev.add(2, GroundTruth.empty(), _det([[0, 0, 5, 5]], [0.5], ["person"]))
    res = ev.compute()
    assert math.isnan(res.map50) and res.num_det == 1 and len(ev) == 1  # detections, no object anywhere


# --------------------------------------------------------------------------------------------- backends


def _random_case(rng: np.random.Generator) -> list[tuple[GroundTruth, Detections]]:
    names = ["person", "car", "bicycle"]
    out = []
    for _ in range(25):
        n = int(rng.integers(0, 6))
        xy = rng.uniform(0, 200, (n, 2))
        wh = rng.uniform(8, 60, (n, 2))
        gtb = np.hstack([xy, xy + wh])
        gcls = [names[k] for k in rng.integers(0, 3, n)]
        # detections: jittered copies of some GT plus random boxes, random scores and sometimes wrong classes
        keep = rng.random(n) < 0.7
        jit = gtb[keep] + rng.normal(0, 2.5, (int(keep.sum()), 4))
        jit[:, 2:] = np.maximum(jit[:, 2:], jit[:, :2] + 1)
        m = int(rng.integers(0, 4))
        rxy = rng.uniform(0, 200, (m, 2))
        rnd = np.hstack([rxy, rxy + rng.uniform(8, 60, (m, 2))])
        boxes = np.vstack([jit, rnd])
        dcls = [c if rng.random() < 0.85 else "car" for c, k in zip(gcls, keep) if k]
        dcls += [names[k] for k in rng.integers(0, 3, m)]
        out.append((_gt(gtb.tolist(), gcls), _det(boxes.tolist(), rng.uniform(0.05, 1, len(boxes)).tolist(), dcls)))
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def _ap_reference(case: list[tuple[GroundTruth, Detections]], cls: str, t: float) -> float:
    """The COCO protocol written out plainly: greedy best-IoU matching per image, 101-point interpolated AP."""
    records, n_gt = [], 0
    for gt, det in case:
        g = gt.boxes[[n == cls for n in gt.names()]].astype(np.float64)
        d = det.boxes[[n == cls for n in det.names()]].astype(np.float64)
        s = det.scores[[n == cls for n in det.names()]].astype(np.float64)
        n_gt += len(g)
        order = np.argsort(-s, kind="mergesort")
        ious = _iou(d[order], g) if len(g) and len(d) else np.zeros((len(d), len(g)))
        used = np.zeros(len(g), bool)
        for row, score in zip(ious, s[order]):
            cand = np.where(~used & (row >= t), row, -1.0)
            hit = len(g) > 0 and cand.max() >= 0
            if hit:
                used[int(np.argmax(cand))] = True
            records.append((score, hit))
    records.sort(key=lambda r: -r[0])
    tp = np.cumsum([h for _, h in records])
    fp = np.cumsum([not h for _, h in records])
    recall = tp / n_gt
    precision = tp / np.maximum(tp + fp, 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # monotone from the right
    idx = np.searchsorted(recall, np.linspace(0, 1, 101), side="left")
    return float(np.mean([precision[i] if i < len(precision) else 0.0 for i in idx]))


def test_backends_agree_with_each_other_and_a_plain_reference() -> None:
    case = _random_case(np.random.default_rng(7))
    results = []
    for backend in BACKENDS:
        ev = DetectionEvaluator(("person", "car", "bicycle"), backend=backend)
        for i, (gt, det) in enumerate(case):
            ev.add(i, gt, det)
        results.append(ev.compute())
    a, b = results
    assert 0.0 < a.map50_95 < a.map50 < 1.0
    for name in ("person", "car", "bicycle"):
        ref50 = _ap_reference(case, name, 0.5)
        ref = np.mean([_ap_reference(case, name, t) for t in a.iou_thresholds])
        for res in (a, b):
            assert res.per_class[name].ap50 == pytest.approx(ref50, abs=1e-9), (res.backend, name)
            assert res.per_class[name].ap50_95 == pytest.approx(ref, abs=1e-9), (res.backend, name)
    assert a.map50_95 == pytest.approx(b.map50_95, abs=1e-12)


def test_auto_falls_back_to_pycocotools(monkeypatch: pytest.MonkeyPatch) -> None:
    assert DetectionEvaluator(("person",)).backend == "faster-coco-eval"
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # makes `import faster_coco_eval` fail
    ev = DetectionEvaluator(("person",))
    assert ev.backend == "pycocotools"
    ev.add(0, _gt([[0, 0, 10, 10]], ["person"]), _det([[0, 0, 10, 10]], [0.9], ["person"]))
    res = ev.compute()
    assert res.backend.startswith("pycocotools ") and res.map50 == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ConfigError, match="detection eval backend: 'faster-coco-eval' is not installed"):
        DetectionEvaluator(("person",), backend="faster-coco-eval")
    monkeypatch.setitem(sys.modules, "pycocotools.cocoeval", None)
    with pytest.raises(ConfigError, match="neither faster-coco-eval nor pycocotools is installed"):
        DetectionEvaluator(("person",))


# ----------------------------------------------------------------------------------------------- errors


def test_configuration_errors() -> None:
    with pytest.raises(ConfigError, match=r"unknown 'detectron' \(available: auto, faster-coco-eval, pycocotools\)"):
        DetectionEvaluator(("person",), backend="detectron")
    with pytest.raises(ConfigError, match="class_names is empty"):
        DetectionEvaluator(())
    with pytest.raises(ConfigError, match="class name 'Person' repeats 'person'"):
        DetectionEvaluator(("person", "Person"))
    with pytest.raises(ConfigError, match=r"alias 'person' -> 'people': 'people' is not in class_names"):
        DetectionEvaluator(("pedestrian",), aliases={"person": "people"})
    with pytest.raises(ConfigError, match="max_dets must be a positive integer, got 0"):
        DetectionEvaluator(("person",), max_dets=0)


def test_input_errors() -> None:
    ev = DetectionEvaluator(("person",))
    ev.add("a", GroundTruth.empty(), Detections.empty())
    with pytest.raises(InputError, match="image 'a' was already added"):
        ev.add("a", GroundTruth.empty(), Detections.empty())
    bad = Detections(np.zeros((2, 4), np.float32), np.zeros(1, np.float32), np.zeros(2, np.int64), DET_TABLE)
    with pytest.raises(InputError, match=r"image 'b': detections need boxes \(N, 4\), scores \(N,\), class_ids"):
        ev.add("b", GroundTruth.empty(), bad)
    nan = _det([[0, 0, 1, 1]], [float("nan")], ["person"])
    with pytest.raises(InputError, match="image 'c': detections have non-finite boxes or scores"):
        ev.add("c", GroundTruth.empty(), nan)
    flipped = _det([[5, 0, 1, 1]], [0.5], ["person"])
    with pytest.raises(InputError, match=r"image 'd': detection boxes need x2 >= x1 and y2 >= y1"):
        ev.add("d", GroundTruth.empty(), flipped)
    with pytest.raises(InputError, match="ground truth must be a GroundTruth, got dict"):
        ev.add("e", {}, Detections.empty())  # type: ignore[arg-type]
    assert len(ev) == 1  # failed adds leave nothing behind


def test_package_exports_the_public_api() -> None:
    import ivfusion_ros.eval as ev

    for name in ev.__all__:
        assert getattr(ev, name) is not None, name
    assert ev.DetectionEvaluator is DetectionEvaluator and "fusion_metrics" in ev.__all__
