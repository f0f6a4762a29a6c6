#!/usr/bin/env python3
"""Occupancy-node overhead per frame vs model time, latency at the camera rate, and a stress run (JSON).

    python benchmarks/node_overhead.py --out benchmarks/node_overhead_cpu.json    # tiny_synth, 6 x 1600x900 rgb8
    python benchmarks/node_overhead.py --checkpoint runs/tiny/last.pt --stress-frames 0
    python benchmarks/node_overhead.py --standin                                 # node plumbing only

Two processes over real DDS (Fast DDS, the large-image profile of config/), as on a robot:
- this process runs only the occupancy node (spun by the executor of the node's main(),
  --executor; inference and publishing on the node's own threads) and reads its per-stage
  timings and the CPU time of each of its threads;
- a "robot" process runs the fixture publisher (synthetic frames rendered small, resized to
  --height x --width with scaled intrinsics, stamp = wall clock when its publication starts;
  odom->base_link on /tf per frame) and a collector subscribed to every output (so the node
  builds and sends all of them), and reports its own publish cost per frame.

Phases (one node, one process pair):
1. overhead: frames paced slower than the model, so nothing queues; per stage: decode (Image ->
   uint8 views), tf (lookups), resize (uint8 downscale to the network input, normalise), the
   publish stages (cloud, markers, grid, depth: build + send, on the publish thread), and model
   = OccupancyPredictor.predict. overhead = all stages but the model; the ratio overhead / model.
2. latency: --rate Hz (12 = nuScenes cameras) with drop-old semantics; image stamp -> occupancy
   published (node's clock, the same wall clock), p50 / p95, and the same minus the fixture's own
   publication time of that frame (a camera driver's cost, not the node's); the queue wait
   (a set waiting for the running inference) is reported on its own.
3. stress: --stress-frames at --rate: sets dropped, latency p95, the node process's RSS sampled
   every 50 frames (flat after warm-up = no growth).

Node settings under test: --max-queue-wait (parameter max_queue_wait: a set that waited longer
for the running inference is dropped as stale, reported as sets_stale beside published_rate_hz:
latency against rate) and --row-step (resize.row_step: 0 auto, 1 the exact downscale).
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
NUSCENES = ["CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT"]
CACHE = str(REPO / ".selfocc_cache" / "bench")


def _stats(xs, scale: float = 1e3) -> dict:
    a = np.asarray(list(xs), dtype=np.float64) * scale
    if a.size == 0:
        return {"n": 0}
    return {"n": int(a.size), "mean": round(float(a.mean()), 3), "p50": round(float(np.percentile(a, 50)), 3),
            "p95": round(float(np.percentile(a, 95)), 3), "max": round(float(a.max()), 3)}


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def thread_cpu() -> dict:
    """CPU seconds (user + system) per thread of this process so far, keyed by thread name
    (Python's name where the thread is a Python thread, else the OS name: dds.*, torch/OpenMP)."""
    tick = os.sysconf("SC_CLK_TCK")
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict = collections.Counter()
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            comm = (task / "comm").read_text().strip()
        except OSError:  # the thread ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        name = names.get(int(task.name)) or comm
        out[name] += (int(fields[11]) + int(fields[12])) / tick
    return dict(out)


def cpu_delta(before: dict, after: dict, sets: int) -> dict:
    """Per-thread CPU between two thread_cpu() samples, in ms per set offered, largest first."""
    d = {k: (after.get(k, 0.0) - before.get(k, 0.0)) * 1e3 / max(1, sets) for k in after}
    return {k: round(v, 2) for k, v in sorted(d.items(), key=lambda kv: -kv[1]) if v > 0}


def machine() -> dict:
    import torch

    from selfocc_core.bench import machine_info

    return machine_info(torch.device("cpu"))


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


def receive_cost(num_cameras: int, height: int, width: int, reps: int = 5) -> float:
    """Seconds per camera set that rclpy spends turning received rgb8 images into Python messages
    (deserialize_message, as the executor does before the node's callback sees them)."""
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image

    from selfocc_ros import conversions as conv

    # random pixels: an all-zero image took ~20x longer to deserialize (7.7 vs 0.4 ms for 1600x900 rgb8,
    # 2026-12-02), so the figure of a real camera's images is what this measures
    img = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    raw = serialize_message(conv.numpy_to_image(img, "rgb8"))
    deserialize_message(raw, Image)
    t0 = time.perf_counter()
    for _ in range(reps * num_cameras):
        deserialize_message(raw, Image)
    return (time.perf_counter() - t0) / reps


def output_cost(config: str = "nuscenes_occ", reps: int = 5) -> dict:
    """Milliseconds to build + serialize each output for one prediction of ``config``'s size (its
    grid, depth at its network input for its cameras), without DDS or a model: a grid with a
    ground layer and random objects (~10 % occupied), built into the CDR bytes the node publishes
    (the same conversions functions)."""
    from rclpy.serialization import serialize_message
    from std_msgs.msg import Header

    from selfocc_core.training.config import load_experiment_config
    from selfocc_msgs.msg import OccupancyGrid3D
    from selfocc_ros import conversions as conv

    cfg = load_experiment_config(config)
    grid = cfg.model.scene
    X, Y, Z = grid.shape
    rng = np.random.default_rng(0)
    labels = np.full((X, Y, Z), 17, np.uint8)
    labels[:, :, :2] = 11
    labels[rng.random((X, Y, Z)) < 0.08] = 4
    conf = rng.random((X, Y, Z)).astype(np.float32)
    n_cam, h, w = max(1, len(cfg.data.cameras)), cfg.data.image_height, cfg.data.image_width
    depth = rng.random((n_cam, h, w)).astype(np.float32) * 50
    header = Header(frame_id="base_link")

    def cloud():
        return conv.serialize_occupancy_cloud(labels, conf, grid.lower, grid.voxel_size, header)

    def markers():
        xyz, lab = conv.marker_voxels(labels, grid.lower, grid.voxel_size, 30.0, 5000)
        return conv.serialize_occupancy_markers(xyz, lab, grid.voxel_size, header)

    def grid_msg():
        return serialize_message(conv.fill_grid_msg(OccupancyGrid3D(), labels, grid.lower, grid.voxel_size, header,
                                                    confidence=conf))

    def depth_msgs():
        return [conv.serialize_depth(d, header) for d in depth]

    out = {"config": config, "grid": [X, Y, Z], "occupied": int((labels != 17).sum()),
           "depth": [n_cam, h, w]}
    for name, fn in (("cloud", cloud), ("markers", markers), ("grid", grid_msg), ("depth", depth_msgs)):
        fn()
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        out[f"{name}_ms"] = round(float(np.median(ts)) * 1e3, 3)
    out["total_ms"] = round(sum(out[f"{k}_ms"] for k in ("cloud", "markers", "grid", "depth")), 3)
    return out


# ----------------------------------------------------------------------------- robot process


def robot_process(conn, cameras, height, width, distinct, domain_id, executor="single"):
    """Fixture publisher + output collector in their own process; driven by ("play", n, period) messages."""
    os.environ["ROS_DOMAIN_ID"] = str(domain_id)
    import rclpy

    from selfocc_ros import msg_build
    from selfocc_ros.occupancy_node import make_executor
    from selfocc_ros.testing import FixturePublisher, OutputCollector

    msg_build.activate_in_process()
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain_id)
    pub_node = rclpy.create_node("bench_fixture", context=ctx)
    fixture = FixturePublisher(pub_node, cameras, num_frames=distinct, height=64, width=112, cache_dir=CACHE,
                               output_size=(height, width))
    for i in range(distinct):
        fixture._published(i)  # render + resize once, before any timing
    sub_node = rclpy.create_node("bench_collector", context=ctx)
    out = OutputCollector(sub_node, "/selfocc_occupancy", cameras)
    ex = make_executor(executor, ctx)
    ex.add_node(pub_node)
    ex.add_node(sub_node)
    threading.Thread(target=ex.spin, daemon=True).start()
    end = time.monotonic() + 60
    while time.monotonic() < end and not all(p.get_subscription_count() for p in fixture.pub_img.values()):
        time.sleep(0.05)
    conn.send("ready")
    k = 0
    while True:
        cmd = conn.recv()
        if cmd[0] == "stop":
            break
        _, n, period = cmd
        stamps, pub_s = [], []
        cpu0 = time.process_time()
        t_start = time.monotonic()
        for j in range(n):
            due = t_start + j * period
            now = time.monotonic()
            if now < due:
                time.sleep(due - now)
            i = k % distinct
            t0 = time.monotonic()
            fixture.start_ns = time.time_ns() - int(round(fixture.data.seq.time(i) * 1e9))  # stamp = now
            stamps.append(fixture.publish_frame(i))
            pub_s.append(time.monotonic() - t0)
            k += 1
        rate = (n - 1) / (time.monotonic() - t_start - pub_s[-1]) if n > 1 else 0.0
        end = time.monotonic() + 3.0
        while time.monotonic() < end and stamps[-1] not in out.clouds:
            time.sleep(0.02)
        time.sleep(0.3)
        conn.send({"stamps": stamps, "publish_s": pub_s, "input_rate_hz": rate,
                   "process_cpu_ms_per_set": round((time.process_time() - cpu0) * 1e3 / max(1, n), 2),
                   "cloud_wall_ns": {s: out.receive_wall_ns[s] for s in stamps if s in out.receive_wall_ns}})
    ex.shutdown(timeout_sec=2.0)
    pub_node.destroy_node()
    sub_node.destroy_node()
    rclpy.shutdown(context=ctx)


