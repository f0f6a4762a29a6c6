"""Slow: `selfocc train` on the synthetic world learns (depth error on held-out streets falls).

The full-length run and its numbers are in training/README.md; this is a shorter version.
"""

import json

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
