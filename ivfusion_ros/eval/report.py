"""Evaluation reports: ``report.json`` (machine readable, stable keys), ``report.html`` and ``report.md``.

One writer serves every tool that runs the pipeline over many frames (``ivfusion eval`` on image folders, the
bag replay): it takes per-frame :class:`FrameRecord` s and, optionally, detection tables, and derives the rest
(mean fusion metrics, latency percentiles, plots). :func:`write_report` writes, into one folder::

    report.json        everything below; numbers that are not finite (NaN, inf) are written as null
    report.html        self-contained (inline CSS, plots and thumbnails embedded as base64 PNG)
    report.md          the tables as Markdown (what ``ivfusion eval`` prints), for READMEs and reviews
    plots/latency.png  per-stage latency, p50 bars with p90 and p99 marks, per variant
    plots/timeline.png per frame: illumination level, regime, glare share; detections per variant
    thumbs/*.png       IR | VIS | fused strips of the best and worst frames (see below)

``report.json``, version 1. Keys are stable: new keys may be added within a version, none are renamed or
removed without bumping ``version``.

.. code-block:: text

    version            1
    title, created     str; ISO-8601 UTC time of writing
    ivfusion_version   str
    command            str: the command line that produced the report ("" when not given)
    config             {"section.key": value}: the effective base configuration (each variant overrides
                       fusion.variant; baselines override detector.input)
    environment        {"python", "platform", "cpu_count", "numpy", "opencv", "torch", "torch_threads",
                        "cuda"}: where it ran (the last four only when loaded)
    detector           null | {"type", "description", "class_names": [...],
                               "evaluated_classes": [...], "notes": [...]}
    metrics            {name: {"higher_is_better": bool}} for every fusion metric in the tables
    datasets           [{"name", "root", "ir", "vis", "pairs", "unpaired": {"ir", "vis"}, "labels",
                         "missing_labels", "unused_labels", "failed": {pair: reason},
                         "variants": {...}, "baselines": {...}}]  (per data set, same layout as below)
    variants           {variant: {"frames": n, "fusion_metrics": {metric: mean} ,
                                  "detection": null | DETECTION,
                                  "latency_ms": {stage: {"p50", "p90", "p99"}, ..., "total": {...}}}}
    baselines          {"ir_only": {"input": "thermal", "frames": n, "detection": DETECTION},
                        "vis_only": {"input": "rgb", ...}}   ({} when detection was not evaluated)
    thumbnails         {"criterion": str, "items": [{"dataset", "name", "kind": "best"|"worst", "rank",
                                                    "score": [...], "caption", "file"}]}
    plots              {"latency": "plots/latency.png", "timeline": "plots/timeline.png"} (null if absent)
    notes              [str]
    frames             [FRAME]
    default_choice     {"variant": name | null, "rule": str, "candidates": [{"variant", "map50_95", "map50", "wins",
                        "comparisons", "glare_ok", "fuse_ms", "why"}]}: the default variant by the rule of
                        :mod:`~ivfusion_ros.eval.choose`, ranked

    DETECTION          ``DetectionMetrics.to_dict()``: {"map50", "map50_95", "per_class": {class: {"ap50",
                       "ap50_95", "num_gt", "num_det"}}, "num_images", "num_gt", "num_det", "ignored_gt",
                       "ignored_det", "ignored_classes", "backend", "max_dets", "iou_thresholds"}
    FRAME              {"dataset", "name", "index", "stamp", "variant", "input", "regime", "illumination",
                        "glare_fraction", "num_detections", "detections": [{"box", "score", "class_id",
                        "class_name"}], "timings_ms": {stage: ms}, "fusion_metrics": {metric: value},
                        "num_gt": null | int, "matched": null | int}

``fusion_metrics`` means are over the frames where the metric is finite. A frame record is one detector pass:
fused variants have ``input = "fused"``; the single-source baselines are records with ``variant`` ``ir_only``
(``input = "thermal"``) or ``vis_only`` (``input = "rgb"``) and no fusion metrics. ``num_gt`` counts the
ground-truth objects of the evaluated classes, ``matched`` how many of them a detection of the same class finds
at IoU >= 0.5 (greedy, highest score first); both are null without labels. Latency percentiles are over the
fused records of a variant (numpy's linear interpolation).

Best and worst frames: :class:`FramePicker` keeps the ``k`` highest and lowest scored frames of each data set
while frames stream by (only their thumbnails are kept). ``ivfusion eval`` scores a frame by the detection
recall at IoU 0.5 of the first listed variant (frames without ground-truth objects are not ranked), ties broken
by its Qabf; without labels or detector by Qabf alone. The criterion is written to ``thumbnails.criterion``.
"""

from __future__ import annotations

import base64
import datetime as _dt
import heapq
import html
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ivfusion_ros.errors import IvfusionError
from ivfusion_ros.eval.choose import choice_rows, choose_default
from ivfusion_ros.eval.metrics import METRICS

__all__ = [
    "BASELINES",
    "REPORT_VERSION",
    "FramePicker",
    "FrameRecord",
    "ReportTable",
    "Thumbnail",
    "build_report",
    "html_document",
    "html_table",
    "img_tag",
    "latency_table",
    "metric_means",
    "percentiles",
    "plot_latency",
    "report_tables",
    "tables_markdown",
    "write_report",
]

