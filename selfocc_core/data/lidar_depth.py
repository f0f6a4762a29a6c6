"""Sparse ground-truth depth maps from LiDAR points (evaluation only)."""

from __future__ import annotations

import torch
from torch import Tensor

from selfocc_core.geometry.camera import project
from selfocc_core.geometry.transforms import invert_transform, transform_points


def lidar_depth_maps(
    points_ego: Tensor,
    K: Tensor,
    T_ego_cam: Tensor,
    height: int,
    width: int,
    min_depth: float = 0.5,
    max_depth: float = 80.0,
) -> Tensor:
    """Project points ``[M, 3]`` (ego frame) into N cameras -> z-depth maps ``[N, H, W]``.

    K ``[N, 3, 3]`` and T_ego_cam ``[N, 4, 4]`` describe images of size (height, width).
    Each pixel keeps the nearest point (z-buffer); pixels without a point hold 0.
    """
    if points_ego.dim() != 2 or points_ego.shape[-1] != 3:
        raise ValueError(f"lidar_depth_maps: points must be [M, 3], got {tuple(points_ego.shape)}")
    N = K.shape[0]
    if tuple(K.shape) != (N, 3, 3) or tuple(T_ego_cam.shape) != (N, 4, 4):
        raise ValueError(f"lidar_depth_maps: K [N,3,3] and T_ego_cam [N,4,4] expected, got {tuple(K.shape)} {tuple(T_ego_cam.shape)}")
    pts = points_ego.double()
    T_cam_ego = invert_transform(T_ego_cam.double())
    out = torch.zeros(N, height, width, dtype=torch.float32)
    for n in range(N):
        p_cam = transform_points(T_cam_ego[n], pts)
        uv, z = project(p_cam, K[n].double())
        u = torch.round(uv[:, 0]).long()
        v = torch.round(uv[:, 1]).long()
        keep = (z >= min_depth) & (z <= max_depth) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
        u, v, z = u[keep], v[keep], z[keep].float()
        flat = torch.full((height * width,), float("inf"))
        flat.scatter_reduce_(0, v * width + u, z, reduce="amin")
        flat[torch.isinf(flat)] = 0.0
        out[n] = flat.view(height, width)
    return out
