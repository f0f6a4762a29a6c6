"""Exact ground-truth occupancy of the synthetic world on an ego-frame voxel grid.

Semantics: a voxel takes the class of a primitive containing its centre (inside tests
against the analytic shapes); thin primitives (any half extent below one voxel: poles, signs,
cones) are instead sampled on a lattice finer than the voxels so they are never missed.
Ground voxels are those whose bottom lies below the road surface (z = 0). Objects (things
with an instance id) are written last so they win over stuff.

Visibility masks (Occ3D style): ``mask_camera`` marks voxels seen by a camera, i.e. in front
of the first surface hit along the camera rays, plus the voxel of the hit (`camera_visibility`
projects every voxel centre into depth maps rendered at moderate resolution: cheaper than
marching rays and without gaps between diverging rays); ``mask_lidar`` does the same for a simulated spinning
LiDAR, counting only voxels within 0.75 voxel of a beam (`lidar_visibility`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from selfocc_core.classes import FREE_LABEL
from selfocc_core.geometry.camera import backproject
from selfocc_core.geometry.transforms import invert_transform, transform_points
from selfocc_core.geometry.voxel_grid import VoxelGridSpec
from selfocc_core.synth.raycast import cull, intersect_groups, to_local
from selfocc_core.synth.world import BOX, CYLINDER, Primitives, World, ground_label

# LiDAR mounting in the ego frame (nuScenes LIDAR_TOP is ~0.94 m ahead of the rear axle, 1.84 m up).
NUSCENES_LIDAR_IN_EGO = (0.94, 0.0, 1.84)
KITTI_LIDAR_IN_EGO = (0.0, 0.0, 0.0)  # our KITTI ego frame *is* the Velodyne frame


def _inside(prims: Primitives, i: int, p_world: Tensor) -> Tensor:
    """Points ``(M, 3)`` inside primitive i -> bool ``(M,)``."""
    sub = prims.subset(torch.tensor([i]))
    pl = to_local(sub, p_world[:, None, :])[:, 0]
    h = sub.half[0]
    k = int(sub.kind[0])
    if k == BOX:
        return (pl.abs() <= h).all(-1)
    if k == CYLINDER:
        return (pl[:, 0] ** 2 + pl[:, 1] ** 2 <= h[0] ** 2) & (pl[:, 2].abs() <= h[2])
    return ((pl / h) ** 2).sum(-1) <= 1.0


def occupancy_semantics(world: World, t: float, T_world_ego: np.ndarray, grid: VoxelGridSpec) -> Tensor:
    """Class id per voxel ``[X, Y, Z]`` uint8 (17 = free) at time t for ego pose ``T_world_ego [4, 4]``."""
    X, Y, Z = grid.shape
    s = grid.voxel_size
    T = torch.as_tensor(T_world_ego, dtype=torch.float32)
    T_ego_world = invert_transform(T)
    centers = grid.centers().reshape(-1, 3)
    cw = transform_points(T, centers)
    labels = torch.full((X * Y * Z,), FREE_LABEL, dtype=torch.uint8)
    under = cw[:, 2] - s / 2 < 0.0
    labels[under] = ground_label(cw[under, :2]).to(torch.uint8)
    labels = labels.reshape(X, Y, Z)

    prims = world.prims.at(t)
    half_diag = 0.5 * math.sqrt((grid.x_max - grid.x_min) ** 2 + (grid.y_max - grid.y_min) ** 2 + (grid.z_max - grid.z_min) ** 2)
    mid = torch.tensor([(grid.x_min + grid.x_max) / 2, (grid.y_min + grid.y_max) / 2, (grid.z_min + grid.z_max) / 2])
    sel = cull(prims, transform_points(T, mid[None])[0], half_diag + s).tolist()
    order = sorted(sel, key=lambda i: int(prims.instance[i]) >= 0)  # stuff first, things last
    lower = torch.tensor(grid.lower)
    shape = torch.tensor(grid.shape)
    for i in order:
        c, h, yaw = prims.center[i], prims.half[i], float(prims.yaw[i])
        thin = bool((h < s).any())
        # lattice over the primitive's local box: fine for thin shapes, else voxel-centre tests
        if thin:
            n = [max(2, int(math.ceil(2 * float(hh) / (s / 3))) + 1) for hh in h]
            axes = [torch.linspace(-float(hh), float(hh), k) for hh, k in zip(h, n)]
            pl = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
            cs, sn = math.cos(yaw), math.sin(yaw)
            pw = torch.stack([cs * pl[:, 0] - sn * pl[:, 1], sn * pl[:, 0] + cs * pl[:, 1], pl[:, 2]], -1) + c
            pw = pw[_inside(prims, i, pw)]
            ijk, ok = grid.metric_to_index(transform_points(T_ego_world, pw))
            ijk = ijk[ok]
            if ijk.numel():
                labels[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = int(prims.label[i])
            continue
        # voxel index range of the primitive's bounding box (in the ego frame)
        corners = torch.tensor([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=torch.float32) * h
        cs, sn = math.cos(yaw), math.sin(yaw)
        cw_ = torch.stack([cs * corners[:, 0] - sn * corners[:, 1], sn * corners[:, 0] + cs * corners[:, 1], corners[:, 2]], -1) + c
        ce = transform_points(T_ego_world, cw_)
        lo = torch.floor((ce.min(0).values - lower) / s).long().clamp(min=0)
        hi = torch.minimum(torch.floor((ce.max(0).values - lower) / s).long() + 1, shape)
        if (hi <= lo).any():
            continue
        block = labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        bc = _block_centers(grid, lo, hi)
        inside = _inside(prims, i, transform_points(T, bc.reshape(-1, 3))).reshape(block.shape)
        block[inside] = int(prims.label[i])
    return labels


def _block_centers(grid: VoxelGridSpec, lo: Tensor, hi: Tensor) -> Tensor:
    idx = [torch.arange(int(a), int(b), dtype=torch.float32) for a, b in zip(lo, hi)]
    ijk = torch.stack(torch.meshgrid(*idx, indexing="ij"), -1)
    return grid.index_to_metric(ijk)


def _mark(mask: Tensor, grid: VoxelGridSpec, points_ego: Tensor) -> None:
    """Set voxels containing ego-frame points ``(M, 3)`` in the flat mask ``(X*Y*Z,)``."""
    _, Y, Z = grid.shape
    ijk, ok = grid.metric_to_index(points_ego)
    ijk = ijk[ok]
    mask[(ijk[:, 0] * Y + ijk[:, 1]) * Z + ijk[:, 2]] = True


def camera_visibility(depth: Tensor, K: Tensor, T_ego_cam: Tensor, grid: VoxelGridSpec) -> Tensor:
    """Voxels ``[X, Y, Z]`` bool seen by cameras: in front of the first hit, plus the hit voxels.

    depth:     [N, H, W] z-depth of the first hit (0 or inf = nothing hit / sky)
    K:         [N, 3, 3] intrinsics of the depth maps
    T_ego_cam: [N, 4, 4]
    A voxel counts when its centre projects into a camera with a z-depth below the depth map
    there (the farthest of the 3x3 pixels around it, since at grazing angles neighbouring
    pixels of the ground differ by metres) plus half a voxel (so a voxel whose centre lies on or just behind the surface, i.e.
    the voxel of the first hit, is included); voxels holding a back-projected hit point are
    added too.
    """
    N, H, W = depth.shape
    X, Y, Z = grid.shape
    centers = grid.centers().reshape(-1, 3)
    mask = torch.zeros(X * Y * Z, dtype=torch.bool)
    d = torch.where(depth > 0, depth, torch.full_like(depth, float("inf")))
    d = torch.nn.functional.max_pool2d(d[:, None], 3, stride=1, padding=1)[:, 0]
    for n in range(N):
        pc = transform_points(invert_transform(T_ego_cam[n].float()), centers)
        z = pc[:, 2]
        uv = pc[:, :2] / z.clamp(min=1e-6).unsqueeze(-1) @ K[n, :2, :2].T + K[n, :2, 2]
        u = torch.round(uv[:, 0]).long()
        v = torch.round(uv[:, 1]).long()
        ok = (z > 0.05) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
        idx = torch.nonzero(ok).squeeze(-1)
        front = z[idx] < d[n, v[idx], u[idx]] + 0.5 * grid.voxel_size
        mask[idx[front]] = True
        # the voxels of the first hits themselves
        hit = torch.isfinite(d[n])
        pts = backproject(depth[n] * (1.0 + 1e-4), K[n])[hit]  # nudged into the surface
        _mark(mask, grid, transform_points(T_ego_cam[n].float(), pts))
    return mask.reshape(X, Y, Z)


def lidar_visibility(world: World, t: float, T_world_ego: np.ndarray, grid: VoxelGridSpec,
                     lidar_in_ego=NUSCENES_LIDAR_IN_EGO, beams: int = 32, azimuths: int = 1024,
                     fov_deg: tuple[float, float] = (-30.67, 10.67)) -> Tensor:
    """Voxels ``[X, Y, Z]`` bool observed by a simulated spinning LiDAR (axes = ego axes).

    A voxel counts when its centre lies within 0.75 voxel of a beam, in front of that
    beam's first hit; voxels holding a hit point are added.
    """
    X, Y, Z = grid.shape
    s = grid.voxel_size
    o, dirs, t_hit = cast_lidar(world, t, T_world_ego, lidar_in_ego, beams, azimuths, fov_deg)
    rng = t_hit.reshape(beams, azimuths)
    el_beams = torch.deg2rad(torch.linspace(fov_deg[0], fov_deg[1], beams))
    centers = grid.centers().reshape(-1, 3) - torch.tensor(lidar_in_ego, dtype=torch.float32)
    r = centers.norm(dim=-1).clamp(min=1e-6)
    el = torch.arcsin(centers[:, 2] / r)
    az = torch.atan2(centers[:, 1], centers[:, 0]) % (2 * math.pi)
    b = torch.bucketize(el, (el_beams[1:] + el_beams[:-1]) / 2)
    a = torch.round(az / (2 * math.pi) * azimuths).long() % azimuths
    near_beam = (el - el_beams[b]).abs() * r <= 0.75 * s
    mask = near_beam & (r < rng[b, a])
    hit = torch.isfinite(t_hit)
    T = torch.as_tensor(T_world_ego, dtype=torch.float32)
    p_world = o[hit] + (t_hit[hit, None] + 1e-3) * dirs[hit]  # nudged 1 mm into the surface
    _mark(mask, grid, transform_points(invert_transform(T), p_world))
    return mask.reshape(X, Y, Z)


def cast_lidar(world: World, t: float, T_world_ego: np.ndarray, lidar_in_ego=NUSCENES_LIDAR_IN_EGO, beams: int = 32,
               azimuths: int = 1024, fov_deg: tuple[float, float] = (-30.67, 10.67), max_range: float = 100.0):
    """Cast a spinning LiDAR: world ``origins, dirs (beams*azimuths, 3)`` and ranges ``(beams*azimuths,)``

    (beam-major order; inf where nothing is hit within `max_range`).
    """
    o, dirs = lidar_rays(T_world_ego, lidar_in_ego, beams, azimuths, fov_deg)
    prims = world.prims.at(t)
    sel = cull(prims, o[0], max_range)
    sectors = 16 if azimuths % 16 == 0 else 1
    # azimuth sectors are coherent ray groups for cone culling
    og = o.reshape(beams, sectors, -1, 3).transpose(0, 1).reshape(sectors, -1, 3)
    dg = dirs.reshape(beams, sectors, -1, 3).transpose(0, 1).reshape(sectors, -1, 3)
    t_hit, _ = intersect_groups(prims.subset(sel), list(zip(og, dg)))
    t_hit = t_hit.reshape(sectors, beams, -1).transpose(0, 1).reshape(-1)
    t_hit = torch.where(t_hit <= max_range, t_hit, torch.full_like(t_hit, float("inf")))
    return o, dirs, t_hit


def lidar_rays(T_world_ego: np.ndarray, lidar_in_ego=NUSCENES_LIDAR_IN_EGO, beams: int = 32, azimuths: int = 1024,
               fov_deg: tuple[float, float] = (-30.67, 10.67)) -> tuple[Tensor, Tensor]:
    """World rays ``(beams * azimuths, 3)`` of a spinning LiDAR mounted at `lidar_in_ego`."""
    el = torch.deg2rad(torch.linspace(fov_deg[0], fov_deg[1], beams))
    az = torch.linspace(0, 2 * math.pi, azimuths + 1)[:-1]
    e, a = torch.meshgrid(el, az, indexing="ij")
    d = torch.stack([torch.cos(e) * torch.cos(a), torch.cos(e) * torch.sin(a), torch.sin(e)], -1).reshape(-1, 3)
    T = torch.as_tensor(T_world_ego, dtype=torch.float32)
    o = transform_points(T, torch.tensor([lidar_in_ego], dtype=torch.float32))[0]
    return o.expand_as(d).contiguous(), d @ T[:3, :3].T
