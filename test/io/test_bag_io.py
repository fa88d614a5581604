"""io/bag: image messages <-> arrays, writing and reading bags (mcap, sqlite3, ROS 1), and bag errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag1 import Writer as Writer1
from rosbags.typesys import Stores, get_typestore

from ivfusion_ros.detect.base import Detections
from ivfusion_ros.errors import InputError
from ivfusion_ros.io.bag import (
    BagError,
    BagReader,
    BagWriter,
    compressed_msg,
    detections_msg,
    header,
    image_from_msg,
    image_msg,
    status_msg,
)
from ivfusion_ros.io.rostypes import typestore
from ivfusion_ros.ros import conversions

T0 = 1_700_000_000_000_000_000
STORE = typestore("jazzy")
rng = np.random.default_rng(3)


def _raw_image(img: np.ndarray, encoding: str, *, bigendian: bool = False, pad: int = 0):
    """An Image message built by hand: optional big-endian pixels and ``pad`` bytes at the end of each row."""
    h, w = img.shape[:2]
    arr = np.ascontiguousarray(img, dtype=img.dtype.newbyteorder(">" if bigendian else "<"))
    rows = arr.view(np.uint8).reshape(h, -1)
    if pad:
        rows = np.concatenate([rows, np.full((h, pad), 0xEE, np.uint8)], axis=1)
    return STORE.types["sensor_msgs/msg/Image"](
        header=header(STORE, T0), height=h, width=w, encoding=encoding, is_bigendian=int(bigendian),
        step=rows.shape[1], data=rows.reshape(-1).copy())


SAMPLES = {
    "mono8": rng.integers(0, 256, (5, 7), dtype=np.uint8),
    "8UC1": rng.integers(0, 256, (5, 7), dtype=np.uint8),
    "mono16": rng.integers(27000, 33000, (5, 7), dtype=np.uint16),
    "16UC1": rng.integers(0, 65536, (5, 7), dtype=np.uint16),
    "32FC1": rng.normal(300.0, 5.0, (5, 7)).astype(np.float32),
    "rgb8": rng.integers(0, 256, (5, 7, 3), dtype=np.uint8),
    "bgr8": rng.integers(0, 256, (5, 7, 3), dtype=np.uint8),
    "rgba8": rng.integers(0, 256, (5, 7, 4), dtype=np.uint8),
    "bgra8": rng.integers(0, 256, (5, 7, 4), dtype=np.uint8),
}


@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("encoding", list(SAMPLES))
def test_image_round_trip(encoding: str, bigendian: bool, pad: int) -> None:
    img = SAMPLES[encoding]
    out, enc = image_from_msg(_raw_image(img, encoding, bigendian=bigendian, pad=pad))
    assert enc == {"8UC1": "mono8", "16UC1": "mono16"}.get(encoding, encoding)
    assert out.dtype == img.dtype and out.dtype.isnative and out.flags.writeable
    np.testing.assert_array_equal(out, img)


@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize("encoding", list(SAMPLES))
def test_same_decoding_as_the_node(encoding: str, pad: int) -> None:
    """The replay and the node (ros/conversions.py, cv_bridge-free) read every message alike."""
    msg = _raw_image(SAMPLES[encoding], encoding, bigendian=True, pad=pad)
    ours, node = image_from_msg(msg), conversions.image_msg_to_array(msg)
    assert ours[1] == node[1]
    np.testing.assert_array_equal(ours[0], node[0])
    bad = dataclasses.replace(msg, step=1)
    with pytest.raises(InputError) as a:
        image_from_msg(bad)
    with pytest.raises(InputError) as b:
        conversions.image_msg_to_array(bad)
    assert a.value.reason == b.value.reason
    fields = conversions.image_fields(SAMPLES[encoding], encoding)
    written = image_msg(STORE, SAMPLES[encoding], encoding, T0)
    assert (written.height, written.width, written.encoding, written.is_bigendian, written.step) == (
        fields.height, fields.width, fields.encoding, fields.is_bigendian, fields.step)
    assert bytes(written.data) == fields.data


def test_same_compressed_decoding_and_detections_as_the_node() -> None:
    for img, enc, codec in ((SAMPLES["mono16"], "mono16", "png"), (SAMPLES["rgb8"], "rgb8", "jpeg")):
        msg = compressed_msg(STORE, img, enc, T0, codec=codec)
        ours, node = image_from_msg(msg), conversions.compressed_msg_to_array(msg)
        assert ours[1] == node[1]
        np.testing.assert_array_equal(ours[0], node[0])
    dets = Detections(np.array([[1, 2, 11, 22], [5, 5, 9, 7]], np.float32), np.array([0.75, 0.5], np.float32),
                      np.array([0, 1]), ("person", "car"))
    arr = detections_msg(STORE, dets.boxes, dets.scores, dets.names(), T0)
    for d, f in zip(arr.detections, conversions.detections_to_fields(dets, "name"), strict=True):
        assert (d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.size_x, d.bbox.size_y, d.id) == (
            f.cx, f.cy, f.size_x, f.size_y, f.id)
        assert (d.results[0].hypothesis.class_id, d.results[0].hypothesis.score) == (f.class_id, pytest.approx(f.score))


def test_image_msg_writes_what_image_from_msg_reads() -> None:
    img = SAMPLES["mono16"]
    msg = image_msg(STORE, img, "mono16", T0 + 5, "thermal")
    assert (msg.width, msg.height, msg.step, msg.is_bigendian) == (7, 5, 14, 0)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (1_700_000_000, 5, "thermal")
    np.testing.assert_array_equal(image_from_msg(msg)[0], img)
    with pytest.raises(InputError, match="mono16 needs uint16") as err:
        image_msg(STORE, SAMPLES["mono8"], "mono16", T0)
    assert err.value.reason == "bad_encoding"


@pytest.mark.parametrize(("change", "reason", "match"), [
    ({"encoding": "yuv422"}, "bad_encoding", "unsupported image encoding 'yuv422'"),
    ({"step": 6}, "size_mismatch", "step 6 is smaller than a row"),
    ({"height": 6}, "size_mismatch", "data has 35 bytes, step\\*height is 42"),
    ({"width": 0}, "empty", "empty image"),
])
def test_malformed_images_raise_with_reasons(change: dict, reason: str, match: str) -> None:
    msg = dataclasses.replace(_raw_image(SAMPLES["mono8"], "mono8"), **change)
    with pytest.raises(InputError, match=match) as err:
        image_from_msg(msg)
    assert err.value.reason == reason


def test_compressed_images() -> None:
    th16 = SAMPLES["mono16"]
    msg = compressed_msg(STORE, th16, "mono16", T0, codec="png")
    assert msg.format == "mono16; png compressed mono16"
    out, enc = image_from_msg(msg)
    assert enc == "mono16"  # 16 bits survive (rosbags-image's IMREAD_ANYCOLOR would give 8)
    np.testing.assert_array_equal(out, th16)
    rgb = SAMPLES["rgb8"]
    out, enc = image_from_msg(compressed_msg(STORE, rgb, "rgb8", T0, codec="png"))
    assert enc == "bgr8"
    np.testing.assert_array_equal(out, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    flat = np.full((16, 16, 3), 100, np.uint8)
    jpeg = compressed_msg(STORE, flat, "rgb8", T0, codec="jpeg")
    assert jpeg.format == "rgb8; jpeg compressed bgr8"
    assert np.abs(image_from_msg(jpeg)[0].astype(int) - 100).max() <= 2
    with pytest.raises(InputError, match="JPEG holds 8-bit images only"):
        compressed_msg(STORE, th16, "mono16", T0, codec="jpeg")


@pytest.mark.parametrize(("fmt", "data", "reason"), [
    ("png", b"\x89PNG garbage", "decode_failed"),
    ("png", b"", "empty"),
    ("16UC1; compressedDepth png", b"\x00" * 20, "bad_encoding"),
])
def test_bad_compressed_images(fmt: str, data: bytes, reason: str) -> None:
    msg = STORE.types["sensor_msgs/msg/CompressedImage"](header=header(STORE, T0), format=fmt,
                                                         data=np.frombuffer(data, np.uint8))
    with pytest.raises(InputError) as err:
        image_from_msg(msg)
    assert err.value.reason == reason


def _write_sample_bag(path: Path, storage: str | None = None, *, zero_stamp: bool = False) -> None:
    with BagWriter(path, storage=storage) as bag:
        for i in range(3):
            t = T0 + i * 100_000_000
            stamp = 0 if zero_stamp and i == 1 else t
            bag.write("/thermal/image_raw", image_msg(STORE, SAMPLES["mono16"], "mono16", stamp, "thermal"), t)
            bag.write("/camera/image_raw/compressed",
                      compressed_msg(STORE, SAMPLES["bgr8"], "bgr8", stamp, "camera"), t)
            bag.write("/detections", detections_msg(STORE, np.array([[1.0, 2.0, 11.0, 22.0]]), np.array([0.75]),
                                                    ["person"], stamp, "camera"), t)


@pytest.mark.parametrize(("name", "storage"), [("out.mcap", None), ("folder_mcap", "mcap"),
                                               ("folder_sqlite", "sqlite3")])
def test_write_and_read_back(tmp_path: Path, name: str, storage: str | None) -> None:
    path = tmp_path / name
    _write_sample_bag(path, storage, zero_stamp=True)
    assert path.is_file() == name.endswith(".mcap")
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary folder left behind
    with BagReader(path) as bag:
        assert bag.storage == (storage or "mcap")
        assert {t: (i.msgtype, i.count) for t, i in bag.topics.items()} == {
            "/thermal/image_raw": ("sensor_msgs/msg/Image", 3),
            "/camera/image_raw/compressed": ("sensor_msgs/msg/CompressedImage", 3),
            "/detections": ("vision_msgs/msg/Detection2DArray", 3)}
        assert bag.image_topic("/camera/image_raw") == "/camera/image_raw/compressed"
        msgs = list(bag.messages(["/thermal/image_raw", "/camera/image_raw/compressed"]))
        assert [m.topic[:7] for m in msgs] == ["/therma", "/camera"] * 3
        assert [m.stamp_source for m in msgs] == ["header"] * 2 + ["log_time"] * 2 + ["header"] * 2
        assert [m.stamp_ns for m in msgs[::2]] == [T0, T0 + 100_000_000, T0 + 200_000_000]
        img, enc = msgs[0].decode()
        assert enc == "mono16" and img.shape == (5, 7)
        np.testing.assert_array_equal(img, SAMPLES["mono16"])
        assert msgs[1].decode()[1] == "bgr8" and msgs[1].frame_id == "camera"
        conn = next(c for c in bag.reader.connections if c.topic == "/detections")
        raw = next(r for _, _, r in bag.reader.messages([conn]))
        det = bag.reader.deserialize(raw, conn.msgtype).detections[0]
        assert (det.bbox.center.position.x, det.bbox.center.position.y, det.bbox.size_x, det.bbox.size_y) == (
            6.0, 12.0, 10.0, 20.0)
        assert (det.results[0].hypothesis.class_id, det.results[0].hypothesis.score, det.id) == ("person", 0.75, "0")
        assert det.results[0].pose.pose.orientation.w == 1.0


def test_writer_refuses_to_clobber(tmp_path: Path) -> None:
    path = tmp_path / "out.mcap"
    _write_sample_bag(path)
    with pytest.raises(BagError, match="exists already.*--overwrite"):
        BagWriter(path).open()
    with BagWriter(path, overwrite=True) as bag:
        bag.write("/x", image_msg(STORE, SAMPLES["mono8"], "mono8", T0), T0)
    with BagReader(path) as bag:
        assert list(bag.topics) == ["/x"]
    (tmp_path / "notabag").mkdir()
    with pytest.raises(BagError, match="not a rosbag2"):
        BagWriter(tmp_path / "notabag", overwrite=True).open()
    with pytest.raises(BagError, match=r"\.db3.*folder"):
        BagWriter(tmp_path / "x.db3", storage="sqlite3")
    with pytest.raises(BagError, match="unknown bag storage 'zip'"):
        BagWriter(tmp_path / "y", storage="zip")


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), BagWriter(tmp_path / "out.mcap") as bag:
        bag.write("/x", image_msg(STORE, SAMPLES["mono8"], "mono8", T0), T0)
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_status_message_fields_are_checked() -> None:
    with pytest.raises(BagError, match=r"missing \[.*'device'.*unknown \['colour'\]"):
        status_msg(STORE, {"colour": 1}, T0)


def test_reader_errors(tmp_path: Path) -> None:
    with pytest.raises(BagError, match="no such bag: .*missing"):
        BagReader(tmp_path / "missing").open()
    (tmp_path / "junk.mcap").write_bytes(b"this is not an mcap file" * 10)
    with pytest.raises(BagError, match=r"cannot read bag .*junk\.mcap"):
        BagReader(tmp_path / "junk.mcap").open()
    (tmp_path / "folder").mkdir()
    with pytest.raises(BagError, match="not a rosbag2 folder"):
        BagReader(tmp_path / "folder").open()
    (tmp_path / "folder" / "metadata.yaml").write_text("rosbag2_bagfile_information: [1, 2")
    with pytest.raises(BagError, match=r"cannot read bag .*folder"):
        BagReader(tmp_path / "folder").open()
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(BagError, match="unknown bag format '.txt'"):
        BagReader(tmp_path / "a.txt").open()


def test_truncated_bag(tmp_path: Path) -> None:
    good = tmp_path / "good.mcap"
    _write_sample_bag(good)
    bad = tmp_path / "bad.mcap"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(BagError, match=r"cannot read bag .*bad\.mcap"), BagReader(bad) as bag:
        list(bag.messages(list(bag.topics)))


def test_missing_and_wrong_topics_list_what_the_bag_has(tmp_path: Path) -> None:
    path = tmp_path / "b.mcap"
    _write_sample_bag(path)
    with BagReader(path) as bag:
        with pytest.raises(BagError, match=r"no thermal topic /flir/image_raw .*it has: /camera/image_raw/compressed "
                                           r"\(sensor_msgs/msg/CompressedImage, 3 msgs\), /detections"):
            bag.image_topic("/flir/image_raw", "thermal")
        with pytest.raises(BagError, match="/detections .* is vision_msgs/msg/Detection2DArray, not"):
            bag.image_topic("/detections", "RGB")


def test_ros1_bag(tmp_path: Path) -> None:
    store1 = get_typestore(Stores.ROS1_NOETIC)
    Image, Header, Time = (store1.types[n] for n in ("sensor_msgs/msg/Image", "std_msgs/msg/Header",
                                                       "builtin_interfaces/msg/Time"))
    path = tmp_path / "old.bag"
    img = SAMPLES["mono16"]
    with Writer1(path) as writer:
        conn = writer.add_connection("/thermal", "sensor_msgs/msg/Image", typestore=store1)
        msg = Image(header=Header(seq=0, stamp=Time(sec=1_700_000_000, nanosec=7), frame_id="t"), height=5, width=7,
                    encoding="mono16", is_bigendian=0, step=14, data=img.view(np.uint8).reshape(-1))
        writer.write(conn, T0 + 99, store1.serialize_ros1(msg, "sensor_msgs/msg/Image"))
    with BagReader(path) as bag:
        assert bag.storage == "rosbag1"
        (m,) = bag.messages([bag.image_topic("/thermal")])
        assert (m.stamp_ns, m.log_ns) == (T0 + 7, T0 + 99)
        np.testing.assert_array_equal(m.decode()[0], img)
