"""RayIoU, above-ground scores with references, and depth per range bin on hand-made grids and maps
whose answers are worked out by hand below."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from selfocc_core.classes import CLASS_ID, FREE_LABEL
from selfocc_core.evaluation.depth_metrics import DepthEvalConfig
from selfocc_core.evaluation.depth_ranges import DepthRangeMetrics, box_exit_depth
from selfocc_core.evaluation.occupancy_scores import OccupancyScores, flat_ground_labels, perfect_ground_labels
from selfocc_core.evaluation.ray_metrics import (
    RayIoUConfig,
    RayIoUMetrics,
    first_hits,
    lidar_ray_directions,
    usable_origins,
)
from selfocc_core.evaluation.regions import crop_to_box, ground_layer, range_masks
from selfocc_core.geometry.transforms import T_FLU_OPTICAL
from selfocc_core.geometry.voxel_grid import VoxelGridSpec

F = FREE_LABEL
CAR, ROAD, SIDEWALK, MANMADE = (CLASS_ID[c] for c in ("car", "driveable_surface", "sidewalk", "manmade"))


# ------------------------------------------------------------------------------------ rays
def test_lidar_ray_pattern():
    d = lidar_ray_directions()
    assert d.shape == (39 * 360, 3)
    assert torch.allclose(d.norm(dim=-1), torch.ones(len(d), dtype=torch.float64))
    pitch = torch.asin(d[::360, 2])
    assert pitch[0].item() == pytest.approx(-math.pi / 4)
    # ring k (1..10) meets the ground k sensor heights away; the last ring is the first at/above 0.21 rad
    for k in range(1, 11):
        assert 1.0 / math.tan(-pitch[k - 1].item()) == pytest.approx(k)
    assert pitch[-1] >= 0.21 > pitch[-2]
    assert d[0, 1].abs() < 1e-12 and d[90, 0].abs() < 1e-12  # azimuth 0 = +x, 90 = +y


def _brute_force_hit(lab, grid, o, d, step=1e-3):
    """March in tiny steps: first occupied voxel, and where the ray leaves it."""
    lo = np.array(grid.lower)
    shape = np.array(grid.shape)
    t, hit, hit_ijk = 0.0, None, None
    while True:
        ijk = np.floor((o + t * d - lo) / grid.voxel_size).astype(int)
        if (ijk < 0).any() or (ijk >= shape).any():
            return (F, t) if hit is None else (hit, t)
        if hit is None and lab[tuple(ijk)] != F:
            hit, hit_ijk = int(lab[tuple(ijk)]), ijk
        elif hit is not None and (ijk != hit_ijk).any():
            return hit, t
        t += step


def test_first_hits_match_brute_force_marching():
    rng = np.random.default_rng(0)
    grid = VoxelGridSpec(-1.5, 1.5, -1.0, 1.5, -0.5, 1.5, 0.5)  # 6 x 5 x 4
    lab = np.where(rng.random(grid.shape) < 0.15, rng.integers(0, 17, grid.shape), F).astype(np.int64)
    origins = torch.tensor([[0.1, 0.2, 0.3], [-1.2, -0.7, 1.2]], dtype=torch.float64)
    dirs = torch.nn.functional.normalize(torch.tensor(rng.normal(size=(40, 3))), dim=-1)
    got_l, got_d = first_hits(torch.from_numpy(lab)[None], grid, origins, dirs)
    for t in range(2):
        for r in range(40):
            el, ed = _brute_force_hit(lab, grid, origins[t].numpy(), dirs[r].numpy())
            assert got_l[0, t * 40 + r].item() == el
            assert got_d[0, t * 40 + r].item() == pytest.approx(ed, abs=3e-3)


def test_first_hits_straight_down_and_bad_input():
    grid = VoxelGridSpec(0, 4, 0, 4, 0, 4, 1.0)
    lab = torch.full((1, 4, 4, 4), F)
    lab[0, :, :, 0] = ROAD  # the floor layer z in [0, 1)
    lab_, dep = first_hits(lab, grid, torch.tensor([[1.5, 1.5, 2.5]]), torch.tensor([[0.0, 0.0, -1.0]]))
    assert lab_.item() == ROAD and dep.item() == pytest.approx(2.5)  # leaves the floor voxel at z = 0
    with pytest.raises(ValueError, match="inside the grid"):
        first_hits(lab, grid, torch.tensor([[5.0, 1.0, 1.0]]), torch.tensor([[1.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="labels must be"):
        first_hits(lab[0], grid, torch.tensor([[1.0, 1.0, 1.0]]), torch.tensor([[1.0, 0.0, 0.0]]))
    o = usable_origins(torch.tensor([[1.5, 1.5, 1.0], [0.5, 1.5, 1.0], [1.5, 1.5, 9.0]]), grid, margin=1.0)
    assert o.tolist() == [[1.5, 1.5, 1.0]]  # 0.5 m from the x border, and above the grid: dropped
    # the current frame's origin (first) is kept anywhere inside the grid, e.g. a grid starting at the sensor
    o = usable_origins(torch.tensor([[0.25, 1.5, 1.0], [0.5, 1.5, 1.0], [-0.5, 1.5, 1.0]]), grid, margin=1.0)
    assert o.tolist() == [[0.25, 1.5, 1.0]]
    assert usable_origins(torch.tensor([[-0.5, 1.5, 1.0]]), grid).shape == (0, 3)


def _ray_case():
    """11 x 11 x 3 grid of 1 m voxels, origin in voxel (5, 5, 1), rays +x, -x, +y, -y, +z:

    ray  GT hit (depth)        predicted hit (depth)
    +x   car at x=8 (3.5)      car at x=9 (4.5): 1 m off
    -x   manmade at x=2 (3.5)  car at x=2 (3.5): wrong class
    +y   nothing               car at y=8: not scored (GT ray is free)
    -y   car at y=1 (4.5)      car at y=1 (4.5): exact
    +z   nothing               nothing
    """
    grid = VoxelGridSpec(0, 11, 0, 11, 0, 3, 1.0)
    gt = np.full(grid.shape, F, np.uint8)
    pred = gt.copy()
    gt[8, 5, 1], gt[2, 5, 1], gt[5, 1, 1] = CAR, MANMADE, CAR
    pred[9, 5, 1], pred[2, 5, 1], pred[5, 8, 1], pred[5, 1, 1] = CAR, CAR, CAR, CAR
    dirs = torch.tensor([[1.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0], [0, -1.0, 0], [0, 0, 1.0]], dtype=torch.float64)
    return grid, gt, pred, dirs, torch.tensor([[5.5, 5.5, 1.5]])


def test_ray_iou_semantic_by_hand():
    grid, gt, pred, dirs, origins = _ray_case()
    m = RayIoUMetrics(RayIoUConfig(semantic=True), directions=dirs)
    m.update(pred, gt, grid, origins)
    r = m.compute()
    # car: 2 GT rays (+x, -y), 3 predicted among the scored rays (+x, -x, -y); manmade: 1 GT, 0 predicted.
    # @1: car TP 1 (-y) -> 1/4, manmade 0 -> mean 1/8; @2 and @4: car TP 2 -> 2/3, manmade 0 -> 1/3
    assert r["num_rays"] == 3
    assert r["ray_iou@1"] == pytest.approx(1 / 8)
    assert r["ray_iou@2"] == pytest.approx(1 / 3) and r["ray_iou@4"] == pytest.approx(1 / 3)
    assert r["ray_iou"] == pytest.approx((1 / 8 + 2 / 3) / 3)
    assert r["per_class"]["car"] == pytest.approx((1 / 4 + 2 / 3 + 2 / 3) / 3)
    assert r["per_class"]["manmade"] == 0.0 and math.isnan(r["per_class"]["bus"])


def test_ray_iou_geometry_by_hand():
    grid, gt, pred, dirs, origins = _ray_case()
    m = RayIoUMetrics(RayIoUConfig(semantic=False), directions=dirs)
    m.update(pred, gt, grid, origins)
    r = m.compute()
    # any class matches: @1 TP = -x, -y (2 of 3 GT, 3 predicted) -> 2/4; @2, @4: all 3 -> 1
    assert r["ray_iou@1"] == pytest.approx(0.5) and r["ray_iou@2"] == 1.0 and r["ray_iou@4"] == 1.0
    assert r["ray_iou"] == pytest.approx(2.5 / 3)
    assert "per_class" not in r


def test_ray_iou_extremes_on_a_street():
    grid = VoxelGridSpec(-20, 20, -20, 20, -1.2, 4.4, 0.8)
    gt = np.full(grid.shape, F, np.uint8)
    gt[:, :, :2] = ROAD
    gt[30:33, 22:28, 2:5] = CAR
    origins = torch.tensor([[0.0, 0.0, 1.8], [-4.0, 0.0, 1.8], [30.0, 0.0, 1.8]])  # the last is outside: dropped
    perfect, empty = RayIoUMetrics(RayIoUConfig(semantic=False)), RayIoUMetrics(RayIoUConfig(semantic=False))
    perfect.update(gt, gt, grid, origins)
    empty.update(np.full(grid.shape, F, np.uint8), gt, grid, origins)
    assert perfect.compute()["ray_iou"] == 1.0 and empty.compute()["ray_iou"] == 0.0
    assert perfect.num_rays == empty.num_rays > 0
    none = RayIoUMetrics()
    assert math.isnan(none.compute()["ray_iou"]) and none.compute()["num_rays"] == 0


# --------------------------------------------------------------------------------- regions
def test_crop_to_box_and_range_bins():
    g = VoxelGridSpec(-40, 40, -40, 40, -1, 5.4, 0.4)
    sub, sl = crop_to_box(g, VoxelGridSpec(-25.6, 25.6, -25.6, 25.6, -2, 4.4, 0.8))
    assert sub == VoxelGridSpec(-25.6, 25.6, -25.6, 25.6, -1, 4.6, 0.4)  # centres up to z = 4.4 (closed box)
    assert sl == (slice(36, 164), slice(36, 164), slice(0, 14))
    assert crop_to_box(g, VoxelGridSpec(50, 60, 0, 1, 0, 1, 1)) is None
    masks = range_masks(VoxelGridSpec(0, 30, 0, 1, 0, 1, 1.0))
    assert [int(m.sum()) for m in masks.values()] == [10, 10, 10]  # centres 0.5 .. 29.5 m


def test_ground_layer_includes_gt_ground_classes():
    grid = VoxelGridSpec(0, 2, 0, 1, -1, 2, 1.0)  # layers z [-1, 0), [0, 1), [1, 2)
    gt = np.full(grid.shape, F, np.uint8)
    gt[:, :, 0] = ROAD
    gt[1, 0, 1] = SIDEWALK  # a kerb above the plane
    gt[0, 0, 1] = CAR
    layer = ground_layer(grid, -0.5, gt)
    assert layer[:, :, 0].all() and layer[1, 0, 1] and not layer[0, 0, 1] and not layer[:, :, 2].any()
    assert (flat_ground_labels(grid, -0.5)[:, :, 0] == ROAD).all()
    pg = perfect_ground_labels(gt, grid, -0.5)
    assert pg[1, 0, 1] == SIDEWALK and pg[0, 0, 1] == F and (pg[:, :, 0] == ROAD).all()


# ------------------------------------------------------------------ scores with references
def _street():
    """40 x 40 m, 1 m voxels, layers z [-1,0) [0,1) [1,2) [2,3); ground_height -0.5 (flat = layer 0).
    GT: road layer 0 (1600), sidewalk kerb y in [19, 20) layer 1 (40), a car at x [5, 7) y [0, 2)
    layers 1-2 (8, 5-7 m away), a wall at x [15, 16) y [-10, 10) layers 1-3 (60, 15-18.2 m away).
    Model: road + the car + 4 false voxels at x [12, 13) y [-20, -16) layer 1 (20.7-23.4 m away)."""
    grid = VoxelGridSpec(-20, 20, -20, 20, -1, 3, 1.0)
    gt = np.full(grid.shape, F, np.uint8)
    gt[:, :, 0] = ROAD
    gt[:, 39, 1] = SIDEWALK
    gt[25:27, 20:22, 1:3] = CAR
    gt[35, 10:30, 1:4] = MANMADE
    pred = np.full(grid.shape, F, np.uint8)
    pred[:, :, 0] = ROAD
    pred[25:27, 20:22, 1:3] = CAR
    pred[32, 0:4, 1] = CAR
    return grid, gt, pred


def test_occupancy_scores_by_hand():
    grid, gt, pred = _street()
    s = OccupancyScores(semantic=False)
    s.update({"model": pred}, gt, grid, ground_height=-0.5, origins=torch.tensor([[0.5, 0.5, 1.5]]))
    r = s.compute()
    m, flat, perfect = r["model"], r["flat_ground"], r["perfect_ground"]
    occupied = 1600 + 40 + 8 + 60
    assert m["iou"] == pytest.approx(1608 / (occupied + 4)) and m["precision"] == pytest.approx(1608 / 1612)
    assert flat["iou"] == pytest.approx(1600 / occupied) and flat["precision"] == 1.0
    assert perfect["iou"] == pytest.approx(1640 / occupied) and perfect["precision"] == 1.0
    # above ground: 4800 voxels of layers 1-3 less the 40 kerb voxels; GT there: car 8 + wall 60
    assert r["num_above_ground_voxels"] == 4800 - 40 and r["num_voxels"] == 6400
    a = m["above_ground"]
    assert a["iou"] == pytest.approx(8 / 72) and a["precision"] == pytest.approx(8 / 12)
    assert a["recall"] == pytest.approx(8 / 68)
    by = a["by_range"]
    assert by["0-10m"] == {"iou": 1.0, "precision": 1.0, "recall": 1.0}
    assert by["10-20m"]["iou"] == 0.0 and by["10-20m"]["recall"] == 0.0 and math.isnan(by["10-20m"]["precision"])
    assert by["20-40m"]["iou"] == 0.0 and by["20-40m"]["precision"] == 0.0
    for ref in (flat, perfect):  # ground-only predictions find nothing above the ground by construction
        assert ref["above_ground"]["iou"] == 0.0 and ref["above_ground"]["recall"] == 0.0
    # RayIoU on the same rays: the car is worth rays the ground-only predictions lose
    assert m["ray_iou"]["num_rays"] == flat["ray_iou"]["num_rays"] == perfect["ray_iou"]["num_rays"] > 0
    assert m["ray_iou"]["ray_iou"] > perfect["ray_iou"]["ray_iou"] >= flat["ray_iou"]["ray_iou"]
    assert "miou" not in m and "ray_miou" not in m


def test_occupancy_scores_semantic_perfect_prediction_and_errors():
    grid, gt, _ = _street()
    s = OccupancyScores(semantic=True)
    s.update({"model": gt}, gt, grid, ground_height=-0.5, origins=torch.tensor([[0.5, 0.5, 1.5], [-3.5, 0.5, 1.5]]))
    r = s.compute()
    assert r["model"]["iou"] == 1.0 and r["model"]["miou"] == 1.0
    assert r["model"]["ray_iou"]["ray_iou"] == 1.0 and r["model"]["ray_miou"]["ray_miou"] == 1.0
    assert r["perfect_ground"]["ray_miou"]["ray_miou"] < 1.0
    assert r["model"]["above_ground"]["iou"] == 1.0
    with pytest.raises(ValueError, match="reserved"):
        s.update({"flat_ground": gt}, gt, grid, 0.0)
    with pytest.raises(ValueError, match="does not match grid"):
        s.update({"model": gt[:-1]}, gt, grid, 0.0)


def test_occupancy_scores_mask_and_unknown_gt():
    grid, gt, pred = _street()
    gt = gt.copy()
    gt[35, 10:30, 1:4] = 255  # the wall is unknown in GT: neither a miss nor scored
    mask = np.ones(grid.shape, bool)
    mask[25:27, 20:22, 1:3] = False  # the car is not seen by a camera
    s = OccupancyScores()
    s.update({"model": pred}, gt, grid, ground_height=-0.5, mask=mask)
    a = s.compute()["model"]["above_ground"]
    assert a["iou"] == 0.0 and a["precision"] == 0.0  # only the 4 false voxels remain above ground
    assert "ray_iou" not in s.compute()["model"]  # no origins given


# ------------------------------------------------------------------------------------ depth
def test_depth_ranges_by_hand():
    gt = np.array([[5.0, 15.0, 30.0, 50.0, 90.0, 0.0]])
    pred = np.array([[5.0, 12.0, 24.0, 50.0, 80.0, 3.0]])
    m = DepthRangeMetrics(DepthEvalConfig(max_depth=25.0))
    m.update(pred, gt, exit_depth=np.full_like(gt, 40.0))
    r = m.compute()
    assert r["num_pixels_with_gt"] == 5 and r["share_beyond_cap"] == pytest.approx(3 / 5)  # 30, 50, 90 m
    assert r["share_outside_box"] == pytest.approx(2 / 5) and r["share_beyond_reach"] == pytest.approx(3 / 5)
    by = r["by_range"]
    assert by["0-10m"] == {"abs_rel": 0.0, "rmse": 0.0, "a1": 1.0, "num_pixels": 1}
    assert by["10-20m"]["abs_rel"] == pytest.approx(0.2) and by["10-20m"]["rmse"] == pytest.approx(3.0)
    assert by["10-20m"]["a1"] == 0.0  # 15 / 12 = 1.25 is not < 1.25
    assert by["20-40m"]["abs_rel"] == pytest.approx(0.2)  # beyond the 25 m cap, still scored here
    assert by["40-80m"]["abs_rel"] == 0.0 and by["40-80m"]["num_pixels"] == 1  # 90 m lies in no bin
    no_box = DepthRangeMetrics()
    no_box.update(pred, gt)
    assert "share_outside_box" not in no_box.compute() and no_box.compute()["share_beyond_cap"] == pytest.approx(1 / 5)


def test_depth_ranges_median_scaling_does_not_touch_input():
    gt = np.array([[10.0, 20.0, 30.0]])
    pred = gt / 2
    m = DepthRangeMetrics(DepthEvalConfig(median_scaling=True))
    m.update(pred, gt)
    assert all(b["abs_rel"] == pytest.approx(0.0) for b in m.compute()["by_range"].values() if b["num_pixels"])
    assert pred[0, 0] == 5.0


def test_box_exit_depth_of_a_forward_camera():
    K = torch.tensor([[[20.0, 0, 7.5], [0, 20.0, 5.5], [0, 0, 1.0]]])
    T = torch.tensor(T_FLU_OPTICAL, dtype=torch.float32)[None].clone()
    T[0, :3, 3] = torch.tensor([2.0, 0.0, 1.5])
    box = VoxelGridSpec(-25.6, 25.6, -25.6, 25.6, -2.0, 4.4, 0.8)
    z = box_exit_depth(K, T, (12, 16), box)
    assert z.shape == (1, 12, 16)
    # rays near the optical axis leave through the front face x = 25.6, 23.6 m ahead of the camera
    assert z[0, 5:7, 7:9] == pytest.approx(torch.full((2, 2), 23.6), abs=1e-4)
    # the bottom row looks down 5.5/20 -> meets z = -2 (3.5 m below) at depth 3.5 * 20 / 5.5 = 12.7 m
    assert z[0, 11, 7].item() == pytest.approx(3.5 * 20 / 5.5, abs=1e-3)
