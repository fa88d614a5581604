"""Offline pairing of thermal and RGB messages by stamp, as the ROS node pairs them.

The node pairs its two cameras with ``message_filters.ApproximateTimeSynchronizer`` (the Python
implementation of ROS 2 ``message_filters``) configured by ``sync.slop`` and ``sync.queue_size``.
:class:`ApproxTimePairer` reproduces that algorithm message for message, so a bag replayed offline pairs
exactly the messages the node would pair when it receives them in the same order:

* one queue per topic, a dict keyed by stamp (nanoseconds). A message whose stamp is already queued on its
  topic replaces the queued one (dropped here as ``duplicate_stamp``);
* a queue longer than ``queue_size`` loses its *smallest stamp* (not its oldest arrival), possibly the
  message just added (``queue_overflow``);
* pairing is only attempted when a message arrives: among the queued messages of the other topic(s) with
  ``|stamp - new stamp| <= slop``, taken closest first (ties in queue order), the first combination whose
  stamps span *strictly less* than ``slop`` is emitted and removed from the queues; with two topics that is
  the closest partner, if it is closer than ``slop``. ``slop = 0`` therefore never pairs anything, as in
  message_filters;
* a message never paired stays queued until it is pushed out (``queue_overflow``) or the stream ends
  (:meth:`ApproxTimePairer.flush`: ``unpaired``).

``slop`` becomes integer nanoseconds as ``rclpy.duration.Duration(seconds=slop)`` computes them
(``int(slop * 1e9)``), and all comparisons are on integer nanoseconds, as in message_filters.

Everything here is plain Python on integer stamps; items are opaque (messages, indices, records).
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ivfusion_ros.config import SyncConfig
from ivfusion_ros.errors import ConfigError

__all__ = [
    "DROP_REASONS",
    "DUPLICATE_STAMP",
    "QUEUE_OVERFLOW",
    "RGB",
    "THERMAL",
    "UNPAIRED",
    "ApproxTimePairer",
    "Drop",
    "Pair",
    "PairingResult",
    "pair_sorted",
    "pair_stream",
    "seconds_to_ns",
]

T = TypeVar("T")

#: Topic indices of the two cameras (the node's synchronizer order: thermal first, then RGB).
THERMAL, RGB = 0, 1

#: A queued message was replaced by a later one with the same stamp on the same topic.
DUPLICATE_STAMP = "duplicate_stamp"
#: The topic's queue exceeded ``queue_size`` and the message had the smallest stamp in it.
QUEUE_OVERFLOW = "queue_overflow"
#: The message was still waiting for a partner when the stream ended.
UNPAIRED = "unpaired"
DROP_REASONS = (DUPLICATE_STAMP, QUEUE_OVERFLOW, UNPAIRED)

_NS = 1_000_000_000


def seconds_to_ns(seconds: float) -> int:
    """Seconds -> integer nanoseconds, truncated as ``rclpy.duration.Duration(seconds=...)`` does."""
    return int(seconds * _NS)


@dataclass(frozen=True)
class Pair(Generic[T]):
    """One synchronised set: ``stamps[i]`` (ns) and ``items[i]`` of topic ``i``."""

    stamps: tuple[int, ...]
    items: tuple[T, ...]

    @property
    def skew_ns(self) -> int:
        """Stamp of topic 0 minus stamp of topic 1 (thermal - RGB), nanoseconds."""
        return self.stamps[0] - self.stamps[1]


@dataclass(frozen=True)
class Drop(Generic[T]):
    """A message that left the synchroniser without a partner."""

    topic: int
    stamp: int
    item: T
    reason: str  # one of DROP_REASONS


class ApproxTimePairer(Generic[T]):
    """Streaming approximate-time pairing with ``message_filters.ApproximateTimeSynchronizer`` semantics.

    Args:
        slop: largest stamp difference in seconds; pairs must differ by strictly less (see the module doc).
        queue_size: messages held per topic while waiting for a partner (>= 1).
        n_topics: number of synchronised topics (2: thermal and RGB).
        on_drop: called with every :class:`Drop` as it happens (besides the counters).

    Attributes:
        received: messages added, per topic.
        pairs: pairs emitted.
        dropped: drops by reason (all topics).
        dropped_per_topic: drops by reason, per topic.

    Example:
        >>> p = ApproxTimePairer(slop=0.05, queue_size=10)
        >>> p.add(THERMAL, 1_000_000_000, "t0")
        []
        >>> [pair.items for pair in p.add(RGB, 1_020_000_000, "r0")]
        [('t0', 'r0')]
    """

    def __init__(self, slop: float, queue_size: int, n_topics: int = 2,
                 on_drop: Callable[[Drop[T]], None] | None = None) -> None:
        if not slop >= 0.0:  # also rejects NaN
            raise ConfigError(f"sync.slop: expected a number >= 0 seconds, got {slop!r}")
        if int(queue_size) != queue_size or queue_size < 1:
            raise ConfigError(f"sync.queue_size: expected an integer >= 1, got {queue_size!r}")
        if n_topics < 2:
            raise ValueError(f"ApproxTimePairer needs at least two topics, got n_topics={n_topics}")
        self.slop = float(slop)
        self.slop_ns = seconds_to_ns(slop)
        self.queue_size = int(queue_size)
        self.n_topics = n_topics
        self.on_drop = on_drop
        # per topic: stamp (ns) -> item, in insertion order like message_filters' dicts
        self._queues: list[dict[int, T]] = [{} for _ in range(n_topics)]
        self.received = [0] * n_topics
        self.pairs = 0
        self.dropped: Counter[str] = Counter()
        self.dropped_per_topic: list[Counter[str]] = [Counter() for _ in range(n_topics)]

    @classmethod
    def from_config(cls, sync: SyncConfig, on_drop: Callable[[Drop[T]], None] | None = None) -> ApproxTimePairer[T]:
        """The node's pairing: ``sync.slop`` and ``sync.queue_size`` of the shared configuration."""
        return cls(sync.slop, sync.queue_size, on_drop=on_drop)

    # ----------------------------------------------------------------------------------------- state
    @property
    def pending(self) -> int:
        """Messages queued and still waiting for a partner."""
        return sum(len(q) for q in self._queues)

    def queued(self, topic: int) -> list[int]:
        """Stamps (ns) queued on ``topic``, in queue order."""
        return list(self._queues[topic])

    def _drop(self, topic: int, stamp: int, item: T, reason: str) -> Drop[T]:
        drop = Drop(topic, stamp, item, reason)
        self.dropped[reason] += 1
        self.dropped_per_topic[topic][reason] += 1
        if self.on_drop is not None:
            self.on_drop(drop)
        return drop

    # ------------------------------------------------------------------------------------------ feed
    def add(self, topic: int, stamp: int, item: T) -> list[Pair[T]]:
        """Add one message as it arrives; return the pairs it completes (zero or one).

        Args:
            topic: topic index, ``0 <= topic < n_topics`` (:data:`THERMAL` or :data:`RGB`).
            stamp: header stamp in integer nanoseconds.
            item: anything; returned in the pair or the drop.
        """
        if not 0 <= topic < self.n_topics:
            raise ValueError(f"topic index {topic} out of range 0..{self.n_topics - 1}")
        stamp = int(stamp)
        self.received[topic] += 1
        queues = self._queues
        mine = queues[topic]
        if stamp in mine:
            self._drop(topic, stamp, mine[stamp], DUPLICATE_STAMP)
        mine[stamp] = item
        while len(mine) > self.queue_size:
            oldest = min(mine)
            self._drop(topic, oldest, mine.pop(oldest), QUEUE_OVERFLOW)

        # candidates of every other topic within slop, closest first (stable: ties keep queue order)
        candidates: list[list[int]] = []
        for j, queue in enumerate(queues):
            if j == topic:
                continue
            near = [(s, abs(s - stamp)) for s in queue if abs(s - stamp) <= self.slop_ns]
            if not near:
                return []
            near.sort(key=lambda sd: sd[1])
            candidates.append([s for s, _ in near])
        for combo in itertools.product(*candidates):
            stamps = list(combo)
            stamps.insert(topic, stamp)
            if max(stamps) - min(stamps) < self.slop_ns and all(
                    t in q for q, t in zip(queues, stamps)):
                items = tuple(q.pop(t) for q, t in zip(queues, stamps))
                self.pairs += 1
                return [Pair(tuple(stamps), items)]
        return []

    def flush(self) -> list[Drop[T]]:
        """End of stream: every message still queued is dropped as ``unpaired`` (in topic, then queue order)."""
        out = []
        for topic, queue in enumerate(self._queues):
            for stamp, item in queue.items():
                out.append(self._drop(topic, stamp, item, UNPAIRED))
            queue.clear()
        return out

    def counts(self) -> dict:
        """JSON-ready counters: received per topic, pairs, drops by reason (total and per topic)."""
        return {
            "received": list(self.received),
            "pairs": self.pairs,
            "pending": self.pending,
            "dropped": dict(sorted(self.dropped.items())),
            "dropped_per_topic": [dict(sorted(c.items())) for c in self.dropped_per_topic],
        }


