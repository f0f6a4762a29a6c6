"""Exact ground-truth occupancy of the synthetic world on an ego-frame voxel grid.

Semantics: a voxel takes the class of a primitive containing its centre (inside tests
against the analytic shapes); thin primitives (any half extent below one voxel: poles, signs,
cones) are instead sampled on a lattice finer than the voxels so they are never missed.
Ground voxels are those whose bottom lies below the road surface (z = 0). Objects (things
with an instance id) are written last so they win over stuff.

Visibility masks (Occ3D style): ``mask_camera`` marks voxels seen by a camera: Occ3D's ray
casting through the GT voxels, every voxel a pixel ray traverses up to and including the first
occupied one (`camera_visibility`); ``mask_lidar`` marks voxels in front of the first surface
hit of a simulated spinning LiDAR, counting only voxels within 0.75 voxel of a beam, plus the
voxels of the hits (`lidar_visibility`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from selfocc_core.classes import FREE_LABEL
from selfocc_core.geometry.camera import pixel_grid
from selfocc_core.geometry.rays import camera_rays
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


def camera_visibility(occupied: Tensor, K: Tensor, T_ego_cam: Tensor, image_size: tuple[int, int],
                      grid: VoxelGridSpec, chunk: int = 1 << 18) -> Tensor:
    """Occ3D camera-visibility mask ``[X, Y, Z]`` bool by ray casting through the voxel grid.

    occupied:   [X, Y, Z] bool, the GT occupancy on `grid` (label != free)
    K:          [N, 3, 3] intrinsics of images of ``image_size = (H, W)``
    T_ego_cam:  [N, 4, 4] camera optical frame -> ego (the grid's frame)

    Occ3D's camera-visibility rule (the ray casting of its label pipeline, "occlusion
    reasoning"): a ray from each camera centre through each pixel (here: the pixel centres of
    an H x W image) walks the voxels it traverses; every voxel up to and including the first
    occupied one is observed, the voxels behind it are not. A ray that meets no occupied voxel (sky, scenery
    beyond the grid) observes every voxel it traverses up to the grid's boundary. Voxels no
    ray traverses are unobserved. The traversal is exact (a 3D DDA, Amanatides & Woo: a voxel
    that a ray only clips at a corner counts), vectorised over `chunk` rays at a time. Occ3D walks its LiDAR-derived voxel states and also stops at
    voxels the LiDAR never observed; the synthetic GT is complete, so there is no such state.
    ``image_size`` sets the ray density (`MASK_RAYS_PER_CAMERA` for the synthetic GT): far road
    voxels seen at grazing angles fall between rays, so the mask still grows slowly with the
    density (training/README.md, "Evaluation you can trust").
    """
    if occupied.shape != grid.shape:
        raise ValueError(f"camera_visibility: occupied {tuple(occupied.shape)} does not match the grid {grid.shape}")
    N = K.shape[0]
    if K.shape != (N, 3, 3) or T_ego_cam.shape != (N, 4, 4):
        raise ValueError(f"camera_visibility: expected K [N,3,3], T_ego_cam [N,4,4], got {tuple(K.shape)} {tuple(T_ego_cam.shape)}")
    H, W = image_size
    uv = pixel_grid(H, W).reshape(1, -1, 2).expand(N, -1, -1)
    origins, dirs, _ = camera_rays(uv, K.float(), T_ego_cam.float())
    mask = torch.zeros(occupied.numel() + 1, dtype=torch.bool)  # + a spare element for finished rays
    occ_flat = torch.cat([occupied.reshape(-1).bool(), torch.ones(1, dtype=torch.bool)])
    o_all, d_all = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    for s in range(0, o_all.shape[0], chunk):
        _first_hit_voxels(o_all[s:s + chunk], d_all[s:s + chunk], occ_flat, grid, mask)
    return mask[:-1].reshape(grid.shape)


def _first_hit_voxels(origins: Tensor, dirs: Tensor, occ_flat: Tensor, grid: VoxelGridSpec, mask: Tensor) -> None:
    """Set in the flat ``mask`` (one spare last element) the voxels that rays ``(R, 3)`` (ego
    frame, unit directions) traverse up to and including their first occupied one: a 3D DDA
    (Amanatides & Woo) run on all rays at once, one voxel step per iteration; rays that hit or
    leave the grid write to the spare element and are dropped now and then."""
    dt = torch.float64
    n = torch.tensor(grid.shape)
    _, Y, Z = grid.shape
    spare = mask.numel() - 1
    p = (origins.to(dt) - torch.tensor(grid.lower, dtype=dt)) / grid.voxel_size  # index coordinates
    d = dirs.to(dt) / grid.voxel_size  # index units per metre
    tiny = 1e-12
    moves = d.abs() >= tiny
    d_safe = torch.where(moves, d, torch.full_like(d, tiny))
    ta, tb = -p / d_safe, (n.to(dt) - p) / d_safe
    t0 = torch.minimum(ta, tb).amax(-1).clamp(min=0.0)  # grid entry (or the camera centre inside it)
    t1 = torch.maximum(ta, tb).amin(-1)  # grid exit
    keep = t1 > t0
    p, d, d_safe, moves, t0, t1 = p[keep], d[keep], d_safe[keep], moves[keep], t0[keep], t1[keep]
    ijk = torch.floor(p + (t0 + 1e-9 * (t1 - t0))[:, None] * d).long()
    ijk = torch.minimum(ijk.clamp(min=0), n - 1)
    step = (torch.where(d > 0, 1, -1) * moves).long()
    inf = torch.full_like(d, torch.inf)
    t_delta = torch.where(moves, 1.0 / d_safe.abs(), inf)
    t_max = torch.where(moves, (ijk.to(dt) + (step > 0).to(dt) - p) / d_safe, inf)  # next face per axis
    # float32 from here: t in metres to ~1e-5 m over the grid is plenty
    t_max, t_delta, t1 = t_max.float(), t_delta.float(), t1.float()
    flat = (ijk[:, 0] * Y + ijk[:, 1]) * Z + ijk[:, 2]
    stride = torch.tensor([Y * Z, Z, 1])
    alive = torch.ones(flat.shape[0], dtype=torch.bool)
    while flat.numel():
        mask[flat] = True
        alive &= ~occ_flat[flat]  # the first occupied voxel is the last one observed (spare counts occupied)
        axis = t_max.argmin(-1, keepdim=True)
        alive &= t_max.gather(1, axis)[:, 0] < t1  # the next face lies beyond the grid's exit
        s_ax = step.gather(1, axis)
        ijk = ijk.scatter_add(1, axis, s_ax)
        t_max = t_max.scatter_add(1, axis, t_delta.gather(1, axis))
        alive &= ((ijk >= 0) & (ijk < n)).all(-1)
        flat = torch.where(alive, flat + s_ax[:, 0] * stride[axis[:, 0]], spare)
        if int(alive.sum()) < 0.75 * alive.numel():
            ijk, t_max, step, t_delta, t1, flat, alive = (x[alive] for x in (ijk, t_max, step, t_delta, t1, flat, alive))


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
