"""Choosing adjacent (context) frames by ego distance.

SelfOcc's temporal photometric loss needs a baseline: the previous/next frame should be one
where the ego has moved far enough for parallax, but not so far that the views stop
overlapping. Given the time-ordered ego positions of all candidate frames (keyframes and
sweeps), `choose_context` walks away from the input frame in each direction and picks the
first candidate that moved at least `min_distance` (and at most `max_distance`) from the
previous choice. When the ego stands still (no candidate moved enough), it falls back to
the frame nearest in time, so a stopped car still gets (a zero-baseline) context.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def choose_context(
    positions,
    timestamps,
    index: int,
    offsets: Sequence[int],
    min_distance: float,
    max_distance: float,
    max_time: float = float("inf"),
    candidates: Optional[np.ndarray] = None,
) -> dict[int, int]:
    """Indices of context frames for the frame at ``index``.

    positions:  ``[T, 3]`` ego translations in a common world frame, time-ordered
    timestamps: ``[T]`` seconds, non-decreasing
    index:      the input frame
    offsets:    e.g. ``[-1, 1]``; offset k > 1 is chosen by the same rule starting from the
                frame chosen for k - 1 (same for negative offsets)
    max_time:   candidates further than this from ``timestamps[index]`` (seconds) are ignored
    candidates: optional ``[T]`` bool, which frames may serve as context (default: all)

    Returns ``{offset: frame index}``; an offset with no candidate in its direction (start or
    end of a sequence, or beyond ``max_time``) is left out.

    Example (ego moving 0.2 m per frame, min 0.5 m):
        >>> pos = np.array([[0.2 * i, 0, 0] for i in range(8)])
        >>> choose_context(pos, np.arange(8) * 0.1, 4, [-1, 1], 0.5, 5.0)
        {-1: 1, 1: 7}
    """
    pos = np.asarray(positions, dtype=np.float64)
    ts = np.asarray(timestamps, dtype=np.float64)
    T = len(ts)
    if pos.shape != (T, 3):
        raise ValueError(f"choose_context: positions must be [T, 3] with T = len(timestamps) = {T}, got {pos.shape}")
    if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(ts))):
        raise ValueError("choose_context: positions/timestamps contain NaN or Inf")
    if T > 1 and np.any(np.diff(ts) < 0):
        raise ValueError("choose_context: timestamps must be non-decreasing")
    if not 0 <= index < T:
        raise ValueError(f"choose_context: index {index} out of range [0, {T})")
    if not 0 <= min_distance < max_distance:
        raise ValueError(f"choose_context: need 0 <= min_distance < max_distance, got {min_distance}, {max_distance}")
    ok = np.ones(T, dtype=bool) if candidates is None else np.asarray(candidates, dtype=bool)
    if ok.shape != (T,):
        raise ValueError(f"choose_context: candidates must be [{T}], got {ok.shape}")
    ok = ok & (np.abs(ts - ts[index]) <= max_time)

    out: dict[int, int] = {}
    for sign in (-1, 1):
        steps = sorted(o * sign for o in offsets if o * sign > 0)
        if not steps:
            continue
        current = index
        for k in range(1, max(steps) + 1):
            nxt = _step(pos, ok, current, sign, min_distance, max_distance)
            if nxt is None:
                break
            if k in steps:
                out[k * sign] = nxt
            current = nxt
    return {o: out[o] for o in offsets if o in out}


def _step(pos: np.ndarray, ok: np.ndarray, start: int, sign: int, dmin: float, dmax: float) -> Optional[int]:
    """The next frame from `start` in direction `sign` (see module docstring)."""
    idx = np.arange(start + sign, len(ok) if sign > 0 else -1, sign)
    idx = idx[ok[idx]]
    if len(idx) == 0:
        return None
    dist = np.linalg.norm(pos[idx] - pos[start], axis=-1)
    good = np.nonzero((dist >= dmin) & (dist <= dmax))[0]
    if len(good):
        return int(idx[good[0]])
    if np.all(dist < dmin):
        return int(idx[0])  # ego (nearly) still: nearest in time
    # Moved too far already at the nearest candidate (or jumped over the window): the last
    # one still within max_distance, else the nearest in time.
    within = np.nonzero(dist <= dmax)[0]
    return int(idx[within[-1]]) if len(within) else int(idx[0])


def context_for_sequence(positions, timestamps, offsets: Sequence[int], min_distance: float,
                         max_distance: float, max_time: float = float("inf"),
                         require_all: bool = True, candidates: Optional[np.ndarray] = None,
                         inputs: Optional[Sequence[int]] = None) -> list[tuple[int, dict[int, int]]]:
    """`choose_context` for every input frame of one sequence.

    inputs: frame indices that may be network inputs (default: all; nuScenes: the keyframes).
    Returns ``[(index, {offset: index})]`` in time order; with ``require_all`` frames missing
    any offset are dropped.
    """
    ts = np.asarray(timestamps, dtype=np.float64)
    out = []
    for i in (range(len(ts)) if inputs is None else inputs):
        ctx = choose_context(positions, ts, int(i), offsets, min_distance, max_distance, max_time, candidates)
        if require_all and len(ctx) != len(offsets):
            continue
        out.append((int(i), ctx))
    return out
