#!/usr/bin/env bash
# The README's test command: installs everything (CPU torch pinned) and runs the default suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -e ".[all,test,msgbuild]"
python3 -m pytest -q -m "not slow" "$@"
