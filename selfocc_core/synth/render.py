"""Render RGB, z-depth, semantics and instance ids of the world for a set of pinhole cameras."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from selfocc_core.classes import FREE_LABEL
from selfocc_core.geometry.camera import pixel_grid
from selfocc_core.geometry.rays import camera_rays
from selfocc_core.synth import textures as tx
from selfocc_core.synth.raycast import GROUND, NO_HIT, cull, intersect, intersect_groups, surface
from selfocc_core.synth.world import World, ground_label

CULL_RADIUS_M = 130.0  # primitives further than this from the rig are not drawn


@dataclass
class RenderOutput:
    """Rendered cameras.

    rgb:       [N, 3, H, W] float32 in [0, 1]
    depth:     [N, H, W] float32 camera z-depth in metres (0 = sky)
    semantics: [N, H, W] int64 Occ3D class ids (17 = free for sky)
    instance:  [N, H, W] int64 object id (-1 for stuff and sky)
    """

    rgb: Tensor
    depth: Tensor
    semantics: Tensor
    instance: Tensor


def render_cameras(
    world: World, t: float, K: Tensor, T_world_cam: Tensor, height: int, width: int, shade: bool = True
) -> RenderOutput:
    """Render N cameras at time `t` (s); ``shade=False`` skips colours (rgb stays 0).

    K:           [N, 3, 3] intrinsics for images of size (height, width)
    T_world_cam: [N, 4, 4] camera optical frame -> world
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"render_cameras: image size must be positive, got {height}x{width}")
    N = K.shape[0]
    if K.shape != (N, 3, 3) or T_world_cam.shape != (N, 4, 4):
        raise ValueError(f"render_cameras: expected K [N,3,3], T_world_cam [N,4,4], got {tuple(K.shape)} {tuple(T_world_cam.shape)}")
    K = K.float()
    T_world_cam = T_world_cam.float()
    # rays in image tiles (one ray group per tile, for cone culling), then back to images
    tiles = _tiles(height, width)
    uv = torch.cat([pixel_grid(height, width)[r0:r1, c0:c1].reshape(-1, 2) for r0, r1, c0, c1 in tiles])
    origins, dirs, z_per_unit = camera_rays(uv.expand(N, -1, -1), K, T_world_cam)  # (N, HW, 3) tile order
    # pixel angle (rad) per camera, for texture anti-aliasing
    pix_angle = (1.0 / K[:, 0, 0]).reshape(N, 1).expand(N, height * width).reshape(-1)
    sizes = [(r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in tiles] * N
    groups = list(zip(origins.reshape(-1, 3).split(sizes), dirs.reshape(-1, 3).split(sizes)))
    rgb, t_hit, label, inst = shade_rays(world, t, origins.reshape(-1, 3), dirs.reshape(-1, 3), pix_angle, groups, shade)
    z = t_hit * z_per_unit.reshape(-1)
    z = torch.where(torch.isfinite(z), z, torch.zeros_like(z))

    def untile(x: Tensor) -> Tensor:  # (N * HW, C) in tile order -> (N, H, W, C)
        out = x.new_empty(N, height, width, x.shape[-1])
        parts = x.reshape(N, height * width, -1).split(sizes[: len(tiles)], dim=1)
        for (r0, r1, c0, c1), part in zip(tiles, parts):
            out[:, r0:r1, c0:c1] = part.reshape(N, r1 - r0, c1 - c0, -1)
        return out

    return RenderOutput(
        rgb=untile(rgb).permute(0, 3, 1, 2).contiguous(),
        depth=untile(z[:, None])[..., 0],
        semantics=untile(label[:, None])[..., 0],
        instance=untile(inst[:, None])[..., 0],
    )


def _tiles(height: int, width: int, tile: tuple[int, int] = (32, 64)) -> list[tuple[int, int, int, int]]:
    """(row0, row1, col0, col1) of tiles covering the image."""
    th, tw = tile
    return [(r, min(r + th, height), c, min(c + tw, width)) for r in range(0, height, th) for c in range(0, width, tw)]


def shade_rays(world: World, t: float, origins: Tensor, dirs: Tensor, pix_angle: Tensor, groups=None, shade: bool = True):
    """Colour rays ``(R, 3)`` in the world at time t.

    groups: optional split of the same rays into coherent groups for `intersect_groups`.

    Returns ``rgb (R, 3)``, distance ``t_hit (R,)`` (inf for sky), ``label (R,)``, ``instance (R,)``.
    """
    prims_t = world.prims.at(t)
    sel = cull(prims_t, origins.mean(dim=0), CULL_RADIUS_M + float((origins - origins.mean(0)).norm(dim=-1).max()))
    sub = prims_t.subset(sel)
    if groups is None:
        t_hit, idx = intersect(sub, origins, dirs)
    else:
        t_hit, idx = intersect_groups(sub, groups)
    R = origins.shape[0]
    rgb = torch.zeros(R, 3)
    label = torch.full((R,), FREE_LABEL, dtype=torch.int64)
    inst = torch.full((R,), -1, dtype=torch.int64)

    sky = idx == NO_HIT
    if sky.any() and shade:
        rgb[sky] = tx.sky(dirs[sky], float(pix_angle.mean()), world.seed)

    ground = torch.nonzero(idx == GROUND).squeeze(-1)
    if ground.numel():
        p = origins[ground] + t_hit[ground, None] * dirs[ground]
        cos = dirs[ground, 2].abs().clamp(min=0.2)
        fp = t_hit[ground] * pix_angle[ground] / cos
        lab = ground_label(p[:, :2])
        label[ground] = lab
        if shade:
            road = lab == ground_label(torch.zeros(1, 2))[0]
            col = torch.zeros(ground.numel(), 3)
            axis = torch.full((ground.numel(),), 2, dtype=torch.int64)
            half = torch.ones(ground.numel(), 3)
            for mat, m in ((tx.ASPHALT, road), (tx.GRASS, ~road)):
                if m.any():
                    col[m] = tx.shade_material(mat, p[m], axis[m], half[m], col[m], fp[m], world.seed)
            rgb[ground] = col * tx.lambert(torch.tensor([[0.0, 0.0, 1.0]])).item()

    obj = torch.nonzero(idx >= 0).squeeze(-1)
    if obj.numel():
        gidx = sel[idx[obj]]  # index into the full primitive table (stable per world)
        p, pl, n, axis = surface(prims_t, origins[obj], dirs[obj], t_hit[obj], gidx)
        cos = (n * dirs[obj]).sum(-1).abs().clamp(min=0.2)
        fp = t_hit[obj] * pix_angle[obj] / cos
        label[obj] = prims_t.label[gidx]
        inst[obj] = prims_t.instance[gidx]
        if not shade:
            return rgb, t_hit, label, inst
        # per-primitive texture offset so neighbouring objects differ; a multiple of 10.5 m keeps
        # window (3.5 m), brick (0.5 m) and panel (1.5 m) grids aligned with the box edges
        offset = torch.stack([(gidx * 37 % 101).float(), (gidx * 53 % 97).float(), torch.zeros_like(gidx, dtype=torch.float32)], -1) * 10.5
        mats = prims_t.material[gidx]
        half = prims_t.half[gidx]
        col0 = prims_t.color[gidx]
        col = torch.zeros_like(col0)
        for mat in torch.unique(mats).tolist():
            m = mats == mat
            col[m] = tx.shade_material(mat, pl[m] + offset[m], axis[m], half[m], col0[m], fp[m], world.seed + 1)
        rgb[obj] = col * tx.lambert(n).unsqueeze(-1)
    return rgb.clamp(0.0, 1.0), t_hit, label, inst
