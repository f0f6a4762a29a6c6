"""Approximate-time synchronisation of N message streams (no rclpy).

Same policy as ``message_filters.ApproximateTimeSynchronizer`` (ROS 2, Python), used when that
package is not installed:

- one queue per topic, keyed by header stamp (a repeated stamp replaces the queued message),
  holding at most ``queue_size`` messages (the oldest stamp is dropped first);
- on each arrival, every other topic contributes its queued messages whose stamp is within
  ``slop`` of the new message's stamp (``|dt| <= slop``); a set of one message per topic that
  includes the new message is emitted when its spread ``max - min`` is strictly below ``slop``;
- the emitted messages leave their queues; the others stay until they age out.

Where message_filters takes the first qualifying set in its search order (each topic's stamps
sorted by distance to the new stamp), this picks the qualifying set with the smallest spread
(ties: the smallest summed distance to the new stamp). For two topics both choose the same set.
"""

from __future__ import annotations

import threading
from typing import Callable, Sequence

from selfocc_ros.conversions import stamp_to_ns


class ApproximateTimeSync:
    """Approximate-time synchroniser over ``num_topics`` inputs.

    Example:
        >>> out = []
        >>> sync = ApproximateTimeSync(2, queue_size=5, slop=0.05, callback=lambda *m: out.append(m))
        >>> sync.add(0, "a", stamp_ns=1_000_000_000)
        >>> sync.add(1, "b", stamp_ns=1_020_000_000)
        ('a', 'b')
        >>> out
        [('a', 'b')]
    """

    def __init__(self, num_topics: int, queue_size: int, slop: float, callback: Callable[..., None] | None = None):
        if num_topics < 1:
            raise ValueError(f"ApproximateTimeSync: num_topics must be >= 1, got {num_topics}")
        if queue_size < 1:
            raise ValueError(f"ApproximateTimeSync: queue_size must be >= 1, got {queue_size}")
        if not slop >= 0:
            raise ValueError(f"ApproximateTimeSync: slop must be >= 0 s, got {slop}")
        self.queue_size = int(queue_size)
        self.slop_ns = int(round(slop * 1e9))
        self.queues: list[dict[int, object]] = [{} for _ in range(num_topics)]
        self.callbacks: list[Callable[..., None]] = [callback] if callback else []
        self._lock = threading.Lock()

    def registerCallback(self, cb: Callable[..., None]) -> None:  # noqa: N802 (message_filters name)
        self.callbacks.append(cb)

    def add(self, index: int, msg, stamp_ns: int | None = None) -> tuple | None:
        """Queue ``msg`` from topic ``index``; returns (and signals) the emitted set or None."""
        if stamp_ns is None:
            stamp_ns = stamp_to_ns(msg.header.stamp)
        with self._lock:
            found = self._add_locked(index, msg, int(stamp_ns))
        if found is not None:
            for cb in self.callbacks:
                cb(*found)
        return found

    def _add_locked(self, index: int, msg, stamp: int):
        queue = self.queues[index]
        queue[stamp] = msg
        while len(queue) > self.queue_size:
            del queue[min(queue)]
        if stamp not in queue:  # the new message was the oldest and got dropped
            return None
        slop = self.slop_ns
        candidates: list[list[int]] = []
        for i, q in enumerate(self.queues):
            if i == index:
                candidates.append([stamp])
                continue
            near = sorted((s for s in q if abs(s - stamp) <= slop), key=lambda s: (abs(s - stamp), s))
            if not near:
                return None
            candidates.append(near)
        best = _min_spread_choice(candidates, stamp)
        if best is None or max(best) - min(best) >= slop:  # strict, as in message_filters
            return None
        msgs = tuple(q.pop(s) for q, s in zip(self.queues, best))
        return msgs


def _min_spread_choice(candidates: Sequence[Sequence[int]], pivot: int) -> list[int] | None:
    """One stamp per list minimising max - min (ties: sum |s - pivot|). O(T * C^2) for T lists of C stamps."""
    best, best_key = None, None
    lows = sorted({s for c in candidates for s in c if s <= pivot})
    for low in lows:
        choice = []
        for c in candidates:
            ok = [s for s in c if s >= low]
            if not ok:
                break
            choice.append(min(ok, key=lambda s: (s, abs(s - pivot))))
        else:
            key = (max(choice) - min(choice), sum(abs(s - pivot) for s in choice))
            if best_key is None or key < best_key:
                best, best_key = choice, key
    return best
