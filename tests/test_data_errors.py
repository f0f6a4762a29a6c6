"""Bad input: every reader names the file and the field. Plus open_dataset's layout detection."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
import torch

from selfocc_core.data.config import DataConfig
from selfocc_core.data.ddad import DDADDataset
from selfocc_core.data.kitti import KittiOdometryDataset
from selfocc_core.data.nuscenes_infos import NuScenesInfosDataset
from selfocc_core.data.open import LAYOUTS, detect_layout, open_dataset, parse_spec_options

SMALL = DataConfig(image_height=16, image_width=24)


# ---- KITTI odometry --------------------------------------------------------------------------
@pytest.fixture
def kitti_copy(real_data_dir, tmp_path):
    src = real_data_dir / "kitti_odometry" / "dataset"
    dst = tmp_path / "dataset"
    (dst / "sequences" / "00").mkdir(parents=True)
    (dst / "poses").mkdir()
    for name in ("calib.txt", "times.txt"):
        shutil.copy(src / "sequences" / "00" / name, dst / "sequences" / "00" / name)
    shutil.copy(src / "poses" / "00.txt", dst / "poses" / "00.txt")
    shutil.copytree(src / "sequences" / "00" / "image_0", dst / "sequences" / "00" / "image_0")
    return dst


def test_kitti_odometry_errors(kitti_copy):
    seq = kitti_copy / "sequences" / "00"
    with pytest.raises(ValueError, match="camera 'image_5' has no field 'P5'.*calib.txt"):
        KittiOdometryDataset(kitti_copy, DataConfig(cameras=["image_5"]))
    with pytest.raises(ValueError, match="'cam0' is not one of"):
        KittiOdometryDataset(kitti_copy, DataConfig(cameras=["cam0"]))
    # a missing image is named when the frame is loaded
    (seq / "image_0" / "000005.png").unlink()
    ds = KittiOdometryDataset(kitti_copy, SMALL)
    with pytest.raises(FileNotFoundError, match="image_0/000005.png"):
        ds[4]
    # an unreadable image
    (seq / "image_0" / "000005.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ValueError, match="000005.png"):
        ds[4]
    # inconsistent sizes: 10 poses for 11 timestamps
    lines = (kitti_copy / "poses" / "00.txt").read_text().splitlines()
    (kitti_copy / "poses" / "00.txt").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ValueError, match="00.txt has 10 poses but .*times.txt has 11"):
        KittiOdometryDataset(kitti_copy, SMALL)
    # NaN pose: file and line
    lines[3] = " ".join(["nan"] + lines[3].split()[1:])
    (kitti_copy / "poses" / "00.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="00.txt:4: pose contains NaN"):
        KittiOdometryDataset(kitti_copy, SMALL)
    # a pose with 11 numbers
    lines[3] = " ".join(lines[2].split()[:11])
    (kitti_copy / "poses" / "00.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="00.txt:4: a pose needs 12 numbers"):
        KittiOdometryDataset(kitti_copy, SMALL)
    # truncated calibration field
    calib = (seq / "calib.txt").read_text().replace("P0: 7.188560000000e+02 ", "P0: ")
    (seq / "calib.txt").write_text(calib)
    with pytest.raises(ValueError, match="calib.txt: field 'P0' must have 12 numbers"):
        KittiOdometryDataset(kitti_copy, SMALL)
    (seq / "calib.txt").unlink()
    with pytest.raises(FileNotFoundError, match="calib.txt"):
        KittiOdometryDataset(kitti_copy, SMALL)
    with pytest.raises(FileNotFoundError, match="sequence folder not found.*07"):
        KittiOdometryDataset(kitti_copy, DataConfig(scenes=["07"]))


# ---- DDAD ------------------------------------------------------------------------------------
@pytest.fixture
def ddad_jsons(real_data_dir, tmp_path):
    """scene_02's json files only (no images / LiDAR)."""
    src = real_data_dir / "ddad_dgp" / "scene_02"
    dst = tmp_path / "scene_02"
    (dst / "calibration").mkdir(parents=True)
    scene = next(src.glob("scene_*.json"))
    shutil.copy(scene, dst / scene.name)
    calib = next((src / "calibration").glob("*.json"))
    shutil.copy(calib, dst / "calibration" / calib.name)
    return dst / scene.name, dst / "calibration" / calib.name


