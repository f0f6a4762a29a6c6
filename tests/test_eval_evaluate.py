"""`evaluate` and `selfocc eval` with a real predictor whose scene is known exactly (a ground
plane at z = GROUND), on hand-made ground truth and on the real nuScenes keyframe."""

from __future__ import annotations

import json
import math

import pytest
import torch

from selfocc_core.classes import CLASS_ID, FREE_LABEL
from selfocc_core.cli import main as selfocc_main
from selfocc_core.data.sample import GroundTruth, Sample
from selfocc_core.evaluation.evaluate import EvalConfig, evaluate, format_summary
from selfocc_core.geometry.voxel_grid import VoxelGridSpec
from selfocc_core.inference.predictor import OccupancyPredictor
from selfocc_core.model import SelfOccModel
from selfocc_core.training.checkpoint import save_checkpoint
from test_predictor_core import CAM_H, FX, GROUND, H, W, _config, make_frame

GRID = VoxelGridSpec(-12.8, 12.8, -12.8, 12.8, -2.0, 4.4, 0.8)  # z centres -1.6, -0.8, 0.0, 0.8, ...
ROAD = CLASS_ID["driveable_surface"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    cfg = _config()
    path = tmp_path_factory.mktemp("ckpt") / "init.pt"
    save_checkpoint(path, model=SelfOccModel(cfg.model), config=cfg, step=0, with_rng=False)
    return path


@pytest.fixture(scope="module")
def predictor(ckpt):
    torch.set_num_threads(2)
    return OccupancyPredictor.from_checkpoint(ckpt, device="cpu")


def _plane_depth(scale: float = 1.0) -> torch.Tensor:
    """GT z-depth of the plane z = GROUND for the three test cameras (0 = no GT above the horizon)."""
    v = torch.arange(H, dtype=torch.float32)[:, None].expand(H, W)
    cy = (H - 1) / 2
    d = torch.where(v > cy + 4, (CAM_H - GROUND) * FX / (v - cy).clamp(min=1e-3), torch.zeros(()))
    return (d * scale).expand(3, H, W).clone()


def _sample(i: int, x: float, extra_layer: bool = False, depth_scale: float = 1.0) -> Sample:
    frame = make_frame(seed=i)
    frame.T_world_ego = torch.eye(4)
    frame.T_world_ego[0, 3] = x
    frame.timestamp = 0.1 * i
    sem = torch.full(GRID.shape, FREE_LABEL, dtype=torch.uint8)
    sem[:, :, :3] = ROAD  # layers with centre z <= GROUND: what the model predicts
    if extra_layer:
        sem[:, :, 3] = ROAD  # GT says one more layer is occupied
    mask = torch.ones(GRID.shape, dtype=torch.bool)
    mask[:, :, 3][:16] = False  # half of that layer is not seen by a camera
    gt = GroundTruth(grid=GRID, occ_semantics=sem, occ_mask_camera=mask, depth=_plane_depth(depth_scale))
    return Sample(frame=frame, gt=gt, sample_id=f"s{i}")


def test_evaluate_known_scene(predictor):
    samples = [_sample(0, 0.0), _sample(1, 2.0, extra_layer=True), _sample(2, 50.0, depth_scale=2.0)]
    r = evaluate(predictor, samples, EvalConfig(), progress=False)
    assert r["num_samples"] == 3
    occ = r["occupancy"]
    X, Y, _ = GRID.shape
    # predicted occupied: 3 layers per sample. GT: sample 1 adds layer 3, visible on its x >= 16 half only.
    fn = (X - 16) * Y
    tp = 3 * 3 * X * Y
    assert occ["iou"] == pytest.approx(tp / (tp + fn))
    assert occ["precision"] == pytest.approx(1.0) and occ["recall"] == pytest.approx(tp / (tp + fn))
    assert "miou" not in occ  # no semantic head: geometry only
    # depth: samples 0 and 1 match the plane (NeuS blur < 12 %); sample 2's GT is twice as far.
    d = r["depth"]
    assert d["num_images"] == 9
    assert 1 / 3 * 0.5 - 0.05 < d["abs_rel"] < 1 / 3 * 0.5 + 0.1  # |d - 2d| / 2d = 0.5 for a third of the images
    # novel depth: only sample 0 -> 1 is adjacent (sample 2 is 48 m away). The plane looks the same
    # from 2 m further on, so the novel view is as good as the frame's own view (NeuS blur ~10 %).
    nd = r["novel_depth"]
    own = evaluate(predictor, samples[1:2], EvalConfig(novel_depth=False), progress=False)["depth"]
    assert nd["num_images"] == 3 and nd["abs_rel"] < 0.15
    assert nd["abs_rel"] == pytest.approx(own["abs_rel"], abs=0.02)
    assert "IoU" in format_summary(r)


def test_evaluate_post_process_and_max_samples(predictor):
    samples = [_sample(0, 0.0)]
    r = evaluate(predictor, samples, EvalConfig(post_process=True, novel_depth=False, max_samples=1), progress=False)
    # border of 2 voxels set free in the prediction: the GT ring there becomes false negatives
    X, Y, _ = GRID.shape
    inner = (X - 4) * (Y - 4) * 3
    assert r["occupancy"]["iou"] == pytest.approx(inner / (X * Y * 3))
    assert r["novel_depth"] is None and r["occupancy"]["post_processed"] is True


def test_evaluate_needs_gt(predictor):
    with pytest.raises(ValueError, match="no ground truth"):
        evaluate(predictor, [Sample(frame=make_frame(), sample_id="x")], progress=False)


def test_eval_cli_on_real_nuscenes_keyframe(ckpt, real_data_dir, tmp_path, capsys):
    pkl = next((real_data_dir / "nuscenes_keyframe").glob("*.pkl"))
    out = tmp_path / "res" / "eval.json"
    rc = selfocc_main(["eval", "--ckpt", str(ckpt), "--data", str(pkl), "--json", str(out), "--no-progress",
                       "--device", "cpu"])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["num_samples"] == 1 and res["occupancy"] is None  # LiDAR depth only, no occupancy GT
    d = res["depth"]
    assert d["num_images"] == 3 and 0 < d["abs_rel"] < 10 and math.isfinite(d["rmse"])
    assert "AbsRel" in capsys.readouterr().out


def test_eval_cli_errors(tmp_path, capsys):
    rc = selfocc_main(["eval", "--ckpt", str(tmp_path / "nope.pt"), "--data", "synthetic", "--json",
                       str(tmp_path / "x.json")])
    assert rc == 2 and "nope.pt" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_evaluate_crop_to_model_box(predictor):
    big = VoxelGridSpec(-32.0, 32.0, -32.0, 32.0, -2.0, 4.4, 0.8)  # the model's box is +-25.6 m
    s = _sample(0, 0.0)
    sem = torch.full(big.shape, FREE_LABEL, dtype=torch.uint8)
    sem[:, :, :3] = ROAD
    s.gt = GroundTruth(grid=big, occ_semantics=sem, depth=None)
    full = evaluate(predictor, [s], EvalConfig(novel_depth=False), progress=False)["occupancy"]
    crop = evaluate(predictor, [s], EvalConfig(novel_depth=False, crop_to_model=True), progress=False)["occupancy"]
    # 80 x 80 columns, of which the central 64 x 64 lie in the model's box (predicted free outside)
    assert full["iou"] == pytest.approx(64 * 64 / (80 * 80))
    assert crop["iou"] == pytest.approx(1.0) and crop["cropped_to_model_box"] is True


def test_ground_plane_baseline_hand_computed(predictor):
    # ground at z = 0: layers with lower face <= 0 (z in [-2.0,-1.2,-0.4]) are the baseline, 3 of 8.
    from selfocc_core.evaluation.occupancy_metrics import ground_plane_occupancy

    ground = ground_plane_occupancy(GRID, 0.0)
    assert ground.shape == GRID.shape
    assert ground[:, :, :3].all() and not ground[:, :, 3:].any()
    # GT: 4 layers occupied, half of layer 3 unseen -> 3*1024 + 512 seen occupied voxels,
    # the baseline hits 3*1024 of them and adds no false positives.
    r = evaluate(predictor, [_sample(0, 0.0, extra_layer=True)],
                 EvalConfig(novel_depth=False, ground_height=0.0), progress=False)
    base = r["ground_plane_baseline"]
    assert base["iou"] == pytest.approx(3072 / 3584)
    assert base["precision"] == pytest.approx(1.0)
    assert base["recall"] == pytest.approx(3072 / 3584)
    assert "ground-plane-only baseline" in format_summary(r)
    assert evaluate(predictor, [_sample(0, 0.0)], EvalConfig(novel_depth=False), progress=False)[
        "ground_plane_baseline"] is None
