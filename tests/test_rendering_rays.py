"""Ray generation on the strided grid, box clipping and sample placement."""

import math

import pytest
import torch

from selfocc_core.geometry.voxel_grid import VoxelGridSpec
from selfocc_core.rendering.ray_sampler import (
    bin_edges,
    merge_samples,
    sample_pdf,
    generate_rays,
    ray_box_intersection,
    ray_grid_pixels,
    ray_grid_shape,
    sample_along_rays,
)

# camera optical frame -> ego for a camera looking along ego +x (optical z = x, optical x = -y, optical y = -z)
R_FWD = torch.tensor([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])
BOX = VoxelGridSpec(-10.0, 20.0, -8.0, 8.0, -3.0, 5.0, 1.0)


def camera(position, yaw=0.0):
    Rz = torch.tensor([[math.cos(yaw), -math.sin(yaw), 0], [math.sin(yaw), math.cos(yaw), 0], [0, 0, 1]])
    T = torch.eye(4)
    T[:3, :3] = Rz @ R_FWD
    T[:3, 3] = torch.tensor(position)
    return T


def intrinsics(H, W, f=20.0):
    return torch.tensor([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1]])


def test_centre_pixel_ray_is_the_x_axis():
    H, W = 5, 7
    rays = generate_rays(intrinsics(H, W).view(1, 1, 3, 3), camera([1.0, 2.0, 0.5]).view(1, 1, 4, 4), (H, W), 1, False, BOX)
    assert rays.origins.shape == (1, H * W, 3) and rays.grid_shape == (H, W)
    centre = 2 * W + 3  # row 2, column 3
    torch.testing.assert_close(rays.pixels[0, centre], torch.tensor([3.0, 2.0]))
    torch.testing.assert_close(rays.directions[0, centre], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(rays.origins[0, centre], torch.tensor([1.0, 2.0, 0.5]))
    assert rays.z_per_unit[0, centre].item() == pytest.approx(1.0)
    torch.testing.assert_close(rays.directions.norm(dim=-1), torch.ones(1, H * W))
    # top-left pixel looks left (+y) and up (+z); z_per_unit = cos of the angle to the axis
    d = rays.directions[0, 0]
    assert d[1] > 0 and d[2] > 0
    assert rays.z_per_unit[0, 0].item() == pytest.approx(d[0].item(), abs=1e-6)
    # near / far: from min_near to the x = 20 face for the centre ray
    assert rays.near[0, centre].item() == pytest.approx(0.1)
    assert rays.far[0, centre].item() == pytest.approx(19.0)
    assert rays.valid.all()


def test_near_far_for_camera_outside_and_rays_missing_the_box():
    K = intrinsics(3, 3).view(1, 1, 3, 3).expand(1, 2, 3, 3)
    T = torch.stack([camera([-30.0, 0.0, 0.0]), camera([-30.0, 0.0, 0.0], yaw=math.pi)]).unsqueeze(0)
    rays = generate_rays(K, T, (3, 3), 1, False, BOX, min_near=0.5)
    c0, c1 = 4, 9 + 4  # centre rays of camera 0 (looks at the box) and camera 1 (looks away)
    assert rays.near[0, c0].item() == pytest.approx(20.0) and rays.far[0, c0].item() == pytest.approx(50.0)
    assert bool(rays.valid[0, c0]) and not bool(rays.valid[0, c1])
    assert rays.far[0, c1] > rays.near[0, c1]
    assert rays.camera_index[0].tolist() == [0] * 9 + [1] * 9


def test_ray_box_intersection_axis_aligned_rays():
    o = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    d = torch.tensor([[0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
    t_in, t_out = ray_box_intersection(o, d, BOX.lower, BOX.upper)
    torch.testing.assert_close(t_in, torch.tensor([-3.0, -8.0]))
    torch.testing.assert_close(t_out, torch.tensor([5.0, 8.0]))


def test_strided_grid_centres_and_random_offsets_stay_in_cells():
    assert ray_grid_shape((64, 112), 8) == (8, 14)
    with pytest.raises(ValueError):
        ray_grid_shape((4, 4), 8)
    px = ray_grid_pixels((8, 12), 4)
    assert px.shape == (2 * 3, 2)
    torch.testing.assert_close(px[0], torch.tensor([2.0, 2.0]))  # pixel centres, not the cells' corner points
    torch.testing.assert_close(px[4], torch.tensor([6.0, 6.0]))  # row 1, column 1
    torch.testing.assert_close(ray_grid_pixels((9, 9), 3)[4], torch.tensor([4.0, 4.0]))  # odd stride: the middle pixel
    g = torch.Generator().manual_seed(0)
    rnd = ray_grid_pixels((8, 12), 4, (2, 3), True, generator=g)
    assert rnd.shape == (2, 3, 6, 2)
    cell = torch.floor((rnd + 0.5) / 4)
    torch.testing.assert_close(cell, (px - 2.0).div(4).expand_as(cell))
    assert rnd.std(dim=(0, 1)).min() > 0.3  # offsets differ between rays


def test_rays_follow_camera_yaw_and_batch():
    H, W = 5, 5
    T = torch.stack([camera([0.0, 0.0, 0.0], yaw=math.pi / 2), camera([0.0, 0.0, 1.0])]).view(2, 1, 4, 4)
    rays = generate_rays(intrinsics(H, W).expand(2, 1, 3, 3), T, (H, W), 1, False, BOX)
    torch.testing.assert_close(rays.directions[0, 12], torch.tensor([0.0, 1.0, 0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(rays.directions[1, 12], torch.tensor([1.0, 0.0, 0.0]))
    assert rays.far[0, 12].item() == pytest.approx(8.0)


def test_sample_along_rays_uniform_disparity_and_stratified():
    near, far = torch.tensor([[1.0, 2.0]]), torch.tensor([[5.0, 4.0]])
    t, dt = sample_along_rays(near, far, 4, False)
    torch.testing.assert_close(t[0, 0], torch.tensor([1.5, 2.5, 3.5, 4.5]))
    torch.testing.assert_close(dt.sum(-1), far - near)
    td, dd = sample_along_rays(near, far, 2, False, "disparity")
    # edges at 1 / (1, 0.6, 0.2) = 1, 1.667, 5 for the first ray
    torch.testing.assert_close(dd[0, 0], torch.tensor([2 / 3, 10 / 3]))
    g = torch.Generator().manual_seed(0)
    ts, ds = sample_along_rays(near.expand(100, 2), far.expand(100, 2), 4, True, generator=g)
    edges = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert ((ts[:, 0] >= edges) & (ts[:, 0] <= edges + 1)).all()
    assert ts[:, 0].std(0).min() > 0.2
    tl, dl = sample_along_rays(near, far, 2, False, "log")
    # edges at 1, sqrt(5), 5 for the first ray: each bin spans the ratio sqrt(5)
    torch.testing.assert_close(dl[0, 0], torch.tensor([5**0.5 - 1, 5 - 5**0.5]))
    torch.testing.assert_close(dl.sum(-1), far - near)
    edges_l = near[..., None] * (far / near)[..., None] ** torch.linspace(0, 1, 3)
    torch.testing.assert_close(tl, 0.5 * (edges_l[..., :-1] + edges_l[..., 1:]))
    with pytest.raises(ValueError, match="spacing"):
        sample_along_rays(near, far, 4, False, "cubic")
    with pytest.raises(ValueError, match="near > 0"):
        sample_along_rays(torch.zeros(1, 2), far, 4, False, "log")


def test_sample_pdf_follows_the_weights_and_merge_keeps_the_ray_covered():
    near, far = torch.tensor([[1.0, 2.0]]), torch.tensor([[10.0, 20.0]])
    edges = bin_edges(near, far, 9, "uniform")
    w = torch.zeros(1, 2, 9)
    w[0, 0, 4] = 1.0  # all of ray 0's weight in its bin [5, 6)
    w[0, 1, 2], w[0, 1, 6] = 0.25, 0.75  # ray 1: a quarter in [6, 8), three quarters in [14, 16)
    f = sample_pdf(edges, w, 16, stratified=False)
    assert f.shape == (1, 2, 16)
    assert ((f[0, 0] > 5.0) & (f[0, 0] < 6.0)).all()
    assert ((f[0, 1] > 6.0) & (f[0, 1] < 8.0)).sum() == 4 and ((f[0, 1] > 14.0) & (f[0, 1] < 16.0)).sum() == 12
    assert (f[..., 1:] >= f[..., :-1]).all()
    g = torch.Generator().manual_seed(0)
    fs = sample_pdf(edges.expand(200, 2, 10), w.expand(200, 2, 9), 8, stratified=True, generator=g)
    assert ((fs[:, 0] > 5.0) & (fs[:, 0] < 6.0)).all() and fs[:, 0].std(0).min() > 0.02  # jitter within each 1/8 of the CDF
    # a ray with no weight samples its bins uniformly
    flat = sample_pdf(edges, torch.zeros(1, 2, 9), 9, stratified=False)
    torch.testing.assert_close(flat[0, 0], torch.arange(9.0) + 1.5, atol=1e-3, rtol=0)
    t_c, _ = sample_along_rays(near, far, 9, False)
    t, d = merge_samples(t_c, f, near, far)
    assert t.shape == (1, 2, 25) and (t[..., 1:] >= t[..., :-1]).all()
    torch.testing.assert_close(d.sum(-1), far - near)
    assert (d >= 0).all()
    with pytest.raises(ValueError, match="do not bound"):
        sample_pdf(edges[..., :-1], w, 4, False)
