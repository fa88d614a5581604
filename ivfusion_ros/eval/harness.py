"""The engine of ``ivfusion eval``: the pipeline over data sets, scored as fusion, as detection and for speed.

For every pair of every data set, :func:`evaluate` runs one :class:`~ivfusion_ros.pipeline.Pipeline` per fusion
variant (detector on the fused image) and, when the data set has labels the detector can be scored on, two
single-source baselines with the *same* detector instance: ``ir_only`` (``detector.input: thermal``, the
registered thermal image replicated to three channels) and ``vis_only`` (``detector.input: rgb``). Then:

* fusion metrics (:func:`~ivfusion_ros.eval.metrics.fusion_metrics`) of the fused image against the registered
  thermal and the visible image, all at the output size, per pair; the report averages them per variant;
* COCO mAP@0.5 and mAP@0.5:0.95, overall and per class (:class:`~ivfusion_ros.eval.detection.DetectionEvaluator`),
  per data set and over all of them, for each variant and baseline. Only classes both the labels and the detector
  know are scored (names matched case-insensitively): the HOG detector only outputs ``person``, so on a data set
  labelled person/bicycle/car only ``person`` is evaluated, and the report says so;
* per-stage latency of each variant's pipeline (``Result.timings``), after ``warmup`` untimed frames per data set.

Pairs of an image folder are independent stills: every pipeline is reset before each pair (regime hysteresis and
thermal AGC start fresh), unless ``sequence=True``. The variant pipelines override ``fusion.variant`` (and clear
the per-regime variants) so each variant is scored on its own; the baselines run with ``fusion.variant: average``,
whose output they do not use. Pairs that cannot be read or decoded are skipped for every variant alike and
listed in :attr:`EvalResult.failed`; a label file that does not fit its image stops the evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ivfusion_ros.config import PipelineConfig, update_config
from ivfusion_ros.detect.base import Detections, Detector
from ivfusion_ros.detect.boxes import count_matches
from ivfusion_ros.detect.registry import create_detector
from ivfusion_ros.errors import ConfigError, InputError
from ivfusion_ros.eval.dataset import Dataset
from ivfusion_ros.eval.detection import DetectionEvaluator, DetectionMetrics
from ivfusion_ros.eval.labels import GroundTruth
from ivfusion_ros.eval.metrics import METRICS, fusion_metrics
from ivfusion_ros.eval.report import BASELINES, FramePicker, FrameRecord, Thumbnail
from ivfusion_ros.io.images import read_thermal, read_visible
from ivfusion_ros.pipeline import Pipeline, Result
from ivfusion_ros.runtime.device import resolve_device
from ivfusion_ros.viz import draw_detections, side_by_side

__all__ = ["EvalResult", "evaluate", "parse_metric_names", "parse_variants"]

#: Height in pixels of each panel of a best/worst thumbnail strip.
THUMB_HEIGHT = 240


@dataclass
class EvalResult:
    """Everything :func:`evaluate` measured, ready for :func:`~ivfusion_ros.eval.report.write_report`.

    Attributes:
        frames: one record per pair and variant (and baseline), in processing order.
        detection: source (variant or ``ir_only``/``vis_only``) -> mAP over all data sets with labels.
        dataset_detection: data set name -> source -> mAP of that data set.
        thumbnails: best and worst frames per data set.
        failed: data set name -> pair name -> why it was skipped.
        detector: description of the detector (type, classes, evaluated classes, notes).
        notes: sentences for the report (what was not evaluated and why).
        criterion: how best and worst frames were ranked.
    """

    frames: list[FrameRecord] = field(default_factory=list)
    detection: dict[str, DetectionMetrics] = field(default_factory=dict)
    dataset_detection: dict[str, dict[str, DetectionMetrics]] = field(default_factory=dict)
    thumbnails: list[Thumbnail] = field(default_factory=list)
    failed: dict[str, dict[str, str]] = field(default_factory=dict)
    detector: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    criterion: str = ""


def parse_variants(variants: str | Sequence[str]) -> list[str]:
    """``"adaptive, average,max"`` -> ``["adaptive", "average", "max"]`` (order kept, repeats dropped).

    Raises:
        ConfigError: no variant, or a name the fusion registry does not know (the message lists them).
    """
    from ivfusion_ros.fusion.registry import list_fusers

    items = [v.strip() for v in (variants.split(",") if isinstance(variants, str) else variants) if v.strip()]
    if not items:
        raise ConfigError("--variants: give at least one fusion variant, e.g. adaptive,average,max")
    known = [f.name for f in list_fusers()]
    for v in items:
        if v not in known:
            raise ConfigError(f"--variants: unknown variant {v!r}; valid: {', '.join(known)}")
    return list(dict.fromkeys(items))


def parse_metric_names(metrics: str | Sequence[str] | None) -> list[str]:
    """Fusion metric names, case-insensitive, in canonical spelling (``None`` = all of :data:`METRICS`).

    Raises:
        ConfigError: an unknown name (the message lists the valid ones).
    """
    if metrics is None:
        return list(METRICS)
    items = [m.strip() for m in (metrics.split(",") if isinstance(metrics, str) else metrics) if m.strip()]
    lookup = {k.casefold(): k for k in METRICS}
    out = []
    for m in items:
        if m.casefold() not in lookup:
            raise ConfigError(f"--metrics: unknown fusion metric {m!r}; valid: {', '.join(METRICS)}")
        out.append(lookup[m.casefold()])
    return list(dict.fromkeys(out))


def _evaluated_classes(label_classes: Sequence[str], detector_classes: Sequence[str]) -> list[str]:
    """Label classes (in label order, label spelling) that the detector can output, by case-insensitive name."""
    det = {c.strip().casefold() for c in detector_classes}
    return [c for c in label_classes if c.strip().casefold() in det]


def _matched(gt: GroundTruth, det: Detections, classes: Sequence[str]) -> tuple[int, int]:
    """(ground-truth objects of ``classes`` found at IoU >= 0.5 by a detection of their class, objects)."""
    keys = {c.strip().casefold() for c in classes}
    gt_names = np.array([n.strip().casefold() for n in gt.names()], dtype=object)
    det_names = np.array([n.strip().casefold() for n in det.names()], dtype=object)
    found = total = 0
    for c in keys:
        g = (gt_names == c) & ~gt.ignore if len(gt) else np.zeros(0, bool)
        total += int(g.sum())
        d = det_names == c if len(det) else np.zeros(0, bool)
        if g.any() and d.any():
            found += count_matches(gt.boxes[g], det.boxes[d], det.scores[d])
    return found, total


def _panel(img: np.ndarray, det: Detections | None, gt: GroundTruth | None) -> np.ndarray:
    boxed = draw_detections(img, det if det is not None else Detections.empty(),
                            gt_boxes=gt.boxes[~gt.ignore] if gt is not None and len(gt) else None)  # fmt: skip
    h, w = boxed.shape[:2]
    if h > THUMB_HEIGHT:
        boxed = cv2.resize(boxed, (max(1, round(w * THUMB_HEIGHT / h)), THUMB_HEIGHT), interpolation=cv2.INTER_AREA)
    return boxed


def _strip(results: dict[str, Result], variants: Sequence[str], gt: GroundTruth | None) -> np.ndarray:
    first = results[variants[0]]
    assert first.thermal is not None and first.rgb is not None
    ir_det = results["ir_only"].detections if "ir_only" in results else None
    vis_det = results["vis_only"].detections if "vis_only" in results else None
    panels = [_panel(first.thermal, ir_det, gt), _panel(first.rgb, vis_det, gt)]
    labels = ["thermal" + (" (IR-only det.)" if ir_det is not None else ""),
              "visible" + (" (VIS-only det.)" if vis_det is not None else "")]  # fmt: skip
    for v in variants:
        panels.append(_panel(results[v].fused, results[v].detections, gt))
        labels.append(f"fused: {v}")
    return side_by_side(panels, labels)


def _variant_config(cfg: PipelineConfig, variant: str, source: str) -> PipelineConfig:
    return update_config(cfg, **{"fusion.variant": variant, "fusion.variant_day": "", "fusion.variant_night": "",
                                 "detector.input": source})  # fmt: skip


def evaluate(
    datasets: Sequence[Dataset],
    cfg: PipelineConfig,
    variants: Sequence[str],
    *,
    metrics: Sequence[str] | None = None,
    warmup: int = 1,
    sequence: bool = False,
    thumbnails: int = 3,
    detector: Detector | None = None,
    on_frame: Callable[[str, str], None] | None = None,
) -> EvalResult:
    """Evaluate ``variants`` on ``datasets`` with the pipeline configured by ``cfg`` (see the module docstring).

    Args:
        datasets: opened data sets (:func:`~ivfusion_ros.eval.dataset.open_datasets`).
        cfg: the base configuration (detector, registration, fusion parameters, device...).
        variants: fusion variants to compare; the first one ranks the best/worst frames.
        metrics: fusion metric names (``None``: all of :data:`~ivfusion_ros.eval.metrics.METRICS`; ``[]``: none).
        warmup: untimed frames per pipeline at the start of each data set.
        sequence: keep the pipelines' state between pairs (frames of one recording) instead of resetting it.
        thumbnails: best and worst frames kept per data set.
        detector: a detector to use instead of building the one ``cfg.detector`` describes.
        on_frame: called with ``(data set, pair name)`` after each pair (progress display).

    Raises:
        ConfigError: an unknown variant or metric, a bad detector setting.
        ModelError: the detector's model cannot be loaded.
        InputError: a label file does not fit its image, or no pair at all could be read.
    """
    variants = parse_variants(variants)
    metric_names = parse_metric_names(metrics)
    device = resolve_device(cfg.runtime.device)
    cfg = update_config(cfg, **{"runtime.device": device.type})  # resolved once: one "no CUDA" warning, not six
    det = detector if detector is not None else create_detector(cfg.detector, device=device.type,
                                                                 threads=cfg.runtime.threads)  # fmt: skip
    det_classes = tuple(det.class_names)
    result = EvalResult()
    notes = result.notes

    # which classes each data set can be scored on
    evaluated: dict[str, list[str]] = {}
    for ds in datasets:
        if ds.labels is None:
            notes.append(f"{ds.name}: no labels, fusion metrics and latency only.")
            continue
        if not det_classes:
            continue
        classes = _evaluated_classes(ds.labels.class_names, det_classes)
        if not classes:
            notes.append(f"{ds.name}: the detector's classes ({', '.join(det_classes[:8])}"
                         f"{', ...' if len(det_classes) > 8 else ''}) share no name with the label classes "
                         f"({', '.join(ds.labels.class_names)}); detection not evaluated.")  # fmt: skip
            continue
        evaluated[ds.name] = classes
    if not det_classes:
        notes.append(f"detector {cfg.detector.type!r} outputs nothing: detection not evaluated.")
    pooled_classes = list(dict.fromkeys(c for cs in evaluated.values() for c in cs))
    with_baselines = bool(evaluated)

    pipelines: dict[str, Pipeline] = {}
    if with_baselines:
        for b, source in BASELINES.items():
            pipelines[b] = Pipeline(_variant_config(cfg, "average", source), detector=det)
    for v in variants:
        pipelines[v] = Pipeline(_variant_config(cfg, v, "fused"), detector=det)

    sources = [*(BASELINES if with_baselines else ()), *variants]
    pooled = {s: DetectionEvaluator(pooled_classes) for s in sources} if pooled_classes else {}
    rank_metric = "Qabf" if "Qabf" in metric_names else (metric_names[0] if metric_names else None)
    criteria = set()
    total_ok = 0

    for ds in datasets:
        classes = evaluated.get(ds.name)
        per_ds = {s: DetectionEvaluator(classes) for s in sources} if classes else {}
        picker = FramePicker(thumbnails, ds.name)
        failed: dict[str, str] = {}
        warmed = warmup <= 0
        for index, pair in enumerate(ds.pairs):
            try:
                thermal, rgb = read_thermal(pair.ir), read_visible(pair.vis)
                if not warmed:
                    for pipe in pipelines.values():
                        for _ in range(warmup):
                            pipe.process(thermal, rgb, float(index), keep_inputs=True)
                        pipe.reset()
                    warmed = True
                results: dict[str, Result] = {}
                for name, pipe in pipelines.items():
                    if not sequence:
                        pipe.reset()
                    results[name] = pipe.process(thermal, rgb, float(index), keep_inputs=name in variants)
            except InputError as err:
                failed[pair.name] = str(err)
                if on_frame:
                    on_frame(ds.name, pair.name)
                continue
            total_ok += 1
            first = results[variants[0]]
            out_size = (first.fused.shape[1], first.fused.shape[0])
            gt = ds.ground_truth(pair.name, (rgb.shape[1], rgb.shape[0]), out_size) if classes else None
            image_id = f"{ds.name}/{pair.name}"
            records: dict[str, FrameRecord] = {}
            for name, res in results.items():
                extra: dict[str, Any] = {}
                if name in variants:
                    assert res.thermal is not None and res.rgb is not None
                    extra["fusion_metrics"] = (fusion_metrics(res.fused, res.thermal, res.rgb, metric_names)
                                               if metric_names else {})  # fmt: skip
                if gt is not None and classes:
                    extra["matched"], extra["num_gt"] = _matched(gt, res.detections, classes)
                    per_ds[name].add(image_id, gt, res.detections)
                    pooled[name].add(image_id, gt, res.detections)
                records[name] = FrameRecord.from_result(
                    res, pair.name, dataset=ds.name, index=index, variant=name,
                    input=BASELINES.get(name, "fused"), **extra)  # fmt: skip
            result.frames.extend(records.values())

            lead = records[variants[0]]
            q = lead.fusion_metrics.get(rank_metric, math.nan) if rank_metric else math.nan
            if rank_metric is not None and not METRICS[rank_metric]:
                q = -q
            if classes:
                score: tuple[float, ...] = (lead.recall if lead.recall is not None else math.nan, q)
                criteria.add(f"detection recall at IoU 0.5 of '{variants[0]}' on {', '.join(classes)} "
                             f"(frames without objects not ranked), ties by {rank_metric or 'nothing'}")  # fmt: skip
            else:
                score = (q,)
                criteria.add(f"{rank_metric} of '{variants[0]}'" + ("" if rank_metric is None or METRICS[rank_metric]
                                                                    else " (negated: lower is better)"))
            caption = ", ".join(
                ([f"recall {lead.matched}/{lead.num_gt}"] if lead.num_gt else [])
                + ([f"{rank_metric} {lead.fusion_metrics[rank_metric]:.3f}"]
                   if rank_metric and rank_metric in lead.fusion_metrics else [])
                + [f"{lead.regime}, illumination {lead.illumination:.2f}, glare {100 * lead.glare_fraction:.1f} %"]
                + ["detections: " + ", ".join(f"{n} {len(r.detections)}" for n, r in records.items())]
            )  # fmt: skip
            picker.offer(score, pair.name, lambda r=results, g=gt: _strip(r, variants, g), caption)
            if on_frame:
                on_frame(ds.name, pair.name)

        result.thumbnails.extend(picker.thumbnails())
        if failed:
            result.failed[ds.name] = failed
            notes.append(f"{ds.name}: {len(failed)} pair(s) could not be read and were skipped.")
        if per_ds:
            result.dataset_detection[ds.name] = {s: e.compute() for s, e in per_ds.items() if len(e)}

    if total_ok == 0:
        raise InputError("none of the pairs could be read; see the messages above", reason="bad_input")
    if pooled:
        result.detection = {s: e.compute() for s, e in pooled.items() if len(e)}
    det_notes = []
    if pooled_classes:
        skipped = sorted({c for ds in datasets if ds.labels is not None and ds.name in evaluated
                          for c in ds.labels.class_names if c not in evaluated[ds.name]})  # fmt: skip
        msg = f"detection scored on {', '.join(pooled_classes)}"
        if skipped:
            n = sum(next(iter(d.values())).ignored_gt for d in result.dataset_detection.values() if d)
            msg += (f"; the detector cannot output {', '.join(skipped)}, so those {n} ground-truth object(s) "
                    "are not evaluated")  # fmt: skip
        det_notes.append(msg + ".")
        det_notes.append("baselines use the same detector on one source: IR only = the registered thermal image "
                         "replicated to 3 channels (detector.input: thermal), VIS only = the visible image "
                         "(detector.input: rgb).")  # fmt: skip
    notes.extend(det_notes)
    if not sequence:
        notes.append("pairs are independent: the pipeline state (regime hysteresis, thermal AGC) is reset before "
                     "each pair.")  # fmt: skip
    result.detector = {
        "type": cfg.detector.type,
        "description": det.describe(),
        "class_names": list(det_classes),
        "evaluated_classes": pooled_classes,
        "notes": det_notes,
    }
    result.criterion = "; ".join(sorted(criteria))
    return result
