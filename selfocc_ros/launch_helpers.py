"""What the launch files decide, without importing `launch` (testable where it is not installed).

- :func:`node_overrides`: launch arguments -> the occupancy node's parameter overrides (only the
  ones given: an empty argument leaves the parameter file's value, or the node's default);
- :func:`rviz_problem`: why ``rviz:=true`` cannot work here, checked before anything starts.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

# launch arguments passed to the node when non-empty (besides checkpoint and use_sim_time)
NODE_ARGUMENTS = {
    "camera_names": "the model's cameras, in order, e.g. \"[CAM_FRONT, CAM_FRONT_LEFT]\" "
                    "(empty: the parameter file's, else the checkpoint's)",
    "image_transport": "raw | compressed (empty: the parameter file's)",
    "base_frame": "ego frame of the outputs (empty: the parameter file's, base_link)",
    "odom_frame": "fixed frame of the ego pose (empty: the parameter file's, odom)",
    "device": "torch device: auto, cpu, cuda, cuda:1 (empty: the parameter file's)",
}


def parse_camera_names(text: str) -> list[str]:
    """'[A, B]', 'A,B' or 'A B' -> ['A', 'B']; ValueError naming the argument otherwise."""
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"camera_names:={text!r} is not a YAML list: {e}") from e
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ValueError(f"camera_names:={text!r} must be a list of camera names")
        return value
    return [n for n in text.replace(",", " ").split() if n]


def _true(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def node_overrides(args: dict[str, str]) -> dict:
    """Launch argument strings -> parameters for the node (after the parameter file)."""
    out = {"use_sim_time": _true(args.get("use_sim_time", "false"))}
    if args.get("checkpoint"):
        out["checkpoint"] = args["checkpoint"]
    for name in NODE_ARGUMENTS:
        value = args.get(name, "")
        if not value:
            continue
        out[name] = parse_camera_names(value) if name == "camera_names" else value
    return out


def rviz_problem(enabled: str) -> str:
    """'' when RViz is not asked for or can be started; else a message saying what to do."""
    if not _true(enabled):
        return ""
    for prefix in [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]:
        marker = Path(prefix) / "share" / "ament_index" / "resource_index" / "packages" / "rviz2"
        if marker.is_file() and os.access(Path(prefix) / "lib" / "rviz2" / "rviz2", os.X_OK):
            return ""
    return ("rviz:=true, but RViz 2 is not installed here (no package 'rviz2' with lib/rviz2/rviz2 on "
            "AMENT_PREFIX_PATH): install it (apt install ros-$ROS_DISTRO-rviz2) or launch with rviz:=false "
            "(the default) and run RViz elsewhere; nothing was started")
