"""Dataset readers on the real snippets in ../shared/data/real."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from selfocc_core.data.config import DataConfig
from selfocc_core.data.ddad import DDADDataset
from selfocc_core.data.kitti import KittiOdometryDataset
from selfocc_core.data.nuscenes_infos import NuScenesInfosDataset
from selfocc_core.data.open import detect_layout, open_dataset
from selfocc_core.data.sample import collate_samples
from selfocc_core.geometry import invert_transform, make_transform

CFG = DataConfig(image_height=90, image_width=160)


# ---- nuScenes keyframe pickle ----------------------------------------------------------------
@pytest.fixture(scope="module")
def nus_pkl(real_data_dir):
    return next((real_data_dir / "nuscenes_keyframe").glob("*.pkl"))


def test_nuscenes_infos_sample(nus_pkl):
    ds = open_dataset(str(nus_pkl), CFG)
    assert isinstance(ds, NuScenesInfosDataset) and len(ds) == 1
    s = ds[0]
    info = pickle.loads(nus_pkl.read_bytes())["data_list"][0]
    f = s.frame
    assert f.camera_names == ["CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT"]
    assert f.images.shape == (6, 3, 90, 160) and 0.0 <= f.images.min() and f.images.max() <= 1.0
    assert s.context == {} and s.sample_id == info["token"]
    fx = info["images"]["CAM_FRONT"]["cam2img"][0][0]
    assert f.K[0, 0, 0].item() == pytest.approx(fx * 160 / 1600, rel=1e-5)
    assert f.K[0, 1, 1].item() == pytest.approx(fx * 90 / 900, rel=1e-5)
    assert np.allclose(f.T_world_ego.numpy(), np.asarray(info["ego2global"]), atol=1e-3)
    assert f.timestamp == pytest.approx(info["timestamp"])
    # folded extrinsics: the camera in the LiDAR-time ego frame, near but not equal to cam2ego
    for n, name in enumerate(f.camera_names):
        static = np.asarray(info["images"][name]["cam2ego"])
        diff = np.linalg.norm(f.T_ego_cam[n, :3, 3].numpy() - static[:3, 3])
        assert diff < 0.5
    # sparse LiDAR depth at the network resolution
    d = s.gt.depth
    assert d.shape == (6, 90, 160)
    for n in range(6):
        valid = d[n][d[n] > 0]
        assert len(valid) > 300, f.camera_names[n]
        assert 1.0 <= valid.min() and valid.max() <= CFG.gt_depth_max
        assert 3.0 < valid.median() < 40.0
    batch = collate_samples([s, s])
    assert batch.frame.images.shape == (2, 6, 3, 90, 160) and batch.gt.depth.shape == (2, 6, 90, 160)


def test_nuscenes_infos_camera_subset_and_no_gt(nus_pkl):
    s = NuScenesInfosDataset(nus_pkl, DataConfig(image_height=45, image_width=80, cameras=["CAM_BACK", "CAM_FRONT"], load_gt=False))[0]
    assert s.frame.camera_names == ["CAM_BACK", "CAM_FRONT"] and s.gt is None
    # CAM_BACK looks backwards: its optical axis in the ego frame points to -x
    assert s.frame.T_ego_cam[0, 0, 2] < -0.99 and s.frame.T_ego_cam[1, 0, 2] > 0.99


# ---- DDAD ------------------------------------------------------------------------------------
def test_ddad_scene02(real_data_dir):
    root = real_data_dir / "ddad_dgp"
    ds = open_dataset(str(root), DataConfig(image_height=76, image_width=121, scenes=["scene_02"]))
    assert isinstance(ds, DDADDataset)
    assert len(ds) == 1  # 3 frames: only the middle has both neighbours
    s = ds[0]
    f = s.frame
    assert f.camera_names == ["CAMERA_01", "CAMERA_05", "CAMERA_06", "CAMERA_07", "CAMERA_08", "CAMERA_09"]
    assert f.images.shape == (6, 3, 76, 121)
    assert sorted(s.context) == [-1, 1]
    # file-name stamps (1e-7 s): 10 Hz
    assert f.timestamp == pytest.approx(15616458251018358e-7)
    assert s.context[-1].timestamp == pytest.approx(15616458250027900e-7)
    assert s.context[1].timestamp - f.timestamp == pytest.approx(0.101, abs=0.005)
    # T_world_cam reproduces each camera datum's world pose exactly
    scene = json.loads(next((root / "scene_02").glob("scene_*.json")).read_text())
    data = {d["key"]: d for d in scene["data"]}
    datums = {data[k]["id"]["name"]: data[k]["datum"] for k in scene["samples"][1]["datum_keys"]}
    for n, name in enumerate(f.camera_names):
        p = datums[name]["image"]["pose"]
        T = make_transform([p["rotation"][k] for k in ("qw", "qx", "qy", "qz")], [p["translation"][k] for k in "xyz"])
        assert np.allclose(f.T_world_cam[n].double().numpy(), T, atol=2e-2), name  # float32 at 2 km from origin
    # ego frame = FLU vehicle frame: the front camera looks along +x, the rear one along -x
    assert f.T_ego_cam[0, 0, 2] > 0.99 and f.T_ego_cam[5, 0, 2] < -0.99
    # the car drives ~1.26 m between frames
    step = (s.context[1].T_world_ego[:3, 3] - f.T_world_ego[:3, 3]).norm().item()
    assert 1.0 < step < 1.5
    rel = invert_transform(f.T_world_ego.double()) @ s.context[1].T_world_ego.double()
    assert rel[0, 3] > 1.0  # forward along ego x
    d = s.gt.depth
    assert d.shape == (6, 76, 121)
    assert all((d[n] > 0).sum() > 300 for n in range(6))


def test_ddad_all_scenes_and_split(real_data_dir):
    ds = DDADDataset(real_data_dir / "ddad_dgp" / "scene_dataset_v1.0.json", DataConfig(image_height=38, image_width=60, load_gt=False), "val")
    assert [it[3] for it in ds.items] == ["scene_01/1", "scene_02/1"]
    assert ds[0].frame.camera_names == ["CAMERA_01", "CAMERA_05", "CAMERA_06"]  # scene_01 has 3 cameras
    # without require_context every frame is an input
    ds = DDADDataset(real_data_dir / "ddad_dgp", DataConfig(image_height=38, image_width=60, load_gt=False, require_context=False, scenes=["scene_02"]))
    assert len(ds) == 3 and sorted(ds[0].context) == [1] and sorted(ds[2].context) == [-1]


# ---- KITTI odometry --------------------------------------------------------------------------
def test_kitti_odometry_stereo(real_data_dir):
    root = real_data_dir / "kitti_odometry" / "dataset"
    assert detect_layout(root) == "kitti_odometry" and detect_layout(root.parent) == "kitti_odometry"
    ds = open_dataset(str(root), DataConfig(image_height=64, image_width=208, cameras=["image_0", "image_1"]))
    assert isinstance(ds, KittiOdometryDataset)
    assert len(ds) == 9  # frames 1..9 have both neighbours
    s = ds[0]
    f = s.frame
    assert s.sample_id == "00/000001" and sorted(s.context) == [-1, 1]
    assert f.images.shape == (2, 3, 64, 208)
    assert torch.equal(f.images[0, 0], f.images[0, 1])  # grayscale replicated
    assert f.K[0, 0, 0].item() == pytest.approx(718.856 * 208 / 1241, rel=1e-5)
    # stereo baseline: image_1 is 0.537 m to the right (-y in FLU) of image_0
    base = (f.T_ego_cam[1, :3, 3] - f.T_ego_cam[0, :3, 3]).numpy()
    assert np.allclose(base, [0.0, -386.1448 / 718.856, 0.0], atol=6e-3)  # Tr tilts it by ~0.5 deg
    assert np.linalg.norm(base) == pytest.approx(386.1448 / 718.856, abs=1e-4)
    # cameras look forward (+x of the Velodyne frame), image rows point down (-z)
    assert f.T_ego_cam[0, 0, 2] > 0.99 and f.T_ego_cam[0, 2, 1] < -0.99
    # world = first ego frame; the car drives forward ~0.86 m per frame
    first = KittiOdometryDataset(root, DataConfig(image_height=64, image_width=208, require_context=False))
    assert torch.allclose(first[0].frame.T_world_ego, torch.eye(4), atol=1e-5)
    assert s.context[1].T_world_ego[0, 3] - f.T_world_ego[0, 3] == pytest.approx(0.857, abs=0.02)
    assert abs(f.T_world_ego[2, 3].item()) < 0.1  # height stays (z up)
    assert s.context[1].timestamp - f.timestamp == pytest.approx(0.1037, abs=1e-3)
    assert s.gt.depth.shape == (2, 64, 208)  # no velodyne scans in the snippet: stereo depth of image_0/image_1
    assert (s.gt.depth[0] > 0).float().mean() > 0.5 and not s.gt.depth[1].any()  # image_1 has no partner
    lidar_only = open_dataset(str(root), DataConfig(image_height=64, image_width=208, gt_depth_source="lidar"))
    assert lidar_only[0].gt is None


def test_kitti_default_camera_and_split(real_data_dir):
    root = real_data_dir / "kitti_odometry" / "dataset"
    ds = KittiOdometryDataset(root / "sequences" / "00", DataConfig(image_height=32, image_width=104))
    assert ds[0].frame.camera_names == ["image_0"]  # no image_2 in the snippet
    # a root with one sequence (a user's own drive) is that sequence for every split
    for split in ("train", "val", "test", "all"):
        assert KittiOdometryDataset(root, DataConfig(load_gt=False), split=split).sequences[0].name == "00"


def test_kitti_split_with_several_sequences(real_data_dir, tmp_path):
    src = real_data_dir / "kitti_odometry" / "dataset"
    (tmp_path / "sequences").mkdir()
    (tmp_path / "poses").mkdir()
    for name in ("00", "01"):
        (tmp_path / "sequences" / name).symlink_to(src / "sequences" / "00")
        (tmp_path / "poses" / f"{name}.txt").symlink_to(src / "poses" / "00.txt")
    cfg = DataConfig(load_gt=False)
    assert [s.name for s in KittiOdometryDataset(tmp_path, cfg, split="train").sequences] == ["00", "01"]
    assert [s.name for s in KittiOdometryDataset(tmp_path, cfg, split="all").sequences] == ["00", "01"]
    with pytest.raises(FileNotFoundError, match="08.*on disk: \\['00', '01'\\]"):
        KittiOdometryDataset(tmp_path, cfg, split="val")
    with pytest.raises(ValueError, match="unknown split"):
        KittiOdometryDataset(tmp_path, cfg, split="dev")


def test_dataloader_with_workers(real_data_dir):
    """Readers are picklable and batch through a multi-process DataLoader."""
    from torch.utils.data import DataLoader

    ds = KittiOdometryDataset(real_data_dir / "kitti_odometry" / "dataset", DataConfig(image_height=32, image_width=104))
    loader = DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate_samples)
    batches = list(loader)
    assert len(batches) == 3
    assert batches[0].frame.images.shape == (3, 1, 3, 32, 104) and batches[0].context[1].T_world_ego.shape == (3, 4, 4)
    assert batches[0].sample_id == "00/000001,00/000002,00/000003"
