"""ApproxTimePairer: message_filters.ApproximateTimeSynchronizer semantics on hand-made stamp sequences.

The last test replays random streams through the real ``message_filters`` (when a ROS 2 install is on the
path) and checks that both emit the same pairs and keep the same queues.
"""

from __future__ import annotations

import numpy as np
import pytest

from ivfusion_ros.config import SyncConfig
from ivfusion_ros.core.sync import (
    DUPLICATE_STAMP,
    QUEUE_OVERFLOW,
    RGB,
    THERMAL,
    UNPAIRED,
    ApproxTimePairer,
    pair_sorted,
    pair_stream,
    seconds_to_ns,
)
from ivfusion_ros.errors import ConfigError

MS = 1_000_000  # nanoseconds per millisecond
T0 = 1_700_000_000 * 1_000_000_000  # a realistic epoch stamp: differences must stay exact


def stamps(n: int, period_ms: float, start_ms: float = 0.0) -> list[int]:
    return [T0 + round((start_ms + i * period_ms) * MS) for i in range(n)]


def pair_indices(result) -> list[tuple[int, int]]:
    return [p.items for p in result.pairs]


def check_accounting(result, n_thermal: int, n_rgb: int) -> None:
    """Every message is in exactly one pair or one drop."""
    seen = {THERMAL: [], RGB: []}
    for p in result.pairs:
        seen[THERMAL].append(p.items[0])
        seen[RGB].append(p.items[1])
    for d in result.drops:
        seen[d.topic].append(d.item)
    assert sorted(seen[THERMAL]) == list(range(n_thermal))
    assert sorted(seen[RGB]) == list(range(n_rgb))


def test_exact_stamps_pair_one_to_one() -> None:
    t = stamps(20, 100.0)
    res = pair_sorted(t, t, slop=0.05, queue_size=10)
    assert pair_indices(res) == [(i, i) for i in range(20)]
    assert res.drops == []
    assert all(p.skew_ns == 0 for p in res.pairs)


def test_jitter_within_slop_pairs_each_with_its_partner() -> None:
    rng = np.random.default_rng(0)
    t = stamps(50, 100.0)
    r = [s + int(rng.uniform(-20, 20) * MS) for s in t]
    res = pair_sorted(t, sorted(r), slop=0.05, queue_size=10)
    assert pair_indices(res) == [(i, i) for i in range(50)]
    assert res.drops == []
    assert max(abs(p.skew_ns) for p in res.pairs) < 20 * MS


def test_offset_beyond_slop_pairs_nothing() -> None:
    t = stamps(30, 100.0)
    r = stamps(30, 100.0, start_ms=60.0)  # 60 ms after (and 40 ms before the next thermal)
    res = pair_sorted(t, r, slop=0.035, queue_size=5)
    assert res.pairs == []
    check_accounting(res, 30, 30)
    reasons = {(d.topic, d.reason) for d in res.drops}
    assert reasons == {(THERMAL, QUEUE_OVERFLOW), (RGB, QUEUE_OVERFLOW), (THERMAL, UNPAIRED), (RGB, UNPAIRED)}
    # the queues keep the newest queue_size stamps: 25 overflowed and 5 left unpaired per camera
    assert sum(d.reason == UNPAIRED for d in res.drops) == 10


def test_difference_equal_to_slop_is_not_a_pair() -> None:
    # message_filters keeps candidates with |dt| <= slop but emits only sets spanning strictly less than slop
    p = ApproxTimePairer(slop=0.05, queue_size=10)
    assert p.add(THERMAL, T0, "t") == []
    assert p.add(RGB, T0 + 50 * MS, "r") == []
    assert p.add(RGB, T0 + 50 * MS - 1, "r2")[0].items == ("t", "r2")
    assert p.queued(RGB) == [T0 + 50 * MS]


def test_slop_zero_never_pairs() -> None:
    t = stamps(5, 100.0)
    res = pair_sorted(t, t, slop=0.0, queue_size=10)
    assert res.pairs == []
    assert len(res.drops) == 10


