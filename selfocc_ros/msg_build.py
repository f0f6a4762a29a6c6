#!/usr/bin/env python3
"""Build the ROS 2 interface packages with the PyPI ROS wheels (no apt ROS 2 install needed).

Under a ROS 2 install (or with the wheels' environment, ``--underlay`` below) the ROS way is a
plain ``colcon build`` of a workspace holding this repository: it finds ros/selfocc_msgs and
ros/selfocc_ros by itself (never ros/standin, which has a COLCON_IGNORE). For a pip-only user
(``pip install -e ".[ros,msgbuild]"``) this module instead:

1. rewrites the Python/numpy include paths that the wheels' exported CMake files hard-code to
   the wheel builder's interpreter (`/opt/python/cp311-cp311/...`) into this interpreter's
   (in place, idempotent: only paths that do not exist are touched);
2. runs `colcon build` (isolated install: one prefix per package) on ros/selfocc_msgs, plus the
   ros/standin/tf2_msgs stand-in *only when no real tf2_msgs is installed* (same TFMessage
   definition, hence the same DDS type `tf2_msgs/msg/TFMessage`, so /tf and /tf_static
   interoperate with real ROS 2 nodes);
3. caches the result under build/ros_ws (rebuilt only when a msg source or the interpreter changes).

A stand-in built earlier never shadows a real tf2_msgs that appeared later: its prefix is left out
of the environment (and taken out of the current one) whenever a real tf2_msgs is found.

Use the result with `eval "$(python tools/build_msgs.py --print-env)"` (or
`python -m selfocc_ros.msg_build --print-env`), or from Python: `build()` returns the
environment additions (PYTHONPATH, LD_LIBRARY_PATH, AMENT_PREFIX_PATH) for subprocesses and
`activate_in_process()` makes the packages importable in the running interpreter.
`--underlay` prints the environment that makes the wheels the underlay of a colcon workspace
(what `source /opt/ros/<distro>/setup.bash` does for an apt install).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.machinery
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(os.environ.get("SELFOCC_REPO", Path(__file__).resolve().parents[1]))
PACKAGE_DIRS = {"selfocc_msgs": REPO / "ros" / "selfocc_msgs", "tf2_msgs": REPO / "ros" / "standin" / "tf2_msgs"}
WS_DIR = REPO / "build" / "ros_ws"
STAMP = WS_DIR / "build_stamp.json"
PY_SITE = f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"


class BuildError(RuntimeError):
    """The interface packages could not be built (the message names the missing piece)."""


def wheel_prefix() -> Path:
    """Install prefix of the ROS wheels (holds share/ament_index): this interpreter's sys.prefix."""
    for cand in (Path(sys.prefix), Path(sysconfig.get_paths()["data"])):
        if (cand / "share" / "ament_cmake_core" / "cmake").is_dir():
            return cand
    raise BuildError(
        f"ament_cmake not found under {sys.prefix}/share: install the build wheels with "
        f'`pip install -e "{REPO}[msgbuild]"`'
    )


def patch_exported_include_dirs(prefix: Path) -> int:
    """Rewrite non-existent Python/numpy include dirs in exported CMake files. Returns #files changed."""
    import numpy

    py_inc = sysconfig.get_paths()["include"]
    np_inc = numpy.get_include()
    changed = 0
    for f in sorted((prefix / "share").glob("*/cmake/*Export.cmake")):
        text = f.read_text()
        if "INTERFACE_INCLUDE_DIRECTORIES" not in text:
            continue

        def fix(path: str) -> str:
            if Path(path).exists():
                return path
            if re.search(r"/include/python3\.\d+m?$", path):
                return py_inc
            if re.search(r"/numpy/(_core|core)/include$", path):
                return np_inc
            return path

        def fix_line(m: re.Match) -> str:
            return m.group(1) + ";".join(fix(p) for p in m.group(2).split(";")) + m.group(3)

        new = re.sub(r'(INTERFACE_INCLUDE_DIRECTORIES ")([^"]*)(")', fix_line, text)
        if new != text:
            f.write_text(new)
            changed += 1
    return changed


def _ours(path: str | Path) -> bool:
    """True for a path inside our build workspace (where a stand-in may live)."""
    try:
        return Path(path).resolve().is_relative_to(WS_DIR.resolve())
    except (OSError, ValueError):
        return False


def _env_paths(var: str, env=None) -> list[str]:
    return [p for p in (env if env is not None else os.environ).get(var, "").split(os.pathsep) if p]


