"""rosbag2 tooling: convert datasets to bags (`convert`), replay them into ROS (`play`), inspect (`cli`).

`convert` and `writer` use only the pure-Python `rosbags` library; `play` needs rclpy.
"""
