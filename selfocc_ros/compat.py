"""Use the ROS 2 libraries when they are installed (apt ROS on a robot), our equivalents otherwise.

- TF: ``tf2_ros.Buffer`` | ``tf_buffer.TransformBuffer``, both fed by ``TfListener`` below (it
  counts rejected transforms for the diagnostics under both; needs a ``tf2_msgs`` Python package:
  the real one, or the stand-in built by tools/build_msgs.py where no real one exists);
- synchronisation: ``message_filters.ApproximateTimeSynchronizer`` | ``approx_sync.ApproximateTimeSync``;
- images: ``cv_bridge.CvBridge`` | ``conversions.image_to_rgb``.

A ROS library is used only when importing it (and what we use from it) works: ``probe()``.
``SELFOCC_FORCE_FALLBACK=1`` selects our implementations even where the ROS ones import (tests).
Only the factory functions take a node; nothing here calls rclpy.init.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from typing import Callable, Sequence

import numpy as np

from selfocc_ros import conversions as conv
from selfocc_ros.tf_buffer import transform_problem


def _forced_fallback() -> bool:
    return os.environ.get("SELFOCC_FORCE_FALLBACK", "") not in ("", "0")


# What each backend is used through: a probe imports exactly these, so a package that is found but
# cannot be imported (a tf2_ros whose tf2_msgs is shadowed by a stand-in without tf2_msgs.srv) is
# reported and replaced by our equivalent instead of failing when the node first uses it.
_PROBES = {
    "tf2_ros": ("tf2_ros", ("Buffer", "TransformListener", "TransformException")),
    "message_filters": ("message_filters", ("Subscriber", "ApproximateTimeSynchronizer")),
    "cv_bridge": ("cv_bridge", ("CvBridge",)),
}


@functools.lru_cache(maxsize=None)
def probe(backend: str) -> str:
    """'' when ``backend`` imports with everything we use from it, else why not (cached)."""
    module, names = _PROBES[backend]
    if importlib.util.find_spec(module) is None:
        return "not installed"
    try:
        mod = importlib.import_module(module)
        missing = [n for n in names if not hasattr(mod, n)]
    except Exception as e:  # ImportError, or anything the package raises while importing
        return f"found but not importable: {type(e).__name__}: {e}"
    return f"found but lacks {', '.join(missing)}" if missing else ""


def _available(backend: str) -> bool:
    return not _forced_fallback() and probe(backend) == ""


def have_tf2_ros() -> bool:
    return _available("tf2_ros")


def have_message_filters() -> bool:
    return _available("message_filters")


def have_cv_bridge() -> bool:
    return _available("cv_bridge")


def backends() -> dict[str, str]:
    """Which implementation each piece uses, and why a ROS one is not used (logged at start-up)."""

    def pick(backend: str, ours: str) -> str:
        if _available(backend):
            return backend
        why = "SELFOCC_FORCE_FALLBACK" if _forced_fallback() else f"{backend} {probe(backend)}"
        return f"{ours} ({why})"

    return {
        "tf": pick("tf2_ros", "selfocc_ros.tf_buffer"),
        "sync": pick("message_filters", "selfocc_ros.approx_sync"),
        "images": pick("cv_bridge", "selfocc_ros.conversions"),
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
    """Feeds /tf and /tf_static into a buffer, counting what is rejected (for diagnostics).

    What tf2_ros.TransformListener does, for either buffer: ours (``set_transform`` returns
    False on rejection, with ``last_error``) or ``tf2_ros.Buffer`` (which only logs; invalid
    transforms are screened here with tf2's own rules, :func:`transform_problem`, so the node's
    "tf input" diagnostic is the same under both). ``on_change(is_static)`` is called after
    accepted /tf_static messages (the node re-checks the camera rig then).
    """

    def __init__(self, buffer, node, tf_topic: str = "/tf", tf_static_topic: str = "/tf_static",
                 own_buffer: bool = True):
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        try:
            from tf2_msgs.msg import TFMessage
        except ImportError as e:
            raise ImportError(
                "tf2_msgs is not importable: install ROS 2's tf2_msgs, or build the stand-in with "
                "`python tools/build_msgs.py` and source its environment"
            ) from e
        self.buffer = buffer
        self._own = own_buffer
        self.rejected = 0
        self.last_rejection = ""
        self.static_updates = 0
        dyn = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
        static = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                            durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._subs = [
            node.create_subscription(TFMessage, tf_topic, lambda m: self._on(m, False), dyn),
            node.create_subscription(TFMessage, tf_static_topic, lambda m: self._on(m, True), static),
        ]

    def _reject(self, why: str) -> None:
        self.rejected += 1
        self.last_rejection = why

    def _on(self, msg, is_static: bool) -> None:
        accepted = 0
        for t in msg.transforms:
            if self._own:  # our buffer applies transform_problem itself and says why it rejected
                rejected = not (self.buffer.set_transform_static(t) if is_static else self.buffer.set_transform(t))
                why = getattr(self.buffer, "last_error", "") if rejected else ""
            else:  # tf2_ros.Buffer: (transform, authority); it only logs, so screen with tf2's rules first
                why = transform_problem(t)
                rejected = bool(why)
                if not rejected:
                    (self.buffer.set_transform_static if is_static else self.buffer.set_transform)(t, "selfocc_ros")
            if rejected:
                self._reject(why)
                continue
            accepted += 1
        if is_static and accepted:
            self.static_updates += 1


def make_tf(node, cache_time: float = 10.0):
    """-> (buffer, listener, lookup) where ``lookup(target, source, stamp_ns, timeout_s) -> 4x4``.

    ``lookup`` (stamp 0 = latest) and ``listener.rejected`` / ``last_rejection`` /
    ``static_updates`` are the API both backends share; the buffer itself is tf2_ros.Buffer
    (rclpy Time arguments) or ours (int ns).
    """
    if have_tf2_ros():
        import tf2_ros
        from rclpy.duration import Duration
        from rclpy.time import Time

        buffer = tf2_ros.Buffer(cache_time=Duration(seconds=cache_time))
        listener = TfListener(buffer, node, own_buffer=False)

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
                 callback: Callable[..., None], on_message: Callable[[int, object], None] | None,
                 transform: Callable[[int, object], object] | None = None):
        from selfocc_ros.approx_sync import ApproximateTimeSync

        self.sync = ApproximateTimeSync(len(topics), queue_size, slop, callback)
        self.subscriptions = []
        for i, (msg_type, topic) in enumerate(topics):
            def cb(msg, i=i):
                if on_message is not None:
                    on_message(i, msg)
                self.sync.add(i, msg if transform is None else transform(i, msg), conv.stamp_to_ns(msg.header.stamp))

            self.subscriptions.append(node.create_subscription(msg_type, topic, cb, qos))

    def set_slop(self, slop: float) -> None:
        if not slop >= 0:
            raise ValueError(f"slop must be >= 0 s, got {slop}")
        self.sync.slop_ns = int(round(slop * 1e9))

    @property
    def slop(self) -> float:
        return self.sync.slop_ns / 1e9

    def destroy(self, node) -> None:
        for s in self.subscriptions:
            node.destroy_subscription(s)
        self.subscriptions = []


class _MessageFiltersSubscribers:
    def __init__(self, node, topics, qos, queue_size, slop, callback, on_message, transform=None):
        import message_filters

        self.subs = [message_filters.Subscriber(node, t, name, qos_profile=qos) for t, name in topics]
        if on_message is not None:
            for i, s in enumerate(self.subs):
                s.registerCallback(lambda msg, i=i: on_message(i, msg))
        inputs = self.subs
        if transform is not None:  # the synchronizer reads item.header.stamp, as from a message
            inputs = []
            for i, s in enumerate(self.subs):
                f = message_filters.SimpleFilter()
                s.registerCallback(lambda msg, i=i, f=f: f.signalMessage(transform(i, msg)))
                inputs.append(f)
        self.sync = message_filters.ApproximateTimeSynchronizer(inputs, queue_size, slop)
        self.sync.registerCallback(callback)

    def set_slop(self, slop: float) -> None:
        from rclpy.duration import Duration

        # message_filters keeps slop as an rclpy Duration (Jazzy and later) or as float seconds
        self.sync.slop = Duration(seconds=slop) if isinstance(self.sync.slop, Duration) else float(slop)

    @property
    def slop(self) -> float:
        s = self.sync.slop
        return s.nanoseconds / 1e9 if hasattr(s, "nanoseconds") else float(s)

    def destroy(self, node) -> None:
        for s in self.subs:
            node.destroy_subscription(s.sub)
        self.subs = []


def make_synchronized_subscribers(node, topics: Sequence[tuple[type, str]], qos, queue_size: int, slop: float,
                                  callback: Callable[..., None],
                                  on_message: Callable[[int, object], None] | None = None,
                                  transform: Callable[[int, object], object] | None = None):
    """Subscribe ``topics`` [(msg_type, name)] and call ``callback(*items)`` for each approximate-time set.

    ``on_message(index, msg)`` sees every message before synchronisation (rates, staleness).
    ``transform(index, msg) -> item`` (optional) replaces each message by what the synchroniser
    queues and the callback gets (an object with the message's ``header``), in the subscription
    callback: the message itself can be released at once. The returned object has ``destroy(node)``.
    """
    cls = _MessageFiltersSubscribers if have_message_filters() else _OwnSyncSubscribers
    return cls(node, topics, qos, queue_size, slop, callback, on_message, transform)
