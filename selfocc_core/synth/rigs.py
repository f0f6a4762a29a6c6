"""Camera rigs of the synthetic world: real nuScenes and KITTI calibrations, hard-coded.

A rig is a list of cameras, each with intrinsics ``K`` at its native resolution and
``T_ego_cam`` (camera *optical* frame -> ego frame, see geometry/transforms.py), plus the
height of the ego frame's origin above the road and the occupancy grid used for the rig.

Origins of the numbers:
- nuScenes: ``cam2img`` and ``cam2ego`` of the keyframe in
  ``shared/data/real/nuscenes_keyframe/n015-2018-07-24-11-22-45+0800.pkl`` (scene n015,
  2018-07-24; mmdetection3d demo data), native size 1600x900. The nuScenes ego frame sits
  on the ground under the rear axle, so the ego origin is at road height.
- KITTI: ``P2`` and ``Tr`` of ``shared/data/real/kitti_odometry/dataset/sequences/00/calib.txt``
  (native 1241x376). Our KITTI ego frame is the Velodyne frame (SemanticKITTI's voxel grid is
  in it), 1.73 m above the road. ``P2 = K [I | t2]`` in rectified cam0 coordinates, so
  ``T_cam2_cam0 = [I | K^-1 P2[:, 3]]`` and ``T_velo_cam2 = inv(Tr) @ inv(T_cam2_cam0)``.

To render at another size use ``CameraSpec.K_at(height, width)`` which calls
``geometry.camera.scale_intrinsics``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from selfocc_core.geometry.camera import scale_intrinsics
from selfocc_core.geometry.voxel_grid import OCC3D_NUSCENES, SEMANTIC_KITTI, VoxelGridSpec

# --- nuScenes keyframe calibration (cam2img, cam2ego) --------------------------------------
_NUSCENES_CALIB = {
    "CAM_FRONT": (
        [[1266.4172030466, 0.0, 816.2670197448], [0.0, 1266.4172030466, 491.5070657929], [0.0, 0.0, 1.0]],
        [[0.0056847786, -0.0056366678, 0.9999679327, 1.7007912397],
         [-0.9999834895, -0.0008371153, 0.0056801485, 0.015945632],
         [0.0008050713, -0.9999837875, -0.0056413338, 1.5109575987]],
    ),
    "CAM_FRONT_RIGHT": (
        [[1260.8474446005, 0.0, 807.9682445256], [0.0, 1260.8474446005, 495.3344268742], [0.0, 0.0, 1.0]],
        [[-0.8329295516, -0.000009946, 0.5533789992, 1.5508477688],
         [-0.5533049107, 0.0163788162, -0.8328177333, -0.4934048057],
         [-0.0090554096, -0.9998658299, -0.0136479028, 1.4957480431]],
    ),
    "CAM_FRONT_LEFT": (
        [[1272.5979470598, 0.0, 826.6154927354], [0.0, 1272.5979470598, 479.7516538636], [0.0, 0.0, 1.0]],
        [[0.8207583427, -0.0003414367, 0.571275413, 1.5238779783],
         [-0.5712715983, 0.0032195018, 0.8207547665, 0.49463135],
         [-0.002119458, -0.9999947548, 0.00244738, 1.5093282461]],
    ),
    "CAM_BACK": (
        [[809.2209905677, 0.0, 829.219600326], [0.0, 809.2209905677, 481.7784238451], [0.0, 0.0, 1.0]],
        [[0.0024217099, -0.0167536084, -0.9998567104, 0.0283260308],
         [0.9999890924, -0.0039591072, 0.0024883694, 0.0034513676],
         [-0.0040002293, -0.9998518229, 0.0167438369, 1.5791034698]],
    ),
    "CAM_BACK_LEFT": (
        [[1256.7414812095, 0.0, 792.112574076], [0.0, 1256.7414812095, 492.7757465151], [0.0, 0.0, 1.0]],
        [[0.9477603436, 0.0086657219, -0.3188655078, 1.0356910229],
         [0.3189611435, -0.0139763001, 0.9476647377, 0.4847950339],
         [0.0037556388, -0.9998647571, -0.0160102118, 1.5909701586]],
    ),
    "CAM_BACK_RIGHT": (
        [[1259.5137405847, 0.0, 807.2529053839], [0.0, 1259.5137405847, 501.1957988492], [0.0, 0.0, 1.0]],
        [[-0.9347755313, 0.0158758387, -0.3548839986, 1.0148781538],
         [0.3550745547, 0.011370495, -0.9347688556, -0.4805682302],
         [-0.0108050313, -0.9998093247, -0.0162659679, 1.5623954535]],
    ),
}
NUSCENES_CAMERAS: tuple[str, ...] = (
    "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT",
)

# --- KITTI odometry sequence 00 calib.txt ---------------------------------------------------
KITTI_P = {
    "P0": [7.188560e02, 0.0, 6.071928e02, 0.0, 0.0, 7.188560e02, 1.852157e02, 0.0, 0.0, 0.0, 1.0, 0.0],
    "P1": [7.188560e02, 0.0, 6.071928e02, -3.861448e02, 0.0, 7.188560e02, 1.852157e02, 0.0, 0.0, 0.0, 1.0, 0.0],
    "P2": [7.188560e02, 0.0, 6.071928e02, 4.538225e01, 0.0, 7.188560e02, 1.852157e02, -1.130887e-01,
           0.0, 0.0, 1.0, 3.779761e-03],
    "P3": [7.188560e02, 0.0, 6.071928e02, -3.372877e02, 0.0, 7.188560e02, 1.852157e02, 2.369057e00,
           0.0, 0.0, 1.0, 4.915215e-03],
}
# Tr: Velodyne -> rectified cam0.
KITTI_TR = [4.276802385584e-04, -9.999672484946e-01, -8.084491683471e-03, -1.198459927713e-02,
            -7.210626507497e-03, 8.081198471645e-03, -9.999413164504e-01, -5.403984729748e-02,
            9.999738645903e-01, 4.859485810390e-04, -7.206933692422e-03, -2.921968648686e-01]
KITTI_VELO_HEIGHT = 1.73  # metres above the road (KITTI setup sheet)
KITTI_CAMERAS: tuple[str, ...] = ("image_2",)


@dataclass(frozen=True)
class CameraSpec:
    """One camera: name, native size, intrinsics at native size and extrinsics.

    K:         [3, 3] float64 intrinsics at (height, width)
    T_ego_cam: [4, 4] float64 camera optical frame -> ego frame
    """

    name: str
    width: int
    height: int
    K: np.ndarray
    T_ego_cam: np.ndarray

    def K_at(self, height: int, width: int, dtype=torch.float32) -> torch.Tensor:
        """[3, 3] intrinsics for an image rendered at (height, width)."""
        if height <= 0 or width <= 0:
            raise ValueError(f"camera {self.name}: image size must be positive, got {height}x{width}")
        K = torch.as_tensor(self.K, dtype=torch.float64)
        return scale_intrinsics(K, width / self.width, height / self.height).to(dtype)


@dataclass(frozen=True)
class Rig:
    """A camera rig plus where its ego frame sits and which occupancy grid it uses."""

    name: str
    cameras: tuple[CameraSpec, ...]
    ego_height: float  # height of the ego origin above the road (m)
    grid: VoxelGridSpec

    @property
    def camera_names(self) -> list[str]:
        return [c.name for c in self.cameras]

    def select(self, names: list[str] | tuple[str, ...] | None) -> "Rig":
        """The rig restricted to `names` (in the given order); empty/None keeps all cameras."""
        if not names:
            return self
        by_name = {c.name: c for c in self.cameras}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ValueError(f"rig '{self.name}': unknown camera(s) {unknown}; valid: {list(by_name)}")
        return Rig(self.name, tuple(by_name[n] for n in names), self.ego_height, self.grid)


def _nuscenes_rig() -> Rig:
    cams = []
    for name in NUSCENES_CAMERAS:
        K, T34 = _NUSCENES_CALIB[name]
        T = np.eye(4)
        T[:3, :] = np.asarray(T34, dtype=np.float64)
        cams.append(CameraSpec(name, 1600, 900, np.asarray(K, dtype=np.float64), T))
    return Rig("nuscenes", tuple(cams), 0.0, OCC3D_NUSCENES)


def kitti_T_velo_cam2() -> np.ndarray:
    """[4, 4] T_velo_cam2 (KITTI image_2 optical frame -> Velodyne) from P2 and Tr."""
    P2 = np.asarray(KITTI_P["P2"]).reshape(3, 4)
    T_cam0_velo = np.eye(4)
    T_cam0_velo[:3, :] = np.asarray(KITTI_TR).reshape(3, 4)
    T_cam2_cam0 = np.eye(4)
    T_cam2_cam0[:3, 3] = np.linalg.solve(P2[:, :3], P2[:, 3])
    return np.linalg.inv(T_cam0_velo) @ np.linalg.inv(T_cam2_cam0)


def _kitti_rig() -> Rig:
    P2 = np.asarray(KITTI_P["P2"]).reshape(3, 4)
    cam = CameraSpec("image_2", 1241, 376, P2[:, :3].copy(), kitti_T_velo_cam2())
    return Rig("kitti", (cam,), KITTI_VELO_HEIGHT, SEMANTIC_KITTI)


RIG_NAMES = ("nuscenes", "kitti")


def get_rig(name: str, cameras: list[str] | tuple[str, ...] | None = None) -> Rig:
    """Rig by name ('nuscenes' | 'kitti'), optionally restricted to some cameras."""
    if name == "nuscenes":
        rig = _nuscenes_rig()
    elif name == "kitti":
        rig = _kitti_rig()
    else:
        raise ValueError(f"unknown rig '{name}'; valid rigs: {list(RIG_NAMES)}")
    return rig.select(cameras)
