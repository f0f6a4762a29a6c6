"""Vectorised ray casting against analytic primitives and the ground plane z = 0.

All rays x all primitives of one kind are intersected at once in chunks of rays
(``[R_chunk, P]`` tensors), keeping the nearest hit. Callers cull primitives beforehand
(``cull``) so P stays in the low hundreds.

Rays are in the world frame: ``origins (R, 3)``, unit ``directions (R, 3)``. A hit is a
distance ``t`` along the ray and the index of the primitive hit: ``GROUND`` (-1) for the
ground plane, ``NO_HIT`` (-2) for the sky.
"""

from __future__ import annotations

import torch
from torch import Tensor

from selfocc_core.synth.world import BOX, CYLINDER, ELLIPSOID, Primitives

GROUND, NO_HIT = -1, -2
_EPS = 1e-4


def cull(prims: Primitives, center: Tensor, radius: float) -> Tensor:
    """Indices of primitives whose bounding sphere comes within `radius` of ``center (3,)``."""
    d = (prims.center - center.to(prims.center)).norm(dim=-1) - prims.bounding_radius()
    return torch.nonzero(d < radius).squeeze(-1)


def to_local(prims: Primitives, points: Tensor) -> Tensor:
    """World points ``(..., P, 3)`` -> each primitive's frame (translate, then rotate by -yaw)."""
    q = points - prims.center
    c, s = torch.cos(prims.yaw), torch.sin(prims.yaw)
    return torch.stack([c * q[..., 0] + s * q[..., 1], -s * q[..., 0] + c * q[..., 1], q[..., 2]], dim=-1)


def dirs_to_local(prims: Primitives, d: Tensor) -> Tensor:
    """World directions ``(..., 1 or P, 3)`` -> each primitive's frame ``(..., P, 3)``."""
    c, s = torch.cos(prims.yaw), torch.sin(prims.yaw)
    x = c * d[..., 0] + s * d[..., 1]
    return torch.stack([x, -s * d[..., 0] + c * d[..., 1], d[..., 2].expand_as(x)], dim=-1)


def _ray_box(o: Tensor, d: Tensor, half: Tensor) -> Tensor:
    """Slab test in local frames: ``o, d (R, P, 3)``, ``half (P, 3)`` -> entry t ``(R, P)`` (inf = miss)."""
    inv = 1.0 / torch.where(d.abs() < 1e-9, torch.full_like(d, 1e-9), d)
    t1 = (-half - o) * inv
    t2 = (half - o) * inv
    tmin = torch.minimum(t1, t2).amax(dim=-1)
    tmax = torch.maximum(t1, t2).amin(dim=-1)
    hit = (tmax >= tmin) & (tmin > _EPS)
    return torch.where(hit, tmin, torch.full_like(tmin, float("inf")))


def _ray_cylinder(o: Tensor, d: Tensor, half: Tensor) -> Tensor:
    """Vertical capped cylinders: radius half[:, 0], half height half[:, 2]."""
    r, hh = half[:, 0], half[:, 2]
    a = d[..., 0] ** 2 + d[..., 1] ** 2
    bq = o[..., 0] * d[..., 0] + o[..., 1] * d[..., 1]
    c = o[..., 0] ** 2 + o[..., 1] ** 2 - r ** 2
    disc = bq * bq - a * c
    a_safe = a.clamp(min=1e-12)
    t_side = (-bq - disc.clamp(min=0).sqrt()) / a_safe
    z = o[..., 2] + t_side * d[..., 2]
    ok_side = (disc >= 0) & (a > 1e-12) & (t_side > _EPS) & (z.abs() <= hh)
    inf = torch.full_like(t_side, float("inf"))
    t_side = torch.where(ok_side, t_side, inf)
    # cap facing the ray: top if going down, bottom if going up
    dz = torch.where(d[..., 2].abs() < 1e-9, torch.full_like(d[..., 2], 1e-9), d[..., 2])
    zc = torch.where(dz < 0, hh, -hh)
    t_cap = (zc - o[..., 2]) / dz
    px = o[..., 0] + t_cap * d[..., 0]
    py = o[..., 1] + t_cap * d[..., 1]
    ok_cap = (t_cap > _EPS) & (px * px + py * py <= r ** 2)
    t_cap = torch.where(ok_cap, t_cap, inf)
    return torch.minimum(t_side, t_cap)


def _ray_ellipsoid(o: Tensor, d: Tensor, radii: Tensor) -> Tensor:
    """Axis-aligned ellipsoids in local frames; t stays the distance along the original ray."""
    os_ = o / radii
    ds = d / radii
    a = (ds * ds).sum(-1)
    bq = (os_ * ds).sum(-1)
    c = (os_ * os_).sum(-1) - 1.0
    disc = bq * bq - a * c
    t = (-bq - disc.clamp(min=0).sqrt()) / a
    ok = (disc >= 0) & (t > _EPS)
    return torch.where(ok, t, torch.full_like(t, float("inf")))


_KIND_FN = {BOX: _ray_box, CYLINDER: _ray_cylinder, ELLIPSOID: _ray_ellipsoid}