def real_tf2_msgs() -> str:
    """Where a real tf2_msgs (not our stand-in) is installed, '' when none is.

    Looks at the ament index of every AMENT_PREFIX_PATH entry and at every sys.path/PYTHONPATH
    entry, skipping build/ros_ws: a stand-in first on the path must not hide a real one behind it.
    """
    for prefix in _env_paths("AMENT_PREFIX_PATH"):
        marker = Path(prefix) / "share" / "ament_index" / "resource_index" / "packages" / "tf2_msgs"
        if marker.is_file() and not _ours(prefix):
            return str(Path(prefix))
    search = [p for p in [*sys.path, *_env_paths("PYTHONPATH")] if p and not _ours(p)]
    spec = importlib.machinery.PathFinder.find_spec("tf2_msgs", search)
    if spec is not None and spec.submodule_search_locations:
        return str(list(spec.submodule_search_locations)[0])
    return ""


def tf2_msgs_installed() -> bool:
    """True when a real tf2_msgs (not our stand-in) is installed."""
    return bool(real_tf2_msgs())


def packages_to_build() -> list[str]:
    """selfocc_msgs, plus the tf2_msgs stand-in only where no real tf2_msgs exists."""
    pkgs = ["selfocc_msgs"]
    if not tf2_msgs_installed():
        pkgs.append("tf2_msgs")
    return pkgs


def _prefixes(pkgs: list[str], ws: Path = WS_DIR) -> list[Path]:
    return [ws / "install" / p for p in pkgs]


def install_env(ws: Path = WS_DIR, pkgs: list[str] | None = None) -> dict[str, str]:
    """Environment additions (prepended to the current values) that make the built packages usable.

    Only the prefixes of ``pkgs`` (default packages_to_build()) go in; every other path inside
    ``ws`` is taken out of the current values (a stale stand-in from an earlier environment).
    """
    prefixes = _prefixes(pkgs if pkgs is not None else packages_to_build(), ws)

    def prepend(var: str, paths: list[Path]) -> str:
        kept = [p for p in _env_paths(var) if not _ours(p)]
        return os.pathsep.join([str(p) for p in paths] + kept)

    ament = prepend("AMENT_PREFIX_PATH", prefixes)
    wheels = Path(sys.prefix)
    if (wheels / "share" / "ament_index").is_dir() and str(wheels) not in ament.split(os.pathsep):
        ament += os.pathsep + str(wheels)  # keep the wheels' own packages findable
    return {
        "PYTHONPATH": prepend("PYTHONPATH", [p / PY_SITE for p in prefixes]),
        "LD_LIBRARY_PATH": prepend("LD_LIBRARY_PATH", [p / "lib" for p in prefixes]),
        "AMENT_PREFIX_PATH": ament,
    }


def underlay_env() -> dict[str, str]:
    """The wheels as the underlay of a colcon workspace (patches their CMake files first)."""
    prefix = wheel_prefix()
    patch_exported_include_dirs(prefix)
    out = {}
    for var in ("AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH"):
        old = [p for p in _env_paths(var) if p != str(prefix)]
        out[var] = os.pathsep.join([str(prefix), *old])
    return out


def _source_hash(pkgs: list[str]) -> str:
    h = hashlib.sha256(sys.executable.encode())
    for pkg in pkgs:
        for f in sorted(PACKAGE_DIRS[pkg].rglob("*")):
            if f.is_file():
                h.update(f"{pkg}/{f.relative_to(PACKAGE_DIRS[pkg])}".encode())
                h.update(f.read_bytes())
    return h.hexdigest()


def is_built(pkgs: list[str] | None = None) -> bool:
    pkgs = pkgs or packages_to_build()
    if not STAMP.is_file():
        return False
    try:
        stamp = json.loads(STAMP.read_text())
    except ValueError:
        return False
    return stamp.get("hash") == _source_hash(pkgs) and all(
        (WS_DIR / "install" / p / PY_SITE / p / "msg" / "__init__.py").is_file() for p in pkgs
    )


