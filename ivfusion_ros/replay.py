"""Replay a recorded bag through the pipeline offline: what the node would publish, plus a report.

:func:`replay_bag` reads the thermal and RGB topics in the bag's (log-time) order, feeds them to
:class:`~ivfusion_ros.core.sync.ApproxTimePairer` with the node's ``sync.slop`` and ``sync.queue_size``,
runs the :class:`~ivfusion_ros.pipeline.Pipeline` on every pair in order, writes the node's outputs into a
new bag and returns (and writes) a :class:`ReplayReport`.

It does what the node does with the same messages, with these differences, all for determinism:

* every pair is processed (the node drops a pair as ``superseded`` when the pipeline is still busy with
  the previous one); the run is as fast as the machine, not real time;
* no degraded single-camera mode: messages without a partner are ``unpaired`` drops;
* the camera watchdog runs on the bag's log time: a thermal gap longer than ``node.camera_timeout``
  resets the AGC before the next pair, as the node does when the thermal camera comes back.

As in the node, raw ``sensor_msgs/Image`` messages are checked when they arrive (a malformed one never
enters the synchroniser) and compressed ones are decoded once paired. Every input message ends up in
exactly one place: ``fused``, or dropped with a reason (``unpaired``, ``queue_overflow``,
``duplicate_stamp`` from the synchroniser, ``bad_message`` for undecodable bytes, the pipeline's
``InputError`` reasons such as ``bad_encoding``). The report's ``accounting`` shows it per camera.

Output topics (relative to ``namespace``, like the node's): ``fused/image`` (``sensor_msgs/Image`` rgb8),
``detections`` (``vision_msgs/Detection2DArray``, boxes in fused-image pixels), ``status``
(``ivfusion_ros/FusionStatus``, filled by the node's own ``status_fields``; ``end_to_end_ms`` is the
replay's processing time of the pair, and the drop counts include the synchroniser's drops, which the node
cannot see), each stamped with the pair's RGB stamp and frame id and logged at the bag
time of the message that completed the pair; ``--write-inputs`` copies the two input topics unchanged.

``report.json`` (schema ``ivfusion.replay/1``; keys are stable, new keys may be added):

* ``bag``, ``output``, ``topics``, ``sync``, ``pipeline``, ``config`` (every parameter), ``versions``;
* ``totals``: messages per camera, pairs, fused frames, failed pairs by reason, dropped messages, wall
  time, bag duration, frames per second and the real-time factor;
* ``drops``: dropped messages by reason; ``accounting``: per camera ``received = fused + sum(dropped)``;
* ``latency_ms``: mean/p50/p90/p99/max per pipeline stage and in total;
* ``frames``: one record per fused pair (:class:`FrameRecord`): ``index``, ``stamp`` (s), ``stamp_ns``,
  ``thermal_stamp_ns``, ``rgb_stamp_ns``, ``sync_skew`` (thermal - RGB, s), ``mode`` (``fused``),
  ``variant``, ``regime``, ``illumination``, ``glare_fraction``, ``num_detections``, ``detections``
  (``box`` x1,y1,x2,y2, ``score``, ``class_id``, ``class_name``), ``timings_ms`` per stage, ``latency_ms``;
* ``dropped``: one record per dropped message (:class:`DropRecord`).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from ivfusion_ros import __version__
from ivfusion_ros.config import PipelineConfig, config_to_flat
from ivfusion_ros.core.sync import RGB, THERMAL, ApproxTimePairer, Drop, Pair
from ivfusion_ros.errors import ConfigError, InputError
from ivfusion_ros.io.bag import (
    IMAGE,
    BagMessage,
    BagReader,
    BagWriter,
    detections_msg,
    image_msg,
    ns_to_sec,
    status_msg,
)
from ivfusion_ros.pipeline import STAGES, Pipeline, Result
from ivfusion_ros.ros.conversions import status_fields  # pure Python: the node's status semantics

__all__ = ["REPORT_SCHEMA", "DropRecord", "FrameRecord", "ReplayOptions", "ReplayReport", "latency_summary",
           "output_topics", "replay_bag", "require_fused"]

REPORT_SCHEMA = "ivfusion.replay/1"
CAMERAS = ("thermal", "rgb")  # index THERMAL, RGB


@dataclass(frozen=True)
class ReplayOptions:
    """Topics and output settings of a replay (the CLI's options)."""

    thermal_topic: str = "/thermal/image_raw"  # "<topic>/compressed" is used when only that exists
    rgb_topic: str = "/camera/image_raw"
    namespace: str = ""  # output topics: /<namespace>/fused/image, ...
    write_inputs: bool = False
    storage: str | None = None  # mcap (default) or sqlite3
    distro: str = "jazzy"
    overwrite: bool = False


def output_topics(namespace: str = "") -> dict[str, str]:
    """The node's output topic names under ``namespace``: keys ``fused``, ``detections``, ``status``."""
    ns = namespace.strip("/")
    prefix = f"/{ns}/" if ns else "/"
    return {"fused": f"{prefix}fused/image", "detections": f"{prefix}detections", "status": f"{prefix}status"}


@dataclass
class FrameRecord:
    """One fused pair in the report."""

    index: int
    stamp: float
    stamp_ns: int
    thermal_stamp_ns: int
    rgb_stamp_ns: int
    sync_skew: float
    mode: str
    variant: str
    regime: str
    illumination: float
    glare_fraction: float
    num_detections: int
    detections: list[dict]
    timings_ms: dict[str, float]
    latency_ms: float

    @classmethod
    def from_result(cls, index: int, pair: Pair, result: Result) -> FrameRecord:
        s = result.summary()
        th_ns, rgb_ns = pair.stamps
        return cls(index=index, stamp=ns_to_sec(rgb_ns), stamp_ns=rgb_ns, thermal_stamp_ns=th_ns, rgb_stamp_ns=rgb_ns,
                   sync_skew=round(ns_to_sec(th_ns - rgb_ns), 9), mode=s.get("mode", "fused"), variant=s["variant"],
                   regime=s["regime"], illumination=s["illumination"], glare_fraction=s["glare_fraction"],
                   num_detections=len(s["detections"]), detections=s["detections"], timings_ms=s["timings_ms"],
                   latency_ms=round(result.latency_ms, 3))


def latency_summary(frames: Sequence[FrameRecord]) -> dict[str, dict[str, float]]:
    """mean/p50/p90/p99/max milliseconds per pipeline stage and in ``total`` over ``frames`` (``{}`` if none).

    Percentiles are numpy's (linear interpolation) over the frames given, so a fleet's are computed over all
    of its frames, never averaged from per-bag percentiles.
    """
    if not frames:
        return {}
    series = {stage: [f.timings_ms.get(stage, 0.0) for f in frames] for stage in STAGES}
    series["total"] = [f.latency_ms for f in frames]
    out = {}
    for name, values in series.items():
        v = np.asarray(values, np.float64)
        p50, p90, p99 = np.percentile(v, (50, 90, 99))
        out[name] = {"mean": round(float(v.mean()), 3), "p50": round(float(p50), 3),
                     "p90": round(float(p90), 3), "p99": round(float(p99), 3), "max": round(float(v.max()), 3)}
    return out


@dataclass
class DropRecord:
    """One dropped input message in the report."""

    camera: str
    topic: str
    stamp_ns: int
    log_ns: int
    reason: str
    detail: str = ""


@dataclass
class ReplayReport:
    """Everything :func:`replay_bag` found out; :meth:`to_dict` is the ``report.json`` content."""

    bag: str
    storage: str
    topics: dict[str, str]
    msgtypes: dict[str, str]
    output: dict[str, Any]
    sync: dict[str, Any]
    pipeline: str
    config: dict[str, Any]
    received: dict[str, int]
    fused: int = 0
    pairs: int = 0
    stamp_sources: dict[str, int] = field(default_factory=dict)
    failed_pairs: dict[str, int] = field(default_factory=dict)
    frames: list[FrameRecord] = field(default_factory=list)
    dropped: list[DropRecord] = field(default_factory=list)
    wall_s: float = 0.0
    bag_duration_s: float = 0.0

    def drops_by_reason(self, camera: str | None = None) -> dict[str, int]:
        c = Counter(d.reason for d in self.dropped if camera is None or d.camera == camera)
        return dict(sorted(c.items()))

    def accounting(self) -> dict[str, dict[str, Any]]:
        """Per camera: ``received == fused + sum(dropped.values())``."""
        return {cam: {"topic": self.topics[cam], "received": self.received[cam], "fused": self.fused,
                      "dropped": self.drops_by_reason(cam)} for cam in CAMERAS}

    def latency_summary(self) -> dict[str, dict[str, float]]:
        """mean/p50/p90/p99/max milliseconds per stage and in total (empty without frames)."""
        return latency_summary(self.frames)

    def to_dict(self) -> dict[str, Any]:
        n = len(self.frames)
        fps = n / self.wall_s if self.wall_s > 0 else 0.0
        rtf = self.bag_duration_s / self.wall_s if self.wall_s > 0 else 0.0
        return {
            "schema": REPORT_SCHEMA,
            "bag": self.bag,
            "storage": self.storage,
            "topics": self.topics,
            "msgtypes": self.msgtypes,
            "output": self.output,
            "sync": self.sync,
            "pipeline": self.pipeline,
            "config": self.config,
            "versions": _versions(),
            "totals": {
                "messages": dict(self.received),
                "pairs": self.pairs,
                "fused": self.fused,
                "failed_pairs": dict(sorted(self.failed_pairs.items())),
                "dropped_messages": len(self.dropped),
                "stamp_sources": dict(sorted(self.stamp_sources.items())),
                "wall_s": round(self.wall_s, 3),
                "bag_duration_s": round(self.bag_duration_s, 6),
                "fps": round(fps, 3),
                "realtime_factor": round(rtf, 3),
            },
            "drops": self.drops_by_reason(),
            "accounting": self.accounting(),
            "latency_ms": self.latency_summary(),
            "frames": [asdict(f) for f in self.frames],
            "dropped": [asdict(d) for d in self.dropped],
        }

    def write(self, folder: str | Path) -> Path:
        """Write ``report.json`` into ``folder`` (created); returns its path."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "report.json"
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        return path


def _versions() -> dict[str, str]:
    out = {"ivfusion_ros": __version__}
    for dist in ("rosbags", "rosbags-image", "numpy", "torch"):
        with contextlib.suppress(PackageNotFoundError):
            out[dist] = version(dist)
    return out


def _json_value(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


@dataclass
class _Item:
    """What the synchroniser holds: the message and, for raw images, the array checked on arrival."""

    msg: BagMessage
    image: np.ndarray | None = None
    encoding: str = ""

    def decode(self) -> tuple[np.ndarray, str]:
        if self.image is None:
            self.image, self.encoding = self.msg.decode()
        return self.image, self.encoding


class _Replay:
    """The per-message state machine of one replay (see :func:`replay_bag`)."""

    def __init__(self, report: ReplayReport, pipeline: Pipeline, cfg: PipelineConfig, writer: BagWriter | None,
                 topics: dict[str, str], out_topics: dict[str, str]) -> None:
        self.report = report
        self.pipeline = pipeline
        self.cfg = cfg
        self.writer = writer
        self.topics = topics
        self.out_topics = out_topics
        self.pairer: ApproxTimePairer[_Item] = ApproxTimePairer.from_config(cfg.sync, on_drop=self._on_sync_drop)
        self.last_thermal_log: int | None = None
        self.reset_pending = False
        self.drop_counts: Counter[str] = Counter()  # running totals for the status messages
        self.describe = (pipeline.detector.describe(), str(pipeline.device))

    def drop(self, cam: int, m: BagMessage, reason: str, detail: str = "") -> None:
        self.report.dropped.append(DropRecord(CAMERAS[cam], m.topic, m.stamp_ns, m.log_ns, reason, detail))
        self.drop_counts[reason] += 1

    def _on_sync_drop(self, d: Drop[_Item]) -> None:
        self.drop(d.topic, d.item.msg, d.reason)

    def add(self, cam: int, m: BagMessage) -> None:
        report = self.report
        report.received[CAMERAS[cam]] += 1
        report.stamp_sources[m.stamp_source] = report.stamp_sources.get(m.stamp_source, 0) + 1
        if cam == THERMAL:
            gap = None if self.last_thermal_log is None else m.log_ns - self.last_thermal_log
            if gap is not None and ns_to_sec(gap) > self.cfg.node.camera_timeout:
                self.reset_pending = True  # the node's watchdog: the thermal camera came back
            self.last_thermal_log = m.log_ns
        if m.msg is None:
            self.drop(cam, m, "bad_message", m.error)
            return
        item = _Item(m)
        if m.msgtype == IMAGE:  # the node checks raw images before they enter the synchroniser
            try:
                item.decode()
            except InputError as err:
                self.drop(cam, m, err.reason, str(err))
                return
        for pair in self.pairer.add(cam, m.stamp_ns, item):
            self.process(pair, m.log_ns)

    def process(self, pair: Pair[_Item], log_ns: int) -> None:
        report = self.report
        th_item, rgb_item = pair.items
        t0 = time.perf_counter()
        try:
            if self.reset_pending:
                self.reset_pending = False
                self.pipeline.reset()
            th_img, th_enc = th_item.decode()
            rgb_img, rgb_enc = rgb_item.decode()
            result = self.pipeline.process(th_img, rgb_img, ns_to_sec(pair.stamps[RGB]), thermal_encoding=th_enc,
                                           rgb_encoding=rgb_enc)
        except InputError as err:
            report.failed_pairs[err.reason] = report.failed_pairs.get(err.reason, 0) + 1
            for cam, item in ((THERMAL, th_item), (RGB, rgb_item)):
                self.drop(cam, item.msg, err.reason, str(err))
            return
        finally:
            th_item.image = rgb_item.image = None  # free the pixels
        report.fused += 1
        report.frames.append(FrameRecord.from_result(len(report.frames), pair, result))
        if self.writer is not None:
            self.publish(pair, result, log_ns, (time.perf_counter() - t0) * 1e3)

    def publish(self, pair: Pair[_Item], result: Result, log_ns: int, elapsed_ms: float) -> None:
        writer, store, report = self.writer, self.writer.store, self.report  # type: ignore[union-attr]
        assert writer is not None
        stamp, frame_id = pair.stamps[RGB], pair.items[RGB].msg.frame_id
        topics = self.out_topics
        if self.cfg.node.publish_fused:
            writer.write(topics["fused"], image_msg(store, result.fused, "rgb8", stamp, frame_id), log_ns)
        dets = result.detections
        ids = dets.names() if self.cfg.node.class_id_format == "name" else [str(int(i)) for i in dets.class_ids]
        writer.write(topics["detections"], detections_msg(store, dets.boxes, dets.scores, ids, stamp, frame_id),
                     log_ns)
        fields = status_fields(
            result, mode="fused", sync_skew=ns_to_sec(pair.skew_ns), end_to_end_ms=elapsed_ms,
            frames_in_thermal=report.received["thermal"], frames_in_rgb=report.received["rgb"],
            frames_fused=report.fused, drops=self.drop_counts, detector=self.describe[0], device=self.describe[1])
        writer.write(topics["status"], status_msg(store, fields, stamp, frame_id), log_ns)


def replay_bag(
    bag: str | Path,
    cfg: PipelineConfig | None = None,
    out: str | Path | None = None,
    report_dir: str | Path | None = None,
    opts: ReplayOptions | None = None,
    *,
    pipeline: Pipeline | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayReport:
    """Replay ``bag`` through the pipeline; write the output bag and ``report.json``.

    Args:
        bag: input bag (rosbag2 folder, ``.mcap``, ``.db3`` or ROS 1 ``.bag``).
        cfg: the configuration (its ``sync`` section pairs the cameras); defaults when ``None``.
        out: output bag (``*.mcap`` = one file, else a folder); ``None`` writes none.
        report_dir: folder for ``report.json``; ``None`` writes none (the report is still returned).
        opts: topics and output options.
        pipeline: an already built pipeline to use (its configuration should be ``cfg``).
        progress: called as ``progress(messages_done, messages_total)``.

    Raises:
        BagError: unreadable bag, topics missing (the message lists the bag's topics), output exists.
        ConfigError, ModelError: building the pipeline failed.
    """
    opts = opts or ReplayOptions()
    cfg = cfg or (pipeline.config if pipeline is not None else PipelineConfig())
    if out is None and report_dir is None:
        raise ConfigError("replay needs an output bag (--out) or a report folder (--report), or both")
    with BagReader(bag, distro=opts.distro) as reader:
        topics = {"thermal": reader.image_topic(opts.thermal_topic, "thermal"),
                  "rgb": reader.image_topic(opts.rgb_topic, "RGB")}
        if topics["thermal"] == topics["rgb"]:
            raise ConfigError(f"the thermal and RGB topics are the same: {topics['thermal']}")
        if opts.write_inputs and reader.storage == "rosbag1":
            raise ConfigError("--write-inputs copies CDR messages: it needs a rosbag2 input, not a ROS 1 bag")
        total = reader.count(topics.values())
        pipeline = pipeline or Pipeline(cfg)
        out_topics = output_topics(opts.namespace)
        report = ReplayReport(
            bag=str(bag), storage=reader.storage, topics=topics,
            msgtypes={cam: reader.topics[t].msgtype for cam, t in topics.items()},
            output={"bag": None if out is None else str(out), "topics": out_topics,
                    "storage": None if out is None else (opts.storage or "mcap"), "distro": opts.distro,
                    "inputs_copied": bool(opts.write_inputs and out is not None)},
            sync={"slop": cfg.sync.slop, "queue_size": cfg.sync.queue_size},
            pipeline=pipeline.describe(),
            config={k: _json_value(v) for k, v in config_to_flat(cfg).items()},
            received={cam: 0 for cam in CAMERAS},
            bag_duration_s=ns_to_sec(reader.duration_ns),
        )
        cam_of = {topics["thermal"]: THERMAL, topics["rgb"]: RGB}
        t0 = time.perf_counter()
        writer = None if out is None else BagWriter(out, storage=opts.storage, distro=opts.distro,
                                                    overwrite=opts.overwrite)
        with writer if writer is not None else contextlib.nullcontext():
            state = _Replay(report, pipeline, cfg, writer, topics, out_topics)
            if writer is not None:  # declare the outputs first: they exist even when nothing is fused
                for key, msgtype in (("fused", IMAGE), ("detections", "vision_msgs/msg/Detection2DArray"),
                                     ("status", "ivfusion_ros/msg/FusionStatus")):
                    if key != "fused" or cfg.node.publish_fused:
                        writer.add_topic(out_topics[key], msgtype)
            for n, m in enumerate(reader.messages(list(topics.values())), 1):
                if writer is not None and opts.write_inputs:
                    writer.write_raw(m.topic, m.raw, m.log_ns, m.msgtype)
                state.add(cam_of[m.topic], m)
                if progress is not None:
                    progress(n, total)
            state.pairer.flush()
            report.pairs = state.pairer.pairs
            if writer is not None:
                report.output["messages"] = dict(writer.counts)
        report.wall_s = time.perf_counter() - t0
    if report_dir is not None:
        report.write(report_dir)
    return report


def require_fused(report: ReplayReport) -> None:
    """Raise :class:`InputError` when no pair of the bag could be fused.

    A replay that fused nothing ran without error but almost always means wrong topics or a too small
    ``sync.slop``: the single-bag command and the fleet both treat it as a failure of that bag.
    """
    if report.fused == 0:
        drops = report.drops_by_reason()
        raise InputError(f"no pair of {report.topics['thermal']} and {report.topics['rgb']} could be fused "
                         f"(drops: {drops or 'none'}); check the topics and sync.slop", reason="unpaired")
