"""training/photometric_landscape.py: where the photometric loss has its minimum along each ray,
relative to the reference depth (no network, no training)."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

from photometric_landscape import landscape, main  # noqa: E402

from selfocc_core.training.config import load_experiment_config  # noqa: E402

SMALL = ["data.image_height=64", "data.image_width=112", "data.cameras=[CAM_FRONT]", "model.ray_stride=2"]


@pytest.mark.slow  # ~20 s: renders a synthetic street with its depth
def test_the_loss_minimum_sits_at_the_reference_depth_on_a_synthetic_street(tmp_path, capsys):
    torch.set_num_threads(1)
    cfg = load_experiment_config("tiny_synth", SMALL)
    data = f"synthetic:seed=1000,frames=5,cache={tmp_path / 'cache'}"
    r = landscape(cfg, data, [1, 2, 3], [-1, 1])
    near = r["by_range"]["0.1-10m"]
    assert near["rays"] > 100
    # rendered textured street, exact poses: most near rays have their photometric minimum at the true depth
    assert near["resolved"] > 0.5 and near["resolved"] > near["too_near"] and near["resolved"] > near["too_far"]
    assert abs(near["resolved"] + near["too_near"] + near["too_far"] - 1.0) < 1e-6
    with pytest.raises(ValueError, match="non-zero"):
        landscape(cfg, data, [1], [0, 1])
    assert main(["--config", "tiny_synth", "--data", data, "--frames", "99", *sum((["--set", s] for s in SMALL), [])]) == 2
    assert "outside" in capsys.readouterr().err
