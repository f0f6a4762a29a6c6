"""Camera ray generation."""

from __future__ import annotations

import torch
from torch import Tensor


def camera_rays(uv: Tensor, K: Tensor, T_ego_cam: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Rays through pixels ``uv (*, M, 2)`` of cameras ``K (*, 3, 3)``, ``T_ego_cam (*, 4, 4)``.

    Returns ``origins (*, M, 3)`` and unit ``directions (*, M, 3)`` in the ego frame, and
    ``z_per_unit (*, M)``: the camera z-depth gained per metre along the ray, so that
    ``z_depth = t * z_per_unit`` converts a ray distance t to the depth a depth map holds.
    """
    ones = torch.ones_like(uv[..., :1])
    pix = torch.cat([uv, ones], dim=-1)
    d_cam = pix @ torch.linalg.inv(K).transpose(-1, -2)  # z = 1 in the camera frame
    norm = d_cam.norm(dim=-1, keepdim=True)
    d_cam = d_cam / norm
    R = T_ego_cam[..., :3, :3]
    directions = d_cam @ R.transpose(-1, -2)
    origins = T_ego_cam[..., :3, 3].unsqueeze(-2).expand_as(directions)
    return origins, directions, d_cam[..., 2]


def image_rays(K: Tensor, T_ego_cam: Tensor, image_size: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
    """`camera_rays` through every pixel centre (integer u, v) of N cameras ``K [N, 3, 3]``,
    ``T_ego_cam [N, 4, 4]`` with images of ``image_size = (H, W)``: each output ``[N, H*W, ...]``,
    float64 (row-major pixel order, so ``.reshape(N, H, W)`` gives maps)."""
    H, W = image_size
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    uv = torch.stack([u, v], -1).reshape(1, H * W, 2).expand(K.shape[0], -1, -1)
    return camera_rays(uv, K.double().cpu(), T_ego_cam.double().cpu())
