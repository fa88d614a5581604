"""The fusion node in a real ROS 2 graph: started in-process, fed synthetic thermal + RGB pairs.

Needs rclpy, the message packages and this package built with colcon (for ``ivfusion_ros.msg``); skipped
otherwise. Run from a sourced overlay, e.g.::

    source /opt/ros/jazzy/setup.bash && source ~/ivf_ws/install/setup.bash
    python -m pytest ~/ivf_ws/src/ivfusion_ros/test/ros -q     # (no PYTHONPATH=.: use the built package)
"""

from __future__ import annotations

import array
import importlib
import itertools
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from ivfusion_ros.config import PipelineConfig, dump_ros_yaml, update_config
from ivfusion_ros.ros.conversions import image_fields, image_msg_to_array, sec_to_stamp


def _missing_ros() -> str | None:
    """Why the ROS tests cannot run here, or None. (No import-time skip: launch_testing's pytest plugin
    imports every test module while collecting, and a skip raised there would skip the whole folder.)"""
    needs = [
        ("rclpy", "ROS 2 (rclpy) is not installed: source a ROS 2 setup.bash and the colcon overlay of ivfusion_ros"),
        ("ivfusion_ros.msg", "ivfusion_ros.msg is missing: build the package with colcon, source install/setup.bash "
                             "and do not put the source tree first on PYTHONPATH"),
        ("vision_msgs.msg", "vision_msgs is not installed in this ROS 2 environment"),
        ("diagnostic_msgs.msg", "diagnostic_msgs is not installed in this ROS 2 environment"),
        ("message_filters", "message_filters is not installed in this ROS 2 environment"),
    ]
    for module, why in needs:
        try:
            importlib.import_module(module)
        except ImportError:
            return why
    return None


