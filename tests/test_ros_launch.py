"""Launch file, parameter file and RViz config: what can be checked without `launch`/RViz installed."""

from __future__ import annotations

import ast
import importlib.util
import py_compile
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch" / "occ.launch.py"
CONFIG = REPO / "config" / "occ.yaml"
RVIZ = REPO / "rviz" / "selfocc.rviz"
DDS_PROFILE = REPO / "config" / "fastdds_large_images.xml"


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def declared_launch_arguments(path: Path) -> list[str]:
    """Names of DeclareLaunchArgument calls in a launch file, in order (NODE_ARGUMENTS expanded)."""
    from selfocc_ros.launch_helpers import NODE_ARGUMENTS

    names = []
    calls = [n for n in ast.walk(ast.parse(path.read_text()))
             if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "DeclareLaunchArgument"]
    for n in sorted(calls, key=lambda c: (c.lineno, c.col_offset)):  # source order
        arg = n.args[0]
        names.extend([arg.value] if isinstance(arg, ast.Constant) else list(NODE_ARGUMENTS))
    return names


OCC_ARGUMENTS = ["config", "checkpoint", "camera_names", "image_transport", "base_frame", "odom_frame", "device",
                 "namespace", "use_sim_time", "rviz", "rviz_config", "dds_profile"]


def test_launch_file_compiles_and_declares_arguments(tmp_path):
    py_compile.compile(str(LAUNCH), cfile=str(tmp_path / "occ.pyc"), doraise=True)
    tree = ast.parse(LAUNCH.read_text())
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    assert declared_launch_arguments(LAUNCH) == OCC_ARGUMENTS
    # what it names exists: the executable (installed to lib/selfocc_ros), config, rviz config
    text = LAUNCH.read_text()
    assert 'executable="occupancy_node"' in text and (REPO / "scripts" / "occupancy_node").is_file()
    assert '"config", "occ.yaml"' in text and CONFIG.is_file()
    assert '"rviz", "selfocc.rviz"' in text and RVIZ.is_file()
    assert '"config", "fastdds_large_images.xml"' in text and DDS_PROFILE.is_file()
    # installed the same way by pip (pyproject data-files) and by colcon (ros/selfocc_ros/CMakeLists.txt)
    pyproject = (REPO / "pyproject.toml").read_text()
    for pattern in ('"launch/*.launch.py"', '"config/*.yaml"', '"config/*.xml"', '"rviz/*.rviz"', '"scripts/*"'):
        assert pattern in pyproject, pattern
    cmake = (REPO / "ros" / "selfocc_ros" / "CMakeLists.txt").read_text()
    for pattern in ('"${REPO}/launch"', '"${REPO}/config"', '"${REPO}/rviz"', '"${REPO}/scripts/occupancy_node"',
                    '"${REPO}/scripts/bag_player"'):
        assert pattern in cmake, pattern


def test_launch_arguments_become_node_parameters():
    """Only the launch arguments given override the parameter file; camera_names parses as a list."""
    from selfocc_ros.launch_helpers import node_overrides, parse_camera_names

    assert node_overrides({"checkpoint": "m.pt", "use_sim_time": "false", "camera_names": ""}) == {
        "use_sim_time": False, "checkpoint": "m.pt"}
    got = node_overrides({"checkpoint": "m.pt", "use_sim_time": "true", "camera_names": "[CAM_FRONT, CAM_BACK]",
                          "base_frame": "velodyne", "image_transport": "compressed", "device": "cpu"})
    assert got == {"use_sim_time": True, "checkpoint": "m.pt", "camera_names": ["CAM_FRONT", "CAM_BACK"],
                   "base_frame": "velodyne", "image_transport": "compressed", "device": "cpu"}
    assert parse_camera_names("CAM_FRONT,CAM_BACK") == parse_camera_names("CAM_FRONT CAM_BACK") == ["CAM_FRONT", "CAM_BACK"]
    with pytest.raises(ValueError, match="camera_names"):
        parse_camera_names("[CAM_FRONT, [x]]")
    with pytest.raises(ValueError, match="true or false"):
        node_overrides({"use_sim_time": "maybe"})


