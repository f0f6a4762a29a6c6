"""Metric code on hand-made cases whose answers are worked out by hand below."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from selfocc_core.classes import CLASS_ID, FREE_LABEL
from selfocc_core.evaluation.depth_metrics import DepthEvalConfig, DepthMetrics, depth_errors
from selfocc_core.evaluation.occupancy_metrics import (
    GeometryMetrics,
    OccupancyMetrics,
    PostProcessConfig,
    binary_counts,
    confusion_matrix,
    iou_from_confusion,
    post_process,
)
from selfocc_core.geometry.voxel_grid import VoxelGridSpec

F = FREE_LABEL
CAR, TRUCK, ROAD = CLASS_ID["car"], CLASS_ID["truck"], CLASS_ID["driveable_surface"]


def _grid_case():
    """A 2x2x2 scene (8 voxels), flattened order [0..7]:
    gt:   car car road road | F F F F
    pred: car road road F   | car F F F
    """
    gt = np.array([CAR, CAR, ROAD, ROAD, F, F, F, F], dtype=np.uint8).reshape(2, 2, 2)
    pred = np.array([CAR, ROAD, ROAD, F, CAR, F, F, F], dtype=np.uint8).reshape(2, 2, 2)
    return pred, gt


def test_occupancy_iou_and_miou_by_hand():
    pred, gt = _grid_case()
    m = OccupancyMetrics()
    m.update(pred, gt)
    r = m.compute()
    # Geometry: gt occupied = {0,1,2,3}; pred occupied = {0,1,2,4}. TP=3 (0,1,2), FP=1 (4), FN=1 (3).
    assert r["iou"] == pytest.approx(3 / 5)
    assert r["precision"] == pytest.approx(3 / 4)
    assert r["recall"] == pytest.approx(3 / 4)
    # car: gt {0,1}, pred {0,4}: inter 1, union 3. road: gt {2,3}, pred {1,2}: inter 1, union 3.
    assert r["per_class_iou"]["car"] == pytest.approx(1 / 3)
    assert r["per_class_iou"]["driveable_surface"] == pytest.approx(1 / 3)
    assert math.isnan(r["per_class_iou"]["truck"])  # in neither: skipped
    assert r["miou"] == pytest.approx(1 / 3)
    assert "free" not in r["per_class_iou"]


def test_occupancy_camera_mask_and_accumulation():
    pred, gt = _grid_case()
    mask = np.ones((2, 2, 2), dtype=bool)
    mask.reshape(-1)[4] = False  # hide the false-positive car
    m = OccupancyMetrics()
    m.update(torch.from_numpy(pred), torch.from_numpy(gt), torch.from_numpy(mask))
    r1 = m.compute()
    # Geometry now TP=3, FP=0, FN=1 -> 3/4; car: inter 1, union 2 -> 1/2; road 1/3.
    assert r1["iou"] == pytest.approx(3 / 4)
    assert r1["per_class_iou"]["car"] == pytest.approx(1 / 2)
    assert r1["miou"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    # A second, perfect sample with a truck: counts add up over the split.
    gt2 = np.full((2, 2, 2), F, dtype=np.uint8)
    gt2[0, 0, 0] = TRUCK
    m.update(gt2, gt2, mask)
    r2 = m.compute()
    assert r2["num_samples"] == 2
    assert r2["iou"] == pytest.approx(4 / 5)  # TP 3+1, FP 0, FN 1
    assert r2["per_class_iou"]["truck"] == pytest.approx(1.0)
    assert r2["miou"] == pytest.approx((1 / 2 + 1 / 3 + 1) / 3)


def test_confusion_matrix_rows_are_gt_and_ignore_label_skipped():
    gt = np.array([0, 0, 1, 255])
    pred = np.array([0, 1, 1, 0])
    h = confusion_matrix(pred, gt, 2)
    assert h.tolist() == [[1, 1], [0, 1]]
    assert iou_from_confusion(h).tolist() == pytest.approx([1 / 2, 1 / 2])
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(pred, gt[:3], 2)
    with pytest.raises(ValueError, match="predicted class ids"):
        confusion_matrix(np.array([5]), np.array([0]), 2)


def test_geometry_metrics_semantickitti_style():
    labels = np.array([0, 3, 3, 255, 0, 9])  # 0 empty, 255 ignore
    pred = np.array([1, 1, 0, 1, 0, 1], dtype=bool)
    g = GeometryMetrics()
    g.update(pred, (labels > 0) & (labels != 255), labels != 255)
    r = g.compute()
    # scored idx 0,1,2,4,5: TP {1,5}=2, FP {0}=1, FN {2}=1
    assert r["iou"] == pytest.approx(2 / 4)
    assert r["precision"] == pytest.approx(2 / 3)
    assert r["recall"] == pytest.approx(2 / 3)
    assert binary_counts(pred, labels > 0) == (3, 1, 1, 1)


def test_post_process_height_cut_and_border():
    grid = VoxelGridSpec(0, 2.0, 0, 2.0, 0, 2.0, 0.4)  # 5 x 5 x 5, z centres 0.2 .. 1.8
    labels = np.full(grid.shape, CAR, dtype=np.uint8)
    out = post_process(labels, grid, PostProcessConfig(max_height=1.0, border_voxels=1))
    # z centres 1.4, 1.8 (k=3,4) cut; x/y border of 1 cut -> 3 x 3 x 3 cars remain (k=0..2).
    assert (out != F).sum() == 3 * 3 * 3
    assert (out[1:4, 1:4, :3] == CAR).all()
    assert (labels == CAR).all()  # input untouched
    off = post_process(labels, grid, PostProcessConfig(max_height=None, border_voxels=0))
    assert (off == labels).all()
    with pytest.raises(ValueError, match="does not match grid"):
        post_process(labels[:2], grid)


def test_depth_errors_by_hand():
    gt = np.array([[2.0, 4.0], [0.0, 100.0]])  # 0 = no GT, 100 > 80 m cap: both ignored
    pred = np.array([[1.0, 5.0], [7.0, 7.0]])
    e = depth_errors(pred, gt)
    assert e["num_pixels"] == 2
    # pixels (gt, pred) = (2, 1), (4, 5)
    assert e["abs_rel"] == pytest.approx((1 / 2 + 1 / 4) / 2)
    assert e["sq_rel"] == pytest.approx((1 / 2 + 1 / 4) / 2)
    assert e["rmse"] == pytest.approx(math.sqrt((1 + 1) / 2))
    assert e["rmse_log"] == pytest.approx(math.sqrt((math.log(2) ** 2 + math.log(4 / 5) ** 2) / 2))
    # ratios max(g/p, p/g) = 2, 1.25: 1.25 < 1.25 is false; 1.25 < 1.5625 true; 2 < 1.953 false
    assert (e["a1"], e["a2"], e["a3"]) == pytest.approx((0.0, 0.5, 0.5))


def test_depth_median_scaling_and_clamp():
    gt = np.array([2.0, 4.0, 6.0])
    pred = gt / 3.0  # right shape, wrong scale
    unscaled = depth_errors(pred, gt)
    assert unscaled["abs_rel"] == pytest.approx(2 / 3)
    scaled = depth_errors(pred, gt, DepthEvalConfig(median_scaling=True))
    assert scaled["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert scaled["a1"] == 1.0
    # A prediction beyond the cap is clamped to 80 m: gt 40 vs pred 80 -> abs_rel 1.
    assert depth_errors(np.array([500.0]), np.array([40.0]))["abs_rel"] == pytest.approx(1.0)
    assert depth_errors(np.zeros(3), np.zeros(3)) is None


def test_depth_metrics_mean_over_images():
    m = DepthMetrics()
    gt = torch.tensor([[[2.0, 2.0]], [[4.0, 4.0]], [[0.0, 0.0]]])  # 3 images [1, 2]; last has no GT
    pred = torch.tensor([[[1.0, 1.0]], [[4.0, 4.0]], [[3.0, 3.0]]])
    m.update(pred, gt)
    r = m.compute()
    assert r["num_images"] == 2
    assert r["abs_rel"] == pytest.approx((0.5 + 0.0) / 2)
    assert r["rmse"] == pytest.approx((1.0 + 0.0) / 2)
    assert math.isnan(DepthMetrics().compute()["abs_rel"])
