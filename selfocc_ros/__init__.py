"""selfocc_ros: ROS 2 node(s) and rosbag2 tools around selfocc_core."""
