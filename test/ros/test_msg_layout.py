"""Wire-format compatibility of what the node publishes, for ROS 2 Humble and Jazzy, without ROS.

The Image, Detection2DArray and FusionStatus messages are built from the field values the node's conversion
functions produce, serialised to CDR with the ``rosbags`` typestores of Humble and Jazzy and read back.
vision_msgs is not in those typestores: its definitions are registered from the .msg text of vision_msgs 4.x
(the version Humble and Jazzy ship, where ``BoundingBox2D.center`` is a ``vision_msgs/Pose2D`` with a
``position``), and FusionStatus from this package's ``msg/FusionStatus.msg``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ivfusion_ros.detect.base import Detections
from ivfusion_ros.ros.conversions import (
    detections_to_fields,
    image_fields,
    image_msg_to_array,
    sec_to_stamp,
    status_fields,
)

# A skip at import time would, under launch_testing's pytest plugin, skip every test in this folder.
try:
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore
except ImportError:
    Stores = None
pytestmark = pytest.mark.skipif(Stores is None, reason="rosbags is not installed (pip install rosbags)")

ROOT = Path(__file__).resolve().parents[2]

# vision_msgs 4.1.x (ros-perception/vision_msgs, branch ros2), comments removed.
VISION_MSGS = {
    "vision_msgs/msg/Point2D": "float64 x\nfloat64 y\n",
    "vision_msgs/msg/Pose2D": "vision_msgs/Point2D position\nfloat64 theta\n",
    "vision_msgs/msg/BoundingBox2D": "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/ObjectHypothesisWithPose": (
        "vision_msgs/ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n"),
    "vision_msgs/msg/Detection2D": (
        "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
        "vision_msgs/BoundingBox2D bbox\nstring id\n"),
    "vision_msgs/msg/Detection2DArray": "std_msgs/Header header\nvision_msgs/Detection2D[] detections\n",
}

@pytest.fixture(params=["humble", "jazzy"], scope="module")
def store(request: pytest.FixtureRequest):
    ts = get_typestore({"humble": Stores.ROS2_HUMBLE, "jazzy": Stores.ROS2_JAZZY}[request.param])
    types = {}
    for name, text in VISION_MSGS.items():
        types.update(get_types_from_msg(text, name))
    types.update(get_types_from_msg((ROOT / "msg" / "FusionStatus.msg").read_text(), "ivfusion_ros/msg/FusionStatus"))
    ts.register(types)
    return ts


def _header(ts, t: float = 1700000000.25, frame_id: str = "rgb_optical"):
    Header, Time = ts.types["std_msgs/msg/Header"], ts.types["builtin_interfaces/msg/Time"]
    sec, nsec = sec_to_stamp(t)
    return Header(stamp=Time(sec=sec, nanosec=nsec), frame_id=frame_id)


def _round_trip(ts, msg, typename: str):
    raw = ts.serialize_cdr(msg, typename)
    back = ts.deserialize_cdr(bytes(raw), typename)
    assert bytes(ts.serialize_cdr(back, typename)) == bytes(raw)
    return back


def test_fused_image(store) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    f = image_fields(rgb, "rgb8")
    Image = store.types["sensor_msgs/msg/Image"]
    msg = Image(header=_header(store), height=f.height, width=f.width, encoding=f.encoding,
                is_bigendian=f.is_bigendian, step=f.step, data=np.frombuffer(f.data, np.uint8))
    back = _round_trip(store, msg, "sensor_msgs/msg/Image")
    assert back.header.frame_id == "rgb_optical" and back.step == 96 and back.encoding == "rgb8"
    out, _ = image_msg_to_array(back)  # a message read from a bag decodes like a live one
    np.testing.assert_array_equal(out, rgb)


def test_thermal_mono16_big_endian_padded(store) -> None:
    thermal = (np.arange(6 * 5, dtype=np.uint16).reshape(6, 5) * 997)
    f = image_fields(thermal, "mono16", step=12, bigendian=True)
    Image = store.types["sensor_msgs/msg/Image"]
    msg = Image(header=_header(store), height=f.height, width=f.width, encoding=f.encoding,
                is_bigendian=f.is_bigendian, step=f.step, data=np.frombuffer(f.data, np.uint8))
    np.testing.assert_array_equal(image_msg_to_array(_round_trip(store, msg, "sensor_msgs/msg/Image"))[0],
                                  thermal)


def test_detection2d_array(store) -> None:
    t = store.types
    header = _header(store)
    dets = Detections(np.array([[10, 20, 30, 60], [1, 2, 5, 4]], np.float32), np.array([0.9, 0.4], np.float32),
                      np.array([0, 1]), ("person", "car"))
    pose = t["geometry_msgs/msg/PoseWithCovariance"](
        pose=t["geometry_msgs/msg/Pose"](position=t["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
                                         orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)),
        covariance=np.zeros(36, np.float64))
    detections = []
    for f in detections_to_fields(dets, "name"):
        bbox = t["vision_msgs/msg/BoundingBox2D"](
            center=t["vision_msgs/msg/Pose2D"](position=t["vision_msgs/msg/Point2D"](x=f.cx, y=f.cy), theta=0.0),
            size_x=f.size_x, size_y=f.size_y)
        hyp = t["vision_msgs/msg/ObjectHypothesisWithPose"](
            hypothesis=t["vision_msgs/msg/ObjectHypothesis"](class_id=f.class_id, score=f.score), pose=pose)
        detections.append(t["vision_msgs/msg/Detection2D"](header=header, results=[hyp], bbox=bbox, id=f.id))
    msg = t["vision_msgs/msg/Detection2DArray"](header=header, detections=detections)
    back = _round_trip(store, msg, "vision_msgs/msg/Detection2DArray")
    assert back.header.stamp.sec == 1700000000 and back.header.stamp.nanosec == 250_000_000
    d0, d1 = back.detections
    assert (d0.bbox.center.position.x, d0.bbox.center.position.y, d0.bbox.size_x, d0.bbox.size_y) == (20, 40, 20, 40)
    assert d0.results[0].hypothesis.class_id == "person" and d0.results[0].hypothesis.score == pytest.approx(0.9)
    assert d1.results[0].hypothesis.class_id == "car" and d1.bbox.center.position.x == 3.0


def test_fusion_status(store) -> None:
    from types import SimpleNamespace

    result = SimpleNamespace(variant="adaptive", regime="night", illumination=0.12, glare_fraction=0.004,
                             timings={"preprocess": 1.5, "register": 0.2, "fuse": 3.0},
                             detections=Detections.empty())
    f = status_fields(result, mode="rgb_only", sync_skew=0.012, end_to_end_ms=40.0, frames_in_thermal=10,
                      frames_in_rgb=11, frames_fused=9, drops={"superseded": 1, "size_mismatch": 2},
                      detector="hog", device="cpu")
    # rosbags wants numpy arrays for numeric sequences (rclpy takes the lists as they are)
    f["stage_latency_ms"] = np.asarray(f["stage_latency_ms"], np.float32)
    f["drop_counts"] = np.asarray(f["drop_counts"], np.uint64)
    msg = store.types["ivfusion_ros/msg/FusionStatus"](header=_header(store), **f)
    back = _round_trip(store, msg, "ivfusion_ros/msg/FusionStatus")
    assert back.mode == "rgb_only" and back.variant == "adaptive" and back.regime == "night"
    assert list(back.stage_names) == ["preprocess", "register", "fuse"]
    np.testing.assert_allclose(back.stage_latency_ms, [1.5, 0.2, 3.0], rtol=1e-6)
    assert list(back.drop_reasons) == ["size_mismatch", "superseded"] and back.drop_counts.tolist() == [2, 1]
    assert back.frames_dropped == 3 and back.latency_ms == pytest.approx(4.7)


def test_status_fields_cover_the_message_definition() -> None:
    """Every field of msg/FusionStatus.msg (but the header) is filled by status_fields, and nothing else."""
    names = []
    for line in (ROOT / "msg" / "FusionStatus.msg").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line.split()[1])
    assert set(status_fields(None, mode="fused")) == set(names) - {"header"}
