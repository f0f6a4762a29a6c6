"""Use the ROS 2 libraries when they are installed (apt ROS on a robot), our equivalents otherwise.

- TF: ``tf2_ros.Buffer`` + ``TransformListener`` | ``tf_buffer.TransformBuffer`` + ``TfListener``
  below (needs a ``tf2_msgs`` Python package: the real one, or the stand-in built by
  tools/build_msgs.py);
- synchronisation: ``message_filters.ApproximateTimeSynchronizer`` | ``approx_sync.ApproximateTimeSync``;
- images: ``cv_bridge.CvBridge`` | ``conversions.image_to_rgb``.

``SELFOCC_FORCE_FALLBACK=1`` selects our implementations even where the ROS ones import (tests).
Only the factory functions take a node; nothing here calls rclpy.init.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Callable, Sequence

import numpy as np

from selfocc_ros import conversions as conv


def _available(module: str) -> bool:
    if os.environ.get("SELFOCC_FORCE_FALLBACK", "") not in ("", "0"):
        return False
    return _find(module)


@functools.lru_cache(maxsize=None)
def _find(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def have_tf2_ros() -> bool:
    return _available("tf2_ros")


def have_message_filters() -> bool:
    return _available("message_filters")


def have_cv_bridge() -> bool:
    return _available("cv_bridge")


def backends() -> dict[str, str]:
    """Which implementation each piece uses (logged at start-up)."""
    return {
        "tf": "tf2_ros" if have_tf2_ros() else "selfocc_ros.tf_buffer",
        "sync": "message_filters" if have_message_filters() else "selfocc_ros.approx_sync",
        "images": "cv_bridge" if have_cv_bridge() else "selfocc_ros.conversions",
    }


# ----------------------------------------------------------------------------- images

_bridge = None


def image_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image -> [H, W, 3] uint8 RGB via cv_bridge when present; ConversionError on failure."""
    global _bridge
    if msg.encoding not in conv.COLOR_ENCODINGS or not have_cv_bridge():
        return conv.image_to_rgb(msg)  # ours also produces the uniform error messages
    try:
        if _bridge is None:
            from cv_bridge import CvBridge

            _bridge = CvBridge()
        return np.ascontiguousarray(_bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8"))
    except Exception as e:  # CvBridgeError and friends
        raise conv.ConversionError(f"cv_bridge could not convert a '{msg.encoding}' image: {e}") from e


# ----------------------------------------------------------------------------- TF


class TfListener:
    """Feeds /tf and /tf_static into a TransformBuffer (what tf2_ros.TransformListener does)."""

    def __init__(self, buffer, node, tf_topic: str = "/tf", tf_static_topic: str = "/tf_static"):
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        try:
            from tf2_msgs.msg import TFMessage
        except ImportError as e:
            raise ImportError(
                "tf2_msgs is not importable: install ROS 2's tf2_msgs, or build the stand-in with "
                "`python tools/build_msgs.py` and source its environment"
            ) from e
        self.buffer = buffer
        self.rejected = 0
        self.last_rejection = ""
        dyn = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
        static = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                            durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._subs = [
            node.create_subscription(TFMessage, tf_topic, lambda m: self._on(m, False), dyn),
            node.create_subscription(TFMessage, tf_static_topic, lambda m: self._on(m, True), static),
        ]

    def _on(self, msg, is_static: bool) -> None:
        for t in msg.transforms:
            ok = self.buffer.set_transform_static(t) if is_static else self.buffer.set_transform(t)
            if not ok:
                self.rejected += 1
                self.last_rejection = getattr(self.buffer, "last_error", "")


def make_tf(node, cache_time: float = 10.0):
    """-> (buffer, listener, lookup) where ``lookup(target, source, stamp_ns, timeout_s) -> 4x4``."""
    if have_tf2_ros():
        import tf2_ros
        from rclpy.duration import Duration
        from rclpy.time import Time

        buffer = tf2_ros.Buffer(cache_time=Duration(seconds=cache_time))
        listener = tf2_ros.TransformListener(buffer, node)

        def lookup(target: str, source: str, stamp_ns: int, timeout_s: float = 0.0) -> np.ndarray:
            msg = buffer.lookup_transform(target, source, Time(nanoseconds=int(stamp_ns)),
                                          timeout=Duration(seconds=timeout_s))
            return conv.transform_to_matrix(msg)

        return buffer, listener, lookup

    from selfocc_ros.tf_buffer import TransformBuffer

    buffer = TransformBuffer(cache_time=cache_time)
    listener = TfListener(buffer, node)

    def lookup(target: str, source: str, stamp_ns: int, timeout_s: float = 0.0) -> np.ndarray:
        return buffer.lookup_matrix(target, source, int(stamp_ns), timeout=timeout_s)

    return buffer, listener, lookup


# ----------------------------------------------------------------------------- synchronisation


class _OwnSyncSubscribers:
    """N subscriptions feeding an ApproximateTimeSync."""

    def __init__(self, node, topics: Sequence[tuple[type, str]], qos, queue_size: int, slop: float,
                 callback: Callable[..., None], on_message: Callable[[int, object], None] | None):
        from selfocc_ros.approx_sync import ApproximateTimeSync

        self.sync = ApproximateTimeSync(len(topics), queue_size, slop, callback)
        self.subscriptions = []
        for i, (msg_type, topic) in enumerate(topics):
            def cb(msg, i=i):
                if on_message is not None:
                    on_message(i, msg)
                self.sync.add(i, msg)

            self.subscriptions.append(node.create_subscription(msg_type, topic, cb, qos))

    def destroy(self, node) -> None:
        for s in self.subscriptions:
            node.destroy_subscription(s)
        self.subscriptions = []


class _MessageFiltersSubscribers:
    def __init__(self, node, topics, qos, queue_size, slop, callback, on_message):
        import message_filters

        self.subs = [message_filters.Subscriber(node, t, name, qos_profile=qos) for t, name in topics]
        if on_message is not None:
            for i, s in enumerate(self.subs):
                s.registerCallback(lambda msg, i=i: on_message(i, msg))
        self.sync = message_filters.ApproximateTimeSynchronizer(self.subs, queue_size, slop)
        self.sync.registerCallback(callback)

    def destroy(self, node) -> None:
        for s in self.subs:
            node.destroy_subscription(s.sub)
        self.subs = []


def make_synchronized_subscribers(node, topics: Sequence[tuple[type, str]], qos, queue_size: int, slop: float,
                                  callback: Callable[..., None],
                                  on_message: Callable[[int, object], None] | None = None):
    """Subscribe ``topics`` [(msg_type, name)] and call ``callback(*msgs)`` for each approximate-time set.

    ``on_message(index, msg)`` sees every message before synchronisation (rates, staleness).
    The returned object has ``destroy(node)``.
    """
    cls = _MessageFiltersSubscribers if have_message_filters() else _OwnSyncSubscribers
    return cls(node, topics, qos, queue_size, slop, callback, on_message)
