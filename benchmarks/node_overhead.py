#!/usr/bin/env python3
"""Occupancy-node overhead per frame vs model time, and end-to-end latency (JSON).

    python benchmarks/node_overhead.py                              # tiny_synth (random weights), 3 x 900x1600
    python benchmarks/node_overhead.py --checkpoint runs/tiny/last.pt --frames 20 --out node_overhead.json
    python benchmarks/node_overhead.py --standin --height 900 --width 1600    # node plumbing only

One process, real DDS: a fixture publisher plays synthetic frames (rendered small, resized to
--height x --width with scaled intrinsics) with stamp = wall clock at publication; the occupancy
node (MultiThreadedExecutor) and a collector run beside it. Reported per published set:
- node overhead: decode (Image -> RGB for all cameras), tf (lookups + Frame assembly), publish
  (cloud + markers + grid + depth images), and the sync cost of the approximate-time policy;
- model: OccupancyPredictor.predict;
- latency: image stamp -> point cloud received by the collector (wall clock); it includes the
  publisher's own image conversion + publish (reported as fixture_convert_and_publish_ms) and
  the DDS transfer, as a camera driver's would.
Frames are published every --period seconds (default: slower than the model, so nothing is
dropped and the latency is not queueing). Everything shares one process on the machine's cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _stats(xs) -> dict:
    a = np.asarray(list(xs), dtype=np.float64) * 1e3
    if a.size == 0:
        return {"n": 0}
    return {"n": int(a.size), "mean": float(a.mean()), "p50": float(np.percentile(a, 50)),
            "p95": float(np.percentile(a, 95)), "max": float(a.max())}


def sync_cost(num_cameras: int, sets: int = 2000) -> float:
    """Seconds per synchronized set spent in ApproximateTimeSync.add (queue 10, slop 50 ms, 12 Hz)."""
    from selfocc_ros.approx_sync import ApproximateTimeSync

    sync = ApproximateTimeSync(num_cameras, 10, 0.05)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for k in range(sets):
        base = k * 83_333_333
        for c in rng.permutation(num_cameras):
            sync.add(int(c), None, stamp_ns=base + int(rng.integers(0, 5_000_000)))
    return (time.perf_counter() - t0) / sets


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="", help="checkpoint (default: a fresh tiny_synth one, random weights)")
    ap.add_argument("--standin", action="store_true", help="StandInPredictor instead of a model (pure plumbing)")
    ap.add_argument("--cameras", nargs="+", default=["CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT"])
    ap.add_argument("--height", type=int, default=900)
    ap.add_argument("--width", type=int, default=1600)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--period", type=float, default=0.0, help="seconds between frames (0: 1.5 x model time)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--out", default=None, help="write the JSON here (atomically)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter

    from selfocc_ros import msg_build
    from selfocc_ros.occupancy_node import OccupancyNode
    from selfocc_ros.testing import FixturePublisher, OutputCollector, StandInPredictor

    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds_large_images.xml"))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    msg_build.activate_in_process()

    predictor, ckpt = None, args.checkpoint
    if args.standin:
        predictor = StandInPredictor()
    elif not ckpt:
        from selfocc_core.model.selfocc import SelfOccModel
        from selfocc_core.training.checkpoint import save_checkpoint
        from selfocc_core.training.config import load_experiment_config

        import dataclasses

        cfg = load_experiment_config("tiny_synth")
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, cameras=list(args.cameras)))
        torch.manual_seed(0)
        ckpt = str(save_checkpoint(Path(tempfile.mkdtemp()) / "tiny_synth.pt", model=SelfOccModel(cfg.model),
                                   config=cfg, step=0, with_rng=False))

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=int(os.environ.get("ROS_DOMAIN_ID", 180 + os.getpid() % 40)))
    params = [Parameter("camera_names", value=args.cameras), Parameter("device", value="cpu"),
              Parameter("checkpoint", value=ckpt or ""), Parameter("tf_timeout", value=0.2),
              Parameter("camera_timeout", value=30.0)]
    node = OccupancyNode(predictor=predictor, context=ctx, parameter_overrides=params)
    node.configure()
    node.activate()
    pub_node = rclpy.create_node("bench_fixture", context=ctx)
    fixture = FixturePublisher(pub_node, args.cameras, num_frames=args.frames, height=64, width=112,
                               cache_dir=str(REPO / ".selfocc_cache" / "bench"),
                               output_size=(args.height, args.width))
    for i in range(args.frames):
        fixture.frame(i)
    sub_node = rclpy.create_node("bench_collector", context=ctx)
    out = OutputCollector(sub_node, "/selfocc_occupancy", args.cameras)
    ex = MultiThreadedExecutor(num_threads=3, context=ctx)
    for n in (node, pub_node, sub_node):
        ex.add_node(n)
    threading.Thread(target=ex.spin, daemon=True).start()
    end = time.monotonic() + 30
    while time.monotonic() < end and not all(p.get_subscription_count() for p in fixture.pub_img.values()):
        time.sleep(0.05)

    # model time estimate for the pacing
    model_s = 0.0
    if args.period <= 0:
        t0 = time.perf_counter()
        node.predictor.predict(fixture.frame(0))
        model_s = time.perf_counter() - t0
    period = args.period if args.period > 0 else max(0.2, 1.5 * model_s + 0.2)

    stamps, pub_s = [], []
    for i in range(args.frames):
        t0 = time.monotonic()
        fixture.start_ns = time.time_ns() - int(round(fixture.data.seq.time(i) * 1e9))  # stamp = now
        stamps.append(fixture.publish_frame(i))
        pub_s.append(time.monotonic() - t0)
        time.sleep(max(0.0, period - (time.monotonic() - t0)))
    end = time.monotonic() + 10 * period + 10
    while time.monotonic() < end and not out.complete(stamps[-1:], with_grid=node.pub_grid is not None):
        time.sleep(0.05)
    time.sleep(0.5)

    tim = list(node.timings)
    latency = [(out.receive_wall_ns[s] - s) / 1e9 for s in stamps if s in out.receive_wall_ns]
    result = {
        "setup": {"cameras": len(args.cameras), "height": args.height, "width": args.width, "encoding": "rgb8",
                  "frames": args.frames, "period_s": period, "model": "standin" if args.standin else ckpt,
                  "torch_threads": args.threads, "cpu_count": os.cpu_count(),
                  "backends": __import__("selfocc_ros.compat", fromlist=["backends"]).backends()},
        "published": len(tim), "dropped": node.stats.sets_dropped, "input_errors": dict(node.stats.errors),
        "per_frame_ms": {
            "decode": _stats(t["decode_s"] for t in tim),
            "tf_and_assembly": _stats(t["assemble_s"] - t["decode_s"] for t in tim),
            "publish": _stats(t["publish_s"] for t in tim),
            "node_overhead_total": _stats(t["assemble_s"] + t["publish_s"] for t in tim),
            "model": _stats(t["model_s"] for t in tim),
        },
        "sync_ms_per_set": sync_cost(len(args.cameras)) * 1e3,
        "fixture_convert_and_publish_ms": _stats(pub_s),  # camera-driver side, inside the latency below
        "latency_stamp_to_cloud_received_ms": _stats(latency),
        "latency_stamp_to_published_ms": _stats(t["latency_s"] for t in tim),
    }
    ex.shutdown(timeout_sec=2.0)
    for n in (node, pub_node, sub_node):
        n.destroy_node()
    rclpy.shutdown(context=ctx)
    text = json.dumps(result, indent=2)
    if args.out:
        from selfocc_core.io_utils import atomic_write_text

        atomic_write_text(args.out, text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
