"""`selfocc demo`: the main job, on a given checkpoint + real data (default suite) and end to end
with training and the checkpoint cache (slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from selfocc_core import demo
from selfocc_core.cli import main as selfocc_main
from selfocc_core.geometry.voxel_grid import OCC3D_NUSCENES, VoxelGridSpec
from selfocc_core.model import SelfOccModel
from selfocc_core.training.checkpoint import save_checkpoint
from test_predictor_core import _config


def test_display_grid_crops_gt_to_the_model_box():
    model = VoxelGridSpec(-25.6, 25.6, -25.6, 25.6, -2.0, 4.4, 0.8)
    grid, sl = demo._display_grid(model, OCC3D_NUSCENES)
    # (-25.6 - -40) / 0.4 = 36 voxels in, 128 voxels wide; z stays the GT's
    assert grid == VoxelGridSpec(-25.6, 25.6, -25.6, 25.6, -1.0, 5.4, 0.4)
    assert (sl[0].start, sl[0].stop, sl[1].start, sl[1].stop) == (36, 164, 36, 164)
    gt = np.zeros(OCC3D_NUSCENES.shape)
    assert gt[sl].shape == grid.shape


def test_config_key_follows_the_config():
    a = demo._train_config("tiny_synth", 10)
    b = demo._train_config("tiny_synth", 11)
    assert a.train.steps == 10 and a.train.eval_interval == 0 and a.train.num_workers == 0
    assert demo._config_key(a, "synthetic") == demo._config_key(demo._train_config("tiny_synth", 10), "synthetic")
    assert demo._config_key(a, "synthetic") != demo._config_key(b, "synthetic")
    assert demo._config_key(a, "synthetic") != demo._config_key(a, "synthetic:seed=1")


def test_camera_display_order():
    assert demo._camera_display_order(["CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT"]) == [2, 0, 1]
    assert demo._camera_display_order(["image_2"]) == [0]


def test_demo_with_checkpoint_on_real_nuscenes(tmp_path, real_data_dir, capsys):
    torch.manual_seed(0)
    cfg = _config()
    ckpt = tmp_path / "init.pt"
    save_checkpoint(ckpt, model=SelfOccModel(cfg.model), config=cfg, step=0, with_rng=False)
    pkl = next((real_data_dir / "nuscenes_keyframe").glob("*.pkl"))
    out = tmp_path / "out"
    rc = selfocc_main(["demo", "--ckpt", str(ckpt), "--data", str(pkl), "--out", str(out), "--eval-frames", "1",
                       "--no-progress", "--device", "cpu"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["trained"]["num_samples"] == 1 and m["trained"]["depth"]["num_images"] == 3
    assert m["trained"]["occupancy"] is None  # the keyframe has LiDAR depth only
    depth_png = np.asarray(Image.open(out / "depth.png"))
    occ_png = np.asarray(Image.open(out / "occupancy.png"))
    assert depth_png.shape[0] > 300 and depth_png.shape[1] > 400 and depth_png.std() > 10
    assert occ_png.shape[0] > 300 and occ_png.std() > 10
    video = out / m["files"]["video"].split("/")[-1]
    assert video.exists() and video.suffix in (".mp4", ".gif")
    text = capsys.readouterr().out
    assert "=== selfocc demo ===" in text and "AbsRel" in text


def test_comparison_lines_put_both_networks_beside_the_references():
    from selfocc_core.evaluation.evaluate import EvalConfig, evaluate
    from selfocc_core.inference.predictor import OccupancyPredictor
    from test_eval_evaluate import _sample

    torch.manual_seed(0)
    cfg = _config()
    trained = OccupancyPredictor(SelfOccModel(cfg.model), cfg)
    flat = OccupancyPredictor(SelfOccModel(cfg.model), cfg)
    with torch.no_grad():
        trained.model.decoder.head.bias[0].fill_(-0.8)  # the surface 0.8 m higher: one layer more
    samples = [_sample(0, 0.0)]
    ecfg = EvalConfig(novel_depth=False, ground_height=cfg.model.ground_height)
    lines = demo.comparison_lines(evaluate(trained, samples, ecfg, progress=False),
                                  evaluate(flat, samples, ecfg, progress=False))
    header = next(ln for ln in lines if "perfect ground" in ln)
    assert header.split() == ["trained", "untrained", "flat", "ground", "perfect", "ground"]
    iou = next(ln for ln in lines if ln.strip().startswith("IoU")).split()[1:]
    # GT: the 3 layers with centres <= 0.4 m, the 4th seen on half of the grid. The untrained SDF z - 0.4
    # gives those 3 layers exactly; the trained one (z - 1.2) and the flat ground (lower faces <= 0.4 m)
    # add the 4th: 3072 / (3072 + 512) in percent
    assert [float(x) for x in iou] == [85.71, 100.0, 85.71, 100.0]
    assert any(ln.strip().startswith("RayIoU (geometry)") for ln in lines)
    assert any("trained depth: AbsRel" in ln for ln in lines) and any("untrained depth" in ln for ln in lines)


@pytest.mark.slow
def test_demo_with_checkpoint_on_synthetic_reports_scores_beside_references(tmp_path, capsys):
    torch.manual_seed(0)
    cfg = _config()
    ckpt = tmp_path / "init.pt"
    save_checkpoint(ckpt, model=SelfOccModel(cfg.model), config=cfg, step=0, with_rng=False)
    out = tmp_path / "out"
    rc = selfocc_main(["demo", "--ckpt", str(ckpt), "--data", f"synthetic:frames=1,cache_dir={tmp_path / 'cache'}",
                       "--out", str(out), "--eval-frames", "1", "--no-progress", "--device", "cpu"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    for run in ("trained", "untrained_baseline"):
        box = m[run]["occupancy_scores"]["model_box"]
        assert set(box) >= {"model", "flat_ground", "perfect_ground"}
        assert "ray_iou" in box["model"] and "by_range" in box["model"]["above_ground"]
        assert m[run]["occupancy_scores"]["benchmark_grid"]["num_voxels"] > box["num_voxels"]
        assert m[run]["depth_ranges"]["max_depth"] == 25.6  # the demo caps depth at the box's half-width
    # the same references on the same voxels in both runs
    assert (m["trained"]["occupancy_scores"]["model_box"]["perfect_ground"]
            == m["untrained_baseline"]["occupancy_scores"]["model_box"]["perfect_ground"])
    text = capsys.readouterr().out
    assert "occupancy in the model's box" in text and "occupancy on the whole GT grid" in text
    header = next(ln for ln in text.splitlines() if "perfect ground" in ln)
    assert header.split() == ["trained", "untrained", "flat", "ground", "perfect", "ground"]
    assert "RayIoU (geometry)" in text and "outside the model's box" in text


def test_demo_bad_arguments(tmp_path, capsys):
    assert selfocc_main(["demo", "--ckpt", str(tmp_path / "none.pt"), "--out", str(tmp_path / "o")]) == 2
    assert "none.pt" in capsys.readouterr().err
    assert selfocc_main(["demo", "--steps", "0", "--out", str(tmp_path / "o")]) == 2


@pytest.mark.slow
def test_demo_trains_then_reuses_its_cached_checkpoint(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--steps", "3", "--eval-frames", "2", "--out", str(out), "--no-progress", "--device", "cpu"]
    assert selfocc_main(args) == 0
    first = json.loads((out / "metrics.json").read_text())
    assert first["training"]["cached"] is False and first["training"]["steps"] == 3
    occ = first["trained"]["occupancy"]
    assert 0.0 <= occ["iou"] <= 1.0 and first["trained"]["novel_depth"]["num_images"] == 3
    for name in ("depth.png", "occupancy.png"):
        assert (out / name).stat().st_size > 10_000
    capsys.readouterr()
    assert selfocc_main(args) == 0
    assert "reusing the checkpoint" in capsys.readouterr().out
    second = json.loads((out / "metrics.json").read_text())
    assert second["training"]["cached"] is True
    assert second["trained"]["occupancy"]["iou"] == pytest.approx(occ["iou"])
