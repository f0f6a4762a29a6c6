"""Axis-aligned voxel grid in the ego frame: extent, resolution, index <-> metric."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class VoxelGridSpec:
    """A regular grid over ``[x_min, x_max) x [y_min, y_max) x [z_min, z_max)`` (metres, ego frame).

    Voxel (i, j, k) covers ``[x_min + i*voxel_size, x_min + (i+1)*voxel_size)`` etc.
    Arrays over the grid are indexed ``[X, Y, Z]`` (x fastest-changing last is NOT assumed).
    """

    x_min: float = -40.0
    x_max: float = 40.0
    y_min: float = -40.0
    y_max: float = 40.0
    z_min: float = -1.0
    z_max: float = 5.4
    voxel_size: float = 0.4

    def __post_init__(self):
        for lo, hi, name in ((self.x_min, self.x_max, "x"), (self.y_min, self.y_max, "y"), (self.z_min, self.z_max, "z")):
            if not hi > lo:
                raise ValueError(f"VoxelGridSpec: {name}_max ({hi}) must exceed {name}_min ({lo})")
        if self.voxel_size <= 0:
            raise ValueError(f"VoxelGridSpec: voxel_size must be positive, got {self.voxel_size}")

    @property
    def shape(self) -> tuple[int, int, int]:
        s = self.voxel_size
        return (
            int(round((self.x_max - self.x_min) / s)),
            int(round((self.y_max - self.y_min) / s)),
            int(round((self.z_max - self.z_min) / s)),
        )

    @property
    def lower(self) -> tuple[float, float, float]:
        return (self.x_min, self.y_min, self.z_min)

    @property
    def upper(self) -> tuple[float, float, float]:
        return (self.x_max, self.y_max, self.z_max)

    def centers(self, device=None, dtype=torch.float32) -> Tensor:
        """Metric voxel centres ``(X, Y, Z, 3)``."""
        idx = [torch.arange(n, device=device, dtype=dtype) for n in self.shape]
        grid = torch.stack(torch.meshgrid(*idx, indexing="ij"), dim=-1)
        return self.index_to_metric(grid)

    def index_to_metric(self, ijk: Tensor) -> Tensor:
        """Voxel indices ``(*, 3)`` (int or float) -> metric centres ``(*, 3)``."""
        lower = torch.tensor(self.lower, device=ijk.device, dtype=torch.float32 if not ijk.is_floating_point() else ijk.dtype)
        return lower + (ijk.to(lower.dtype) + 0.5) * self.voxel_size

    def metric_to_index(self, xyz: Tensor) -> tuple[Tensor, Tensor]:
        """Metric points ``(*, 3)`` -> integer indices ``(*, 3)`` and an in-grid mask ``(*,)``."""
        lower = torch.tensor(self.lower, device=xyz.device, dtype=xyz.dtype)
        ijk = torch.floor((xyz - lower) / self.voxel_size).long()
        shape = torch.tensor(self.shape, device=xyz.device)
        inside = ((ijk >= 0) & (ijk < shape)).all(dim=-1)
        return ijk, inside

    def normalize(self, xyz: Tensor) -> Tensor:
        """Metric points ``(*, 3)`` -> [-1, 1] per axis over the grid's box (grid_sample convention)."""
        lower = torch.tensor(self.lower, device=xyz.device, dtype=xyz.dtype)
        upper = torch.tensor(self.upper, device=xyz.device, dtype=xyz.dtype)
        return (xyz - lower) / (upper - lower) * 2.0 - 1.0


# Occ3D-nuScenes: 200 x 200 x 16 at 0.4 m.
OCC3D_NUSCENES = VoxelGridSpec(-40.0, 40.0, -40.0, 40.0, -1.0, 5.4, 0.4)
# SemanticKITTI: 256 x 256 x 32 at 0.2 m, in front of the car (velodyne frame).
SEMANTIC_KITTI = VoxelGridSpec(0.0, 51.2, -25.6, 25.6, -2.0, 4.4, 0.2)


# --------------------------------------------------------------------------------------------
# From an SDF to voxel occupancy: the one rule used by the predictor, `selfocc eval`, the
# trainer's evaluation and everything built on them (ROS node, demo).
# --------------------------------------------------------------------------------------------
OCCUPANCY_TOLERANCE = 0.25
"""A voxel is occupied when the SDF at its centre is <= this fraction of the voxel size."""


def occupancy_from_sdf(sdf: Tensor, voxel_size: float) -> Tensor:
    """Voxel occupancy (bool, same shape) from SDF values read at voxel centres (metres):
    ``sdf <= OCCUPANCY_TOLERANCE * voxel_size``, i.e. solid within a quarter voxel of the centre.

    Why not ``sdf <= 0`` at the centre: surfaces of driving scenes sit on the grid's special
    planes. The road (z = 0) runs through a layer of voxel centres on the Occ3D grid (z from -1 m
    in 0.4 m steps), where the ground-plane SDF is exactly 0, so a 1 mm shift of the surface
    flips the whole road layer (IoU 0.651 <-> 0.000 on the synthetic streets); a field
    distilled from a voxelised GT has its surfaces on voxel faces instead. A threshold of a
    quarter voxel sits halfway between the two: a plane through the centres (+-1 mm) is
    occupied, a plane on the faces leaves the voxel outside it free, both with a margin of
    voxel/4. For axis-aligned planes this equals "SDF <= 0 at any of the 2x2x2 points at
    +-voxel/4 around the centre" at an eighth of the queries. A voxel the road passes through
    is occupied, as the GT labels it (synthetic GT: the voxel's bottom lies below the road;
    Occ3D: the voxel holds LiDAR points of the road).

    >>> occupancy_from_sdf(torch.tensor([-0.001, 0.001, 0.099, 0.2]), 0.4).tolist()
    [True, True, True, False]
    """
    return sdf <= OCCUPANCY_TOLERANCE * float(voxel_size)
