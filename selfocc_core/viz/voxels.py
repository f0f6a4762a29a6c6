"""Occupancy grids -> pictures: a bird's-eye view and a perspective voxel render.

Both take labels ``[X, Y, Z]`` on a `VoxelGridSpec` (ego frame, x forward, y left, z up) with
``FREE_LABEL`` for free space and colour voxels by class (the Occ3D palette of
`selfocc_core.classes`, the same one the RViz markers use) or by height.

The perspective view is an exact voxel ray caster (Amanatides & Woo DDA) in torch: every
pixel's ray walks the grid cell by cell until it meets an occupied voxel, which gives a
correct z-buffer, the face that was hit (for Lambert shading) and cube edges (outlined).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from selfocc_core.classes import FREE_LABEL, OCC3D_COLORS
from selfocc_core.geometry.voxel_grid import VoxelGridSpec
from selfocc_core.viz.colormaps import apply_colormap, label_colors

BACKGROUND = (32, 34, 40)


def _labels_np(labels) -> np.ndarray:
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    lab = np.asarray(labels)
    if lab.dtype == bool:  # plain occupancy: occupied voxels get class 0
        lab = np.where(lab, 0, FREE_LABEL).astype(np.uint8)
    if lab.ndim != 3:
        raise ValueError(f"voxel labels must be [X, Y, Z], got shape {lab.shape}")
    return lab


def _height_colors(k: np.ndarray, num_z: int) -> np.ndarray:
    """Voxel layer index -> RGB by height (turbo, low = blue, high = red)."""
    return apply_colormap(k.astype(np.float64), "turbo", 0.0, max(num_z - 1, 1))


def render_bev(labels, grid: VoxelGridSpec, scale: int = 3, color_by: str = "class",
               colors: np.ndarray = OCC3D_COLORS, background=BACKGROUND, ego_marker: bool = True) -> np.ndarray:
    """Bird's-eye view ``[X*scale, Y*scale, 3]`` uint8 of labels ``[X, Y, Z]``.

    Each column shows its top-most non-free voxel, coloured by class (``color_by="class"``)
    or by height (``"height"``), and shaded darker the lower it lies. Forward (+x) is up and
    left (+y) is left in the image, so it reads like a map seen from above the car.
    """
    lab = _labels_np(labels)
    if lab.shape != tuple(grid.shape):
        raise ValueError(f"render_bev: labels {lab.shape} do not match grid {grid.shape}")
    occ = lab != FREE_LABEL
    Z = lab.shape[2]
    any_occ = occ.any(axis=2)
    k_top = Z - 1 - np.argmax(occ[:, :, ::-1], axis=2)  # highest occupied layer per column
    top = np.take_along_axis(lab, k_top[..., None], axis=2)[..., 0]
    if color_by == "class":
        rgb = label_colors(top, colors).astype(np.float64)
        shade = 0.45 + 0.55 * (k_top + 1) / Z
        rgb = rgb * shade[..., None]
    elif color_by == "height":
        rgb = _height_colors(k_top, Z).astype(np.float64)
    else:
        raise ValueError(f"color_by must be 'class' or 'height', got {color_by!r}")
    rgb[~any_occ] = background
    img = np.round(rgb).astype(np.uint8)[::-1, ::-1]  # rows: +x up; columns: +y left
    img = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
    if ego_marker:
        _draw_ego(img, grid, scale)
    return np.ascontiguousarray(img)


def _draw_ego(img: np.ndarray, grid: VoxelGridSpec, scale: int) -> None:
    """A small white arrow at the ego origin pointing forward (up)."""
    px = scale / grid.voxel_size
    r0, c0 = grid.x_max * px, grid.y_max * px
    if not (0 <= r0 < img.shape[0] and 0 <= c0 < img.shape[1]):
        return
    size = max(4, int(round(2.0 * px)))  # about 2 m long
    for i in range(size):
        half = int(round(i * 0.45))
        r = int(r0 - size / 2 + i)
        if 0 <= r < img.shape[0]:
            lo, hi = max(0, int(c0) - half), min(img.shape[1], int(c0) + half + 1)
            img[r, lo:hi] = (255, 255, 255)


@dataclass(frozen=True)
class ViewCamera:
    """A pinhole camera for the perspective render. K: [3, 3]; T_ego_cam: [4, 4] (optical frame)."""

    K: torch.Tensor
    T_ego_cam: torch.Tensor
    height: int
    width: int


def chase_camera(grid: VoxelGridSpec, width: int = 640, height: int = 400, back: float | None = None,
                 up: float | None = None, pitch_deg: float = 32.0, fov_deg: float = 70.0) -> ViewCamera:
    """A camera behind and above the ego origin looking forward and down (defaults scale with the grid)."""
    extent = max(grid.x_max - grid.x_min, grid.y_max - grid.y_min)
    back = 0.3 * extent if back is None else back
    up = 0.22 * extent if up is None else up
    p = math.radians(pitch_deg)
    fwd = np.array([math.cos(p), 0.0, -math.sin(p)])
    right = np.array([0.0, -1.0, 0.0])
    down = np.cross(fwd, right)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2] = right, down, fwd
    T[:3, 3] = (-back, 0.0, up)
    f = 0.5 * width / math.tan(math.radians(fov_deg) / 2)
    K = np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1.0]])
    return ViewCamera(torch.tensor(K, dtype=torch.float32), torch.tensor(T, dtype=torch.float32), height, width)


def raycast_voxels(occ: torch.Tensor, grid: VoxelGridSpec, origins: torch.Tensor, dirs: torch.Tensor):
    """First occupied voxel along each ray (exact grid traversal).

    occ: [X, Y, Z] bool; origins, dirs: [R, 3] metric ego frame (dirs need not be unit).
    Returns ``hit [R] bool``, ``ijk [R, 3] long`` (valid where hit), ``t [R]`` (ray parameter of the
    entry point, metres if dirs are unit), ``axis [R] long`` (axis of the face entered through)
    and ``frac [R, 3]`` (entry point position inside the voxel, in [0, 1]).
    """
    dev = occ.device
    shape = torch.tensor(occ.shape, device=dev, dtype=torch.float32)
    lower = torch.tensor(grid.lower, device=dev, dtype=torch.float32)
    o = (origins.float().to(dev) - lower) / grid.voxel_size
    d = dirs.float().to(dev) / grid.voxel_size  # t stays metric along unit dirs
    R = o.shape[0]
    with torch.no_grad():
        inv = 1.0 / torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
        t1, t2 = (0 - o) * inv, (shape - o) * inv
        tnear, tfar = torch.minimum(t1, t2), torch.maximum(t1, t2)
        t_in, entry_axis = tnear.max(dim=1)
        t_out = tfar.min(dim=1).values
        t0 = t_in.clamp(min=0)
        alive = t_out > t0
        p = o + d * (t0 + 1e-5).unsqueeze(1)
        ijk = torch.minimum(torch.floor(p).clamp(min=0), shape - 1).long()
        step = torch.sign(d).long()
        t_delta = inv.abs()
        boundary = ijk.float() + (step > 0).float()
        t_max = torch.where(step != 0, (boundary - o) * inv, torch.full_like(o, float("inf")))
        t_enter = t0.clone()
        axis = entry_axis.clone()

        hit = torch.zeros(R, dtype=torch.bool, device=dev)
        out_t = torch.zeros(R, device=dev)
        out_ijk = torch.zeros(R, 3, dtype=torch.long, device=dev)
        out_axis = torch.zeros(R, dtype=torch.long, device=dev)
        idx = torch.nonzero(alive).squeeze(1)
        ijk, step, t_max, t_delta, t_enter, axis = ijk[idx], step[idx], t_max[idx], t_delta[idx], t_enter[idx], axis[idx]
        X, Y, Zn = occ.shape
        flat = occ.reshape(-1)
        for _ in range(X + Y + Zn + 2):
            if idx.numel() == 0:
                break
            inside = ((ijk >= 0) & (ijk < shape.long())).all(dim=1)
            lin = (ijk[:, 0].clamp(0, X - 1) * Y + ijk[:, 1].clamp(0, Y - 1)) * Zn + ijk[:, 2].clamp(0, Zn - 1)
            h = inside & flat[lin]
            if h.any():
                hi = idx[h]
                hit[hi] = True
                out_t[hi], out_ijk[hi], out_axis[hi] = t_enter[h], ijk[h], axis[h]
            keep = inside & ~h
            idx, ijk, step, t_max, t_delta, axis = idx[keep], ijk[keep], step[keep], t_max[keep], t_delta[keep], axis[keep]
            # advance to the neighbouring voxel across the nearest boundary
            t_next, a = t_max.min(dim=1)
            ar = torch.arange(idx.numel(), device=dev)
            ijk[ar, a] += step[ar, a]
            t_max[ar, a] += t_delta[ar, a]
            t_enter, axis = t_next, a
        p_hit = o + d * out_t.unsqueeze(1)
        frac = (p_hit - out_ijk.float()).clamp(0, 1)
    return hit, out_ijk, out_t, out_axis, frac


def render_perspective(labels, grid: VoxelGridSpec, camera: ViewCamera | None = None, color_by: str = "class",
                       colors: np.ndarray = OCC3D_COLORS, background=BACKGROUND, edges: bool = True,
                       light=(-0.45, 0.35, 0.82), return_depth: bool = False):
    """Perspective render ``[H, W, 3]`` uint8 of labels ``[X, Y, Z]`` seen from `camera`
    (default `chase_camera(grid)`: behind and above the car).

    Faces are Lambert-shaded by a fixed light, cube edges outlined, far voxels slightly fogged.
    With ``return_depth`` also returns the z-buffer ``[H, W]`` (camera z in metres, inf = sky).
    """
    lab = _labels_np(labels)
    if lab.shape != tuple(grid.shape):
        raise ValueError(f"render_perspective: labels {lab.shape} do not match grid {grid.shape}")
    cam = camera or chase_camera(grid)
    H, W = cam.height, cam.width
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    pix = torch.stack([u, v, torch.ones_like(u)], dim=-1).reshape(-1, 3)
    d_cam = pix @ torch.linalg.inv(cam.K).T
    d_cam = d_cam / d_cam.norm(dim=1, keepdim=True)
    R, t = cam.T_ego_cam[:3, :3], cam.T_ego_cam[:3, 3]
    dirs = d_cam @ R.T
    origins = t.expand_as(dirs)
    occ = torch.from_numpy(lab != FREE_LABEL)
    hit, ijk, tt, axis, frac = raycast_voxels(occ, grid, origins, dirs)

    hit_np, ijk_np = hit.numpy(), ijk.numpy()
    img = np.empty((H * W, 3), dtype=np.float64)
    img[:] = background
    if hit_np.any():
        ii, jj, kk = ijk_np[hit_np].T
        if color_by == "class":
            base = label_colors(lab[ii, jj, kk], colors).astype(np.float64)
        elif color_by == "height":
            base = _height_colors(kk, lab.shape[2]).astype(np.float64)
        else:
            raise ValueError(f"color_by must be 'class' or 'height', got {color_by!r}")
        ax = axis.numpy()[hit_np]
        dsel = dirs.numpy()[hit_np]
        normal = np.zeros_like(dsel)
        normal[np.arange(len(ax)), ax] = -np.sign(dsel[np.arange(len(ax)), ax])
        L = np.asarray(light, dtype=np.float64)
        L = L / np.linalg.norm(L)
        shade = 0.38 + 0.62 * np.clip(normal @ L, 0, 1)
        col = base * shade[:, None]
        z_cam = tt.numpy()[hit_np] * d_cam[:, 2].numpy()[hit_np]
        if edges:
            f = frac.numpy()[hit_np]
            # distance to the face's edges inside its plane (the two axes other than the normal)
            m = np.minimum(f, 1 - f)
            m[np.arange(len(ax)), ax] = 1.0
            # about one pixel wide, and faded out where voxels get too small to outline
            voxel_px = float(cam.K[0, 0]) * grid.voxel_size / np.maximum(z_cam, 1e-3)
            edge = m.min(axis=1) < np.clip(0.8 / voxel_px, 0.03, 0.25)
            strength = np.clip((voxel_px - 4.0) / 8.0, 0.0, 1.0) * 0.45
            col[edge] *= (1.0 - strength[edge])[:, None]
        extent = max(grid.x_max - grid.x_min, grid.y_max - grid.y_min)
        fog = np.clip(z_cam / (1.6 * extent), 0, 0.6)[:, None]
        col = col * (1 - fog) + np.asarray(background, dtype=np.float64) * fog
        img[hit_np] = col
    out = np.round(img).reshape(H, W, 3).clip(0, 255).astype(np.uint8)
    if not return_depth:
        return out
    depth = np.full(H * W, np.inf)
    depth[hit_np] = (tt * d_cam[:, 2]).numpy()[hit_np]
    return out, depth.reshape(H, W)
