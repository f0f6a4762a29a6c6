"""The repository as a ROS 2 package: what a plain `colcon build` finds and builds, package.xml,
and the tf2_msgs stand-in never hiding a real tf2_msgs."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE_XML = REPO / "ros" / "selfocc_ros" / "package.xml"

# top-level Python module -> the package.xml key that provides it
ROSDEP_KEYS = {
    "PIL": "python3-pil", "yaml": "python3-yaml", "numpy": "python3-numpy", "torch": "python3-torch",
    "tqdm": "python3-tqdm", "imageio": "python3-imageio", "transforms3d": "python3-transforms3d",
    "rosbags": "python3-rosbags-pip", "tf2_ros": "tf2_ros_py",
}
# imported only on a path that reports a clear error when missing
OPTIONAL = {
    "lz4": "lz4-compressed mcap chunks only",
    "compression": "zstd-compressed mcap chunks only (Python >= 3.14)",
    "backports": "zstd-compressed mcap chunks only (backports.zstd)",
}
EXECUTABLE_MODULES = ["selfocc_ros.occupancy_node", "selfocc_ros.bag.play"]  # scripts/occupancy_node, bag_player


def _module_file(name: str) -> Path | None:
    for cand in (REPO / (name.replace(".", "/") + ".py"), REPO / name.replace(".", "/") / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def imports_of(files: list[Path], roots: list[str]) -> dict[str, set[str]]:
    """Third-party top-level modules imported (at any depth, lazily too) by ``files`` and every
    selfocc_* module they reach -> the modules importing them."""
    seen, found = set(), {}
    todo = [(str(f), f) for f in files] + [(m, _module_file(m)) for m in roots]
    while todo:
        name, path = todo.pop()
        if name in seen or path is None:
            continue
        seen.add(name)
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, ast.Import):
                names = [a.name for a in n.names]
            elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
                names = [n.module] + [f"{n.module}.{a.name}" for a in n.names]
            else:
                continue
            for x in names:
                top = x.split(".")[0]
                if top in ("selfocc_core", "selfocc_ros"):
                    parts = x.split(".")
                    todo += [(".".join(parts[:i]), _module_file(".".join(parts[:i]))) for i in range(1, len(parts) + 1)]
                elif top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add(name)
    return found


def test_package_xml_declares_every_import_of_the_executables_and_launch_files():
    root = ET.parse(PACKAGE_XML).getroot()
    assert root.findtext("name") == "selfocc_ros" and root.find("export/build_type").text == "ament_cmake"
    declared = {e.text for tag in ("depend", "exec_depend") for e in root.iter(tag)}
    launch_files = sorted((REPO / "launch").glob("*.launch.py"))
    used = imports_of(launch_files, EXECUTABLE_MODULES)
    assert {"rclpy", "torch", "rosbags", "rcl_interfaces", "transforms3d", "launch"} <= set(used)
    missing = {m: sorted(by)[:2] for m, by in used.items()
               if m not in OPTIONAL and ROSDEP_KEYS.get(m, m) not in declared}
    assert not missing, f"imported but not declared in {PACKAGE_XML}: {missing}"
    assert "pyquaternion" not in used  # no rosdep key: transforms3d does its job
    assert "rviz2" not in declared  # optional: rviz:=true checks for it (headless robots need no RViz)
    build = {e.text for e in root.iter("buildtool_depend")}
    assert {"ament_cmake", "ament_cmake_python"} <= build


def _workspace_with_repo(tmp_path: Path, copy: bool) -> Path:
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    if copy:  # a clean clone: the tracked files only
        files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
        for rel in filter(None, files.decode().split("\0")):
            if (REPO / rel).is_file():
                dst = ws / "src" / "selfocc_ros" / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / rel, dst)
    else:  # this checkout as it is (build/ros_ws with a tf2_msgs stand-in may be inside)
        (ws / "src" / "selfocc_ros").symlink_to(REPO)
    return ws


@pytest.mark.skipif(shutil.which("colcon") is None, reason="colcon not installed")
def test_plain_colcon_finds_the_message_and_the_node_package_but_no_tf2_msgs(tmp_path):
    """`colcon list` with no arguments, as `colcon build` would crawl: both packages, never the stand-in."""
    ws = _workspace_with_repo(tmp_path, copy=False)
    out = subprocess.run(["colcon", "list", "--names-only"], cwd=ws, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.split()) == ["selfocc_msgs", "selfocc_ros"], out.stdout + out.stderr
    assert (REPO / "ros" / "standin" / "COLCON_IGNORE").is_file()
    assert not (REPO / "setup.py").exists() and not (REPO / "package.xml").exists()  # the root is no package


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("colcon") is None, reason="colcon not installed")
def test_plain_colcon_build_of_a_clean_clone_installs_node_launch_and_message(tmp_path):
    from selfocc_ros import msg_build

    ws = _workspace_with_repo(tmp_path, copy=True)
    env = dict(os.environ, **msg_build.underlay_env())  # the wheels as underlay (= sourcing /opt/ros/<distro>)
    env.pop("PYTHONPATH", None)
    build = subprocess.run(["colcon", "build"], cwd=ws, env=env, capture_output=True, text=True, timeout=1200)
    assert build.returncode == 0, (build.stdout + build.stderr)[-4000:]
    assert "2 packages finished" in build.stdout, build.stdout
    inst = ws / "install" / "selfocc_ros"
    for rel in ("lib/selfocc_ros/occupancy_node", "lib/selfocc_ros/bag_player", "share/selfocc_ros/package.xml",
                "share/selfocc_ros/launch/occ.launch.py", "share/selfocc_ros/launch/replay.launch.py",
                "share/selfocc_ros/config/occ.yaml", "share/selfocc_ros/rviz/selfocc.rviz",
                "share/ament_index/resource_index/packages/selfocc_ros"):
        assert (inst / rel).exists(), rel
    assert not (ws / "install" / "tf2_msgs").exists()
    # the installed code runs from the workspace (not from this checkout)
    script = (f"source {ws}/install/setup.bash && cd {tmp_path} && python -c \"from selfocc_msgs.msg import OccupancyGrid3D; "
              "import selfocc_ros.occupancy_node as o; print(o.__file__)\" && "
              f"{inst}/lib/selfocc_ros/occupancy_node --ros-args -p checkpoint:={tmp_path}/missing.pt")
    run = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert str(inst) in run.stdout, run.stdout + run.stderr
    assert run.returncode == 1 and "checkpoint not found" in run.stdout + run.stderr, run.stdout + run.stderr


# ----------------------------------------------------------------------------- tf2_msgs stand-in


def _fake_real_tf2(root: Path) -> Path:
    """An installed-looking 'real' tf2_msgs: a prefix with an ament index entry and a Python
    package that has the srv module the stand-in lacks, plus a tf2_ros that imports it."""
    site = root / "lib" / "python3" / "site-packages"
    for sub in ("tf2_msgs", "tf2_msgs/msg", "tf2_msgs/srv"):
        (site / sub).mkdir(parents=True)
        (site / sub / "__init__.py").write_text("")
    (site / "tf2_msgs" / "srv" / "__init__.py").write_text("class FrameGraph:\n    pass\n")
    index = root / "share" / "ament_index" / "resource_index" / "packages"
    index.mkdir(parents=True)
    (index / "tf2_msgs").touch()
    return site


def _run(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, cwd=REPO)


def test_stale_standin_never_shadows_a_real_tf2_msgs(tmp_path):
    """A stand-in built into build/ros_ws earlier stays out of the environment once a real tf2_msgs
    exists, even where that environment listed the stand-in first; and it is not rebuilt."""
    from selfocc_ros import msg_build

    stale = msg_build.WS_DIR / "install" / "tf2_msgs"
    stale_site = stale / msg_build.PY_SITE
    real_site = _fake_real_tf2(tmp_path / "ros")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(stale_site), str(real_site), str(REPO)]),
               AMENT_PREFIX_PATH=os.pathsep.join([str(stale), str(tmp_path / "ros")]),
               LD_LIBRARY_PATH=str(stale / "lib"))
    code = ("from selfocc_ros import msg_build as b; import json; "
            "print(json.dumps([b.real_tf2_msgs(), b.packages_to_build(), b.install_env()]))")
    r = _run(code, env)
    assert r.returncode == 0, r.stderr
    import json

    real, pkgs, new_env = json.loads(r.stdout)
    assert real == str(real_site / "tf2_msgs") or real == str(tmp_path / "ros")
    assert pkgs == ["selfocc_msgs"]  # a tf2_msgs is never built where a real one exists
    for var in ("PYTHONPATH", "AMENT_PREFIX_PATH", "LD_LIBRARY_PATH"):
        assert str(stale) not in new_env[var], (var, new_env[var])
    assert str(real_site) in new_env["PYTHONPATH"].split(os.pathsep)
    # the environment it gives a subprocess imports the real package (with its srv module)
    r = _run("import tf2_msgs, tf2_msgs.srv; print(tf2_msgs.__file__)", dict(env, **new_env))
    assert r.returncode == 0 and str(real_site) in r.stdout, r.stdout + r.stderr
    # without a real one, the stand-in is what gets built
    r = _run("from selfocc_ros import msg_build as b; print(b.packages_to_build())",
             dict(os.environ, PYTHONPATH=str(REPO), AMENT_PREFIX_PATH=str(tmp_path / "nothing")))
    assert r.stdout.strip() == "['selfocc_msgs', 'tf2_msgs']", r.stdout + r.stderr


def test_backend_probe_imports_what_it_uses_and_falls_back(tmp_path):
    """A tf2_ros that is found but fails to import (its tf2_msgs is a stand-in without srv) must
    select our TF buffer with the reason, not be 'available' and fail when used."""
    site = tmp_path / "site"
    (site / "tf2_ros").mkdir(parents=True)
    (site / "tf2_ros" / "__init__.py").write_text(
        "import tf2_msgs.srv  # as the real tf2_ros does\nclass Buffer: pass\nclass TransformListener: pass\n"
        "class TransformException(Exception): pass\n")
    standin = tmp_path / "standin"
    (standin / "tf2_msgs" / "msg").mkdir(parents=True)
    (standin / "tf2_msgs" / "__init__.py").write_text("")
    (standin / "tf2_msgs" / "msg" / "__init__.py").write_text("")
    code = "from selfocc_ros import compat; print(compat.have_tf2_ros()); print(compat.backends()['tf'])"
    r = _run(code, dict(os.environ, PYTHONPATH=os.pathsep.join([str(standin), str(site), str(REPO)])))
    assert r.returncode == 0, r.stderr
    have, tf = r.stdout.strip().splitlines()
    assert have == "False"
    assert tf.startswith("selfocc_ros.tf_buffer") and "No module named 'tf2_msgs.srv'" in tf, tf
    # with the real tf2_msgs (srv present) the same tf2_ros is used
    real_site = _fake_real_tf2(tmp_path / "ros")
    r = _run(code, dict(os.environ, PYTHONPATH=os.pathsep.join([str(real_site), str(site), str(REPO)])))
    assert r.stdout.strip().splitlines() == ["True", "tf2_ros"], r.stdout + r.stderr
