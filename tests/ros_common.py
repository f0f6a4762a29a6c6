"""Shared helpers of the tests/test_ros_*.py files (not collected: no test_ prefix)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from selfocc_core.classes import FREE_LABEL
from selfocc_ros import conversions as conv


# Rendered synthetic frames, kept between runs (git-ignored) so the world renders once per machine.
RENDER_CACHE = str(Path(__file__).resolve().parents[1] / ".selfocc_cache" / "ros_tests")


def test_domain_id() -> int:
    """A DDS domain of our own (per process tree) so parallel ROS tests on the machine never mix."""
    env = os.environ.get("SELFOCC_TEST_DOMAIN")
    if env:
        return int(env)
    return 20 + os.getpid() % 150


test_domain_id.__test__ = False  # not a test


# The Fast DDS set-up documented for large images (tools/dds_large_images.py): every process of a
# graph must use the same one, so the test process applies it to itself too (dds_env).
DDS_ENV = {
    "FASTDDS_DEFAULT_PROFILES_FILE": str(Path(__file__).resolve().parents[1] / "config" / "fastdds_large_images.xml"),
    "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
}


@contextlib.contextmanager
def dds_env():
    """Use DDS_ENV in this process (read when a context/participant is created); restored afterwards."""
    keys = [*DDS_ENV, "FASTDDS_BUILTIN_TRANSPORTS"]
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.pop("FASTDDS_BUILTIN_TRANSPORTS", None)
    os.environ.update(DDS_ENV)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def ros_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for ROS subprocesses: own domain, localhost only, the same Fast DDS profile."""
    env = dict(os.environ)
    env.update(extra or {})
    env.pop("FASTDDS_BUILTIN_TRANSPORTS", None)
    env.update(DDS_ENV)
    env["ROS_DOMAIN_ID"] = str(test_domain_id())
    env["PYTHONUNBUFFERED"] = "1"
    return env


def built_msgs_env() -> dict[str, str]:
    """Environment of a child ROS process with the interface packages built (a failed build fails the test)."""
    import pytest

    from selfocc_ros import msg_build

    try:
        env = msg_build.activate_in_process()
    except msg_build.BuildError as e:
        pytest.fail(f"interface packages could not be built: {e}")
    return ros_env(env)


def spin_until(executor, predicate, timeout: float, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        if executor is None:
            time.sleep(step)
        else:
            executor.spin_once(timeout_sec=step)
    return predicate()


MARKER_DEFAULTS = {"max_range": 30.0, "max_count": 5000, "surface_only": True}  # the node's parameter defaults


def check_outputs_match(collector, stamp: int, pred, cameras, base_frame="base_link", depth_atol=1e-3,
                        min_label_agreement=0.999, markers=MARKER_DEFAULTS):
    """Assert that the outputs with ``stamp`` equal the offline prediction ``pred`` (``markers``:
    the node's marker selection, conversions.marker_voxels arguments)."""
    labels = pred.labels.numpy().astype(np.uint8)
    # dense grid message
    if collector.grids:
        g = conv.grid_msg_to_arrays(collector.grids[stamp])
        assert g.frame_id == base_frame and g.stamp_ns == stamp
        assert g.labels.shape == labels.shape
        agree = (g.labels == labels).mean()
        assert agree >= min_label_agreement, f"grid labels agree on {agree:.5f} of voxels"
        assert g.lower == tuple(np.float64(v) for v in pred.grid.lower) and abs(g.resolution - pred.grid.voxel_size) < 1e-6
        np.testing.assert_allclose(g.confidence, pred.confidence.numpy(), atol=1e-4)
    # point cloud: exactly the occupied voxels
    cloud = collector.clouds[stamp]
    assert cloud.header.frame_id == base_frame
    arr = conv.pointcloud2_to_array(cloud)
    xyz, lab, _ = conv.occupied_points(labels, None, pred.grid.lower, pred.grid.voxel_size)
    got = {(round(float(a), 3), round(float(b), 3), round(float(c), 3), int(l))
           for a, b, c, l in zip(arr["x"], arr["y"], arr["z"], arr["label"])}
    want = {(round(float(a), 3), round(float(b), 3), round(float(c), 3), int(l)) for (a, b, c), l in zip(xyz, lab)}
    n = max(len(want), 1)
    assert len(got ^ want) <= (1 - min_label_agreement) * labels.size, f"{len(got ^ want)} of {n} cloud points differ"
    assert all(int(x) != FREE_LABEL for x in arr["label"])
    # markers: DELETEALL + per-class cube lists of the selected (surface, in range, capped) voxels
    msgs = collector.markers[stamp].markers
    assert msgs[0].action == 3
    mxyz, mlab = conv.marker_voxels(labels, pred.grid.lower, pred.grid.voxel_size, **markers)
    want = {(round(float(a), 3), round(float(b), 3), round(float(c), 3), int(l)) for (a, b, c), l in zip(mxyz, mlab)}
    got = {(round(p.x, 3), round(p.y, 3), round(p.z, 3), m.id) for m in msgs[1:] for p in m.points}
    assert sum(len(m.points) for m in msgs[1:]) == len(got)
    assert len(got ^ want) <= (1 - min_label_agreement) * labels.size, f"{len(got ^ want)} of {len(want)} marker cubes differ"
    assert 0 < len(got) <= len(arr) and len(got) <= markers["max_count"]
    assert all(m.header.frame_id == base_frame and conv.stamp_to_ns(m.header.stamp) == stamp for m in msgs[1:])
    # depth images: camera header, values
    for k, cam in enumerate(cameras):
        img = collector.depth[cam][stamp]
        assert img.encoding == "32FC1" and img.header.frame_id == f"{cam.lower()}_optical_frame"
        np.testing.assert_allclose(conv.image_to_depth(img), pred.depth[k].numpy(), atol=depth_atol, rtol=1e-4)


TINY_CAMS = ["CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT"]  # tiny_synth's cameras, in its order


def make_tiny_checkpoint(path: Path) -> Path:
    """A tiny_synth checkpoint with seeded random weights, written with the trainer's save_checkpoint
    (untrained: the node must reproduce the offline predictor, not be accurate)."""
    import torch

    from selfocc_core.model.selfocc import SelfOccModel
    from selfocc_core.training.checkpoint import save_checkpoint
    from selfocc_core.training.config import load_experiment_config

    cfg = load_experiment_config("tiny_synth")
    assert list(cfg.data.cameras) == TINY_CAMS, cfg.data.cameras
    torch.manual_seed(0)
    return save_checkpoint(path, model=SelfOccModel(cfg.model), config=cfg, step=0, with_rng=False)


class Proc:
    """A child Python process in its own session, output logged to `log`; `stop()` sends SIGINT
    (the ROS way to end a node) and SIGKILL if it does not exit within 5 s."""

    def __init__(self, args, env, log: Path, cwd: Path = Path(__file__).resolve().parents[1]):
        self.log, self._f = log, open(log, "w")
        self.p = subprocess.Popen([sys.executable, *args], env=env, cwd=cwd, stdout=self._f, stderr=subprocess.STDOUT,
                                  start_new_session=True)

    def text(self) -> str:
        self._f.flush()
        return self.log.read_text()

    def stop(self):
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGINT)
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait(5)
        self._f.close()
