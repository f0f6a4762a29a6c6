"""A synthetic drive: world + rig + timing -> rendered frames and ground truth per frame.

Shared by the native dataset (data/synthetic.py), the exporters and the preview, so they
all see exactly the same images for the same settings.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from selfocc_core.classes import FREE_LABEL
from selfocc_core.synth.occupancy import (
    KITTI_LIDAR_IN_EGO,
    NUSCENES_LIDAR_IN_EGO,
    camera_visibility,
    lidar_visibility,
    occupancy_semantics,
)
from selfocc_core.synth.render import RenderOutput, render_cameras
from selfocc_core.synth.rigs import Rig, get_rig
from selfocc_core.synth.world import World, generate_world

MASK_RAYS_PER_CAMERA = (360, 640)  # (H, W) of the pixel rays cast per camera for the camera-visibility mask


@dataclass
class FrameGT:
    """Occupancy ground truth of one frame on the rig's grid (ego frame at that frame).

    semantics:   [X, Y, Z] uint8 (17 = free)
    mask_camera: [X, Y, Z] bool
    mask_lidar:  [X, Y, Z] bool
    """

    semantics: Tensor
    mask_camera: Tensor
    mask_lidar: Tensor


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block with `n` torch CPU threads (None: unchanged), then restore the setting."""
    old = torch.get_num_threads()
    if n is not None and n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


class SyntheticSequence:
    """Frames i = 0..num_frames-1 at t_i = i / frame_rate_hz of one generated world.

    Rendering runs many small tensor ops, for which extra intra-op threads only add overhead
    (10x slower measured with 2 threads on a busy 2-core machine), so `render` and
    `ground_truth` use `threads` torch threads (default 1; None keeps the caller's setting).
    ego_motion: 'constant' or 'slow_stop' (world.generate_world).
    """

    def __init__(self, seed: int, num_frames: int, rig: str | Rig = "nuscenes", cameras=None,
                 speed_mps: float = 10.0, frame_rate_hz: float = 12.0, threads: int | None = 1,
                 ego_motion: str = "constant"):
        if num_frames <= 0:
            raise ValueError(f"num_frames must be positive, got {num_frames}")
        if frame_rate_hz <= 0:
            raise ValueError(f"frame_rate_hz must be positive, got {frame_rate_hz}")
        if speed_mps < 0:
            raise ValueError(f"speed_mps must be >= 0, got {speed_mps}")
        self.rig = get_rig(rig, cameras) if isinstance(rig, str) else rig.select(cameras)
        self.num_frames = int(num_frames)
        self.threads = threads
        self.frame_rate_hz = float(frame_rate_hz)
        self.world: World = generate_world(int(seed), duration_s=(num_frames - 1) / frame_rate_hz, speed_mps=speed_mps,
                                           ego_motion=ego_motion)

    def time(self, i: int) -> float:
        return i / self.frame_rate_hz

    def T_world_ego(self, i: int) -> np.ndarray:
        """[4, 4] float64 ego pose of frame i."""
        return self.world.T_world_ego(self.time(i), self.rig.ego_height)

    def intrinsics(self, height: int, width: int) -> Tensor:
        """[N, 3, 3] float32 for images of (height, width)."""
        return torch.stack([c.K_at(height, width) for c in self.rig.cameras])

    def T_ego_cam(self) -> Tensor:
        """[N, 4, 4] float32."""
        return torch.tensor(np.stack([c.T_ego_cam for c in self.rig.cameras]), dtype=torch.float32)

    def render(self, i: int, height: int, width: int) -> RenderOutput:
        """Render all cameras of frame i at (height, width)."""
        self._check(i)
        T_world_cam = torch.tensor(np.stack([self.T_world_ego(i) @ c.T_ego_cam for c in self.rig.cameras]), dtype=torch.float32)
        with torch_threads(self.threads):
            return render_cameras(self.world, self.time(i), self.intrinsics(height, width), T_world_cam, height, width)

    def ground_truth(self, i: int) -> FrameGT:
        """Occupancy, camera-visibility and LiDAR-visibility masks of frame i."""
        self._check(i)
        with torch_threads(self.threads):
            return self._ground_truth(i)

    def _ground_truth(self, i: int) -> FrameGT:
        t, T = self.time(i), self.T_world_ego(i)
        grid = self.rig.grid
        sem = occupancy_semantics(self.world, t, T, grid)
        h, w = MASK_RAYS_PER_CAMERA
        mask_cam = camera_visibility(sem != FREE_LABEL, self.intrinsics(h, w), self.T_ego_cam(), (h, w), grid)
        if self.rig.name == "kitti":
            mask_lidar = lidar_visibility(self.world, t, T, grid, KITTI_LIDAR_IN_EGO, beams=64, fov_deg=(-24.9, 2.0))
        else:
            mask_lidar = lidar_visibility(self.world, t, T, grid, NUSCENES_LIDAR_IN_EGO)
        return FrameGT(sem, mask_cam, mask_lidar)

    def _check(self, i: int):
        if not 0 <= i < self.num_frames:
            raise IndexError(f"frame index {i} out of range [0, {self.num_frames})")
