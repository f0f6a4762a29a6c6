#!/usr/bin/env python3
"""Build ros/selfocc_msgs (+ the tf2_msgs stand-in where no real one exists) with the PyPI ROS wheels: see selfocc_ros/msg_build.py.

    python tools/build_msgs.py [--force] [--print-env]
    eval "$(python tools/build_msgs.py --print-env)"
"""
import sys

from selfocc_ros.msg_build import main

sys.exit(main())
