"""`selfocc bench`: speed and memory of the predictor, a training step and the synthetic renderer.

    selfocc bench --config tiny_synth --device cpu --json bench.json --iters 20
    selfocc bench --config nuscenes_occ --device cuda --json bench_gpu.json

Measured in one run on one frame of the config's rig (the synthetic nuScenes / KITTI rig with
the config's cameras at its network input size, random images: the cost does not depend on
the pixels) and a freshly initialised model of the config:
- predictor latency p50 / p95 / mean (ms) and throughput (frames/s), eager fp32 and the
  optimised path (CPU: traced + frozen TorchScript; CUDA: torch.compile, plus bf16), the
  speed-up ratio and how well the optimised answers agree with eager (the variants run
  interleaved, A B A B ..., so a shared machine's background load hits them alike);
- peak memory: torch.cuda.max_memory_allocated on GPU; on CPU the process's peak resident
  set size (Linux VmHWM, reset before each phase where the kernel allows), i.e. weights,
  activations and the Python process together;
- one training step (forward, NeuS render, losses, backward, AdamW) time and peak memory;
- the synthetic renderer's frames/s (selfocc_core.synth.benchmark.bench_render);
- kernel launches per prediction of every predictor variant (count_kernel_launches: aten ops
  that run a kernel as a CPU-side proxy, host syncs, and on CUDA the device kernels), so
  launch-boundness can be tracked on machines without a GPU. On CUDA the optimised variants
  are torch.compile fp32 / bf16 and torch.compile(mode="reduce-overhead") bf16 (CUDA graphs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="tiny_synth", help="experiment preset or YAML (default tiny_synth)")
    p.add_argument("--device", default="cpu", help="cpu | cuda (default cpu)")
    p.add_argument("--json", required=True, help="where to write the results (atomically)")
    p.add_argument("--iters", type=int, default=10, help="timed iterations per measurement (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations first (default 2)")
    p.add_argument("--train-iters", type=int, default=None, help="timed training steps (default: --iters, max 5)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-optimized", action="store_true", help="skip the optimised predictor")
    p.add_argument("--no-train", action="store_true", help="skip the training step")
    p.add_argument("--no-render", action="store_true", help="skip the synthetic renderer")


# ------------------------------------------------------------------------------------- memory
def _read_hwm_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _reset_hwm() -> bool:
    """Reset the peak-RSS counter (Linux >= 4.0, writing 5 to clear_refs). False if not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak memory over a `with` block: CUDA allocator peak, or process peak RSS on CPU."""

    def __init__(self, device):
        self.device = device
        self.mb: float | None = None
        self.kind = ""

    def __enter__(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.kind = "torch.cuda.max_memory_allocated"
        else:
            self.kind = "process peak RSS (VmHWM)" if _reset_hwm() else "process peak RSS since start (ru_maxrss)"
        return self

    def __exit__(self, *exc):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self.mb = _read_hwm_mb()
        return False


def _stats(ms: list[float]) -> dict:
    s = sorted(ms)

    def pct(q):
        i = min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))
        return s[i]

    mean = statistics.fmean(s)
    return {"p50_ms": round(pct(0.5), 2), "p95_ms": round(pct(0.95), 2), "mean_ms": round(mean, 2),
            "min_ms": round(s[0], 2), "fps": round(1000.0 / mean, 3), "iters": len(s)}


# --------------------------------------------------------------------------------------- inputs
def bench_frame(cfg, seed: int = 0):
    """A Frame of the config's rig (synthetic nuScenes or KITTI geometry) at the network input size."""
    import numpy as np
    import torch

    from selfocc_core.data.sample import Frame
    from selfocc_core.synth.rigs import get_rig

    names = list(cfg.data.cameras)
    rig_name = "kitti" if names and all(n.startswith("image_") for n in names) else "nuscenes"
    rig = get_rig(rig_name, names or None)
    h, w = cfg.data.image_height, cfg.data.image_width
    n = len(rig.cameras)
    g = torch.Generator().manual_seed(seed)
    return Frame(images=torch.rand(n, 3, h, w, generator=g),
                 K=torch.stack([c.K_at(h, w) for c in rig.cameras]),
                 T_ego_cam=torch.tensor(np.stack([c.T_ego_cam for c in rig.cameras]), dtype=torch.float32),
                 T_world_ego=torch.eye(4), timestamp=0.0, camera_names=rig.camera_names)


