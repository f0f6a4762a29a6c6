"""In-process node tests: fixture publisher, occupancy node and collector on one executor, real DDS.

The node runs with the deterministic StandInPredictor here (plumbing, bad input, drop-old);
test_ros_multiprocess.py runs the real predictor in separate processes.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

import rclpy.executors  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from ros_common import (  # noqa: E402
    RENDER_CACHE, TINY_CAMS, dds_env, check_outputs_match, make_tiny_checkpoint, spin_until, test_domain_id,
)
from selfocc_ros.testing import FixturePublisher, OutputCollector, StandInPredictor  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module", autouse=True)
def _dds_env():
    with dds_env():
        yield

CAMS = ["CAM_FRONT", "CAM_BACK"]
NUM_FRAMES = 6  # one rendered drive shared by all tests (renders are cached per process)


@pytest.fixture(scope="session")
def ros_msgs():
    from selfocc_ros import msg_build

    try:
        return msg_build.activate_in_process()
    except msg_build.BuildError as e:
        pytest.fail(f"interface packages could not be built: {e}")


class Graph:
    """Fixture publisher + occupancy node + collector in one context, spun by a background executor."""

    def __init__(self, predictor=None, faults=None, compressed="", params=None, num_frames=NUM_FRAMES, cams=CAMS,
                 outputs=OutputCollector.OUTPUTS):
        from selfocc_ros.occupancy_node import OccupancyNode

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=test_domain_id())
        self.cams = cams
        overrides = [Parameter("camera_names", value=cams), Parameter("camera_timeout", value=1.0),
                     Parameter("diagnostics_period", value=0.2), Parameter("tf_timeout", value=0.1)]
        if compressed:
            overrides.append(Parameter("image_transport", value="compressed"))
        params = {"publish.marker_period": 0.0, **(params or {})}  # markers with every result (tests wait for them)
        for k, v in params.items():
            overrides.append(Parameter(k, value=v))
        self.node = OccupancyNode(predictor=predictor or StandInPredictor(), context=self.ctx, parameter_overrides=overrides)
        self.node.configure()
        self.node.activate()
        self.pub_node = rclpy.create_node("fixture", context=self.ctx)
        self.fixture = FixturePublisher(self.pub_node, cams, num_frames=num_frames, height=48, width=88,
                                        compressed=compressed, faults=faults, start_stamp_ns=1_700_000_000 * 10**9,
                                        cache_dir=RENDER_CACHE)
        for i in range(num_frames):  # render up front so playing is fast and timing-stable
            self.fixture.frame(i)
        self.sub_node = rclpy.create_node("collector", context=self.ctx)
        self.out = OutputCollector(self.sub_node, "/selfocc_occupancy", cams, outputs=outputs)
        self.executor = MultiThreadedExecutor(num_threads=2, context=self.ctx)
        for n in (self.node, self.pub_node, self.sub_node):
            self.executor.add_node(n)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()
        # discovery: wait until the node's image subscriptions see the publishers
        n = self.node
        watched = [p for o, p in (("cloud", n.pub_cloud), ("markers", n.pub_markers), ("grid", n.pub_grid))
                   if o in outputs and p is not None] + (list(n.pub_depth.values()) if "depth" in outputs else [])
        spin_until(None, lambda: all(p.get_subscription_count() > 0 for p in self.fixture.pub_img.values())
                   and all(p.get_subscription_count() > 0 for p in watched), 10.0)

    def play(self, i, wait_output=True, timeout=10.0):
        stamp = self.fixture.publish_frame(i)
        if wait_output:
            ok = spin_until(None, lambda: self.out.complete([stamp], with_grid=self.node.pub_grid is not None), timeout)
            assert ok, f"no complete output for frame {i}; stats: errors={dict(self.node.stats.errors)} {self.node.stats.last_error}"
        return stamp

    def close(self):
        self.executor.shutdown(timeout_sec=2.0)
        for n in (self.node, self.pub_node, self.sub_node):
            n.destroy_node()
        rclpy.shutdown(context=self.ctx)


@pytest.fixture
def graph_factory(ros_msgs):
    graphs = []

    def make(**kw):
        g = Graph(**kw)
        graphs.append(g)
        return g

    yield make
    for g in graphs:
        g.close()


def test_node_publishes_outputs_equal_to_offline_prediction(graph_factory):
    g = graph_factory(num_frames=NUM_FRAMES)
    offline = StandInPredictor()
    for i in range(3):
        stamp = g.play(i)
        assert stamp == g.fixture.stamp_ns(i)
        check_outputs_match(g.out, stamp, offline.predict(g.fixture.frame(i)), CAMS)
    # the frames differ, so the outputs must too (guards against publishing a constant)
    a, b = (np.frombuffer(bytes(g.out.grids[g.fixture.stamp_ns(i)].labels), np.uint8) for i in (0, 2))
    assert (a != b).any()
    assert g.node.stats.sets_published == 3 and not g.node.stats.errors


def test_node_frame_assembly_uses_tf_and_camera_info(graph_factory):
    seen = []
    g = graph_factory(num_frames=NUM_FRAMES)
    g.node.on_result = lambda assembled, pred: seen.append(assembled)
    g.play(1)
    frame = g.fixture.frame(1)
    got = seen[-1].frame
    np.testing.assert_allclose(got.T_world_ego.numpy(), frame.T_world_ego.numpy(), atol=1e-5)
    np.testing.assert_allclose(got.T_ego_cam.numpy(), frame.T_ego_cam.numpy(), atol=1e-5)
    np.testing.assert_allclose(got.K.numpy(), frame.K.numpy(), rtol=1e-6)
    assert (got.images - frame.images).abs().max() <= 0.5 / 255 + 1e-6  # 8-bit quantisation
    assert got.camera_names == CAMS and seen[-1].stamp_ns == g.fixture.stamp_ns(1)


def test_bad_input_is_reported_and_node_keeps_serving(graph_factory):
    faults = {1: "encoding", 2: "size", 3: "tf_missing", 4: "tf_nan"}
    g = graph_factory(faults=faults, num_frames=NUM_FRAMES)
    offline = StandInPredictor()
    g.play(0)
    errors_before = 0
    for i, kind in faults.items():
        g.play(i, wait_output=False)
        assert spin_until(None, lambda: sum(g.node.stats.errors.values()) > errors_before, 5.0), f"fault {kind} not seen"
        errors_before = sum(g.node.stats.errors.values())
    stamp = g.play(5)
    check_outputs_match(g.out, stamp, offline.predict(g.fixture.frame(5)), CAMS)
    errs = g.node.stats.errors
    assert errs["image"] == 1 and errs["size"] == 1 and errs["tf"] == 2, dict(errs)
    assert "yuv422" in g.node.stats.last_error["image"] and "image is 86x48 but camera_info says 88x48" in g.node.stats.last_error["size"]
    assert "extrapolation" in g.node.stats.last_error["tf"]
    assert not any(g.fixture.stamp_ns(i) in g.out.clouds for i in faults)
    # diagnostics over DDS report it
    assert spin_until(None, lambda: (s := g.out.status("pipeline")) is not None and s.level == b"\x01"
                      and dict((kv.key, kv.value) for kv in s.values).get("errors_tf") == "2", 3.0)
    tf_status = g.out.status(": tf")
    assert tf_status.level == b"\x01" and "extrapolation" in tf_status.message


def test_corrupt_compressed_image(graph_factory):
    g = graph_factory(compressed="png", faults={1: "corrupt"}, num_frames=NUM_FRAMES)
    offline = StandInPredictor()
    g.play(0)
    g.play(1, wait_output=False)
    assert spin_until(None, lambda: g.node.stats.errors["image"] == 1, 5.0)
    assert "corrupt compressed image" in g.node.stats.last_error["image"]
    stamp = g.play(2)
    check_outputs_match(g.out, stamp, offline.predict(g.fixture.frame(2)), CAMS)  # png is lossless


def test_silent_camera_goes_stale_in_diagnostics(graph_factory):
    g = graph_factory(faults={1: "silent"}, num_frames=NUM_FRAMES, params={"camera_timeout": 0.4})
    g.play(0)
    n0 = len(g.out.diagnostics)
    # CAM_FRONT keeps sending at ~7 Hz, CAM_BACK is silent. Wait for a report with CAM_BACK stale and
    # CAM_FRONT fresh; keep playing until a deadline since a loaded CI machine can delay single
    # deliveries (the state we want must still show up, and CAM_BACK must never come back).
    both, deadline, i = None, time.monotonic() + 15.0, 1
    while both is None and time.monotonic() < deadline:
        g.play(i, wait_output=False)
        i = i % (NUM_FRAMES - 1) + 1
        time.sleep(0.15)
        for arr in reversed(g.out.diagnostics[n0:]):
            st = {s.name.split("camera ")[-1]: s for s in arr.status if "camera " in s.name}
            if st and st["CAM_BACK"].level == b"\x01" and st["CAM_FRONT"].level == b"\x00":
                both = st
                break
    assert both is not None, "no report with CAM_BACK stale and CAM_FRONT fresh"
    assert "no image for" in both["CAM_BACK"].message and both["CAM_FRONT"].message == "ok"
    back = [s.level for arr in g.out.diagnostics[n0:] for s in arr.status if s.name.endswith("camera CAM_BACK")]
    assert b"\x00" not in back[back.index(b"\x01"):]  # once stale, stale until it sends again
    pipeline = g.out.status("pipeline")
    assert pipeline.level == b"\x01" and "stale cameras: CAM_BACK" in pipeline.message
    assert len(g.out.clouds) == 1  # no complete set without CAM_BACK, and no crash


def test_worker_drops_old_sets_and_never_blocks_executor(graph_factory):
    slow = StandInPredictor(delay_s=1.5)
    # qos.depth 5: every set reaches the synchroniser, so the drop-old here is the worker's
    # (the default depth 1 drops at the reader already: test_ros_realtime)
    g = graph_factory(predictor=slow, num_frames=NUM_FRAMES, params={"qos.depth": 5})
    stamps = [g.play(i, wait_output=False) for i in range(5)]  # 5 sets within ~0.3 s
    # The executor keeps running callbacks while the model works: diagnostics (every 0.2 s) keep
    # arriving before the newest set can have been published (>= 2 predictions of 1.5 s each).
    # Judged by order of events, not wall-clock, so a loaded CI machine cannot make it flaky.
    n0 = len(g.out.diagnostics)
    assert spin_until(None, lambda: len(g.out.diagnostics) >= n0 + 2, 2.5)
    assert stamps[-1] not in g.out.clouds, "diagnostics waited for the model: executor blocked"
    assert spin_until(None, lambda: stamps[-1] in g.out.clouds, 10.0), "newest set never published"
    st = g.node.stats
    assert spin_until(None, lambda: st.sets_published + st.sets_dropped == 5, 3.0)
    assert st.sets_synced == 5 and st.sets_dropped >= 2 and st.sets_published == 5 - st.sets_dropped
    assert stamps[-1] in g.out.clouds and not all(s in g.out.clouds for s in stamps)


@pytest.mark.parametrize("max_wait", [0.0, 0.2])
def test_max_queue_wait_drops_sets_that_waited_for_the_running_inference(graph_factory, max_wait):
    """max_queue_wait 0 (default): a set that arrives while the model runs waits and is inferred
    next. 0.2 s: that set (waiting ~1 s behind a 1.2 s inference) is dropped as stale, reported in
    /diagnostics, and the next set, arriving at an idle worker, is inferred at once."""
    slow = StandInPredictor(delay_s=1.2)
    g = graph_factory(predictor=slow, num_frames=NUM_FRAMES, params={"max_queue_wait": max_wait})
    first = g.play(0, wait_output=False)
    assert spin_until(None, lambda: len(slow.calls) == 1, 5.0)  # the model is running
    second = g.play(1, wait_output=False)
    assert spin_until(None, lambda: first in g.out.clouds, 10.0)
    st = g.node.stats
    if max_wait:
        assert spin_until(None, lambda: st.sets_stale == 1, 5.0)
        time.sleep(0.3)
        assert second not in g.out.clouds and len(slow.calls) == 1
        third = g.play(2)  # the worker is idle: not stale
        assert third in g.out.clouds and st.sets_stale == 1 and len(slow.calls) == 2
        assert spin_until(None, lambda: (g.out.status("pipeline") is not None and {
            kv.key: kv.value for kv in g.out.status("pipeline").values}.get("stale_sets") == "1"), 5.0)
    else:
        assert spin_until(None, lambda: second in g.out.clouds, 10.0)
        assert st.sets_stale == 0 and len(slow.calls) == 2


def test_bad_checkpoints_fail_configure_naming_the_file(ros_msgs, tmp_path):
    """Missing / unreadable / other-model / other-cameras checkpoints end configure() with a clear error
    (main() turns it into exit status 1: see test_ros_multiprocess)."""
    import yaml

    from selfocc_core.training.config import PRESET_DIR
    from selfocc_ros.occupancy_node import OccupancyNode

    good = make_tiny_checkpoint(tmp_path / "tiny_synth.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a torch checkpoint")
    cfg = yaml.safe_load((PRESET_DIR / "tiny_synth.yaml").read_text())
    cfg["model"]["embed_dim"] = 48
    wider = tmp_path / "wider.yaml"
    wider.write_text(yaml.safe_dump(cfg))
    cases = [
        (dict(checkpoint=str(tmp_path / "missing.pt")), FileNotFoundError,
         [f"checkpoint not found: {tmp_path / 'missing.pt'}", "expected a selfocc_core checkpoint"]),
        (dict(checkpoint=""), FileNotFoundError, ["parameter 'checkpoint' is empty"]),
        (dict(checkpoint=str(garbage)), ValueError, [str(garbage), "not a readable checkpoint"]),
        (dict(checkpoint=str(good), model_config=str(wider)), ValueError,
         [str(good), "another model config", "embed_dim", str(wider)]),
        (dict(checkpoint=str(good), camera_names=["CAM_BACK"]), ValueError,
         [str(good), f"trained on cameras {TINY_CAMS}", "['CAM_BACK']"]),
    ]
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=test_domain_id())
    try:
        for params, exc, parts in cases:
            params = {"camera_names": TINY_CAMS, "device": "cpu", **params}
            node = OccupancyNode(context=ctx, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
            try:
                with pytest.raises(exc) as info:
                    node.configure()
                for part in parts:
                    assert part in str(info.value), (part, str(info.value))
            finally:
                node.destroy_node()
        # and the good one loads
        node = OccupancyNode(context=ctx, parameter_overrides=[
            Parameter("camera_names", value=TINY_CAMS), Parameter("checkpoint", value=str(good)),
            Parameter("device", value="cpu"), Parameter("model_config", value="tiny_synth")])
        node.configure()
        assert node.predictor.camera_names == TINY_CAMS
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


def test_tf_listener_gets_static_transforms_published_before_it_started(ros_msgs):
    """/tf_static is transient-local: a node started after the publisher still gets the camera extrinsics;
    /tf samples feed the buffer and NaN transforms are rejected (counted for diagnostics)."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from tf2_msgs.msg import TFMessage

    from selfocc_core.geometry.transforms import T_FLU_OPTICAL, make_transform
    from selfocc_ros import compat
    from selfocc_ros import conversions as conv

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=test_domain_id())
    try:
        pub = rclpy.create_node("static_pub", context=ctx)
        static_pub = pub.create_publisher(TFMessage, "/tf_static", QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        dyn_pub = pub.create_publisher(TFMessage, "/tf", QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        T = make_transform([1.0, 0, 0, 0], [1.5, 0.0, 1.6]) @ T_FLU_OPTICAL
        static_pub.publish(TFMessage(transforms=[conv.matrix_to_transform_stamped(T, "base_link", "cam_optical_frame")]))
        time.sleep(0.2)
        late = rclpy.create_node("late_listener", context=ctx)
        buffer, listener, lookup = compat.make_tf(late)
        ex = rclpy.executors.SingleThreadedExecutor(context=ctx)
        ex.add_node(pub)
        ex.add_node(late)
        def can_lookup(target, source):  # through the API both backends share (tf2_ros.Buffer needs rclpy Time)
            try:
                lookup(target, source, 0)
                return True
            except Exception:
                return False

        assert spin_until(ex, lambda: can_lookup("base_link", "cam_optical_frame"), 10.0)
        assert listener.static_updates == 1
        np.testing.assert_allclose(lookup("base_link", "cam_optical_frame", 123), T, atol=1e-9)
        good = conv.matrix_to_transform_stamped(np.eye(4), "odom", "base_link", 5 * 10**9)
        bad = conv.matrix_to_transform_stamped(np.eye(4), "odom", "base_link", 6 * 10**9)
        bad.transform.rotation.w = float("nan")
        assert spin_until(ex, lambda: dyn_pub.get_subscription_count() > 0, 5.0)
        dyn_pub.publish(TFMessage(transforms=[good, bad]))
        assert spin_until(ex, lambda: listener.rejected == 1, 5.0)
        assert "TF_NAN_INPUT" in listener.last_rejection
        np.testing.assert_allclose(lookup("odom", "cam_optical_frame", 5 * 10**9), T, atol=1e-9)
        ex.shutdown()
        pub.destroy_node()
        late.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


def test_worker_waits_for_tf_that_lags_the_images(graph_factory):
    """Odometry often arrives after the images: within tf_timeout the set is still served."""
    from tf2_msgs.msg import TFMessage

    from selfocc_ros import conversions as conv

    g = graph_factory(faults={1: "tf_missing"}, params={"tf_timeout": 2.0})
    g.play(0)
    stamp = g.play(1, wait_output=False)
    time.sleep(0.4)
    assert stamp not in g.out.clouds  # still waiting for odom -> base_link at the stamp
    T = g.fixture.frame(1).T_world_ego.double().numpy()
    g.fixture.pub_tf.publish(TFMessage(transforms=[conv.matrix_to_transform_stamped(T, "odom", "base_link", stamp)]))
    assert spin_until(None, lambda: g.out.complete([stamp]), 5.0)
    check_outputs_match(g.out, stamp, StandInPredictor().predict(g.fixture.frame(1)), CAMS)
    assert not g.node.stats.errors


def test_node_runs_without_the_grid_message(graph_factory, monkeypatch):
    """No selfocc_msgs (not built): ~/grid is disabled, every other output still flows."""
    import selfocc_ros.occupancy_node as occ

    monkeypatch.setattr(occ, "_grid_msg_type", lambda: None)
    g = graph_factory()
    assert g.node.pub_grid is None
    stamp = g.play(0)
    check_outputs_match(g.out, stamp, StandInPredictor().predict(g.fixture.frame(0)), CAMS)
    assert not g.out.grids


def _set_parameters(client_node, executor_spin, target: str, params: dict):
    """What `ros2 param set` does: the node's SetParameters service. -> [SetParametersResult]."""
    from rcl_interfaces.srv import SetParameters

    cli = client_node.create_client(SetParameters, f"{target}/set_parameters")
    assert spin_until(None, lambda: cli.wait_for_service(timeout_sec=0.1), 10.0)
    req = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in params.items()])
    fut = cli.call_async(req)
    assert spin_until(None, fut.done, 10.0)
    client_node.destroy_client(cli)
    return fut.result().results


