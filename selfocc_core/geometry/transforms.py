"""Rigid transforms, quaternions and the ROS optical-frame convention.

Naming: ``T_a_b`` maps points expressed in frame ``b`` into frame ``a``
(``p_a = T_a_b @ p_b``). Quaternions are ``(w, x, y, z)`` like transforms3d and
nuScenes; ROS messages use ``(x, y, z, w)``: convert at the message boundary.

Frames used across the project:
- ``world``/``odom``: fixed frame of a recording.
- ``ego``/``base_link``: vehicle body, REP 103 FLU (x forward, y left, z up).
- ``cam``: camera *optical* frame, REP 103 ``*_optical_frame`` (x right, y down, z forward).
  Every dataset we read (nuScenes, KITTI, DDAD) already stores camera extrinsics in the
  optical convention; a ROS ``camera_link`` is FLU and differs by ``T_FLU_OPTICAL``.
"""

from __future__ import annotations

import numpy as np
import torch
from transforms3d.quaternions import mat2quat, quat2mat
from torch import Tensor

# Rotation taking optical-frame coordinates (x right, y down, z fwd) to a FLU body frame
# located at the same origin: FLU.x = opt.z, FLU.y = -opt.x, FLU.z = -opt.y.
T_FLU_OPTICAL = np.array(
    [[0.0, 0.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)
T_OPTICAL_FLU = T_FLU_OPTICAL.T.copy()


def quaternion_to_matrix(q_wxyz) -> np.ndarray:
    """(w, x, y, z) quaternion -> 3x3 rotation matrix (normalises the quaternion).

    Raises ValueError for a non-finite or zero quaternion.
    """
    q = np.asarray(q_wxyz, dtype=np.float64)
    if q.shape != (4,) or not np.all(np.isfinite(q)) or np.linalg.norm(q) < 1e-9:
        raise ValueError(f"invalid quaternion (w,x,y,z): {q_wxyz!r}")
    return quat2mat(q / np.linalg.norm(q))


def matrix_to_quaternion(R) -> np.ndarray:
    """3x3 rotation matrix -> (w, x, y, z) quaternion with w >= 0."""
    R = np.asarray(R, dtype=np.float64)
    if R.shape != (3, 3) or not np.all(np.isfinite(R)):
        raise ValueError(f"invalid rotation matrix: {R!r}")
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-6) or not np.isclose(np.linalg.det(R), 1.0, atol=1e-6):
        raise ValueError(f"not a rotation matrix (orthonormal, det +1 within 1e-6): {R!r}")
    q = mat2quat(R)
    return q if q[0] >= 0 else -q


def slerp_quaternion(q0_wxyz, q1_wxyz, a: float) -> np.ndarray:
    """Spherical interpolation of unit (w, x, y, z) quaternions along the shorter arc, ``a`` in [0, 1]."""
    q0 = np.asarray(q0_wxyz, dtype=np.float64)
    q1 = np.asarray(q1_wxyz, dtype=np.float64)
    d = float(np.dot(q0, q1))
    if d < 0.0:
        q1, d = -q1, -d
    if d > 0.9995:  # nearly parallel: normalised lerp
        q = q0 + a * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(min(1.0, d))
    return (np.sin((1 - a) * theta) * q0 + np.sin(a * theta) * q1) / np.sin(theta)


def make_transform(rotation, translation) -> np.ndarray:
    """4x4 homogeneous transform from a 3x3 matrix or (w,x,y,z) quaternion and a translation."""
    rotation = np.asarray(rotation, dtype=np.float64)
    R = quaternion_to_matrix(rotation) if rotation.shape == (4,) else rotation
    t = np.asarray(translation, dtype=np.float64).reshape(3)
    if not np.all(np.isfinite(t)):
        raise ValueError(f"non-finite translation: {translation!r}")
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def invert_transform(T):
    """Inverse of rigid transform(s) ``(*, 4, 4)`` using R^T (numpy or torch)."""
    if isinstance(T, np.ndarray):
        R, t = T[..., :3, :3], T[..., :3, 3:]
        Rt = np.swapaxes(R, -1, -2)
        out = np.zeros_like(T)
        out[..., :3, :3] = Rt
        out[..., :3, 3:] = -Rt @ t
        out[..., 3, 3] = 1.0
        return out
    R, t = T[..., :3, :3], T[..., :3, 3:]
    Rt = R.transpose(-1, -2)
    top = torch.cat([Rt, -Rt @ t], dim=-1)
    bottom = torch.zeros_like(T[..., 3:, :])
    bottom[..., 3] = 1.0
    return torch.cat([top, bottom], dim=-2)


def transform_points(T: Tensor, points: Tensor) -> Tensor:
    """Apply ``T (*, 4, 4)`` to ``points (*, M, 3)`` -> ``(*, M, 3)``.

    Example: ``transform_points(T_ego_cam, p_cam)`` gives points in the ego frame.
    """
    if T.shape[-2:] != (4, 4) or points.shape[-1] != 3:
        raise ValueError(f"expected T (*,4,4) and points (*,M,3), got {tuple(T.shape)} {tuple(points.shape)}")
    R = T[..., :3, :3]
    t = T[..., :3, 3]
    return points @ R.transpose(-1, -2) + t.unsqueeze(-2)
