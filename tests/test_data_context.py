"""Context-frame choice by ego distance (pure function)."""

from __future__ import annotations

import numpy as np
import pytest

from selfocc_core.data.context import choose_context, context_for_sequence


def line(speeds_per_frame, dt=0.1):
    """Positions along x for per-frame displacements; timestamps dt apart."""
    x = np.concatenate([[0.0], np.cumsum(speeds_per_frame)])
    return np.stack([x, np.zeros_like(x), np.zeros_like(x)], -1), np.arange(len(x)) * dt


def test_picks_first_frame_beyond_min_distance():
    pos, ts = line([0.2] * 10)  # 0.2 m per frame
    assert choose_context(pos, ts, 5, [-1, 1], 0.5, 5.0) == {-1: 2, 1: 8}  # 0.6 m away each
    assert choose_context(pos, ts, 5, [-1, 1], 0.1, 5.0) == {-1: 4, 1: 6}


def test_offsets_two_chain_from_the_previous_choice():
    pos, ts = line([0.2] * 12)
    assert choose_context(pos, ts, 6, [-2, -1, 1, 2], 0.3, 5.0) == {-2: 2, -1: 4, 1: 8, 2: 10}


def test_standing_still_falls_back_to_nearest_in_time():
    pos, ts = line([0.0] * 6)
    assert choose_context(pos, ts, 3, [-1, 1], 0.5, 5.0) == {-1: 2, 1: 4}
    # moves only after a stop: forward stays nearest in time if nothing reaches min distance
    pos, ts = line([0.0, 0.0, 0.0, 0.01, 0.01])
    assert choose_context(pos, ts, 2, [1], 0.5, 5.0) == {1: 3}


def test_too_fast_takes_last_within_max_else_nearest():
    pos, ts = line([3.0] * 6)
    assert choose_context(pos, ts, 3, [-1, 1], 0.5, 2.0) == {-1: 2, 1: 4}  # all > 2 m: nearest
    pos, ts = line([0.1, 0.1, 5.0, 0.1])  # a jump: the last one within max_distance
    assert choose_context(pos, ts, 0, [1], 0.5, 2.0) == {1: 2}


def test_sequence_ends_and_time_window():
    pos, ts = line([1.0] * 4)
    assert choose_context(pos, ts, 0, [-1, 1], 0.5, 5.0) == {1: 1}
    assert choose_context(pos, ts, 4, [-1, 1], 0.5, 5.0) == {-1: 3}
    pos, ts = line([0.05] * 20, dt=0.1)  # needs 10 frames = 1 s to move 0.5 m
    assert choose_context(pos, ts, 10, [1], 0.5, 5.0, max_time=0.5) == {1: 11}  # nothing far enough: nearest
    assert choose_context(pos, ts, 10, [1], 0.5, 5.0, max_time=2.0) == {1: 20}


def test_candidates_mask_and_sequence_table():
    pos, ts = line([0.3] * 8)
    cand = np.array([True, False] * 4 + [True])
    assert choose_context(pos, ts, 4, [-1, 1], 0.1, 5.0, candidates=cand) == {-1: 2, 1: 6}
    table = context_for_sequence(pos, ts, [-1, 1], 0.1, 5.0)
    assert [i for i, _ in table] == list(range(1, 8))
    assert table[0] == (1, {-1: 0, 1: 2})
    table = context_for_sequence(pos, ts, [-1, 1], 0.1, 5.0, require_all=False, inputs=[0, 4])
    assert table == [(0, {1: 1}), (4, {-1: 3, 1: 5})]


def test_bad_input_is_rejected():
    pos, ts = line([0.2] * 4)
    with pytest.raises(ValueError, match="positions must be"):
        choose_context(pos[:3], ts, 0, [1], 0.1, 1.0)
    bad = pos.copy()
    bad[2, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        choose_context(bad, ts, 0, [1], 0.1, 1.0)
    with pytest.raises(ValueError, match="non-decreasing"):
        choose_context(pos, ts[::-1], 0, [1], 0.1, 1.0)
    with pytest.raises(ValueError, match="out of range"):
        choose_context(pos, ts, 9, [1], 0.1, 1.0)
    with pytest.raises(ValueError, match="min_distance"):
        choose_context(pos, ts, 0, [1], 1.0, 0.5)
