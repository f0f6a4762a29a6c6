"""nuScenes-layout synthetic drive -> (nuscenes-devkit) -> rosbag2 -> RosbagDataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nuscenes.nuscenes import NuScenes
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore

from selfocc_core.data.config import DataConfig
from selfocc_core.data.nuscenes import NuScenesDataset
from selfocc_core.data.rosbag import RosbagDataset
from selfocc_core.synth.export_nuscenes import export_nuscenes
from selfocc_ros.bag.convert import convert

H, W = 18, 32


@pytest.fixture(scope="module")
def dataroot(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("nus") / "synth_nus"
    export_nuscenes(out, seeds=[3], num_keyframes=2, height=H, width=W, with_lidar=False)
    torch.set_num_threads(threads)
    return out


def _chain(nusc, sd_token):
    sd = nusc.get("sample_data", sd_token)
    out = [sd]
    while out[-1]["next"]:
        out.append(nusc.get("sample_data", out[-1]["next"]))
    return out


def test_every_camera_sample_data_becomes_a_message(dataroot, tmp_path):
    bag = tmp_path / "nus"
    counts = convert("nuscenes", dataroot, bag, compressed=True, scene="synth-0003")
    nusc = NuScenes(version="v1.0-synth", dataroot=str(dataroot), verbose=False)
    first = nusc.get("sample", nusc.scene[0]["first_sample_token"])
    cams = [c for c in first["data"] if c.startswith("CAM")]
    assert len(cams) == 6
    chains = {c: _chain(nusc, first["data"][c]) for c in cams}
    assert all(len(ch) == 7 for ch in chains.values())  # 2 keyframes + 5 sweeps
    for c in cams:
        assert counts[f"/{c}/image_raw/compressed"] == 7 and counts[f"/{c}/camera_info"] == 7
    ego_stamps = {sd["timestamp"] for ch in chains.values() for sd in ch}
    assert counts["/tf"] == len(ego_stamps)

    ts = get_typestore(Stores.ROS2_JAZZY)
    by_topic: dict[str, list] = {}
    with Reader(bag) as r:
        for conn, t, raw in r.messages():
            by_topic.setdefault(conn.topic, []).append((t, ts.deserialize_cdr(raw, conn.msgtype)))
    for c in cams:
        got = by_topic[f"/{c}/image_raw/compressed"]
        assert [t for t, _ in got] == [sd["timestamp"] * 1000 for sd in chains[c]]
        for (t, msg), sd in zip(got, chains[c]):
            assert bytes(msg.data) == (dataroot / sd["filename"]).read_bytes()  # jpeg passed through
            assert msg.header.frame_id == f"{c.lower()}_optical_frame"
        info = by_topic[f"/{c}/camera_info"][3][1]
        cs = nusc.get("calibrated_sensor", chains[c][3]["calibrated_sensor_token"])
        np.testing.assert_allclose(np.reshape(info.k, (3, 3)), cs["camera_intrinsic"])
    static = by_topic["/tf_static"][0][1].transforms
    front = next(x for x in static if x.child_frame_id == "cam_front_optical_frame")
    cs = nusc.get("calibrated_sensor", chains["CAM_FRONT"][0]["calibrated_sensor_token"])
    q = front.transform.rotation
    np.testing.assert_allclose([front.transform.translation.x, front.transform.translation.y,
                                front.transform.translation.z], cs["translation"], atol=1e-12)
    np.testing.assert_allclose(np.abs(np.dot([q.w, q.x, q.y, q.z], cs["rotation"])), 1.0, atol=1e-9)
    tf_t = [t for t, _ in by_topic["/tf"]]
    assert tf_t == sorted(tf_t)


def test_bag_reader_equals_devkit_reader_at_keyframes(dataroot, tmp_path):
    bag = tmp_path / "nus_raw"
    convert("nuscenes", dataroot, bag, storage="sqlite3")  # rgb8
    cfg = DataConfig(image_height=H, image_width=W, require_context=False, context_offsets=[-1, 1],
                     min_ego_distance=0.3, load_gt=False)
    ds = RosbagDataset(bag, cfg)
    assert len(ds) == 7 and ds.summary["skipped"] == {}
    assert ds.camera_names == ["CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT",
                               "CAM_BACK_RIGHT"]  # nuScenes rig order, as declared in the bag
    ref = NuScenesDataset(dataroot, DataConfig(**{**cfg.__dict__, "cameras": ds.camera_names}))
    stamps = ds.frame_stamps_ns()
    for k in range(len(ref)):
        a = ref[k]
        t_ns = round(float(a.frame.timestamp) * 1e6) * 1000
        b = ds[stamps.index(min(stamps, key=lambda s: abs(s - t_ns)))]
        torch.testing.assert_close(b.frame.images, a.frame.images, rtol=0, atol=1e-6)
        torch.testing.assert_close(b.frame.K, a.frame.K, rtol=1e-6, atol=1e-5)
        torch.testing.assert_close(b.frame.T_world_ego, a.frame.T_world_ego, rtol=0, atol=1e-4)
        torch.testing.assert_close(b.frame.T_ego_cam, a.frame.T_ego_cam, rtol=0, atol=1e-5)
        # context chosen by ego distance over the sweeps, like the devkit reader's
        assert set(b.context) == set(a.context)
        for o in a.context:
            torch.testing.assert_close(b.context[o].T_world_ego, a.context[o].T_world_ego, rtol=0, atol=1e-4)
