"""make-bag -> replay round trips: every input message accounted for, output bags readable with the right types
and stamps, the report's keys, errors for bags without the topics and for corrupt bags."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ivfusion_ros.cli.main import app
from ivfusion_ros.config import PipelineConfig, update_config
from ivfusion_ros.detect.base import Detections, Detector
from ivfusion_ros.io.bag import BagError, BagReader, BagWriter, image_msg
from ivfusion_ros.io.make_bag import MakeBagOptions, make_bag
from ivfusion_ros.pipeline import Pipeline
from ivfusion_ros.replay import REPORT_SCHEMA, ReplayOptions, replay_bag

runner = CliRunner()
N = 6
W, H = 64, 48
FAST = ["--detector", "none", "--set", "runtime.device=cpu", "--set", "runtime.threads=1"]
FRAME_KEYS = {"index", "stamp", "stamp_ns", "thermal_stamp_ns", "rgb_stamp_ns", "sync_skew", "mode", "variant",
              "regime", "illumination", "glare_fraction", "num_detections", "detections", "timings_ms", "latency_ms"}


def _invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def _read_topics(path: Path) -> dict[str, list]:
    """topic -> [(log_ns, message)] of every message in the bag."""
    out: dict[str, list] = {}
    with BagReader(path) as bag:
        r = bag.reader
        for conn, log_ns, raw in r.messages():
            out.setdefault(conn.topic, []).append((log_ns, r.deserialize(raw, conn.msgtype)))
    return out


def _check_accounting(report: dict) -> None:
    for cam, acc in report["accounting"].items():
        assert acc["received"] == acc["fused"] + sum(acc["dropped"].values()), cam
    assert report["totals"]["dropped_messages"] == len(report["dropped"]) == sum(report["drops"].values())


@pytest.mark.parametrize("fmt", ["mcap", "sqlite3"])
def test_cli_round_trip(tmp_path: Path, pairs: tuple[Path, Path], fast_cfg: PipelineConfig, fmt: str) -> None:
    src = tmp_path / ("in.mcap" if fmt == "mcap" else "in_bag")
    res = _invoke("make-bag", "--ir", pairs[0], "--vis", pairs[1], "--out", src, "--format", fmt, "--jitter", "0.01",
                  "--seed", "1")
    assert res.exit_code == 0, res.output
    out = tmp_path / ("out.mcap" if fmt == "mcap" else "out_bag")
    res = _invoke("replay", src, "--out", out, "--report", tmp_path / "rep", "--format", fmt, *FAST)
    assert res.exit_code == 0, res.output
    assert "6 pair(s), 6 fused" in res.output

    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["schema"] == REPORT_SCHEMA
    assert {"bag", "storage", "topics", "msgtypes", "output", "sync", "pipeline", "config", "versions", "totals",
            "drops", "accounting", "latency_ms", "frames", "dropped"} <= set(report)
    assert report["totals"]["messages"] == {"thermal": N, "rgb": N}
    assert report["totals"]["pairs"] == report["totals"]["fused"] == N
    assert report["drops"] == {} and report["dropped"] == []
    _check_accounting(report)
    assert report["sync"] == {"slop": 0.05, "queue_size": 10}
    assert report["config"]["detector.type"] == "none"
    assert set(report["latency_ms"]) >= {"fuse", "total"}
    frames = report["frames"]
    assert [f["index"] for f in frames] == list(range(N))
    assert all(set(f) == FRAME_KEYS for f in frames)
    assert all(abs(f["sync_skew"]) <= 0.02 for f in frames)

    # the stamps in the report are the input stamps
    with BagReader(src) as bag:
        rgb_in = [m.stamp_ns for m in bag.messages(["/camera/image_raw"])]
        th_in = [m.stamp_ns for m in bag.messages(["/thermal/image_raw"])]
    assert [f["rgb_stamp_ns"] for f in frames] == [f["stamp_ns"] for f in frames] == rgb_in
    assert [f["thermal_stamp_ns"] for f in frames] == th_in

    # the output bag: the node's topics and types, stamped like the input pairs
    with BagReader(out) as bag:
        assert bag.storage == fmt
        assert {t: i.msgtype for t, i in bag.topics.items()} == {
            "/fused/image": "sensor_msgs/msg/Image", "/detections": "vision_msgs/msg/Detection2DArray",
            "/status": "ivfusion_ros/msg/FusionStatus"}
    topics = _read_topics(out)
    fused = [m for _, m in topics["/fused/image"]]
    assert [(m.header.stamp.sec * 10**9 + m.header.stamp.nanosec) for m in fused] == rgb_in
    assert {(m.width, m.height, m.encoding, m.step, m.header.frame_id) for m in fused} == {
        (W, H, "rgb8", 3 * W, "camera")}
    dets = [m for _, m in topics["/detections"]]
    assert [d.header.stamp for d in dets] == [m.header.stamp for m in fused]
    assert all(len(d.detections) == 0 for d in dets)  # detector none
    status = [m for _, m in topics["/status"]]
    assert [s.frames_fused for s in status] == list(range(1, N + 1))
    assert {(s.mode, s.variant, s.detections) for s in status} == {("fused", "adaptive", 0)}
    assert list(status[0].stage_names) == list(frames[0]["timings_ms"])
    np.testing.assert_allclose([s.sync_skew for s in status], [abs(f["sync_skew"]) for f in frames], atol=1e-6)
    assert [s.regime for s in status] == [f["regime"] for f in frames]
    # outputs are logged when the pair is complete: at the later of its two input messages
    assert [t for t, _ in topics["/fused/image"]] == [max(a, b) for a, b in zip(th_in, rgb_in)]
    assert [t for t, _ in topics["/status"]] == [t for t, _ in topics["/fused/image"]]


class _BoxDetector(Detector):
    """Two fixed boxes on every frame."""

    name = "boxes"

    @property
    def class_names(self) -> tuple[str, ...]:
        return ("person", "car")

    def detect(self, rgb: np.ndarray) -> Detections:
        return Detections(np.array([[2, 4, 20, 30], [30, 10, 60, 40]], np.float32), np.array([0.9, 0.5], np.float32),
                          np.array([0, 1], np.int64), self.class_names)


def test_mono16_compressed_inputs_and_detections(tmp_path: Path, pairs: tuple[Path, Path],
                                                 fast_cfg: PipelineConfig) -> None:
    src = tmp_path / "in.mcap"
    summary = make_bag(*pairs, src, MakeBagOptions(thermal_encoding="mono16", compressed=True))
    pipeline = Pipeline(fast_cfg, detector=_BoxDetector())
    report = replay_bag(src, fast_cfg, tmp_path / "out.mcap", tmp_path / "rep", pipeline=pipeline)
    d = report.to_dict()
    assert d["topics"] == {"thermal": "/thermal/image_raw/compressed", "rgb": "/camera/image_raw/compressed"}
    assert d["msgtypes"]["thermal"] == "sensor_msgs/msg/CompressedImage"
    assert d["totals"]["fused"] == N and d["drops"] == {}
    assert [f["stamp_ns"] for f in d["frames"]] == summary.rgb_stamps_ns
    assert d["frames"][0]["detections"][1] == {"box": [30.0, 10.0, 60.0, 40.0], "score": 0.5, "class_id": 1,
                                               "class_name": "car"}
    topics = _read_topics(tmp_path / "out.mcap")
    arr = topics["/detections"][0][1]
    assert len(arr.detections) == 2
    car = arr.detections[1]
    assert (car.bbox.center.position.x, car.bbox.center.position.y, car.bbox.size_x, car.bbox.size_y) == (
        45.0, 25.0, 30.0, 30.0)
    assert (car.results[0].hypothesis.class_id, car.id) == ("car", "1")
    assert car.results[0].hypothesis.score == pytest.approx(0.5)
    assert topics["/status"][0][1].detections == 2
    # class ids as indices when the node is configured so
    cfg = update_config(fast_cfg, **{"node.class_id_format": "index"})
    replay_bag(src, cfg, tmp_path / "idx.mcap", pipeline=Pipeline(cfg, detector=_BoxDetector()))
    arr = _read_topics(tmp_path / "idx.mcap")["/detections"][0][1]
    assert [x.results[0].hypothesis.class_id for x in arr.detections] == ["0", "1"]


def test_replay_is_deterministic(tmp_path: Path, pairs: tuple[Path, Path], fast_cfg: PipelineConfig) -> None:
    src = tmp_path / "in.mcap"
    make_bag(*pairs, src, MakeBagOptions(thermal_encoding="mono16"))
    outs = []
    for name in ("a.mcap", "b.mcap"):
        replay_bag(src, fast_cfg, tmp_path / name)
        outs.append([bytes(m.data) for _, m in _read_topics(tmp_path / name)["/fused/image"]])
    assert outs[0] == outs[1] and len(outs[0]) == N


def test_every_message_is_accounted_for(tmp_path: Path, fast_cfg: PipelineConfig) -> None:
    """Unpaired, malformed and undecodable messages are dropped with reasons; the rest is fused."""
    store_path = tmp_path / "mixed.mcap"
    t0 = 1_700_000_000 * 10**9
    gray = np.full((H, W), 90, np.uint8)
    rgb = np.full((H, W, 3), 40, np.uint8)
    with BagWriter(store_path) as bag:
        store = bag.store
        for i in range(8):
            t = t0 + i * 100_000_000
            bag.write("/thermal/image_raw", image_msg(store, gray, "mono8", 0 if i == 3 else t, "thermal"), t)
            if i < 6:
                msg = image_msg(store, rgb, "rgb8", t + 5_000_000, "camera")
                if i == 2:
                    msg.encoding = "yuv422"  # the node cannot read it
                bag.write("/camera/image_raw", msg, t + 5_000_000)
        bag.write_raw("/thermal/image_raw", b"\x00\x01garbage", t0 + 900_000_000)
        bag.write("/other", image_msg(store, gray, "mono8", t0), t0 + 950_000_000)  # not replayed
    report = replay_bag(store_path, fast_cfg, None, tmp_path / "rep")
    d = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert d["totals"]["messages"] == {"thermal": 9, "rgb": 6}
    _check_accounting(d)
    # fused: pairs 0, 1, 3 (thermal stamp 0 -> log time), 4, 5; rgb 2 is malformed so thermal 2 waits in vain
    assert report.fused == 5
    assert [f["rgb_stamp_ns"] - 5_000_000 for f in d["frames"]] == [t0 + i * 100_000_000 for i in (0, 1, 3, 4, 5)]
    assert d["accounting"]["rgb"]["dropped"] == {"bad_encoding": 1}
    assert d["accounting"]["thermal"]["dropped"] == {"bad_message": 1, "unpaired": 3}
    assert d["totals"]["stamp_sources"] == {"header": 13, "log_time": 2}
    unpaired = sorted(x["stamp_ns"] for x in d["dropped"] if x["reason"] == "unpaired")
    assert unpaired == [t0 + i * 100_000_000 for i in (2, 6, 7)]
    bad = next(x for x in d["dropped"] if x["reason"] == "bad_encoding")
    assert bad["camera"] == "rgb" and "yuv422" in bad["detail"]


def test_options_topics_and_inputs(tmp_path: Path, pairs: tuple[Path, Path], fast_cfg: PipelineConfig) -> None:
    src = tmp_path / "in_bag"
    make_bag(*pairs, src, MakeBagOptions(thermal_topic="/flir/raw", rgb_topic="/cam/rgb", storage="sqlite3"))
    out = tmp_path / "out"
    opts = ReplayOptions(thermal_topic="/flir/raw", rgb_topic="/cam/rgb", namespace="front", write_inputs=True)
    replay_bag(src, fast_cfg, out, None, opts)
    topics = _read_topics(out)
    assert set(topics) == {"/front/fused/image", "/front/detections", "/front/status", "/flir/raw", "/cam/rgb"}
    assert len(topics["/flir/raw"]) == len(topics["/cam/rgb"]) == N
    with pytest.raises(BagError, match="exists already"):
        replay_bag(src, fast_cfg, out, None, opts)
    replay_bag(src, fast_cfg, out, None, ReplayOptions(thermal_topic="/flir/raw", rgb_topic="/cam/rgb",
                                                        overwrite=True))
    assert "/fused/image" in _read_topics(out)


def test_nothing_pairs_beyond_slop(tmp_path: Path, pairs: tuple[Path, Path], fast_cfg: PipelineConfig) -> None:
    src = tmp_path / "in.mcap"
    make_bag(*pairs, src, MakeBagOptions(jitter=0.04, seed=2))
    res = _invoke("replay", src, "--report", tmp_path / "rep", *FAST, "--set", "sync.slop=0.001")
    assert res.exit_code == 1
    assert "could be fused" in res.output
    d = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert d["totals"]["fused"] == 0 and d["drops"] == {"unpaired": 2 * N}
    _check_accounting(d)


def test_bag_without_the_topics_lists_what_it_has(tmp_path: Path, pairs: tuple[Path, Path],
                                                  fast_cfg: PipelineConfig) -> None:
    src = tmp_path / "in.mcap"
    make_bag(*pairs, src)
    res = _invoke("replay", src, "--out", tmp_path / "o.mcap", "--thermal-topic", "/flir/image_raw", *FAST)
    assert res.exit_code == 1
    text = " ".join(res.output.split())
    assert "has no thermal topic /flir/image_raw" in text
    assert "/camera/image_raw (sensor_msgs/msg/Image, 6 msgs), /thermal/image_raw (sensor_msgs/msg/Image, 6 msgs)" \
        in text
    assert not (tmp_path / "o.mcap").exists()


def test_corrupt_and_missing_bags(tmp_path: Path, fast_cfg: PipelineConfig) -> None:
    (tmp_path / "junk.mcap").write_bytes(b"\x89MCAP0\r\n" + b"\x00" * 64)
    res = _invoke("replay", tmp_path / "junk.mcap", "--report", tmp_path / "rep", *FAST)
    assert res.exit_code == 1
    assert "cannot read bag" in res.output and "junk.mcap" in res.output
    res = _invoke("replay", tmp_path / "nope", "--report", tmp_path / "rep", *FAST)
    assert res.exit_code == 1 and "no such bag" in res.output
    res = _invoke("replay", tmp_path / "junk.mcap", *FAST)
    assert res.exit_code == 1 and "--out" in res.output and "--report" in res.output


def test_make_bag_cli_options(tmp_path: Path, pairs: tuple[Path, Path]) -> None:
    res = _invoke("make-bag", "--ir", pairs[0], "--vis", pairs[1], "--out", tmp_path / "h.mcap", "--homography",
                  "1", "0", "-3.5", "0", "1", "2", "0", "0", "1", "--thermal-encoding", "mono16", "--compressed")
    assert res.exit_code == 0, res.output
    assert "registration.homography=[1, 0, 3.5, 0, 1, -2, 0, 0, 1]" in " ".join(res.output.split())
    with BagReader(tmp_path / "h.mcap") as bag:
        assert set(bag.topics) == {"/thermal/image_raw/compressed", "/camera/image_raw/compressed"}
    res = _invoke("make-bag", "--ir", pairs[0], "--vis", pairs[1], "--out", tmp_path / "x.mcap", "--rate", "5",
                  "--jitter", "0.2")
    assert res.exit_code == 1 and "--jitter" in res.output
    res = _invoke("make-bag", "--ir", pairs[0], "--vis", pairs[1], "--out", tmp_path / "h.mcap")
    assert res.exit_code == 1 and "exists already" in res.output


def test_thermal_gap_resets_the_agc_like_the_node(tmp_path: Path, pairs: tuple[Path, Path],
                                                  fast_cfg: PipelineConfig) -> None:
    src = tmp_path / "in.mcap"
    make_bag(*pairs, src, MakeBagOptions(rate=0.5))  # 2 s between frames: past node.camera_timeout (1 s)
    pipeline = Pipeline(fast_cfg)
    resets = []
    pipeline.reset = lambda: resets.append(1)  # type: ignore[method-assign]
    replay_bag(src, fast_cfg, None, tmp_path / "rep", pipeline=pipeline)
    assert len(resets) == N - 1  # before every pair but the first
    cfg = update_config(fast_cfg, **{"node.camera_timeout": 5.0})
    resets.clear()
    replay_bag(src, cfg, None, tmp_path / "rep", pipeline=pipeline)
    assert resets == []
