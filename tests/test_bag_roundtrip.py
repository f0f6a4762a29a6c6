"""Synthetic world -> rosbag2 -> RosbagDataset gives back the same images, intrinsics and poses."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import yaml

from selfocc_core.data.config import DataConfig
from selfocc_core.data.rosbag import RosbagDataset
from selfocc_core.data.synthetic import SyntheticConfig, SyntheticDataset
from selfocc_ros.bag.convert import (
    RELATIVE_TIME_EPOCH_NS,
    ImageRecord,
    samples_recording,
    write_recording,
)

H, W = 32, 64
CAMS = ["CAM_FRONT", "CAM_BACK_LEFT"]


@pytest.fixture(scope="module")
def synth():
    cfg = SyntheticConfig(num_frames=5, cameras=CAMS, image_height=H, image_width=W, with_gt=False,
                          context_offsets=[-1, 1])
    ds = SyntheticDataset(cfg)
    return [ds[i] for i in range(len(ds))]


def _reader_cfg(**kw):
    return DataConfig(image_height=H, image_width=W, context_offsets=[-1, 1], require_context=False,
                      min_ego_distance=0.0, max_ego_distance=50.0, **kw)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_synthetic_round_trip_is_exact(synth, tmp_path, storage):
    bag = tmp_path / f"syn_{storage}"
    counts = write_recording(samples_recording(synth, source="synthetic"), bag, storage=storage)
    assert counts["/tf"] == 5 and counts["/tf_static"] == 1
    assert counts["/CAM_FRONT/image_raw"] == 5 and counts["/CAM_BACK_LEFT/camera_info"] == 5
    assert (bag / ("syn_" + storage + (".mcap" if storage == "mcap" else ".db3"))).is_file()

    ds = RosbagDataset(bag, _reader_cfg())
    assert len(ds) == 5 and ds.camera_names == CAMS  # rig order kept
    assert ds.summary["skipped"] == {} and ds.summary["world_frame"] == "odom"
    for i, (want, got) in enumerate(zip(synth, (ds[k] for k in range(len(ds))))):
        w, g = want.frame, got.frame
        # The renderer quantises to uint8, so pixels survive exactly.
        assert torch.equal(g.images, w.images), f"frame {i}: images differ"
        torch.testing.assert_close(g.K, w.K, rtol=0, atol=1e-5)
        torch.testing.assert_close(g.T_world_ego, w.T_world_ego, rtol=0, atol=2e-5)
        torch.testing.assert_close(g.T_ego_cam, w.T_ego_cam, rtol=0, atol=2e-6)
        assert g.timestamp == pytest.approx(float(w.timestamp) + RELATIVE_TIME_EPOCH_NS * 1e-9, abs=1e-6)
        # Context is chosen by ego distance and points at the neighbouring frames.
        assert set(got.context) == ({1} if i == 0 else {-1} if i == 4 else {-1, 1})
        if -1 in got.context:
            torch.testing.assert_close(got.context[-1].T_world_ego, synth[i - 1].frame.T_world_ego, rtol=0, atol=2e-5)


def test_dataset_pickles_for_dataloader_workers(synth, tmp_path):
    """spawn/forkserver DataLoader workers receive a pickled dataset (Python 3.14's default)."""
    import pickle

    bag = tmp_path / "pickled"
    write_recording(samples_recording(synth[:3]), bag)
    ds = RosbagDataset(bag, _reader_cfg())
    ds[0]  # opens the storage in this process
    copy = pickle.loads(pickle.dumps(ds))
    assert torch.equal(copy[2].frame.images, ds[2].frame.images)
    assert copy.summary == ds.summary


def test_compressed_round_trip_and_resize(synth, tmp_path):
    bag = tmp_path / "syn_jpeg"
    counts = write_recording(samples_recording(synth), bag, compressed=True)
    assert "/CAM_FRONT/image_raw/compressed" in counts and "/CAM_FRONT/image_raw" not in counts
    ds = RosbagDataset(bag, _reader_cfg())
    err = (ds[2].frame.images - synth[2].frame.images).abs().mean().item()
    assert err < 0.03, f"jpeg round trip mean error {err}"
    # Reading at twice the size scales K by the pixel-centre rule (f * 2, c -> (c + .5) * 2 - .5).
    big = RosbagDataset(bag, DataConfig(image_height=2 * H, image_width=2 * W, require_context=False))
    K0, K1 = synth[0].frame.K[0], big[0].frame.K[0]
    assert big[0].frame.images.shape == (2, 3, 2 * H, 2 * W)
    torch.testing.assert_close(K1[0, 0], 2 * K0[0, 0])
    torch.testing.assert_close(K1[0, 2], (K0[0, 2] + 0.5) * 2 - 0.5)


def test_metadata_is_what_ros2_bag_reads(synth, tmp_path):
    bag = tmp_path / "meta"
    write_recording(samples_recording(synth[:2]), bag, storage="sqlite3")
    info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["version"] == 8 and info["storage_identifier"] == "sqlite3"
    assert all((bag / p).is_file() for p in info["relative_file_paths"])
    assert info["custom_data"]["time_offset_ns"] == str(RELATIVE_TIME_EPOCH_NS)
    topics = {t["topic_metadata"]["name"]: t for t in info["topics_with_message_count"]}
    assert topics["/tf_static"]["topic_metadata"]["type"] == "tf2_msgs/msg/TFMessage"
    assert sum(t["message_count"] for t in topics.values()) == info["message_count"] == 1 + 2 + 2 * 2 * 2
    # v8 stores the offered QoS as a YAML string; durability 1 = transient_local (latched).
    qos = yaml.safe_load(topics["/tf_static"]["topic_metadata"]["offered_qos_profiles"])
    assert qos[0]["durability"] == 1 and qos[0]["reliability"] == 1 and qos[0]["depth"] == 1
    qos_img = yaml.safe_load(topics["/CAM_FRONT/image_raw"]["topic_metadata"]["offered_qos_profiles"])
    assert qos_img[0]["durability"] == 2  # volatile
    assert topics["/CAM_FRONT/image_raw"]["topic_metadata"]["type_description_hash"].startswith("RIHS01_")


def test_frame_ids_and_stamps_in_messages(synth, tmp_path):
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    bag = tmp_path / "ids"
    write_recording(samples_recording(synth[:3]), bag)
    ts = get_typestore(Stores.ROS2_JAZZY)
    with Reader(bag) as r:
        msgs = [(c.topic, t, ts.deserialize_cdr(raw, c.msgtype)) for c, t, raw in r.messages()]
    static = [m for topic, _, m in msgs if topic == "/tf_static"][0]
    assert {(x.header.frame_id, x.child_frame_id) for x in static.transforms} == {
        ("base_link", "cam_front_optical_frame"), ("base_link", "cam_back_left_optical_frame")}
    for topic, t, m in msgs:
        if topic.endswith(("image_raw", "camera_info")):
            assert m.header.stamp.sec * 10**9 + m.header.stamp.nanosec == t  # bag time = image's own stamp
            assert m.header.frame_id == ("cam_front_optical_frame" if "FRONT" in topic else "cam_back_left_optical_frame")
        if topic == "/tf":
            assert (m.transforms[0].header.frame_id, m.transforms[0].child_frame_id) == ("odom", "base_link")
    stamps = [t for _, t, _ in msgs]
    assert stamps == sorted(stamps)


def test_killed_conversion_leaves_no_bag(synth, tmp_path):
    rec = samples_recording(synth[:3])
    calls = {"n": 0}

    def boom():
        calls["n"] += 1
        raise RuntimeError("killed")

    rec.images[3] = ImageRecord(rec.images[3].camera, rec.images[3].stamp_ns, rec.images[3].K, W, H, boom)
    out = tmp_path / "half"
    with pytest.raises(RuntimeError, match="killed"):
        write_recording(rec, out)
    assert not out.exists()
    partial = tmp_path / "half.partial"
    assert partial.is_dir() and not list(partial.rglob("metadata.yaml"))
    # A rerun replaces the stale partial folder and produces the complete bag.
    write_recording(samples_recording(synth[:3]), out)
    assert (out / "metadata.yaml").is_file() and not partial.exists()
    with pytest.raises(FileExistsError, match="exists already"):
        write_recording(samples_recording(synth[:3]), out)


def test_cli_convert_info_and_errors(tmp_path):
    bag = tmp_path / "cli_syn"
    run = lambda *a: subprocess.run([sys.executable, "-m", "selfocc_core.cli", "bag", *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=300)
    r = run("convert", "--from", "synthetic", "num_frames=3,rig=kitti,image_height=24,image_width=48",
            "--out", str(bag), "--storage", "sqlite3")
    assert r.returncode == 0, r.stderr
    assert '"/image_2/image_raw": 3' in r.stdout
    r = run("info", str(bag), "--dataset")
    assert r.returncode == 0, r.stderr
    assert "/image_2/camera_info" in r.stdout and '"frames": 3' in r.stdout
    r = run("convert", "--from", "kitti", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x"))
    assert r.returncode == 1 and "not found" in r.stderr
    r = run("info", str(tmp_path / "nowhere"))
    assert r.returncode == 1 and "not found" in r.stderr
