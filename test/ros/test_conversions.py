"""Image and detection conversions of the node, without ROS (messages are simple field holders)."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from ivfusion_ros.detect.base import Detections
from ivfusion_ros.errors import InputError
from ivfusion_ros.ros.conversions import (
    IMAGE_ENCODINGS,
    compressed_msg_to_array,
    debug_overlay,
    detections_to_fields,
    image_fields,
    image_msg_to_array,
    sec_to_stamp,
    stamp_to_sec,
    status_fields,
)


def _msg(f, data=None) -> SimpleNamespace:
    return SimpleNamespace(height=f.height, width=f.width, encoding=f.encoding, is_bigendian=f.is_bigendian,
                           step=f.step, data=f.data if data is None else data)


def _image(encoding: str, rng: np.random.Generator, h: int = 7, w: int = 5) -> np.ndarray:
    dtype, c = IMAGE_ENCODINGS[encoding]
    shape = (h, w) if c == 1 else (h, w, c)
    if dtype == np.float32:
        return rng.normal(300.0, 20.0, shape).astype(np.float32)
    return rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)


@pytest.mark.parametrize("encoding", list(IMAGE_ENCODINGS))
@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize("bigendian", [False, True])
def test_round_trip_every_encoding(encoding: str, pad: int, bigendian: bool, rng: np.random.Generator) -> None:
    img = _image(encoding, rng)
    row = img.shape[1] * img.itemsize * (1 if img.ndim == 2 else img.shape[2])
    f = image_fields(img, encoding, step=row + pad, bigendian=bigendian)
    assert (f.height, f.width, f.step, f.is_bigendian) == (7, 5, row + pad, int(bigendian))
    assert len(f.data) == f.step * f.height
    # the data is also valid for any container rclpy or rosbags use
    for data in (f.data, bytearray(f.data), np.frombuffer(f.data, np.uint8), memoryview(f.data)):
        out, enc = image_msg_to_array(_msg(f, data))
        assert enc == {"8UC1": "mono8", "16UC1": "mono16"}.get(encoding, encoding)
        assert out.dtype == img.dtype and out.dtype.isnative and out.shape == img.shape
        np.testing.assert_array_equal(out, img)


def test_big_endian_mono16_bytes() -> None:
    msg = SimpleNamespace(height=1, width=2, encoding="mono16", is_bigendian=1, step=4,
                          data=bytes([0x12, 0x34, 0xAB, 0xCD]))
    out, _ = image_msg_to_array(msg)
    assert out.tolist() == [[0x1234, 0xABCD]]
    msg.is_bigendian = 0
    assert image_msg_to_array(msg)[0].tolist() == [[0x3412, 0xCDAB]]


def test_unpadded_image_is_a_view_of_the_data() -> None:
    f = image_fields(np.arange(12, dtype=np.uint8).reshape(3, 4), "mono8")
    buf = np.frombuffer(f.data, np.uint8)
    out, _ = image_msg_to_array(_msg(f, buf))
    assert np.shares_memory(out, buf)


@pytest.mark.parametrize(
    ("change", "reason", "match"),
    [
        ({"encoding": "yuv422"}, "bad_encoding", "unsupported image encoding 'yuv422'"),
        ({"encoding": "bayer_rggb8"}, "bad_encoding", "supported: mono8"),
        ({"data": b""}, "empty", "empty image"),
        ({"height": 0}, "empty", "empty image"),
        ({"width": 0}, "empty", "empty image"),
        ({"data": bytes(10 * 4 - 1)}, "size_mismatch", "data has 39 bytes, step\\*height is 40"),
        ({"data": bytes(10 * 4 + 4)}, "size_mismatch", "data has 44 bytes"),
        ({"step": 3, "data": bytes(30)}, "size_mismatch", "step 3 is smaller than a row \\(4 bytes\\)"),
        ({"encoding": "mono16"}, "size_mismatch", "step 4 is smaller than a row \\(8 bytes\\)"),
        ({"encoding": "rgb8"}, "size_mismatch", "smaller than a row \\(12 bytes\\)"),
    ],
)
def test_bad_messages_raise_with_reason(change: dict, reason: str, match: str) -> None:
    msg = SimpleNamespace(height=10, width=4, encoding="mono8", is_bigendian=0, step=4, data=bytes(40))
    for k, v in change.items():
        setattr(msg, k, v)
    with pytest.raises(InputError, match=match) as err:
        image_msg_to_array(msg)
    assert err.value.reason == reason


def test_image_fields_rejects_mismatched_arrays() -> None:
    with pytest.raises(InputError, match="rgb8 needs uint8 x3") as err:
        image_fields(np.zeros((4, 4), np.uint8), "rgb8")
    assert err.value.reason == "bad_encoding"
    with pytest.raises(InputError, match="needs uint16"):
        image_fields(np.zeros((4, 4), np.uint8), "mono16")
    with pytest.raises(InputError, match="step 2 is smaller"):
        image_fields(np.zeros((4, 4), np.uint8), "mono8", step=2)
    with pytest.raises(InputError, match="unsupported image encoding"):
        image_fields(np.zeros((4, 4), np.uint8), "nv12")


@pytest.mark.parametrize(
    ("img", "ext", "encoding"),
    [
        (np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 7, ".png", "mono16"),
        (np.arange(48 * 64, dtype=np.uint8).reshape(48, 64), ".png", "mono8"),
        (np.dstack([np.arange(48 * 64).reshape(48, 64) % 256] * 3).astype(np.uint8), ".png", "bgr8"),
        (np.full((48, 64, 4), 77, np.uint8), ".png", "bgra8"),
    ],
)
def test_compressed_png_is_lossless(img: np.ndarray, ext: str, encoding: str) -> None:
    ok, buf = cv2.imencode(ext, img)
    assert ok
    for data in (buf.tobytes(), buf.reshape(-1)):
        out, enc = compressed_msg_to_array(SimpleNamespace(format="png", data=data))
        assert enc == encoding
        np.testing.assert_array_equal(out, img)


def test_compressed_jpeg() -> None:
    img = np.full((32, 48, 3), (10, 120, 240), np.uint8)
    _, buf = cv2.imencode(".jpg", img)
    out, enc = compressed_msg_to_array(SimpleNamespace(format="rgb8; jpeg compressed bgr8", data=buf.tobytes()))
    assert enc == "bgr8" and out.shape == img.shape
    assert np.abs(out.astype(int) - img).max() < 8


@pytest.mark.parametrize(
    ("fmt", "data", "reason", "match"),
    [
        ("jpeg", b"", "empty", "empty compressed image"),
        ("jpeg", b"not an image at all", "decode_failed", "cannot decode compressed image"),
        ("16UC1; compressedDepth", b"\x00" * 20, "bad_encoding", "compressedDepth"),
    ],
)
def test_compressed_errors(fmt: str, data: bytes, reason: str, match: str) -> None:
    with pytest.raises(InputError, match=match) as err:
        compressed_msg_to_array(SimpleNamespace(format=fmt, data=data))
    assert err.value.reason == reason


def test_stamps_round_trip() -> None:
    for t in (0.0, 1.5, 1700000000.123456789, 12.999999999):
        sec, nsec = sec_to_stamp(t)
        assert 0 <= nsec < 1_000_000_000
        assert stamp_to_sec(SimpleNamespace(sec=sec, nanosec=nsec)) == pytest.approx(t, abs=1e-9 * max(1, t))


def _dets() -> Detections:
    return Detections(np.array([[10, 20, 30, 60], [0.5, 1.5, 2.5, 3.5]], np.float32),
                      np.array([0.9, 0.4], np.float32), np.array([0, 7]), ("person", "car"))


def test_detection_fields_by_name_and_index() -> None:
    by_name = detections_to_fields(_dets(), "name")
    assert [(f.cx, f.cy, f.size_x, f.size_y) for f in by_name] == [(20, 40, 20, 40), (1.5, 2.5, 2, 2)]
    assert [f.class_id for f in by_name] == ["person", "7"]  # index without a name: the index as text
    assert [f.id for f in by_name] == ["0", "1"]
    assert by_name[0].score == pytest.approx(0.9) and isinstance(by_name[0].score, float)
    assert [f.class_id for f in detections_to_fields(_dets(), "index")] == ["0", "7"]
    assert detections_to_fields(Detections.empty(), "name") == []
    with pytest.raises(ValueError, match="class_id_format"):
        detections_to_fields(_dets(), "label")


def test_status_fields() -> None:
    result = SimpleNamespace(variant="adaptive", regime="night", illumination=0.1, glare_fraction=0.02,
                             timings={"preprocess": 1.0, "fuse": 2.5}, detections=_dets())
    f = status_fields(result, mode="fused", sync_skew=-0.01, end_to_end_ms=12.0, frames_in_thermal=5,
                      frames_in_rgb=6, frames_fused=4, drops={"superseded": 2, "bad_encoding": 1},
                      detector="hog", device="cpu")
    assert f["stage_names"] == ["preprocess", "fuse"] and f["stage_latency_ms"] == [1.0, 2.5]
    assert f["latency_ms"] == 3.5 and f["sync_skew"] == pytest.approx(0.01)
    assert f["drop_reasons"] == ["bad_encoding", "superseded"] and f["drop_counts"] == [1, 2]
    assert f["frames_dropped"] == 3 and f["detections"] == 2
    idle = status_fields(None, mode="paused", variant="max")
    assert idle["variant"] == "max" and idle["mode"] == "paused" and idle["stage_names"] == []
    with pytest.raises(ValueError, match="mode must be one of"):
        status_fields(None, mode="broken")


def test_debug_overlay_draws_without_touching_the_input() -> None:
    rgb = np.zeros((120, 160, 3), np.uint8)
    out = debug_overlay(rgb, _dets(), ["fused night", "adaptive"])
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert rgb.max() == 0 and out.max() > 0
