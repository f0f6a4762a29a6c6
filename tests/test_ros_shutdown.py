"""SIGINT / SIGTERM to a running occupancy node and bag player: exit 0 within 2 s, no traceback.

What `ros2 launch` does on Ctrl-C: the terminal's SIGINT reaches the whole process group, then
launch sends its own SIGINT to each process (SIGTERM after its timeout). Each case below starts
the real executable in its own session (its own process group), waits until it is working (the
node publishing outputs from the real predictor, the player publishing a bag) and signals it:
the process alone (``os.kill``) or the group (``os.killpg``), once or launch-style twice.
The default suite tries each program a few times; ``-m slow`` runs every case 10 times and prints
the counts.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from ros_common import (  # noqa: E402
    RENDER_CACHE, TINY_CAMS, Proc, built_msgs_env, dds_env, make_tiny_checkpoint, spin_until, test_domain_id,
)

pytestmark = pytest.mark.ros

H, W, FRAMES = 64, 112, 4
BAD_OUTPUT = ("Traceback", "terminate called", "inference failed", "RCLError", "KeyboardInterrupt",
              "context is invalid", "Segmentation fault")

# (signal, to the process group?, second SIGINT 50 ms later as launch sends)
CASES = {
    "sigint": (signal.SIGINT, False, False),
    "sigint_group": (signal.SIGINT, True, False),
    "sigterm": (signal.SIGTERM, False, False),
    "sigterm_group": (signal.SIGTERM, True, False),
    "launch_ctrl_c": (signal.SIGINT, True, True),
}


@pytest.fixture(scope="module", autouse=True)
def _dds_env():
    with dds_env():
        yield


@pytest.fixture(scope="module")
def msgs_env():
    return built_msgs_env()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_synth.pt")


class FeedingGraph:
    """In this process: a fixture publisher that keeps publishing frames (fresh stamps) and a
    collector of the node's outputs, spun on a thread."""

    def __init__(self):
        from rclpy.executors import SingleThreadedExecutor

        from selfocc_ros.testing import FixturePublisher, OutputCollector

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=test_domain_id())
        self.node = rclpy.create_node("shutdown_feeder", context=self.ctx)
        self.fixture = FixturePublisher(self.node, TINY_CAMS, num_frames=FRAMES, height=H, width=W,
                                        start_stamp_ns=1_700_000_500 * 10**9, cache_dir=RENDER_CACHE)
        for i in range(FRAMES):
            self.fixture.frame(i)
        self.out = OutputCollector(self.node, "/selfocc_occupancy", TINY_CAMS)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._spin, daemon=True), threading.Thread(target=self._feed, daemon=True)]
        for t in self._threads:
            t.start()

    def _spin(self):
        while not self._stop.is_set():
            self.ex.spin_once(timeout_sec=0.05)

    def _feed(self):
        k = 0
        while not self._stop.is_set():
            i = k % FRAMES
            if i == 0 and k:
                self.fixture.start_ns += 10**9  # a new lap: later stamps than every earlier one
                self.fixture.publish_static()
            self.fixture.publish_frame(i)
            k += 1
            self._stop.wait(0.25)

    def close(self):
        self._stop.set()
        for t in self._threads:
            t.join(5)
        self.ex.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)


def _params(tmp_path: Path) -> Path:
    import yaml

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "tf_timeout": 0.2, "camera_timeout": 5.0, "device": "cpu", "torch_threads": 1}}}))
    return path


