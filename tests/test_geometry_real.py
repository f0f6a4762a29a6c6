"""Our projection code on real calibration: LiDAR points land in the images where they should.

Uses the raw files of ../shared/data/real (DDAD scene_02 DGP json + LiDAR npz, the nuScenes
keyframe pickle + LIDAR_TOP .pcd.bin), parsed here independently of the dataset readers.
Each check has a negative control (a deliberately wrong transform) so that it can fail.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from selfocc_core.geometry import invert_transform, make_transform, project, transform_points

FLIP_Z = np.diag([-1.0, -1.0, 1.0, 1.0])  # image upside down (180 deg about the optical axis)


def projection_stats(T_cam_pts: np.ndarray, K: np.ndarray, pts: np.ndarray, width: int, height: int) -> dict:
    """Project points with our code; summarise where they land."""
    pc = transform_points(torch.as_tensor(T_cam_pts), torch.as_tensor(pts))
    uv, z = project(pc, torch.as_tensor(K))
    front = z > 0.5
    inside = front & (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
    zi, rows = z[inside], uv[inside, 1]
    bottom = zi[rows > 0.85 * height]
    middle = zi[(rows > 0.4 * height) & (rows < 0.6 * height)]
    return {
        "inside": inside.numpy(),
        "frac_front_inside": inside.sum().item() / max(front.sum().item(), 1),
        "frac_depth_1_80": ((zi > 1) & (zi < 80)).double().mean().item() if len(zi) else 0.0,
        "bottom_median": bottom.median().item() if len(bottom) > 20 else float("inf"),
        "middle_median": middle.median().item() if len(middle) > 20 else 0.0,
    }


def plausible(st: dict, min_frac: float) -> bool:
    """Enough points in the image, at driving depths, near ground at the bottom rows."""
    return (
        st["frac_front_inside"] >= min_frac
        and st["frac_depth_1_80"] >= 0.9
        and st["bottom_median"] < 8.0
        and st["bottom_median"] < 0.5 * st["middle_median"]
    )


# ---- DDAD -----------------------------------------------------------------------------------
def _dgp_pose(p: dict) -> np.ndarray:
    r, t = p["rotation"], p["translation"]
    return make_transform([r["qw"], r["qx"], r["qy"], r["qz"]], [t["x"], t["y"], t["z"]])


@pytest.fixture(scope="module")
def ddad_scene02(real_data_dir):
    root = real_data_dir / "ddad_dgp" / "scene_02"
    scene = json.loads(next(root.glob("scene_*.json")).read_text())
    calib = json.loads(next((root / "calibration").glob("*.json")).read_text())
    Ks = {n: np.array([[i["fx"], i["skew"], i["cx"]], [0, i["fy"], i["cy"]], [0, 0, 1.0]])
          for n, i in zip(calib["names"], calib["intrinsics"])}
    data = {d["key"]: d for d in scene["data"]}
    frames = []
    for s in scene["samples"]:
        datums = {data[k]["id"]["name"]: data[k]["datum"] for k in s["datum_keys"]}
        lidar = datums.pop("LIDAR")["point_cloud"]
        pts = np.load(root / lidar["filename"])["data"][:, :3].astype(np.float64)
        frames.append((pts, _dgp_pose(lidar["pose"]), {n: d["image"] for n, d in datums.items()}))
    return frames, Ks


def test_ddad_lidar_projects_plausibly_into_all_cameras(ddad_scene02):
    frames, Ks = ddad_scene02
    assert len(frames) == 3
    for pts, T_world_lidar, images in frames:
        assert len(images) == 6
        for name, im in images.items():
            T_cam_lidar = invert_transform(_dgp_pose(im["pose"])) @ T_world_lidar
            st = projection_stats(T_cam_lidar, Ks[name], pts, im["width"], im["height"])
            # CAMERA_01 is the narrow (fx ~ 2180 px) front camera; the others are wide (~1060 px).
            assert plausible(st, 0.15 if name == "CAMERA_01" else 0.35), (name, st)
            assert st["inside"].sum() > 3000, name


def test_ddad_wrong_transforms_are_caught(ddad_scene02):
    """Negative controls: inverted extrinsics or an upside-down camera fail the same checks."""
    frames, Ks = ddad_scene02
    pts, T_world_lidar, images = frames[1]
    for name, im in images.items():
        T_cam_lidar = invert_transform(_dgp_pose(im["pose"])) @ T_world_lidar
        for wrong in (invert_transform(T_cam_lidar), FLIP_Z @ T_cam_lidar):
            st = projection_stats(wrong, Ks[name], pts, im["width"], im["height"])
            assert not plausible(st, 0.15), (name, st)


# ---- nuScenes keyframe ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def nuscenes_keyframe(real_data_dir):
    root = real_data_dir / "nuscenes_keyframe"
    info = pickle.loads(next(root.glob("*.pkl")).read_bytes())["data_list"][0]
    lidar = info["lidar_points"]
    pts = np.fromfile(root / lidar["lidar_path"], dtype=np.float32).reshape(-1, 5)[:, :3].astype(np.float64)
    return info, pts, np.asarray(lidar["lidar2ego"])


def test_nuscenes_lidar_projects_plausibly(nuscenes_keyframe):
    info, pts, T_ego_lidar = nuscenes_keyframe
    pts_ego = pts @ T_ego_lidar[:3, :3].T + T_ego_lidar[:3, 3]
    for name, cam in info["images"].items():
        T_cam_lidar = np.asarray(cam["lidar2cam"])
        st = projection_stats(T_cam_lidar, np.asarray(cam["cam2img"]), pts, 1600, 900)
        assert plausible(st, 0.2), (name, {k: v for k, v in st.items() if k != "inside"})
        x_ego = pts_ego[st["inside"], 0]
        if name == "CAM_FRONT":  # what CAM_FRONT sees is in front of the car
            assert (x_ego > 0).mean() > 0.95
        if name == "CAM_BACK":
            assert (x_ego < 0).mean() > 0.95
        # negative control: upside-down camera
        assert not plausible(projection_stats(FLIP_Z @ T_cam_lidar, np.asarray(cam["cam2img"]), pts, 1600, 900), 0.2)


def test_nuscenes_folded_extrinsics_match_ego_motion(nuscenes_keyframe):
    """T_ego_cam = lidar2ego @ inv(lidar2cam) differs from cam2ego by the ego motion between
    the camera's and the LiDAR's instants: a forward offset -v * dt with one speed v for all."""
    info, _, T_ego_lidar = nuscenes_keyframe
    speeds = []
    for name, cam in info["images"].items():
        folded = T_ego_lidar @ invert_transform(np.asarray(cam["lidar2cam"]))
        static = np.asarray(cam["cam2ego"])
        dt = info["timestamp"] - cam["timestamp"]  # camera fired dt seconds before the LiDAR
        dx = folded[:3, 3] - static[:3, 3]
        assert abs(dx[1]) < 0.05 and abs(dx[2]) < 0.05, name  # straight driving: motion along x
        assert np.allclose(folded[:3, :3], static[:3, :3], atol=2e-3), name
        if dt > 0.005:
            speeds.append(-dx[0] / dt)
    assert len(speeds) >= 4
    assert 5.0 < np.median(speeds) < 15.0  # city speed in m/s
    assert np.ptp(speeds) < 0.15 * np.median(speeds)
