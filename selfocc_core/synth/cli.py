"""`selfocc synth`: preview, export (nuScenes / KITTI layouts) and benchmark the synthetic world.

Examples:
    selfocc synth --preview synth.png                       # default seed/rig, small and quick
    selfocc synth --out /data/synth_nus --format nuscenes --seed 0 --scenes 2 --keyframes 10
    selfocc synth --out /data/synth_kitti --format kitti --frames 50
    selfocc synth --bench                                   # JSON with frames per second
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
    parser.add_argument("--rig", default=None, choices=["nuscenes", "kitti"],
                        help="camera rig for --preview/--bench (default nuscenes; --format sets it for exports)")
    parser.add_argument("--cameras", nargs="*", default=None, help="camera names (default: all of the rig)")
    parser.add_argument("--height", type=int, default=None, help="image height in pixels")
    parser.add_argument("--width", type=int, default=None, help="image width in pixels")
    parser.add_argument("--preview", metavar="PNG", default=None, help="write a preview PNG (images, depth, BEV of GT)")
    parser.add_argument("--frame", type=int, default=0, help="frame index for --preview")
    parser.add_argument("--out", metavar="DIR", default=None, help="export folder")
    parser.add_argument("--format", choices=["nuscenes", "kitti"], default="nuscenes", help="export layout")
    parser.add_argument("--scenes", type=int, default=1, help="nuScenes: scenes to export (seeds seed, seed+1, ...)")
    parser.add_argument("--keyframes", type=int, default=4, help="nuScenes: keyframes (2 Hz) per scene")
    parser.add_argument("--frames", type=int, default=20, help="KITTI: frames (10 Hz) in the sequence")
    parser.add_argument("--sequence", default="00", help="KITTI: sequence name (two digits)")
    parser.add_argument("--speed", type=float, default=10.0, help="ego speed in m/s")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export folder")
    parser.add_argument("--bench", action="store_true", help="print rendering speed as JSON")
    parser.add_argument("--bench-native", action="store_true", help="with --bench: also time one native-size frame")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads for rendering in --bench (default 1: the fastest on a shared CPU; "
                             "previews and exports always render with 1)")


def _check_size(args) -> None:
    for name in ("height", "width"):
        v = getattr(args, name)
        if v is not None and v <= 0:
            raise ValueError(f"--{name} must be positive, got {v}")


def run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        if args.threads <= 0:
            print(f"selfocc synth: --threads must be positive, got {args.threads}", file=sys.stderr)
            return 2
    if not (args.preview or args.out or args.bench):
        print("selfocc synth: nothing to do; give --preview PNG, --out DIR or --bench", file=sys.stderr)
        return 2
    try:
        _check_size(args)
        if args.preview:
            from selfocc_core.synth.preview import write_preview

            rig = args.rig or "nuscenes"
            h, w = (args.height or (188 if rig == "kitti" else 160)), (args.width or (620 if rig == "kitti" else 288))
            t0 = time.time()
            path = write_preview(args.preview, seed=args.seed, rig=rig, cameras=args.cameras, frame=args.frame, height=h, width=w)
            print(f"wrote {path} ({time.time() - t0:.1f} s)")
        if args.out:
            t0 = time.time()
            if args.format == "nuscenes":
                from selfocc_core.synth.export_nuscenes import export_nuscenes

                if args.scenes <= 0:
                    raise ValueError(f"--scenes must be positive, got {args.scenes}")
                out = export_nuscenes(args.out, seeds=list(range(args.seed, args.seed + args.scenes)), num_keyframes=args.keyframes,
                                      height=args.height or 225, width=args.width or 400, speed_mps=args.speed,
                                      overwrite=args.overwrite, log=lambda m: print(m, flush=True))
            else:
                from selfocc_core.synth.export_kitti import export_kitti

                out = export_kitti(args.out, seed=args.seed, sequence=args.sequence, num_frames=args.frames,
                                   height=args.height or 376, width=args.width or 1241, speed_mps=args.speed,
                                   overwrite=args.overwrite, log=lambda m: print(m, flush=True))
            print(f"exported {args.format} to {out} ({time.time() - t0:.1f} s)")
        if args.bench:
            from selfocc_core.synth.benchmark import bench_render

            sizes = ((args.height, args.width),) if args.height and args.width else ((96, 176), (192, 352))
            print(json.dumps(bench_render(rig=args.rig or "nuscenes", sizes=sizes, native=args.bench_native, seed=args.seed,
                                          threads=args.threads), indent=1))
    except (ValueError, FileExistsError, FileNotFoundError) as e:
        print(f"selfocc synth: error: {e}", file=sys.stderr)
        return 2
    return 0
