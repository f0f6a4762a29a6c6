"""Pinhole camera functions over any leading dimensions (kornia style).

Pixel convention: pixel (u, v) = (column, row); the centre of the top-left pixel is (0.5, 0.5)
in continuous coordinates is NOT used: like OpenCV/ROS, integer pixel index i has centre at i.
"""

from __future__ import annotations

import torch
from torch import Tensor


def scale_intrinsics(K, sx: float, sy: float):
    """Intrinsics ``(*, 3, 3)`` (a tensor or a numpy array; the same type back) after resizing an
    image by (sx, sy) = (new_w/old_w, new_h/old_h).

    Uses the pixel-centre-aligned mapping u' = (u + 0.5) * sx - 0.5, matching
    ``F.interpolate(..., align_corners=False)``.
    """
    K = K.clone() if isinstance(K, Tensor) else K.copy()
    K[..., 0, 0] *= sx
    K[..., 0, 1] *= sx
    K[..., 1, 1] *= sy
    K[..., 0, 2] = (K[..., 0, 2] + 0.5) * sx - 0.5
    K[..., 1, 2] = (K[..., 1, 2] + 0.5) * sy - 0.5
    return K


def crop_intrinsics(K: Tensor, left: float, top: float) -> Tensor:
    """Intrinsics ``(*, 3, 3)`` after cropping ``left`` columns and ``top`` rows."""
    K = K.clone()
    K[..., 0, 2] -= left
    K[..., 1, 2] -= top
    return K


def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> Tensor:
    """Pixel coordinates ``(H, W, 2)`` holding (u, v) = (column, row)."""
    v, u = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype),
        torch.arange(width, device=device, dtype=dtype),
        indexing="ij",
    )
    return torch.stack([u, v], dim=-1)


def project(points_cam: Tensor, K: Tensor, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Project camera-frame points ``(*, M, 3)`` with ``K (*, 3, 3)``.

    Returns ``(uv (*, M, 2), depth (*, M))``; uv is meaningless where depth <= eps.

    Example:
        >>> K = torch.tensor([[100., 0, 50], [0, 100., 40], [0, 0, 1]])
        >>> project(torch.tensor([[1., 0.5, 10.]]), K)[0]
        tensor([[60., 45.]])
    """
    if points_cam.shape[-1] != 3 or K.shape[-2:] != (3, 3):
        raise ValueError(f"expected points (*,M,3) and K (*,3,3), got {tuple(points_cam.shape)} {tuple(K.shape)}")
    z = points_cam[..., 2]
    p = points_cam @ K.transpose(-1, -2)
    uv = p[..., :2] / z.clamp(min=eps).unsqueeze(-1)
    return uv, z


def backproject(depth: Tensor, K: Tensor) -> Tensor:
    """Back-project a depth map ``(*, H, W)`` (z-depth) to camera-frame points ``(*, H, W, 3)``."""
    H, W = depth.shape[-2:]
    uv = pixel_grid(H, W, device=depth.device, dtype=depth.dtype)
    ones = torch.ones_like(uv[..., :1])
    pix = torch.cat([uv, ones], dim=-1)  # (H, W, 3)
    K_inv = torch.linalg.inv(K)  # (*, 3, 3)
    rays = torch.einsum("...ij,hwj->...hwi", K_inv, pix)
    return rays * depth.unsqueeze(-1)
