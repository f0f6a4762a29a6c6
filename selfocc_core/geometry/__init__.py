"""Batched, stateless camera and frame geometry (torch)."""

from selfocc_core.geometry.camera import (
    backproject,
    crop_intrinsics,
    pixel_grid,
    project,
    scale_intrinsics,
)
from selfocc_core.geometry.rays import camera_rays
from selfocc_core.geometry.transforms import (
    T_OPTICAL_FLU,
    T_FLU_OPTICAL,
    invert_transform,
    make_transform,
    matrix_to_quaternion,
    quaternion_to_matrix,
    transform_points,
)
from selfocc_core.geometry.voxel_grid import (
    OCC3D_NUSCENES, OCCUPANCY_TOLERANCE, SEMANTIC_KITTI, VoxelGridSpec, occupancy_from_sdf,
)

__all__ = [
    "backproject", "crop_intrinsics", "pixel_grid", "project", "scale_intrinsics", "camera_rays",
    "T_OPTICAL_FLU", "T_FLU_OPTICAL", "invert_transform", "make_transform", "matrix_to_quaternion",
    "quaternion_to_matrix", "transform_points", "VoxelGridSpec", "OCC3D_NUSCENES", "SEMANTIC_KITTI",
    "OCCUPANCY_TOLERANCE", "occupancy_from_sdf",
]