REPORT_VERSION = 1

#: Single-source baselines: record ``variant`` -> the ``detector.input`` it ran with.
BASELINES: Mapping[str, str] = {"ir_only": "thermal", "vis_only": "rgb"}
_BASELINE_LABEL = {"ir_only": "IR only", "vis_only": "VIS only"}
_STAGES_DEFAULT = ("preprocess", "register", "illumination", "fuse", "detect", "postprocess")


def _finite_or_none(x: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python, tuples -> lists (recursively)."""
    if isinstance(x, Mapping):
        return {str(k): _finite_or_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite_or_none(v) for v in x]
    if isinstance(x, np.ndarray):
        return _finite_or_none(x.tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


# ---------------------------------------------------------------------------------------------- records


@dataclass
class FrameRecord:
    """One detector pass on one frame: what the pipeline decided, found and spent.

    Attributes:
        name: frame id (the file stem of a pair, or a bag stamp as text).
        variant: fusion variant that ran, or a :data:`BASELINES` key for a single-source pass.
        regime, illumination, glare_fraction: as in :class:`~ivfusion_ros.pipeline.Result`.
        detections: ``Detections.to_dicts()``.
        timings_ms: milliseconds per pipeline stage.
        stamp: time stamp in seconds (the pair index for image folders).
        dataset: the data set or bag the frame belongs to.
        index: position of the frame in its data set.
        input: what the detector saw: ``fused``, ``thermal`` or ``rgb``.
        fusion_metrics: metric -> value for this frame (fused records only).
        num_gt, matched: ground-truth objects of the evaluated classes and how many were found (IoU >= 0.5);
            ``None`` without labels.
    """

    name: str
    variant: str
    regime: str
    illumination: float
    glare_fraction: float
    detections: list[dict] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    stamp: float = 0.0
    dataset: str = ""
    index: int = 0
    input: str = "fused"
    fusion_metrics: dict[str, float] = field(default_factory=dict)
    num_gt: int | None = None
    matched: int | None = None

    @classmethod
    def from_result(cls, result: Any, name: str, *, dataset: str = "", index: int = 0, input: str = "fused",
                    variant: str | None = None, **extra: Any) -> FrameRecord:  # fmt: skip
        """Build a record from a :class:`~ivfusion_ros.pipeline.Result` (``variant`` overrides its variant)."""
        return cls(
            name=name, variant=variant or result.variant, regime=result.regime,
            illumination=float(result.illumination), glare_fraction=float(result.glare_fraction),
            detections=result.detections.to_dicts(), timings_ms=dict(result.timings), stamp=float(result.stamp),
            dataset=dataset, index=index, input=input, **extra,
        )  # fmt: skip

    @property
    def recall(self) -> float | None:
        """``matched / num_gt``, or ``None`` without ground truth objects."""
        if not self.num_gt or self.matched is None:
            return None
        return self.matched / self.num_gt

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "name": self.name,
            "index": self.index,
            "stamp": round(self.stamp, 6),
            "variant": self.variant,
            "input": self.input,
            "regime": self.regime,
            "illumination": round(self.illumination, 4),
            "glare_fraction": round(self.glare_fraction, 5),
            "num_detections": len(self.detections),
            "detections": self.detections,
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
            "fusion_metrics": dict(self.fusion_metrics),
            "num_gt": self.num_gt,
            "matched": self.matched,
        }


# ----------------------------------------------------------------------------------------- aggregation


def percentiles(values: Iterable[float]) -> dict[str, float | None]:
    """``{"p50", "p90", "p99"}`` of ``values`` (numpy linear interpolation); ``None`` entries when empty."""
    a = np.asarray([v for v in values if v is not None and math.isfinite(v)], np.float64)
    if a.size == 0:
        return {"p50": None, "p90": None, "p99": None}
    p = np.percentile(a, [50, 90, 99])
    return {"p50": round(float(p[0]), 3), "p90": round(float(p[1]), 3), "p99": round(float(p[2]), 3)}


def _fused(frames: Iterable[FrameRecord]) -> list[FrameRecord]:
    return [f for f in frames if f.input == "fused"]


def _variant_order(frames: Iterable[FrameRecord]) -> list[str]:
    return list(dict.fromkeys(f.variant for f in _fused(frames)))


def _stage_order(frames: Sequence[FrameRecord]) -> list[str]:
    seen = dict.fromkeys(s for f in frames for s in f.timings_ms)
    known = [s for s in _STAGES_DEFAULT if s in seen]
    return known + [s for s in seen if s not in known]


def latency_table(frames: Sequence[FrameRecord]) -> dict[str, dict[str, dict[str, float | None]]]:
    """``{variant: {stage: {p50, p90, p99}, ..., "total": {...}}}`` over the fused records of each variant."""
    fused = _fused(frames)
    stages = _stage_order(fused)
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for v in _variant_order(fused):
        recs = [f for f in fused if f.variant == v]
        table = {s: percentiles(f.timings_ms[s] for f in recs if s in f.timings_ms) for s in stages}
        table["total"] = percentiles(sum(f.timings_ms.values()) for f in recs)
        out[v] = table
    return out


def metric_means(frames: Sequence[FrameRecord]) -> dict[str, dict[str, float | None]]:
    """``{variant: {metric: mean over the frames where it is finite}}`` (``None`` when it never is)."""
    out: dict[str, dict[str, float | None]] = {}
    fused = _fused(frames)
    for v in _variant_order(fused):
        recs = [f for f in fused if f.variant == v]
        names = list(dict.fromkeys(m for f in recs for m in f.fusion_metrics))
        means: dict[str, float | None] = {}
        for m in names:
            vals = [f.fusion_metrics[m] for f in recs if m in f.fusion_metrics and f.fusion_metrics[m] is not None
                    and math.isfinite(f.fusion_metrics[m])]  # fmt: skip
            means[m] = float(np.mean(vals)) if vals else None
        out[v] = means
    return out


def _summaries(frames: Sequence[FrameRecord], detection: Mapping[str, Any] | None) -> tuple[dict, dict]:
    """The ``variants`` and ``baselines`` blocks of one scope (all frames, or one data set's)."""
    detection = detection or {}
    means, latency = metric_means(frames), latency_table(frames)
    variants: dict[str, dict] = {}
    for v in _variant_order(frames):
        variants[v] = {
            "frames": sum(1 for f in frames if f.input == "fused" and f.variant == v),
            "fusion_metrics": means.get(v, {}),
            "detection": _as_dict(detection.get(v)),
            "latency_ms": latency.get(v, {}),
        }
    baselines: dict[str, dict] = {}
    for b, source in BASELINES.items():
        n = sum(1 for f in frames if f.variant == b)
        if n or b in detection:
            baselines[b] = {"input": source, "frames": n, "detection": _as_dict(detection.get(b))}
    return variants, baselines


def _as_dict(x: Any) -> Any:
    if x is None:
        return None
    return x.to_dict() if hasattr(x, "to_dict") else dict(x)


# ------------------------------------------------------------------------------------------ thumbnails


@dataclass
class Thumbnail:
    """A best or worst frame: its strip image and why it was picked."""

    dataset: str
    name: str
    kind: str  # "best" or "worst"
    score: tuple[float, ...]
    caption: str
    image: np.ndarray  # (H, W, 3) uint8 RGB
    rank: int = 0


class FramePicker:
    """Keeps the ``k`` highest and ``k`` lowest scored frames of a stream, building only their thumbnails.

    ``offer(score, name, make)`` compares ``score`` (a float or a tuple of floats, compared lexicographically;
    NaN makes a frame unranked) with what is kept and calls ``make()`` for the image only when the frame gets in.
    Ties keep the earlier frame. A frame is shown once: the worst list holds the lowest scored frames that are not
    in the best list (so with fewer than ``2 k`` ranked frames it is shorter).
    """

    def __init__(self, k: int = 3, dataset: str = "") -> None:
        self.k = max(0, int(k))
        self.dataset = dataset
        self._best: list[tuple] = []  # min-heap of (score, -seq, name, caption, image)
        self._worst: list[tuple] = []  # min-heap of (negated score, -seq, ...)
        self._seq = 0
        self.ranked = 0

    def offer(self, score: float | Sequence[float], name: str, make: Callable[[], np.ndarray],
              caption: str = "") -> None:  # fmt: skip
        s = tuple(float(v) for v in (score if isinstance(score, Sequence) else (score,)))
        if self.k == 0 or not s or any(math.isnan(v) for v in s):
            return
        self.ranked += 1
        self._seq += 1
        neg = tuple(-v for v in s)
        into_best = len(self._best) < self.k or (s, -self._seq) > self._best[0][:2]
        # 2 k candidates for the worst list: after removing those shown as best, k remain
        into_worst = len(self._worst) < 2 * self.k or (neg, -self._seq) > self._worst[0][:2]
        if not (into_best or into_worst):
            return
        image = make()
        if into_best:
            item = (s, -self._seq, name, caption, image)
            (heapq.heappush if len(self._best) < self.k else heapq.heapreplace)(self._best, item)
        if into_worst:
            item = (neg, -self._seq, name, caption, image)
            (heapq.heappush if len(self._worst) < 2 * self.k else heapq.heapreplace)(self._worst, item)

    def thumbnails(self) -> list[Thumbnail]:
        """Best first (highest score first), then worst (lowest score first), without repeats."""
        best = sorted(self._best, key=lambda t: (t[0], t[1]), reverse=True)
        shown = {t[2] for t in best}
        worst = [t for t in sorted(self._worst, key=lambda t: (t[0], t[1]), reverse=True) if t[2] not in shown]
        worst = worst[: self.k]
        out = [Thumbnail(self.dataset, t[2], "best", t[0], t[3], t[4], i + 1) for i, t in enumerate(best)]
        out += [Thumbnail(self.dataset, t[2], "worst", tuple(-v for v in t[0]), t[3], t[4], i + 1)
                for i, t in enumerate(worst)]  # fmt: skip
        return out


# -------------------------------------------------------------------------------------------- the report


def _environment() -> dict:
    """Where the numbers were measured (latency depends on it): Python, platform, CPUs, library versions."""
    import os
    import platform
    import sys

    env: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                           "cpu_count": os.cpu_count(), "numpy": np.__version__}  # fmt: skip
    cv2 = sys.modules.get("cv2")
    if cv2 is not None:
        env["opencv"] = cv2.__version__
    torch = sys.modules.get("torch")  # only when the caller ran the pipeline: never imported for this
    if torch is not None:
        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
        env["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return env


def build_report(
    frames: Sequence[FrameRecord],
    *,
    detection: Mapping[str, Any] | None = None,
    dataset_detection: Mapping[str, Mapping[str, Any]] | None = None,
    datasets: Sequence[Mapping[str, Any]] = (),
    config: Mapping[str, Any] | None = None,
    detector: Mapping[str, Any] | None = None,
    notes: Sequence[str] = (),
    title: str = "ivfusion evaluation",
    command: str = "",
    criterion: str = "",
) -> dict:
    """The ``report.json`` document (see the module docstring), without thumbnails and plots.

    Args:
        frames: every frame record (fused variants and baselines, all data sets).
        detection: source (variant name or :data:`BASELINES` key) -> ``DetectionMetrics`` (or its dict) over all
            data sets; ``None`` when detection was not evaluated.
        dataset_detection: data set name -> the same, per data set (with a single data set, ``detection``
            serves when this is not given).
        datasets: a description per data set (e.g. ``Dataset.describe()``); a data set named by frames but not
            described gets ``{"name": ...}``.
        config: the base configuration as ``{"section.key": value}``.
        detector: detector description (``type``, ``description``, ``class_names``, ``evaluated_classes``...).
        notes: sentences for the reader (what was not evaluated and why).
        title, command, criterion: shown in the report.
    """
    from ivfusion_ros import __version__

    described = {d.get("name"): dict(d) for d in datasets}
    names = list(described) + [n for n in dict.fromkeys(f.dataset for f in frames) if n not in described]
    ds_out = []
    for n in names:
        entry = described.get(n, {"name": n})
        recs = [f for f in frames if f.dataset == n]
        ds_det = (dataset_detection or {}).get(n)
        if ds_det is None and len(names) == 1:
            ds_det = detection  # one data set: its numbers are the overall ones
        variants, baselines = _summaries(recs, ds_det)
        entry["variants"], entry["baselines"] = variants, baselines
        ds_out.append(entry)
    variants, baselines = _summaries(frames, detection)
    used_metrics = list(dict.fromkeys(m for f in frames for m in f.fusion_metrics))
    report = {
        "version": REPORT_VERSION,
        "title": title,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "ivfusion_version": __version__,
        "command": command,
        "config": dict(config or {}),
        "environment": _environment(),
        "detector": dict(detector) if detector is not None else None,
        "metrics": {m: {"higher_is_better": bool(METRICS.get(m, True))} for m in used_metrics},
        "datasets": ds_out,
        "variants": variants,
        "baselines": baselines,
        "thumbnails": {"criterion": criterion, "items": []},
        "plots": {"latency": None, "timeline": None},
        "notes": list(notes),
        "frames": [f.to_dict() for f in frames],
    }
    report["default_choice"] = choose_default(report)
    return _finite_or_none(report)


# ---------------------------------------------------------------------------------------------- tables


@dataclass
class ReportTable:
    """A table as text cells, rendered to the terminal (rich), HTML and Markdown alike.

    ``bold`` holds ``(row, column)`` cells to emphasise (the best value of a metric column).
    """

    title: str
    columns: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]] = field(default_factory=set)
    note: str = ""
    kind: str = ""  # "fusion", "detection" or "latency"
    dataset: str = ""


