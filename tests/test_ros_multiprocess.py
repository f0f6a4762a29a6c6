"""Multi-process tests over real DDS: fixture publisher process -> occupancy node process -> this test.

The node process runs the real OccupancyPredictor from a tiny_synth checkpoint (untrained
weights: the node must reproduce the offline predictor, not be accurate), and its outputs must
equal the offline predictor's output for the same synthetic frames.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

rclpy = pytest.importorskip("rclpy")

from ros_common import (  # noqa: E402
    RENDER_CACHE, TINY_CAMS, Proc, built_msgs_env, dds_env, check_outputs_match, make_tiny_checkpoint, spin_until, test_domain_id,
)
from selfocc_ros.testing import OutputCollector, synthetic_frames  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module", autouse=True)
def _dds_env():
    with dds_env():
        yield

REPO = Path(__file__).resolve().parents[1]
CAMS = TINY_CAMS
H, W, FRAMES = 64, 112, 3
START_NS = 1_700_000_100 * 10**9


@pytest.fixture(scope="session")
def msgs_env():
    return built_msgs_env()


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_synth.pt")


def _params_file(tmp_path: Path, **extra) -> Path:
    params = {"camera_names": CAMS, "diagnostics_period": 0.5, "tf_timeout": 0.2, "camera_timeout": 5.0,
              "device": "cpu", "torch_threads": 1, **extra}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    return path


def _node_args(params: Path, ckpt):
    return ["-m", "selfocc_ros.occupancy_node", "--ros-args", "--params-file", str(params), "-p", f"checkpoint:={ckpt}"]


@pytest.fixture
def ros_node_ctx(msgs_env):
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=test_domain_id())
    node = rclpy.create_node("mp_collector", context=ctx)
    from rclpy.executors import SingleThreadedExecutor

    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    yield node, ex
    ex.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=ctx)


def test_node_process_outputs_equal_offline_predictor(msgs_env, ros_node_ctx, checkpoint, tmp_path):
    node, ex = ros_node_ctx
    ckpt = checkpoint
    data = synthetic_frames(CAMS, FRAMES, H, W, 0, RENDER_CACHE)
    for i in range(FRAMES):  # render (or load) before the publisher process needs them
        data.frame(i)
    collector = OutputCollector(node, "/selfocc_occupancy", CAMS)
    node_proc = Proc(_node_args(_params_file(tmp_path), ckpt), msgs_env, tmp_path / "node.log")
    pub_proc = None
    try:
        # the node is up when its publishers are matched by our subscriptions
        assert spin_until(ex, lambda: node.count_publishers("/selfocc_occupancy/occupancy") > 0
                          and node.count_publishers("/selfocc_occupancy/grid") > 0, 60.0), node_proc.text()
        pub_proc = Proc(["-m", "selfocc_ros.testing", "publish", "--cameras", *CAMS, "--frames", str(FRAMES),
                         "--rate", "1", "--height", str(H), "--width", str(W), "--cache-dir", RENDER_CACHE,
                         "--start-stamp-ns", str(START_NS), "--wait", "2"], msgs_env, tmp_path / "pub.log")
        stamps = [START_NS + int(round(data.seq.time(i) * 1e9)) for i in range(FRAMES)]
        # drop-old may skip a set while the model is busy, but the newest one is always served
        ok = spin_until(ex, lambda: collector.complete(stamps[-1:]), 120.0)
        assert ok, (f"outputs for {sum(s in collector.clouds for s in stamps)}/{FRAMES} frames\n"
                    f"--- node\n{node_proc.text()[-3000:]}\n--- publisher\n{pub_proc.text()[-2000:]}")
        served = [i for i, s in enumerate(stamps) if collector.complete([s])]
        assert len(served) >= 2, served
        assert set(collector.clouds) <= set(stamps)  # nothing with a stamp that was not an input stamp
        from selfocc_core.inference.predictor import OccupancyPredictor

        offline = OccupancyPredictor.from_checkpoint(str(ckpt), device="cpu")
        for i in served:
            pred = offline.predict(data.frame(i))
            assert pred.occupied.any() and not pred.occupied.all()  # a non-trivial grid to compare
            check_outputs_match(collector, stamps[i], pred, CAMS, depth_atol=1e-3)
        # diagnostics from the node process
        assert spin_until(ex, lambda: (s := collector.status("pipeline")) is not None
                          and dict((kv.key, kv.value) for kv in s.values)["published_sets"] == str(len(served)), 5.0)
    finally:
        if pub_proc is not None:
            pub_proc.stop()
        node_proc.stop()


def test_missing_checkpoint_fails_at_startup_naming_file(msgs_env, tmp_path):
    """Through scripts/occupancy_node, the executable `ros2 run` and the launch file start."""
    missing = tmp_path / "nope" / "model.pt"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "occupancy_node"), "--ros-args",
                           "--params-file", str(_params_file(tmp_path)), "-p", f"checkpoint:={missing}"],
                          env=msgs_env, cwd=REPO, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "checkpoint not found" in out and str(missing) in out and "expected a selfocc_core checkpoint" in out
