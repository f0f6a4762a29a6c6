"""`selfocc bag convert|play|info`: rosbag2 tools.

    selfocc bag convert --from kitti ../shared/data/real/kitti_odometry/dataset --out kitti00
    selfocc bag convert --from nuscenes data/nuscenes --scene scene-0061 --out s61 --compressed
    selfocc bag info kitti00
    selfocc bag play kitti00 --rate 2 --loop
"""

from __future__ import annotations

import argparse
import json
import logging
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bag_command", metavar="{convert,play,info}")

    c = sub.add_parser("convert", help="convert a dataset (nuScenes, KITTI odometry, DDAD, synthetic) to rosbag2")
    c.add_argument("src", nargs="?", default=None,
                   help="dataset root (nuScenes dataroot, KITTI odometry dataset/ or sequences/NN, DDAD root or "
                        "scene folder); for synthetic an optional SyntheticConfig YAML")
    c.add_argument("--from", dest="source", required=True, choices=["nuscenes", "kitti", "ddad", "synthetic"])
    c.add_argument("--out", required=True, help="output bag folder (must not exist unless --overwrite)")
    c.add_argument("--storage", default="mcap", choices=["mcap", "sqlite3"])
    c.add_argument("--compressed", action="store_true",
                   help="write sensor_msgs/CompressedImage (jpeg) on <cam>/image_raw/compressed instead of rgb8")
    c.add_argument("--cameras", nargs="+", default=None, help="cameras to keep (default: all)")
    c.add_argument("--scene", default=None, help="nuScenes scene name, DDAD scene folder, KITTI sequence (default 00)")
    c.add_argument("--overwrite", action="store_true", help="replace an existing --out bag")

    p = sub.add_parser("play", help="replay a bag into ROS 2 with its recorded timing and /clock")
    from selfocc_ros.bag.play import add_play_arguments

    add_play_arguments(p)

    i = sub.add_parser("info", help="topics, types, counts, duration of a bag (and how RosbagDataset sees it)")
    i.add_argument("bag")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.add_argument("--dataset", action="store_true",
                   help="also index it as a training dataset (frames, skipped images/frames)")


def bag_info(path) -> dict:
    """Metadata of a bag: {path, storage, duration_s, start_ns, message_count, topics: {name: {type, count}}}."""
    from selfocc_core.data.rosbag import open_bag

    src = open_bag(path)
    try:
        if hasattr(src, "reader"):
            r = src.reader
            topics = {name: {"type": t.msgtype, "count": t.msgcount} for name, t in sorted(r.topics.items())}
            out = {"path": str(path), "duration_s": r.duration / 1e9, "start_ns": r.start_time,
                   "message_count": r.message_count, "topics": topics, "recovered_by_scan": False}
            return out
        counts: dict[str, int] = {}
        times = []
        for topic, t, _ in src.messages():
            counts[topic] = counts.get(topic, 0) + 1
            times.append(t)
        return {"path": str(path), "duration_s": (max(times) - min(times)) / 1e9 if times else 0.0,
                "start_ns": min(times) if times else 0, "message_count": len(times),
                "topics": {n: {"type": src.topics[n], "count": counts.get(n, 0)} for n in sorted(src.topics)},
                "recovered_by_scan": True}
    finally:
        src.close()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cmd = getattr(args, "bag_command", None)
    if cmd == "convert":
        from selfocc_ros.bag.convert import convert

        try:
            counts = convert(args.source, args.src, args.out, storage=args.storage, compressed=args.compressed,
                             cameras=args.cameras, scene=args.scene, overwrite=args.overwrite,
                             progress=sys.stderr.isatty())
        except (FileNotFoundError, FileExistsError, ValueError) as e:
            print(f"selfocc bag convert: error: {e}", file=sys.stderr)
            return 1
        print(json.dumps({"bag": args.out, "messages": counts}, indent=1))
        return 0
    if cmd == "play":
        from selfocc_ros.bag.play import play_from_args

        return play_from_args(args)
    if cmd == "info":
        try:
            info = bag_info(args.bag)
            if args.dataset:
                from selfocc_core.data.config import DataConfig
                from selfocc_core.data.rosbag import RosbagDataset

                try:
                    info["dataset"] = RosbagDataset(args.bag, DataConfig(require_context=False)).summary
                except ValueError as e:
                    info["dataset"] = {"error": str(e)}
        except (FileNotFoundError, ValueError) as e:
            print(f"selfocc bag info: error: {e}", file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps(info, indent=1, default=str))
        else:
            print(f"bag:       {info['path']}{'  (recovered by scan: index missing)' if info['recovered_by_scan'] else ''}")
            print(f"duration:  {info['duration_s']:.3f} s   messages: {info['message_count']}")
            w = max(len(n) for n in info["topics"]) if info["topics"] else 0
            for name, t in info["topics"].items():
                print(f"  {name:<{w}}  {t['count']:>6}  {t['type']}")
            if "dataset" in info:
                print(f"dataset:   {json.dumps(info['dataset'], default=str)}")
        return 0
    print("usage: selfocc bag {convert,play,info} ... (see selfocc bag -h)", file=sys.stderr)
    return 2
