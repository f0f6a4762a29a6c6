"""Scoring a perfect prediction gives a perfect score: GT depth read at the rays (bug 2 of issue 10)."""

import math

import pytest
import torch

from selfocc_core.evaluation.depth_metrics import DepthEvalConfig, DepthMetrics
from selfocc_core.geometry.camera import pixel_grid
from selfocc_core.geometry.rays import camera_rays
from selfocc_core.geometry.voxel_grid import VoxelGridSpec
from selfocc_core.rendering.ray_sampler import generate_rays, ray_grid_pixels, ray_grid_shape, ray_grid_to_image
from selfocc_core.training.trainer import gt_depth_at_rays

BOX = VoxelGridSpec(-5.0, 60.0, -30.0, 30.0, -2.0, 6.0, 0.5)
H, W = 64, 112


def pitched_camera(height=1.5, pitch_deg=8.0):
    """Optical frame -> ego for a camera at `height` looking along +x, tilted down by `pitch_deg`."""
    p = math.radians(pitch_deg)
    fwd = torch.tensor([math.cos(p), 0.0, -math.sin(p)])
    down = torch.tensor([-math.sin(p), 0.0, -math.cos(p)])
    right = torch.tensor([0.0, -1.0, 0.0])
    T = torch.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2] = right, down, fwd
    T[2, 3] = height
    return T


def K_of(H, W, f=60.0):
    return torch.tensor([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1]])


def ground_z_depth(uv, K, T):
    """Exact z-depth of the ground plane z = 0 seen through pixels uv (0 where it is not hit)."""
    o, d, zpu = camera_rays(uv, K, T)
    t = -o[..., 2] / d[..., 2]
    return torch.where((d[..., 2] < 0) & (t < 200.0), t * zpu, torch.zeros_like(t))


@pytest.mark.parametrize("stride", [1, 3, 4, 8])
def test_perfect_renderer_scores_zero_abs_rel(stride):
    """Depth rendered exactly along the evaluation rays vs the GT depth image read by the trainer."""
    K, T = K_of(H, W), pitched_camera()
    gt = ground_z_depth(pixel_grid(H, W).reshape(-1, 2), K, T).reshape(1, 1, H, W)  # GT at pixel centres
    rays = generate_rays(K.view(1, 1, 3, 3), T.view(1, 1, 4, 4), (H, W), stride, random_offset=False, box=BOX)
    perfect = ground_z_depth(rays.pixels[0], K, T).view(1, 1, *ray_grid_shape((H, W), stride))
    read = gt_depth_at_rays(gt, rays.camera_index, rays.pixels).view_as(perfect)
    m = DepthMetrics(DepthEvalConfig(max_depth=80.0))
    m.update(perfect, read)
    assert m.compute()["abs_rel"] < 1e-5


def test_ray_grid_to_image_hits_the_ray_pixels_exactly():
    stride = 4
    h, w = ray_grid_shape((H, W), stride)
    vals = torch.randn(2, 1, h, w)
    img = ray_grid_to_image(vals, stride, (H, W))
    uv = ray_grid_pixels((H, W), stride).long()
    torch.testing.assert_close(img[:, 0, uv[:, 1], uv[:, 0]], vals.flatten(1))
    # a linear ramp over the ray grid stays the same linear ramp in pixels, also when resized
    ramp = (torch.arange(w, dtype=torch.float32) * stride + stride // 2).expand(1, 1, h, w)
    torch.testing.assert_close(ray_grid_to_image(ramp, stride, (H, W))[0, 0, 5, 2:-2], torch.arange(2, W - 2.0))
    half = ray_grid_to_image(ramp, stride, (H, W), (H // 2, W // 2))[0, 0, 3]
    torch.testing.assert_close(half[1:-1], (torch.arange(1, W // 2 - 1.0) + 0.5) * 2 - 0.5)
    with pytest.raises(ValueError, match="ray grid"):
        ray_grid_to_image(torch.zeros(1, 1, h + 1, w), stride, (H, W))


# ------------------------------------------------------------------------------------------
# Bug 3: the occupancy rule must not flip the road layer for a 1 mm shift of the surface.
# ------------------------------------------------------------------------------------------
FIELD_GRID = VoxelGridSpec(-25.6, 25.6, -25.6, 25.6, -2.0, 4.4, 0.8)  # tiny_synth's field: node z -1.6, -0.8, 0.0, ...
GT_GRID = VoxelGridSpec(-12.0, 12.0, -12.0, 12.0, -1.0, 5.4, 0.4)  # Occ3D-like: centres z -0.8, -0.4, 0.0, 0.4, ...


def plane_field(height: float):
    """SceneField whose SDF is z - height (a ground plane at `height`)."""
    from selfocc_core.model.field import SceneField

    z = FIELD_GRID.centers()[..., 2]
    sdf = (z - height)[None, None]
    return SceneField(FIELD_GRID, sdf, torch.zeros(1, 3, *FIELD_GRID.shape))


def road_gt(grid, height=0.0):
    """GT as the synthetic world labels it: voxels whose bottom lies below the road surface."""
    return (grid.centers()[..., 2] - grid.voxel_size / 2 < height)


@pytest.mark.parametrize("shift", [-1e-3, 0.0, 1e-3])
def test_road_through_voxel_centres_is_stable_to_a_millimetre(shift):
    from selfocc_core.evaluation.occupancy_metrics import GeometryMetrics
    from selfocc_core.training.trainer import sdf_occupancy

    occ = sdf_occupancy(plane_field(shift), GT_GRID)
    m = GeometryMetrics()
    m.update(occ, road_gt(GT_GRID), None)
    assert m.compute()["iou"] == 1.0  # old rule (SDF <= 0 at the centre): 0.67 for the road 1 mm below the centres


@pytest.mark.parametrize("shift", [-1e-3, 1e-3])
def test_surface_on_voxel_faces_is_stable_and_predictor_uses_the_same_rule(shift):
    from selfocc_core.inference.predictor import OccupancyPredictor
    from selfocc_core.model.selfocc import SelfOccModel
    from selfocc_core.training.trainer import sdf_occupancy

    from training_fakes import micro_config

    face = 0.2 + shift  # the top face of the road layer of GT_GRID
    occ = sdf_occupancy(plane_field(face), GT_GRID)
    assert (occ == road_gt(GT_GRID)).all()  # the voxels below the face, not the ones above it
    cfg = micro_config()
    predictor = OccupancyPredictor(SelfOccModel(cfg.model), cfg)
    out = predictor.occupancy(plane_field(face), GT_GRID)
    assert (out["occupied"][0] == occ).all()
    out = predictor.occupancy(plane_field(shift), FIELD_GRID)  # on the field's own nodes (road at node z = 0)
    assert (out["occupied"][0] == road_gt(FIELD_GRID)).all()