def test_param_set_applies_at_run_time_or_is_refused(graph_factory):
    """`ros2 param set`: run-time parameters take effect on the next set; read-only ones are refused."""
    g = graph_factory()
    s0 = g.play(0)
    assert s0 in g.out.markers
    res = _set_parameters(g.sub_node, None, "/selfocc_occupancy", {"publish.markers": False, "sync.slop": 0.02})
    assert all(r.successful for r in res), res
    assert g.node._sync.slop == pytest.approx(0.02)
    s1 = g.fixture.publish_frame(1)
    assert spin_until(None, lambda: s1 in g.out.clouds and all(s1 in g.out.depth[c] for c in CAMS), 10.0)
    time.sleep(0.3)
    assert s1 not in g.out.markers  # switched off
    res = _set_parameters(g.sub_node, None, "/selfocc_occupancy", {"publish.markers": True, "camera_timeout": 3.0})
    assert all(r.successful for r in res), res
    assert g.node.stats.camera_timeout == 3.0
    g.play(2)  # complete output again, markers included
    for name, value in (("checkpoint", "/tmp/other.pt"), ("base_frame", "map"), ("sync.queue_size", 3),
                        ("camera_names", ["CAM_FRONT"])):
        (r,) = _set_parameters(g.sub_node, None, "/selfocc_occupancy", {name: value})
        assert not r.successful and r.reason, name
        assert "read-only" in r.reason or "fixed" in r.reason, (name, r.reason)
    (r,) = _set_parameters(g.sub_node, None, "/selfocc_occupancy", {"sync.slop": -1.0})
    assert not r.successful and "sync.slop must be > 0" in r.reason
    assert g.node.get_parameter("base_frame").value == "base_link"
    # what may change at run time is writable, the rest is read-only (a set is refused, not ignored)
    writable = {n for n in g.node._parameters if not g.node.describe_parameter(n).read_only}
    assert {n for n in g.node._parameters if n.startswith("publish.")} <= writable
    assert {"sync.slop", "tf_timeout", "camera_timeout"} <= writable
    assert not writable & {"checkpoint", "device", "image_transport", "qos.depth", "sync.queue_size", "base_frame"}


