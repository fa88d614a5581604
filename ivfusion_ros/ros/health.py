"""Stream health of the node, as plain Python: rates, drops, the camera watchdog and diagnostics levels.

Nothing here imports ROS, so the watchdog and the OK/WARN/ERROR rules are unit-tested without it; the node
feeds it monotonic times and copies :class:`DiagStatus` into ``diagnostic_msgs/DiagnosticStatus``.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass, field

__all__ = ["ERROR", "OK", "STALE", "WARN", "DiagStatus", "DropCounter", "RateMeter", "StreamMonitor", "decide_mode"]

#: Diagnostic levels, as in ``diagnostic_msgs/DiagnosticStatus``.
OK, WARN, ERROR, STALE = 0, 1, 2, 3


class RateMeter:
    """Events per second over a sliding window of the last ``window`` seconds."""

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self._t: deque[float] = deque()

    def tick(self, now: float) -> None:
        self._t.append(now)
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._t and now - self._t[0] > self.window:
            self._t.popleft()

    def rate(self, now: float) -> float:
        """Hz over the window; 0 with fewer than two events."""
        self._trim(now)
        if len(self._t) < 2:
            return 0.0
        span = max(now - self._t[0], self._t[-1] - self._t[0])
        return (len(self._t) - 1) / span if span > 0 else 0.0


class DropCounter:
    """Thread-safe counts of dropped messages or pairs by reason (``superseded``, ``bad_encoding``, ...)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self._counts[reason] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())


@dataclass
class StreamMonitor:
    """Arrivals of one camera stream: count, rate and the watchdog.

    A stream that has never delivered counts as silent once ``timeout`` has passed since ``started``.
    """

    name: str
    started: float
    count: int = 0
    last: float | None = None
    meter: RateMeter = field(default_factory=RateMeter)

    def tick(self, now: float) -> None:
        self.count += 1
        self.last = now
        self.meter.tick(now)

    def silent_for(self, now: float) -> float:
        """Seconds since the last message (since ``started`` when none came yet)."""
        return now - (self.last if self.last is not None else self.started)

    def alive(self, now: float, timeout: float) -> bool:
        return self.silent_for(now) <= timeout

    def rate(self, now: float) -> float:
        return self.meter.rate(now)


def decide_mode(thermal_alive: bool, rgb_alive: bool, degraded_mode: str) -> str:
    """The node's mode from the two watchdogs and ``node.degraded_mode`` (``single`` or ``pause``).

    Returns one of ``fused``, ``rgb_only``, ``thermal_only``, ``paused`` (both silent, or one silent with
    ``degraded_mode=pause``).
    """
    if thermal_alive and rgb_alive:
        return "fused"
    if not thermal_alive and not rgb_alive:
        return "paused"
    if degraded_mode == "pause":
        return "paused"
    return "rgb_only" if rgb_alive else "thermal_only"


@dataclass
class DiagStatus:
    """One ``diagnostic_msgs/DiagnosticStatus``: level, name, message and key/value pairs."""

    level: int
    name: str
    message: str
    values: list[tuple[str, str]] = field(default_factory=list)


def stream_status(name: str, mon: StreamMonitor, now: float, timeout: float, hardware_id: str = "") -> DiagStatus:
    """Health of one camera: OK while it delivers, WARN once silent for longer than ``timeout``.

    A camera that never delivered is an ERROR (wrong topic or QoS, most likely).
    """
    silent = mon.silent_for(now)
    values = [("topic", hardware_id), ("messages", str(mon.count)), ("rate_hz", f"{mon.rate(now):.2f}"),
              ("silent_s", f"{silent:.2f}")]
    if mon.last is None and silent > timeout:
        return DiagStatus(ERROR, name, f"no messages received in {silent:.1f} s", values)
    if silent > timeout:
        return DiagStatus(WARN, name, f"silent for {silent:.1f} s (timeout {timeout:g} s)", values)
    return DiagStatus(OK, name, f"{mon.rate(now):.1f} Hz", values)


def pipeline_status(name: str, *, mode: str, fused_rate: float, latency_ms: float, end_to_end_ms: float,
                    frames_fused: int, drops: dict[str, int], last_error: str = "",
                    values: list[tuple[str, str]] | None = None) -> DiagStatus:
    """Health of the fusion itself: OK when fusing, WARN when degraded or when frames were dropped for bad
    input recently (``last_error``), ERROR when paused."""
    kv = [("mode", mode), ("fused_rate_hz", f"{fused_rate:.2f}"), ("latency_ms", f"{latency_ms:.1f}"),
          ("end_to_end_ms", f"{end_to_end_ms:.1f}"), ("frames_fused", str(frames_fused)),
          ("frames_dropped", str(sum(drops.values())))]
    kv += [(f"dropped.{k}", str(v)) for k, v in sorted(drops.items())]
    kv += values or []
    if last_error:
        kv.append(("last_error", last_error))
    if mode == "paused":
        return DiagStatus(ERROR, name, "paused: camera input missing", kv)
    if mode != "fused":
        return DiagStatus(WARN, name, f"degraded: {mode}", kv)
    if last_error:
        return DiagStatus(WARN, name, f"fusing at {fused_rate:.1f} Hz; bad input: {last_error}", kv)
    return DiagStatus(OK, name, f"fusing at {fused_rate:.1f} Hz", kv)
