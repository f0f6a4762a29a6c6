"""replay.launch.py and the `bag_player` executable it falls back to."""

from __future__ import annotations

import ast
import importlib.util
import os
import py_compile
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch" / "replay.launch.py"


def test_replay_launch_compiles_and_names_what_exists(tmp_path):
    py_compile.compile(str(LAUNCH), cfile=str(tmp_path / "replay.pyc"), doraise=True)
    from test_ros_launch import declared_launch_arguments

    assert declared_launch_arguments(LAUNCH) == [
        "bag", "rate", "loop", "start_offset", "player", "config", "checkpoint", "camera_names", "image_transport",
        "base_frame", "odom_frame", "device", "namespace", "rviz", "rviz_config"]
    text = LAUNCH.read_text()
    # includes the node's launch file with sim time, falls back to our player executable
    assert '"launch", "occ.launch.py"' in text and (REPO / "launch" / "occ.launch.py").is_file()
    assert '"use_sim_time": "true"' in text
    assert 'executable="bag_player"' in text and (REPO / "scripts" / "bag_player").is_file()
    assert '"ros2", "bag", "play", bag, "--clock"' in text


@pytest.mark.skipif(importlib.util.find_spec("launch") is None or importlib.util.find_spec("launch_ros") is None,
                    reason="ROS 2 launch not installed")
def test_generate_replay_launch_description():
    spec = importlib.util.spec_from_file_location("replay_launch", LAUNCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    names = [a.name for a in mod.generate_launch_description().get_launch_arguments()]
    assert names[:5] == ["bag", "rate", "loop", "start_offset", "player"]


@pytest.mark.ros
def test_bag_player_script_accepts_ros_args(tmp_path):
    from selfocc_ros.bag.writer import CAMERA_INFO, AtomicBagWriter, camera_info_msg

    bag = tmp_path / "tiny"
    with AtomicBagWriter(bag) as b:
        for i in range(3):
            t = 1_700_000_000 * 10**9 + i * 10_000_000
            b.write("/cam/camera_info", CAMERA_INFO, t, camera_info_msg(np.eye(3), 4, 3, t, "cam_optical_frame"))
    env = dict(os.environ, FASTDDS_BUILTIN_TRANSPORTS="LARGE_DATA", ROS_DOMAIN_ID=str(201 + os.getpid() % 30))
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "bag_player"), str(bag), "--rate", "10",
                        "--ros-args", "-r", "__node:=replayer"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "published 3 messages" in r.stdout + r.stderr
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "bag_player"), str(tmp_path / "missing")],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "rosbag not found" in r.stderr
