"""Geometry against hand-computed values, round trips and float64 gradient checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from selfocc_core.geometry import (
    OCC3D_NUSCENES,
    SEMANTIC_KITTI,
    T_FLU_OPTICAL,
    T_OPTICAL_FLU,
    VoxelGridSpec,
    backproject,
    camera_rays,
    crop_intrinsics,
    invert_transform,
    make_transform,
    matrix_to_quaternion,
    pixel_grid,
    project,
    quaternion_to_matrix,
    scale_intrinsics,
    transform_points,
)

K0 = torch.tensor([[100.0, 0.0, 50.0], [0.0, 100.0, 40.0], [0.0, 0.0, 1.0]])


# ---- camera ---------------------------------------------------------------------------------
def test_project_hand_values():
    pts = torch.tensor([[1.0, 0.5, 10.0], [-2.0, 4.0, 2.0], [0.0, 0.0, 5.0]])
    uv, z = project(pts, K0)
    # u = fx x/z + cx, v = fy y/z + cy
    assert torch.allclose(uv, torch.tensor([[60.0, 45.0], [-50.0, 240.0], [50.0, 40.0]]))
    assert torch.allclose(z, torch.tensor([10.0, 2.0, 5.0]))


@pytest.mark.parametrize("lead", [(), (2,), (2, 3)])
def test_project_broadcasts_leading_dims(lead):
    pts = torch.rand(*lead, 7, 3) + torch.tensor([0.0, 0.0, 1.0])
    K = K0.expand(*lead, 3, 3)
    uv, z = project(pts, K)
    assert uv.shape == (*lead, 7, 2) and z.shape == (*lead, 7)
    ref, _ = project(pts.reshape(-1, 3), K0)
    assert torch.allclose(uv.reshape(-1, 2), ref, atol=1e-5)


def test_project_rejects_bad_shapes():
    with pytest.raises(ValueError, match="expected points"):
        project(torch.zeros(5, 2), K0)
    with pytest.raises(ValueError, match="expected points"):
        project(torch.zeros(5, 3), torch.eye(4))


def test_backproject_hand_value_and_round_trip():
    depth = torch.full((80, 100), 10.0)
    pts = backproject(depth, K0)
    assert pts.shape == (80, 100, 3)
    # pixel (u=60, v=45) at z=10 is (1, 0.5, 10)
    assert torch.allclose(pts[45, 60], torch.tensor([1.0, 0.5, 10.0]), atol=1e-5)
    uv, z = project(pts.reshape(-1, 3), K0)
    assert torch.allclose(uv, pixel_grid(80, 100).reshape(-1, 2), atol=1e-4)
    assert torch.allclose(z, torch.full_like(z, 10.0))


def test_pixel_grid_is_u_column_v_row():
    g = pixel_grid(2, 3)
    assert g.shape == (2, 3, 2)
    assert g[1, 2].tolist() == [2.0, 1.0]


def test_scale_intrinsics_hand_values():
    K = scale_intrinsics(K0, 0.5, 0.25)
    # u' = (u + 0.5) * s - 0.5 -> cx' = 50.5 * 0.5 - 0.5 = 24.75, cy' = 40.5 * 0.25 - 0.5 = 9.625
    expected = torch.tensor([[50.0, 0.0, 24.75], [0.0, 25.0, 9.625], [0.0, 0.0, 1.0]])
    assert torch.allclose(K, expected)
    assert K0[0, 2] == 50.0  # input untouched
    # a numpy array (the node's worker) gets the same values back as a numpy array, input untouched
    K_np0 = K0.double().numpy()
    K_np = scale_intrinsics(K_np0, 0.5, 0.25)
    assert isinstance(K_np, np.ndarray) and np.allclose(K_np, expected.double().numpy()) and K_np0[0, 2] == 50.0


def test_scale_intrinsics_matches_interpolate():
    """A ramp image I(u, v) = u resized by 1/2 holds the old column at the new pixel centre."""
    H, W = 8, 16
    ramp = pixel_grid(H, W)[..., 0][None, None]  # value = column index
    small = F.interpolate(ramp, size=(H // 2, W // 2), mode="bilinear", align_corners=False)[0, 0]
    K = scale_intrinsics(K0, 0.5, 0.5)
    # Back-project each new pixel with K, project with K0: the old column must equal the ramp value.
    pts = backproject(torch.ones(H // 2, W // 2), K)
    uv_old, _ = project(pts.reshape(-1, 3), K0)
    assert torch.allclose(uv_old[:, 0].reshape(H // 2, W // 2), small, atol=1e-4)


def test_crop_intrinsics_hand_values():
    K = crop_intrinsics(K0, left=10, top=5)
    assert K[0, 2] == 40.0 and K[1, 2] == 35.0 and K[0, 0] == 100.0
    # a point keeps its image content: projected pixel shifts by the crop
    p = torch.tensor([[1.0, 0.5, 10.0]])
    assert torch.allclose(project(p, K)[0], project(p, K0)[0] - torch.tensor([10.0, 5.0]))


def test_gradcheck_project_and_backproject():
    pts = (torch.rand(5, 3, dtype=torch.float64) + torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64)).requires_grad_()
    K = K0.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda p, k: project(p, k)[0], (pts, K))
    depth = (torch.rand(3, 4, dtype=torch.float64) + 1).requires_grad_()
    assert torch.autograd.gradcheck(lambda d: backproject(d, K0.double()), (depth,))


# ---- transforms -----------------------------------------------------------------------------
def test_make_transform_quaternion_hand_values():
    c = math.cos(math.pi / 4)
    T = make_transform([c, 0.0, 0.0, c], [1.0, 2.0, 3.0])  # 90 deg about z
    assert np.allclose(T[:3, :3], [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    p = transform_points(torch.as_tensor(T), torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64))
    assert torch.allclose(p, torch.tensor([[1.0, 3.0, 3.0]], dtype=torch.float64))


def test_quaternion_round_trip_and_positive_w():
    rng = np.random.default_rng(0)
    for _ in range(50):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        R = quaternion_to_matrix(q)
        assert np.allclose(R @ R.T, np.eye(3), atol=1e-10) and np.isclose(np.linalg.det(R), 1.0)
        q2 = matrix_to_quaternion(R)
        assert q2[0] >= 0
        assert np.allclose(q2, q if q[0] >= 0 else -q, atol=1e-8)
        assert np.allclose(quaternion_to_matrix(q2), R, atol=1e-10)


def test_quaternion_normalises_and_rejects_bad_input():
    assert np.allclose(quaternion_to_matrix([2.0, 0, 0, 0]), np.eye(3))
    for bad in ([0, 0, 0, 0], [np.nan, 0, 0, 1], [1, 0, 0]):
        with pytest.raises(ValueError, match="invalid quaternion"):
            quaternion_to_matrix(bad)
    with pytest.raises(ValueError, match="invalid rotation"):
        matrix_to_quaternion(np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match="non-finite translation"):
        make_transform(np.eye(3), [0, np.inf, 0])


def test_rotation_by_180_deg_gives_w_zero_not_negative():
    q = matrix_to_quaternion(np.diag([1.0, -1.0, -1.0]))  # 180 deg about x
    assert np.allclose(np.abs(q), [0, 1, 0, 0], atol=1e-9) and q[0] >= 0


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_invert_transform_round_trip(backend):
    rng = np.random.default_rng(1)
    Ts = np.stack([make_transform(rng.normal(size=4), rng.normal(size=3)) for _ in range(4)]).reshape(2, 2, 4, 4)
    Ti = invert_transform(Ts if backend == "numpy" else torch.as_tensor(Ts))
    Ti = np.asarray(Ti)
    assert np.allclose(Ts @ Ti, np.eye(4), atol=1e-10)
    assert np.allclose(Ti, np.linalg.inv(Ts), atol=1e-10)


def test_transform_points_matches_homogeneous_product():
    rng = np.random.default_rng(2)
    T = torch.as_tensor(make_transform(rng.normal(size=4), rng.normal(size=3)))
    p = torch.randn(3, 6, 3, dtype=torch.float64)
    ref = (torch.cat([p, torch.ones_like(p[..., :1])], -1) @ T.T)[..., :3]
    assert torch.allclose(transform_points(T, p), ref)
    with pytest.raises(ValueError):
        transform_points(T[:3], p)


def test_rep103_optical_flu():
    # optical z (forward) -> FLU x; optical x (right) -> FLU -y; optical y (down) -> FLU -z
    R = T_FLU_OPTICAL[:3, :3]
    assert np.allclose(R @ [0, 0, 1], [1, 0, 0])
    assert np.allclose(R @ [1, 0, 0], [0, -1, 0])
    assert np.allclose(R @ [0, 1, 0], [0, 0, -1])
    assert np.isclose(np.linalg.det(R), 1.0)
    assert np.allclose(T_OPTICAL_FLU @ T_FLU_OPTICAL, np.eye(4))
    # the well-known ROS optical quaternion (x,y,z,w) = (-0.5, 0.5, -0.5, 0.5) for camera_link -> optical
    assert np.allclose(matrix_to_quaternion(R), [0.5, -0.5, 0.5, -0.5])


# ---- rays -----------------------------------------------------------------------------------
def test_camera_rays_hand_values():
    T = torch.as_tensor(T_FLU_OPTICAL, dtype=torch.float32).clone()
    T[:3, 3] = torch.tensor([1.0, 2.0, 1.5])
    uv = torch.tensor([[50.0, 40.0], [150.0, 40.0], [50.0, 140.0]])  # centre, fx right, fy down
    o, d, zpu = camera_rays(uv, K0, T)
    s = 1 / math.sqrt(2)
    assert torch.allclose(o, torch.tensor([1.0, 2.0, 1.5]).expand(3, 3))
    assert torch.allclose(d, torch.tensor([[1.0, 0, 0], [s, -s, 0], [s, 0, -s]]), atol=1e-6)
    assert torch.allclose(zpu, torch.tensor([1.0, s, s]), atol=1e-6)
    # a point at ray distance t has camera z-depth t * z_per_unit
    t = 7.0
    p_ego = o + t * d
    p_cam = transform_points(invert_transform(T), p_ego)
    assert torch.allclose(p_cam[:, 2], t * zpu, atol=1e-5)
    assert torch.allclose(project(p_cam, K0)[0], uv, atol=1e-3)


def test_camera_rays_batched_and_gradcheck():
    uv = torch.rand(2, 3, 5, 2, dtype=torch.float64) * 100
    K = K0.double().expand(2, 3, 3, 3)
    T = torch.as_tensor(T_FLU_OPTICAL).expand(2, 3, 4, 4)
    o, d, zpu = camera_rays(uv, K, T)
    assert o.shape == d.shape == (2, 3, 5, 3) and zpu.shape == (2, 3, 5)
    assert torch.allclose(d.norm(dim=-1), torch.ones(2, 3, 5, dtype=torch.float64))
    uvg = uv[0, 0].clone().requires_grad_()
    Kg = K0.double().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: camera_rays(a, b, T[0, 0])[1], (uvg, Kg))


# ---- voxel grid -----------------------------------------------------------------------------
def test_voxel_grid_presets_and_hand_values():
    assert OCC3D_NUSCENES.shape == (200, 200, 16)
    assert SEMANTIC_KITTI.shape == (256, 256, 32)
    g = OCC3D_NUSCENES
    c = g.index_to_metric(torch.tensor([[0, 0, 0], [199, 199, 15], [100, 100, 2]]))
    assert torch.allclose(c, torch.tensor([[-39.8, -39.8, -0.8], [39.8, 39.8, 5.2], [0.2, 0.2, 0.0]]), atol=1e-5)  # -1 + 2.5 * 0.4 = 0
    ijk, inside = g.metric_to_index(torch.tensor([[0.0, 0.0, 0.0], [-40.0, 39.99, 5.39], [40.0, 0.0, 0.0], [0.0, 0.0, -1.01]]))
    assert ijk[0].tolist() == [100, 100, 2]  # (0 + 1) / 0.4 = 2.5 -> 2
    assert ijk[1].tolist() == [0, 199, 15]
    assert inside.tolist() == [True, True, False, False]  # upper bound is exclusive


def test_voxel_grid_round_trip_and_normalize():
    g = VoxelGridSpec(-2.0, 2.0, -1.0, 1.0, 0.0, 1.0, 0.5)
    assert g.shape == (8, 4, 2)
    centers = g.centers()
    assert centers.shape == (8, 4, 2, 3)
    ijk, inside = g.metric_to_index(centers.reshape(-1, 3))
    assert inside.all()
    grid = torch.stack(torch.meshgrid(*[torch.arange(n) for n in g.shape], indexing="ij"), -1).reshape(-1, 3)
    assert torch.equal(ijk, grid)
    n = g.normalize(torch.tensor([[-2.0, -1.0, 0.0], [2.0, 1.0, 1.0], [0.0, 0.0, 0.5]]))
    assert torch.allclose(n, torch.tensor([[-1.0, -1, -1], [1, 1, 1], [0, 0, 0]]))


def test_voxel_grid_rejects_bad_spec():
    with pytest.raises(ValueError, match="x_max"):
        VoxelGridSpec(x_min=1.0, x_max=0.0)
    with pytest.raises(ValueError, match="voxel_size"):
        VoxelGridSpec(voxel_size=0.0)


def test_gradcheck_transform_points_and_invert():
    rng = np.random.default_rng(3)
    T = torch.as_tensor(make_transform(rng.normal(size=4), rng.normal(size=3))).requires_grad_()
    p = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(transform_points, (T, p))
    assert torch.autograd.gradcheck(lambda t: invert_transform(t), (T,))
