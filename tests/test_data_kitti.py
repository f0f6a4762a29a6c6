"""KITTI readers against the KITTI devkit's projection formulas; KITTI raw on a generated drive."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from selfocc_core.data.config import DataConfig
from selfocc_core.data.kitti import KittiOdometryDataset, KittiRawDataset, oxts_poses, read_calib_file
from selfocc_core.data.open import detect_layout, open_dataset
from selfocc_core.geometry import invert_transform, project, transform_points


def devkit_check(K, T_ego_cam, P, T_cam0_velo):
    """Our K / T_ego_cam project Velodyne points like the devkit's ``P @ T_cam0_velo @ x``."""
    rng = np.random.default_rng(0)
    x = np.c_[rng.uniform(5, 40, 50), rng.uniform(-10, 10, 50), rng.uniform(-2, 2, 50)]
    y = (P @ T_cam0_velo @ np.c_[x, np.ones(50)].T).T
    uv_ref = y[:, :2] / y[:, 2:]
    p_cam = transform_points(invert_transform(torch.as_tensor(T_ego_cam)), torch.as_tensor(x))
    uv, _ = project(p_cam, torch.as_tensor(K))
    assert np.allclose(uv.numpy(), uv_ref, atol=1e-6)


def test_odometry_matches_devkit_projection(real_data_dir):
    root = real_data_dir / "kitti_odometry" / "dataset"
    calib = read_calib_file(root / "sequences" / "00" / "calib.txt")
    Tr = np.vstack([calib["Tr"].reshape(3, 4), [0, 0, 0, 1]])
    ds = KittiOdometryDataset(root, DataConfig(cameras=["image_0", "image_1", "image_2", "image_3"], require_context=False))
    seq = ds.sequences[0]
    for c in seq.cameras:
        devkit_check(seq.K[c], seq.T_ego_cam[c], calib[f"P{c[-1]}"].reshape(3, 4), Tr)


def test_odometry_poses_in_ego_frame(real_data_dir):
    """T_world_ego re-expresses the official camera-0 poses: camera 0 in the world is the same."""
    root = real_data_dir / "kitti_odometry" / "dataset"
    seq = KittiOdometryDataset(root, DataConfig(require_context=False)).sequences[0]
    poses = np.loadtxt(root / "poses" / "00.txt").reshape(-1, 3, 4)
    T_ego_cam0 = seq.T_ego_cam["image_0"]
    for i in (0, 5, 10):
        T_world_cam0 = seq.T_world_ego[i] @ T_ego_cam0
        # world = ego frame of frame 0 = T_ego_cam0 @ (the official cam-0 world)
        assert np.allclose(T_world_cam0[:3], (T_ego_cam0 @ np.vstack([poses[i], [0, 0, 0, 1]]))[:3], atol=1e-9)


# ---- KITTI raw (generated drive in the official layout) -------------------------------------
VELO_R = [7.533745e-03, -9.999714e-01, -6.166020e-04, 1.480249e-02, 7.280733e-04, -9.998902e-01,
          9.998621e-01, 7.523790e-03, 1.480755e-02]
VELO_T = [-4.069766e-03, -7.631618e-02, -2.717806e-01]
R_RECT = [9.999239e-01, 9.837760e-03, -7.445048e-03, -9.869795e-03, 9.999421e-01, -4.278459e-03,
          7.402527e-03, 4.351614e-03, 9.999631e-01]
P_RECT_02 = [7.215377e+02, 0, 6.095593e+02, 4.485728e+01, 0, 7.215377e+02, 1.728540e+02, 2.163791e-01, 0, 0, 1, 2.745884e-03]
P_RECT_00 = [7.215377e+02, 0, 6.095593e+02, 0, 0, 7.215377e+02, 1.728540e+02, 0, 0, 0, 1, 0]
IMU_T = [-8.086759e-01, 3.195559e-01, -7.997231e-01]
LAT0 = 49.0
ER = 6378137.0


def fmt(vals):
    return " ".join(f"{v:.6e}" for v in vals)


