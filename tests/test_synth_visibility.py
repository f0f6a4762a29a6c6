"""Occ3D camera-visibility mask by ray casting (bug 4 of issue 10), on hand-made grids."""

import pytest
import torch

from selfocc_core.geometry.voxel_grid import VoxelGridSpec
from selfocc_core.synth.occupancy import camera_visibility

GRID = VoxelGridSpec(0.0, 10.0, -5.0, 5.0, 0.0, 4.0, 1.0)  # 10 x 10 x 4 voxels of 1 m
H, W = 60, 80
# optical frame -> ego for a camera looking along +x (optical z = x, optical x = -y, optical y = -z)
R_FWD = torch.tensor([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])


def cam(x=0.5, y=0.5, z=1.5):
    T = torch.eye(4)
    T[:3, :3] = R_FWD
    T[:3, 3] = torch.tensor([x, y, z])
    return T.view(1, 4, 4)


def K(f=60.0):  # +-34 deg horizontally, +-27 deg vertically
    return torch.tensor([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1]]).view(1, 3, 3)


def visible(occ, T=None):
    return camera_visibility(occ, K(), cam() if T is None else T, (H, W), GRID)


def test_wall_stops_the_rays_and_its_front_face_is_observed():
    occ = torch.zeros(GRID.shape, dtype=torch.bool)
    occ[5] = True  # a wall filling x in [5, 6)
    m = visible(occ)
    assert not m[6:].any()  # behind the wall: never observed
    assert m[5, 5, 1] and m[5, 5, 3]  # the wall's voxels straight ahead and above: hit, observed
    assert m[:5, 5, 1].all()  # the free voxels in front of it
    assert not m[5, 0, 1]  # the wall outside the field of view (y = -4.5 at 4.5 m: 45 deg)


def test_voxel_in_the_shadow_of_an_object_is_not_observed_but_its_neighbour_is():
    occ = torch.zeros(GRID.shape, dtype=torch.bool)
    occ[4, 5, 1] = True  # a 1 m box straight ahead, 3.5-4.5 m away
    m = visible(occ)
    assert m[4, 5, 1]
    assert not m[8, 5, 1]  # every ray towards it passes the box first
    assert m[8, 7, 1] and m[8, 5, 3]  # beside / above the shadow
    assert m[9, 5, 0] or m[9, 5, 2]  # rays past the box's edges reach the far end


def test_empty_grid_rays_observe_up_to_the_grid_boundary_only_inside_the_frustum():
    occ = torch.zeros(GRID.shape, dtype=torch.bool)
    m = visible(occ, cam(x=3.5))
    assert m[9, 5, 1] and m[9, 5, 0]  # far end, in front of the "sky"
    assert not m[:3].any()  # behind the camera
    assert not m[4, 0, 1] and not m[4, 9, 1]  # far off to the sides at 0.5-1.5 m ahead
    # observed = exactly the voxels some pixel ray traverses: each observed voxel's centre
    # direction is inside the frustum, give or take the voxel's own angular size
    ijk = torch.nonzero(m).float()
    c = GRID.index_to_metric(ijk) - torch.tensor([3.5, 0.5, 1.5])
    assert (c[:, 0] > -0.5).all()


def test_camera_outside_the_grid_and_several_cameras():
    occ = torch.zeros(GRID.shape, dtype=torch.bool)
    occ[2, :, 0] = True  # a kerb row across the grid at x in [2, 3), z in [0, 1)
    T = torch.cat([cam(x=-3.0, y=0.5, z=2.5), cam(x=-3.0, y=-3.5, z=2.5)])
    m = camera_visibility(occ, K().expand(2, 3, 3), T, (H, W), GRID)
    assert m[0, 5, 1] and m[0, 1, 1]  # rays enter the grid through its x = 0 face
    single = camera_visibility(occ, K(), T[:1], (H, W), GRID)
    assert (m >= single).all() and m.sum() > single.sum()


def test_bad_shapes_are_clear_errors():
    with pytest.raises(ValueError, match="does not match the grid"):
        camera_visibility(torch.zeros(3, 3, 3, dtype=torch.bool), K(), cam(), (H, W), GRID)
    with pytest.raises(ValueError, match="expected K"):
        camera_visibility(torch.zeros(GRID.shape, dtype=torch.bool), K()[0], cam(), (H, W), GRID)


def test_traversal_matches_dense_point_sampling_on_a_random_grid():
    from selfocc_core.geometry.camera import pixel_grid
    from selfocc_core.geometry.rays import camera_rays

    g = torch.Generator().manual_seed(0)
    occ = torch.rand(GRID.shape, generator=g) < 0.08
    h, w = 15, 20
    k = torch.tensor([[15.0, 0, (w - 1) / 2], [0, 15.0, (h - 1) / 2], [0, 0, 1]]).view(1, 3, 3)
    T = cam(x=0.3, y=0.2, z=1.7)
    m = camera_visibility(occ, k, T, (h, w), GRID)
    # brute force: points every 3 mm along each ray, voxels up to the first occupied one
    o, d, _ = camera_rays(pixel_grid(h, w).reshape(1, -1, 2), k, T)
    t = torch.arange(0.0, 12.0, 0.003)
    ijk, inside = GRID.metric_to_index(o[0, :, None] + t[None, :, None] * d[0, :, None])  # [R, S, 3]
    ijk = ijk.clamp(min=0)
    ijk = torch.minimum(ijk, torch.tensor(GRID.shape) - 1)
    hit = occ[ijk[..., 0], ijk[..., 1], ijk[..., 2]] & inside
    first = torch.where(hit.any(1), hit.float().argmax(1), torch.full((hit.shape[0],), t.numel()))
    keep = inside & (torch.arange(t.numel())[None] <= first[:, None])
    brute = torch.zeros(GRID.shape, dtype=torch.bool)
    brute[ijk[keep][:, 0], ijk[keep][:, 1], ijk[keep][:, 2]] = True
    assert brute.sum() > 50
    assert (brute & ~m).sum() == 0  # everything the dense sampling sees, the traversal sees
    assert (m & ~brute).sum() <= 2  # at most a voxel clipped at a corner by less than 3 mm
