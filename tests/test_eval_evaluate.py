"""`evaluate` and `selfocc eval` with a real predictor whose scene is known exactly (a ground
plane at z = GROUND), on hand-made ground truth and on the real nuScenes keyframe."""

from __future__ import annotations

import argparse
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
    r = evaluate(predictor, samples, EvalConfig(ray_iou=False), progress=False)
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
    # the model's box (+-25.6 m) holds the whole +-12.8 m grid: one section, reported under both names
    sc = r["occupancy_scores"]
    assert sc["model_box"]["model"] == sc["benchmark_grid"]["model"] and "holds the whole" in sc["model_box"]["region"]
    assert "ray_iou" not in sc["model_box"]["model"]
    # depth ranges: all GT lies below the 80 m cap; the GT points (back-projected) outside the model's box
    # are the far corners of sample 2's doubled plane
    dr = r["depth_ranges"]
    assert dr["num_pixels_with_gt"] == int(sum((s.gt.depth > 0.1).sum() for s in samples))
    assert dr["share_beyond_cap"] == 0
    outside = 0
    box = predictor.grid
    for s in samples:
        f, z = s.frame, s.gt.depth
        v, u = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
        pix = torch.stack([u, v, torch.ones_like(u)], -1)  # [H, W, 3]
        for n in range(3):
            cam = (pix @ torch.linalg.inv(f.K[n]).T) * z[n][..., None]
            ego = cam @ f.T_ego_cam[n, :3, :3].T + f.T_ego_cam[n, :3, 3]
            out = ((ego < torch.tensor(box.lower)) | (ego > torch.tensor(box.upper))).any(-1)
            outside += int((out & (z[n] > 0.1)).sum())
    assert outside > 0 and dr["share_outside_box"] == pytest.approx(outside / dr["num_pixels_with_gt"])
    assert sum(b["num_pixels"] for b in dr["by_range"].values()) == dr["num_pixels_with_gt"]


def test_evaluate_post_process_and_max_samples(predictor):
    samples = [_sample(0, 0.0)]
    r = evaluate(predictor, samples, EvalConfig(post_process=True, novel_depth=False, max_samples=1, ray_iou=False), progress=False)
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
    full = evaluate(predictor, [s], EvalConfig(novel_depth=False, ray_iou=False), progress=False)["occupancy"]
    crop = evaluate(predictor, [s], EvalConfig(novel_depth=False, crop_to_model=True, ray_iou=False),
                    progress=False)["occupancy"]
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
                 EvalConfig(novel_depth=False, ground_height=0.0, ray_iou=False), progress=False)
    base = r["ground_plane_baseline"]
    assert base["iou"] == pytest.approx(3072 / 3584)
    assert base["precision"] == pytest.approx(1.0)
    assert base["recall"] == pytest.approx(3072 / 3584)
    assert "ground-plane-only baseline" in format_summary(r)
    assert evaluate(predictor, [_sample(0, 0.0)], EvalConfig(novel_depth=False, ray_iou=False), progress=False)[
        "ground_plane_baseline"] is None


# ------------------------------------------------------------------ the model's box vs the benchmark grid
@pytest.fixture(scope="module")
def plane_predictor(tmp_path_factory):
    """A model whose SDF is exactly z - 1.2 (head weights 0, bias -1.6 on the prior z + 0.4) with the
    flat-ground baseline at ground_height -0.4: the model predicts one layer more than the baseline."""
    torch.manual_seed(0)
    cfg = _config(ground_height=-0.4)
    m = SelfOccModel(cfg.model)
    with torch.no_grad():
        m.decoder.head.weight[0].zero_()
        m.decoder.head.bias[0].fill_(-1.6)
    path = tmp_path_factory.mktemp("ckpt") / "plane.pt"
    save_checkpoint(path, model=m, config=cfg, step=0, with_rng=False)
    return path, OccupancyPredictor.from_checkpoint(path, device="cpu")