def build(force: bool = False, verbose: bool = False) -> dict[str, str]:
    """Build (if needed) and return install_env(). Raises BuildError with colcon's log tail."""
    pkgs = packages_to_build()
    if not force and is_built(pkgs):
        return install_env()
    if shutil.which("colcon") is None or shutil.which("cmake") is None:
        raise BuildError(f'colcon and cmake are needed: `pip install -e "{REPO}[msgbuild]"` (cmake: apt or pip)')
    prefix = wheel_prefix()
    patch_exported_include_dirs(prefix)
    env = dict(os.environ)
    env["CMAKE_PREFIX_PATH"] = os.pathsep.join([str(prefix)] + [p for p in env.get("CMAKE_PREFIX_PATH", "").split(os.pathsep) if p])
    env["AMENT_PREFIX_PATH"] = os.pathsep.join([str(prefix)] + [p for p in env.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p])
    env.pop("COLCON_PREFIX_PATH", None)
    WS_DIR.mkdir(parents=True, exist_ok=True)
    (WS_DIR / "COLCON_IGNORE").touch()  # a workspace crawl over this repository skips our build
    if (WS_DIR / "install" / "setup.sh").is_file() and not (WS_DIR / "install" / "selfocc_msgs").is_dir():
        shutil.rmtree(WS_DIR / "install")  # a merged install of an older version of this script
        shutil.rmtree(WS_DIR / "build", ignore_errors=True)
    cmd = [
        "colcon", "--log-base", str(WS_DIR / "log"), "build",
        "--build-base", str(WS_DIR / "build"),
        "--install-base", str(WS_DIR / "install"),
        "--paths", *[str(PACKAGE_DIRS[p]) for p in pkgs],
        "--event-handlers", "console_direct-" if not verbose else "console_direct+",
        "--cmake-args",
        "-DBUILD_TESTING=OFF",
        f"-DPython3_EXECUTABLE={sys.executable}",
        "-DCMAKE_BUILD_TYPE=Release",
    ]
    proc = subprocess.run(cmd, cwd=WS_DIR, env=env, capture_output=not verbose, text=True)
    if proc.returncode != 0:
        tail = ((proc.stdout or "") + (proc.stderr or ""))[-4000:]
        raise BuildError(f"colcon build of {pkgs} failed (exit {proc.returncode}); see {WS_DIR / 'log'}\n{tail}")
    STAMP.write_text(json.dumps({"hash": _source_hash(pkgs), "packages": pkgs}))
    return install_env()


ensure_built = build

_TYPESUPPORT_LIBS = (
    "rosidl_generator_c", "rosidl_typesupport_introspection_c", "rosidl_typesupport_fastrtps_c",
    "rosidl_typesupport_c", "rosidl_generator_py", "rosidl_typesupport_cpp",
    "rosidl_typesupport_introspection_cpp", "rosidl_typesupport_fastrtps_cpp",
)


def activate_in_process(env: dict[str, str] | None = None) -> dict[str, str]:
    """Build if needed, then make the built packages usable in *this* process.

    LD_LIBRARY_PATH is only read at process start, so the packages' libraries are preloaded
    (RTLD_GLOBAL); AMENT_PREFIX_PATH (read at call time by rosidl's type support lookup) and
    sys.path are updated. Subprocesses should get the returned env instead.
    """
    import ctypes

    env = env or build()
    os.environ["AMENT_PREFIX_PATH"] = env["AMENT_PREFIX_PATH"]
    pkgs = packages_to_build()
    sys.path[:] = [p for p in sys.path if not _ours(p)]  # no stale stand-in from an earlier call
    for prefix in reversed(_prefixes(pkgs)):
        sys.path.insert(0, str(prefix / PY_SITE))
    pending = [prefix / "lib" / f"lib{pkg}__{kind}.so" for pkg, prefix in zip(pkgs, _prefixes(pkgs))
               for kind in _TYPESUPPORT_LIBS]
    pending = [p for p in pending if p.is_file()]
    while pending:  # retry until dependencies are in place
        failed = []
        for p in pending:
            try:
                ctypes.CDLL(str(p), mode=ctypes.RTLD_GLOBAL)
            except OSError:
                failed.append(p)
        if len(failed) == len(pending):
            raise BuildError(f"cannot load {failed[0]}: run the process with LD_LIBRARY_PATH={failed[0].parent}")
        pending = failed
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even when the cache is up to date")
    parser.add_argument("--print-env", action="store_true", help="print `export VAR=...` lines for a shell")
    parser.add_argument("--underlay", action="store_true",
                        help="print `export` lines that make the ROS wheels the underlay of a colcon workspace "
                             "(then a plain `colcon build` builds ros/selfocc_msgs and ros/selfocc_ros)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.underlay:
        try:
            env = underlay_env()
        except BuildError as e:
            print(f"build_msgs: {e}", file=sys.stderr)
            return 1
        for k, v in env.items():
            print(f"export {k}={v}")
        return 0
    try:
        env = build(force=args.force, verbose=args.verbose)
    except BuildError as e:
        print(f"build_msgs: {e}", file=sys.stderr)
        return 1
    if args.print_env:
        for k, v in env.items():
            print(f"export {k}={v}")
    else:
        real = real_tf2_msgs()
        print(f"built {', '.join(packages_to_build())} into {WS_DIR / 'install'}"
              + (f" (tf2_msgs: the real one in {real})" if real else " (tf2_msgs: stand-in, none installed)"),
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
