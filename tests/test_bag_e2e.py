"""End to end: a synthetic drive converted to a bag, replayed with `selfocc bag play` (sim time,
/clock) into the running occupancy node process; its outputs equal the offline predictor's."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ros_common import (
    RENDER_CACHE,
    Proc,
    TINY_CAMS,
    check_outputs_match,
    dds_env,
    make_tiny_checkpoint,
    ros_env,
    spin_until,
    test_domain_id,
)
from selfocc_ros.bag.convert import samples_recording, write_recording
from selfocc_ros.testing import OutputCollector, synthetic_frames

pytestmark = [pytest.mark.ros, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
H, W, FRAMES = 64, 112, 3
START_NS = 1_700_000_200 * 10**9


def test_bag_replayed_into_node_equals_offline_predictor(tmp_path):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from selfocc_core.inference.predictor import OccupancyPredictor
    from selfocc_ros import msg_build

    env = ros_env(msg_build.activate_in_process())
    ckpt = make_tiny_checkpoint(tmp_path / "tiny.pt")
    data = synthetic_frames(TINY_CAMS, FRAMES, H, W, 0, RENDER_CACHE)
    bag = tmp_path / "drive"
    write_recording(samples_recording([data[i] for i in range(FRAMES)], time_offset_ns=START_NS), bag)
    stamps = [START_NS + int(round(float(data[i].frame.timestamp) * 1e9)) for i in range(FRAMES)]

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "camera_names": TINY_CAMS, "diagnostics_period": 0.5, "tf_timeout": 0.5, "camera_timeout": 30.0,
        "device": "cpu", "torch_threads": 1, "use_sim_time": True}}}))
    with dds_env():
        ctx = rclpy.Context()
        rclpy.init(context=ctx, domain_id=test_domain_id())
        node = rclpy.create_node("bag_e2e_collector", context=ctx)
        ex = SingleThreadedExecutor(context=ctx)
        ex.add_node(node)
        collector = OutputCollector(node, "/selfocc_occupancy", TINY_CAMS)
        node_proc = Proc(["-m", "selfocc_ros.occupancy_node", "--ros-args", "--params-file", str(params),
                          "-p", f"checkpoint:={ckpt}"], env, tmp_path / "node.log")
        player = None
        try:
            assert spin_until(ex, lambda: node.count_publishers("/selfocc_occupancy/occupancy") > 0, 90.0), \
                node_proc.text()
            # slow replay (a frame every ~0.8 s) so that the CPU model serves most sets
            player = Proc(["-m", "selfocc_core.cli", "bag", "play", str(bag), "--rate", "0.1",
                           "--wait-for-subscribers", "60"], env, tmp_path / "play.log")
            ok = spin_until(ex, lambda: collector.complete(stamps[-1:]), 180.0)
            assert ok, (f"outputs for {sum(s in collector.clouds for s in stamps)}/{FRAMES} frames\n"
                        f"--- node\n{node_proc.text()[-3000:]}\n--- player\n{player.text()[-2000:]}")
            served = [i for i, s in enumerate(stamps) if collector.complete([s])]
            assert len(served) >= 2, served
            assert set(collector.clouds) <= set(stamps)  # outputs carry the recorded stamps
            offline = OccupancyPredictor.from_checkpoint(str(ckpt), device="cpu")
            for i in served:
                pred = offline.predict(data.frame(i))
                assert pred.occupied.any() and not pred.occupied.all()
                check_outputs_match(collector, stamps[i], pred, TINY_CAMS, depth_atol=2e-3)
        finally:
            if player is not None:
                player.stop()
            node_proc.stop()
            ex.shutdown()
            node.destroy_node()
            rclpy.shutdown(context=ctx)