def test_eval_cli_scores_the_model_box_apart_from_the_benchmark_grid(plane_predictor):
    """Bug 1: `selfocc eval` scored a model whose box (+-25.6 m) is smaller than the benchmark grid
    over the whole grid, where the model is free by construction, against a baseline credited with
    ground everywhere: even a perfect in-box prediction lost to the baseline."""
    from selfocc_core.evaluation import cli

    path, predictor = plane_predictor
    big = VoxelGridSpec(-64.0, 64.0, -64.0, 64.0, -2.0, 4.4, 0.8)  # z centres -1.6, -0.8, 0, 0.8, 1.6, ...
    sem = torch.full(big.shape, FREE_LABEL, dtype=torch.uint8)
    sem[:, :, :3] = ROAD
    sem[:, :, 3] = CLASS_ID["others"]  # the layer z in [0.4, 1.2): above the baseline's ground, not a ground class
    s = _sample(0, 0.0)
    s.gt = GroundTruth(grid=big, occ_semantics=sem, depth=None)
    samples = [s]
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    args = p.parse_args(["--ckpt", str(path), "--data", "synthetic", "--json", "x.json"])
    r = evaluate(predictor, samples, cli.eval_config(args, predictor), progress=False)
    box, grid = r["occupancy_scores"]["model_box"], r["occupancy_scores"]["benchmark_grid"]
    # in the box the model is perfect (4 layers), the references claim 3 of the 4 occupied layers
    assert box["model"]["iou"] == 1.0
    assert box["flat_ground"]["iou"] == pytest.approx(0.75) and box["perfect_ground"]["iou"] == pytest.approx(0.75)
    assert box["model"]["above_ground"]["iou"] == 1.0 and box["flat_ground"]["above_ground"]["recall"] == 0.0
    assert box["model"]["ray_iou"]["ray_iou"] == 1.0 > box["flat_ground"]["ray_iou"]["ray_iou"]
    # over the whole grid the model covers 64 x 64 of the 160 x 160 columns; the baseline covers all
    assert grid["model"]["iou"] == pytest.approx(64 * 64 / 160**2) and grid["flat_ground"]["iou"] == pytest.approx(0.75)
    assert box["num_voxels"] == 64 * 64 * 8 and grid["num_voxels"] == 160 * 160 * 8
    assert "inside the model's box" in box["region"] and "whole benchmark grid" in grid["region"]
    text = format_summary(r)
    assert "MODEL'S BOX" in text and "BENCHMARK GRID" in text and "perfect ground" in text
    assert "RayIoU (geometry)" in text and "above-ground IoU 0-10m" in text


def test_eval_cli_on_synthetic_writes_both_sections_and_depth_ranges(ckpt, tmp_path, capsys):
    out = tmp_path / "eval.json"
    rc = selfocc_main(["eval", "--ckpt", str(ckpt), "--data", f"synthetic:frames=1,cache_dir={tmp_path / 'cache'}",
                       "--json", str(out), "--no-progress", "--device", "cpu", "--no-novel-depth"])
    assert rc == 0
    res = json.loads(out.read_text())
    sections = res["occupancy_scores"]
    assert set(sections) == {"model_box", "benchmark_grid"}
    for sec in sections.values():
        for name in ("model", "flat_ground", "perfect_ground"):
            s = sec[name]
            assert 0 <= s["iou"] <= 1 and 0 <= s["ray_iou"]["ray_iou"] <= 1 and s["ray_iou"]["num_rays"] > 0
            assert set(s["above_ground"]["by_range"]) == {"0-10m", "10-20m", "20-40m"}
        # the references predict nothing above the ground layer
        assert sec["flat_ground"]["above_ground"]["recall"] == 0 == sec["perfect_ground"]["above_ground"]["recall"]
        assert sec["perfect_ground"]["precision"] == 1.0
    assert sections["model_box"]["num_voxels"] < sections["benchmark_grid"]["num_voxels"]
    dr = res["depth_ranges"]
    assert sum(b["num_pixels"] for b in dr["by_range"].values()) <= dr["num_pixels_with_gt"]
    assert 0 < dr["share_outside_box"] <= dr["share_beyond_reach"] <= 1  # the 51.2 m box misses far walls
    printed = capsys.readouterr().out
    assert "MODEL'S BOX" in printed and "BENCHMARK GRID" in printed and "outside the model's box" in printed