def test_empty_camera_names_take_the_checkpoints_cameras(ros_msgs, tmp_path):
    """The README's command with the README's checkpoint: no camera_names -> the checkpoint's, in order."""
    from selfocc_ros.occupancy_node import OccupancyNode

    ckpt = make_tiny_checkpoint(tmp_path / "tiny.pt")
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=test_domain_id(),
               args=["--ros-args", "-p", "cameras.CAM_FRONT_LEFT.image_topic:=/left/image_raw"])
    try:
        node = OccupancyNode(context=ctx, parameter_overrides=[
            Parameter("checkpoint", value=str(ckpt)), Parameter("device", value="cpu")])
        node.configure()
        assert [c.name for c in node.cameras] == TINY_CAMS
        assert list(node.get_parameter("camera_names").value) == TINY_CAMS
        assert node.cameras[1].image_topic == "/left/image_raw"  # per-camera overrides still apply
        assert node.cameras[0].image_topic == "/CAM_FRONT/image_raw"
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


@pytest.mark.parametrize("shift_m", [0.0, 1.65])
def test_wrong_ego_frame_is_reported_against_the_training_rig(graph_factory, shift_m):
    """The checkpoint's training rig vs TF: equal -> OK; base_frame 1.65 m off (KITTI's Velodyne
    frame vs the ground under the camera) -> ERROR diagnostic naming both transforms."""
    pred = StandInPredictor()

    def rig_for(g):
        T_ego_cam = g.fixture.data.T_ego_cam.double().clone()
        T_ego_cam[:, 2, 3] -= shift_m  # the training ego frame sat 1.65 m higher than base_link
        return {"camera_names": list(CAMS), "T_ego_cam": T_ego_cam, "ground_z": 0.0}

    pred.training_rig = None
    g = graph_factory(predictor=pred)
    pred.training_rig = rig_for(g)  # as OccupancyPredictor.training_rig reads it from the checkpoint
    g.play(0)
    assert spin_until(None, lambda: (s := g.out.status("camera rig")) is not None, 5.0)
    status = g.out.status("camera rig")
    if shift_m == 0.0:
        assert status.level == bytes([0]), status.message
    else:
        assert status.level == bytes([2]), status.message
        msg = status.message
        assert "TF base_link <- cam_front_optical_frame" in msg and "trained with T_ego_cam" in msg, msg
        assert "differs by 1.650 m" in msg and "not the training ego frame" in msg, msg
        assert len(status.values) == len(CAMS)
