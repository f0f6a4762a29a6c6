"""Stereo reference depth (SGBM + left-right check) and scoring a single real KITTI drive with it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from selfocc_core.data.config import DataConfig
from selfocc_core.data.kitti import KittiOdometryDataset
from selfocc_core.data.stereo_depth import (
    StereoConfig, cached_stereo_depth, decode_depth_png, encode_depth_png, left_right_consistent,
    resize_depth_nearest, stereo_depth,
)

FX, BASELINE, CY = 721.5377, 0.532712, 172.854  # kitti_raw_0001 (its README)


def _textured_pair(shift: int, H: int = 96, W: int = 256, seed: int = 0):
    """A random-texture fronto-parallel plane: the right image is the left shifted by `shift` px."""
    rng = np.random.default_rng(seed)
    import cv2

    tex = cv2.GaussianBlur(rng.integers(0, 200, (H, W + shift)).astype(np.uint8), (3, 3), 0)
    return np.ascontiguousarray(tex[:, :W]), np.ascontiguousarray(tex[:, shift:])  # left(x) = right(x - shift)


def test_left_right_check_hand_made():
    d_left = np.array([[2.0, 2.0, 2.0, 2.0, 2.0]])
    d_right = np.array([[2.0, 2.0, 2.0, 5.0, 2.0]])
    # x=0,1: x - d < 0 (no match in the right image); x=2 -> xr=0 ok; x=3 -> xr=1 ok; x=4 -> xr=2 ok
    assert left_right_consistent(d_left, d_right, 1.0).tolist() == [[False, False, True, True, True]]
    d_right[0, 1] = 3.5  # x=3 looks up xr=1: |2 - 3.5| > 1
    assert left_right_consistent(d_left, d_right, 1.0).tolist() == [[False, False, True, False, True]]
    assert not left_right_consistent(-np.ones((1, 5)), d_right).any()  # unmatched


def test_stereo_depth_of_a_known_plane():
    shift = 12
    L, R = _textured_pair(shift)
    depth = stereo_depth(L, R, FX, BASELINE, cy=-1.0)  # cy above the image: no sky test
    valid = depth > 0
    assert valid[:, 40:-10].mean() > 0.9
    err = np.abs(depth[valid] / (FX * BASELINE / shift) - 1)
    assert np.median(err) < 1e-4 and (err < 0.02).mean() > 0.99, (np.median(err), (err < 0.02).mean())
    assert valid[:, :shift].mean() < 0.2  # mostly no partner pixel there
    off = stereo_depth(L, R, FX, BASELINE, cy=-1.0, cfg=StereoConfig(disparity_offset=1.0))
    assert np.median(off[off > 0]) == pytest.approx(FX * BASELINE / (shift + 1), rel=0.01)
    with pytest.raises(ValueError, match="baseline"):
        stereo_depth(L, R, FX, -0.5, cy=0.0)
    with pytest.raises(ValueError, match="size"):
        stereo_depth(L, R[:, :-1], FX, BASELINE, cy=0.0)


def test_depth_png_round_trip_and_resize(tmp_path):
    d = np.array([[0.0, 1.0, 12.3456], [80.0, 0.004, 200.0]], np.float32)
    p = tmp_path / "d.png"
    p.write_bytes(encode_depth_png(d))
    back = decode_depth_png(p)
    assert np.allclose(back, d, atol=1 / 512) and back[0, 0] == 0
    big = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert resize_depth_nearest(big, 3, 2).tolist() == [[1, 3], [5, 7], [9, 11]]  # centres 1.0, 3.0
    assert resize_depth_nearest(big, 3, 4) is big


def _camera_height(depth: np.ndarray, K: np.ndarray) -> float:
    """Distance of the camera from a plane fitted (trimmed least squares) to the road pixels below the
    horizon in the image centre, nearer than 25 m."""
    v, u = np.nonzero(depth > 0)
    keep = (v > 250) & (u > 350) & (u < 900) & (depth[v, u] < 25)
    z = depth[v[keep], u[keep]].astype(np.float64)
    pts = np.stack([(u[keep] - K[0, 2]) * z / K[0, 0], (v[keep] - K[1, 2]) * z / K[1, 1], z], -1)
    inl = np.ones(len(pts), bool)
    for _ in range(5):
        c = pts[inl].mean(0)
        n = np.linalg.svd(pts[inl] - c, full_matrices=False)[2][-1]
        r = np.abs((pts - c) @ n)
        inl = r < max(0.05, np.percentile(r, 60))
    return float(abs(c @ n))


def test_kitti_raw_0001_stereo_reference(real_data_dir, tmp_path):
    """The real drive's stereo depth: ~80 % valid at full size, the road 1.6 m below the camera
    (KITTI's rig: 1.65 m; the README's plane fit 1.63 m), cached on disk, served as GT depth."""
    root = real_data_dir / "kitti_raw_0001" / "dataset"
    cfg = DataConfig(image_height=375, image_width=1242, cameras=["image_2"], require_context=False,
                     stereo_disparity_offset=0.985, stereo_cache_dir=str(tmp_path / "cache"))
    ds = KittiOdometryDataset(root, cfg, split="val")  # one sequence: served for every split
    assert len(ds) == 108
    seq = ds.sequences[0]
    assert seq.stereo_partners["image_2"][1] == pytest.approx(BASELINE, abs=1e-5)
    heights = []
    for i in (0, 50, 100):
        gt = ds[i].gt
        assert gt is not None and gt.depth.shape == (1, 375, 1242)
        d = gt.depth[0].numpy()
        assert 0.7 < (d > 0).mean() < 0.9
        assert d.max() < cfg.gt_depth_max and (d[d > 0] > 0.9).all()
        heights.append(_camera_height(d, seq.K["image_2"]))
    assert np.allclose(heights, 1.63, atol=0.06), heights
    assert len(list((tmp_path / "cache").glob("*.png"))) == 3
    again = ds[50].gt.depth  # from the cache, identical
    assert np.array_equal(again.numpy(), ds[50].gt.depth.numpy())
    # resized for a smaller network input: nearest samples of the full map
    small = KittiOdometryDataset(root, DataConfig(image_height=94, image_width=311, cameras=["image_2"],
                                                  require_context=False, stereo_disparity_offset=0.985,
                                                  stereo_cache_dir=str(tmp_path / "cache")))
    assert small[50].gt.depth.shape == (1, 94, 311)
    assert len(list((tmp_path / "cache").glob("*.png"))) == 3  # same maps reused
    # LiDAR only: this drive has no scans, so no GT at all
    lidar_only = KittiOdometryDataset(root, DataConfig(cameras=["image_2"], require_context=False,
                                                       gt_depth_source="lidar"))
    assert lidar_only[0].gt is None
    with pytest.raises(ValueError, match="gt_depth_source"):
        DataConfig(gt_depth_source="sonar")


def test_eval_cli_on_single_real_drive(real_data_dir, tmp_path, capsys):
    """`selfocc eval` on kitti_raw_0001 as it is (one sequence, default split val, no LiDAR): metric
    and median-scaled depth against the stereo reference, beside the constant-median and
    flat-ground baselines on the same pixels."""
    import torch

    from selfocc_core.cli import main as selfocc_main
    from selfocc_core.model.selfocc import SelfOccModel
    from selfocc_core.training.checkpoint import save_checkpoint
    from selfocc_core.training.config import load_experiment_config

    from tests.training_fakes import MICRO_OVERRIDES

    torch.manual_seed(0)
    overrides = [o for o in MICRO_OVERRIDES if not o.startswith(("model.scene", "data."))]
    cfg = load_experiment_config("training/kitti_sequence.yaml", overrides + [
        "data.image_height=48", "data.image_width=160",
        "model.scene={x_min: 0.0, x_max: 51.2, y_min: -25.6, y_max: 25.6, z_min: -2.0, z_max: 4.4, voxel_size: 1.6}"])
    ckpt = tmp_path / "untrained.pt"
    save_checkpoint(ckpt, model=SelfOccModel(cfg.model), config=cfg, step=0, with_rng=False)
    out = tmp_path / "k.json"
    rc = selfocc_main(["eval", "--ckpt", str(ckpt), "--data", str(real_data_dir / "kitti_raw_0001"), "--json", str(out),
                       "--image-size", "375x1242", "--max-samples", "2", "--no-progress", "--no-novel-depth"])
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["num_samples"] == 2 and r["image_size"] == [375, 1242]
    base = r["depth_baselines"]
    for d in (r["depth"], r["depth_median_scaled"], base["constant_median"], base["flat_ground"]):
        assert d["num_images"] == 2 and 0 < d["abs_rel"] < 2 and 0 <= d["a1"] <= 1
    # the untrained model is the ground plane: it renders what the analytic flat ground gives
    assert r["depth"]["abs_rel"] == pytest.approx(base["flat_ground"]["abs_rel"], abs=0.12)
    assert base["flat_ground"]["abs_rel"] < base["constant_median"]["abs_rel"]
    text = capsys.readouterr().out
    assert "constant depth at the GT median" in text and "flat ground" in text and "median-scaled" in text
    bad = selfocc_main(["eval", "--ckpt", str(ckpt), "--data", str(real_data_dir / "kitti_raw_0001"), "--json",
                        str(out), "--image-size", "375by1242"])
    assert bad == 2 and "--image-size" in capsys.readouterr().err
