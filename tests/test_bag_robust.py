"""RosbagDataset on imperfect recordings: rates, drops, TF gaps, odd encodings, missing
camera_info, truncated and corrupt files. Bags are built message by message with known values."""

from __future__ import annotations

import logging
import shutil
import sqlite3

import numpy as np
import pytest
import torch

from selfocc_core.data.config import DataConfig
from selfocc_core.data.rosbag import RosbagDataset, TransformTimeline, decode_image_msg, open_bag
from selfocc_core.geometry.transforms import T_FLU_OPTICAL, make_transform
from selfocc_ros.bag.cli import bag_info
from selfocc_ros.bag.writer import (
    CAMERA_INFO,
    COMPRESSED_IMAGE,
    IMAGE,
    QOS_LATCHED,
    TF_MESSAGE,
    TYPESTORE,
    AtomicBagWriter,
    camera_info_msg,
    compressed_image_msg,
    image_msg,
    tf_message,
    transform_stamped,
)

MS = 1_000_000
T0 = 1_700_000_000 * 10**9
H, W = 8, 12
K = np.array([[10.0, 0, 6], [0, 10.0, 4], [0, 0, 1]])
#: camera optical frame 1.5 m ahead of base_link, looking forward
T_BASE_CAM = make_transform(np.eye(3), [1.5, 0, 1.0]) @ T_FLU_OPTICAL