def test_ddad_errors(ddad_jsons):
    scene_file, calib_file = ddad_jsons
    with pytest.raises(ValueError, match="calibration/.*json: camera 'CAMERA_99' not in calibration"):
        DDADDataset(scene_file, DataConfig(cameras=["CAMERA_99"]))
    # the json is fine but the images are missing: named at load time
    ds = DDADDataset(scene_file, SMALL)
    with pytest.raises(FileNotFoundError, match="rgb/CAMERA_01/15616458250936520.jpg"):
        ds[0]
    # NaN in a datum pose
    doc = json.loads(scene_file.read_text())
    good = json.dumps(doc)
    doc["data"][3]["datum"]["image"]["pose"]["rotation"]["qx"] = float("nan")
    scene_file.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"samples\[0\] CAMERA_06.pose: invalid quaternion"):
        DDADDataset(scene_file, SMALL)
    scene_file.write_text(good)
    # inconsistent calibration arrays
    calib = json.loads(calib_file.read_text())
    calib["intrinsics"] = calib["intrinsics"][:-1]
    calib_file.write_text(json.dumps(calib))
    with pytest.raises(ValueError, match="names/intrinsics/extrinsics have different lengths"):
        DDADDataset(scene_file, SMALL)
    calib_file.unlink()
    with pytest.raises(FileNotFoundError, match="calibration"):
        DDADDataset(scene_file, SMALL)
    scene_file.write_text("{ not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        DDADDataset(scene_file, SMALL)


# ---- nuScenes info pickle --------------------------------------------------------------------
@pytest.fixture
def nus_entry(real_data_dir):
    pkl = next((real_data_dir / "nuscenes_keyframe").glob("*.pkl"))
    return pkl, pickle.loads(pkl.read_bytes())


def _write(tmp_path, infos):
    p = tmp_path / "infos.pkl"
    p.write_bytes(pickle.dumps(infos))
    return p


def test_nuscenes_infos_errors(nus_entry, tmp_path):
    pkl, infos = nus_entry
    root = pkl.parent
    with pytest.raises(ValueError, match="camera 'CAM_LEFT' not in images"):
        NuScenesInfosDataset(pkl, DataConfig(cameras=["CAM_LEFT"]))[0]
    bad = pickle.loads(pickle.dumps(infos))
    del bad["data_list"][0]["images"]["CAM_BACK"]["lidar2cam"]
    with pytest.raises(ValueError, match=r"infos.pkl data_list\[0\].images.CAM_BACK: missing field 'lidar2cam'"):
        NuScenesInfosDataset(_write(tmp_path, bad), SMALL, data_root=root)[0]
    bad = pickle.loads(pickle.dumps(infos))
    bad["data_list"][0]["images"]["CAM_FRONT"]["cam2img"] = [[1.0, 0.0], [0.0, 1.0]]
    with pytest.raises(ValueError, match="CAM_FRONT: field 'cam2img' must have shape"):
        NuScenesInfosDataset(_write(tmp_path, bad), SMALL, data_root=root)[0]
    bad = pickle.loads(pickle.dumps(infos))
    bad["data_list"][0]["ego2global"][0][3] = float("nan")
    with pytest.raises(ValueError, match="field 'ego2global' contains NaN"):
        NuScenesInfosDataset(_write(tmp_path, bad), SMALL, data_root=root)[0]
    # without data_root the files are looked up beside the (copied) pickle: not there
    with pytest.raises(FileNotFoundError, match="CAM_FRONT file .*CAM_FRONT__1532402927612460.jpg"):
        NuScenesInfosDataset(_write(tmp_path, infos), SMALL)[0]
    # LiDAR file with a broken size
    (tmp_path / "data").mkdir()
    for f in root.iterdir():
        if f.suffix == ".jpg":
            (tmp_path / "data" / f.name).symlink_to(f)
    name = infos["data_list"][0]["lidar_points"]["lidar_path"]
    (tmp_path / "data" / name).write_bytes(np.zeros(7, np.float32).tobytes())
    with pytest.raises(ValueError, match="pcd.bin: 7 floats is not a multiple of 5"):
        NuScenesInfosDataset(_write(tmp_path, infos), SMALL, data_root=tmp_path / "data")[0]
    (tmp_path / "x.pkl").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="x.pkl: not a readable pickle"):
        NuScenesInfosDataset(tmp_path / "x.pkl", SMALL)
    (tmp_path / "y.pkl").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ValueError, match="y.pkl: expected a dict with 'data_list'"):
        NuScenesInfosDataset(tmp_path / "y.pkl", SMALL)