SKIP_REASON = _missing_ros()
pytestmark = [pytest.mark.ros, pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")]

if SKIP_REASON is None:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from ivfusion_ros.msg import FusionStatus
    from rcl_interfaces.msg import Parameter as ParameterMsg
    from rcl_interfaces.msg import ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import CompressedImage, Image
    from vision_msgs.msg import Detection2DArray

    from ivfusion_ros.ros.node import FusionNode

H, W = 96, 128
_ns_counter = itertools.count()


@pytest.fixture(scope="module", autouse=True)
def ros_context():
    rclpy.init()
    yield
    rclpy.try_shutdown()


def _thermal(warm: bool = True) -> np.ndarray:
    img = np.full((H, W), 29000, np.uint16)  # centi-Kelvin
    if warm:
        img[30:70, 50:62] = 31000
    return img


def _rgb() -> np.ndarray:
    img = np.full((H, W, 3), 12, np.uint8)
    img[:, 100:] = 90
    return img


def _image_msg(img: np.ndarray, encoding: str, t: float, frame_id: str, **kw: Any) -> Image:
    f = image_fields(img, encoding, **kw)
    msg = Image(height=f.height, width=f.width, encoding=f.encoding, is_bigendian=f.is_bigendian, step=f.step)
    msg.data = array.array("B", f.data)
    msg.header.frame_id = frame_id
    msg.header.stamp.sec, msg.header.stamp.nanosec = sec_to_stamp(t)
    return msg


class Harness:
    """The node under test plus a helper node that publishes camera images and records the outputs."""

    def __init__(self, tmp_path: Path, **params: Any) -> None:
        self.ns = f"/ivf_test_{os.getpid()}_{next(_ns_counter)}"  # other processes may share the ROS domain
        cfg = update_config(PipelineConfig(), **{"detector.type": "none", "runtime.device": "cpu",
                                                 "node.camera_timeout": 0.5, "node.diagnostics_period": 0.2,
                                                 **params})
        pfile = tmp_path / "params.yaml"
        pfile.write_text(dump_ros_yaml(cfg))
        self.node = FusionNode(namespace=self.ns, cli_args=["--ros-args", "--params-file", str(pfile)])
        self.helper = Node("ivf_test_helper", namespace=self.ns)
        self.pub_thermal = self.helper.create_publisher(Image, "thermal/image", 10)
        self.pub_rgb = self.helper.create_publisher(Image, "rgb/image", 10)
        self.lock = threading.Lock()
        self.got: dict[str, list] = {"fused": [], "detections": [], "status": [], "diagnostics": [], "debug": []}
        for key, typ, topic in (("fused", Image, "fused/image"), ("detections", Detection2DArray, "detections"),
                                ("status", FusionStatus, "status"), ("diagnostics", DiagnosticArray, "/diagnostics")):
            self.helper.create_subscription(typ, topic, lambda m, k=key: self._record(k, m), 50)
        self.executor = MultiThreadedExecutor(num_threads=4)
        self.executor.add_node(self.node)
        self.executor.add_node(self.helper)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        if not params.get("node.compressed"):
            self.wait_for(lambda: self.pub_thermal.get_subscription_count() > 0
                          and self.pub_rgb.get_subscription_count() > 0, what="the node's camera subscriptions")
        self.t0 = 1000.0

    def _record(self, key: str, msg: Any) -> None:
        with self.lock:
            self.got[key].append(msg)

    def subscribe_debug(self) -> None:
        self.helper.create_subscription(Image, "debug/image", lambda m: self._record("debug", m), 10)

    def messages(self, key: str) -> list:
        with self.lock:
            return list(self.got[key])

    def clear(self) -> None:
        with self.lock:
            for v in self.got.values():
                v.clear()

    def wait_for(self, pred: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            value = pred()
            if value:
                return value
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def publish_pair(self, t: float, thermal: np.ndarray | None = None, rgb: np.ndarray | None = None,
                     thermal_dt: float = 0.0) -> None:
        self.pub_thermal.publish(_image_msg(_thermal() if thermal is None else thermal, "mono16", t + thermal_dt,
                                            "thermal_optical"))
        self.pub_rgb.publish(_image_msg(_rgb() if rgb is None else rgb, "rgb8", t, "rgb_optical"))

    def stream(self, seconds: float, *, thermal: bool = True, rgb: bool = True, rate: float = 20.0) -> list[float]:
        """Publish at ``rate`` for ``seconds`` (wall time); stamps continue from the last call."""
        stamps = []
        for _ in range(max(1, int(seconds * rate))):
            self.t0 += 1.0 / rate
            if thermal:
                self.pub_thermal.publish(_image_msg(_thermal(), "mono16", self.t0, "thermal_optical"))
            if rgb:
                self.pub_rgb.publish(_image_msg(_rgb(), "rgb8", self.t0, "rgb_optical"))
            stamps.append(self.t0)
            time.sleep(1.0 / rate)
        return stamps

    def set_parameters(self, **values: Any) -> list:
        """What ``ros2 param set`` does: call the node's set_parameters service."""
        cli = self.helper.create_client(SetParameters, f"{self.ns}/ivfusion_node/set_parameters")
        assert cli.wait_for_service(timeout_sec=10.0)
        req = SetParameters.Request()
        for name, value in values.items():
            pv = ParameterValue()
            if isinstance(value, bool):
                pv.type, pv.bool_value = ParameterType.PARAMETER_BOOL, value
            elif isinstance(value, int):
                pv.type, pv.integer_value = ParameterType.PARAMETER_INTEGER, value
            elif isinstance(value, float):
                pv.type, pv.double_value = ParameterType.PARAMETER_DOUBLE, value
            else:
                pv.type, pv.string_value = ParameterType.PARAMETER_STRING, value
            req.parameters.append(ParameterMsg(name=name, value=pv))
        future = cli.call_async(req)
        self.wait_for(future.done, what="the set_parameters response")
        self.helper.destroy_client(cli)
        return future.result().results

    def last_status(self, pred: Callable[[FusionStatus], bool] = lambda s: True) -> FusionStatus | None:
        for s in reversed(self.messages("status")):
            if pred(s):
                return s
        return None

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5.0)
        self.node.destroy_node()
        self.helper.destroy_node()
        self.thread.join(timeout=5.0)


@pytest.fixture
def harness(tmp_path: Path, request: pytest.FixtureRequest):
    params = getattr(request, "param", {})
    h = Harness(tmp_path, **params)
    yield h
    h.close()


def _stamp(msg: Any) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def test_pairs_are_fused_with_the_pair_stamp_and_rgb_frame(harness: Harness) -> None:
    stamps = set()
    for i in range(3):
        t = 1700000000.0 + 0.1 * i
        stamps.add(round(t, 6))
        harness.publish_pair(t)
        time.sleep(0.3)
    fused = harness.wait_for(lambda: harness.messages("fused"), what="a fused image")
    dets = harness.wait_for(lambda: harness.messages("detections"), what="detections")
    status = harness.wait_for(lambda: harness.last_status(lambda s: s.frames_fused >= 1), what="a status")
    img = fused[0]
    assert img.header.frame_id == "rgb_optical" and round(_stamp(img), 6) in stamps
    assert (img.height, img.width, img.encoding, img.step) == (H, W, "rgb8", 3 * W)
    arr, _ = image_msg_to_array(img)
    assert arr[35:65, 52:60].mean() > arr[5:20, 5:40].mean() + 60  # the warm figure shows in the fused image
    assert dets[0].header.frame_id == "rgb_optical" and round(_stamp(dets[0]), 6) in stamps
    assert status.mode == "fused" and status.variant == "adaptive" and status.regime == "night"
    assert status.header.frame_id == "rgb_optical" and round(_stamp(status), 6) in stamps
    assert list(status.stage_names)[:2] == ["preprocess", "register"] and status.latency_ms > 0
    assert status.frames_in_thermal >= 1 and status.frames_in_rgb >= 1 and status.device == "cpu"


def test_stamps_beyond_slop_are_not_fused(harness: Harness) -> None:
    for i in range(5):
        harness.publish_pair(2000.0 + i, thermal_dt=0.5)  # slop is 0.05 s
        time.sleep(0.1)
    time.sleep(1.0)
    assert harness.messages("fused") == []
    harness.publish_pair(3000.0, thermal_dt=0.01)  # within the slop: fused
    fused = harness.wait_for(lambda: harness.messages("fused"), what="the in-slop pair")
    assert _stamp(fused[0]) == pytest.approx(3000.0)


def test_parameters_validated_and_applied_between_frames(harness: Harness) -> None:
    (r,) = harness.set_parameters(**{"illumination.night_threshold": 0.1})
    assert r.successful, r.reason
    assert harness.node.pipeline.config.illumination.night_threshold == 0.1

    (r,) = harness.set_parameters(**{"fusion.levels": 99})
    assert not r.successful and ("fusion.levels" in r.reason or "range" in r.reason), r.reason
    assert harness.node.cfg.fusion.levels == 4

    (r,) = harness.set_parameters(**{"detector.type": "ssd"})
    assert not r.successful and "not one of ivdet, hog, yolo, none" in r.reason

    (r,) = harness.set_parameters(**{"illumination.night_threshold": 0.9})
    assert not r.successful and "must be below illumination.day_threshold" in r.reason

    (r,) = harness.set_parameters(**{"fusion.variant": "no_such_variant"})
    assert not r.successful and "no_such_variant" in r.reason
    assert harness.node.cfg.fusion.variant == "adaptive"

    (r,) = harness.set_parameters(**{"fusion.variant": "max"})
    assert r.successful, r.reason
    assert harness.node.get_parameter("fusion.variant").value == "max"
    harness.clear()
    harness.publish_pair(4000.0)
    status = harness.wait_for(lambda: harness.last_status(lambda s: s.frames_fused >= 1), what="a status")
    assert status.variant == "max"

    (r,) = harness.set_parameters(**{"illumination.night_threshold": 0})  # an integer for a double
    if hasattr(harness.node, "add_pre_set_parameters_callback"):
        assert r.successful, r.reason  # promoted to 0.0 (Iron and newer)
    else:
        assert not r.successful


def test_learned_variant_with_the_shipped_weights(harness: Harness, tmp_path: Path) -> None:
    """`variant: amfusion` runs the weights installed with the package; a broken weights file is rejected."""
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not weights")
    (r,) = harness.set_parameters(**{"fusion.weights": str(bad)})  # unused by adaptive
    assert r.successful, r.reason
    (r,) = harness.set_parameters(**{"fusion.variant": "amfusion"})
    assert not r.successful and "broken.pt" in r.reason, r.reason
    assert harness.node.cfg.fusion.variant == "adaptive"

    (r,) = harness.set_parameters(**{"fusion.weights": ""})
    assert r.successful, r.reason
    (r,) = harness.set_parameters(**{"fusion.variant": "amfusion"})
    assert r.successful, r.reason
    harness.clear()
    harness.publish_pair(5000.0)
    status = harness.wait_for(lambda: harness.last_status(lambda s: s.frames_fused >= 1), what="a status")
    assert status.variant == "amfusion"
    assert harness.wait_for(lambda: harness.messages("fused"), what="a fused image")


def test_camera_silence_degrades_and_recovers(harness: Harness) -> None:
    harness.stream(0.6)
    harness.wait_for(lambda: harness.last_status(lambda s: s.mode == "fused" and s.frames_fused > 0),
                     what="fusing")
    harness.clear()
    harness.stream(1.5, thermal=False)  # the thermal camera stops
    status = harness.last_status(lambda s: s.mode == "rgb_only")
    assert status is not None, [s.mode for s in harness.messages("status")]
    # detection keeps running on the RGB camera alone
    assert harness.last_status(lambda s: s.mode == "rgb_only" and s.variant == "none" and s.latency_ms > 0)
    diag = harness.wait_for(lambda: [d for d in harness.messages("diagnostics") for s in d.status
                                     if s.name.endswith("thermal camera") and s.level == b"\x01"],
                            what="a WARN diagnostic for the thermal camera")
    assert diag
    fusion = [s for d in harness.messages("diagnostics") for s in d.status if s.name.endswith(": fusion")]
    assert any(s.level == b"\x01" and "rgb_only" in s.message for s in fusion)
    harness.clear()
    harness.stream(1.0)  # back
    assert harness.last_status(lambda s: s.mode == "fused" and s.variant == "adaptive"), \
        [s.mode for s in harness.messages("status")]


@pytest.mark.parametrize("harness", [{"node.degraded_mode": "pause"}], indirect=True)
def test_pause_mode(harness: Harness) -> None:
    harness.stream(0.5)
    harness.clear()
    harness.stream(1.2, thermal=False)
    assert harness.last_status(lambda s: s.mode == "paused")
    assert not harness.last_status(lambda s: s.mode == "rgb_only")


def test_bad_messages_are_counted_and_the_node_keeps_running(harness: Harness) -> None:
    bad_encoding = _image_msg(np.zeros((H, W), np.uint16), "mono16", 5000.0, "thermal_optical")
    bad_encoding.encoding = "yuv422"
    truncated = _image_msg(_rgb(), "rgb8", 5000.0, "rgb_optical")
    truncated.data = bytes(truncated.data)[:-10]
    harness.pub_thermal.publish(bad_encoding)
    harness.pub_rgb.publish(truncated)
    empty = _image_msg(_rgb(), "rgb8", 5000.1, "rgb_optical")
    empty.height, empty.width, empty.step, empty.data = 0, 0, 0, b""
    harness.pub_rgb.publish(empty)
    time.sleep(0.3)
    harness.publish_pair(5001.0)
    status = harness.wait_for(lambda: harness.last_status(lambda s: s.frames_fused >= 1), what="a good pair")
    drops = dict(zip(status.drop_reasons, status.drop_counts))
    assert drops.get("bad_encoding") == 1 and drops.get("size_mismatch") == 1 and drops.get("empty") == 1, drops
    assert status.frames_dropped >= 3
    assert harness.node.frames_fused >= 1


def test_debug_image_only_when_subscribed(harness: Harness) -> None:
    harness.publish_pair(6000.0)
    harness.wait_for(lambda: harness.messages("fused"), what="a fused image")
    assert harness.messages("debug") == []
    harness.subscribe_debug()
    harness.wait_for(lambda: harness.node.pub_debug.get_subscription_count() > 0, what="the debug subscription")
    harness.publish_pair(6001.0)
    dbg = harness.wait_for(lambda: harness.messages("debug"), what="a debug image")
    assert dbg[0].encoding == "rgb8" and dbg[0].header.frame_id == "rgb_optical"


def test_sync_parameters_apply_at_run_time(harness: Harness) -> None:
    for i in range(3):
        harness.publish_pair(7000.0 + i, thermal_dt=0.3)
        time.sleep(0.1)
    time.sleep(0.5)
    assert harness.messages("fused") == []  # 0.3 s apart, slop 0.05 s
    (r,) = harness.set_parameters(**{"sync.slop": 0.5})
    assert r.successful, r.reason
    harness.wait_for(lambda: harness.pub_thermal.get_subscription_count() > 0
                     and harness.pub_rgb.get_subscription_count() > 0, what="the new subscriptions")
    time.sleep(0.3)
    harness.publish_pair(7100.0, thermal_dt=0.3)
    fused = harness.wait_for(lambda: harness.messages("fused"), what="a pair within the new slop")
    assert _stamp(fused[0]) == pytest.approx(7100.0)


@pytest.mark.parametrize("harness", [{"node.compressed": True}], indirect=True)
def test_compressed_inputs(harness: Harness) -> None:
    pub_t = harness.helper.create_publisher(CompressedImage, "thermal/image/compressed", 10)
    pub_r = harness.helper.create_publisher(CompressedImage, "rgb/image/compressed", 10)
    harness.wait_for(lambda: pub_t.get_subscription_count() and pub_r.get_subscription_count(),
                     what="the compressed subscriptions")

    def msg(img: np.ndarray, ext: str, fmt: str, t: float, frame: str) -> CompressedImage:
        m = CompressedImage(format=fmt)
        m.data = array.array("B", cv2.imencode(ext, img)[1].tobytes())
        m.header.frame_id = frame
        m.header.stamp.sec, m.header.stamp.nanosec = sec_to_stamp(t)
        return m

    rgb_bgr = np.ascontiguousarray(_rgb()[:, :, ::-1])
    pub_t.publish(msg(_thermal(), ".png", "mono16; png compressed", 8000.0, "thermal_optical"))  # 16-bit PNG
    pub_r.publish(msg(rgb_bgr, ".jpg", "rgb8; jpeg compressed bgr8", 8000.0, "rgb_optical"))
    fused = harness.wait_for(lambda: harness.messages("fused"), what="a fused image from compressed inputs")
    arr, _ = image_msg_to_array(fused[0])
    assert fused[0].header.frame_id == "rgb_optical" and arr.shape == (H, W, 3)
    assert arr[35:65, 52:60].mean() > arr[5:20, 5:40].mean() + 60
    pub_t.publish(msg(_thermal(), ".png", "png", 8001.0, "thermal_optical"))
    bad = CompressedImage(format="jpeg", data=array.array("B", b"garbage"))
    bad.header.stamp.sec = 8001
    pub_r.publish(bad)  # pairs with the thermal image, fails to decode in the worker
    time.sleep(0.3)
    pub_t.publish(msg(_thermal(), ".png", "png", 8002.0, "thermal_optical"))
    pub_r.publish(msg(rgb_bgr, ".jpg", "jpeg", 8002.0, "rgb_optical"))
    status = harness.wait_for(lambda: harness.last_status(lambda s: "decode_failed" in s.drop_reasons),
                              what="a decode_failed drop")
    assert status.frames_fused >= 1