def pixels(cam: int, stamp_ms: int) -> np.ndarray:
    """R = stamp/10 mod 256, G = 40 * camera: tells which image ended up in a frame."""
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0] = (stamp_ms // 10) % 256
    img[..., 1] = 40 * cam
    return img


def make_bag(path, cams: dict[str, list[int]], tf_ms: list[int], storage="mcap", speed=1.0,
             encodings: dict | None = None, no_info=(), size=(H, W), info_size=None):
    """Cameras -> image stamps (ms); /tf odom->base_link at tf_ms moving `speed` m/s along x."""
    encodings = encodings or {}
    events = [(t, "tf", None) for t in tf_ms]
    events += [(t, "img", name) for name, ts in cams.items() for t in ts]
    events.sort(key=lambda e: (e[0], e[1] != "tf"))
    with AtomicBagWriter(path, storage=storage) as bag:
        static = [transform_stamped(T_BASE_CAM, T0, "base_link", f"{n.lower()}_optical_frame") for n in cams]
        bag.write("/tf_static", TF_MESSAGE, T0, tf_message(static), qos=QOS_LATCHED)
        for t, kind, name in events:
            stamp = T0 + t * MS
            if kind == "tf":
                T = make_transform(np.eye(3), [speed * t / 1000.0, 0, 0])
                bag.write("/tf", TF_MESSAGE, stamp, tf_message([transform_stamped(T, stamp, "odom", "base_link")]))
                continue
            frame = f"{name.lower()}_optical_frame"
            ci = list(cams).index(name)
            px = pixels(ci, t)
            if size != (H, W):
                px = np.tile(px[:1, :1], (*size, 1))
            enc = encodings.get((name, t))
            if enc == "jpeg":
                bag.write(f"/{name}/image_raw/compressed", COMPRESSED_IMAGE, stamp, compressed_image_msg(px, stamp, frame))
            elif enc == "badjpeg":
                msg = compressed_image_msg(px, stamp, frame)
                msg.data = msg.data[: len(msg.data) // 3]  # cut off mid-stream
                bag.write(f"/{name}/image_raw/compressed", COMPRESSED_IMAGE, stamp, msg)
            elif enc == "compressedDepth":
                msg = compressed_image_msg(px, stamp, frame)
                msg.format = "16UC1; compressedDepth png"
                bag.write(f"/{name}/image_raw/compressed", COMPRESSED_IMAGE, stamp, msg)
            else:
                msg = image_msg(px, stamp, frame)
                if enc:
                    msg.encoding = enc
                bag.write(f"/{name}/image_raw", IMAGE, stamp, msg)
            if name not in no_info:
                ih, iw = info_size or size
                bag.write(f"/{name}/camera_info", CAMERA_INFO, stamp, camera_info_msg(K, iw, ih, stamp, frame))
    return path


def cfg(**kw):
    base = dict(image_height=H, image_width=W, require_context=False, context_offsets=[-1, 1],
                min_ego_distance=0.0, max_ego_distance=50.0)
    base.update(kw)
    return DataConfig(**base)


def test_rates_drops_and_tf_gaps_are_skipped_and_counted(tmp_path, caplog):
    # B at 5 Hz (the reference: fewest images), A at 10 Hz and 20 ms late, A@420 dropped.
    cams = {"B": [0, 200, 400, 600, 800, 1000], "A": [20, 120, 220, 320, 520, 620, 720, 820, 920, 1020]}
    tf = [0, 100, 200, 300, 400, 500, 800, 900]  # gap 500 -> 800 ms, nothing after 900 ms
    bag = make_bag(tmp_path / "rates", cams, tf)
    with caplog.at_level(logging.INFO, logger="selfocc_core.data.rosbag"):
        ds = RosbagDataset(bag, cfg(cameras=["A", "B"]), max_tf_gap=0.25)
    # B@0, B@200, B@800 pair with A@+20 ms; B@400 has no A within the 50 ms slop (half A's
    # period); B@600 falls in the TF gap; B@1000 is after the last /tf.
    assert ds.frame_stamps_ns() == [T0, T0 + 200 * MS, T0 + 800 * MS]
    assert ds.summary["skipped"] == {"frames_missing_a_camera": 1, "frames_without_tf": 2}
    assert ds.summary["slop_s"] == pytest.approx(0.05)
    assert ds.summary["images"] == {"B": 6, "A": 10}
    assert "skipped" in caplog.text and "frames_without_tf" in caplog.text
    f = ds[1].frame
    assert f.camera_names == ["A", "B"]
    # which images joined: R channel = stamp / 10
    assert round(f.images[0, 0, 0, 0].item() * 255) == 22 and round(f.images[1, 0, 0, 0].item() * 255) == 20
    # ego at 0.2 m; A fired 20 ms later when the ego was 0.02 m further: folded into T_ego_cam
    torch.testing.assert_close(f.T_world_ego[:3, 3], torch.tensor([0.2, 0, 0]))
    torch.testing.assert_close(f.T_ego_cam[1], torch.as_tensor(T_BASE_CAM, dtype=torch.float32))
    expected_A = make_transform(np.eye(3), [0.02, 0, 0]) @ T_BASE_CAM
    torch.testing.assert_close(f.T_ego_cam[0], torch.as_tensor(expected_A, dtype=torch.float32), rtol=0, atol=1e-6)
    # context: neighbours in the kept frames
    assert set(ds[0].context) == {1} and set(ds[1].context) == {-1, 1}


def test_tf_interpolation_slerps_rotation():
    tl = TransformTimeline(max_gap_ns=10**9)
    Rz = lambda a: make_transform([np.cos(a / 2), 0, 0, np.sin(a / 2)], [0, 0, 0])  # noqa: E731
    tl.add("odom", "base_link", 0, make_transform(np.eye(3), [0, 0, 0]), static=False)
    tl.add("odom", "base_link", 100, make_transform(Rz(np.pi / 2)[:3, :3], [2.0, 0, 0]), static=False)
    tl.add("base_link", "cam", 0, make_transform(np.eye(3), [1.0, 0, 0]), static=True)
    T = tl.lookup("odom", "cam", 50)
    # halfway: 45 degrees, translation 1 m; the camera 1 m ahead along the rotated x axis
    np.testing.assert_allclose(T[:3, 3], [1 + np.cos(np.pi / 4), np.sin(np.pi / 4), 0], atol=1e-12)
    np.testing.assert_allclose(T[:3, :3], Rz(np.pi / 4)[:3, :3], atol=1e-12)
    with pytest.raises(LookupError, match="outside"):
        tl.lookup("odom", "cam", 200 + tl.tolerance_ns)
    with pytest.raises(LookupError, match="not connected"):
        tl.lookup("odom", "elsewhere", 50)


def test_unknown_encodings_and_missing_camera_info_are_reported(tmp_path, caplog):
    stamps = [0, 100, 200, 300]
    cams = {"A": stamps, "B": stamps, "C": stamps}
    enc = {("A", 100): "yuv422", ("A", 200): "32FC1", ("B", 300): "jpeg", ("B", 0): "compressedDepth"}
    bag = make_bag(tmp_path / "enc", cams, stamps, encodings=enc, no_info={"C"})
    with caplog.at_level(logging.WARNING, logger="selfocc_core.data.rosbag"):
        ds = RosbagDataset(bag, cfg())
    assert ds.summary["cameras_without_camera_info"] == ["C"]
    assert ds.summary["skipped"]["unknown_encoding_images"] == 3
    assert "yuv422" in caplog.text and "no camera_info for C" in caplog.text
    # A keeps 0 and 300; B keeps 100, 200 (raw) and 300 (jpeg): frames where both exist
    assert ds.summary["images"]["A"] == 2 and ds.summary["images"]["B"] == 3
    assert ds.frame_stamps_ns() == [T0 + 300 * MS]
    assert ds.camera_names == ["A", "B"]
    # asking for the camera without camera_info is a clear error
    with pytest.raises(ValueError, match=r"\['C'\] not found.*without camera_info: \['C'\]"):
        RosbagDataset(bag, cfg(cameras=["C"]))
    only_c = make_bag(tmp_path / "only_c", {"C": stamps}, stamps, no_info={"C"})
    with pytest.raises(ValueError, match="no camera has both images and camera_info"):
        RosbagDataset(only_c, cfg())


def test_camera_info_of_another_resolution_is_scaled_and_bad_jpeg_names_topic(tmp_path):
    # camera_info calibrated at 24x16 for images published at 12x8: K is scaled by 1/2
    bag = make_bag(tmp_path / "half", {"A": [0, 100, 200]}, [0, 100, 200], info_size=(16, 24),
                   encodings={("A", 200): "badjpeg"})
    ds = RosbagDataset(bag, cfg())
    K0 = ds[0].frame.K[0]
    torch.testing.assert_close(K0, torch.tensor([[5.0, 0, 2.75], [0, 5.0, 1.75], [0, 0, 1]]))
    with pytest.raises(ValueError, match=r"/A/image_raw/compressed at \d+ ns: cannot decode CompressedImage"):
        ds[2]


def test_bag_without_tf_says_so(tmp_path):
    bag = make_bag(tmp_path / "notf", {"A": [0, 100]}, [])
    with pytest.raises(ValueError, match="no usable samples.*tf_error"):
        RosbagDataset(bag, cfg())


def _msg(encoding, data, h, w, step, big=0):
    return TYPESTORE.types[IMAGE](header=TYPESTORE.types["std_msgs/msg/Header"](
        stamp=TYPESTORE.types["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id="x"),
        height=h, width=w, encoding=encoding, is_bigendian=big, step=step, data=np.asarray(data, np.uint8))


def test_decode_raw_encodings_by_hand():
    bgr = _msg("bgr8", [1, 2, 3, 4, 5, 6, 0, 0], 1, 2, 8)  # step padded to 8 bytes
    assert decode_image_msg(IMAGE, bgr).tolist() == [[[3, 2, 1], [6, 5, 4]]]
    rgba = _msg("rgba8", [9, 8, 7, 255], 1, 1, 4)
    assert decode_image_msg(IMAGE, rgba).tolist() == [[[9, 8, 7]]]
    mono16 = _msg("mono16", [0, 0, 0xFF, 0xFF, 0x00, 0x80], 1, 3, 6)  # little-endian 0, 65535, 32768
    assert decode_image_msg(IMAGE, mono16)[0, :, 0].tolist() == [0, 255, 128]
    mono16be = _msg("mono16", [0x80, 0x00, 0xFF, 0xFF], 1, 2, 4, big=1)
    assert decode_image_msg(IMAGE, mono16be)[0, :, 0].tolist() == [128, 255]
    with pytest.raises(ValueError, match="too small"):
        decode_image_msg(IMAGE, _msg("rgb8", [1, 2, 3], 1, 2, 6))
    with pytest.raises(ValueError, match="unsupported image encoding 'bayer_rggb8'"):
        decode_image_msg(IMAGE, _msg("bayer_rggb8", [1, 2, 3, 4], 2, 2, 2))
    jpeg = compressed_image_msg(np.full((8, 8, 3), 200, np.uint8), 1, "x")
    assert np.abs(decode_image_msg(COMPRESSED_IMAGE, jpeg).astype(int) - 200).max() <= 2


def _long_bag(tmp_path, storage, n=60):
    stamps = [100 * i for i in range(n)]
    # 64x128 RGB: 24 KiB per image -> several 1 MiB MCAP chunks
    return make_bag(tmp_path / f"long_{storage}", {"A": stamps, "B": stamps}, stamps, storage=storage,
                    size=(64, 128)), stamps


def test_truncated_mcap_is_recovered_and_reported(tmp_path, caplog):
    bag, stamps = _long_bag(tmp_path, "mcap")
    mcap = next(bag.glob("*.mcap"))
    whole = RosbagDataset(bag, cfg(image_height=64, image_width=128))
    assert len(whole) == 60
    data = mcap.read_bytes()
    mcap.write_bytes(data[: int(len(data) * 0.6)])  # killed recorder: no summary, no footer
    with caplog.at_level(logging.WARNING, logger="selfocc_core.data.rosbag"):
        ds = RosbagDataset(bag, cfg(image_height=64, image_width=128))
    assert "truncated?" in caplog.text and ds.summary["recovered_by_scan"]
    got = ds.frame_stamps_ns()
    assert 10 < len(got) < 60 and got == [T0 + t * MS for t in stamps[: len(got)]]  # a valid prefix
    last = ds[len(ds) - 1].frame
    assert round(last.images[1, 0, 0, 0].item() * 255) == (stamps[len(got) - 1] // 10) % 256
    info = bag_info(bag)
    assert info["recovered_by_scan"] and 0 < info["topics"]["/A/image_raw"]["count"] < 60
    mcap.write_bytes(data[:30])
    with pytest.raises(ValueError, match="no complete message could be recovered"):
        RosbagDataset(bag, cfg())


def test_corrupt_sqlite_row_is_skipped_and_garbage_file_is_an_error(tmp_path):
    bag, stamps = _long_bag(tmp_path, "sqlite3", n=12)
    db = next(bag.glob("*.db3"))
    con = sqlite3.connect(db)
    (topic_id,) = con.execute("SELECT id FROM topics WHERE name = '/A/image_raw'").fetchone()
    con.execute("UPDATE messages SET data = ? WHERE topic_id = ? AND timestamp = ?",
                (b"\x00\x01\x00\x00\xff\xff", topic_id, T0 + 500 * MS))
    con.commit()
    con.close()
    ds = RosbagDataset(bag, cfg(image_height=64, image_width=128))
    assert ds.summary["skipped"]["corrupt_messages"] == 1
    assert T0 + 500 * MS not in ds.frame_stamps_ns() and len(ds) == 11
    ds[5]  # neighbours of the corrupt row still load
    shutil.copy(db, tmp_path / "backup.db3")
    db.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ValueError, match=r"cannot read rosbag|storage error|no usable samples"):
        RosbagDataset(bag, cfg())
    with pytest.raises(FileNotFoundError, match="rosbag not found"):
        open_bag(tmp_path / "missing")
