"""Watchdog, rates, drops and diagnostics levels of the node, without ROS."""

from __future__ import annotations

import threading

import pytest

from ivfusion_ros.ros import health


def test_rate_meter() -> None:
    m = health.RateMeter(window=2.0)
    assert m.rate(0.0) == 0.0
    for i in range(21):
        m.tick(i * 0.1)  # 10 Hz for 2 s
    assert m.rate(2.0) == pytest.approx(10.0, rel=0.05)
    assert m.rate(10.0) == 0.0  # everything left the window


def test_drop_counter_is_thread_safe() -> None:
    d = health.DropCounter()

    def work() -> None:
        for _ in range(1000):
            d.add("superseded")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    d.add("bad_encoding", 2)
    assert d.snapshot() == {"superseded": 4000, "bad_encoding": 2} and d.total == 4002


def test_stream_monitor_watchdog() -> None:
    mon = health.StreamMonitor("thermal", started=100.0)
    assert mon.alive(100.5, timeout=1.0) and not mon.alive(101.5, timeout=1.0)  # never delivered
    mon.tick(101.6)
    assert mon.alive(102.0, 1.0) and mon.count == 1
    assert mon.silent_for(103.0) == pytest.approx(1.4)
    assert not mon.alive(103.0, 1.0)


@pytest.mark.parametrize(
    ("thermal", "rgb", "degraded", "mode"),
    [
        (True, True, "single", "fused"),
        (False, True, "single", "rgb_only"),
        (True, False, "single", "thermal_only"),
        (False, False, "single", "paused"),
        (False, True, "pause", "paused"),
        (True, True, "pause", "fused"),
    ],
)
def test_decide_mode(thermal: bool, rgb: bool, degraded: str, mode: str) -> None:
    assert health.decide_mode(thermal, rgb, degraded) == mode


def test_stream_status_levels() -> None:
    mon = health.StreamMonitor("rgb", started=0.0)
    s = health.stream_status("n: rgb camera", mon, 5.0, 1.0, "/camera/image_raw")
    assert s.level == health.ERROR and "no messages received" in s.message
    assert ("topic", "/camera/image_raw") in s.values
    for i in range(10):
        mon.tick(5.0 + i * 0.1)
    assert health.stream_status("n", mon, 6.0, 1.0).level == health.OK
    s = health.stream_status("n", mon, 8.0, 1.0)
    assert s.level == health.WARN and "silent for 2.1 s" in s.message


def test_pipeline_status_levels() -> None:
    kw = {"fused_rate": 10.0, "latency_ms": 20.0, "end_to_end_ms": 30.0, "frames_fused": 5}
    ok = health.pipeline_status("f", mode="fused", drops={"superseded": 3}, **kw)
    assert ok.level == health.OK and ("dropped.superseded", "3") in ok.values
    assert ("frames_dropped", "3") in ok.values
    assert health.pipeline_status("f", mode="rgb_only", drops={}, **kw).level == health.WARN
    assert health.pipeline_status("f", mode="paused", drops={}, **kw).level == health.ERROR
    bad = health.pipeline_status("f", mode="fused", drops={}, last_error="size_mismatch: ...", **kw)
    assert bad.level == health.WARN and "bad input" in bad.message
