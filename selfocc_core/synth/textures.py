"""Procedural, view-independent textures evaluated from 3D coordinates.

Photometric self-supervision needs detail at several scales, and the same surface point
must get the same colour in every frame and camera. So every colour here is a pure function
of the hit point (in world coordinates for static ground, in the primitive's own frame for
objects, so textures move with cars) and of the surface normal (fixed Lambert shading
with a distant sun).

Anti-aliasing: each noise octave and line pattern is faded towards its mean once the pixel
footprint ``footprint`` (metres on the surface) exceeds its Nyquist limit, so far-away
surfaces do not shimmer from frame to frame.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Materials (values of Primitives.material and of the ground).
ASPHALT, GRASS, PAVING, BRICK, PLASTER, CONCRETE, CAR_PAINT, GLASS, RUBBER, METAL, BARK, FOLIAGE, CLOTH, CONE = range(14)

SUN_DIR = torch.tensor([0.45, 0.3, 0.84])
SUN_DIR = SUN_DIR / SUN_DIR.norm()


def _hash(ix: Tensor, iy: Tensor, iz: Tensor, seed: int) -> Tensor:
    """Integer lattice coordinates (int64) -> uniform floats in [0, 1)."""
    h = ix * 73856093 ^ iy * 19349663 ^ iz * 83492791 ^ (seed * 2654435761 + 12345)
    h = (h ^ (h >> 13)) * 1274126177
    h = h ^ (h >> 16)
    return (h & 0xFFFFFF).to(torch.float32) / float(0xFFFFFF)


def hash_cells(p: Tensor, cell: float, seed: int) -> Tensor:
    """Random value in [0, 1) per cell of size `cell` containing points ``p (M, 3)``."""
    i = torch.floor(p / cell).long()
    return _hash(i[:, 0], i[:, 1], i[:, 2], seed)


def value_noise(p: Tensor, freq: float, seed: int) -> Tensor:
    """Smooth 3D value noise in [0, 1] at ``p (M, 3)`` with lattice spacing 1/freq."""
    q = p * freq
    i = torch.floor(q)
    f = q - i
    f = f * f * (3.0 - 2.0 * f)
    i = i.long()
    out = torch.zeros_like(f[:, 0])
    for dx in (0, 1):
        wx = f[:, 0] if dx else 1.0 - f[:, 0]
        for dy in (0, 1):
            wy = f[:, 1] if dy else 1.0 - f[:, 1]
            for dz in (0, 1):
                wz = f[:, 2] if dz else 1.0 - f[:, 2]
                out = out + wx * wy * wz * _hash(i[:, 0] + dx, i[:, 1] + dy, i[:, 2] + dz, seed)
    return out


def _aa(freq: float, footprint: Tensor) -> Tensor:
    """Weight of a pattern of spatial frequency `freq` (1/m) seen with a pixel `footprint` (m)."""
    return (2.0 - 4.0 * freq * footprint).clamp(0.0, 1.0)


def fbm(p: Tensor, freq: float, octaves: int, footprint: Tensor, seed: int, gain: float = 0.5) -> Tensor:
    """Fractal noise in about [-1, 1] (zero mean), anti-aliased by `footprint` ``(M,)``."""
    out = torch.zeros_like(p[:, 0])
    amp, norm = 1.0, 0.0
    for o in range(octaves):
        w = _aa(freq, footprint)
        out = out + amp * w * (value_noise(p, freq, seed + 101 * o) * 2.0 - 1.0)
        norm += amp
        amp *= gain
        freq *= 2.0
    return out / norm


def line_coverage(dist: Tensor, half_width: float, footprint: Tensor) -> Tensor:
    """Box-filtered coverage in [0, 1] of a stripe ``|dist| < half_width`` at pixel footprint."""
    w = footprint.clamp(min=1e-4)
    return ((half_width - dist.abs()) / w + 0.5).clamp(0.0, 1.0)


def _periodic_dist(x: Tensor, period: float) -> Tensor:
    """Distance from x to the nearest multiple of `period`."""
    return (x - period * torch.round(x / period)).abs()


def _mix(a: Tensor, b: Tensor, w: Tensor) -> Tensor:
    return a + (b - a) * w.unsqueeze(-1)


def _rgb(c, n: int, device) -> Tensor:
    return torch.tensor(c, dtype=torch.float32, device=device).expand(n, 3)


def face_coords(p: Tensor, normal_axis: Tensor, half: Tensor) -> tuple[Tensor, Tensor]:
    """2D facade coordinates (u along the face, v = height above the primitive's bottom)."""
    u = torch.where(normal_axis == 0, p[:, 1], p[:, 0])
    v = p[:, 2] + half[:, 2]
    return u, v


def shade_material(
    material: int, p: Tensor, normal_axis: Tensor, half: Tensor, color: Tensor, footprint: Tensor, seed: int
) -> Tensor:
    """Albedo ``(M, 3)`` in [0, 1] for points ``p (M, 3)`` of one material.

    p:           hit points in the primitive's frame (world frame for the ground)
    normal_axis: (M,) index 0/1/2 of the local axis the surface normal follows (boxes)
    half:        (M, 3) primitive half extents; color: (M, 3) per-primitive base colour
    """
    n, dev = p.shape[0], p.device
    fp = footprint
    if material == ASPHALT:
        g = 0.30 + 0.10 * fbm(p, 4.0, 4, fp, seed) + 0.05 * fbm(p, 0.3, 2, fp, seed + 7)
        rgb = torch.stack([g, g, g * 1.04], -1)
        # lane markings: dashed centre line, solid lines between driving and parking lanes
        dash = line_coverage(p[:, 1], 0.075, fp) * ((p[:, 0] % 9.0) < 4.5).float()
        edge = line_coverage(p[:, 1].abs() - 4.5, 0.075, fp)
        # zebra crossings (4 m wide, every 70 m, placed by the seed) over the whole road
        xc = (p[:, 0] - 11.0 * (seed % 7)) % 70.0
        zebra = line_coverage(xc - 2.0, 2.0, fp) * line_coverage(_periodic_dist(p[:, 1] + 0.25, 1.0), 0.25, fp)
        mark = (dash * (1 - line_coverage(xc - 2.0, 3.0, fp)) + edge + zebra).clamp(max=1.0) * (0.85 + 0.1 * fbm(p, 8.0, 2, fp, seed + 3))
        return _mix(rgb, _rgb((0.88, 0.88, 0.85), n, dev), mark)
    if material == GRASS:
        g = fbm(p, 1.5, 5, fp, seed)
        base = _mix(_rgb((0.28, 0.42, 0.16), n, dev), _rgb((0.45, 0.40, 0.22), n, dev), (0.5 + g).clamp(0, 1))
        return base * (1.0 + 0.3 * fbm(p, 12.0, 2, fp, seed + 5)).unsqueeze(-1)
    if material == PAVING:
        top = normal_axis == 2
        tiles = torch.minimum(_periodic_dist(p[:, 0], 0.6), _periodic_dist(p[:, 1], 0.6))
        joint = line_coverage(tiles, 0.02, fp) * top.float()
        tile_tone = 0.08 * (hash_cells(p * torch.tensor([1.0, 1.0, 0.0], device=dev), 0.6, seed) - 0.5)
        g = 0.62 + tile_tone * top.float() + 0.07 * fbm(p, 6.0, 3, fp, seed + 1)
        rgb = torch.stack([g, g * 0.97, g * 0.92], -1)
        return _mix(rgb, _rgb((0.35, 0.34, 0.32), n, dev), joint)
    if material == BRICK:
        u, v = face_coords(p, normal_axis, half)
        row = torch.floor(v / 0.25)
        uu = u + 0.25 * (row % 2)
        mortar = torch.minimum(_periodic_dist(v, 0.25), _periodic_dist(uu, 0.5))
        brick_id = torch.stack([torch.floor(uu / 0.5), row, normal_axis.float()], -1)
        tone = 0.85 + 0.3 * hash_cells(brick_id, 1.0, seed)
        rgb = color * tone.unsqueeze(-1) * (1.0 + 0.15 * fbm(p, 10.0, 2, fp, seed + 2)).unsqueeze(-1)
        rgb = _mix(rgb, _rgb((0.75, 0.73, 0.68), n, dev), line_coverage(mortar, 0.015, fp))
        return _windows(rgb, u, v, normal_axis, fp, seed)
    if material in (PLASTER, CONCRETE):
        freq = 3.0 if material == PLASTER else 1.0
        rgb = color * (1.0 + 0.18 * fbm(p, freq, 5, fp, seed)).unsqueeze(-1)
        if material == CONCRETE:
            u, v = face_coords(p, normal_axis, half)
            panel = torch.minimum(_periodic_dist(u, 1.5), _periodic_dist(v, 1.2))
            rgb = _mix(rgb, rgb * 0.6, line_coverage(panel, 0.03, fp))
            return rgb
        u, v = face_coords(p, normal_axis, half)
        return _windows(rgb, u, v, normal_axis, fp, seed)
    if material == CAR_PAINT:
        rgb = color * (1.0 + 0.15 * fbm(p, 2.0, 5, fp, seed)).unsqueeze(-1)
        # a dark rubbing strip, door seams every 1.1 m and lights at the ends give local structure
        stripe = line_coverage(p[:, 2], 0.05, fp)
        seams = line_coverage(_periodic_dist(p[:, 0], 1.1), 0.015, fp) * (normal_axis == 1).float()
        ends = (normal_axis == 0).float() * line_coverage(p[:, 2] - 0.15 * half[:, 2], 0.08, fp)
        lights = ends * line_coverage(p[:, 1].abs() - 0.7 * half[:, 1], 0.15 * half[:, 1], fp)
        rgb = _mix(rgb, rgb * 0.45, (stripe + seams).clamp(max=1.0))
        return _mix(rgb, _rgb((0.95, 0.9, 0.7), n, dev), lights)
    if material == GLASS:
        g = 0.12 + 0.10 * fbm(p, 1.5, 4, fp, seed)
        return torch.stack([g, g * 1.1, g * 1.35], -1).clamp(0, 1)
    if material == RUBBER:
        g = 0.06 + 0.04 * fbm(p, 8.0, 2, fp, seed)
        return torch.stack([g, g, g], -1)
    if material == METAL:
        g = 0.5 + 0.12 * fbm(p * torch.tensor([1.0, 1.0, 0.2], device=dev), 6.0, 3, fp, seed)
        band = line_coverage(_periodic_dist(p[:, 2], 1.0), 0.05, fp)
        rgb = torch.stack([g, g, g * 1.05], -1)
        return _mix(rgb, rgb * 0.55, band)
    if material == BARK:
        g = fbm(p * torch.tensor([3.0, 3.0, 0.5], device=dev), 4.0, 4, fp, seed)
        return _mix(_rgb((0.30, 0.21, 0.13), n, dev), _rgb((0.18, 0.12, 0.08), n, dev), (0.5 + g).clamp(0, 1))
    if material == FOLIAGE:
        g = fbm(p, 2.0, 5, fp, seed)
        rgb = color * (1.0 + 0.6 * g).unsqueeze(-1)
        return rgb
    if material == CLOTH:
        band = (torch.floor((p[:, 2] + half[:, 2]) / 0.85) % 2).unsqueeze(-1)
        rgb = color * (1.0 - 0.45 * band) * (1.0 + 0.2 * fbm(p, 8.0, 2, fp, seed)).unsqueeze(-1)
        return rgb
    if material == CONE:
        stripe = (torch.floor((p[:, 2] + half[:, 2]) / 0.15) % 2)
        return _mix(_rgb((0.95, 0.45, 0.05), n, dev), _rgb((0.95, 0.95, 0.95), n, dev), stripe)
    raise ValueError(f"unknown material id {material}")


def _windows(rgb: Tensor, u: Tensor, v: Tensor, normal_axis: Tensor, fp: Tensor, seed: int) -> Tensor:
    """Overlay a grid of windows (1.4 x 1.6 m every 3.5 x 3.2 m) on vertical facades."""
    n, dev = rgb.shape[0], rgb.device
    du = _periodic_dist(u - 1.75, 3.5)
    dv = _periodic_dist(v - 1.6 - 1.0, 3.2)
    inside = line_coverage(du, 0.7, fp) * line_coverage(dv, 0.8, fp) * (v > 2.0).float()
    inside = inside * (normal_axis != 2).float()
    frame = line_coverage(du - 0.7, 0.06, fp) * line_coverage(dv, 0.86, fp) + line_coverage(dv - 0.8, 0.06, fp) * line_coverage(du, 0.76, fp)
    frame = frame.clamp(max=1.0) * (v > 2.0).float() * (normal_axis != 2).float()
    cell = torch.stack([torch.floor((u - 1.75) / 3.5 + 0.5), torch.floor((v - 2.6) / 3.2 + 0.5), torch.zeros_like(u)], -1)
    lit = hash_cells(cell, 1.0, seed + 9)
    glass = torch.stack([0.15 + 0.5 * lit * (lit > 0.8), 0.2 + 0.4 * lit * (lit > 0.8), 0.3 + 0.2 * lit], -1)
    glass = glass * (1.0 + 0.25 * fbm(torch.stack([u, v, u * 0], -1), 3.0, 2, fp, seed + 4)).unsqueeze(-1)
    rgb = _mix(rgb, glass, inside)
    return _mix(rgb, _rgb((0.9, 0.9, 0.88), n, dev), frame)


def sky(directions: Tensor, footprint_angle: float, seed: int = 0) -> Tensor:
    """Sky colour ``(M, 3)`` for unit world directions ``(M, 3)``; a function of direction only."""
    n, dev = directions.shape[0], directions.device
    elev = directions[:, 2].clamp(-0.2, 1.0)
    t = elev.clamp(0, 1).sqrt()
    rgb = _mix(_rgb((0.78, 0.84, 0.90), n, dev), _rgb((0.33, 0.52, 0.85), n, dev), t)
    # clouds on a virtual plane 1 km up; the footprint grows with the plane distance
    z = directions[:, 2].clamp(min=0.05)
    q = directions / z.unsqueeze(-1) * 1000.0
    fp = torch.full_like(z, footprint_angle * 1000.0) / z
    c = (fbm(q, 1.0 / 400.0, 5, fp, seed + 77) * 1.6).clamp(0, 1) * (directions[:, 2] > 0).float()
    return _mix(rgb, _rgb((0.95, 0.95, 0.96), n, dev), c)


def lambert(normals: Tensor) -> Tensor:
    """Diffuse shading factor ``(M,)`` for unit world normals ``(M, 3)`` (sun + sky ambient)."""
    s = SUN_DIR.to(normals.device, normals.dtype)
    return 0.45 + 0.6 * (normals @ s).clamp(min=0.0) + 0.1 * normals[:, 2].clamp(min=0.0)
