"""Which voxels a score looks at: the ground layer, range bins, the part of a grid inside a box.

- ground layer: the voxels a flat ground plane can claim, i.e. those whose lower face is at or
  below ``ground_height`` (what `ground_plane_occupancy` predicts), plus every GT voxel of a
  ground class (driveable_surface, other_flat, sidewalk, terrain: a kerb or a raised verge
  above the plane is still ground). Everything else is "above ground": cars, people, poles,
  walls, trees - what a camera model has to find to be useful.
- range bins: horizontal distance of a voxel centre from the ego origin (x, y), in metres,
  bins ``[lo, hi)``.
- `crop_to_box`: the sub-grid of voxels whose centres lie inside a box (the model's own field).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from selfocc_core.classes import CLASS_ID
from selfocc_core.evaluation.occupancy_metrics import ground_plane_occupancy
from selfocc_core.geometry.voxel_grid import VoxelGridSpec

GROUND_CLASSES: tuple[int, ...] = tuple(CLASS_ID[c] for c in ("driveable_surface", "other_flat", "sidewalk", "terrain"))
RANGE_BINS: tuple[tuple[float, float], ...] = ((0.0, 10.0), (10.0, 20.0), (20.0, 40.0))


def bin_name(lo: float, hi: float) -> str:
    """``(0, 10) -> "0-10m"``."""
    return f"{lo:g}-{hi:g}m"


def ground_layer(grid: VoxelGridSpec, ground_height: float, gt_labels=None) -> np.ndarray:
    """``[X, Y, Z]`` bool: voxels with the lower face at/below ``ground_height``, or (when
    `gt_labels` ``[X, Y, Z]`` is given) labelled with one of `GROUND_CLASSES` in GT."""
    layer = ground_plane_occupancy(grid, ground_height).numpy()
    if gt_labels is not None:
        gt = np.asarray(gt_labels.cpu() if isinstance(gt_labels, Tensor) else gt_labels)
        if gt.shape != grid.shape:
            raise ValueError(f"ground_layer: gt_labels {gt.shape} do not match grid {grid.shape}")
        layer = layer | np.isin(gt, GROUND_CLASSES)
    return layer


def horizontal_range(grid: VoxelGridSpec) -> np.ndarray:
    """``[X, Y, Z]`` float: distance of each voxel centre from the ego origin in the x-y plane."""
    c = grid.centers().numpy()
    return np.hypot(c[..., 0], c[..., 1])


def range_masks(grid: VoxelGridSpec, bins=RANGE_BINS) -> dict[str, np.ndarray]:
    """``{"0-10m": [X, Y, Z] bool, ...}``: voxels whose centre's horizontal range is in ``[lo, hi)``."""
    r = horizontal_range(grid)
    return {bin_name(lo, hi): (r >= lo) & (r < hi) for lo, hi in bins}


def crop_to_box(grid: VoxelGridSpec, box: VoxelGridSpec) -> tuple[VoxelGridSpec, tuple[slice, slice, slice]] | None:
    """The sub-grid of `grid` made of the voxels whose centres lie inside `box` (closed), and
    the index slices that cut it out of ``[X, Y, Z]`` arrays; None when no centre is inside.

    >>> g = VoxelGridSpec(-40, 40, -40, 40, -1, 5.4, 0.4); b = VoxelGridSpec(-25.6, 25.6, -25.6, 25.6, -2, 4.4, 0.8)
    >>> crop_to_box(g, b)[0].shape
    (128, 128, 14)
    """
    vs = grid.voxel_size
    slices, lo_hi = [], []
    for lo_g, hi_g, n, lo_b, hi_b in zip(grid.lower, grid.upper, grid.shape, box.lower, box.upper):
        centres = lo_g + (np.arange(n) + 0.5) * vs
        idx = np.nonzero((centres >= lo_b - 1e-6) & (centres <= hi_b + 1e-6))[0]
        if idx.size == 0:
            return None
        i0, i1 = int(idx[0]), int(idx[-1]) + 1
        slices.append(slice(i0, i1))
        lo_hi.append((round(lo_g + i0 * vs, 6), round(lo_g + i1 * vs, 6)))
    (x0, x1), (y0, y1), (z0, z1) = lo_hi
    return VoxelGridSpec(x0, x1, y0, y1, z0, z1, vs), tuple(slices)


def box_description(grid: VoxelGridSpec) -> str:
    """``"x [-25.6, 25.6) y [-25.6, 25.6) z [-1, 4.2) m, 0.4 m voxels (128 x 128 x 13)"``."""
    X, Y, Z = grid.shape
    return (f"x [{grid.x_min:g}, {grid.x_max:g}) y [{grid.y_min:g}, {grid.y_max:g}) "
            f"z [{grid.z_min:g}, {grid.z_max:g}) m, "
            f"{grid.voxel_size:g} m voxels ({X} x {Y} x {Z})")


def as_numpy(x) -> np.ndarray:
    """Tensor or array -> numpy (CPU)."""
    if isinstance(x, Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def as_tensor(x) -> Tensor:
    return x.detach().cpu() if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