def _shifted(frame, dx: float, seed: int):
    import torch

    T = torch.eye(4)
    T[0, 3] = dx
    g = torch.Generator().manual_seed(seed)
    return dataclasses.replace(frame, images=torch.rand(frame.images.shape, generator=g), T_world_ego=T,
                               timestamp=float(frame.timestamp) + 0.1 * (1 if dx > 0 else -1))


# ------------------------------------------------------------------------------------ measures
def time_predictors(predictors: dict, frame, iters: int, warmup: int) -> dict:
    """Latency of each predictor, iterations interleaved (A, B, A, B, ...) so that on a shared
    machine every variant sees the same background load."""
    import torch

    for p in predictors.values():
        for _ in range(warmup):
            p.predict(frame)
    ms = {k: [] for k in predictors}
    stages = {k: {} for k in predictors}
    device = next(iter(predictors.values())).device
    with PeakMemory(device) as mem:
        for _ in range(iters):
            for name, p in predictors.items():
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
                pred = p.predict(frame)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                ms[name].append(1e3 * (time.perf_counter() - t0))
                for k, v in pred.timings.items():
                    stages[name].setdefault(k, []).append(v)
    out = {}
    for name in predictors:
        r = _stats(ms[name])
        r["stages_median_ms"] = {k: round(statistics.median(v), 2) for k, v in stages[name].items()}
        # one peak over the interleaved loop: the variants share the process
        r["peak_memory_mb"] = round(mem.mb, 1) if mem.mb is not None else None
        r["memory_kind"] = mem.kind + (" (all variants together)" if len(predictors) > 1 else "")
        out[name] = r
    return out


def time_train_step(cfg, device, iters: int, warmup: int) -> dict:
    import torch

    from selfocc_core.data.sample import Sample, collate_samples
    from selfocc_core.training import distributed as D
    from selfocc_core.training.trainer import Trainer

    frame = bench_frame(cfg)
    sample = Sample(frame=frame, context={o: _shifted(frame, 0.8 * o, 10 + o) for o in cfg.data.context_offsets},
                    sample_id="bench")
    train = dataclasses.replace(cfg.train, eval_interval=0, image_log_interval=0, num_workers=0)
    cfg = dataclasses.replace(cfg, train=train)
    env = D.DistEnv(rank=0, world_size=1, local_rank=0, device=device)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, [sample], tmp, env, progress=False)
        try:
            batch = collate_samples([sample])
            for _ in range(warmup):
                trainer.train_step(batch)
            ms = []
            with PeakMemory(device) as mem:
                for _ in range(iters):
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    t0 = time.perf_counter()
                    trainer.train_step(batch)
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    ms.append(1e3 * (time.perf_counter() - t0))
        finally:
            trainer.close()
    out = _stats(ms)
    out.pop("fps")
    out["samples_per_s"] = round(cfg.train.batch_size * 1000.0 / out["mean_ms"], 3)
    out["batch_size"] = cfg.train.batch_size
    out["bf16_autocast"] = bool(cfg.train.bf16 and device.type == "cuda")
    out["peak_memory_mb"] = round(mem.mb, 1) if mem.mb is not None else None
    out["memory_kind"] = mem.kind
    return out


# aten ops that only make views, allocate or forward to another op: no kernel of their own
_NO_KERNEL = frozenset((
    "view as_strided as_strided_ _reshape_alias empty empty_strided empty_like resize_ detach detach_ alias "
    "lift_fresh resolve_conj resolve_neg _unsafe_view promote_types result_type _nnpack_available t transpose "
    "expand unsqueeze squeeze permute select slice reshape flatten unflatten unbind split split_with_sizes "
    "narrow chunk view_as expand_as is_nonzero to _to_copy contiguous clone dropout _local_scalar_dense item"
).split())
_HOST_SYNCS = ("aten::_local_scalar_dense", "aten::nonzero")  # .item() / bool() end in the first


