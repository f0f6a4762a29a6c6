"""Launch the SelfOcc occupancy node (and optionally RViz).

    ros2 launch selfocc_ros occ.launch.py checkpoint:=/path/model.pt
    ros2 launch selfocc_ros occ.launch.py checkpoint:=/path/model.pt camera_names:="[CAM_FRONT, CAM_BACK]"
    ros2 launch selfocc_ros occ.launch.py checkpoint:=/path/model.pt rviz:=true namespace:=front use_sim_time:=true

Arguments: config (ROS parameter file, default share/selfocc_ros/config/occ.yaml), checkpoint,
camera_names (empty: the checkpoint's training cameras), image_transport, base_frame,
odom_frame, device (empty: the parameter file's value), namespace, use_sim_time, rviz,
rviz_config (default share/selfocc_ros/rviz/selfocc.rviz), dds_profile (Fast DDS XML profile
for the processes started here; default share/selfocc_ros/config/fastdds_large_images.xml,
64 MB shared-memory segments so that 6 x 1600x900 images at 12 Hz arrive complete on one
machine; '' = Fast DDS defaults).
Every process exchanging the images (camera drivers, bag player) should use the same profile:
export FASTDDS_DEFAULT_PROFILES_FILE=<profile> there too (tools/dds_large_images.py measures it).
``rviz:=true`` without RViz installed stops the launch before anything starts, with a message.
"""

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from selfocc_ros.launch_helpers import NODE_ARGUMENTS, node_overrides, rviz_problem

PACKAGE = "selfocc_ros"


def _start(context):
    """Check first (RViz present, arguments valid), then return the processes to start."""
    value = {name: LaunchConfiguration(name).perform(context)
             for name in ("config", "checkpoint", "use_sim_time", "rviz", "rviz_config", "namespace", *NODE_ARGUMENTS)}
    problem = rviz_problem(value["rviz"])
    if problem:
        raise RuntimeError(problem)
    params = node_overrides(value)
    actions = [Node(
        package=PACKAGE,
        executable="occupancy_node",
        name="selfocc_occupancy",
        namespace=value["namespace"],
        output="screen",
        emulate_tty=True,
        parameters=[value["config"], params],
    )]
    if value["rviz"].lower() in ("1", "true", "yes", "on"):
        actions.append(Node(
            package="rviz2",
            executable="rviz2",
            name="rviz2",
            arguments=["-d", value["rviz_config"]],
            parameters=[{"use_sim_time": params["use_sim_time"]}],
            output="screen",
        ))
    return actions


def generate_launch_description():
    share = FindPackageShare(PACKAGE)
    args = [
        DeclareLaunchArgument("config", default_value=PathJoinSubstitution([share, "config", "occ.yaml"]),
                              description="ROS parameter file of the occupancy node"),
        DeclareLaunchArgument("checkpoint", default_value="", description="selfocc checkpoint (.pt)"),
        *[DeclareLaunchArgument(name, default_value="", description=text) for name, text in NODE_ARGUMENTS.items()],
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag playback)"),
        DeclareLaunchArgument("rviz", default_value="false", description="also start RViz (must be installed)"),
        DeclareLaunchArgument("rviz_config", default_value=PathJoinSubstitution([share, "rviz", "selfocc.rviz"]),
                              description="RViz configuration"),
        DeclareLaunchArgument("dds_profile",
                              default_value=os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE",
                                                           PathJoinSubstitution([share, "config", "fastdds_large_images.xml"])),
                              description="Fast DDS XML profile (FASTDDS_DEFAULT_PROFILES_FILE) of the started processes"),
    ]
    env = [SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", LaunchConfiguration("dds_profile"))]
    return LaunchDescription([*args, *env, OpaqueFunction(function=_start)])
