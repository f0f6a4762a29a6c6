"""Exact ground-truth occupancy of the synthetic world on an ego-frame voxel grid.

Semantics: a voxel takes the class of a primitive containing its centre (inside tests
against the analytic shapes); thin primitives (any half extent below one voxel: poles, signs,
cones) are instead sampled on a lattice finer than the voxels so they are never missed.
Ground voxels are those whose bottom lies below the road surface (z = 0). Objects (things
with an instance id) are written last so they win over stuff.

Visibility masks (Occ3D style): ``mask_camera`` marks voxels traversed by camera rays up to
and including the voxel of the first hit; ``mask_lidar`` does the same for a simulated
spinning LiDAR. Rays are sampled every half voxel, so a voxel only clipped at a corner may
be missed; that is acceptable for a mask.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from selfocc_core.classes import CLASS_ID, FREE_LABEL
from selfocc_core.geometry.transforms import invert_transform, transform_points
from selfocc_core.geometry.voxel_grid import VoxelGridSpec
from selfocc_core.synth.raycast import NO_HIT, cull, intersect, to_local
from selfocc_core.synth.world import BOX, CYLINDER, ELLIPSOID, Primitives, World, ground_label

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


def ray_visibility(
    world: World, t: float, origins: Tensor, dirs: Tensor, T_world_ego: np.ndarray, grid: VoxelGridSpec,
    chunk: int = 4096,
) -> Tensor:
    """Voxels ``[X, Y, Z]`` bool traversed by world rays ``(R, 3)`` up to and including the first hit."""
    X, Y, Z = grid.shape
    s = grid.voxel_size
    prims = world.prims.at(t)
    sel = cull(prims, origins.mean(0), 90.0)
    t_hit, idx = intersect(prims.subset(sel), origins, dirs)
    T = torch.as_tensor(T_world_ego, dtype=torch.float32)
    T_ego_world = invert_transform(T)
    o_e = transform_points(T_ego_world, origins)
    d_e = dirs @ T_ego_world[:3, :3].T
    max_len = math.sqrt((grid.x_max - grid.x_min) ** 2 + (grid.y_max - grid.y_min) ** 2 + (grid.z_max - grid.z_min) ** 2)
    t_end = torch.where(idx == NO_HIT, torch.full_like(t_hit, max_len), t_hit.clamp(max=max_len))
    mask = torch.zeros(X * Y * Z, dtype=torch.bool)
    steps = torch.arange(0.0, max_len + s, s / 2)
    for a in range(0, origins.shape[0], chunk):
        o, d, te = o_e[a : a + chunk], d_e[a : a + chunk], t_end[a : a + chunk]
        n_steps = int(torch.ceil(te.max() / (s / 2)).item()) + 1
        ts = steps[:n_steps].unsqueeze(0).expand(o.shape[0], -1)
        ts = torch.minimum(ts, te.unsqueeze(-1))  # last samples sit at the hit
        hit_t = torch.where(te < max_len, te + 1e-3, te)  # nudge into the hit voxel
        ts = torch.cat([ts, hit_t.unsqueeze(-1)], -1)
        p = o.unsqueeze(1) + ts.unsqueeze(-1) * d.unsqueeze(1)
        ijk, ok = grid.metric_to_index(p.reshape(-1, 3))
        ijk = ijk[ok]
        mask[(ijk[:, 0] * Y + ijk[:, 1]) * Z + ijk[:, 2]] = True
    return mask.reshape(X, Y, Z)


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