def count_kernel_launches(predictor, frame) -> dict:
    """Kernel launches of one ``predictor.predict(frame)``, from torch.profiler.

    cpu_proxy_ops: the aten operators called from Python / TorchScript (not those nested inside
    another aten op) that run at least one kernel (views, allocations and no-op conversions do
    not count): one per launched kernel of an eager GPU run, roughly, and countable on a CPU
    (kernels generated by torch.compile are not aten ops: the proxy is for eager and traced
    paths). host_syncs: reads of a tensor value by Python (.item(), bool(), nonzero), each a GPU
    stall. cuda_kernels (CUDA only): the kernels the profiler saw run on the device.
    """
    import torch
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if predictor.device.type == "cuda" else [])
    predictor.predict(frame)  # warm (first calls allocate / build)
    with profile(activities=acts) as prof:
        predictor.predict(frame)
        if predictor.device.type == "cuda":
            torch.cuda.synchronize(predictor.device)
    events = prof.events()
    runs: dict[int, bool] = {}

    def runs_kernel_below(e) -> bool:
        if id(e) not in runs:
            runs[id(e)] = any(c.name.startswith("aten::") and (c.name[6:] not in _NO_KERNEL or runs_kernel_below(c))
                              for c in e.cpu_children)
        return runs[id(e)]

    def top_level(e) -> bool:
        parent = e.cpu_parent
        while parent is not None:
            if parent.name.startswith("aten::"):
                return False
            parent = parent.cpu_parent
        return True

    ops = [e for e in events if e.name.startswith("aten::") and top_level(e)
           and (e.name[6:] not in _NO_KERNEL or runs_kernel_below(e))]
    out = {"cpu_proxy_ops": len(ops), "host_syncs": sum(e.name in _HOST_SYNCS for e in events)}
    if predictor.device.type == "cuda":
        from torch.autograd import DeviceType

        out["cuda_kernels"] = sum(1 for e in events if e.device_type == DeviceType.CUDA)
    return out


def _agreement(a, b) -> dict:
    occ = float((a.occupied == b.occupied).float().mean())
    d = (a.depth - b.depth).abs()
    return {"occupancy_agreement": round(occ, 5), "depth_max_abs_diff_m": round(float(d.max()), 4),
            "depth_median_abs_diff_m": round(float(d.median()), 5)}


