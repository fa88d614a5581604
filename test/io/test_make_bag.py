"""io/make_bag: stamps, encodings (mono16 mapping), homography distortion, compressed topics, option checks."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from ivfusion_ros.errors import ConfigError, InputError
from ivfusion_ros.io.bag import BagReader
from ivfusion_ros.io.make_bag import MakeBagOptions, make_bag, to_mono16

NS = 1_000_000_000
N_PAIRS = 6  # the pairs fixture (conftest.py)


def _read(path: Path, topic: str) -> list:
    with BagReader(path) as bag:
        return list(bag.messages([bag.image_topic(topic)]))


def test_stamps_and_raw_images(tmp_path: Path, pairs: tuple[Path, Path]) -> None:
    calls = []
    summary = make_bag(*pairs, tmp_path / "b.mcap", MakeBagOptions(rate=20.0, start=100.0),
                       progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (N_PAIRS, N_PAIRS)
    assert summary.pairs == N_PAIRS and summary.names[0] == "frame_000"
    expected = [100 * NS + i * NS // 20 for i in range(N_PAIRS)]
    assert summary.thermal_stamps_ns == summary.rgb_stamps_ns == expected
    thermal, rgb = _read(tmp_path / "b.mcap", "/thermal/image_raw"), _read(tmp_path / "b.mcap", "/camera/image_raw")
    assert [m.stamp_ns for m in thermal] == [m.log_ns for m in thermal] == expected
    assert [m.stamp_ns for m in rgb] == expected
    img, enc = thermal[0].decode()
    assert enc == "mono8"
    np.testing.assert_array_equal(img, cv2.imread(str(pairs[0] / "frame_000.png"), cv2.IMREAD_UNCHANGED))
    img, enc = rgb[2].decode()
    assert enc == "rgb8" and rgb[2].frame_id == "camera"
    bgr = cv2.imread(str(pairs[1] / "frame_002.png"))
    np.testing.assert_array_equal(img, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def test_mono16_bgr8_sqlite3(tmp_path: Path, pairs: tuple[Path, Path]) -> None:
    out = tmp_path / "bag16"
    make_bag(*pairs, out, MakeBagOptions(thermal_encoding="mono16", rgb_encoding="bgr8", storage="sqlite3"))
    assert (out / "metadata.yaml").is_file() and (out / "bag16.db3").is_file()
    img, enc = _read(out, "/thermal/image_raw")[0].decode()
    gray = cv2.imread(str(pairs[0] / "frame_000.png"), cv2.IMREAD_UNCHANGED)
    assert enc == "mono16"
    np.testing.assert_array_equal(img, 27315 + 20 * gray.astype(np.int64))
    assert to_mono16(np.array([0, 255], np.uint8)).tolist() == [27315, 32415]  # 273.15 K .. 324.15 K
    rgb, enc = _read(out, "/camera/image_raw")[0].decode()
    assert enc == "bgr8"
    np.testing.assert_array_equal(rgb, cv2.imread(str(pairs[1] / "frame_000.png")))


def test_compressed_topics(tmp_path: Path, pairs: tuple[Path, Path]) -> None:
    summary = make_bag(*pairs, tmp_path / "c.mcap", MakeBagOptions(compressed=True, thermal_encoding="mono16",
                                                                    thermal_topic="/flir/image"))
    assert summary.topics == ("/flir/image/compressed", "/camera/image_raw/compressed")
    with BagReader(tmp_path / "c.mcap") as bag:
        assert {t.msgtype for t in bag.topics.values()} == {"sensor_msgs/msg/CompressedImage"}
        th = next(bag.messages(["/flir/image/compressed"]))
        assert th.msg.format == "mono16; png compressed mono16"
        assert th.decode()[0].dtype == np.uint16


def test_jitter_is_bounded_and_seeded(tmp_path: Path, pairs: tuple[Path, Path]) -> None:
    opts = MakeBagOptions(jitter=0.01, seed=4)
    a = make_bag(*pairs, tmp_path / "a.mcap", opts)
    b = make_bag(*pairs, tmp_path / "b.mcap", opts)
    c = make_bag(*pairs, tmp_path / "c.mcap", MakeBagOptions(jitter=0.01, seed=5))
    assert a.thermal_stamps_ns == b.thermal_stamps_ns != c.thermal_stamps_ns
    nominal = np.array([int(1.7e18) + i * NS // 10 for i in range(N_PAIRS)])
    for stamps in (a.thermal_stamps_ns, a.rgb_stamps_ns):
        dev = np.array(stamps) - nominal
        assert np.abs(dev).max() <= 0.01 * NS and np.abs(dev).max() > 0
    log = [m.log_ns for m in _read(tmp_path / "a.mcap", "/thermal/image_raw")]
    assert log == sorted(log) == a.thermal_stamps_ns


def test_homography_warps_thermal(tmp_path: Path, pairs: tuple[Path, Path]) -> None:
    h = (1.0, 0.0, 6.0, 0.0, 1.0, -2.0, 0.0, 0.0, 1.0)  # shift right 6, up 2
    summary = make_bag(*pairs, tmp_path / "h.mcap", MakeBagOptions(homography=h))
    img = _read(tmp_path / "h.mcap", "/thermal/image_raw")[0].decode()[0]
    src = cv2.imread(str(pairs[0] / "frame_000.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(img[10:30, 10:50], src[12:32, 4:44])
    np.testing.assert_allclose(summary.registration_homography, (1, 0, -6, 0, 1, 2, 0, 0, 1), atol=1e-12)


@pytest.mark.parametrize(("opts", "match"), [
    ({"rate": 0.0}, "--rate"),
    ({"jitter": 0.06}, r"--jitter: .*half the frame period \(0.05 s"),
    ({"thermal_encoding": "32FC1"}, "--thermal-encoding"),
    ({"rgb_encoding": "mono8"}, "--rgb-encoding"),
    ({"homography": (1.0, 0.0)}, "--homography: expected 9"),
    ({"homography": (0.0,) * 9}, "singular"),
    ({"thermal_topic": "thermal"}, "absolute topic"),
    ({"rgb_topic": "/thermal/image_raw"}, "both /thermal/image_raw"),
])
def test_bad_options(opts: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        MakeBagOptions(**opts)


def test_missing_folders(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or folder"):
        make_bag(tmp_path / "ir", tmp_path / "vis", tmp_path / "x.mcap")
    assert not (tmp_path / "x.mcap").exists()


def test_humble_typestore(tmp_path: Path, pairs: tuple[Path, Path]) -> None:
    make_bag(*pairs, tmp_path / "h", MakeBagOptions(distro="humble", storage="sqlite3"))
    with BagReader(tmp_path / "h", distro="humble") as bag:
        m = next(bag.messages(["/thermal/image_raw"]))
        assert m.decode()[1] == "mono8"
    with pytest.raises(ConfigError, match="--distro"):
        MakeBagOptions(distro="iron")
