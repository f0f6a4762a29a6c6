"""KITTI odometry / SemanticKITTI export: files, calibration and pose round trip, voxel labels,
and a killed `selfocc synth` export that is not taken as complete."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from selfocc_core.classes import CLASS_ID
from selfocc_core.geometry.transforms import invert_transform, transform_points
from selfocc_core.synth import export_kitti as exk
from selfocc_core.synth.rigs import get_rig
from selfocc_core.synth.sequence import SyntheticSequence
from selfocc_core.synth.world import CYLINDER

H, W = 47, 155


def _read_calib(path):
    out = {}
    for line in path.read_text().splitlines():
        k, v = line.split(":", 1)
        out[k] = np.array([float(x) for x in v.split()]).reshape(3, 4)
    return out


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("kitti") / "synth_kitti"
    exk.export_kitti(out, seed=6, sequence="07", num_frames=6, height=H, width=W)
    yield out
    torch.set_num_threads(threads)


def test_layout_calib_and_poses_round_trip(export, real_data_dir):
    assert exk.is_complete(export)
    seq_dir = export / "sequences" / "07"
    assert sorted(p.name for p in (seq_dir / "image_2").iterdir()) == [f"{i:06d}.png" for i in range(6)]
    assert np.asarray(Image.open(seq_dir / "image_2" / "000003.png")).shape == (H, W, 3)
    times = np.loadtxt(seq_dir / "times.txt")
    np.testing.assert_allclose(times, np.arange(6) / 10.0)
    calib = _read_calib(seq_dir / "calib.txt")
    real = _read_calib(real_data_dir / "kitti_odometry" / "dataset" / "sequences" / "00" / "calib.txt")
    assert list(calib) == list(real) == ["P0", "P1", "P2", "P3", "Tr"]
    np.testing.assert_allclose(calib["Tr"], real["Tr"], atol=1e-12)
    sx, sy = W / 1241, H / 376
    assert calib["P2"][0, 0] == pytest.approx(real["P2"][0, 0] * sx)
    assert calib["P2"][1, 2] == pytest.approx((real["P2"][1, 2] + 0.5) * sy - 0.5)
    # the translation column maps like pixels: u' = sx * u + (sx - 1) / 2 (the third row is unchanged)
    assert calib["P2"][0, 3] == pytest.approx(real["P2"][0, 3] * sx + (0.5 * sx - 0.5) * real["P2"][2, 3])
    np.testing.assert_allclose(calib["P2"][2], real["P2"][2])
    # poses: cam0 -> world (cam0 of frame 0), 3x4 row-major, like the real poses file
    poses = np.loadtxt(export / "poses" / "07.txt").reshape(-1, 3, 4)
    assert poses.shape == (6, 3, 4)
    np.testing.assert_allclose(poses[0], np.eye(4)[:3], atol=1e-9)
    T_cam0_velo = np.vstack([calib["Tr"], [0, 0, 0, 1]])
    seq = SyntheticSequence(6, 6, "kitti", speed_mps=10.0, frame_rate_hz=10.0)
    for i in range(6):
        pose = np.vstack([poses[i], [0, 0, 0, 1]])
        T_rel_ego = np.linalg.inv(seq.T_world_ego(0)) @ seq.T_world_ego(i)  # ego(0) <- ego(i)
        np.testing.assert_allclose(np.linalg.inv(T_cam0_velo) @ pose @ T_cam0_velo, T_rel_ego, atol=1e-6)
    # driving forward along the camera z axis at 1 m per frame
    assert poses[5][2, 3] == pytest.approx(5.0, abs=0.05)
    # P2 and the rig's image_2 agree: projecting a velo point with P2 @ Tr == K @ inv(T_velo_cam2)
    p_velo = np.array([12.0, 1.5, -0.5, 1.0])
    uv_calib = calib["P2"] @ T_cam0_velo @ p_velo
    cam = get_rig("kitti").cameras[0]
    p_cam2 = np.linalg.inv(cam.T_ego_cam) @ p_velo
    uv_rig = cam.K_at(H, W, torch.float64).numpy() @ p_cam2[:3]
    np.testing.assert_allclose(uv_calib[:2] / uv_calib[2], uv_rig[:2] / uv_rig[2], atol=1e-6)


def test_voxels_and_velodyne(export):
    seq_dir = export / "sequences" / "07"
    assert sorted(p.name for p in (seq_dir / "voxels").iterdir()) == ["000000.invalid", "000000.label", "000005.invalid", "000005.label"]
    labels = np.fromfile(seq_dir / "voxels" / "000005.label", dtype=np.uint16).reshape(256, 256, 32)
    invalid = np.unpackbits(np.fromfile(seq_dir / "voxels" / "000005.invalid", dtype=np.uint8)).reshape(256, 256, 32)
    assert 0.05 < invalid.mean() < 0.99
    assert set(np.unique(labels)) <= set(exk.OCC3D_TO_SEMANTICKITTI.values())
    seq = SyntheticSequence(6, 6, "kitti", frame_rate_hz=10.0)
    grid = seq.rig.grid
    # the road 8 m ahead of the LiDAR (1.73 m below it) is "road" (40), the air above it empty (0)
    for xyz, kid in (((8.0, 0.0, -1.70), 40), ((8.0, 0.0, 1.5), 0)):
        ijk, ok = grid.metric_to_index(torch.tensor([xyz]))
        assert ok.item() and labels[tuple(ijk[0].tolist())] == kid
    # a voxel at the centre of a visible car body is "car" (10)
    T_ego_world = invert_transform(torch.tensor(seq.T_world_ego(5), dtype=torch.float32))
    prims = seq.world.prims.at(seq.time(5))
    found = 0
    for i in torch.nonzero((prims.label == CLASS_ID["car"]) & (prims.kind != CYLINDER)).squeeze(-1).tolist():
        if prims.half[i, 2] < 0.3:
            continue  # the thin under-body box
        ijk, ok = grid.metric_to_index(transform_points(T_ego_world, prims.center[i][None]))
        if ok.item():
            assert labels[tuple(ijk[0].tolist())] == 10
            found += 1
    assert found >= 1
    scan = np.fromfile(seq_dir / "velodyne" / "000000.bin", dtype=np.float32).reshape(-1, 4)
    assert scan.shape[0] > 20000
    near = scan[np.hypot(scan[:, 0], scan[:, 1]) < 12]
    assert np.median(near[near[:, 2] < -1.0, 2]) == pytest.approx(-1.73, abs=0.03)


def test_killed_cli_export_is_not_complete(tmp_path):
    out = tmp_path / "k"
    cmd = [sys.executable, "-m", "selfocc_core.cli", "synth", "--out", str(out), "--format", "kitti",
           "--frames", "200", "--height", "30", "--width", "100", "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    partial = tmp_path / "k.partial" / "sequences" / "00" / "image_2"
    deadline = time.time() + 120
    while time.time() < deadline and not (partial.is_dir() and len(os.listdir(partial)) >= 2):
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.2)
    assert partial.is_dir(), "export did not start writing in time"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists() and not exk.is_complete(out)
    # a new export replaces the stale partial tree and completes
    exk.export_kitti(out, num_frames=2, height=20, width=66, with_velodyne=False, voxel_every=100)
    assert exk.is_complete(out) and not (tmp_path / "k.partial").exists()
    assert len(os.listdir(out / "sequences" / "00" / "image_2")) == 2


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="two digits"):
        exk.export_kitti(tmp_path / "a", sequence="7")
    with pytest.raises(ValueError, match="image size"):
        exk.export_kitti(tmp_path / "a", width=0)
    with pytest.raises(ValueError, match="num_frames"):
        exk.export_kitti(tmp_path / "a", num_frames=-2)
