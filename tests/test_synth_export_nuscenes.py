"""The nuScenes export loads with the REAL nuscenes-devkit and round-trips calibration, poses,
images and the Occ3D-style labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from nuscenes.nuscenes import NuScenes
from nuscenes.utils.data_classes import LidarPointCloud
from PIL import Image
from pyquaternion import Quaternion

from selfocc_core.classes import CLASS_ID
from selfocc_core.synth import export_nuscenes as exn
from selfocc_core.synth.rigs import NUSCENES_CAMERAS
from selfocc_core.synth.sequence import SyntheticSequence

H, W = 54, 96


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("nus") / "synth_nus"
    exn.export_nuscenes(out, seeds=[5], num_keyframes=2, height=H, width=W)
    yield out
    torch.set_num_threads(threads)


def test_devkit_loads_export(export):
    assert exn.is_complete(export)
    assert not export.with_name(export.name + ".partial").exists()
    nusc = NuScenes(version="v1.0-synth", dataroot=str(export), verbose=False)
    assert [s["name"] for s in nusc.scene] == ["synth-0005"]
    scene = nusc.scene[0]
    first = nusc.get("sample", scene["first_sample_token"])
    second = nusc.get("sample", first["next"])
    assert second["token"] == scene["last_sample_token"] and scene["nbr_samples"] == 2
    assert set(first["data"]) == set(NUSCENES_CAMERAS) | {"LIDAR_TOP"}
    # 2 Hz keyframes with 5 sweeps in between per camera
    sd = nusc.get("sample_data", first["data"]["CAM_FRONT"])
    chain = [sd]
    while chain[-1]["next"]:
        chain.append(nusc.get("sample_data", chain[-1]["next"]))
    assert [c["is_key_frame"] for c in chain] == [True] + [False] * 5 + [True]
    assert all(c["filename"].startswith("sweeps/CAM_FRONT/") for c in chain[1:-1])
    dt = np.diff([c["timestamp"] for c in chain])
    assert np.allclose(dt, 1e6 / 12, atol=1)
    assert chain[-1]["token"] == second["data"]["CAM_FRONT"]
    assert (chain[-1]["timestamp"] - chain[0]["timestamp"]) == pytest.approx(0.5e6, abs=2)


def test_calibration_pose_and_image_round_trip(export):
    nusc = NuScenes(version="v1.0-synth", dataroot=str(export), verbose=False)
    seq = SyntheticSequence(5, 7)
    sample = nusc.get("sample", nusc.scene[0]["last_sample_token"])  # frame 6
    out = seq.render(6, H, W)
    for n, cam in enumerate(seq.rig.cameras):
        sd = nusc.get("sample_data", sample["data"][cam.name])
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        T = np.eye(4)
        T[:3, :3] = Quaternion(cs["rotation"]).rotation_matrix
        T[:3, 3] = cs["translation"]
        np.testing.assert_allclose(T, cam.T_ego_cam, atol=1e-6)
        # intrinsics: the native calibration scaled by 96/1600 and 54/900
        K = np.asarray(cs["camera_intrinsic"])
        assert K[0, 0] == pytest.approx(cam.K[0, 0] * W / 1600)
        assert K[1, 2] == pytest.approx((cam.K[1, 2] + 0.5) * H / 900 - 0.5)
        pose = nusc.get("ego_pose", sd["ego_pose_token"])
        T_world_ego = np.eye(4)
        T_world_ego[:3, :3] = Quaternion(pose["rotation"]).rotation_matrix
        T_world_ego[:3, 3] = pose["translation"]
        np.testing.assert_allclose(T_world_ego, seq.T_world_ego(6), atol=1e-6)
        img = np.asarray(Image.open(nusc.get_sample_data_path(sd["token"]))).astype(np.float32) / 255
        assert img.shape == (H, W, 3)
        ref = out.rgb[n].permute(1, 2, 0).numpy()
        assert np.abs(img - ref).mean() < 0.03  # JPEG


def test_lidar_and_occupancy_labels(export):
    nusc = NuScenes(version="v1.0-synth", dataroot=str(export), verbose=False)
    sample = nusc.get("sample", nusc.scene[0]["first_sample_token"])
    pc = LidarPointCloud.from_file(nusc.get_sample_data_path(sample["data"]["LIDAR_TOP"]))
    assert pc.points.shape[0] == 4 and pc.points.shape[1] > 10000
    # the road (z = 0) is 1.84 m below the LiDAR: the lowest dense band of points lies there
    z = pc.points[2]
    assert np.median(z[z < -1.0]) == pytest.approx(-1.84, abs=0.05)
    labels = np.load(export / "gts" / "synth-0005" / sample["token"] / "labels.npz")
    assert labels["semantics"].shape == (200, 200, 16) and labels["semantics"].dtype == np.uint8
    assert labels["mask_camera"].dtype == np.uint8 and labels["mask_lidar"].dtype == np.uint8
    gt = SyntheticSequence(5, 7).ground_truth(0)
    np.testing.assert_array_equal(labels["semantics"], gt.semantics.numpy())
    np.testing.assert_array_equal(labels["mask_camera"].astype(bool), gt.mask_camera.numpy())
    done = json.loads((export / exn.DONE_MARKER).read_text())
    assert done["format"] == "nuscenes" and done["seeds"] == [5]


def test_interrupted_export_is_not_complete(tmp_path, monkeypatch):
    out = tmp_path / "broken"
    calls = {"n": 0}
    real = exn.SyntheticSequence.render

    def crash_on_third(self, i, h, w):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated kill")
        return real(self, i, h, w)

    monkeypatch.setattr(exn.SyntheticSequence, "render", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        exn.export_nuscenes(out, seeds=[1], num_keyframes=2, height=18, width=32, with_lidar=False)
    assert not out.exists() and not exn.is_complete(out)
    assert (tmp_path / "broken.partial").is_dir()  # the half-written tree stays apart
    with pytest.raises(AssertionError, match="Database version not found"):
        NuScenes(version="v1.0-synth", dataroot=str(out), verbose=False)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="image size"):
        exn.export_nuscenes(tmp_path / "x", height=-1)
    with pytest.raises(ValueError, match="num_keyframes"):
        exn.export_nuscenes(tmp_path / "x", num_keyframes=0)
    (tmp_path / "exists").mkdir()
    with pytest.raises(FileExistsError, match="exists"):
        exn.export_nuscenes(tmp_path / "exists")


def test_box_annotations_project_onto_the_objects(export):
    from nuscenes.utils.geometry_utils import view_points

    nusc = NuScenes(version="v1.0-synth", dataroot=str(export), verbose=False)
    sample = nusc.get("sample", nusc.scene[0]["first_sample_token"])
    assert len(sample["anns"]) > 3
    ann = nusc.get("sample_annotation", sample["anns"][0])
    inst = nusc.get("instance", ann["instance_token"])
    assert inst["nbr_annotations"] >= 1 and ann["category_name"] in exn._CATEGORY_OF_CLASS.values()
    seq = SyntheticSequence(5, 7)
    out = seq.render(0, H, W)
    checked = 0
    for n, cam in enumerate(NUSCENES_CAMERAS):
        _, boxes, K = nusc.get_sample_data(sample["data"][cam])  # boxes in the camera frame
        # the nearest box in view: its centre projects onto that object in our rendering
        boxes = [b for b in boxes if b.center[2] > 1.0]
        if not boxes:
            continue
        box = min(boxes, key=lambda b: b.center[2])
        u, v = view_points(box.center[:, None], K, normalize=True)[:2, 0]
        if not (0 <= u < W and 0 <= v < H):
            continue
        want = CLASS_ID[{v: k for k, v in exn._CATEGORY_OF_CLASS.items()}[box.name]]
        assert out.semantics[n, int(v), int(u)].item() == want, (cam, box)
        checked += 1
    assert checked >= 2
