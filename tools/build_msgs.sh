#!/usr/bin/env bash
# Build msg/ interface packages (selfocc_msgs, tf2_msgs stand-in) without an apt ROS 2 install
# and print the environment to use them:   eval "$(bash tools/build_msgs.sh)"
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m selfocc_ros.msg_build --print-env "$@"
