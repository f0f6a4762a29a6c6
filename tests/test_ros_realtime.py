"""Real-time behaviour of the node over real DDS: only outputs with subscribers are built and sent
(and depth is not even rendered without a depth subscriber), RViz-sized markers (surface voxels,
range, cap) and a configurable depth image size. The fixture graph is test_ros_node.Graph."""

from __future__ import annotations

import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from ros_common import check_outputs_match, spin_until  # noqa: E402
from selfocc_ros import conversions as conv  # noqa: E402
from selfocc_ros.testing import StandInPredictor  # noqa: E402
from test_ros_node import CAMS, _dds_env, graph_factory, ros_msgs  # noqa: E402,F401  (fixtures)

pytestmark = pytest.mark.ros


def test_nothing_is_built_or_sent_without_subscribers(graph_factory):
    standin = StandInPredictor()
    g = graph_factory(predictor=standin, outputs=("cloud",))
    node = g.node
    assert all(p.get_subscription_count() == 0 for p in [node.pub_markers, node.pub_grid, *node.pub_depth.values()])
    stamp = g.play(0)
    assert stamp in g.out.clouds
    assert spin_until(None, lambda: node.published_counts["cloud"] == 1, 3.0)
    assert dict(node.published_counts) == {"cloud": 1}  # no markers, grid or depth message was made
    assert standin.calls[-1]["with_depth"] is False  # nobody wants depth: it is not rendered

    # a depth subscriber appears (discovered over DDS): depth is rendered and sent, for that camera only
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    got = []
    depth_sub = g.sub_node.create_subscription(Image, f"/selfocc_occupancy/depth/{CAMS[1]}", got.append,
                                   QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
    assert spin_until(None, lambda: node.pub_depth[CAMS[1]].get_subscription_count() == 1, 10.0)
    stamp = g.play(1)
    assert spin_until(None, lambda: any(conv.stamp_to_ns(m.header.stamp) == stamp for m in got), 5.0)
    assert standin.calls[-1]["with_depth"] is True and node.published_counts["depth"] == 1
    assert node.published_counts["markers"] == node.published_counts["grid"] == 0

    # nobody listens at all: the set is not even inferred
    g.out.unsubscribe()
    g.sub_node.destroy_subscription(depth_sub)
    assert spin_until(None, lambda: node.pub_cloud.get_subscription_count() == 0
                      and node.pub_depth[CAMS[1]].get_subscription_count() == 0, 10.0)
    n_calls, converted = len(standin.calls), node.images_converted
    g.fixture.publish_frame(2)
    assert spin_until(None, lambda: node.stats.sets_unwanted == 1, 5.0)
    assert len(standin.calls) == n_calls and node.published_counts["cloud"] == 2
    assert node.images_converted == converted  # nor were its images decoded and downscaled


def test_marker_count_is_capped_to_the_nearest_surface_voxels(graph_factory):
    params = {"publish.marker_max_count": 40, "publish.marker_range": 6.0}
    g = graph_factory(params=params)
    stamp = g.play(0)
    pred = StandInPredictor().predict(g.fixture.frame(0))
    check_outputs_match(g.out, stamp, pred, CAMS, markers={"max_range": 6.0, "max_count": 40, "surface_only": True})
    cubes = [p for m in g.out.markers[stamp].markers[1:] for p in m.points]
    assert len(cubes) == 40 < int(pred.occupied.sum())
    assert max(np.sqrt(p.x ** 2 + p.y ** 2 + p.z ** 2) for p in cubes) <= 6.0


@pytest.mark.parametrize("params,size", [({"publish.depth_width": 44}, (24, 44)),
                                         ({"publish.depth_width": 30, "publish.depth_height": 10}, (10, 30)),
                                         ({}, (48, 88))])
def test_depth_output_size_is_configurable(graph_factory, params, size):
    standin = StandInPredictor()
    g = graph_factory(predictor=standin, params=params, outputs=("cloud", "depth"))
    stamp = g.play(0)
    for k, cam in enumerate(CAMS):
        img = g.out.depth[cam][stamp]
        assert (img.height, img.width) == size and img.encoding == "32FC1"
        assert img.header.frame_id == f"{cam.lower()}_optical_frame"
    assert standin.calls[-1]["depth_size"] == size
    want = StandInPredictor().predict(g.fixture.frame(0), depth_size=size).depth
    np.testing.assert_allclose(conv.image_to_depth(g.out.depth[CAMS[1]][stamp]), want[1].numpy(), atol=1e-3)


def test_markers_are_rate_limited_by_marker_period(graph_factory):
    g = graph_factory(params={"publish.marker_period": 30.0})
    first = g.play(0)
    second = g.play(1, wait_output=False)
    assert spin_until(None, lambda: second in g.out.clouds and second in g.out.grids, 5.0)
    assert first in g.out.markers and second not in g.out.markers  # within 30 s of the first: none
    assert g.node.published_counts["markers"] == 1 and g.node.published_counts["cloud"] == 2


def test_images_are_downscaled_on_arrival_and_the_sync_queues_no_messages(graph_factory):
    """Each image is decoded + downscaled to the network input in its subscription callback: the
    model sees exactly images_to_network_input of the published pixels, and what waits in the
    synchroniser for the other cameras is a small tensor, not the message (RSS: 4.3 MB per queued
    1600x900 image before)."""
    import torch

    from selfocc_ros.node_logic import PreparedImage, images_to_network_input

    standin = StandInPredictor(input_size=(24, 44))
    g = graph_factory(predictor=standin, faults={2: "silent"})  # from frame 2 on CAM_BACK sends nothing
    stamp = g.play(0)
    f = g.fixture.frame(0)
    rgb = [(im.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8) for im in f.images]
    want, K = images_to_network_input(rgb, [False] * len(rgb), f.K.double().numpy(), (24, 44))
    seen = standin.last_frame
    assert seen.images.shape == (2, 3, 24, 44) and torch.equal(seen.images, want)
    torch.testing.assert_close(seen.K, K)
    check_outputs_match(g.out, stamp, StandInPredictor().predict(seen), CAMS)
    queue = g.node._sync.sync.queues[0]
    for i in (2, 3, 4):  # CAM_FRONT only: its images wait in the synchroniser
        g.play(i, wait_output=False)
        assert spin_until(None, lambda: len(queue) == i - 1, 5.0), (i, len(queue))  # (one at a time: depth 1)
    assert all(isinstance(m, PreparedImage) and m.image.shape == (3, 24, 44) for m in queue.values())
    assert g.node.images_converted == 2 + 3


@pytest.mark.parametrize("row_step", [0, 1, 3])
def test_resize_row_step_parameter_picks_the_downscale(graph_factory, row_step):
    """resize.row_step: 1 = the exact uint8 resize, 3 = every third row (centred), 0 = auto (3 here:
    48 rows -> 4 is a scale of 12); the model sees exactly that downscale of the published pixels."""
    import torch

    from selfocc_ros.node_logic import images_to_network_input

    standin = StandInPredictor(input_size=(4, 8))
    g = graph_factory(predictor=standin, params={"resize.row_step": row_step})
    g.play(0)
    f = g.fixture.frame(0)
    rgb = [(im.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8) for im in f.images]
    want = {k: images_to_network_input(rgb, [False] * len(rgb), f.K.double().numpy(), (4, 8), row_step=k)[0]
            for k in (1, 3)}
    assert not torch.equal(want[1], want[3])  # the two paths are told apart by this frame
    assert torch.equal(standin.last_frame.images, want[row_step or 3])


def test_a_bad_resize_row_step_ends_start_up_naming_the_parameter():
    from rclpy.parameter import Parameter

    from selfocc_ros.occupancy_node import OccupancyNode

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        node = OccupancyNode(predictor=StandInPredictor(), context=ctx, parameter_overrides=[
            Parameter("camera_names", value=list(CAMS)), Parameter("resize.row_step", value=2)])
        with pytest.raises(ValueError, match="resize.row_step must be 0 .auto. or an odd step"):
            node.configure()
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


def test_an_executor_that_falls_behind_takes_only_the_newest_images(graph_factory):
    """qos.depth 1 (default): images that arrive while the executor is busy elsewhere replace each
    other in the DDS reader, so the node forms one set, the newest, not a backlog of old sets."""
    g = graph_factory()
    g.play(0)
    node = g.node
    synced = node.stats.sets_synced
    g.executor.remove_node(node)  # the node's callbacks stop being served; DDS keeps delivering
    time.sleep(0.3)
    stamps = [g.play(i, wait_output=False) for i in (1, 2, 3, 4)]
    time.sleep(0.5)
    g.executor.add_node(node)
    assert spin_until(None, lambda: stamps[-1] in g.out.clouds, 10.0), "the newest set was not published"
    time.sleep(0.3)
    assert node.stats.sets_synced == synced + 1
    assert not any(s in g.out.clouds for s in stamps[:-1])