# ----------------------------------------------------------------------------- node process


def make_checkpoint(config: str, cameras) -> str:
    """A fresh checkpoint of ``config`` for ``cameras`` (seeded random weights: the cost does not
    depend on what the weights learned)."""
    import dataclasses

    import torch

    from selfocc_core.model.selfocc import SelfOccModel
    from selfocc_core.training.checkpoint import save_checkpoint
    from selfocc_core.training.config import load_experiment_config

    cfg = load_experiment_config(config)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, cameras=list(cameras)))
    torch.manual_seed(0)
    path = Path(tempfile.mkdtemp()) / f"{Path(config).stem}.pt"
    return str(save_checkpoint(path, model=SelfOccModel(cfg.model), config=cfg, step=0, with_rng=False))


def phase_summary(tim: list[dict], robot: dict, dropped: int, results_dropped: int, errors: int = 0,
                  stale: int = 0) -> dict:
    stage_names = sorted({k for t in tim for k in t["publish_stages_s"]})
    own = [t.get("prepare_s", 0.0) + t["assemble_s"] + t["publish_s"] for t in tim]
    per = {
        "decode": _stats(t["decode_s"] for t in tim),
        "tf": _stats(t["tf_s"] for t in tim),
        "resize_normalise": _stats(t["resize_s"] for t in tim),
        # decode + downscale done in the subscription callbacks as the images arrived (executor thread)
        "prepare_in_callbacks": _stats(t.get("prepare_s", 0.0) for t in tim),
        # the same, the callback thread's CPU time (wall above = this + time the thread was preempted)
        "prepare_in_callbacks_cpu": _stats(t.get("prepare_cpu_s", 0.0) for t in tim),
        # on the inference thread before the model: camera_info, TF, stacking, rig check
        "worker_assembly": _stats(t["assemble_s"] for t in tim),
        "worker_assembly_cpu": _stats(t.get("assemble_cpu_s", 0.0) for t in tim),
        **{f"publish_{k}": _stats(t["publish_stages_s"].get(k, 0.0) for t in tim) for k in stage_names},
        "publish_total": _stats(t["publish_s"] for t in tim),
        "node_overhead_total": _stats(own),
        "model": _stats(t["model_s"] for t in tim),
    }
    ratio = [o / t["model_s"] for o, t in zip(own, tim)]
    pub_by_stamp = dict(zip(robot["stamps"], robot["publish_s"]))
    lat = [t["latency_s"] for t in tim]
    lat_net = [t["latency_s"] - pub_by_stamp.get(t["stamp_ns"], 0.0) for t in tim]
    return {
        "sets_sent": len(robot["stamps"]), "published": len(tim), "sets_dropped": dropped,
        # complete sets that waited longer than max_queue_wait for the running inference (not inferred)
        "sets_stale": stale,
        "results_dropped": results_dropped, "input_errors": errors,
        "input_errors_by_kind": robot.get("input_errors_by_kind", {}),
        # sent but never a complete set at the node: images lost on the way (best-effort QoS)
        "sets_incomplete": len(robot["stamps"]) - len(tim) - dropped - errors - stale,
        "input_rate_hz": round(robot["input_rate_hz"], 2),
        "published_rate_hz": round(robot["input_rate_hz"] * len(tim) / max(1, len(robot["stamps"])), 2),
        "per_frame_ms": per,
        "overhead_over_model": {"p50": round(float(np.median(ratio)), 4) if ratio else None,
                                "of_p50s": round(per["node_overhead_total"]["p50"] / per["model"]["p50"], 4)
                                if tim else None},
        "fixture_publish_ms": _stats(robot["publish_s"]),
        "fixture_process_cpu_ms_per_set": robot.get("process_cpu_ms_per_set"),
        "node_cpu_ms_per_set_by_thread": robot.get("node_cpu_ms_per_set_by_thread"),
        "node_page_faults_per_set": robot.get("node_page_faults_per_set"),
        # where the time from image stamp to published occupancy goes, per published set:
        # arrival_lag = stamp -> the set's last image in the node's callback (the fixture's own
        # publication + transport + executor), queue_wait = set complete -> worker starts (the
        # running inference, drop-old), then worker_assembly + model + publish_thread_wait + publish
        "arrival_lag_ms": _stats(t["arrival_lag_s"] for t in tim if t.get("arrival_lag_s") is not None),
        "queue_wait_ms": _stats(t["wait_s"] for t in tim),
        "publish_thread_wait_ms": _stats(t["publish_wait_s"] for t in tim),
        "latency_stamp_to_published_ms": _stats(lat),
        "latency_minus_fixture_publish_ms": _stats(lat_net),
        "latency_minus_model_ms": _stats(t["latency_s"] - t["model_s"] for t in tim),
        # per set: what the node adds (queue wait, transport, callbacks, assembly, publishing) on top of the model
        "latency_minus_fixture_publish_and_model_ms": _stats(
            t["latency_s"] - pub_by_stamp.get(t["stamp_ns"], 0.0) - t["model_s"] for t in tim),
        "latency_stamp_to_cloud_received_ms": _stats(
            (robot["cloud_wall_ns"][s] - s) / 1e9 for s in robot["stamps"] if s in robot["cloud_wall_ns"]),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="tiny_synth", help="model config of the fresh checkpoint (default tiny_synth)")
    ap.add_argument("--checkpoint", default="", help="use this checkpoint instead (its cameras must be --cameras)")
    ap.add_argument("--standin", action="store_true", help="StandInPredictor instead of a model (pure plumbing)")
    ap.add_argument("--cameras", nargs="+", default=NUSCENES)
    ap.add_argument("--height", type=int, default=900)
    ap.add_argument("--width", type=int, default=1600)
    ap.add_argument("--distinct", type=int, default=6, help="distinct synthetic frames, played in a loop")
    ap.add_argument("--overhead-frames", type=int, default=30)
    ap.add_argument("--latency-frames", type=int, default=120)
    ap.add_argument("--stress-frames", type=int, default=1000, help="0: no stress phase")
    ap.add_argument("--rate", type=float, default=12.0, help="camera rate of the latency and stress phases [Hz]")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the node")
    ap.add_argument("--sync-queue", type=int, default=10, help="node parameter sync.queue_size (default 10)")
    ap.add_argument("--max-queue-wait", type=float, default=0.0,
                    help="node parameter max_queue_wait [s] (default 0: a set waits for the running inference)")
    ap.add_argument("--row-step", type=int, default=0, help="node parameter resize.row_step (default 0: auto; 1: exact)")
    ap.add_argument("--executor", default="single", choices=("single", "multi"),
                    help="executor of the node and of the fixture process (default single, as the node's main())")
    ap.add_argument("--out", default=None, help="write the JSON here (atomically)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds_large_images.xml"))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    domain = int(os.environ.get("ROS_DOMAIN_ID", 180 + os.getpid() % 40))
    import rclpy
    from rclpy.parameter import Parameter

    from selfocc_ros import msg_build
    from selfocc_ros.occupancy_node import OccupancyNode, make_executor
    from selfocc_ros.testing import StandInPredictor

    msg_build.activate_in_process()
    predictor, ckpt = (StandInPredictor(), "") if args.standin else (None, args.checkpoint or make_checkpoint(
        args.config, args.cameras))

    mpc = mp.get_context("spawn")
    here, there = mpc.Pipe()
    robot = mpc.Process(target=robot_process, args=(there, args.cameras, args.height, args.width, args.distinct, domain,
                                                     args.executor),
                        daemon=True)
    robot.start()

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    params = [Parameter("camera_names", value=args.cameras), Parameter("device", value="cpu"),
              Parameter("checkpoint", value=ckpt), Parameter("tf_timeout", value=0.2),
              Parameter("camera_timeout", value=30.0), Parameter("sync.queue_size", value=args.sync_queue),
              Parameter("max_queue_wait", value=float(args.max_queue_wait)), Parameter("resize.row_step", value=args.row_step)]
    node = OccupancyNode(predictor=predictor, context=ctx, parameter_overrides=params)
    node.configure()
    node.timings = collections.deque(maxlen=100_000)
    stamp_of = {}
    node.on_result = lambda assembled, pred: stamp_of.setdefault(len(stamp_of), assembled.stamp_ns)
    node.activate()
    ex = make_executor(args.executor, ctx)
    ex.add_node(node)
    threading.Thread(target=ex.spin, daemon=True).start()
    if not here.poll(300):
        raise SystemExit("robot process did not come up")
    assert here.recv() == "ready"
    end = time.monotonic() + 30
    while time.monotonic() < end and not (node.pub_cloud.get_subscription_count()
                                          and all(p.get_subscription_count() for p in node.pub_depth.values())):
        time.sleep(0.05)

    def run_phase(n, period):
        t0 = len(node.timings)
        d0, r0, s0 = node.stats.sets_dropped, node.stats.results_dropped, node.stats.sets_stale
        e0, kinds0 = sum(node.stats.errors.values()), dict(node.stats.errors)
        cpu0, faults0 = thread_cpu(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        here.send(("play", n, period))
        res = here.recv()
        time.sleep(0.2)
        res["node_cpu_ms_per_set_by_thread"] = cpu_delta(cpu0, thread_cpu(), n)
        res["input_errors_by_kind"] = {k: v - kinds0.get(k, 0) for k, v in node.stats.errors.items() if v > kinds0.get(k, 0)}
        res["node_page_faults_per_set"] = round((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / max(1, n), 1)
        tim = list(node.timings)[t0:]
        for j, t in enumerate(tim):
            t["stamp_ns"] = stamp_of.get(t0 + j)
        return (tim, res, node.stats.sets_dropped - d0, node.stats.results_dropped - r0,
                sum(node.stats.errors.values()) - e0, node.stats.sets_stale - s0)

    # warm-up (first inferences allocate) and the model time for pacing
    tim = run_phase(3, 1.0)[0]
    model_s = float(np.median([t["model_s"] for t in tim])) if tim else 0.1
    result = {
        "setup": {"cameras": len(args.cameras), "height": args.height, "width": args.width, "encoding": "rgb8",
                  "model": "standin" if args.standin else (args.checkpoint or f"fresh {args.config} checkpoint"),
                  "network_input": list(getattr(node.predictor, "input_size", (args.height, args.width))),
                  "torch_threads": args.threads, "rate_hz": args.rate, "executor": args.executor, "sync_queue_size": args.sync_queue,
                  "max_queue_wait_s": args.max_queue_wait, "resize_row_step": args.row_step, "machine": machine(),
                  "backends": __import__("selfocc_ros.compat", fromlist=["backends"]).backends(),
                  "processes": "node alone in this process; fixture publisher + collector in another"},
        "sync_ms_per_set": round(sync_cost(len(args.cameras)) * 1e3, 4),
        "receive_deserialize_ms_per_set": round(receive_cost(len(args.cameras), args.height, args.width) * 1e3, 3),
        "nuscenes_occ_outputs_build_and_serialize": output_cost("nuscenes_occ"),
    }
    period = max(1.0 / args.rate, 2.0 * model_s + 0.1)
    print(f"[node_overhead] overhead phase: {args.overhead_frames} frames every {period:.2f} s", flush=True)
    result["overhead"] = phase_summary(*run_phase(args.overhead_frames, period))
    result["overhead"]["period_s"] = round(period, 3)
    if args.latency_frames:
        print(f"[node_overhead] latency phase: {args.latency_frames} frames at {args.rate} Hz", flush=True)
        result["latency"] = phase_summary(*run_phase(args.latency_frames, 1.0 / args.rate))
    if args.stress_frames:
        print(f"[node_overhead] stress phase: {args.stress_frames} frames at {args.rate} Hz", flush=True)
        rss, stop = [], threading.Event()

        queued = []  # what waits in the approximate-time synchroniser (unmatched images), per sample

        def queue_now():
            qs = getattr(getattr(node._sync, "sync", None), "queues", None) or []
            items = [m for q in qs for m in list(q.values())]
            nbytes = sum(int(m.image.nbytes) if getattr(m, "image", None) is not None else len(getattr(m, "data", b""))
                         for m in items)
            return len(items), round(nbytes / 2**20, 2)

        def sample():
            while not stop.wait(50.0 / args.rate):
                rss.append((node.stats.sets_synced, round(_rss_mb(), 1)))
                queued.append(queue_now())

        sampler = threading.Thread(target=sample, daemon=True)
        rss.append((node.stats.sets_synced, round(_rss_mb(), 1)))
        sampler.start()
        s = phase_summary(*run_phase(args.stress_frames, 1.0 / args.rate))
        stop.set()
        sampler.join()
        rss.append((node.stats.sets_synced, round(_rss_mb(), 1)))
        warm = [m for n, m in rss if n - rss[0][0] >= 100]  # after 100 sets
        s["rss_mb_samples_every_50_sets"] = [m for _, m in rss]
        s["sync_queued_images_and_mb_per_sample"] = queued
        s["rss_mb"] = {"start": rss[0][1], "after_100_sets": warm[0] if warm else None, "end": rss[-1][1],
                       "max_after_100_sets": max(warm) if warm else None,
                       "growth_after_100_sets": round(rss[-1][1] - warm[0], 1) if warm else None,
                       # least-squares slope over the samples after warm-up: a leak shows as a steady rise
                       "slope_mb_per_100_sets_after_100": round(float(np.polyfit(
                           [n for n, _ in rss if n - rss[0][0] >= 100], warm, 1)[0]) * 100, 2) if len(warm) > 2 else None}
        # a summary that fits the stress question, without the per-stage tables
        result["stress"] = {k: s[k] for k in ("sets_sent", "published", "sets_dropped", "sets_stale", "published_rate_hz",
                                              "results_dropped",
                                              "input_errors", "input_errors_by_kind", "sets_incomplete", "input_rate_hz", "latency_stamp_to_published_ms",
                                              "latency_minus_fixture_publish_ms", "latency_minus_model_ms",
                                              "latency_minus_fixture_publish_and_model_ms", "arrival_lag_ms", "queue_wait_ms",
                                              "fixture_publish_ms", "fixture_process_cpu_ms_per_set", "node_cpu_ms_per_set_by_thread",
                                              "node_page_faults_per_set",
                                              "rss_mb", "rss_mb_samples_every_50_sets",
                                              "sync_queued_images_and_mb_per_sample")}
        result["stress"]["model_ms"] = s["per_frame_ms"]["model"]
        result["stress"]["node_overhead_ms"] = s["per_frame_ms"]["node_overhead_total"]
    result["setup"]["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    here.send(("stop",))
    robot.join(10)
    ex.shutdown(timeout_sec=2.0)
    node.destroy_node()
    rclpy.shutdown(context=ctx)
    text = json.dumps(result, indent=2)
    if args.out:
        from selfocc_core.io_utils import atomic_write_text

        atomic_write_text(args.out, text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
