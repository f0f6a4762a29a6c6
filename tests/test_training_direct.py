"""training/direct_optimisation.py: a free voxel field optimised with the trainer's losses (and
the GT-depth oracle) on one street, scored beside the GT SDF written into the same field."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

from direct_optimisation import DirectField, main  # noqa: E402

from selfocc_core.data.sample import collate_samples  # noqa: E402
from selfocc_core.training.config import load_experiment_config  # noqa: E402

SMALL = ["data.image_height=32", "data.image_width=56", "data.cameras=[CAM_FRONT]", "train.eval_stride=4",
         "model.num_samples=8", "loss.eikonal_points=64", "loss.hessian_points=32", "loss.sparsity_points=64"]


def test_direct_field_is_the_models_prior_and_renders():
    cfg = load_experiment_config("tiny_synth", SMALL)
    f = DirectField(cfg.model)
    z = cfg.model.scene.centers()[..., 2]
    assert torch.equal(f.sdf[0, 0], z - cfg.model.ground_height)
    assert {n for n, _ in f.named_parameters()} == {"sdf", "rgb", "variance.variance"}


@pytest.mark.slow  # ~25 s of CPU (renders a street and its ground truth)
def test_direct_optimisation_runs_and_scores_against_the_bound(tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "r.json"
    rc = main(["--data", f"synthetic:seed=1000,frames=3,cache={tmp_path / 'cache'}", "--steps", "3", "--out", str(out),
               *sum((["--set", s] for s in SMALL), [])])
    assert rc == 0
    r = json.loads(out.read_text())
    for k in ("flat_ground", "representation_bound", "optimised"):
        assert 0.0 <= r[k]["occ/iou_subvoxel"] <= 1.0 and r[k]["depth/abs_rel"] > 0
    # the GT SDF in the field beats the flat ground it starts from; the untrained field is the flat ground
    assert r["representation_bound"]["occ/iou_subvoxel"] > r["flat_ground"]["occ/iou_subvoxel"] + 0.1
    assert abs(r["flat_ground"]["occ/iou_subvoxel"] - r["flat_ground"]["occ/ground_plane_iou"]) < 0.02
    state = torch.load(out.with_suffix(".pt"))
    assert state["sdf"].shape == (1, 1, *load_experiment_config("tiny_synth").model.scene.shape)
    # the GT-depth oracle path
    rc = main(["--data", f"synthetic:seed=1000,frames=3,cache={tmp_path / 'cache'}", "--steps", "2", "--loss", "gt_depth",
               "--out", str(tmp_path / "o.json"), *sum((["--set", s] for s in SMALL), [])])
    assert rc == 0 and json.loads((tmp_path / "o.json").read_text())["loss"] == "gt_depth"


KITTI = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real" / "kitti_raw_0001"


@pytest.mark.slow  # ~15 s: stereo reference depth of a few real frames (cached after the first run)
@pytest.mark.skipif(not KITTI.is_dir(), reason="shared/data/real/kitti_raw_0001 not present")
def test_direct_optimisation_on_a_sub_range_of_a_real_drive_without_occupancy(tmp_path, capsys):
    torch.set_num_threads(1)
    small = ["data.image_height=48", "data.image_width=160", "model.num_samples=8", "model.ray_stride=8",
             "loss.eikonal_points=64", "loss.hessian_points=32", "loss.sparsity_points=64"]
    out = tmp_path / "k.json"
    rc = main(["--config", "training/kitti_sequence.yaml", "--data", str(KITTI), "--frames", "40:43", "--ref", "1",
               "--steps", "2", "--out", str(out), *sum((["--set", s] for s in small), [])])
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["frames"] == "40:43" and "representation_bound" not in r  # stereo depth only: no bound
    assert r["optimised"]["depth/abs_rel"] > 0 and "depth/abs_rel_20-40m" in r["optimised"]
    capsys.readouterr()
    assert main(["--config", "training/kitti_sequence.yaml", "--data", str(KITTI), "--frames", "40:400", "--steps", "1"]) == 2
    assert "not a range" in capsys.readouterr().err
    assert main(["--frames", "x"]) == 2 and "LO:HI" in capsys.readouterr().err
