"""Slow: `selfocc train` learns: depth error on held-out synthetic streets and on a real drive falls.

The full-length run and its numbers are in training/README.md; this is a shorter version.
"""

import json
from pathlib import Path

import pytest

from selfocc_core.cli import main


@pytest.mark.slow
def test_tiny_synth_learns_on_held_out_streets(tmp_path):
    out = tmp_path / "run"
    rc = main(["train", "--config", "tiny_synth", "--data", "synthetic:seeds=3,frames=16", "--out", str(out),
               "--steps", "300", "--no-progress", "--set", "train.eval_interval=300", "--set", "train.eval_samples=6",
               "--eval-data", "synthetic:frames=6"])
    assert rc == 0
    evals = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if '"eval"' in line]
    first, last = evals[0], evals[-1]
    assert first["step"] == 0 and last["step"] == 300
    # depth on held-out streets: a large drop from the untrained (ground-plane) model
    assert last["depth/abs_rel"] < 0.7 * first["depth/abs_rel"], (first, last)
    # occupancy: the untrained model is the ground plane (equal to the baseline)
    assert abs(first["occ/iou_subvoxel"] - first["occ/ground_plane_iou"]) < 0.02
    assert (out / "last.pt").is_file() and (out / "summary.json").is_file()


@pytest.mark.slow
def test_per_sequence_on_a_slow_and_stopped_street(tmp_path):
    """Issue 11, must-show 4 in short (the 20-minute run is in training/README.md): per-sequence
    training on the street where the ego brakes to a stop skips the zero-baseline pairs, counts
    them, and still learns depth (beats the flat ground and a constant depth) and RayIoU."""
    out = tmp_path / "run"
    spec = f"synthetic:seed=5000,frames=48,ego=slow_stop,cache={tmp_path / 'cache'}"
    rc = main(["train", "--config", "tiny_synth", "--data", spec, "--eval-data", "same", "--out", str(out),
               "--steps", "600", "--no-progress", "--set", "train.eval_interval=600"])
    assert rc == 0
    evals = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if '"eval"' in line]
    first, last = evals[0], evals[-1]
    assert last["step"] == 600
    assert last["depth/abs_rel"] < 0.5 * first["depth/abs_rel"], (first, last)  # the untrained flat ground
    assert last["depth/abs_rel"] < 0.85 * last["constant_depth/abs_rel"], last
    assert last["occ/rayiou"] > last["flat_ground/rayiou"], last
    pairs = json.loads((out / "summary.json").read_text())["context_pairs"]
    assert pairs["samples_skipped_no_baseline"] > 0 and pairs["pairs_skipped_no_baseline"] > 0


KITTI_RAW = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "kitti_raw_0001"


@pytest.mark.slow  # ~3 min on 2 cores: 150 steps + two 8-frame evaluations against stereo depth
@pytest.mark.skipif(not KITTI_RAW.is_dir(), reason="shared/data/real/kitti_raw_0001 not present")
def test_per_sequence_on_a_real_drive_learns_metric_depth(tmp_path):
    """Issue 11, must-show 3 in short (the 20-minute runs are in training/README.md): the KITTI
    recipe trained monocularly on kitti_raw_0001 and scored on it against the stereo reference
    depth leaves the flat ground it starts from and a constant depth far behind (measured on
    2026-12-02 with the recipe's 128 log samples: 0.43 -> 0.22 in 150 steps, d1 0.56 -> 0.74, constant 0.73)."""
    out = tmp_path / "run"
    rc = main(["train", "--config", "training/kitti_sequence.yaml", "--data", str(KITTI_RAW), "--eval-data", "same",
               "--out", str(out), "--steps", "150", "--no-progress", "--set", "train.eval_interval=150",
               "--set", "train.eval_samples=8"])
    assert rc == 0
    evals = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if '"eval"' in line]
    first, last = evals[0], evals[-1]
    assert first["step"] == 0 and last["step"] == 150
    assert last["depth/abs_rel"] < 0.6 * first["depth/abs_rel"], (first, last)
    assert last["depth/abs_rel"] < 0.4 * last["constant_depth/abs_rel"], last
    assert last["depth/a1"] > first["depth/a1"] + 0.1, (first, last)
