"""nuScenes reader through the real devkit, on a tiny generated dataroot with known motion.

The fixture writes all 13 devkit tables for one scene: CAM_FRONT sweeps at 12 Hz (keyframes
every 6th), CAM_BACK 30 ms later, LIDAR_TOP at each keyframe (+10 ms); the ego drives at
6 m/s along x while yawing at 0.3 rad/s, so every sensor instant has a distinct ego pose.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from selfocc_core.data.config import DataConfig
from selfocc_core.data.nuscenes import NuScenesDataset
from selfocc_core.data.open import detect_layout, open_dataset
from selfocc_core.data.sample import collate_samples
from selfocc_core.geometry import T_FLU_OPTICAL, make_transform, matrix_to_quaternion

T0 = 1_500_000_000_000_000  # microseconds
SPEED, YAW_RATE = 6.0, 0.3
W, H = 32, 24
K = [[20.0, 0.0, 15.5], [0.0, 20.0, 11.5], [0.0, 0.0, 1.0]]
YAW180 = np.diag([-1.0, -1.0, 1.0, 1.0])
EXTRINSICS = {
    "CAM_FRONT": make_transform(T_FLU_OPTICAL[:3, :3], [1.7, 0.0, 1.5]),
    "CAM_BACK": make_transform((YAW180 @ T_FLU_OPTICAL)[:3, :3], [-1.0, 0.0, 1.5]),
    "LIDAR_TOP": make_transform(np.eye(3), [0.9, 0.0, 1.8]),
}
SENSOR_DELAY = {"CAM_FRONT": 0.0, "CAM_BACK": 0.03, "LIDAR_TOP": 0.01}


def ego_pose(t: float) -> np.ndarray:
    """T_world_ego at t seconds after the scene start."""
    yaw = YAW_RATE * t
    return make_transform([math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)], [SPEED * t, 0.0, 0.0])


def _quat(T):
    return matrix_to_quaternion(T[:3, :3]).tolist()


def write_dataroot(root, n_sweeps=13, key_every=6, nan_pose=False, gt_semantics=None):
    """Write the mini dataroot; returns {channel: [(t, token, is_key)]} and sample tokens."""
    v = root / "v1.0-mini"
    v.mkdir(parents=True)
    (root / "maps").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "maps" / "m.png")
    tables = {n: [] for n in ("attribute", "category", "visibility", "instance", "sample_annotation")}
    tables["log"] = [{"token": "log0", "logfile": "l", "vehicle": "v", "date_captured": "2018-01-01", "location": "singapore-onenorth"}]
    tables["map"] = [{"token": "map0", "log_tokens": ["log0"], "category": "semantic_prior", "filename": "maps/m.png"}]
    tables["sensor"] = [{"token": f"sensor_{c}", "channel": c, "modality": "lidar" if c == "LIDAR_TOP" else "camera"} for c in EXTRINSICS]
    tables["calibrated_sensor"] = [
        {"token": f"cs_{c}", "sensor_token": f"sensor_{c}", "translation": T[:3, 3].tolist(), "rotation": _quat(T),
         "camera_intrinsic": K if c != "LIDAR_TOP" else []}
        for c, T in EXTRINSICS.items()
    ]
    keys = list(range(0, n_sweeps, key_every))
    sample_tokens = [f"sample{i}" for i in range(len(keys))]
    tables["sample"] = [
        {"token": tok, "timestamp": T0 + int(round((k / 12 + SENSOR_DELAY["LIDAR_TOP"]) * 1e6)), "scene_token": "scene0",
         "prev": sample_tokens[i - 1] if i else "", "next": sample_tokens[i + 1] if i + 1 < len(keys) else ""}
        for i, (k, tok) in enumerate(zip(keys, sample_tokens))
    ]
    tables["scene"] = [{"token": "scene0", "name": "scene-9001", "description": "", "log_token": "log0",
                        "nbr_samples": len(keys), "first_sample_token": sample_tokens[0], "last_sample_token": sample_tokens[-1]}]
    tables["ego_pose"], tables["sample_data"] = [], []
    chains = {}
    rng = np.random.default_rng(0)
    for c in EXTRINSICS:
        ks = keys if c == "LIDAR_TOP" else list(range(n_sweeps))
        chain = []
        for j, k in enumerate(ks):
            t = k / 12 + SENSOR_DELAY[c]
            tok = f"sd_{c}_{k}"
            is_key = k in keys
            T = ego_pose(t)
            translation = T[:3, 3].tolist()
            if nan_pose and c == "CAM_BACK" and k == 6:
                translation[0] = float("nan")
            tables["ego_pose"].append({"token": f"ep_{tok}", "timestamp": T0 + int(round(t * 1e6)), "rotation": _quat(T), "translation": translation})
            folder = "samples" if is_key else "sweeps"
            ext = "pcd.bin" if c == "LIDAR_TOP" else "jpg"
            fname = f"{folder}/{c}/{tok}.{ext}"
            (root / folder / c).mkdir(parents=True, exist_ok=True)
            if c == "LIDAR_TOP":
                # a wall 10 m ahead of the ego origin, expressed in the LiDAR frame
                yz = rng.uniform([-3, 0.2], [3, 2.5], size=(500, 2))
                pts = np.c_[np.full(500, 10.0 - 0.9), yz[:, 0], yz[:, 1] - 1.8, np.zeros((500, 2))].astype(np.float32)
                pts.tofile(root / fname)
            else:
                Image.fromarray((rng.uniform(0, 255, (H, W, 3))).astype(np.uint8)).save(root / fname)
            sample_tok = sample_tokens[min(range(len(keys)), key=lambda i: abs(keys[i] - k))]
            tables["sample_data"].append({
                "token": tok, "sample_token": sample_tok, "ego_pose_token": f"ep_{tok}", "calibrated_sensor_token": f"cs_{c}",
                "timestamp": T0 + int(round(t * 1e6)), "fileformat": ext, "is_key_frame": is_key,
                "height": 0 if c == "LIDAR_TOP" else H, "width": 0 if c == "LIDAR_TOP" else W, "filename": fname,
                "prev": f"sd_{c}_{ks[j - 1]}" if j else "", "next": f"sd_{c}_{ks[j + 1]}" if j + 1 < len(ks) else "",
            })
            chain.append((t, tok, is_key))
        chains[c] = chain
    for name, rows in tables.items():
        (v / f"{name}.json").write_text(json.dumps(rows))
    if gt_semantics is not None:
        d = root / "gts" / "scene-9001" / sample_tokens[1]
        d.mkdir(parents=True)
        np.savez_compressed(d / "labels.npz", semantics=gt_semantics, mask_camera=(gt_semantics < 17).astype(np.uint8),
                            mask_lidar=np.ones_like(gt_semantics))
    return chains, sample_tokens


@pytest.fixture(scope="module")
def dataroot(tmp_path_factory):
    root = tmp_path_factory.mktemp("nus")
    sem = np.full((200, 200, 16), 17, np.uint8)
    sem[100:110, 90:95, 2:4] = 4
    chains, samples = write_dataroot(root, gt_semantics=sem)
    return root, chains, samples, sem


CFG = DataConfig(image_height=12, image_width=16)


def test_devkit_reader_context_by_ego_distance(dataroot):
    root, chains, samples, _ = dataroot
    assert detect_layout(root) == "nuscenes"
    ds = open_dataset(str(root), CFG)
    assert isinstance(ds, NuScenesDataset) and ds.version == "v1.0-mini"
    # 3 keyframes (sweeps 0, 6, 12); only the middle has sweeps on both sides
    assert len(ds) == 1
    s = ds[0]
    assert s.sample_id == samples[1] and sorted(s.context) == [-1, 1]
    # 0.5 m per sweep >= 0.3 m: the adjacent CAM_FRONT sweeps 5 and 7
    assert s.context[-1].timestamp == pytest.approx((T0 + round(5 / 12 * 1e6)) * 1e-6)
    assert s.context[1].timestamp == pytest.approx((T0 + round(7 / 12 * 1e6)) * 1e-6)
    # needing 1.2 m: three sweeps (1.5 m) away
    s2 = NuScenesDataset(root, DataConfig(image_height=12, image_width=16, min_ego_distance=1.2), nusc=ds.nusc)[0]
    assert s2.context[-1].timestamp == pytest.approx((T0 + round(3 / 12 * 1e6)) * 1e-6)
    assert s2.context[1].timestamp == pytest.approx((T0 + round(9 / 12 * 1e6)) * 1e-6)
    # without require_context the first and last keyframes come too
    assert len(NuScenesDataset(root, DataConfig(image_height=12, image_width=16, require_context=False), nusc=ds.nusc)) == 3


def test_per_camera_ego_motion_is_folded_in(dataroot):
    root, _, _, _ = dataroot
    s = open_dataset(str(root), CFG)[0]
    t_key = 6 / 12
    f = s.frame
    assert f.camera_names == ["CAM_FRONT", "CAM_BACK"]
    # reference ego = LIDAR_TOP's pose
    assert np.allclose(f.T_world_ego.double().numpy(), ego_pose(t_key + 0.01), atol=1e-4)
    # T_world_cam is each camera's true pose at its own instant
    for n, c in enumerate(f.camera_names):
        truth = ego_pose(t_key + SENSOR_DELAY[c]) @ EXTRINSICS[c]
        assert np.allclose(f.T_world_cam[n].double().numpy(), truth, atol=1e-4), c
    # and differs from the naive static extrinsics by the ego motion (CAM_BACK: 20 ms later)
    assert abs(f.T_ego_cam[1, 0, 3].item() - EXTRINSICS["CAM_BACK"][0, 3]) > 0.1
    for o, k in ((-1, 5), (1, 7)):
        cf = s.context[o]
        assert np.allclose(cf.T_world_ego.double().numpy(), ego_pose(k / 12), atol=1e-4)  # timing camera's ego
        for n, c in enumerate(cf.camera_names):
            truth = ego_pose(k / 12 + SENSOR_DELAY[c]) @ EXTRINSICS[c]
            assert np.allclose(cf.T_world_cam[n].double().numpy(), truth, atol=1e-4), (o, c)
    # K scaled 32x24 -> 16x12
    assert torch.allclose(f.K[0], torch.tensor([[10.0, 0, 7.5], [0, 10.0, 5.5], [0, 0, 1]]))


def test_occ3d_gt_and_lidar_depth(dataroot):
    root, _, _, sem = dataroot
    s = open_dataset(str(root), CFG)[0]
    gt = s.gt
    assert gt.occ_semantics.dtype == torch.uint8 and torch.equal(gt.occ_semantics, torch.from_numpy(sem))
    assert gt.occ_mask_camera.dtype == torch.bool and gt.occ_mask_camera.sum().item() == 10 * 5 * 2
    assert gt.occ_mask_lidar.all()
    assert gt.grid.shape == (200, 200, 16)
    # the wall 10 m ahead of the LiDAR-time ego origin is 8.3 m in front of CAM_FRONT (x = 1.7 m),
    # plus the 6 m/s * 10 ms the ego drove between the camera and the LiDAR instants; the
    # 3 mrad of yaw in between moves it by < 1 cm across the wall
    front = gt.depth[0][gt.depth[0] > 0]
    assert len(front) > 20 and torch.allclose(front, torch.full_like(front, 8.3 + SPEED * 0.01), atol=0.015)
    assert (gt.depth[1] > 0).sum() == 0  # CAM_BACK sees nothing of it
    b = collate_samples([s, s])
    assert b.gt.occ_semantics.shape == (2, 200, 200, 16) and b.context[1].images.shape == (2, 2, 3, 12, 16)


def test_camera_subset_uses_its_own_timing(dataroot):
    root, _, _, _ = dataroot
    s = open_dataset(str(root), DataConfig(image_height=12, image_width=16, cameras=["CAM_BACK"], load_gt=False))[0]
    assert s.frame.camera_names == ["CAM_BACK"] and s.gt is None
    assert s.context[1].timestamp == pytest.approx((T0 + round((7 / 12 + 0.03) * 1e6)) * 1e-6)


def test_bad_input_names_the_problem(dataroot, tmp_path):
    root, _, _, _ = dataroot
    with pytest.raises(ValueError, match="sensor.json: camera 'CAM_LEFT'"):
        NuScenesDataset(root, DataConfig(cameras=["CAM_LEFT"]))
    with pytest.raises(ValueError, match="scene-0001"):
        NuScenesDataset(root, DataConfig(scenes=["scene-0001"]))
    with pytest.raises(FileNotFoundError, match="no v1.0-"):
        NuScenesDataset(tmp_path, DataConfig())
    bad = tmp_path / "nan"
    write_dataroot(bad, nan_pose=True)
    ds = NuScenesDataset(bad, DataConfig(image_height=12, image_width=16, load_gt=False))
    with pytest.raises(ValueError, match="ego_pose.json: record ep_sd_CAM_BACK_6"):
        ds[0]
    missing = tmp_path / "missing"
    write_dataroot(missing)
    (missing / "sweeps" / "CAM_FRONT" / "sd_CAM_FRONT_5.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="sd_CAM_FRONT_5.jpg"):
        NuScenesDataset(missing, DataConfig(image_height=12, image_width=16))[0]
    badgt = tmp_path / "badgt"
    write_dataroot(badgt, gt_semantics=np.zeros((200, 200, 8), np.uint8))
    with pytest.raises(ValueError, match="labels.npz: 'semantics' has shape"):
        NuScenesDataset(badgt, DataConfig(image_height=12, image_width=16))[0]
