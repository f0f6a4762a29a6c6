"""A TF buffer with tf2's lookup semantics, used where tf2_ros is not installed (no rclpy).

``lookup_transform(target, source, time)`` returns ``T_target_source`` (points in ``source``
-> ``target``) as a geometry_msgs/TransformStamped, like ``tf2_ros.Buffer``; ``lookup_matrix``
gives the same as a 4x4 numpy array. Behaviour copied from tf2 (BufferCore / TimeCache):

- a transform is stored per child frame (``child_frame_id``) with its parent (``header.frame_id``);
  static transforms (/tf_static) hold for every time, dynamic ones (/tf) for the span they cover;
- dynamic data older than ``newest - cache_time`` is pruned; data with a stamp already in the
  cache or older than the pruning horizon is ignored; NaN/Inf values, a non-unit quaternion,
  empty or '/'-prefixed frame ids, and child == parent are rejected (``set_transform`` -> False);
- a lookup walks source and target up to their common ancestor and chains the edges; each
  dynamic edge is interpolated at the requested time (translation lerp, rotation slerp);
- time 0 means "latest common time" of the edges used (0 when all are static);
- a time outside an edge's span raises ExtrapolationException (past / future / single sample),
  an unknown frame LookupException, frames in different trees ConnectivityException.
"""

from __future__ import annotations

import bisect
import math
import threading
import time as _time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from selfocc_ros.conversions import matrix_to_transform_stamped, stamp_to_ns, transform_to_matrix


class TransformException(Exception):
    """Base of the lookup errors (mirrors tf2.TransformException)."""


class LookupException(TransformException):
    """A frame that the buffer has never seen."""


class ConnectivityException(TransformException):
    """Both frames are known but not connected by the tree."""


class ExtrapolationException(TransformException):
    """The requested time lies outside the span of data for an edge of the chain."""


class InvalidArgumentException(TransformException):
    """A malformed frame id or time."""


@dataclass
class _Sample:
    stamp: int  # ns
    parent: str
    translation: np.ndarray  # (3,)
    quat: np.ndarray  # (4,) w, x, y, z, unit
    T: np.ndarray  # (4, 4) T_parent_child of translation + quat, built once at insertion (lookups reuse it)


def _quat_wxyz(T: np.ndarray) -> np.ndarray:
    from selfocc_core.geometry.transforms import matrix_to_quaternion

    return matrix_to_quaternion(T[:3, :3])


def _slerp(q0: np.ndarray, q1: np.ndarray, r: float) -> np.ndarray:
    d = float(np.dot(q0, q1))
    if d < 0.0:  # shortest path
        q1, d = -q1, -d
    if d > 0.9995:
        q = q0 + r * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = math.acos(min(1.0, d))
    s = math.sin(theta)
    return (math.sin((1 - r) * theta) / s) * q0 + (math.sin(r * theta) / s) * q1


def _to_matrix(translation: np.ndarray, quat_wxyz: np.ndarray) -> np.ndarray:
    """4x4 from a translation and a unit (w, x, y, z) quaternion (validated where it entered: set_transform,
    or a slerp of two such); the rotation by the closed-form expression, ~10x cheaper than the checked
    geometry.transforms.quaternion_to_matrix in this per-lookup path."""
    w, x, y, z = (float(v) for v in quat_wxyz)
    return np.array([
        [1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y - z * w), 2.0 * (x * z + y * w), translation[0]],
        [2.0 * (x * y + z * w), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z - x * w), translation[1]],
        [2.0 * (x * z - y * w), 2.0 * (y * z + x * w), 1.0 - 2.0 * (x * x + y * y), translation[2]],
        [0.0, 0.0, 0.0, 1.0]])


def time_to_ns(t) -> int:
    """int ns, rclpy Time (``.nanoseconds``) or builtin_interfaces/Time -> int ns."""
    if isinstance(t, bool):
        raise InvalidArgumentException(f"invalid time {t!r}")
    if isinstance(t, (int, np.integer)):
        return int(t)
    if hasattr(t, "nanoseconds"):
        return int(t.nanoseconds)
    if hasattr(t, "sec") and hasattr(t, "nanosec"):
        return stamp_to_ns(t)
    raise InvalidArgumentException(f"time must be int nanoseconds, rclpy Time or builtin_interfaces/Time, got {t!r}")


def _fmt(ns: int) -> str:
    return f"{ns / 1e9:.6f}"