def test_closest_partner_wins() -> None:
    p = ApproxTimePairer(slop=0.05, queue_size=10)
    p.add(THERMAL, T0, "t0")
    p.add(THERMAL, T0 + 30 * MS, "t1")
    p.add(THERMAL, T0 + 60 * MS, "t2")
    (pair,) = p.add(RGB, T0 + 40 * MS, "r")
    assert pair.items == ("t1", "r")
    assert pair.stamps == (T0 + 30 * MS, T0 + 40 * MS)
    assert pair.skew_ns == -10 * MS
    assert p.queued(THERMAL) == [T0, T0 + 60 * MS]  # the others wait (t0 until pushed out or the end)


def test_thermal_at_twice_the_rgb_rate() -> None:
    t = stamps(40, 50.0)  # 20 Hz
    r = stamps(20, 100.0, start_ms=5.0)  # 10 Hz, 5 ms after every other thermal frame
    res = pair_sorted(t, r, slop=0.02, queue_size=10)
    # each RGB frame pairs with the thermal frame 5 ms before it; every second thermal frame waits in vain
    assert pair_indices(res) == [(2 * i, i) for i in range(20)]
    check_accounting(res, 40, 20)
    thermal_drops = [d for d in res.drops if d.topic == THERMAL]
    assert sorted(d.item for d in thermal_drops) == list(range(1, 40, 2))
    assert {d.reason for d in thermal_drops} == {QUEUE_OVERFLOW, UNPAIRED}
    assert not [d for d in res.drops if d.topic == RGB]


def test_gap_in_one_stream() -> None:
    t = stamps(30, 100.0)
    r_all = stamps(30, 100.0, start_ms=10.0)
    keep = [i for i in range(30) if not 10 <= i < 18]  # the RGB camera is silent for 0.8 s
    r = [r_all[i] for i in keep]
    res = pair_sorted(t, r, slop=0.05, queue_size=4)
    assert pair_indices(res) == [(i, k) for k, i in enumerate(keep)]
    check_accounting(res, 30, len(keep))
    # the thermal frames of the gap overflow the queue of 4 (or wait until the end): nothing pairs them
    assert sorted(d.item for d in res.drops) == list(range(10, 18))
    assert all(d.topic == THERMAL for d in res.drops)


def test_duplicate_stamp_replaces_the_queued_message() -> None:
    p = ApproxTimePairer(slop=0.05, queue_size=10)
    p.add(THERMAL, T0, "first")
    p.add(THERMAL, T0, "second")
    assert p.dropped == {DUPLICATE_STAMP: 1}
    (pair,) = p.add(RGB, T0 + MS, "r")
    assert pair.items == ("second", "r")


def test_overflow_drops_the_smallest_stamp_even_if_just_added() -> None:
    drops = []
    p = ApproxTimePairer(slop=0.05, queue_size=2, on_drop=drops.append)
    p.add(RGB, T0 + 1000 * MS, "a")
    p.add(RGB, T0 + 2000 * MS, "b")
    p.add(RGB, T0, "late")  # arrives late with the smallest stamp: it is the one that goes
    assert [(d.item, d.reason) for d in drops] == [("late", QUEUE_OVERFLOW)]
    # a thermal message matching the evicted stamp finds nothing
    assert p.add(THERMAL, T0, "t") == []
    assert p.queued(RGB) == [T0 + 1000 * MS, T0 + 2000 * MS]
    assert p.counts() == {"received": [1, 3], "pairs": 0, "pending": 3, "dropped": {QUEUE_OVERFLOW: 1},
                          "dropped_per_topic": [{}, {QUEUE_OVERFLOW: 1}]}