def test_rviz_true_without_rviz_is_refused_before_anything_starts(tmp_path, monkeypatch):
    """rviz:=true needs the rviz2 package (ament index + executable); else a message, nothing started."""
    from selfocc_ros.launch_helpers import rviz_problem

    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path / "empty"))
    assert rviz_problem("false") == ""
    msg = rviz_problem("true")
    assert "rviz:=true" in msg and "rviz2" in msg and "rviz:=false" in msg and "nothing was started" in msg
    prefix = tmp_path / "ros"
    (prefix / "share" / "ament_index" / "resource_index" / "packages").mkdir(parents=True)
    (prefix / "share" / "ament_index" / "resource_index" / "packages" / "rviz2").touch()
    assert rviz_problem("true")  # indexed but without its executable
    exe = prefix / "lib" / "rviz2" / "rviz2"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.setenv("AMENT_PREFIX_PATH", f"{tmp_path / 'empty'}:{prefix}")
    assert rviz_problem("true") == ""
    # both launch files check before they start anything (the check comes first in the description)
    for launch in (LAUNCH, REPO / "launch" / "replay.launch.py"):
        text = launch.read_text()
        assert "rviz_problem(" in text and "raise RuntimeError(problem)" in text, launch


def test_dds_profile_is_valid_fastdds_xml():
    import xml.etree.ElementTree as ET

    ns = {"d": "http://www.eprosima.com"}
    root = ET.parse(DDS_PROFILE).getroot()
    shm = [t for t in root.iterfind(".//d:transport_descriptor", ns) if t.findtext("d:type", namespaces=ns) == "SHM"]
    assert shm and int(shm[0].findtext("d:segment_size", namespaces=ns)) >= 6 * 1600 * 900 * 3
    part = root.find(".//d:participant", ns)
    assert part.get("is_default_profile") == "true"
    used = [t.text for t in part.iterfind(".//d:userTransports/d:transport_id", ns)]
    assert set(used) == {t.findtext("d:transport_id", namespaces=ns) for t in root.iterfind(".//d:transport_descriptor", ns)}


@pytest.mark.skipif(importlib.util.find_spec("launch") is None or importlib.util.find_spec("launch_ros") is None,
                    reason="ROS 2 launch not installed")
def test_generate_launch_description():
    spec = importlib.util.spec_from_file_location("occ_launch", LAUNCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ld = mod.generate_launch_description()
    names = [a.name for a in ld.get_launch_arguments()]
    assert names == OCC_ARGUMENTS


@pytest.mark.ros
def test_param_file_is_ros_yaml_and_matches_declared_parameters():
    data = yaml.safe_load(CONFIG.read_text())
    params = data["/**"]["ros__parameters"]
    flat = _flatten(params)
    assert flat["base_frame"] == "base_link" and flat["odom_frame"] == "odom"
    assert "camera_names" not in flat  # unset: the checkpoint's cameras (the README's command works as is)

    rclpy = pytest.importorskip("rclpy")
    from selfocc_ros.occupancy_node import OccupancyNode

    ctx = rclpy.Context()
    rclpy.init(context=ctx, args=["--ros-args", "--params-file", str(CONFIG)])
    try:
        node = OccupancyNode(context=ctx)
        try:
            for name, value in flat.items():
                assert node.has_parameter(name), f"{CONFIG}: '{name}' is not a parameter of the node"
                got = node.get_parameter(name).value
                assert (list(got) if isinstance(got, (list, tuple)) else got) == value, name
            # every declared parameter has a description
            for name in node._parameters:
                if name != "use_sim_time":
                    assert node.describe_parameter(name).description, name
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


def test_rviz_config_parses_and_shows_the_node_outputs():
    cfg = yaml.safe_load(RVIZ.read_text())
    vm = cfg["Visualization Manager"]
    assert vm["Global Options"]["Fixed Frame"] == "odom"
    displays = {d["Class"]: [] for d in vm["Displays"]}
    for d in vm["Displays"]:
        displays[d["Class"]].append(d.get("Topic", {}).get("Value"))
    assert "rviz_default_plugins/TF" in displays
    assert displays["rviz_default_plugins/MarkerArray"] == ["/selfocc_occupancy/occupancy_markers"]
    assert displays["rviz_default_plugins/PointCloud2"] == ["/selfocc_occupancy/occupancy"]
    images = displays["rviz_default_plugins/Image"]
    assert "/CAM_FRONT/image_raw" in images and "/selfocc_occupancy/depth/CAM_FRONT" in images
    # topic names the node publishes (from its source) match the config
    src = (REPO / "selfocc_ros" / "occupancy_node.py").read_text()
    for suffix in ("occupancy", "occupancy_markers", "depth/"):
        assert re.search(rf'"~/{re.escape(suffix)}', src) or f'f"~/{suffix}' in src, suffix