class _TimeCache:
    def __init__(self, cache_ns: int):
        self.cache_ns = cache_ns
        self.stamps: list[int] = []
        self.samples: list[_Sample] = []

    def insert(self, s: _Sample) -> bool:
        if self.stamps and s.stamp < self.stamps[-1] - self.cache_ns:
            return False  # older than the horizon
        i = bisect.bisect_left(self.stamps, s.stamp)
        if i < len(self.stamps) and self.stamps[i] == s.stamp:
            return False  # repeated stamp (TF_REPEATED_DATA)
        self.stamps.insert(i, s.stamp)
        self.samples.insert(i, s)
        horizon = self.stamps[-1] - self.cache_ns
        k = bisect.bisect_left(self.stamps, horizon)
        if k:
            del self.stamps[:k], self.samples[:k]
        return True

    def parent_at(self, t: int) -> str:
        if t == 0:
            return self.samples[-1].parent
        i = bisect.bisect_right(self.stamps, t) - 1
        return self.samples[max(i, 0)].parent

    def newest(self) -> int:
        return self.stamps[-1]

    def matrix_at(self, t: int, child: str, what: str) -> np.ndarray:
        """4x4 T_parent_child at ``t`` (sample_at; a sample's own cached matrix when ``t`` hits one)."""
        st = self.stamps
        i = bisect.bisect_left(st, t) if t else len(st) - 1
        if i < len(st) and (st[i] == t or t == 0):
            return self.samples[i].T
        return _to_matrix(*self.sample_at(t, child, what))

    def sample_at(self, t: int, child: str, what: str) -> tuple[np.ndarray, np.ndarray]:
        st = self.stamps
        if t == 0:
            t = st[-1]
        if len(st) == 1:
            if t == st[0]:
                return self.samples[0].translation, self.samples[0].quat
            raise ExtrapolationException(
                f"Lookup would require extrapolation at time {_fmt(t)}, but only time {_fmt(st[0])} is in the buffer, "
                f"when looking up transform {what} (edge {self.samples[0].parent} -> {child})")
        if t < st[0]:
            raise ExtrapolationException(
                f"Lookup would require extrapolation into the past. Requested time {_fmt(t)} but the earliest data is "
                f"at time {_fmt(st[0])}, when looking up transform {what} (edge {self.samples[0].parent} -> {child})")
        if t > st[-1]:
            raise ExtrapolationException(
                f"Lookup would require extrapolation into the future. Requested time {_fmt(t)} but the latest data is "
                f"at time {_fmt(st[-1])}, when looking up transform {what} (edge {self.samples[-1].parent} -> {child})")
        i = bisect.bisect_left(st, t)
        if st[i] == t:
            return self.samples[i].translation, self.samples[i].quat
        a, b = self.samples[i - 1], self.samples[i]
        if a.parent != b.parent:  # re-parented in between: no interpolation (tf2 returns the earlier one)
            return a.translation, a.quat
        r = (t - a.stamp) / (b.stamp - a.stamp)
        return a.translation + r * (b.translation - a.translation), _slerp(a.quat, b.quat, r)


def transform_problem(t) -> str:
    """Why tf2 would reject a geometry_msgs/TransformStamped ('' when it is valid): tf2's
    frame-id, TF_NAN_INPUT and TF_DENORMALIZED_QUATERNION checks, in that order."""
    parent, child = t.header.frame_id, t.child_frame_id
    if not parent or not child or parent.startswith("/") or child.startswith("/") or parent == child:
        return f"invalid frame ids '{parent}' -> '{child}'"
    tr, q = t.transform.translation, t.transform.rotation
    values = (tr.x, tr.y, tr.z, q.x, q.y, q.z, q.w)
    if not all(math.isfinite(v) for v in values):
        return f"TF_NAN_INPUT: ignoring transform {parent} -> {child}: non-finite values"
    if abs(math.sqrt(q.x * q.x + q.y * q.y + q.z * q.z + q.w * q.w) - 1.0) > 1e-3:
        return f"TF_DENORMALIZED_QUATERNION: ignoring transform {parent} -> {child}"
    return ""


