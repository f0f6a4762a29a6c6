"""selfocc_core: self-supervised vision-based 3D occupancy (SelfOcc) in pure PyTorch.

The library never imports ROS; `selfocc_ros` adapts it to ROS 2 messages.
"""

__version__ = "0.1.0"