def intersect(
    prims: Primitives, origins: Tensor, directions: Tensor, chunk: int = 8192, with_ground: bool = True
) -> tuple[Tensor, Tensor]:
    """Nearest hit of rays ``(R, 3)`` with `prims` (already at the right time) and the ground.

    Returns ``t (R,)`` (inf where nothing is hit) and ``index (R,)`` int64: primitive index
    into `prims`, GROUND or NO_HIT.
    """
    if origins.shape != directions.shape or origins.dim() != 2 or origins.shape[-1] != 3:
        raise ValueError(f"intersect: origins and directions must be (R, 3), got {tuple(origins.shape)} {tuple(directions.shape)}")
    R = origins.shape[0]
    t_best = torch.full((R,), float("inf"), dtype=origins.dtype)
    idx_best = torch.full((R,), NO_HIT, dtype=torch.int64)
    if with_ground:
        dz = directions[:, 2]
        tg = -origins[:, 2] / torch.where(dz.abs() < 1e-9, torch.full_like(dz, -1e-9), dz)
        ok = (tg > _EPS) & (dz < 0)
        t_best = torch.where(ok, tg, t_best)
        idx_best = torch.where(ok, torch.full_like(idx_best, GROUND), idx_best)
    groups = []
    for kind, fn in _KIND_FN.items():
        sel = torch.nonzero(prims.kind == kind).squeeze(-1)
        if sel.numel():
            groups.append((fn, sel, prims.subset(sel)))
    for s in range(0, R, chunk):
        o = origins[s : s + chunk]
        d = directions[s : s + chunk]
        for fn, sel, sub in groups:
            ol = to_local(sub, o[:, None, :])  # (r, P, 3)
            dl = dirs_to_local(sub, d[:, None, :])
            t = fn(ol, dl, sub.half)
            tmin, arg = t.min(dim=-1)
            better = tmin < t_best[s : s + chunk]
            t_best[s : s + chunk] = torch.where(better, tmin, t_best[s : s + chunk])
            idx_best[s : s + chunk] = torch.where(better, sel[arg], idx_best[s : s + chunk])
    return t_best, idx_best


def cone_cull(prims: Primitives, origin: Tensor, dirs: Tensor) -> Tensor:
    """Indices of primitives whose bounding sphere may meet rays from ``origin (3,)`` along ``dirs (M, 3)``.

    The rays are bounded by a cone around their mean direction; a sphere is kept when it
    contains the origin or its angular extent overlaps the cone.
    """
    axis = dirs.mean(0)
    axis = axis / axis.norm().clamp(min=1e-9)
    half_angle = torch.arccos((dirs @ axis).min().clamp(-1.0, 1.0))
    v = prims.center - origin
    dist = v.norm(dim=-1).clamp(min=1e-9)
    r = prims.bounding_radius()
    ang = torch.arccos(((v @ axis) / dist).clamp(-1.0, 1.0))
    ext = torch.arcsin((r / dist).clamp(max=1.0))
    keep = (dist <= r) | (ang - ext <= half_angle + 1e-3)
    return torch.nonzero(keep).squeeze(-1)


def intersect_groups(prims: Primitives, groups: list[tuple[Tensor, Tensor]], with_ground: bool = True) -> tuple[Tensor, Tensor]:
    """`intersect` for coherent ray groups (image tiles): ``[(origins (M_g, 3), dirs (M_g, 3)), ...]``.

    Each group is tested only against the primitives inside its ray cone (`cone_cull`).
    Returns the concatenation over groups of ``t (sum M_g,)`` and ``index`` into `prims`.
    """
    ts, idxs = [], []
    for o, d in groups:
        if o.dim() != 2 or o.shape != d.shape or o.shape[-1] != 3:
            raise ValueError(f"intersect_groups: expected (M, 3) rays, got {tuple(o.shape)} {tuple(d.shape)}")
        sel = cone_cull(prims, o.mean(0), d)
        t, idx = intersect(prims.subset(sel), o, d, chunk=1 << 30, with_ground=with_ground)
        ts.append(t)
        idxs.append(torch.where(idx >= 0, sel[idx.clamp(min=0)], idx))
    return torch.cat(ts), torch.cat(idxs)


def surface(prims: Primitives, origins: Tensor, directions: Tensor, t: Tensor, index: Tensor):
    """Geometry at hits of primitives (index >= 0): ``(p_world, p_local, n_world, normal_axis)``.

    All inputs are already restricted to rays that hit a primitive: ``(M, 3)`` / ``(M,)``.
    ``normal_axis`` is the local axis (0/1/2) a box face is normal to (2 for caps/tops; for
    cylinders and ellipsoids 0 on the sides, 2 on top).
    """
    p = origins + t.unsqueeze(-1) * directions
    sub = prims.subset(index)
    pl = to_local(sub, p)
    half = sub.half
    kind = sub.kind
    # box normals: the face whose normalised coordinate is largest
    rel = (pl / half).abs()
    axis = rel.argmax(dim=-1)
    n_box = torch.zeros_like(pl)
    n_box.scatter_(1, axis[:, None], torch.sign(torch.gather(pl, 1, axis[:, None])))
    # cylinder: side or cap
    on_cap = (pl[:, 2].abs() >= half[:, 2] - 1e-3)
    n_cyl = torch.stack([pl[:, 0], pl[:, 1], torch.zeros_like(pl[:, 0])], -1)
    n_cyl = torch.where(on_cap[:, None], torch.stack([torch.zeros_like(pl[:, 0]), torch.zeros_like(pl[:, 0]), torch.sign(pl[:, 2])], -1), n_cyl)
    n_ell = pl / (half * half)
    n_local = torch.where((kind == BOX)[:, None], n_box, torch.where((kind == CYLINDER)[:, None], n_cyl, n_ell))
    n_local = n_local / n_local.norm(dim=-1, keepdim=True).clamp(min=1e-9)
    c, s = torch.cos(sub.yaw), torch.sin(sub.yaw)
    n_world = torch.stack([c * n_local[:, 0] - s * n_local[:, 1], s * n_local[:, 0] + c * n_local[:, 1], n_local[:, 2]], -1)
    normal_axis = torch.where(kind == BOX, axis, torch.where(n_local[:, 2].abs() > 0.7, 2, 0))
    return p, pl, n_world, normal_axis
