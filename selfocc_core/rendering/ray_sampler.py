"""Ray generation on a strided pixel grid and sample placement along rays.

Rays of camera n form an image: cell (r, c) of the ``h x w = (H // stride) x (W // stride)`` grid
holds one ray, through the centre of the cell's middle pixel ``(c * stride + stride // 2,
r * stride + stride // 2)`` or, with ``random_offset``, a uniformly random point of the cell
(pixel-index coordinates: pixel i covers [i - 0.5, i + 0.5)). The fixed rays go through pixel
centres (not through the cell centre, which for an even stride lies on a pixel corner), so a
per-pixel image (ground-truth depth, labels) read at the ray is exactly the value of the pixel
the ray goes through; `ray_grid_to_image` upsamples ray-grid values back to an image with the
same alignment. Ray index ``R = n * h * w + r * w + c``, so ``x.view(B, N, h, w, ...)`` gives
per-camera ray images (for SSIM on the ray grid).
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from selfocc_core.geometry.rays import camera_rays
from selfocc_core.geometry.voxel_grid import VoxelGridSpec
from selfocc_core.rendering.types import RayBundle


def ray_grid_shape(image_size: tuple[int, int], stride: int) -> tuple[int, int]:
    """``(h, w) = (H // stride, W // stride)``; raises ValueError if the grid would be empty."""
    H, W = image_size
    if stride < 1 or H // stride < 1 or W // stride < 1:
        raise ValueError(f"ray stride {stride} is invalid for image size {(H, W)}")
    return H // stride, W // stride


def ray_grid_pixels(image_size: tuple[int, int], stride: int, shape_prefix: tuple[int, ...] = (),
                    random_offset: bool = False, device=None, generator: Optional[torch.Generator] = None) -> Tensor:
    """Pixel coordinates ``[*shape_prefix, h * w, 2]`` (u, v) of the ray grid."""
    h, w = ray_grid_shape(image_size, stride)
    r, c = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                          torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    base = torch.stack([c, r], -1).reshape(h * w, 2) * stride
    if random_offset:
        u = torch.rand((*shape_prefix, h * w, 2), generator=generator, device=device if generator is None else generator.device)
        return base + u.to(base.device) * stride - 0.5
    return (base + float(stride // 2)).expand(*shape_prefix, h * w, 2)


def ray_grid_to_image(values: Tensor, stride: int, image_size: tuple[int, int],
                      out_size: Optional[tuple[int, int]] = None) -> Tensor:
    """Bilinear upsampling of fixed-grid ray values ``[B, C, h, w]`` to an image ``[B, C, H_out, W_out]``.

    ``image_size = (H, W)`` is the image the rays were cast for (``h = H // stride``); ray (r, c)
    sits at its pixel ``(c * stride + stride // 2, r * stride + stride // 2)``, so an output pixel
    at one of those pixels gets exactly that ray's value; in between values are interpolated,
    beyond the outermost rays they are held (border). ``out_size`` (default ``image_size``) may
    differ: pixel centres are matched as in ``interpolate(align_corners=False)`` /
    `scale_intrinsics`.
    """
    if values.dim() != 4:
        raise ValueError(f"ray_grid_to_image: values must be [B, C, h, w], got {tuple(values.shape)}")
    h, w = ray_grid_shape(image_size, stride)
    if tuple(values.shape[-2:]) != (h, w):
        raise ValueError(f"ray_grid_to_image: values {tuple(values.shape)} are not on the {h}x{w} ray grid of "
                         f"image {tuple(image_size)} at stride {stride}")
    H, W = image_size
    Ho, Wo = out_size or image_size
    dev = values.device

    def coords(n_out: int, n_in: int, n_grid: int) -> Tensor:
        px = (torch.arange(n_out, device=dev, dtype=torch.float32) + 0.5) * (n_in / n_out) - 0.5
        g = (px - stride // 2) / stride  # ray-grid coordinate
        return g / max(n_grid - 1, 1) * 2.0 - 1.0 if n_grid > 1 else torch.zeros_like(g)

    gy, gx = torch.meshgrid(coords(Ho, H, h), coords(Wo, W, w), indexing="ij")
    grid = torch.stack([gx, gy], -1).expand(values.shape[0], Ho, Wo, 2)
    v = values if values.is_floating_point() else values.float()
    return F.grid_sample(v, grid.to(v.dtype), mode="bilinear", padding_mode="border", align_corners=True)


def ray_box_intersection(origins: Tensor, directions: Tensor, lower, upper) -> tuple[Tensor, Tensor]:
    """Slab test. ``origins, directions [..., 3]`` -> ``(t_enter, t_exit) [...]`` (may be negative;
    the ray misses the box when t_exit < max(t_enter, 0))."""
    lo = torch.as_tensor(lower, dtype=origins.dtype, device=origins.device)
    hi = torch.as_tensor(upper, dtype=origins.dtype, device=origins.device)
    tiny = 1e-12
    d = torch.where(directions.abs() < tiny, torch.full_like(directions, tiny), directions)
    t0 = (lo - origins) / d
    t1 = (hi - origins) / d
    return torch.minimum(t0, t1).amax(-1), torch.maximum(t0, t1).amin(-1)


def generate_rays(K: Tensor, T_ego_cam: Tensor, image_size: tuple[int, int], stride: int,
                  random_offset: bool, box: VoxelGridSpec, min_near: float = 0.1,
                  generator: Optional[torch.Generator] = None) -> RayBundle:
    """Rays of N cameras on the strided grid, clipped to the scene box.

    Args:
        K: ``[B, N, 3, 3]`` intrinsics for images of ``image_size = (H, W)``.
        T_ego_cam: ``[B, N, 4, 4]`` camera optical frame -> the ego frame the field lives in
            (for an adjacent frame's cameras: already expressed in the input frame's ego frame).
        stride: pixels per ray cell; random_offset: jitter each ray inside its cell.
        box: the scene box; ``near = max(t_enter, min_near)``, ``far = t_exit``. Rays that miss
            the box get ``valid = False`` and ``far = near + 1e-3``.

    Returns:
        RayBundle with R = N * h * w rays (see module docstring for the order).
    """
    if K.dim() != 4 or K.shape[-2:] != (3, 3) or tuple(T_ego_cam.shape) != (*K.shape[:2], 4, 4):
        raise ValueError(f"generate_rays: expected K [B,N,3,3] and T_ego_cam [B,N,4,4], got "
                         f"{tuple(K.shape)} and {tuple(T_ego_cam.shape)}")
    B, N = K.shape[:2]
    h, w = ray_grid_shape(image_size, stride)
    uv = ray_grid_pixels(image_size, stride, (B, N), random_offset, K.device, generator).to(K.dtype)
    origins, directions, z_per_unit = camera_rays(uv, K, T_ego_cam)  # [B, N, M, 3]
    M = h * w
    origins, directions = origins.reshape(B, N * M, 3), directions.reshape(B, N * M, 3)
    t_in, t_out = ray_box_intersection(origins, directions, box.lower, box.upper)
    near = t_in.clamp(min=min_near)
    valid = t_out > near
    far = torch.where(valid, t_out, near + 1e-3)
    cam = torch.arange(N, device=K.device).repeat_interleave(M).expand(B, -1)
    return RayBundle(origins=origins, directions=directions, z_per_unit=z_per_unit.reshape(B, N * M),
                     near=near, far=far, camera_index=cam, pixels=uv.reshape(B, N * M, 2),
                     valid=valid, grid_shape=(h, w))


def bin_edges(near: Tensor, far: Tensor, num_bins: int,
              spacing: Literal["uniform", "disparity", "log"] = "uniform") -> Tensor:
    """``num_bins + 1`` bin edges ``[..., S + 1]`` from ``near`` to ``far [...]``, uniform in
    distance, in disparity (1/t) or in log distance (every bin spans the same ratio
    (far/near)^(1/S), i.e. the same relative depth step at every range)."""
    if near.shape != far.shape:
        raise ValueError(f"bin_edges: near {tuple(near.shape)} and far {tuple(far.shape)} differ")
    u = torch.linspace(0.0, 1.0, num_bins + 1, device=near.device, dtype=near.dtype)
    n, f = near[..., None], far[..., None]
    if spacing == "uniform":
        return n + (f - n) * u
    if spacing == "disparity":
        return 1.0 / (1.0 / n + (1.0 / f - 1.0 / n) * u)
    if spacing == "log":
        if bool((n <= 0).any()):
            raise ValueError("bin_edges: 'log' spacing needs near > 0 (model.min_near is positive)")
        return n * (f / n) ** u
    raise ValueError(f"bin_edges: spacing must be 'uniform', 'disparity' or 'log', got {spacing!r}")


def sample_along_rays(near: Tensor, far: Tensor, num_samples: int, stratified: bool,
                      spacing: Literal["uniform", "disparity", "log"] = "uniform",
                      generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
    """Stratified samples in ``num_samples`` bins between ``near`` and ``far [...]``.

    Bin edges as `bin_edges` (uniform bins are coarse near the camera, disparity bins far from
    it, log bins the same relative step everywhere). Each sample sits at its bin's midpoint, or
    uniformly inside it when ``stratified``. Returns ``t [..., S]`` and the bin widths
    ``deltas [..., S]`` (the ray length each sample stands for).
    """
    if near.shape != far.shape:
        raise ValueError(f"sample_along_rays: near {tuple(near.shape)} and far {tuple(far.shape)} differ")
    edges = bin_edges(near, far, num_samples, spacing)
    lo, hi = edges[..., :-1], edges[..., 1:]
    if stratified:
        r = torch.rand(lo.shape, generator=generator, device=lo.device if generator is None else generator.device)
        t = lo + (hi - lo) * r.to(lo.device, lo.dtype)
    else:
        t = 0.5 * (lo + hi)
    return t, hi - lo


def sample_pdf(edges: Tensor, weights: Tensor, num_samples: int, stratified: bool,
               generator: Optional[torch.Generator] = None) -> Tensor:
    """``num_samples`` distances ``[..., F]`` drawn from the piecewise-constant density that puts
    mass ``weights [..., S]`` uniformly in the bins ``edges [..., S + 1]`` (inverse transform
    sampling, as NeRF's hierarchical stage). The CDF is inverted at ``(i + 0.5) / F`` or, with
    ``stratified``, at a uniform point of ``[i / F, (i + 1) / F)``; rays with no weight sample
    their bins uniformly. Sorted along the last dim."""
    if edges.shape[:-1] != weights.shape[:-1] or edges.shape[-1] != weights.shape[-1] + 1:
        raise ValueError(f"sample_pdf: edges {tuple(edges.shape)} do not bound weights {tuple(weights.shape)}")
    w = weights.detach().float().clamp(min=0.0) + 1e-5  # a floor: empty rays get a uniform density
    cdf = torch.cumsum(w / w.sum(-1, keepdim=True), -1)
    cdf = torch.cat([torch.zeros_like(cdf[..., :1]), cdf.clamp(max=1.0)], -1)  # [..., S + 1]
    shape = (*weights.shape[:-1], num_samples)
    if stratified:
        r = torch.rand(shape, generator=generator, device=w.device if generator is None else generator.device)
        u = (torch.arange(num_samples, device=w.device, dtype=w.dtype) + r.to(w.device, w.dtype)) / num_samples
    else:
        u = ((torch.arange(num_samples, device=w.device, dtype=w.dtype) + 0.5) / num_samples).expand(shape)
    u = u.contiguous()
    hi_idx = torch.searchsorted(cdf.contiguous(), u, right=True).clamp(1, weights.shape[-1])
    lo_idx = hi_idx - 1
    c_lo, c_hi = cdf.gather(-1, lo_idx), cdf.gather(-1, hi_idx)
    e = edges.detach().float()
    e_lo, e_hi = e.gather(-1, lo_idx), e.gather(-1, hi_idx)
    frac = ((u - c_lo) / (c_hi - c_lo).clamp(min=1e-8)).clamp(0.0, 1.0)
    return (e_lo + frac * (e_hi - e_lo)).to(edges.dtype)


def merge_samples(t_a: Tensor, t_b: Tensor, near: Tensor, far: Tensor) -> tuple[Tensor, Tensor]:
    """Sorted union ``t [..., Sa + Sb]`` of two sample sets on the same rays and the ray length
    each sample stands for (``deltas``: from the midpoint to its predecessor to the midpoint to its
    successor; the first bin starts at ``near``, the last ends at ``far``)."""
    t, _ = torch.sort(torch.cat([t_a, t_b], -1), -1)
    mid = 0.5 * (t[..., 1:] + t[..., :-1])
    edges = torch.cat([torch.minimum(near[..., None], t[..., :1]), mid, torch.maximum(far[..., None], t[..., -1:])], -1)
    return t, edges[..., 1:] - edges[..., :-1]
