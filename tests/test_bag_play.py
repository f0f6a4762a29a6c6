"""`selfocc bag play` in a subprocess, received over real DDS by rclpy subscribers."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from selfocc_core.geometry.transforms import T_FLU_OPTICAL, make_transform
from selfocc_ros.bag.writer import (
    CAMERA_INFO,
    IMAGE,
    QOS_LATCHED,
    TF_MESSAGE,
    AtomicBagWriter,
    camera_info_msg,
    image_msg,
    tf_message,
    transform_stamped,
)

pytestmark = pytest.mark.ros

T0 = 1_700_000_000 * 10**9
PERIOD = 100_000_000  # 10 Hz
N = 10
K = np.array([[20.0, 0, 12], [0, 20.0, 8], [0, 0, 1]])


def _env(domain: int, extra: dict | None = None) -> dict:
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), FASTDDS_BUILTIN_TRANSPORTS="LARGE_DATA")
    env.update(extra or {})
    return env


@pytest.fixture()
def domain(monkeypatch):
    # A private DDS domain: other test sessions may run on this machine at the same time.
    d = random.Random(os.getpid() ^ time.time_ns()).randint(20, 200)
    monkeypatch.setenv("ROS_DOMAIN_ID", str(d))
    monkeypatch.setenv("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    return d


@pytest.fixture()
def bag(tmp_path):
    out = tmp_path / "play_bag"
    with AtomicBagWriter(out, storage="mcap") as b:
        T = make_transform(np.eye(3), [1.0, 0, 1.5]) @ T_FLU_OPTICAL
        b.write("/tf_static", TF_MESSAGE, T0, tf_message([transform_stamped(T, T0, "base_link", "a_optical_frame")]),
                qos=QOS_LATCHED)
        for i in range(N):
            t = T0 + i * PERIOD
            b.write("/tf", TF_MESSAGE, t, tf_message([transform_stamped(
                make_transform(np.eye(3), [0.5 * i, 0, 0]), t, "odom", "base_link")]))
            px = np.full((16, 24, 3), 10 * i, np.uint8)
            b.write("/A/image_raw", IMAGE, t, image_msg(px, t, "a_optical_frame"))
            b.write("/A/camera_info", CAMERA_INFO, t, camera_info_msg(K, 24, 16, t, "a_optical_frame"))
    return out


def _play(bag, domain, *extra, env_extra=None):
    return subprocess.Popen([sys.executable, "-m", "selfocc_core.cli", "bag", "play", str(bag), *extra],
                            env=_env(domain, env_extra), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


IMAGE_SUBSCRIBER = textwrap.dedent("""
    import json, sys, time
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CameraInfo, Image
    rclpy.init()
    node = rclpy.create_node("bag_play_listener")
    got = {"img": [], "info": [], "clock": []}
    qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    stamp = lambda h: h.stamp.sec * 10**9 + h.stamp.nanosec
    node.create_subscription(Image, "/A/image_raw", lambda m: got["img"].append(
        (stamp(m.header), m.header.frame_id, m.encoding, int(m.data[0]))), qos)
    node.create_subscription(CameraInfo, "/A/camera_info", lambda m: got["info"].append(
        (stamp(m.header), list(m.k))), qos)
    node.create_subscription(Clock, "/clock", lambda m: got["clock"].append(m.clock.sec * 10**9 + m.clock.nanosec), qos)
    print("ready", flush=True)
    n = int(sys.argv[2])
    end = time.time() + float(sys.argv[1])
    while time.time() < end and (len(got["img"]) < n or len(got["info"]) < n):
        rclpy.spin_once(node, timeout_sec=0.05)
    # the last /clock may arrive after the last image: wait for it (bounded), not a fixed linger
    last = max((s for s, *_ in got["img"]), default=None)
    linger = time.time() + 5.0
    while time.time() < linger and (not got["clock"] or got["clock"][-1] != last):
        rclpy.spin_once(node, timeout_sec=0.05)
    print(json.dumps(got), flush=True)
