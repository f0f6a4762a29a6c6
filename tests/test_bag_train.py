"""`selfocc train --data BAG`: self-supervised training straight from a rosbag2 recording."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from selfocc_ros.bag.convert import synthetic_recording, write_recording
from training_fakes import MICRO_OVERRIDES


@pytest.mark.slow
def test_training_from_a_bag_lowers_the_loss(tmp_path):
    bag = tmp_path / "drive"
    write_recording(synthetic_recording("num_frames=3,image_height=32,image_width=48", cameras=["CAM_FRONT"]), bag)
    overrides = [o for o in MICRO_OVERRIDES if not o.startswith(("train.steps", "train.checkpoint_interval"))]
    overrides += ["train.steps=150", "train.checkpoint_interval=1000", "train.bf16=false", "optim.lr=3e-3",
                  "loss.anchor_current_prob=1.0"]
    cmd = [sys.executable, "-m", "selfocc_core.cli", "train", "--config", "tiny_synth", "--data", str(bag),
           "--out", str(tmp_path / "run"), "--no-progress"]
    for o in overrides:
        cmd += ["--set", o]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    # the bag was read by RosbagDataset (one sample with context -1/+1 out of 3 frames)
    assert "rosbag" in r.stderr and "1 samples from 3 posed frames" in r.stderr
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    loss = np.array([rec["loss"] for rec in log if "loss" in rec])
    assert len(loss) == 150 and np.all(np.isfinite(loss))
    first, last = loss[:20].mean(), loss[-20:].mean()
    assert last < 0.85 * first, f"loss did not fall: first 20 steps {first:.4f}, last 20 {last:.4f}"
    assert (tmp_path / "run" / "last.pt").is_file()