def _fmt(v: Any, digits: int = 3, sci: bool = True) -> str:
    """Fixed-point with ``digits`` decimals; with ``sci``, values too small for that in scientific notation."""
    if v is None:
        return "–"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    if sci and v != 0 and abs(v) < 0.5 * 10.0 ** (1 - digits):
        return f"{v:.2e}"
    return f"{v:.{digits}f}"


def _source_label(name: str) -> str:
    return _BASELINE_LABEL.get(name, f"fused: {name}")


def _fusion_table(scope: Mapping[str, Any], metrics: Mapping[str, Any], title: str, dataset: str) -> ReportTable | None:
    variants = scope.get("variants") or {}
    names = [m for m in metrics if any(m in (v.get("fusion_metrics") or {}) for v in variants.values())]
    if not variants or not names:
        return None
    arrows = {m: "↑" if metrics[m]["higher_is_better"] else "↓" for m in names}
    columns = ["variant", "pairs", *(f"{m}{arrows[m]}" for m in names)]
    rows, bold = [], set()
    for v, block in variants.items():
        fm = block.get("fusion_metrics") or {}
        rows.append([v, str(block.get("frames", "")), *(_fmt(fm.get(m)) for m in names)])
    if len(rows) > 1:
        for j, m in enumerate(names):
            vals = [(block.get("fusion_metrics") or {}).get(m) for block in variants.values()]
            ok = [(x, i) for i, x in enumerate(vals) if x is not None]
            if ok:
                best = max(ok)[0] if metrics[m]["higher_is_better"] else min(ok)[0]
                bold |= {(i, j + 2) for x, i in ok if _fmt(x) == _fmt(best)}
    return ReportTable(title, columns, rows, bold, "↑ higher is better, ↓ lower is better; means over the pairs",
                       "fusion", dataset)  # fmt: skip