def write_raw_drive(root, n=5, yaw_at=None):
    date = root / "2011_09_26"
    drive = date / "2011_09_26_drive_0001_sync"
    (date).mkdir(parents=True)
    (date / "calib_cam_to_cam.txt").write_text(
        "calib_time: 09-Jan-2012 13:57:47\ncorner_dist: 9.950000e-02\n"
        f"R_rect_00: {fmt(R_RECT)}\nP_rect_00: {fmt(P_RECT_00)}\nP_rect_02: {fmt(P_RECT_02)}\n")
    (date / "calib_velo_to_cam.txt").write_text(f"calib_time: 15-Mar-2012 11:37:16\nR: {fmt(VELO_R)}\nT: {fmt(VELO_T)}\n")
    (date / "calib_imu_to_velo.txt").write_text(f"calib_time: 25-May-2012 16:47:16\nR: {fmt(np.eye(3).ravel())}\nT: {fmt(IMU_T)}\n")
    rng = np.random.default_rng(1)
    for cam in ("image_00", "image_02"):
        (drive / cam / "data").mkdir(parents=True)
        stamps = []
        for i in range(n):
            img = np.zeros((375, 1242, 3), np.uint8)  # the size P_rect belongs to; flat = fast to write
            img[:, :, 0] = 40 * i
            Image.fromarray(img).save(drive / cam / "data" / f"{i:010d}.png")
            stamps.append(f"2011-09-26 13:02:{25 + i * 0.1:012.9f}")
        (drive / cam / "timestamps.txt").write_text("\n".join(stamps) + "\n")
    (drive / "oxts" / "data").mkdir(parents=True)
    scale = math.cos(math.radians(LAT0))
    lon0 = 8.4
    for i in range(n):
        lon = lon0 + math.degrees(1.0 * i / (scale * ER))  # 1 m east per frame
        yaw = math.pi / 2 if yaw_at is not None and i >= yaw_at else 0.0
        vals = [LAT0, lon, 110.0, 0.0, 0.0, yaw] + [0.0] * 24
        (drive / "oxts" / "data" / f"{i:010d}.txt").write_text(" ".join(map(str, vals)) + "\n")
    (drive / "velodyne_points" / "data").mkdir(parents=True)
    for i in range(n):
        # a wall 12 m ahead of the Velodyne
        pts = np.c_[np.full(400, 12.0), rng.uniform(-4, 4, 400), rng.uniform(-1.5, 1.0, 400), np.zeros(400)].astype(np.float32)
        pts.tofile(drive / "velodyne_points" / "data" / f"{i:010d}.bin")
    return date, drive


def test_raw_drive_poses_calibration_and_depth(tmp_path):
    date, drive = write_raw_drive(tmp_path)
    assert detect_layout(tmp_path) == "kitti_raw" and detect_layout(date) == "kitti_raw"
    ds = open_dataset(str(tmp_path), DataConfig(image_height=30, image_width=100))
    assert isinstance(ds, KittiRawDataset) and len(ds) == 3
    seq = ds.sequences[0]
    # timestamps from the raw text format, 0.1 s apart
    assert np.allclose(np.diff(seq.timestamps), 0.1, atol=1e-6)
    # devkit: y = P_rect_02 @ R_rect_00 @ Tr_velo_to_cam @ x
    R_rect = np.eye(4)
    R_rect[:3, :3] = np.reshape(R_RECT, (3, 3))
    Tv = np.eye(4)
    Tv[:3, :3] = np.reshape(VELO_R, (3, 3))
    Tv[:3, 3] = VELO_T
    devkit_check(seq.K["image_02"], seq.T_ego_cam["image_02"], np.reshape(P_RECT_02, (3, 4)), R_rect @ Tv)
    # 1 m per frame along the Velodyne's x (OXTS yaw 0 = east, IMU and Velodyne axes aligned)
    assert np.allclose(seq.T_world_ego[:, :3, 3], np.c_[np.arange(5.0), np.zeros(5), np.zeros(5)], atol=1e-3)
    s = ds[0]
    assert s.sample_id == "2011_09_26_drive_0001_sync/000001" and sorted(s.context) == [-1, 1]
    assert s.frame.images.shape == (1, 3, 30, 100) and s.frame.camera_names == ["image_02"]
    # GT depth of the wall: 12 m ahead of the Velodyne, camera 2 sits ~0.27 m ahead of it
    d = s.gt.depth[0][s.gt.depth[0] > 0]
    cam_x = seq.T_ego_cam["image_02"][0, 3]
    assert len(d) > 20 and torch.allclose(d, torch.full_like(d, 12.0 - cam_x), atol=0.1)