def machine_info(device) -> dict:
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": str(device)}
    try:
        info["load_average_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def run_benchmarks(config: str, device: str, iters: int, warmup: int, train_iters: int | None = None,
                   optimized: bool = True, train: bool = True, render: bool = True, log=print) -> dict:
    """Everything `selfocc bench` measures, as a dict (see the module docstring)."""
    import torch

    from selfocc_core.inference.predictor import OccupancyPredictor
    from selfocc_core.model import SelfOccModel
    from selfocc_core.training.config import load_experiment_config

    dev = torch.device(device)
    cfg = load_experiment_config(config)
    frame = bench_frame(cfg)
    torch.manual_seed(0)
    model = SelfOccModel(cfg.model)
    results = {
        "config": config, "machine": machine_info(dev),
        "input": {"cameras": list(frame.camera_names), "height": frame.image_size[0], "width": frame.image_size[1],
                  "grid": list(cfg.model.scene.shape), "depth_stride": cfg.model.ray_stride},
        "params_millions": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
    }
    eager = OccupancyPredictor(model, cfg, device=dev)
    variants = {"eager_fp32": eager}
    extra = {}
    if optimized:
        modes = [("trace", torch.float32)] if dev.type == "cpu" else [
            ("compile", torch.float32), ("compile", torch.bfloat16), ("cudagraph", torch.bfloat16)]
        reference = eager.predict(frame)
        for mode, dtype in modes:
            name = f"optimized_{mode}_{'bf16' if dtype == torch.bfloat16 else 'fp32'}"
            log(f"building {name}")
            fast = OccupancyPredictor(model, cfg, device=dev, dtype=dtype, optimize=mode)
            t0 = time.perf_counter()
            first = fast.predict(frame)  # builds the optimised graph
            extra[name] = {"build_seconds": round(time.perf_counter() - t0, 2),
                           "agreement_with_eager": _agreement(reference, first)}
            variants[name] = fast
    log(f"predictor latency, {', '.join(variants)} interleaved ({iters} iters each)")
    pred = time_predictors(variants, frame, iters, warmup)
    for name, e in extra.items():
        pred[name].update(e)
        pred[name]["speedup_vs_eager_p50"] = round(pred["eager_fp32"]["p50_ms"] / pred[name]["p50_ms"], 3)
        pred[name]["speedup_vs_eager_min"] = round(pred["eager_fp32"]["min_ms"] / pred[name]["min_ms"], 3)
    log("kernel launches per prediction (torch.profiler)")
    for name, p in variants.items():
        pred[name]["launches_per_prediction"] = count_kernel_launches(p, frame)
    results["predictor"] = pred
    if train:
        n = train_iters or min(iters, 5)
        log(f"training step ({n} iters)")
        results["train_step"] = time_train_step(cfg, dev, n, 1)
    if render:
        try:
            from selfocc_core.synth.benchmark import bench_render
        except ImportError as e:
            results["synth_render"] = {"skipped": str(e)}
        else:
            log("synthetic renderer")
            names = list(cfg.data.cameras)
            rig = "kitti" if names and all(n.startswith("image_") for n in names) else "nuscenes"
            results["synth_render"] = bench_render(rig=rig, sizes=((cfg.data.image_height, cfg.data.image_width),),
                                                   repeats=2, native=False, with_gt=False)
    return results


def summary_table(results: dict) -> str:
    """Markdown rows of the main numbers."""
    p = results["predictor"]
    rows = ["| measure | p50 ms | p95 ms | min ms | frames/s | peak memory MB | launches (ops / syncs) |",
            "|---|---|---|---|---|---|---|"]
    for k, v in p.items():
        extra = (f" (x{v['speedup_vs_eager_p50']} p50, x{v['speedup_vs_eager_min']} min vs eager)"
                 if "speedup_vs_eager_p50" in v else "")
        n = v.get("launches_per_prediction", {})
        launches = f"{n.get('cuda_kernels', n.get('cpu_proxy_ops', ''))} / {n.get('host_syncs', '')}" if n else ""
        rows.append(f"| predictor {k}{extra} | {v['p50_ms']} | {v['p95_ms']} | {v['min_ms']} | {v['fps']} | "
                    f"{v['peak_memory_mb']} | {launches} |")
    t = results.get("train_step")
    if t:
        rows.append(f"| training step (batch {t['batch_size']}) | {t['p50_ms']} | {t['p95_ms']} | {t['min_ms']} | "
                    f"{t['samples_per_s']} samples/s | {t['peak_memory_mb']} |")
    r = results.get("synth_render")
    if r and "render" in r:
        for x in r["render"]:
            rows.append(f"| synthetic render {x['height']}x{x['width']}, all cameras | {round(1000 * x['wall_s'], 1)} | | "
                        f"{x['fps']} | |")
    return "\n".join(rows)


def run(args: argparse.Namespace) -> int:
    import torch

    from selfocc_core.config_io import ConfigError
    from selfocc_core.io_utils import atomic_write_text

    if args.iters < 1 or args.warmup < 0:
        print("selfocc bench: --iters must be >= 1 and --warmup >= 0", file=sys.stderr)
        return 2
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("selfocc bench: --device cuda requested but CUDA is not available", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        results = run_benchmarks(args.config, args.device, args.iters, args.warmup, args.train_iters,
                                 optimized=not args.no_optimized, train=not args.no_train,
                                 render=not args.no_render, log=lambda m: print(f"[bench] {m}", flush=True))
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"selfocc bench: {e}", file=sys.stderr)
        return 2
    atomic_write_text(args.json, json.dumps(results, indent=2) + "\n")
    print(summary_table(results))
    print(f"wrote {args.json}")
    return 0
