#!/usr/bin/env python3
"""Measure large-image throughput over Fast DDS between two processes on one machine.

    python tools/dds_large_images.py                       # LARGE_DATA vs DEFAULT, 6 x 1600x900 rgb8 @ 12 Hz
    python tools/dds_large_images.py --transports LARGE_DATA --seconds 10 --out dds.json

A publisher process sends N camera images (rgb8) at a fixed rate with sensor-data QoS (best
effort, as camera drivers do) or reliable QoS; a subscriber process counts what arrives and the
latency stamp -> callback. Each run sets FASTDDS_BUILTIN_TRANSPORTS for BOTH processes (they must
agree or they do not discover each other).

Why: with Fast DDS's default builtin transports (UDPv4 + shared memory with small segments) a
2.7 MB image is fragmented into many UDP datagrams and a single lost fragment loses the whole
best-effort sample; LARGE_DATA (shared memory for same-host traffic, TCP otherwise, UDP only for
discovery) carries 6 x 1600x900 at 12 Hz. Use LARGE_DATA in every process of the robot's graph.
Results (JSON on stdout or --out) are per transport: received rate per camera, loss, latency.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np


def _qos(reliable: bool):
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    if reliable:
        return QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    return qos_profile_sensor_data


def run_publisher(args) -> int:
    import rclpy
    from sensor_msgs.msg import Image

    with rclpy.init():
        node = rclpy.create_node("dds_bench_pub")
        pubs = [node.create_publisher(Image, f"/bench/cam{i}/image_raw", _qos(args.reliable)) for i in range(args.cameras)]
        data = np.random.default_rng(0).integers(0, 256, (args.height, args.width * 3), dtype=np.uint8).tobytes()
        msgs = []
        for i in range(args.cameras):
            m = Image(height=args.height, width=args.width, encoding="rgb8", step=args.width * 3, data=data)
            m.header.frame_id = f"cam{i}_optical_frame"
            msgs.append(m)
        deadline = time.monotonic() + args.discovery + 30.0  # the subscriber process may still be importing
        while time.monotonic() < deadline and any(p.get_subscription_count() == 0 for p in pubs):
            rclpy.spin_once(node, timeout_sec=0.05)
        time.sleep(args.discovery)  # matched: give the transports time to connect (TCP for LARGE_DATA)
        period = 1.0 / args.rate
        sent = 0
        t_next = time.monotonic()
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            now_ns = time.time_ns()
            for p, m in zip(pubs, msgs):
                m.header.stamp.sec, m.header.stamp.nanosec = divmod(now_ns, 1_000_000_000)
                p.publish(m)
            sent += 1
            t_next += period
            time.sleep(max(0.0, t_next - time.monotonic()))
        print(json.dumps({"sets_sent": sent}), flush=True)
        node.destroy_node()
    return 0


def run_subscriber(args) -> int:
    import rclpy
    from sensor_msgs.msg import Image

    counts = [0] * args.cameras
    latencies: list[float] = []
    first: list[float] = []
    with rclpy.init():
        node = rclpy.create_node("dds_bench_sub")

        def cb(msg, i):
            now = time.time_ns()
            counts[i] += 1
            if not first:
                first.append(time.monotonic())
            latencies.append((now - (msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec)) / 1e9)

        subs = [node.create_subscription(Image, f"/bench/cam{i}/image_raw", lambda m, i=i: cb(m, i), _qos(args.reliable))
                for i in range(args.cameras)]
        end = time.monotonic() + 600.0
        while time.monotonic() < end and not os.path.exists(args.done_file):  # the parent says when
            rclpy.spin_once(node, timeout_sec=0.05)
        lat = np.array(latencies) if latencies else np.array([np.nan])
        print(json.dumps({
            "received_per_camera": counts,
            "latency_ms": {"mean": float(np.nanmean(lat) * 1e3), "p50": float(np.nanpercentile(lat, 50) * 1e3),
                           "p95": float(np.nanpercentile(lat, 95) * 1e3), "max": float(np.nanmax(lat) * 1e3)},
        }), flush=True)
        del subs
        node.destroy_node()
    return 0


PROFILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "config", "fastdds_large_images.xml")


def measure(transport: str, args) -> dict:
    env = dict(os.environ)
    env.pop("FASTDDS_BUILTIN_TRANSPORTS", None)
    env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    if transport == "SHM_PROFILE":  # config/fastdds_large_images.xml: 64 MB shared-memory segments
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = os.path.abspath(PROFILE)
    elif transport:
        env["FASTDDS_BUILTIN_TRANSPORTS"] = transport
    env["ROS_DOMAIN_ID"] = str(args.domain)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    common = ["--cameras", str(args.cameras), "--width", str(args.width), "--height", str(args.height),
              "--rate", str(args.rate), "--seconds", str(args.seconds), "--discovery", str(args.discovery)]
    if args.reliable:
        common.append("--reliable")
    import tempfile

    done = os.path.join(tempfile.mkdtemp(prefix="dds_bench_"), "done")
    common += ["--done-file", done]
    sub = subprocess.Popen([sys.executable, __file__, "_sub", *common], env=env, stdout=subprocess.PIPE, text=True)
    pub = subprocess.Popen([sys.executable, __file__, "_pub", *common], env=env, stdout=subprocess.PIPE, text=True)
    pub_out, _ = pub.communicate(timeout=args.seconds + args.discovery + 120)
    time.sleep(1.0)  # let the last samples arrive
    open(done, "w").close()
    sub_out, _ = sub.communicate(timeout=120)
    sent = json.loads(pub_out.strip().splitlines()[-1])["sets_sent"]
    res = json.loads(sub_out.strip().splitlines()[-1])
    rx = res["received_per_camera"]
    return {
        "transport": transport or "DEFAULT",
        "qos": "reliable" if args.reliable else "sensor_data (best effort)",
        "sets_sent": sent,
        "received_per_camera": rx,
        "delivery_ratio": float(np.mean(rx) / max(sent, 1)),
        "received_rate_hz": float(np.mean(rx) / args.seconds),
        "throughput_MBps": float(sum(rx) * args.width * args.height * 3 / args.seconds / 1e6),
        "latency_ms": res["latency_ms"],
    }


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("role", nargs="?", default="bench", choices=["bench", "_pub", "_sub"], help=argparse.SUPPRESS)
    ap.add_argument("--cameras", type=int, default=6)
    ap.add_argument("--width", type=int, default=1600)
    ap.add_argument("--height", type=int, default=900)
    ap.add_argument("--rate", type=float, default=12.0)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--discovery", type=float, default=3.0, help="seconds allowed for discovery")
    ap.add_argument("--reliable", action="store_true", help="reliable QoS instead of sensor data (best effort)")
    ap.add_argument("--transports", nargs="+", default=["LARGE_DATA", "DEFAULT", "SHM_PROFILE"],
                    help="FASTDDS_BUILTIN_TRANSPORTS values to compare (DEFAULT = variable unset; "
                         "SHM_PROFILE = FASTDDS_DEFAULT_PROFILES_FILE=config/fastdds_large_images.xml)")
    ap.add_argument("--done-file", default="", help=argparse.SUPPRESS)
    ap.add_argument("--domain", type=int, default=170 + os.getpid() % 40)
    ap.add_argument("--out", default=None, help="write the JSON here (atomically)")
    args = ap.parse_args(argv)
    if args.role == "_pub":
        return run_publisher(args)
    if args.role == "_sub":
        return run_subscriber(args)
    results = {
        "setup": {"cameras": args.cameras, "width": args.width, "height": args.height, "encoding": "rgb8",
                  "rate_hz": args.rate, "seconds": args.seconds,
                  "offered_MBps": args.cameras * args.width * args.height * 3 * args.rate / 1e6,
                  "cpu_count": os.cpu_count()},
        "runs": [measure("" if t == "DEFAULT" else t, args) for t in args.transports],
    }
    text = json.dumps(results, indent=2)
    if args.out:
        from selfocc_core.io_utils import atomic_write_text

        atomic_write_text(args.out, text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
