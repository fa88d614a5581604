"""``fusion_node``: the ROS 2 node around :class:`~ivfusion_ros.pipeline.Pipeline`.

The node converts messages, calls the pipeline and converts the results back; everything else (decoding,
registration, fusion, detection) is the code the offline tools run.

Topics (relative names, remap them from the launch file):

=========================  ==========================================  =========================================
``thermal/image``          sensor_msgs/Image (sub)                     ``thermal/image/compressed`` when
``rgb/image``              sensor_msgs/Image (sub)                     ``node.compressed`` (CompressedImage)
``fused/image``            sensor_msgs/Image, rgb8 (pub)               stamp of the pair's RGB image, its frame_id
``detections``             vision_msgs/Detection2DArray (pub)          same header; boxes in fused-image pixels
``status``                 ivfusion_ros/FusionStatus (pub)             one per pair and one per mode change
``debug/image``            sensor_msgs/Image, rgb8 (pub)               boxes and regime; only drawn when subscribed
``/diagnostics``           diagnostic_msgs/DiagnosticArray (pub)       every ``node.diagnostics_period`` s
=========================  ==========================================  =========================================

Threads: camera callbacks (one callback group) validate messages and hand them to an
``ApproximateTimeSynchronizer``; its callback only stores the newest pair (replacing an unprocessed one counts
as dropped ``superseded``), and one worker thread runs the pipeline, so a slow pipeline never blocks the
subscriptions and nothing queues without bound. Timers (watchdog, diagnostics) and the parameter services run
in their own callback groups of a ``MultiThreadedExecutor``. Parameter changes take the pipeline lock, so they
apply between frames.

Camera watchdog: a camera silent for longer than ``node.camera_timeout`` switches the mode to ``rgb_only`` or
``thermal_only`` (``node.degraded_mode: single``, detection on the live camera alone) or ``paused``
(``node.degraded_mode: pause``, or both cameras silent), with a WARN diagnostic; the node returns to ``fused``
by itself when the stream comes back.
"""

from __future__ import annotations

import array
import threading
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from message_filters import ApproximateTimeSynchronizer, SimpleFilter
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose

from ivfusion_ros.config import PipelineConfig, iter_fields
from ivfusion_ros.errors import ConfigError, InputError, IvfusionError
from ivfusion_ros.msg import FusionStatus
from ivfusion_ros.pipeline import Pipeline, Result
from ivfusion_ros.ros import health
from ivfusion_ros.ros.conversions import (
    compressed_msg_to_array,
    debug_overlay,
    detections_to_fields,
    image_fields,
    image_msg_to_array,
    stamp_to_sec,
    status_fields,
)
from ivfusion_ros.ros.params import ChangePlan, declare_parameters, plan_change, set_result

__all__ = ["FusionNode", "image_to_msg", "main"]

NODE_NAME = "ivfusion_node"
_THROTTLE_S = 5.0


@dataclass
class _Frame:
    """One camera message on its way to the synchronizer: the header plus the message for lazy decoding.

    Raw images are validated (and viewed as numpy) in the camera callback; compressed ones are decoded by
    the worker, so only the frames that are processed pay for decoding.
    """

    header: Any
    msg: Any
    image: np.ndarray | None = None
    encoding: str = ""

    def decode(self) -> tuple[np.ndarray, str]:
        if self.image is None:
            self.image, self.encoding = compressed_msg_to_array(self.msg)
        return self.image, self.encoding


def image_to_msg(header: Any, img: np.ndarray, encoding: str = "rgb8") -> Image:
    """A ``sensor_msgs/Image`` holding ``img`` (see :func:`~ivfusion_ros.ros.conversions.image_fields`)."""
    f = image_fields(img, encoding)
    msg = Image(header=header, height=f.height, width=f.width, encoding=f.encoding, is_bigendian=f.is_bigendian,
                step=f.step)
    msg.data = array.array("B", f.data)  # array.array: rclpy takes it as is (a bytes object is checked per byte)
    return msg


class _Input(SimpleFilter):
    """A message_filters source fed by the node's own camera callback (after validation)."""

    def push(self, frame: _Frame) -> None:
        self.signalMessage(frame)