def test_oxts_yaw_turns_the_ego(tmp_path):
    _, drive = write_raw_drive(tmp_path, yaw_at=3)
    seq = KittiRawDataset(drive, DataConfig(require_context=False)).sequences[0]
    R = seq.T_world_ego[3, :3, :3]
    assert np.allclose(R, [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-9)  # 90 deg left
    # the IMU moved 3 m east; the Velodyne is offset from it, so it swings with the turn
    T_velo_imu = np.eye(4)
    T_velo_imu[:3, 3] = IMU_T
    imu3 = np.eye(4)
    imu3[:3, :3] = R
    imu3[:3, 3] = [3.0, 0, 0]
    expected = T_velo_imu @ imu3 @ invert_transform(T_velo_imu)  # first velo frame = world
    assert np.allclose(seq.T_world_ego[3], expected, atol=1e-3)


def test_oxts_poses_mercator_hand_values():
    lat, lon = 49.0, 8.4
    T = oxts_poses(np.array([[lat, lon, 100.0, 0.0, 0.0, 0.0], [lat, lon, 101.0, 0.0, 0.0, math.pi]]))
    scale = math.cos(math.radians(lat))
    assert T[0, 0, 3] == pytest.approx(scale * lon * math.pi * ER / 180)
    assert T[0, 1, 3] == pytest.approx(scale * ER * math.log(math.tan(math.radians(90 + lat) / 2)))
    assert T[1, 2, 3] == 101.0 and np.allclose(T[1, :3, :3], np.diag([-1, -1, 1]), atol=1e-12)


def test_raw_errors(tmp_path):
    date, drive = write_raw_drive(tmp_path)
    with pytest.raises(ValueError, match="image_07"):
        KittiRawDataset(tmp_path, DataConfig(cameras=["image_07"]))
    with pytest.raises(ValueError, match="P_rect_01"):
        KittiRawDataset(tmp_path, DataConfig(cameras=["image_01"]))
    (drive / "oxts" / "data" / "0000000004.txt").unlink()
    with pytest.raises(ValueError, match="4 OXTS files"):
        KittiRawDataset(tmp_path, DataConfig())
    (drive / "oxts" / "data" / "0000000004.txt").write_text("nan 8.4 100 0 0 0\n")
    with pytest.raises(ValueError, match="0000000004.txt: need finite"):
        KittiRawDataset(tmp_path, DataConfig())
    (date / "calib_velo_to_cam.txt").write_text("R: 1 0 0 0 1 0 0 0 1\n")
    with pytest.raises(ValueError, match="calib_velo_to_cam.txt: missing field 'T'"):
        KittiRawDataset(tmp_path, DataConfig())
    with pytest.raises(FileNotFoundError, match="drive_0002"):
        KittiRawDataset(tmp_path, DataConfig(scenes=["2011_09_26_drive_0002_sync"]))


def test_semantickitti_voxel_labels(real_data_dir, tmp_path):
    """SSC labels (uint16 raw ids + bit-packed .invalid) -> Occ3D ids and masks on SEMANTIC_KITTI."""
    import shutil

    from selfocc_core.geometry import SEMANTIC_KITTI

    src = real_data_dir / "kitti_odometry" / "dataset"
    root = tmp_path / "dataset"
    shutil.copytree(src / "poses", root / "poses")
    shutil.copytree(src / "sequences" / "00", root / "sequences" / "00")
    vox = root / "sequences" / "00" / "voxels"
    vox.mkdir()
    raw = np.zeros((256, 256, 32), np.uint16)
    raw[50, 128, 10] = 10  # car
    raw[0, 0, 0] = 40  # road
    raw[1, 2, 3] = 1  # outlier: ignored
    raw[5, 5, 5] = 252  # moving car
    raw.tofile(vox / "000005.label")
    invalid = np.zeros((256, 256, 32), bool)
    invalid[255, 255, 31] = invalid[50, 128, 11] = True
    np.packbits(invalid.ravel()).tofile(vox / "000005.invalid")
    ds = KittiOdometryDataset(root, DataConfig(image_height=32, image_width=104, gt_depth_source="lidar"))
    assert [ds.items[k][1] for k in ds.labelled_indices()] == [5]
    gt = ds[ds.labelled_indices()[0]].gt
    sem = gt.occ_semantics
    assert gt.grid == SEMANTIC_KITTI and sem.shape == (256, 256, 32) and sem.dtype == torch.uint8
    assert (sem[50, 128, 10], sem[0, 0, 0], sem[5, 5, 5], sem[10, 10, 10]) == (4, 11, 4, 17)
    m = gt.occ_mask_camera
    assert not m[255, 255, 31] and not m[50, 128, 11] and not m[1, 2, 3] and m[50, 128, 10]
    assert int((~m).sum()) == 3
    # the car voxel sits 10.1 m ahead of the Velodyne, on its x axis
    centre = SEMANTIC_KITTI.index_to_metric(torch.tensor([50, 128, 10]))
    assert torch.allclose(centre, torch.tensor([10.1, 0.1, 0.1]), atol=1e-5)
    assert ds[0].gt is None  # frames without labels or scans carry no GT (no stereo: LiDAR only asked for)
    (vox / "000005.label").write_bytes(b"\0" * 10)
    with pytest.raises(ValueError, match="000005.label: 5 labels"):
        ds[ds.labelled_indices()[0]]