def _detection_table(scope: Mapping[str, Any], title: str, dataset: str) -> ReportTable | None:
    sources: list[tuple[str, Mapping[str, Any]]] = []
    for b, block in (scope.get("baselines") or {}).items():
        if block.get("detection"):
            sources.append((b, block["detection"]))
    for v, block in (scope.get("variants") or {}).items():
        if block.get("detection"):
            sources.append((v, block["detection"]))
    if not sources:
        return None
    classes = list(dict.fromkeys(c for _, d in sources for c, pc in d["per_class"].items() if pc.get("num_gt")))
    columns = ["detector input", "mAP@0.5", "mAP@0.5:0.95", *(f"AP@0.5 {c}" for c in classes),
               *(f"AP@0.5:0.95 {c}" for c in classes), "GT", "detections"]
    rows, bold = [], set()
    for name, d in sources:
        pcs = d["per_class"]
        rows.append([_source_label(name), _fmt(d["map50"]), _fmt(d["map50_95"]),
                     *(_fmt(pcs.get(c, {}).get("ap50")) for c in classes),
                     *(_fmt(pcs.get(c, {}).get("ap50_95")) for c in classes), str(d["num_gt"]), str(d["num_det"])])
    if len(rows) > 1:
        for j in range(1, 3 + 2 * len(classes)):
            vals = [(float(r[j]), i) for i, r in enumerate(rows) if r[j] not in ("–", "inf")]
            if vals:
                top = max(vals)[0]
                bold |= {(i, j) for x, i in vals if x == top}
    first = sources[0][1]
    note = (f"COCO protocol ({first.get('backend', '')}), classes evaluated: {', '.join(first['per_class'])}")
    ignored = first.get("ignored_gt") or 0
    if ignored:
        note += (f"; {ignored} ground-truth object(s) of classes the detector cannot output "
                 f"({', '.join(first.get('ignored_classes') or [])}) not evaluated")  # fmt: skip
    return ReportTable(title, columns, rows, bold, note, "detection", dataset)