""")


def test_play_delivers_recorded_stamps_and_clock(bag, domain):
    # Listener and player are separate processes with one DDS set-up (this test process may
    # already hold a participant configured otherwise by other tests).
    listener = subprocess.Popen([sys.executable, "-c", IMAGE_SUBSCRIBER, "90", str(N)], env=_env(domain),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert listener.stdout.readline().strip() == "ready", listener.stderr.read()
        proc = _play(bag, domain, "--rate", "2", "--wait-for-subscribers", "60",
                     "--topics", "/A/image_raw", "/A/camera_info")
        try:
            out, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        lout, lerr = listener.communicate(timeout=120)
    finally:
        if listener.poll() is None:
            listener.kill()
    assert proc.returncode == 0, out
    assert "published 20 messages" in out
    assert "playing anyway" not in out, out  # every topic had a subscriber before playback
    assert listener.returncode == 0, lerr
    got = json.loads(lout.strip().splitlines()[-1])
    want = [T0 + i * PERIOD for i in range(N)]
    assert [s for s, *_ in got["img"]] == want
    assert all(f == "a_optical_frame" and e == "rgb8" for _, f, e, _ in got["img"])
    assert [v for *_, v in got["img"]] == [10 * i for i in range(N)]  # the recorded pixels
    assert [s for s, _ in got["info"]] == want and got["info"][0][1] == K.reshape(-1).tolist()
    # (pacing is checked without DDS below: reliable delivery may arrive in a burst)
    # /clock runs in bag time through the recording and never goes backwards.
    clock = got["clock"]
    assert len(clock) >= 5 and clock == sorted(clock)
    assert T0 <= clock[0] and clock[-1] == want[-1]


class _FakePublisher:
    def __init__(self, topic, log):
        self.topic, self.log = topic, log

    def publish(self, msg):
        self.log.append((self.topic, time.monotonic(), msg))

    def get_subscription_count(self):
        return 1


class _FakeNode:
    """Records what BagPlayer publishes and when (no DDS: exact pacing checks)."""

    def __init__(self):
        self.log = []

    def create_publisher(self, cls, topic, qos):
        return _FakePublisher(topic, self.log)


def test_player_paces_by_recorded_time_offset_and_topics(bag):
    from selfocc_ros import msg_build
    from selfocc_ros.bag.play import BagPlayer

    msg_build.activate_in_process()  # tf2_msgs (real or the stand-in) for /tf_static
    node = _FakeNode()
    player = BagPlayer(node, bag, rate=2.0, topics=["/A/image_raw", "/tf_static"], start_offset=0.35, clock_hz=50)
    try:
        assert set(player.publishers) == {"/A/image_raw", "/tf_static"} and player.latched == {"/tf_static"}
        n = player.play_once()
    finally:
        player.close()
    images = [(t, m) for topic, t, m in node.log if topic == "/A/image_raw"]
    # frames at 0.4 .. 0.9 s are after the 0.35 s offset; /tf_static (at 0 s) is latched and still sent
    assert len(images) == 6 and n == 7
    assert [tp for tp, _, _ in node.log if tp != "/clock"][0] == "/tf_static"
    first_t = images[0][0]
    for k, (t, raw) in enumerate(images):
        assert isinstance(raw, bytes)
        due = k * 0.1 / 2.0  # 100 ms of bag time per frame at rate 2
        assert due - 0.005 <= t - first_t <= due + 0.25, (k, t - first_t)
    # /clock: bag time, never backwards, never ahead of the message published after it
    clock = [(t, m.clock.sec * 10**9 + m.clock.nanosec) for tp, t, m in node.log if tp == "/clock"]
    values = [v for _, v in clock]
    assert values == sorted(values) and values[0] == T0 + 350_000_000 and values[-1] == T0 + 9 * PERIOD
    assert len(clock) >= 10  # 50 Hz over ~0.25 s of wall time, plus one per message
    with pytest.raises(ValueError, match="rate"):
        BagPlayer(_FakeNode(), bag, rate=0)


SUBSCRIBER = textwrap.dedent("""
    import json, sys, time
    import rclpy
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from tf2_msgs.msg import TFMessage
    rclpy.init()
    node = rclpy.create_node("late_tf_listener")
    got = {"static": [], "tf": []}
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(TFMessage, "/tf_static", lambda m: got["static"].extend(
        [(t.header.frame_id, t.child_frame_id, t.transform.translation.z) for t in m.transforms]), latched)
    node.create_subscription(TFMessage, "/tf", lambda m: got["tf"].extend(
        [(t.header.stamp.sec * 10**9 + t.header.stamp.nanosec, t.transform.translation.x) for t in m.transforms]), 50)
    end = time.time() + float(sys.argv[1])
    while time.time() < end and not (got["static"] and len(got["tf"]) >= 3):
        rclpy.spin_once(node, timeout_sec=0.05)
    print(json.dumps(got))
""")


def test_tf_static_is_latched_for_late_subscribers(bag, domain):
    from selfocc_ros import msg_build

    env = msg_build.build()  # tf2_msgs stand-in (cached under build/ros_ws)
    player = _play(bag, domain, "--loop", "--rate", "4", "--topics", "/tf_static", "/tf", env_extra=env)
    try:
        time.sleep(3.0)  # the player has long published /tf_static when the listener starts
        assert player.poll() is None, player.stdout.read()
        sub = subprocess.run([sys.executable, "-c", SUBSCRIBER, "30"], env=_env(domain, env),
                             capture_output=True, text=True, timeout=120)
    finally:
        player.terminate()
        try:
            player.wait(timeout=10)
        except subprocess.TimeoutExpired:
            player.kill()
    assert sub.returncode == 0, sub.stderr
    got = json.loads(sub.stdout.strip().splitlines()[-1])
    assert got["static"] and got["static"][0][:2] == ["base_link", "a_optical_frame"]
    assert got["static"][0][2] == pytest.approx(1.5)
    # /tf carries the recorded stamps with x = 0.5 m per frame
    for stamp, x in got["tf"]:
        assert (stamp - T0) % PERIOD == 0 and x == pytest.approx(0.5 * ((stamp - T0) // PERIOD))