def test_pairing_happens_only_on_arrival() -> None:
    # two thermal frames queue up; the first RGB frame takes its closest one, the other thermal one is never
    # re-examined against older RGB frames: message_filters only searches when a message arrives
    events = [(RGB, T0, "r0"), (THERMAL, T0 + 60 * MS, "t0"), (THERMAL, T0 + 70 * MS, "t1"),
              (RGB, T0 + 65 * MS, "r1")]
    res = pair_stream(events, slop=0.05, queue_size=10)
    assert [p.items for p in res.pairs] == [("t0", "r1")]
    assert sorted((d.item, d.reason) for d in res.drops) == [("r0", UNPAIRED), ("t1", UNPAIRED)]


def test_from_config_and_validation() -> None:
    p = ApproxTimePairer.from_config(SyncConfig(slop=0.1, queue_size=3))
    assert (p.slop_ns, p.queue_size) == (100 * MS, 3)
    assert seconds_to_ns(0.05) == 50 * MS
    with pytest.raises(ConfigError, match="sync.slop"):
        ApproxTimePairer(-0.1, 10)
    with pytest.raises(ConfigError, match="sync.queue_size"):
        ApproxTimePairer(0.1, 0)
    with pytest.raises(ValueError, match="topic index 2"):
        ApproxTimePairer(0.1, 3).add(2, T0, None)


# ------------------------------------------------------------------------------------ against ROS 2 itself
def _random_events(rng: np.random.Generator, n: int, grid_ms: int) -> list[tuple[int, int, int]]:
    """Two cameras at different rates with jitter, losses, duplicate stamps and out-of-order arrival.

    Stamps on a ``grid_ms`` grid (when > 0) make stamp differences of exactly ``slop`` common.
    """
    events = []
    for topic, period in ((THERMAL, rng.uniform(30, 110)), (RGB, rng.uniform(30, 110))):
        k = 0
        for i in range(n):
            if rng.random() < 0.1:
                continue  # lost
            t_ms = i * period + rng.uniform(-15, 15)
            stamp = T0 + (round(t_ms / grid_ms) * grid_ms * MS if grid_ms else int(t_ms * MS))
            if rng.random() < 0.05 and events:
                stamp = events[-1][1] if events[-1][0] == topic else stamp  # a repeated stamp
            arrival = stamp + int(rng.exponential(20) * MS)
            events.append((topic, stamp, k, arrival))
            k += 1
    events.sort(key=lambda e: e[3])
    return [(topic, stamp, k) for topic, stamp, k, _ in events]


def test_same_pairs_as_ros2_message_filters() -> None:
    message_filters = pytest.importorskip("message_filters", reason="needs ROS 2 message_filters (rclpy)")
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    class Msg:
        def __init__(self, topic: int, stamp: int, k: int) -> None:
            self.header = Header(stamp=Time(sec=stamp // 1_000_000_000, nanosec=stamp % 1_000_000_000))
            self.key = (topic, k)

    rng = np.random.default_rng(7)
    total = 0
    for trial in range(60):
        slop = float(rng.choice([0.0, 0.01, 0.03, 0.05, 0.1]))
        queue_size = int(rng.integers(1, 12))
        events = _random_events(rng, 60, grid_ms=int(rng.choice([0, 5, 10])))
        inputs = [message_filters.SimpleFilter(), message_filters.SimpleFilter()]
        sync = message_filters.ApproximateTimeSynchronizer(inputs, queue_size, slop)
        ros_pairs = []
        sync.registerCallback(lambda a, b, out=ros_pairs: out.append((a.key, b.key)))
        pairer = ApproxTimePairer(slop, queue_size)
        ours = []
        for topic, stamp, k in events:
            inputs[topic].signalMessage(Msg(topic, stamp, k))
            ours += [((THERMAL, p.items[0]), (RGB, p.items[1])) for p in pairer.add(topic, stamp, k)]
        assert ours == ros_pairs, f"trial {trial}: slop {slop}, queue {queue_size}"
        total += len(ours)
        for topic in (THERMAL, RGB):
            assert pairer.queued(topic) == list(sync.queues[topic]), f"trial {trial}, topic {topic}"
    assert total > 1000  # the trials exercise pairing, not only drops
