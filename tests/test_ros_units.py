"""Unit tests without rclpy/DDS: message conversions, approximate-time sync, TF buffer."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from selfocc_core.classes import FREE_LABEL, OCC3D_COLORS
from selfocc_core.geometry.transforms import T_FLU_OPTICAL, make_transform
from selfocc_ros import conversions as conv
from selfocc_ros.approx_sync import ApproximateTimeSync
from selfocc_ros.tf_buffer import (
    ConnectivityException,
    ExtrapolationException,
    LookupException,
    TransformBuffer,
)

S = 1_000_000_000  # ns per second


# ============================================================================ conversions


@pytest.mark.parametrize("enc", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_color_encodings_round_trip_to_rgb(enc):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    if enc == "mono8":
        arr = rgb[..., 0]
        expect = np.repeat(arr[..., None], 3, axis=2)
    else:
        arr = rgb[..., ::-1] if enc.startswith("bgr") else rgb
        if enc.endswith("a8"):
            arr = np.concatenate([arr, np.full((5, 7, 1), 9, np.uint8)], axis=2)
        expect = rgb
    msg = conv.numpy_to_image(arr, enc)
    out = conv.image_to_rgb(msg)
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, expect)


def test_image_row_padding_and_big_endian():
    # 2x3 rgb8 with a 12-byte step (3 bytes padding per row).
    rows = [bytes([1, 2, 3, 4, 5, 6, 7, 8, 9]) + b"\xff" * 3, bytes([10, 11, 12, 13, 14, 15, 16, 17, 18]) + b"\xee" * 3]
    msg = Image(height=2, width=3, encoding="rgb8", step=12, data=b"".join(rows))
    out = conv.image_to_rgb(msg)
    assert out[1, 2].tolist() == [16, 17, 18] and out[0, 0].tolist() == [1, 2, 3]
    # big-endian 16UC1: 1000 mm = 0x03E8 -> 1.0 m
    be = Image(height=1, width=2, encoding="16UC1", is_bigendian=1, step=4, data=bytes([0x03, 0xE8, 0x07, 0xD0]))
    np.testing.assert_allclose(conv.image_to_depth(be), [[1.0, 2.0]])


def test_depth_32fc1_round_trip_and_header():
    d = np.array([[0.5, 1.25], [80.0, np.nan]], np.float32)
    msg = conv.depth_to_image(d, Header(frame_id="cam_optical_frame", stamp=Time(sec=3, nanosec=7)))
    assert msg.encoding == "32FC1" and msg.step == 8 and msg.header.frame_id == "cam_optical_frame"
    out = conv.image_to_depth(msg)
    np.testing.assert_array_equal(out[0], d[0])
    assert out[1, 0] == 80.0 and np.isnan(out[1, 1])


def test_bad_images_raise_clear_errors():
    with pytest.raises(conv.ConversionError, match="image encoding 'yuv422' is not a colour encoding"):
        conv.image_to_rgb(Image(height=1, width=1, encoding="yuv422", step=2, data=b"\0\0"))
    with pytest.raises(conv.ConversionError, match="not a colour encoding"):
        conv.image_to_rgb(conv.depth_to_image(np.zeros((2, 2), np.float32)))
    with pytest.raises(conv.ConversionError, match="expected step\\*height"):
        conv.image_to_rgb(Image(height=2, width=2, encoding="rgb8", step=6, data=b"\0" * 11))
    info = conv.make_camera_info(np.array([[100, 0, 50], [0, 100, 40], [0, 0, 1.0]]), 80, 100)
    with pytest.raises(conv.ConversionError, match="image is 99x80 but camera_info says 100x80"):
        conv.check_image_matches_info((80, 99), info, "CAM_FRONT")
    conv.check_image_matches_info((80, 100), info, "CAM_FRONT")


def test_compressed_jpeg_png_and_corrupt():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    png = conv.rgb_to_compressed(rgb, "png")
    np.testing.assert_array_equal(conv.compressed_to_rgb(png), rgb)
    smooth = np.tile(np.linspace(0, 255, 24, dtype=np.uint8)[None, :, None], (16, 1, 3))
    jpg = conv.rgb_to_compressed(smooth, "jpeg", quality=95)
    assert np.abs(conv.compressed_to_rgb(jpg).astype(int) - smooth).max() <= 8
    bad = CompressedImage(format="jpeg", data=bytes(jpg.data)[:40])
    with pytest.raises(conv.ConversionError, match="corrupt compressed image"):
        conv.compressed_to_rgb(bad)
    with pytest.raises(conv.ConversionError, match="no data"):
        conv.compressed_to_rgb(CompressedImage(format="jpeg"))


def test_camera_info_K():
    K = np.array([[500.0, 0, 320], [0, 510, 240], [0, 0, 1]])
    info = conv.make_camera_info(K, 480, 640)
    np.testing.assert_array_equal(conv.camera_info_to_K(info), K)
    assert list(info.p)[:3] == [500.0, 0.0, 320.0]
    info.k[0] = float("nan")
    with pytest.raises(conv.ConversionError, match="invalid CameraInfo.k"):
        conv.camera_info_to_K(info)


def test_transform_conversion_and_nan():
    T = make_transform([math.cos(0.3), 0, 0, math.sin(0.3)], [1.0, -2.0, 0.5])
    msg = conv.matrix_to_transform_stamped(T, "base_link", "cam", 5 * S + 3)
    assert msg.header.stamp.sec == 5 and msg.header.stamp.nanosec == 3
    # wire order x, y, z, w
    assert msg.transform.rotation.z == pytest.approx(math.sin(0.3)) and msg.transform.rotation.w == pytest.approx(math.cos(0.3))
    np.testing.assert_allclose(conv.transform_to_matrix(msg), T, atol=1e-12)
    msg.transform.translation.y = float("nan")
    with pytest.raises(conv.ConversionError, match="non-finite transform"):
        conv.transform_to_matrix(msg)


def test_occupancy_cloud_markers_and_grid():
    labels = np.full((4, 3, 2), FREE_LABEL, np.uint8)
    labels[0, 0, 0] = 4  # car
    labels[3, 2, 1] = 11  # driveable_surface
    labels[1, 1, 1] = 4
    conf = np.zeros(labels.shape, np.float32)
    conf[0, 0, 0], conf[1, 1, 1], conf[3, 2, 1] = 0.9, 0.8, 0.7
    xyz, lab, c = conv.occupied_points(labels, conf, (-1.0, -0.5, -0.2), 0.5)
    np.testing.assert_allclose(xyz, [[-0.75, -0.25, 0.05], [-0.25, 0.25, 0.55], [0.75, 0.75, 0.55]], atol=1e-6)
    assert lab.tolist() == [4, 4, 11] and c.tolist() == pytest.approx([0.9, 0.8, 0.7])

    header = Header(frame_id="base_link", stamp=Time(sec=1, nanosec=2))
    cloud = conv.make_occupancy_cloud(xyz, lab, c, header)
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "confidence", "label"] and cloud.point_step == 20
    arr = conv.pointcloud2_to_array(cloud)
    np.testing.assert_allclose(np.stack([arr["x"], arr["y"], arr["z"]], 1), xyz)
    assert arr["label"].tolist() == [4, 4, 11]

    markers = conv.make_occupancy_markers(xyz, lab, 0.5, header)
    assert markers.markers[0].action == 3  # DELETEALL first
    cubes = {m.ns: m for m in markers.markers[1:]}
    assert set(cubes) == {"occupancy/car", "occupancy/driveable_surface"}
    car = cubes["occupancy/car"]
    assert car.type == 6 and len(car.points) == 2 and car.scale.x == 0.5
    assert (car.color.r, car.color.g, car.color.b) == pytest.approx(tuple(OCC3D_COLORS[4] / 255.0))

    class FakeGrid:  # any object with the message's fields (the real one is built by tools/build_msgs.py)
        from geometry_msgs.msg import Pose as _P

        def __init__(self):
            self.origin = self._P()

    g = conv.fill_grid_msg(FakeGrid(), labels, (-1.0, -0.5, -0.2), 0.5, header, confidence=conf)
    back = conv.grid_msg_to_arrays(g)
    np.testing.assert_array_equal(back.labels, labels)
    np.testing.assert_array_equal(back.confidence, conf)
    assert back.sdf is None and back.lower == (-1.0, -0.5, -0.2) and back.stamp_ns == S + 2
    # flattened C order: index (i*Y + j)*Z + k
    assert bytes(g.labels)[(3 * 3 + 2) * 2 + 1] == 11


# ============================================================================ approximate sync

# Each case: (slop [s], queue_size, [(topic, stamp_s), ...], expected list of emitted stamp tuples)
SYNC_CASES = [
    # exact and near matches
    (0.05, 5, [(0, 1.0), (1, 1.0)], [(1.0, 1.0)]),
    (0.05, 5, [(0, 1.0), (1, 1.03)], [(1.0, 1.03)]),
    # too far apart -> nothing, later partner matches the newer one
    (0.05, 5, [(0, 1.0), (1, 1.2), (0, 1.21)], [(1.21, 1.2)]),
    # the nearest of several candidates is taken
    (0.05, 5, [(1, 0.97), (1, 1.01), (1, 1.04), (0, 1.0)], [(1.0, 1.01)]),
    # spread must be strictly below slop
    (0.05, 5, [(0, 1.0), (1, 1.05)], []),
    # queue_size drops the oldest: 1.0 on topic 0 is gone when topic 1 arrives at 1.0
    (0.05, 2, [(0, 1.0), (0, 2.0), (0, 3.0), (1, 1.0)], []),
    # used messages leave the queues; unmatched older ones stay and can match later
    (0.05, 5, [(0, 1.0), (0, 2.0), (1, 2.0), (1, 1.0)], [(2.0, 2.0), (1.0, 1.0)]),
    # three topics
    (0.05, 5, [(0, 1.00), (1, 1.02), (2, 1.01)], [(1.00, 1.02, 1.01)]),
    (0.05, 5, [(0, 1.00), (1, 1.04), (2, 0.96)], []),  # each within slop of 1.0 but spread 0.08
]


def _run_ours(slop, q, events, n):
    out = []
    sync = ApproximateTimeSync(n, q, slop, callback=lambda *m: out.append(tuple(round(x.stamp, 6) for x in m)))
    for topic, stamp in events:
        sync.add(topic, _Stamped(stamp))
    return out


class _Stamped:
    def __init__(self, t):
        self.stamp = t
        self.header = Header(stamp=Time(sec=int(t), nanosec=int(round((t - int(t)) * 1e9))))


@pytest.mark.parametrize("slop,q,events,expected", SYNC_CASES)
def test_approx_sync_cases(slop, q, events, expected):
    n = max(t for t, _ in events) + 1
    assert _run_ours(slop, q, events, n) == expected


def test_approx_sync_prefers_smallest_spread_with_three_topics():
    # New message on topic 0 at 1.00; topic 1 has 0.98 / 1.03, topic 2 has 1.035 / 0.975.
    # {1.00, 0.98, 0.975} spread 0.025 beats {1.00, 1.03, 1.035} spread 0.035.
    out = _run_ours(0.05, 5, [(1, 0.98), (1, 1.03), (2, 1.035), (2, 0.975), (0, 1.00)], 3)
    assert out == [(1.0, 0.98, 0.975)]


@pytest.mark.skipif(importlib.util.find_spec("message_filters") is None, reason="message_filters not installed")
@pytest.mark.parametrize("slop,q,events,expected", SYNC_CASES)
def test_message_filters_agrees_on_cases(slop, q, events, expected):
    import message_filters

    n = max(t for t, _ in events) + 1
    subs = [message_filters.SimpleFilter() for _ in range(n)]
    out = []
    sync = message_filters.ApproximateTimeSynchronizer(subs, q, slop)
    sync.registerCallback(lambda *m: out.append(tuple(round(x.stamp, 6) for x in m)))
    for topic, stamp in events:
        subs[topic].signalMessage(_Stamped(stamp))
    assert out == expected


# ============================================================================ TF buffer


def _tf(parent, child, t_s, T):
    return conv.matrix_to_transform_stamped(T, parent, child, int(round(t_s * S)))


def _yaw(a):
    return [math.cos(a / 2), 0, 0, math.sin(a / 2)]


def test_tf_chain_static_optical_frame():
    buf = TransformBuffer()
    T_base_camlink = make_transform(_yaw(0.5), [1.5, 0.2, 1.6])
    buf.set_transform_static(_tf("base_link", "cam_link", 0, T_base_camlink))
    buf.set_transform_static(_tf("cam_link", "cam_optical_frame", 0, T_FLU_OPTICAL))
    T = buf.lookup_matrix("base_link", "cam_optical_frame", 123 * S)  # static: any time
    np.testing.assert_allclose(T, T_base_camlink @ T_FLU_OPTICAL, atol=1e-9)
    # optical z (forward) maps onto the camera link's x axis rotated by yaw 0.5
    np.testing.assert_allclose(T[:3, 2], [math.cos(0.5), math.sin(0.5), 0], atol=1e-9)
    # inverse direction
    np.testing.assert_allclose(buf.lookup_matrix("cam_optical_frame", "base_link", 0), np.linalg.inv(T), atol=1e-9)
    msg = buf.lookup_transform("base_link", "cam_optical_frame", 0)
    assert msg.header.frame_id == "base_link" and msg.child_frame_id == "cam_optical_frame"


def test_tf_interpolation_slerp_lerp_and_latest():
    buf = TransformBuffer()
    buf.set_transform(_tf("odom", "base_link", 10.0, make_transform(_yaw(0.0), [0, 0, 0])))
    buf.set_transform(_tf("odom", "base_link", 11.0, make_transform(_yaw(1.0), [2, 4, 0])))
    T = buf.lookup_matrix("odom", "base_link", int(10.25 * S))
    np.testing.assert_allclose(T[:3, 3], [0.5, 1.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(T[:3, :3], make_transform(_yaw(0.25), [0, 0, 0])[:3, :3], atol=1e-9)
    # time 0 = latest
    np.testing.assert_allclose(buf.lookup_matrix("odom", "base_link", 0)[:3, 3], [2, 4, 0])
    # builtin_interfaces/Time accepted too
    np.testing.assert_allclose(buf.lookup_matrix("odom", "base_link", Time(sec=10, nanosec=500_000_000))[:3, 3], [1, 2, 0])


def test_tf_chained_dynamic_and_static_at_stamp():
    buf = TransformBuffer()
    T_base_cam = make_transform(_yaw(-0.3), [1.0, 0.0, 1.5]) @ T_FLU_OPTICAL
    buf.set_transform_static(_tf("base_link", "CAM_FRONT_optical_frame", 0, T_base_cam))
    buf.set_transform(_tf("odom", "base_link", 1.0, make_transform(_yaw(0.0), [10, 0, 0])))
    buf.set_transform(_tf("odom", "base_link", 2.0, make_transform(_yaw(0.0), [20, 0, 0])))
    T_odom_cam = buf.lookup_matrix("odom", "CAM_FRONT_optical_frame", int(1.5 * S))
    np.testing.assert_allclose(T_odom_cam, make_transform(_yaw(0.0), [15, 0, 0]) @ T_base_cam, atol=1e-9)


def test_tf_lookups_reuse_cached_matrices_but_return_copies():
    """Static edges and samples hit at their own stamp use the matrix built at insertion (the
    node's lookups: 7 per camera set); the caller gets its own array, so changing it cannot
    change the buffer. Random rotations: the closed-form matrix equals the checked one."""
    rng = np.random.default_rng(3)
    buf = TransformBuffer()
    Ts = {}
    for i in range(3):
        q = rng.normal(size=4)
        Ts[i] = make_transform(q / np.linalg.norm(q), rng.normal(size=3))
    buf.set_transform_static(_tf("base_link", "cam", 0, Ts[0]))
    buf.set_transform(_tf("odom", "base_link", 1.0, Ts[1]))
    buf.set_transform(_tf("odom", "base_link", 2.0, Ts[2]))
    for target, source, t, want in (("base_link", "cam", 0, Ts[0]), ("odom", "base_link", 1 * S, Ts[1]),
                                    ("odom", "cam", 2 * S, Ts[2] @ Ts[0]), ("cam", "odom", 1 * S, np.linalg.inv(Ts[1] @ Ts[0]))):
        got = buf.lookup_matrix(target, source, t)
        np.testing.assert_allclose(got, want, atol=1e-12)
        got[:] = 0.0
        np.testing.assert_allclose(buf.lookup_matrix(target, source, t), want, atol=1e-12)


def test_tf_errors():
    buf = TransformBuffer()
    buf.set_transform(_tf("odom", "base_link", 1.0, np.eye(4)))
    buf.set_transform(_tf("odom", "base_link", 2.0, np.eye(4)))
    buf.set_transform_static(_tf("map", "other", 0, np.eye(4)))
    with pytest.raises(ExtrapolationException, match="into the future"):
        buf.lookup_matrix("odom", "base_link", int(2.5 * S))
    with pytest.raises(ExtrapolationException, match="into the past"):
        buf.lookup_matrix("odom", "base_link", int(0.5 * S))
    with pytest.raises(LookupException, match='"nowhere" passed to lookupTransform'):
        buf.lookup_matrix("odom", "nowhere", 0)
    with pytest.raises(ConnectivityException, match="not part of the same tree"):
        buf.lookup_matrix("odom", "other", 0)
    single = TransformBuffer()
    single.set_transform(_tf("odom", "base_link", 1.0, np.eye(4)))
    single.lookup_matrix("odom", "base_link", S)  # exact time of the only sample is fine
    with pytest.raises(ExtrapolationException, match="only time 1.000000 is in the buffer"):
        single.lookup_matrix("odom", "base_link", int(1.1 * S))


def test_tf_rejects_nan_repeated_and_prunes_old():
    buf = TransformBuffer(cache_time=2.0)
    bad = _tf("odom", "base_link", 1.0, np.eye(4))
    bad.transform.rotation.x = float("nan")
    assert not buf.set_transform(bad) and "TF_NAN_INPUT" in buf.last_error
    assert buf.all_frames() == []
    assert buf.set_transform(_tf("odom", "base_link", 1.0, np.eye(4)))
    assert not buf.set_transform(_tf("odom", "base_link", 1.0, np.eye(4)))  # repeated stamp
    assert buf.set_transform(_tf("odom", "base_link", 4.0, np.eye(4)))  # prunes 1.0 (older than 4 - 2)
    with pytest.raises(ExtrapolationException):
        buf.lookup_matrix("odom", "base_link", int(1.5 * S))
    assert not buf.set_transform(_tf("odom", "base_link", 1.5, np.eye(4)))  # older than the horizon


@pytest.mark.skipif(importlib.util.find_spec("tf2_ros") is None, reason="tf2_ros not installed")
def test_tf2_ros_buffer_agrees():
    import rclpy.time
    import tf2_ros

    ours, ref = TransformBuffer(), tf2_ros.Buffer()
    msgs = [
        (_tf("odom", "base_link", 10.0, make_transform(_yaw(0.0), [0, 0, 0])), False),
        (_tf("odom", "base_link", 11.0, make_transform(_yaw(1.0), [2, 4, 0])), False),
        (_tf("base_link", "cam_optical_frame", 0, make_transform(_yaw(0.2), [1, 0, 1.5]) @ T_FLU_OPTICAL), True),
    ]
    for m, static in msgs:
        (ours.set_transform_static if static else ours.set_transform)(m)
        (ref.set_transform_static if static else ref.set_transform)(m, "test")
    for t in (int(10.3 * S), int(11 * S), 0):
        a = ours.lookup_matrix("odom", "cam_optical_frame", t)
        b = conv.transform_to_matrix(ref.lookup_transform("odom", "cam_optical_frame", rclpy.time.Time(nanoseconds=t)))
        np.testing.assert_allclose(a, b, atol=1e-9)
    with pytest.raises(tf2_ros.ExtrapolationException):
        ref.lookup_transform("odom", "base_link", rclpy.time.Time(nanoseconds=12 * S))
    with pytest.raises(ExtrapolationException):
        ours.lookup_matrix("odom", "base_link", 12 * S)


# ============================================================================ node logic (no rclpy)

import threading  # noqa: E402
import time  # noqa: E402

from selfocc_ros.node_logic import (  # noqa: E402
    CameraConfig,
    InputError,
    LatestWorker,
    NodeStats,
    RateMeter,
    WarnThrottle,
    assemble_frame,
)


def _cam_msgs(names, stamp_s, h=4, w=6, frame_ids=None):
    K = np.array([[5.0, 0, 3], [0, 5.0, 2], [0, 0, 1]])
    imgs, infos = [], []
    for k, n in enumerate(names):
        hdr = Header(frame_id=(frame_ids or [f"{c.lower()}_optical_frame" for c in names])[k],
                     stamp=Time(sec=int(stamp_s[k]), nanosec=int(round((stamp_s[k] % 1) * 1e9))))
        rgb = np.full((h, w, 3), 10 * (k + 1), np.uint8)
        imgs.append(conv.numpy_to_image(rgb, "rgb8", hdr))
        infos.append(conv.make_camera_info(K, h, w, hdr))
    return imgs, infos


def test_assemble_frame_folds_per_camera_ego_motion():
    names = ["A", "B"]
    cams = [CameraConfig(n, f"/{n}/image_raw", f"/{n}/camera_info") for n in names]
    buf = TransformBuffer()
    T_base_a = make_transform(_yaw(0.1), [1.0, 0.0, 1.5]) @ T_FLU_OPTICAL
    T_base_b = make_transform(_yaw(3.0), [-1.0, 0.0, 1.5]) @ T_FLU_OPTICAL
    buf.set_transform_static(_tf("base_link", "a_optical_frame", 0, T_base_a))
    buf.set_transform_static(_tf("base_link", "b_optical_frame", 0, T_base_b))
    buf.set_transform(_tf("odom", "base_link", 10.0, make_transform(_yaw(0.0), [0, 0, 0])))
    buf.set_transform(_tf("odom", "base_link", 11.0, make_transform(_yaw(0.0), [10, 0, 0])))
    # camera B fires 0.1 s after A: the car moved 1 m in between, folded into T_ego_cam[B]
    imgs, infos = _cam_msgs(names, [10.5, 10.6])
    out = assemble_frame(imgs, infos, cams, lambda t, s, ns: buf.lookup_matrix(t, s, ns), "base_link", "odom")
    f = out.frame
    assert out.stamp_ns == 10_500_000_000 and f.timestamp == 10.5 and f.camera_names == names
    np.testing.assert_allclose(f.T_world_ego.numpy(), make_transform(_yaw(0.0), [5, 0, 0]), atol=1e-6)
    np.testing.assert_allclose(f.T_ego_cam[0].numpy(), T_base_a, atol=1e-6)
    np.testing.assert_allclose(f.T_ego_cam[1].numpy(), make_transform(_yaw(0.0), [1, 0, 0]) @ T_base_b, atol=1e-5)
    assert f.images.shape == (2, 3, 4, 6) and float(f.images[1, 0, 0, 0]) == pytest.approx(20 / 255)
    np.testing.assert_allclose(f.K[0].numpy(), [[5, 0, 3], [0, 5, 2], [0, 0, 1]])


def test_assemble_frame_errors_have_kinds():
    names = ["A", "B"]
    cams = [CameraConfig(n, f"/{n}/image_raw", f"/{n}/camera_info") for n in names]
    ok_lookup = lambda t, s, ns: np.eye(4)  # noqa: E731
    imgs, infos = _cam_msgs(names, [1.0, 1.0])
    with pytest.raises(InputError) as e:
        assemble_frame(imgs, [infos[0], None], cams, ok_lookup, "base_link", "odom")
    assert e.value.kind == "camera_info" and e.value.camera == "B" and "/B/camera_info" in str(e.value)
    bad = conv.make_camera_info(np.eye(3) * [5, 5, 1], 4, 7)
    with pytest.raises(InputError) as e:
        assemble_frame(imgs, [infos[0], bad], cams, ok_lookup, "base_link", "odom")
    assert e.value.kind == "size" and "image is 6x4 but camera_info says 7x4" in str(e.value)
    imgs[0].encoding = "yuv422"
    with pytest.raises(InputError) as e:
        assemble_frame(imgs, infos, cams, ok_lookup, "base_link", "odom")
    assert e.value.kind == "image" and e.value.camera == "A"
    imgs, infos = _cam_msgs(names, [1.0, 1.0])

    def failing(t, s, ns):
        raise ExtrapolationException("Lookup would require extrapolation into the future")

    with pytest.raises(InputError) as e:
        assemble_frame(imgs, infos, cams, failing, "base_link", "odom")
    assert e.value.kind == "tf" and "odom <- base_link" in str(e.value) and "future" in str(e.value)
    small, small_info = _cam_msgs(["B"], [1.0], h=2, w=3)
    with pytest.raises(InputError) as e:
        assemble_frame([imgs[0], small[0]], [infos[0], small_info[0]], cams, ok_lookup, "base_link", "odom")
    assert e.value.kind == "size" and "different image sizes" in str(e.value)


def test_latest_worker_drops_old_items():
    gate = threading.Event()
    seen = []

    def process(x):
        gate.wait(5)
        seen.append(x)

    errors = []
    w = LatestWorker(process, on_error=errors.append).start()
    assert w.submit(1) is False  # taken by the worker, which blocks on the gate
    time.sleep(0.1)
    assert [w.submit(i) for i in (2, 3, 4)] == [False, True, True]  # 2 and 3 replaced
    gate.set()
    end = time.monotonic() + 5
    while not w.idle() and time.monotonic() < end:
        time.sleep(0.01)
    w.stop()
    assert seen == [1, 4] and w.dropped == 2 and w.processed == 2 and w.submitted == 4 and not errors


def test_latest_worker_skips_items_that_waited_too_long():
    """max_wait: an item submitted while the worker was busy, and older than max_wait when the
    worker comes to it, is skipped (stale) instead of processed; a fresh one is processed."""
    gate = threading.Event()
    seen, stale = [], []

    def process(x):
        if x == 1:
            gate.wait(5)
        seen.append(x)

    w = LatestWorker(process, max_wait=0.1, on_stale=lambda item, waited: stale.append((item, waited))).start()
    w.submit(1)
    time.sleep(0.05)
    w.submit(2)  # waits behind 1 ...
    time.sleep(0.3)  # ... for longer than max_wait
    gate.set()
    end = time.monotonic() + 5
    while not w.idle() and time.monotonic() < end:
        time.sleep(0.01)
    w.submit(3)  # the worker is idle: taken at once
    end = time.monotonic() + 5
    while 3 not in seen and time.monotonic() < end:
        time.sleep(0.01)
    w.stop()
    assert seen == [1, 3] and w.stale == 1 and w.processed == 2 and w.dropped == 0
    assert stale[0][0] == 2 and stale[0][1] >= 0.3
    with pytest.raises(ValueError, match="max_wait"):
        LatestWorker(process, max_wait=-1.0)


def test_latest_worker_survives_exceptions():
    errors, seen = [], []

    def process(x):
        if x == "bad":
            raise RuntimeError("model exploded")
        seen.append(x)

    w = LatestWorker(process, on_error=errors.append).start()
    for item in ("bad", "good"):
        w.submit(item)
        end = time.monotonic() + 5
        while not w.idle() and time.monotonic() < end:
            time.sleep(0.01)
    w.stop()
    assert seen == ["good"] and len(errors) == 1 and "exploded" in str(errors[0]) and w.errors == 1


def test_rate_meter_throttle_and_stats():
    r = RateMeter(window=2.0)
    for k in range(11):
        r.tick(100.0 + 0.1 * k)  # 10 Hz for 1 s
    assert r.rate(101.0) == pytest.approx(10.0)
    assert r.rate(103.5) == 0.0  # all ticks left the window
    th = WarnThrottle(period=5.0)
    assert th.should_log("a", 0.0) and not th.should_log("a", 4.9) and th.should_log("b", 4.9)
    assert th.should_log("a", 5.0)

    st = NodeStats(["A", "B"], camera_timeout=1.0)
    t0 = st.start_time
    st.on_image("A", t0 + 0.5)
    st.on_synced(t0 + 0.5, dropped=False)
    st.on_synced(t0 + 0.6, dropped=True)
    st.on_error("tf", "[tf] extrapolation into the future")
    st.on_published(t0 + 0.7, latency_s=0.2, model_s=0.1, overhead_s=0.05)
    statuses = {s.name.split(": ")[1]: s for s in st.statuses(t0 + 1.2)}
    assert statuses["camera A"].level == 0 and statuses["camera B"].level == 1  # B never sent: stale
    assert statuses["camera B"].message == "no image received yet"
    p = statuses["pipeline"]
    assert p.level == 1 and "stale cameras: B" in p.message and "last tf" in p.message
    assert p.values["dropped_sets"] == "1" and p.values["synced_sets"] == "2" and p.values["errors_tf"] == "1"
    assert p.values["latency_mean_s"] == "0.2000" and p.values["model_mean_s"] == "0.1000"
    assert statuses["tf"].level == 1 and statuses["tf"].values["failures"] == "1"
    assert st.stale_cameras(t0 + 1.6) == ["A", "B"]


# ============================================================================ msg build helper


def test_patch_exported_include_dirs_rewrites_foreign_paths_idempotently(tmp_path):
    import sysconfig

    import numpy

    from selfocc_ros.msg_build import patch_exported_include_dirs

    cmake = tmp_path / "share" / "geometry_msgs" / "cmake"
    cmake.mkdir(parents=True)
    real = tmp_path / "include"
    real.mkdir()
    f = cmake / "export_geometry_msgs__rosidl_generator_pyExport.cmake"
    f.write_text(
        'set_target_properties(x PROPERTIES\n'
        f'  INTERFACE_INCLUDE_DIRECTORIES "/opt/python/cp311-cp311/include/python3.11;'
        f'/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include;{real}"\n)\n')
    other = cmake / "unrelated.cmake"  # not an *Export.cmake file: untouched
    other.write_text('INTERFACE_INCLUDE_DIRECTORIES "/opt/python/cp311-cp311/include/python3.11"')
    assert patch_exported_include_dirs(tmp_path) == 1
    text = f.read_text()
    assert "/opt/python" not in text
    assert f'"{sysconfig.get_paths()["include"]};{numpy.get_include()};{real}"' in text
    assert patch_exported_include_dirs(tmp_path) == 0  # idempotent
    assert "/opt/python" in other.read_text()