def _signal_and_wait(proc: Proc, case: str) -> tuple[float, int]:
    sig, group, twice = CASES[case]
    t0 = time.monotonic()
    (os.killpg if group else os.kill)(proc.p.pid, sig)
    if twice:
        time.sleep(0.05)
        try:
            os.kill(proc.p.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
    try:
        rc = proc.p.wait(10)
    except Exception:
        rc = None
    return time.monotonic() - t0, rc


def _check_exit(proc: Proc, case: str, elapsed: float, rc) -> str:
    """'' when the exit was clean, else what went wrong (with the log tail)."""
    text = proc.text()
    bad = [b for b in BAD_OUTPUT if b in text]
    if rc == 0 and elapsed <= 2.0 and not bad:
        return ""
    return f"{case}: exit {rc} after {elapsed:.2f} s, found {bad}\n{text[-2500:]}"


def node_try(case: str, msgs_env, checkpoint, graph: FeedingGraph, tmp_path: Path) -> str:
    n0 = len(graph.out.clouds)
    proc = Proc(["-m", "selfocc_ros.occupancy_node", "--ros-args", "--params-file", str(_params(tmp_path)),
                 "-p", f"checkpoint:={checkpoint}"], msgs_env, tmp_path / f"node_{case}.log")
    try:
        # working: the real predictor's outputs arrive (camera_names came from the checkpoint)
        if not spin_until(None, lambda: len(graph.out.clouds) >= n0 + 2, 90.0):
            return f"{case}: node published nothing\n{proc.text()[-2500:]}"
        elapsed, rc = _signal_and_wait(proc, case)
        return _check_exit(proc, case, elapsed, rc)
    finally:
        proc.stop()


def _long_bag(path: Path) -> Path:
    from selfocc_ros.bag.writer import CAMERA_INFO, AtomicBagWriter, camera_info_msg

    if not path.exists():
        with AtomicBagWriter(path) as b:
            for i in range(600):  # 60 s at 10 Hz: still playing when signalled
                t = 1_700_000_000 * 10**9 + i * 100_000_000
                b.write("/cam/camera_info", CAMERA_INFO, t, camera_info_msg(np.eye(3), 4, 3, t, "cam_optical_frame"))
    return path


def player_try(case: str, msgs_env, tmp_path: Path) -> str:
    bag = _long_bag(tmp_path.parent / "long_bag")
    repo = Path(__file__).resolve().parents[1]
    proc = Proc([str(repo / "scripts" / "bag_player"), str(bag)], msgs_env, tmp_path / f"player_{case}.log")
    try:
        if not spin_until(None, lambda: "playing" in proc.text(), 60.0):
            return f"{case}: player did not start\n{proc.text()[-2500:]}"
        time.sleep(0.5)
        elapsed, rc = _signal_and_wait(proc, case)
        return _check_exit(proc, case, elapsed, rc)
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def feeding_graph(msgs_env):
    g = FeedingGraph()
    yield g
    g.close()


@pytest.mark.parametrize("case", ["launch_ctrl_c", "sigterm"])
def test_node_exits_cleanly_on_signal(case, msgs_env, checkpoint, feeding_graph, tmp_path):
    problem = node_try(case, msgs_env, checkpoint, feeding_graph, tmp_path)
    assert not problem, problem


@pytest.mark.parametrize("case", ["sigint_group", "sigterm"])
def test_bag_player_exits_cleanly_on_signal(case, msgs_env, tmp_path):
    problem = player_try(case, msgs_env, tmp_path)
    assert not problem, problem


@pytest.mark.slow
@pytest.mark.timeout(3000)  # 100 process starts (~8 s each on the shared 2-core machine)
def test_ten_of_ten_signals_end_node_and_player_cleanly(msgs_env, checkpoint, feeding_graph, tmp_path):
    """The must-show: 10 of 10 per case, for both programs (counts printed, -s to see them)."""
    counts, problems = {}, []
    for program in ("node", "player"):
        for case in CASES:
            ok = 0
            for k in range(10):
                d = tmp_path / f"{program}_{case}_{k}"
                d.mkdir()
                problem = (node_try(case, msgs_env, checkpoint, feeding_graph, d) if program == "node"
                           else player_try(case, msgs_env, d))
                ok += not problem
                if problem:
                    problems.append(problem)
                    print(problem[:300], flush=True)
            counts[f"{program} {case}"] = ok
            print(f"{program} {case}: {ok}/10 clean", flush=True)
    print("clean exits (of 10):", counts)
    assert all(v == 10 for v in counts.values()), (counts, problems[:3])
