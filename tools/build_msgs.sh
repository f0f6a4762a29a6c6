#!/usr/bin/env bash
# Build ros/selfocc_msgs (+ the tf2_msgs stand-in where no real one exists) without an apt ROS 2 install
# and print the environment to use them:   eval "$(bash tools/build_msgs.sh)"
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m selfocc_ros.msg_build --print-env "$@"
