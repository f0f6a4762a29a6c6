"""Voxel field: planes -> feature volume -> per-voxel MLP -> SDF / RGB / semantic volumes, and a
:class:`SceneField` that reads them at arbitrary ego points by trilinear sampling.

Sampling convention: ``F.grid_sample(..., align_corners=False)`` on volumes ``[B, C, X, Y, Z]``
with ``VoxelGridSpec.normalize`` coordinates, so voxel (i, j, k)'s value sits at its centre and
the box faces are at +-1. Points outside the box read the border value, except the SDF, which
is replaced by the (positive) distance to the box (at least one voxel): outside is free space.

SDF initialisation (``ModelConfig.sdf_init``): the decoder's SDF output is a residual on a fixed
prior volume, ``z - ground_height`` ('ground': the initial surface is a horizontal plane with
|grad| = 1, so rays that look down hit the ground from the first step) or ``+sdf_init_offset``
('positive': all free). The residual's last layer starts ~1 cm in magnitude.

Derivatives: central differences of the SDF volume (``torch.gradient``, one-sided at the
faces) give a gradient volume ``[B, 3, X, Y, Z]``; central differences of that give the Hessian
volume ``[B, 9, X, Y, Z]``. Both are sampled trilinearly like the values, so they are smooth,
cheap and differentiable w.r.t. the network.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfocc_core.geometry.voxel_grid import VoxelGridSpec
from selfocc_core.model.config import ModelConfig
from selfocc_core.rendering.types import FieldOutputs


def sample_volume(volume: Tensor, grid: VoxelGridSpec, points: Tensor) -> tuple[Tensor, Tensor]:
    """Trilinear read of ``volume [B, C, X, Y, Z]`` at ego points ``[B, ..., 3]``.

    Returns values ``[B, ..., C]`` (border padding) and an inside-the-box mask ``[B, ...]``.
    """
    if points.shape[-1] != 3 or points.shape[0] != volume.shape[0]:
        raise ValueError(f"sample_volume: points must be [B={volume.shape[0]}, ..., 3], got {tuple(points.shape)}")
    B, C = volume.shape[:2]
    lead = points.shape[1:-1]
    n = grid.normalize(points.reshape(B, -1, 3))
    inside = (n.abs() <= 1.0).all(-1)
    # float32 (or float64) sampling even under autocast: bf16 coordinates are ~0.4 % of the box off
    vol = volume if volume.dtype == torch.float64 else volume.float()
    g = n.flip(-1).view(B, 1, 1, -1, 3).to(vol.dtype)  # grid_sample wants (W, H, D) = (z, y, x)
    out = F.grid_sample(vol, g, mode="bilinear", padding_mode="border", align_corners=False)
    return out.view(B, C, -1).transpose(1, 2).reshape(B, *lead, C), inside.view(B, *lead)


def box_distance(grid: VoxelGridSpec, points: Tensor) -> Tensor:
    """Euclidean distance ``[...]`` from points ``[..., 3]`` to the box (0 inside)."""
    lo = torch.tensor(grid.lower, dtype=points.dtype, device=points.device)
    hi = torch.tensor(grid.upper, dtype=points.dtype, device=points.device)
    d = torch.maximum(lo - points, points - hi).clamp(min=0)
    return d.norm(dim=-1)


def prior_sdf(cfg: ModelConfig, z: Tensor) -> Tensor:
    """The initial SDF (``ModelConfig.sdf_init``) at ego heights ``z``: ``z - ground_height``
    ('ground') or ``+sdf_init_offset`` everywhere ('positive')."""
    if cfg.sdf_init == "ground":
        return z - cfg.ground_height
    return torch.full_like(z, float(cfg.sdf_init_offset))


def central_differences(volume: Tensor, spacing: float) -> Tensor:
    """Spatial derivatives of ``[B, C, X, Y, Z]`` -> ``[B, C * 3, X, Y, Z]`` ordered (c, axis)."""
    dx, dy, dz = torch.gradient(volume, spacing=spacing, dim=(2, 3, 4))
    return torch.stack([dx, dy, dz], 2).flatten(1, 2)


class SceneField:
    """The scene predicted from one input frame, in that frame's ego coordinates.

    Holds ``sdf [B, 1, X, Y, Z]`` (metres), ``rgb`` logits ``[B, 3, X, Y, Z]`` (sigmoid on read) and
    optional semantic logits ``[B, C, X, Y, Z]`` on ``grid``.
    """

    def __init__(self, grid: VoxelGridSpec, sdf: Tensor, rgb: Tensor, semantics: Optional[Tensor] = None):
        if sdf.dim() != 5 or sdf.shape[1] != 1 or tuple(sdf.shape[2:]) != grid.shape:
            raise ValueError(f"SceneField: sdf must be [B, 1, {grid.shape}], got {tuple(sdf.shape)}")
        self.grid = grid
        self._sdf, self._rgb, self._sem = sdf, rgb, semantics
        self._grad: Optional[Tensor] = None
        self._hess: Optional[Tensor] = None

    @property
    def batch_size(self) -> int:
        return self._sdf.shape[0]

    @property
    def num_classes(self) -> int:
        return 0 if self._sem is None else self._sem.shape[1]

    # --- volumes -------------------------------------------------------------------------
    def sdf_volume(self) -> Tensor:
        """``[B, X, Y, Z]`` SDF at voxel centres."""
        return self._sdf[:, 0]

    def rgb_volume(self) -> Tensor:
        """``[B, 3, X, Y, Z]`` colour in [0, 1]."""
        return torch.sigmoid(self._rgb)

    def semantic_volume(self) -> Optional[Tensor]:
        """``[B, C, X, Y, Z]`` semantic logits, or None without a semantic head."""
        return self._sem

    def occupancy_volume(self, threshold: float = 0.0) -> Tensor:
        """``[B, X, Y, Z]`` bool, SDF <= threshold."""
        return self._sdf[:, 0] <= threshold

    def _stale(self, cached: Optional[Tensor]) -> bool:
        """True when a cached derived volume must be (re)built: none yet, or built under
        ``torch.no_grad`` (e.g. the importance pass) while gradients are wanted now -- reusing it
        would silently cut the Eikonal, Hessian and NeuS terms off the network."""
        return cached is None or (torch.is_grad_enabled() and self._sdf.requires_grad and not cached.requires_grad)

    def gradient_volume(self) -> Tensor:
        """``[B, 3, X, Y, Z]`` central-difference SDF gradient (cached)."""
        if self._stale(self._grad):
            self._grad = central_differences(self._sdf, self.grid.voxel_size)
        return self._grad

    def hessian_volume(self) -> Tensor:
        """``[B, 9, X, Y, Z]`` row-major Hessian of the SDF (cached)."""
        if self._stale(self._hess):
            self._hess = central_differences(self.gradient_volume(), self.grid.voxel_size)
        return self._hess

    # --- point queries ----------------------------------------------------------------------
    def _outside_sdf(self, sdf: Tensor, inside: Tensor, points: Tensor) -> Tensor:
        free = box_distance(self.grid, points).clamp(min=self.grid.voxel_size).to(sdf.dtype)
        return torch.where(inside, sdf, free)

    def query(self, points: Tensor, with_gradient: bool = False) -> FieldOutputs | tuple[FieldOutputs, Tensor]:
        """Field at ego points ``[B, ..., 3]`` -> FieldOutputs (sdf ``[B, ...]``, rgb ``[B, ..., 3]``,
        semantics ``[B, ..., C]`` or None); with ``with_gradient`` also the SDF gradient ``[B, ..., 3]``
        (all from one grid_sample)."""
        vols = [self._sdf, self._rgb] + ([self._sem] if self._sem is not None else [])
        if with_gradient:
            vols.append(self.gradient_volume())
        vals, inside = sample_volume(torch.cat(vols, 1), self.grid, points)
        sdf = self._outside_sdf(vals[..., 0], inside, points)
        rgb = torch.sigmoid(vals[..., 1:4])
        c = self.num_classes
        sem = vals[..., 4:4 + c] if c else None
        out = FieldOutputs(sdf=sdf, rgb=rgb, semantics=sem)
        return (out, vals[..., 4 + c:4 + c + 3]) if with_gradient else out

    def sdf(self, points: Tensor) -> Tensor:
        """SDF ``[B, ...]`` at ego points ``[B, ..., 3]``."""
        vals, inside = sample_volume(self._sdf, self.grid, points)
        return self._outside_sdf(vals[..., 0], inside, points)

    def gradient(self, points: Tensor) -> Tensor:
        """SDF gradient ``[B, ..., 3]`` (d/dx, d/dy, d/dz) at ego points ``[B, ..., 3]``."""
        return sample_volume(self.gradient_volume(), self.grid, points)[0]

    def hessian(self, points: Tensor) -> Tensor:
        """SDF Hessian ``[B, ..., 3, 3]`` at ego points ``[B, ..., 3]``."""
        h = sample_volume(self.hessian_volume(), self.grid, points)[0]
        return h.unflatten(-1, (3, 3))

    def hessian_norm(self, points: Tensor) -> Tensor:
        """Frobenius norm of the SDF Hessian ``[B, ...]``."""
        return self.hessian(points).flatten(-2).norm(dim=-1)


class FieldDecoder(nn.Module):
    """Planes -> :class:`SceneField`: upsample/broadcast-sum to ``cfg.scene.shape``, then a
    per-voxel MLP (1x1x1 convs) to SDF (+ prior), RGB logits and semantic logits."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.grid = cfg.scene
        layers: list[nn.Module] = []
        cin = cfg.embed_dim
        for h in cfg.mlp_hidden:
            layers += [nn.Conv3d(cin, h, 1), nn.Softplus(beta=10.0)]
            cin = h
        self.mlp = nn.Sequential(*layers)
        self.head = nn.Conv3d(cin, 1 + 3 + cfg.num_classes, 1)
        with torch.no_grad():
            self.head.weight[0].mul_(0.01)
            self.head.bias[0].zero_()
        prior = prior_sdf(cfg, self.grid.centers()[..., 2])[None, None]
        self.register_buffer("sdf_prior", prior, persistent=False)

    def forward(self, planes) -> SceneField:
        vol = planes.volume(self.grid.shape)
        out = self.head(self.mlp(vol))
        sdf = out[:, :1].float() + self.sdf_prior
        rgb = out[:, 1:4]
        sem = out[:, 4:] if self.cfg.num_classes else None
        return SceneField(self.grid, sdf, rgb, sem)