# ---- open_dataset ----------------------------------------------------------------------------
def test_detect_layouts(real_data_dir, tmp_path):
    assert detect_layout(real_data_dir / "ddad_dgp") == "ddad"
    assert detect_layout(next((real_data_dir / "ddad_dgp" / "scene_02").glob("scene_*.json"))) == "ddad"
    assert detect_layout(next((real_data_dir / "nuscenes_keyframe").glob("*.pkl"))) == "nuscenes_infos"
    assert detect_layout(real_data_dir / "kitti_odometry" / "dataset" / "sequences" / "00") == "kitti_odometry"
    assert detect_layout("synthetic") == detect_layout("synthetic:seed=3,frames=20") == "synthetic"
    (tmp_path / "bag").mkdir()
    (tmp_path / "bag" / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    assert detect_layout(tmp_path / "bag") == "rosbag"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError) as e:
        open_dataset(str(tmp_path / "empty"), SMALL)
    msg = str(e.value)
    assert "empty" in msg and all(desc in msg for _, desc in LAYOUTS)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_dataset(str(tmp_path / "nowhere"), SMALL)


def test_spec_options_and_synthetic():
    assert parse_spec_options("synthetic:seed=3,frames=20,rig=kitti,speed=2.5,with_gt=false") == {
        "seed": 3, "frames": 20, "rig": "kitti", "speed": 2.5, "with_gt": False}
    with pytest.raises(ValueError, match="key=value"):
        parse_spec_options("synthetic:seed")
    from selfocc_core.data.synthetic import SyntheticDataset

    cfg = DataConfig(image_height=24, image_width=40, cameras=["CAM_FRONT"], context_offsets=[-1, 1])
    ds = open_dataset("synthetic:seed=3,frames=6", cfg)  # construction renders nothing
    assert isinstance(ds, SyntheticDataset)
    assert (ds.cfg.seed, ds.cfg.num_frames, ds.cfg.image_height, ds.cfg.cameras) == (3, 6, 24, ["CAM_FRONT"])
    assert len(ds) == 4  # require_context: the two ends are dropped
    assert open_dataset("synthetic:seed=3,frames=6", cfg, "val").cfg.seed == 1003  # held-out drive
    with pytest.raises(ValueError, match="unknown key"):
        open_dataset("synthetic:sed=3", cfg)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("field", ["K", "T_ego_cam", "T_world_ego"])
def test_frame_refuses_non_finite_geometry_naming_the_field(field, dtype):
    from selfocc_core.data.sample import Frame

    geometry = {"K": torch.eye(3).repeat(2, 1, 1), "T_ego_cam": torch.eye(4).repeat(2, 1, 1), "T_world_ego": torch.eye(4)}
    geometry = {k: v.to(dtype) for k, v in geometry.items()}
    Frame(images=torch.rand(2, 3, 8, 8), timestamp=0.0, camera_names=["a", "b"], **geometry)  # finite: accepted
    geometry[field] = geometry[field].clone()
    geometry[field].view(-1)[3] = float("nan") if dtype != torch.float64 else float("inf")
    with pytest.raises(ValueError, match=f"Frame.{field} contains NaN or Inf"):
        Frame(images=torch.rand(2, 3, 8, 8), timestamp=0.0, camera_names=["a", "b"], **geometry)