def _latency_table(scope: Mapping[str, Any], title: str, dataset: str) -> ReportTable | None:
    variants = scope.get("variants") or {}
    if not variants:
        return None
    stages = list(dict.fromkeys(s for v in variants.values() for s in (v.get("latency_ms") or {})))
    if not stages:
        return None
    rows = []
    for v, block in variants.items():
        lat = block.get("latency_ms") or {}
        for p in ("p50", "p90", "p99"):
            rows.append([v, p, *(_fmt((lat.get(s) or {}).get(p), 2, sci=False) for s in stages)])
    n = max((block.get("frames", 0) for block in variants.values()), default=0)
    return ReportTable(title, ["variant", "", *stages], rows, set(),
                       f"milliseconds per frame over {n} frame(s) per variant", "latency", dataset)  # fmt: skip


def report_tables(report: Mapping[str, Any]) -> list[ReportTable]:
    """The tables of a report: fusion metrics, detection mAP and latency per data set, then over all data sets
    when there are several (data sets without labels have no detection table)."""
    metrics = report.get("metrics") or {}
    datasets = report.get("datasets") or []
    scopes: list[tuple[str, Mapping[str, Any]]] = [(d.get("name", ""), d) for d in datasets]
    if len(scopes) != 1:
        scopes.append(("all data sets" if scopes else "", report))
    out: list[ReportTable] = []
    for name, scope in scopes:
        suffix = f" — {name}" if name else ""
        for t in (_fusion_table(scope, metrics, f"Fusion metrics{suffix}", name),
                  _detection_table(scope, f"Detection{suffix}", name),
                  _latency_table(scope, f"Latency per stage (ms){suffix}", name)):  # fmt: skip
            if t is not None:
                out.append(t)
    choice = report.get("default_choice") or {}
    if len(choice.get("candidates") or ()) >= 2:  # a choice among one is no decision: no table
        cols, rows = choice_rows(choice)
        out.append(ReportTable("Default variant by the rule of ivfusion_ros/eval/choose.py", cols, rows,
                               note="rule: " + choice.get("rule", ""), kind="choice"))
    return out


def tables_markdown(tables: Sequence[ReportTable]) -> str:
    """GitHub Markdown of ``tables`` (bold cells in ``**``)."""
    parts = []
    for t in tables:
        lines = [f"**{t.title}**", "", "| " + " | ".join(t.columns) + " |",
                 "|" + "|".join("---" if j == 0 else "---:" for j in range(len(t.columns))) + "|"]  # fmt: skip
        for i, row in enumerate(t.rows):
            cells = [f"**{c}**" if (i, j) in t.bold else c for j, c in enumerate(row)]
            lines.append("| " + " | ".join(cells) + " |")
        if t.note:
            lines += ["", f"_{t.note}_"]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


