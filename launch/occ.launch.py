"""Launch the SelfOcc occupancy node (and optionally RViz).

    ros2 launch selfocc_ros occ.launch.py checkpoint:=/path/model.pt
    ros2 launch selfocc_ros occ.launch.py checkpoint:=/path/model.pt rviz:=true namespace:=front use_sim_time:=true

Arguments: config (ROS parameter file, default share/selfocc_ros/config/occ.yaml), checkpoint,
namespace, use_sim_time, rviz, rviz_config (default share/selfocc_ros/rviz/selfocc.rviz),
dds_profile (Fast DDS XML profile for the processes started here; default
share/selfocc_ros/config/fastdds_large_images.xml, 64 MB shared-memory segments so that
6 x 1600x900 images at 12 Hz arrive complete on one machine; '' = Fast DDS defaults).
Every process exchanging the images (camera drivers, bag player) should use the same profile:
export FASTDDS_DEFAULT_PROFILES_FILE=<profile> there too (tools/dds_large_images.py measures it).
"""

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = "selfocc_ros"


def generate_launch_description():
    share = FindPackageShare(PACKAGE)
    args = [
        DeclareLaunchArgument("config", default_value=PathJoinSubstitution([share, "config", "occ.yaml"]),
                              description="ROS parameter file of the occupancy node"),
        DeclareLaunchArgument("checkpoint", default_value="", description="selfocc checkpoint (.pt)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag playback)"),
        DeclareLaunchArgument("rviz", default_value="false", description="also start RViz"),
        DeclareLaunchArgument("rviz_config", default_value=PathJoinSubstitution([share, "rviz", "selfocc.rviz"]),
                              description="RViz configuration"),
        DeclareLaunchArgument("dds_profile",
                              default_value=os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE",
                                                           PathJoinSubstitution([share, "config", "fastdds_large_images.xml"])),
                              description="Fast DDS XML profile (FASTDDS_DEFAULT_PROFILES_FILE) of the started processes"),
    ]
    use_sim_time = LaunchConfiguration("use_sim_time")
    node = Node(
        package=PACKAGE,
        executable="occupancy_node",
        name="selfocc_occupancy",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[
            LaunchConfiguration("config"),
            {"checkpoint": LaunchConfiguration("checkpoint"), "use_sim_time": use_sim_time},
        ],
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", LaunchConfiguration("rviz_config")],
        parameters=[{"use_sim_time": use_sim_time}],
        condition=IfCondition(LaunchConfiguration("rviz")),
        output="screen",
    )
    env = [SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", LaunchConfiguration("dds_profile"))]
    return LaunchDescription([*args, *env, node, rviz])