@dataclass
class PairingResult(Generic[T]):
    """Everything a whole stream produced: the pairs in emission order and every drop."""

    pairs: list[Pair[T]] = field(default_factory=list)
    drops: list[Drop[T]] = field(default_factory=list)


def pair_stream(events: Iterable[tuple[int, int, T]], slop: float, queue_size: int,
                n_topics: int = 2) -> PairingResult[T]:
    """Pair a whole stream of ``(topic, stamp_ns, item)`` given in *arrival* order; flushes at the end.

    Every input event ends up in exactly one pair or one drop.
    """
    result: PairingResult[T] = PairingResult()
    pairer: ApproxTimePairer[T] = ApproxTimePairer(slop, queue_size, n_topics, on_drop=result.drops.append)
    for topic, stamp, item in events:
        result.pairs.extend(pairer.add(topic, stamp, item))
    pairer.flush()
    return result


def pair_sorted(thermal: Sequence[int], rgb: Sequence[int], slop: float,
                queue_size: int) -> PairingResult[int]:
    """Pair two stamp sequences (ns), each sorted, as if each message arrived at its stamp.

    The streams are merged by stamp (a thermal message first on equal stamps); the items of the result are
    indices into ``thermal`` and ``rgb``.
    """
    merged = heapq.merge(((s, THERMAL, i) for i, s in enumerate(thermal)),
                         ((s, RGB, i) for i, s in enumerate(rgb)))
    return pair_stream(((topic, stamp, i) for stamp, topic, i in merged), slop, queue_size)
