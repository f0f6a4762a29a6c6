"""Slow: two CPU processes under torchrun (gloo DistributedDataParallel) train and checkpoint."""

import json
import os
import subprocess
import sys

import pytest

from training_fakes import MICRO_OVERRIDES


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    out = tmp_path / "ddp"
    sets = [a for o in MICRO_OVERRIDES if not o.startswith("data.") for a in ("--set", o)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "selfocc_core.cli", "train", "--config", "tiny_synth", "--data", "synthetic:seeds=1,frames=6",
           "--out", str(out), "--no-progress", "--device", "cpu", *sets, "--set", "train.steps=4"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if x["kind"] == "train"] == [1, 2, 3, 4]  # rank 0 only logs
    assert (out / "last.pt").is_file()
