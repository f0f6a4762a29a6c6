"""`selfocc` command-line tool: one sub-command per job.

Each sub-command lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so
`selfocc synth` does not pay for importing rosbags or tensorboard.
"""

from __future__ import annotations

import argparse
import sys


def _synth():
    from selfocc_core.synth import cli
    return cli


def _train():
    from selfocc_core.training import cli
    return cli


def _eval():
    from selfocc_core.evaluation import cli
    return cli


def _demo():
    from selfocc_core import demo
    return demo


def _bench():
    from selfocc_core import bench
    return bench


def _bag():
    from selfocc_ros.bag import cli
    return cli


COMMANDS = {
    "synth": (_synth, "render the procedural driving world and export it (nuScenes / KITTI layouts)"),
    "train": (_train, "train SelfOcc self-supervised"),
    "eval": (_eval, "evaluate a checkpoint (occupancy IoU/mIoU, depth metrics)"),
    "demo": (_demo, "end-to-end demo on the embedded synthetic world"),
    "bench": (_bench, "speed and memory benchmarks (JSON)"),
    "bag": (_bag, "rosbag2 tools: convert, play, info"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="selfocc", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    argv = sys.argv[1:] if argv is None else argv
    # Only the chosen command's module is imported; the others get a placeholder parser.
    chosen = argv[0] if argv and argv[0] in COMMANDS else None
    modules = {}
    for name, (loader, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            modules[name] = loader()
            modules[name].add_arguments(p)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return int(modules[args.command].run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
