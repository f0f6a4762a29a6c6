"""Photometric warp check on the real KITTI odometry frames.

Stereo depth of frame t (cv2.StereoSGBM on image_0/image_1, baseline from calib.txt) and the
GT poses from the reader warp frame t+1 into frame t with our geometry (backproject ->
transform_points -> project -> grid_sample). On textured pixels the warped image must
reproduce frame t better than frame t+1 itself (no warp), and better than a warp with the
inverted relative pose (negative control).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from selfocc_core.data.config import DataConfig
from selfocc_core.data.kitti import KittiOdometryDataset
from selfocc_core.geometry import backproject, invert_transform, project, transform_points

cv2 = pytest.importorskip("cv2")

H, W = 188, 620  # half resolution


def stereo_depth(left: torch.Tensor, right: torch.Tensor, fx: float, baseline: float) -> torch.Tensor:
    """z-depth [H, W] (0 = unknown) from rectified grayscale images [H, W] in [0, 1]."""
    L = (left.numpy() * 255).astype(np.uint8)
    R = (right.numpy() * 255).astype(np.uint8)
    sgbm = cv2.StereoSGBM_create(minDisparity=0, numDisparities=64, blockSize=5, P1=8 * 25, P2=32 * 25,
                                 uniquenessRatio=10, speckleWindowSize=50, speckleRange=2)
    disp = sgbm.compute(L, R).astype(np.float32) / 16.0
    depth = np.where(disp > 1.0, fx * baseline / np.maximum(disp, 1e-3), 0.0)
    return torch.from_numpy(depth).double()


def warp_errors(sample) -> dict:
    f, nxt = sample.frame, sample.context[1]
    K = f.K[0].double()
    baseline = (f.T_ego_cam[1, :3, 3] - f.T_ego_cam[0, :3, 3]).norm().item()
    depth = stereo_depth(f.images[0, 0], f.images[1, 0], K[0, 0].item(), baseline)
    T_world_cam_t = f.T_world_ego.double() @ f.T_ego_cam[0].double()
    T_world_cam_n = nxt.T_world_ego.double() @ nxt.T_ego_cam[0].double()
    T_n_t = invert_transform(T_world_cam_n) @ T_world_cam_t
    I_t, I_n = f.images[0, 0], nxt.images[0, 0]
    gx = torch.zeros_like(I_t)
    gy = torch.zeros_like(I_t)
    gx[:, 1:-1] = (I_t[:, 2:] - I_t[:, :-2]).abs() / 2
    gy[1:-1] = (I_t[2:] - I_t[:-2]).abs() / 2
    textured = (gx + gy) > 0.03
    textured[:, :70] = False  # no disparity in the left band (beyond the right camera's view)
    pts = backproject(depth, K).reshape(-1, 3)
    out = {}
    for name, T in (("pose", T_n_t), ("inverted", invert_transform(T_n_t))):
        uv, z = project(transform_points(T, pts), K)
        grid = torch.stack([(uv[:, 0] + 0.5) / W * 2 - 1, (uv[:, 1] + 0.5) / H * 2 - 1], -1).reshape(1, H, W, 2)
        warped = F.grid_sample(I_n[None, None], grid.float(), align_corners=False, padding_mode="border")[0, 0]
        inside = ((uv[:, 0] >= 0) & (uv[:, 0] < W - 1) & (uv[:, 1] >= 0) & (uv[:, 1] < H - 1) & (z > 0)).reshape(H, W)
        m = (depth > 0) & inside & textured
        if name == "pose":
            mask = m
        out[name] = (I_t - warped).abs()[mask].mean().item()
    out["identity"] = (I_t - I_n).abs()[mask].mean().item()
    out["pixels"] = int(mask.sum())
    return out


def test_stereo_depth_and_poses_warp_next_frame_onto_current(real_data_dir):
    torch.set_num_threads(2)
    root = real_data_dir / "kitti_odometry" / "dataset"
    ds = KittiOdometryDataset(root, DataConfig(image_height=H, image_width=W, cameras=["image_0", "image_1"]))
    ratios = []
    for i in (0, 4, 8):
        e = warp_errors(ds[i])
        assert e["pixels"] > 20000, e
        assert e["pose"] < e["identity"] < e["inverted"], (i, e)
        ratios.append(e["pose"] / e["identity"])
    # measured on this snippet: 0.59-0.80 (the images appear to move ~10-20 % less than the
    # GT poses say, see the report; a correct scale would give a lower ratio)
    assert np.mean(ratios) < 0.85, ratios
