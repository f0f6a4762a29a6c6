"""Replay a rosbag2 into the SelfOcc occupancy node (with sim time) and optionally RViz.

    ros2 launch selfocc_ros replay.launch.py bag:=/data/kitti00 checkpoint:=/path/model.pt
    ros2 launch selfocc_ros replay.launch.py bag:=/data/nus rate:=0.5 loop:=true rviz:=true

Arguments: bag (required), rate, loop, start_offset, player (auto | ros2 | selfocc), plus the
occupancy node's config, checkpoint, camera_names, image_transport, base_frame, odom_frame,
device, namespace, rviz, rviz_config (see occ.launch.py, which is
included with use_sim_time:=true). ``player:=auto`` uses ``ros2 bag play --clock`` where the
rosbag2 CLI is installed, else our rclpy player (``lib/selfocc_ros/bag_player``, same options).
The player is started after occ.launch.py is included, so it inherits the Fast DDS environment
that file sets for large images (every process exchanging the images needs the same one).
"""

import importlib.util
import shutil

from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    ExecuteProcess,
    IncludeLaunchDescription,
    OpaqueFunction,
)
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from selfocc_ros.launch_helpers import NODE_ARGUMENTS, rviz_problem

PACKAGE = "selfocc_ros"


def _check(context):
    """Before anything starts (player, node): rviz:=true needs RViz installed."""
    problem = rviz_problem(LaunchConfiguration("rviz").perform(context))
    if problem:
        raise RuntimeError(problem)
    return []


def _have_ros2_bag() -> bool:
    return shutil.which("ros2") is not None and importlib.util.find_spec("ros2bag") is not None


def _player(context):
    bag = LaunchConfiguration("bag").perform(context)
    if not bag:
        raise RuntimeError("replay.launch.py: pass bag:=<rosbag2 folder>")
    rate = LaunchConfiguration("rate").perform(context)
    loop = LaunchConfiguration("loop").perform(context).lower() in ("1", "true", "yes")
    offset = LaunchConfiguration("start_offset").perform(context)
    choice = LaunchConfiguration("player").perform(context)
    if choice not in ("auto", "ros2", "selfocc"):
        raise RuntimeError(f"replay.launch.py: player must be auto, ros2 or selfocc, got {choice!r}")
    if choice == "ros2" or (choice == "auto" and _have_ros2_bag()):
        cmd = ["ros2", "bag", "play", bag, "--clock", "--rate", rate, "--start-offset", offset]
        return [ExecuteProcess(cmd=cmd + (["--loop"] if loop else []), output="screen", name="bag_play")]
    args = [bag, "--rate", rate, "--start-offset", offset] + (["--loop"] if loop else [])
    return [Node(package=PACKAGE, executable="bag_player", name="bag_player", arguments=args, output="screen")]


def generate_launch_description():
    share = FindPackageShare(PACKAGE)
    args = [
        DeclareLaunchArgument("bag", default_value="", description="rosbag2 folder to replay"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback speed factor"),
        DeclareLaunchArgument("loop", default_value="false", description="replay from the start at the end"),
        DeclareLaunchArgument("start_offset", default_value="0.0", description="seconds into the bag to start"),
        DeclareLaunchArgument("player", default_value="auto", description="auto | ros2 (ros2 bag play) | selfocc"),
        DeclareLaunchArgument("config", default_value=PathJoinSubstitution([share, "config", "occ.yaml"]),
                              description="ROS parameter file of the occupancy node"),
        DeclareLaunchArgument("checkpoint", default_value="", description="selfocc checkpoint (.pt)"),
        *[DeclareLaunchArgument(name, default_value="", description=text) for name, text in NODE_ARGUMENTS.items()],
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("rviz", default_value="false", description="also start RViz"),
        DeclareLaunchArgument("rviz_config", default_value=PathJoinSubstitution([share, "rviz", "selfocc.rviz"]),
                              description="RViz configuration"),
    ]
    occ = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([share, "launch", "occ.launch.py"])),
        launch_arguments={
            "config": LaunchConfiguration("config"),
            "checkpoint": LaunchConfiguration("checkpoint"),
            **{name: LaunchConfiguration(name) for name in NODE_ARGUMENTS},
            "namespace": LaunchConfiguration("namespace"),
            "use_sim_time": "true",
            "rviz": LaunchConfiguration("rviz"),
            "rviz_config": LaunchConfiguration("rviz_config"),
        }.items(),
    )
    return LaunchDescription([*args, OpaqueFunction(function=_check), occ, OpaqueFunction(function=_player)])