class TransformBuffer:
    """tf2-style transform buffer (thread-safe). ``cache_time`` in seconds (tf2 default 10 s)."""

    def __init__(self, cache_time: float = 10.0):
        self.cache_ns = int(round(cache_time * 1e9))
        self._static: dict[str, _Sample] = {}
        self._dynamic: dict[str, _TimeCache] = {}
        self._frames: set[str] = set()
        self._cond = threading.Condition()

    # ------------------------------------------------------------------ input

    def set_transform(self, transform, authority: str = "default_authority") -> bool:
        """Insert a dynamic geometry_msgs/TransformStamped; False (ignored) when invalid/old/repeated."""
        return self._insert(transform, is_static=False)

    def set_transform_static(self, transform, authority: str = "default_authority") -> bool:
        return self._insert(transform, is_static=True)

    def _insert(self, tf, is_static: bool) -> bool:
        parent, child = tf.header.frame_id, tf.child_frame_id
        why = transform_problem(tf)
        if why:
            self.last_error = why
            return False
        T = transform_to_matrix(tf.transform)
        q = _quat_wxyz(T)
        t = T[:3, 3].copy()
        s = _Sample(stamp_to_ns(tf.header.stamp), parent, t, q, _to_matrix(t, q))
        with self._cond:
            if is_static:
                self._static[child] = s
                self._dynamic.pop(child, None)
                ok = True
            else:
                cache = self._dynamic.setdefault(child, _TimeCache(self.cache_ns))
                ok = cache.insert(s)
            if ok:
                self._frames.update((parent, child))
                self._cond.notify_all()
        return ok

    def clear(self) -> None:
        with self._cond:
            self._dynamic.clear()  # as tf2 BufferCore::clear(): static transforms survive
            self._frames = set(self._static) | {s.parent for s in self._static.values()}

    # ------------------------------------------------------------------ queries

    def all_frames(self) -> list[str]:
        with self._cond:
            return sorted(self._frames)

    def _parent(self, frame: str, t: int) -> str | None:
        if frame in self._static:
            return self._static[frame].parent
        cache = self._dynamic.get(frame)
        return cache.parent_at(t) if cache else None

    def _chain(self, frame: str, t: int) -> list[str]:
        chain = [frame]
        while True:
            p = self._parent(chain[-1], t)
            if p is None:
                return chain
            if p in chain or len(chain) > 1000:
                raise ConnectivityException(f"TF tree has a loop through '{p}'")
            chain.append(p)

    def _edges(self, target: str, source: str, t: int) -> tuple[list[str], list[str]]:
        """Frames from source up to (excl.) the common ancestor, and from target likewise."""
        for f, role in ((target, "target_frame"), (source, "source_frame")):
            if not f or f.startswith("/"):
                raise InvalidArgumentException(f"invalid {role} '{f}' (empty or starts with '/')")
            if f not in self._frames:
                raise LookupException(f'"{f}" passed to lookupTransform argument {role} does not exist. ')
        up_s, up_t = self._chain(source, t), self._chain(target, t)
        common = next((f for f in up_s if f in set(up_t)), None)
        if common is None:
            raise ConnectivityException(
                f"Could not find a connection between '{target}' and '{source}' because they are not part of the "
                f"same tree. Tf has two or more unconnected trees.")
        return up_s[: up_s.index(common)], up_t[: up_t.index(common)]

    def _latest_common_time(self, frames: list[str]) -> int:
        newest = [self._dynamic[f].newest() for f in frames if f in self._dynamic]
        return min(newest) if newest else 0

    def _lookup_locked(self, target: str, source: str, t: int) -> tuple[np.ndarray, int]:
        what = f"from frame [{source}] to frame [{target}]"
        if t == 0:
            down_s, down_t = self._edges(target, source, 0)
            t = self._latest_common_time(down_s + down_t)
        down_s, down_t = self._edges(target, source, t)

        def up(frames: list[str]) -> Optional[np.ndarray]:
            T = None  # T_ancestor_frame, built from the frame upwards (None: identity)
            for f in frames:
                s = self._static.get(f)
                E = s.T if s is not None else self._dynamic[f].matrix_at(t, f, what)
                T = E if T is None else E @ T
            return T

        T_anc_source = up(down_s)
        T_anc_target = up(down_t)
        if T_anc_target is None:  # the target is the common ancestor (e.g. odom <- camera)
            return (np.eye(4) if T_anc_source is None else T_anc_source.copy()), t
        from selfocc_core.geometry.transforms import invert_transform

        T_target_anc = invert_transform(T_anc_target)
        return (T_target_anc if T_anc_source is None else T_target_anc @ T_anc_source), t

    def lookup_matrix(self, target_frame: str, source_frame: str, time=0, timeout: float = 0.0) -> np.ndarray:
        """4x4 ``T_target_source`` at ``time`` (0 = latest common); waits up to ``timeout`` s for data."""
        return self._lookup(target_frame, source_frame, time, timeout)[0]

    def _lookup(self, target: str, source: str, time, timeout) -> tuple[np.ndarray, int]:
        t = time_to_ns(time)
        timeout_s = timeout.nanoseconds * 1e-9 if hasattr(timeout, "nanoseconds") else float(timeout or 0.0)
        deadline = _time.monotonic() + timeout_s
        with self._cond:
            while True:
                try:
                    return self._lookup_locked(target, source, t)
                except TransformException:
                    remaining = deadline - _time.monotonic()
                    if remaining <= 0:
                        raise
                    self._cond.wait(min(remaining, 0.05))

    def lookup_transform(self, target_frame: str, source_frame: str, time=0, timeout=0.0):
        """geometry_msgs/TransformStamped ``T_target_source`` (header.frame_id=target, child=source)."""
        T, t = self._lookup(target_frame, source_frame, time, timeout)
        return matrix_to_transform_stamped(T, target_frame, source_frame, t)

    def can_transform(self, target_frame: str, source_frame: str, time=0, timeout=0.0) -> bool:
        try:
            self._lookup(target_frame, source_frame, time, timeout)
            return True
        except TransformException:
            return False