class FusionNode(Node):
    """The fusion node. See the module docstring for topics, threads and modes.

    Args:
        node_name: ROS node name (the parameter file's top-level key).
        kwargs: passed to :class:`rclpy.node.Node` (``parameter_overrides``, ``namespace``, ...).

    Raises:
        ConfigError: the parameters break the schema. ModelError: the detector or a fusion model cannot load.
    """

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.cfg: PipelineConfig = declare_parameters(self)
        self._schema_names = frozenset(s.name for s in iter_fields())
        self._lock = threading.Lock()  # the pipeline: one frame or one reconfiguration at a time
        self.pipeline = Pipeline(self.cfg)
        self.get_logger().info(f"pipeline ready: {self.pipeline.describe()}")

        now = self._now()
        self.drops = health.DropCounter()
        self.monitors = {"thermal": health.StreamMonitor("thermal", now),
                         "rgb": health.StreamMonitor("rgb", now)}
        self.fused_meter = health.RateMeter()
        self.frames_fused = 0
        self.mode = "fused"
        self._last_latency = 0.0
        self._last_e2e = 0.0
        self._last_error = ""
        self._last_error_time = -1e9
        self._last_rgb: tuple[Any, tuple[int, int]] | None = None  # (header, (w, h)) of the newest RGB image
        self._reset_pending = False

        out_qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_fused = self.create_publisher(Image, "fused/image", out_qos)
        self.pub_dets = self.create_publisher(Detection2DArray, "detections", 10)
        self.pub_status = self.create_publisher(FusionStatus, "status", 10)
        self.pub_debug = self.create_publisher(Image, "debug/image", out_qos)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        self._input_group = MutuallyExclusiveCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self._subs: list[Any] = []
        self._sync: ApproximateTimeSynchronizer | None = None
        self._make_inputs(self.cfg)

        self._pending: tuple[str, _Frame | None, _Frame | None] | None = None
        self._cv = threading.Condition()
        self._stop = False
        self._worker = threading.Thread(target=self._work, name="ivfusion_worker", daemon=True)
        self._worker.start()

        self._watchdog = self.create_timer(self._watchdog_period(self.cfg), self._on_watchdog,
                                           callback_group=self._timer_group)
        self._diag_timer = self.create_timer(self.cfg.node.diagnostics_period, self._publish_diagnostics,
                                             callback_group=self._timer_group)
        if hasattr(self, "add_pre_set_parameters_callback"):  # Iron and newer: let `param set x 1` mean 1.0
            self.add_pre_set_parameters_callback(self._promote_ints)
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # ------------------------------------------------------------------------------------------- helpers
    def _now(self) -> float:
        """Node clock in seconds (simulated time under ``use_sim_time``)."""
        return self.get_clock().now().nanoseconds * 1e-9

    @staticmethod
    def _watchdog_period(cfg: PipelineConfig) -> float:
        return max(0.02, min(0.25, cfg.node.camera_timeout / 4.0))

    def _drop(self, reason: str, message: str) -> None:
        self.drops.add(reason)
        self._last_error, self._last_error_time = f"{reason}: {message}", self._now()
        self.get_logger().warning(f"dropped ({reason}): {message}", throttle_duration_sec=_THROTTLE_S)

    # -------------------------------------------------------------------------------------------- inputs
    def _make_inputs(self, cfg: PipelineConfig) -> None:
        """(Re)create the camera subscriptions and the synchronizer from ``cfg.node`` and ``cfg.sync``."""
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        n = cfg.node
        if n.reliability == "best_effort":
            qos = QoSProfile(depth=n.qos_depth, reliability=qos_profile_sensor_data.reliability,
                             durability=qos_profile_sensor_data.durability, history=qos_profile_sensor_data.history)
        else:
            qos = QoSProfile(depth=n.qos_depth, reliability=ReliabilityPolicy.RELIABLE)
        msg_type = CompressedImage if n.compressed else Image
        suffix = "/compressed" if n.compressed else ""
        inputs = {"thermal": _Input(), "rgb": _Input()}
        for cam, inp in inputs.items():
            topic = f"{cam}/image{suffix}"
            self._subs.append(self.create_subscription(
                msg_type, topic, lambda msg, cam=cam, inp=inp: self._on_camera(cam, inp, msg), qos,
                callback_group=self._input_group))
        self._sync = ApproximateTimeSynchronizer([inputs["thermal"], inputs["rgb"]],
                                                 queue_size=cfg.sync.queue_size, slop=cfg.sync.slop)
        self._sync.registerCallback(self._on_pair)
        self.get_logger().info(
            f"subscribed to {self._subs[0].topic_name} and {self._subs[1].topic_name} "
            f"({msg_type.__name__}, {n.reliability}, depth {n.qos_depth}); "
            f"pairing with slop {cfg.sync.slop} s, queue {cfg.sync.queue_size}")

    def _on_camera(self, cam: str, inp: _Input, msg: Any) -> None:
        """Count, validate (raw images) and forward one camera message; in single mode, queue it alone."""
        now = self._now()
        mon = self.monitors[cam]
        recovered = not mon.alive(now, self.cfg.node.camera_timeout)
        mon.tick(now)
        frame = _Frame(msg.header, msg)
        if isinstance(msg, Image):
            try:
                frame.image, frame.encoding = image_msg_to_array(msg)
            except InputError as err:
                self._drop(err.reason, f"{cam} image: {err}")
                return
        if cam == "thermal" and recovered and self.monitors[cam].count > 1:
            self._reset_pending = True  # the thermal camera restarted: forget the AGC range
        inp.push(frame)
        other = self.monitors["rgb" if cam == "thermal" else "thermal"]
        if self.mode == f"{cam}_only" and not other.alive(now, self.cfg.node.camera_timeout):
            self._submit((self.mode, frame if cam == "thermal" else None, frame if cam == "rgb" else None))

    def _on_pair(self, thermal: _Frame, rgb: _Frame) -> None:
        self._submit(("fused", thermal, rgb))

    def _submit(self, job: tuple[str, _Frame | None, _Frame | None]) -> None:
        with self._cv:
            if self._pending is not None:
                self.drops.add("superseded")
            self._pending = job
            self._cv.notify()

    # -------------------------------------------------------------------------------------------- worker
    def _work(self) -> None:
        while True:
            with self._cv:
                while self._pending is None and not self._stop:
                    self._cv.wait()
                if self._stop:
                    return
                job, self._pending = self._pending, None
            try:
                self._process(*job)
            except Exception as err:  # never let one frame kill the worker
                self._drop("error", f"{type(err).__name__}: {err}")
                self.get_logger().error(traceback.format_exc(), throttle_duration_sec=_THROTTLE_S)

    def _process(self, kind: str, thermal: _Frame | None, rgb: _Frame | None) -> None:
        mode = kind
        try:
            with self._lock:
                if self._reset_pending:
                    self._reset_pending = False
                    self.pipeline.reset()
                if thermal is not None and rgb is not None:
                    th_img, th_enc = thermal.decode()
                    rgb_img, rgb_enc = rgb.decode()
                    stamp = stamp_to_sec(rgb.header.stamp)
                    result = self.pipeline.process(th_img, rgb_img, stamp, thermal_encoding=th_enc,
                                                   rgb_encoding=rgb_enc)
                    mode = "fused"
                    header, skew = rgb.header, stamp_to_sec(thermal.header.stamp) - stamp
                    self._last_rgb = (rgb.header, (rgb_img.shape[1], rgb_img.shape[0]))
                else:
                    live = rgb if rgb is not None else thermal
                    assert live is not None
                    img, enc = live.decode()
                    modality = "rgb" if rgb is not None else "thermal"
                    rgb_size = self._last_rgb[1] if self._last_rgb is not None else None
                    result = self.pipeline.process_single(img, modality, stamp_to_sec(live.header.stamp),
                                                          encoding=enc, rgb_size=rgb_size)
                    header, skew = live.header, 0.0
                    if modality == "thermal" and self._last_rgb is not None:
                        header = Header(stamp=live.header.stamp, frame_id=self._last_rgb[0].frame_id)
                    self._last_rgb = (header, (img.shape[1], img.shape[0])) if modality == "rgb" else self._last_rgb
                detector, device = self.pipeline.detector.describe(), str(self.pipeline.device)
        except InputError as err:
            self._drop(err.reason, str(err))
            return
        except IvfusionError as err:
            self._drop("error", str(err))
            return
        self._publish(result, header, mode, skew, detector, device)

    # ------------------------------------------------------------------------------------------ outputs
    def _publish(self, result: Result, header: Any, mode: str, skew: float, detector: str, device: str) -> None:
        cfg = self.cfg
        now = self._now()
        self.frames_fused += 1
        self.fused_meter.tick(now)
        if cfg.node.publish_fused:
            self.pub_fused.publish(image_to_msg(header, result.fused))

        arr = Detection2DArray(header=header)
        for f in detections_to_fields(result.detections, cfg.node.class_id_format):
            det = Detection2D(header=header, id=f.id)
            det.bbox.center.position.x = f.cx
            det.bbox.center.position.y = f.cy
            det.bbox.center.theta = 0.0
            det.bbox.size_x = f.size_x
            det.bbox.size_y = f.size_y
            hyp = ObjectHypothesisWithPose()
            hyp.hypothesis.class_id = f.class_id
            hyp.hypothesis.score = f.score
            det.results.append(hyp)
            arr.detections.append(det)
        self.pub_dets.publish(arr)

        e2e = (now - stamp_to_sec(header.stamp)) * 1e3
        self._last_latency, self._last_e2e = result.latency_ms, e2e
        self._publish_status(header, result, mode, skew, e2e, detector, device)

        if self.pub_debug.get_subscription_count() > 0:
            lines = [f"{mode}  {result.regime}  illum {result.illumination:.2f}  glare {result.glare_fraction:.3f}",
                     f"{result.variant}  {len(result.detections)} det  {result.latency_ms:.0f} ms"]
            self.pub_debug.publish(image_to_msg(header, debug_overlay(result.fused, result.detections, lines)))

    def _publish_status(self, header: Any, result: Result | None, mode: str, skew: float = 0.0,
                        e2e: float = 0.0, detector: str = "", device: str = "") -> None:
        fields = status_fields(
            result, mode=mode, sync_skew=skew, end_to_end_ms=e2e,
            frames_in_thermal=self.monitors["thermal"].count, frames_in_rgb=self.monitors["rgb"].count,
            frames_fused=self.frames_fused, drops=self.drops.snapshot(),
            detector=detector or self.pipeline.detector.describe(), device=device or str(self.pipeline.device),
            variant=self.cfg.fusion.variant)
        self.pub_status.publish(FusionStatus(header=header, **fields))

    # ------------------------------------------------------------------------------------ health, timers
    def _on_watchdog(self) -> None:
        now, cfg = self._now(), self.cfg
        alive = {cam: m.alive(now, cfg.node.camera_timeout) for cam, m in self.monitors.items()}
        mode = health.decide_mode(alive["thermal"], alive["rgb"], cfg.node.degraded_mode)
        if mode == self.mode:
            return
        old, self.mode = self.mode, mode
        silent = [cam for cam, ok in alive.items() if not ok]
        if mode == "fused":
            self.get_logger().info(f"both cameras deliver again: {old} -> fused")
        else:
            self.get_logger().warning(f"camera(s) silent for more than {cfg.node.camera_timeout:g} s: "
                                      f"{', '.join(silent)}; mode {old} -> {mode}")
        if mode != "fused":
            with self._cv:  # a pair stored before the switch is stale now
                if self._pending is not None and self._pending[0] == "fused" and mode == "paused":
                    self._pending = None
                    self.drops.add("paused")
        frame_id = self._last_rgb[0].frame_id if self._last_rgb is not None else ""
        stamp = self.get_clock().now().to_msg()
        self._publish_status(Header(stamp=stamp, frame_id=frame_id), None, mode)
        self._publish_diagnostics()

    def _publish_diagnostics(self) -> None:
        now, cfg = self._now(), self.cfg
        name = self.get_fully_qualified_name().lstrip("/")
        statuses = [
            health.stream_status(f"{name}: thermal camera", self.monitors["thermal"], now, cfg.node.camera_timeout,
                                 self._subs[0].topic_name if self._subs else ""),
            health.stream_status(f"{name}: rgb camera", self.monitors["rgb"], now, cfg.node.camera_timeout,
                                 self._subs[1].topic_name if self._subs else ""),
            health.pipeline_status(
                f"{name}: fusion", mode=self.mode, fused_rate=self.fused_meter.rate(now),
                latency_ms=self._last_latency, end_to_end_ms=self._last_e2e, frames_fused=self.frames_fused,
                drops=self.drops.snapshot(),
                last_error=self._last_error if now - self._last_error_time < 2 * cfg.node.diagnostics_period
                else "",
                values=[("variant", cfg.fusion.variant), ("detector", cfg.detector.type)]),
        ]
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        for s in statuses:
            msg.status.append(DiagnosticStatus(
                level=bytes([s.level]), name=s.name, message=s.message, hardware_id=name,
                values=[KeyValue(key=k, value=v) for k, v in s.values]))
        self.pub_diag.publish(msg)

    # ------------------------------------------------------------------------------------------ parameters
    def _promote_ints(self, params: list[Parameter]) -> list[Parameter]:
        """Pre-set callback: an integer given for a double parameter (``param set x 1``) becomes 1.0."""
        out = []
        for p in params:
            if (p.type_ == Parameter.Type.INTEGER and self.has_parameter(p.name)
                    and self.describe_parameter(p.name).type == Parameter.Type.DOUBLE.value):
                p = Parameter(p.name, Parameter.Type.DOUBLE, float(p.value))
            out.append(p)
        return out

    def _on_set_parameters(self, params: list[Parameter]) -> Any:
        """Validate a parameter change with the schema and apply it between frames, or reject it."""
        values = {p.name: p.value for p in params if p.name in self._schema_names}  # not use_sim_time, qos_...
        if not values:
            return set_result(True)
        try:
            plan = plan_change(self.cfg, values)
        except ConfigError as err:
            return set_result(False, str(err))
        if not plan.changed:
            return set_result(True)
        try:
            self._apply(plan)
        except Exception as err:  # the pipeline keeps its old state when a rebuild fails
            reason = f"cannot apply {', '.join(plan.changed)}: {err}"
            self.get_logger().error(reason)
            return set_result(False, reason)
        self.get_logger().info(f"parameters changed: {', '.join(plan.changed)}"
                               + (" (pipeline reloaded)" if plan.structural else ""))
        return set_result(True)

    def _apply(self, plan: ChangePlan) -> None:
        old = self.cfg
        with self._lock:  # between frames
            self.pipeline.update_config(plan.config)
            if plan.inputs:
                try:
                    self._make_inputs(plan.config)
                except Exception:
                    self.pipeline.update_config(old)
                    self._make_inputs(old)
                    raise
            self.cfg = plan.config
        if "node.diagnostics_period" in plan.changed:
            self._diag_timer.cancel()
            self.destroy_timer(self._diag_timer)
            self._diag_timer = self.create_timer(plan.config.node.diagnostics_period, self._publish_diagnostics,
                                                 callback_group=self._timer_group)
        if "node.camera_timeout" in plan.changed:
            self._watchdog.cancel()
            self.destroy_timer(self._watchdog)
            self._watchdog = self.create_timer(self._watchdog_period(plan.config), self._on_watchdog,
                                               callback_group=self._timer_group)

    # ------------------------------------------------------------------------------------------ shutdown
    def shutdown(self) -> None:
        """Stop the worker thread (waits for the frame in progress)."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._worker.is_alive():
            self._worker.join(timeout=10.0)

    def destroy_node(self) -> None:
        self.shutdown()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Entry point of ``ros2 run ivfusion_ros fusion_node``."""
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = FusionNode()
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except IvfusionError as err:
        get_logger(NODE_NAME).fatal(str(err))
        code = 1
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code