# ----------------------------------------------------------------------------------------------- plots


def _figure(width: float, height: float) -> Any:
    """A matplotlib Figure on the Agg canvas (no pyplot, no global backend switch: headless and thread-safe)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _palette(i: int) -> str:
    colors = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
    return colors[i % len(colors)]


def plot_latency(report: Mapping[str, Any], path: Path) -> Path | None:
    """Grouped bars: p50 per stage and variant, with a whisker up to p99 and a tick at p90."""
    variants = report.get("variants") or {}
    stages = [s for s in dict.fromkeys(s for v in variants.values() for s in (v.get("latency_ms") or {}))
              if s != "total"]  # fmt: skip
    if not variants or not stages:
        return None
    fig = _figure(max(6.0, 1.2 * len(stages) + 2), 3.6)
    ax = fig.add_subplot(1, 1, 1)
    n = len(variants)
    width = 0.8 / n
    x = np.arange(len(stages))
    for i, (v, block) in enumerate(variants.items()):
        lat = block.get("latency_ms") or {}
        p = {q: np.array([lat.get(s, {}).get(q) or 0.0 for s in stages]) for q in ("p50", "p90", "p99")}
        xs = x - 0.4 + width * (i + 0.5)
        total = (lat.get("total") or {}).get("p50")
        label = f"{v} (total p50 {total:.1f} ms)" if total is not None else v
        ax.bar(xs, p["p50"], width * 0.9, color=_palette(i), label=label)
        ax.errorbar(xs, p["p50"], yerr=[np.zeros_like(p["p50"]), p["p99"] - p["p50"]], fmt="none",
                    ecolor="#333333", elinewidth=1, capsize=3)  # fmt: skip
        ax.scatter(xs, p["p90"], marker="_", s=80, color="#333333", zorder=3)
    ax.set_xticks(x)
    ax.set_xticklabels(stages)
    ax.set_ylabel("ms per frame")
    ax.set_title("Latency per stage: bar p50, tick p90, whisker p99")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


_REGIME_COLOR = {"day": "#fff3c4", "dusk": "#f6c68f", "night": "#9fb0c8"}


def plot_timeline(frames: Sequence[FrameRecord], path: Path) -> Path | None:
    """Per frame: illumination level on the regime's colour and glare share; below, detections per variant
    (solid), single-source baselines (dashed) and ground-truth objects (grey bars)."""
    variants = _variant_order(frames)
    if not variants:
        return None
    ref = [f for f in frames if f.input == "fused" and f.variant == variants[0]]
    keys = [(f.dataset, f.name) for f in ref]
    pos = {k: i for i, k in enumerate(keys)}
    n = len(keys)
    fig = _figure(min(18.0, max(8.5, 0.25 * n + 5.5)), 5.2)
    ax1, ax2 = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 1.2]})
    x = np.arange(n)
    for i, f in enumerate(ref):
        ax1.axvspan(i - 0.5, i + 0.5, color=_REGIME_COLOR.get(f.regime, "#dddddd"), lw=0)
    ax1.plot(x, [f.illumination for f in ref], "o-", color="#222222", ms=3, lw=1.2, label="illumination")
    ax1.set_ylim(0, 1)
    ax1.set_ylabel("illumination")
    axg = ax1.twinx()
    axg.plot(x, [100 * f.glare_fraction for f in ref], "s--", color="#c0392b", ms=2.5, lw=1, label="glare %")
    axg.set_ylabel("glare (% of image)", color="#c0392b")
    axg.set_ylim(bottom=0)
    from matplotlib.patches import Patch

    regimes = [r for r in ("day", "dusk", "night") if any(f.regime == r for f in ref)]
    handles = [Patch(color=_REGIME_COLOR[r], label=r) for r in regimes]
    h1, l1 = ax1.get_legend_handles_labels()
    h2, l2 = axg.get_legend_handles_labels()
    ax1.legend(handles + h1 + h2, regimes + l1 + l2, fontsize=7, loc="upper left", bbox_to_anchor=(1.14, 1.0),
               frameon=False)
    ax1.set_title("Illumination regime and detections per frame")
    if any(f.num_gt is not None for f in ref):
        ax2.bar(x, [f.num_gt or 0 for f in ref], 0.8, color="#dddddd", label="ground truth (scored classes)")
    series = [(v, "-", _palette(i)) for i, v in enumerate(variants)]
    series += [(b, "--", c) for b, c in (("ir_only", "#555555"), ("vis_only", "#e6a700"))]
    for name, style, color in series:
        recs = [f for f in frames if f.variant == name and (f.dataset, f.name) in pos]
        if not recs:
            continue
        counts = np.full(n, np.nan)
        for f in recs:
            counts[pos[(f.dataset, f.name)]] = len(f.detections)
        ax2.plot(x, counts, style, marker="o", ms=3, lw=1.2, color=color, label=_source_label(name))
    from matplotlib.ticker import MaxNLocator

    ax2.set_ylabel("detections")
    ax2.set_ylim(bottom=0)
    ax2.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.14, 1.0), frameon=False)
    ax2.grid(axis="y", alpha=0.3)
    datasets = list(dict.fromkeys(k[0] for k in keys))
    if len(datasets) > 1:
        for d in datasets[1:]:
            start = next(i for i, k in enumerate(keys) if k[0] == d)
            for ax in (ax1, ax2):
                ax.axvline(start - 0.5, color="black", lw=1)
        for d in datasets:
            idx = [i for i, k in enumerate(keys) if k[0] == d]
            ax2.annotate(d, ((idx[0] + idx[-1]) / 2, 1.0), xycoords=("data", "axes fraction"), ha="center",
                         va="bottom", fontsize=8)  # fmt: skip
    if n <= 40:
        ax2.set_xticks(x)
        ax2.set_xticklabels([k[1] for k in keys], rotation=60, ha="right", fontsize=7)
    else:
        ax2.set_xlabel("frame")
    ax2.set_xlim(-0.5, n - 0.5)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


# ------------------------------------------------------------------------------------------------ HTML

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1400px;
color:#1d1d1f;padding:0 16px;line-height:1.4}
h1{font-size:1.6em;margin-bottom:4px}h2{margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{margin:20px 0 6px}.meta{color:#555;font-size:.9em}code{background:#f3f3f5;padding:1px 4px;border-radius:3px}
table{border-collapse:collapse;margin:6px 0 4px;font-size:.88em}
th,td{border:1px solid #d8d8dc;padding:4px 8px;text-align:right;white-space:nowrap}
th{background:#f3f3f5}td:first-child,th:first-child{text-align:left}tr:nth-child(even) td{background:#fafafb}
td.best{font-weight:700;color:#0b6b2f}.note{color:#666;font-size:.82em;margin:0 0 12px}
img.plot{max-width:100%;border:1px solid #eee}.thumbs{display:grid;grid-template-columns:1fr;gap:14px}
figure{margin:0}figure img{max-width:100%;border:1px solid #ccc}figcaption{font-size:.85em;color:#333}
.kind-best{color:#0b6b2f;font-weight:700}.kind-worst{color:#b00020;font-weight:700}
ul.notes li{margin:2px 0}details{margin-top:12px}pre{font-size:.8em;background:#f7f7f9;padding:8px;overflow:auto}
"""


def img_tag(path: Path, alt: str, cls: str = "") -> str:
    """An ``<img>`` with the PNG at ``path`` embedded as base64, so the page stays one self-contained file."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    klass = f' class="{cls}"' if cls else ""
    return (f'<img{klass} alt="{html.escape(alt)}" data-file="{html.escape(path.name)}" '
            f'src="data:image/png;base64,{data}">')  # fmt: skip


def html_table(t: ReportTable) -> str:
    """``t`` as an HTML table with its title and note (bold cells get the ``best`` class)."""
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in t.columns)
    body = []
    for i, row in enumerate(t.rows):
        cells = "".join(f'<td class="best">{e(c)}</td>' if (i, j) in t.bold else f"<td>{e(c)}</td>"
                        for j, c in enumerate(row))  # fmt: skip
        body.append(f"<tr>{cells}</tr>")
    note = f'<p class="note">{e(t.note)}</p>' if t.note else ""
    return f"<h3>{e(t.title)}</h3><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{note}"


def html_document(title: str, body: Sequence[str]) -> str:
    """A self-contained page: ``title`` as heading, then the ``body`` HTML fragments, with the reports' CSS.

    Shared by every report (``eval``'s, a replayed fleet's) so they look alike.
    """
    e = html.escape
    head = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>"
            f"<style>{_CSS}</style></head><body>")  # fmt: skip
    return "\n".join([head, f"<h1>{e(title)}</h1>", *body, "</body></html>"])


def _html(report: Mapping[str, Any], tables: Sequence[ReportTable], out_dir: Path) -> str:
    e = html.escape
    parts: list[str] = []
    det = report.get("detector") or {}
    meta = [f"created {e(report['created'])}", f"ivfusion {e(report['ivfusion_version'])}"]
    if det:
        meta.append(f"detector <code>{e(str(det.get('description') or det.get('type')))}</code>")
    env = report.get("environment") or {}
    if env:
        where = f"{env.get('cpu_count')} CPU(s)"
        where += f", torch {env['torch_threads']} thread(s)" if env.get("torch_threads") else ""
        where += f", {env['cuda']}" if env.get("cuda") else ""
        meta.append(e(where))
    parts.append(f"<p class='meta'>{' · '.join(meta)}</p>")
    if report.get("command"):
        parts.append(f"<p class='meta'>command: <code>{e(report['command'])}</code></p>")

    parts.append("<h2>Data</h2><table><thead><tr><th>data set</th><th>pairs</th><th>labels</th><th>classes</th>"
                 "<th>notes</th></tr></thead><tbody>")  # fmt: skip
    for d in report.get("datasets") or []:
        labels = d.get("labels") or {}
        lab = f"{labels.get('format')}: {labels.get('path')}" if labels else "none"
        extra = []
        if d.get("missing_labels"):
            extra.append(f"{d['missing_labels']} pair(s) without a label file (no objects)")
        if d.get("failed"):
            extra.append(f"{len(d['failed'])} pair(s) failed")
        unpaired = d.get("unpaired") or {}
        if unpaired.get("ir") or unpaired.get("vis"):
            extra.append(f"unpaired images: {unpaired.get('ir', 0)} IR, {unpaired.get('vis', 0)} VIS")
        where = str(d.get("root") or d.get("vis") or "")
        parts.append(f"<tr><td>{e(str(d.get('name')))}<br><span class='note'>{e(where)}"
                     f"</span></td><td>{d.get('pairs', '')}</td><td>{e(lab)}</td>"
                     f"<td>{e(', '.join(labels.get('classes') or []))}</td><td>{e('; '.join(extra))}</td></tr>")
    parts.append("</tbody></table>")
    if report.get("notes"):
        parts.append("<ul class='notes'>" + "".join(f"<li>{e(n)}</li>" for n in report["notes"]) + "</ul>")

    parts.append("<h2>Tables</h2>")
    parts += [html_table(t) for t in tables]

    plots = report.get("plots") or {}
    if plots.get("latency") or plots.get("timeline"):
        parts.append("<h2>Plots</h2>")
        for key, alt in (("latency", "latency per stage"), ("timeline", "per-frame timeline")):
            if plots.get(key):
                parts.append(f"<p>{img_tag(out_dir / plots[key], alt, 'plot')}</p>")

    thumbs = report.get("thumbnails") or {}
    if thumbs.get("items"):
        parts.append("<h2>Best and worst frames</h2>")
        parts.append(f"<p class='note'>ranked by: {e(thumbs.get('criterion', ''))}. Panels: thermal (registered), "
                     "visible, then each fused variant with its detections; where detection is scored, the thermal "
                     "and visible panels show the IR-only and VIS-only detections and thin white boxes are the "
                     "ground truth.</p>")  # fmt: skip
        parts.append("<div class='thumbs'>")
        for t in thumbs["items"]:
            cap = (f"<span class='kind-{e(t['kind'])}'>{e(t['kind'])} #{t['rank']}</span> "
                   f"{e(t['dataset'])}/{e(t['name'])}: {e(t.get('caption', ''))}")  # fmt: skip
            alt = f"{t['kind']} {t['name']}"
            parts.append(f"<figure>{img_tag(out_dir / t['file'], alt)}<figcaption>{cap}</figcaption></figure>")
        parts.append("</div>")
    cfg = json.dumps(report.get("config") or {}, indent=1)
    parts.append(f"<details><summary>configuration</summary><pre>{e(cfg)}</pre></details>")
    parts.append("<p class='note'>Machine-readable numbers, per-frame records included: report.json.</p>")
    return html_document(report["title"], parts)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "_"


def write_report(
    out_dir: str | Path,
    frames: Sequence[FrameRecord],
    *,
    thumbnails: Sequence[Thumbnail] = (),
    plots: bool = True,
    **kwargs: Any,
) -> dict:
    """Write ``report.json``, ``report.html``, ``report.md``, ``plots/`` and ``thumbs/`` into ``out_dir``.

    Args:
        out_dir: output folder (created).
        frames: the per-frame records.
        thumbnails: best/worst frames (e.g. from :class:`FramePicker`); written to ``thumbs/``.
        plots: draw the latency and timeline plots (matplotlib, imported only here).
        **kwargs: passed to :func:`build_report` (``detection``, ``dataset_detection``, ``datasets``,
            ``config``, ``detector``, ``notes``, ``title``, ``command``, ``criterion``).

    Returns:
        The report as written to ``report.json``.

    Raises:
        IvfusionError: the folder or a file cannot be written (the message names it).
    """
    from ivfusion_ros.viz import save_rgb

    out = Path(out_dir)
    report = build_report(frames, **kwargs)
    try:
        out.mkdir(parents=True, exist_ok=True)
        if thumbnails:
            (out / "thumbs").mkdir(exist_ok=True)
        items = []
        for t in thumbnails:
            rel = f"thumbs/{_safe(t.dataset)}_{t.kind}{t.rank}_{_safe(t.name)}.png"
            save_rgb(out / rel, t.image)
            items.append({"dataset": t.dataset, "name": t.name, "kind": t.kind, "rank": t.rank,
                          "score": _finite_or_none(list(t.score)), "caption": t.caption, "file": rel})  # fmt: skip
        report["thumbnails"]["items"] = items
        if plots and frames:
            (out / "plots").mkdir(exist_ok=True)
            if plot_latency(report, out / "plots" / "latency.png"):
                report["plots"]["latency"] = "plots/latency.png"
            if plot_timeline(frames, out / "plots" / "timeline.png"):
                report["plots"]["timeline"] = "plots/timeline.png"
        tables = report_tables(report)
        (out / "report.json").write_text(json.dumps(report, indent=1, allow_nan=False, ensure_ascii=False) + "\n",
                                         encoding="utf-8")  # fmt: skip
        (out / "report.md").write_text(tables_markdown(tables), encoding="utf-8")
        (out / "report.html").write_text(_html(report, tables, out), encoding="utf-8")
    except OSError as err:
        raise IvfusionError(f"cannot write the report into {out}: {err.strerror or err}") from None
    return report
