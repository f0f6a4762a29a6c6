"""Rendering speed of the synthetic world (frames per second for a whole camera rig).

`bench_render()` returns a JSON-friendly dict; `selfocc bench` and `selfocc synth --bench`
print it. Wall-clock and process CPU time are both reported because the CPU may be shared.
"""

from __future__ import annotations

import os
import platform
import time

import torch

from selfocc_core.synth.sequence import SyntheticSequence


def _time(fn, repeats: int) -> tuple[float, float]:
    """Median wall and mean CPU seconds of `repeats` calls of fn (after one warm-up call)."""
    fn(0)
    walls, cpu0 = [], time.process_time()
    for r in range(repeats):
        t0 = time.perf_counter()
        fn(r + 1)
        walls.append(time.perf_counter() - t0)
    walls.sort()
    return walls[len(walls) // 2], (time.process_time() - cpu0) / repeats


def bench_render(
    rig: str = "nuscenes",
    sizes: tuple[tuple[int, int], ...] = ((96, 176), (192, 352)),
    repeats: int = 3,
    native: bool = True,
    with_gt: bool = True,
    seed: int = 0,
    threads: int | None = 1,
) -> dict:
    """Time rendering all cameras of `rig` at each (H, W) in `sizes` (and once at native size).

    Returns ``{"rig", "cameras", "threads", "machine", "render": [{"height", "width", "rays",
    "wall_s", "cpu_s", "fps", "mrays_per_s"}, ...], "gt": {"wall_s", "cpu_s"}}``; fps counts
    whole rig frames (all cameras) per wall-clock second. `threads`: torch CPU threads for
    rendering (1 is fastest on a shared CPU; None = torch's default).
    """
    if repeats <= 0:
        raise ValueError(f"bench_render: repeats must be positive, got {repeats}")
    for h, w in sizes:
        if h <= 0 or w <= 0:
            raise ValueError(f"bench_render: sizes must be positive, got {h}x{w}")
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        seq = SyntheticSequence(seed, repeats + 2, rig, threads=threads)
        n_cam = len(seq.rig.cameras)
        result = {"rig": rig, "cameras": n_cam, "threads": torch.get_num_threads(),
                  "machine": f"{platform.machine()} {platform.processor()} cpus={os.cpu_count()}".replace("  ", " "),
                  "render": []}
        runs = [(h, w, repeats) for h, w in sizes]
        if native:
            cam = seq.rig.cameras[0]
            runs.append((cam.height, cam.width, 1))
        for h, w, rep in runs:
            wall, cpu = _time(lambda i: seq.render(min(i, seq.num_frames - 1), h, w), rep)
            rays = n_cam * h * w
            result["render"].append({"height": h, "width": w, "rays": rays, "repeats": rep, "wall_s": round(wall, 4),
                                     "cpu_s": round(cpu, 4), "fps": round(1.0 / wall, 3),
                                     "mrays_per_s": round(rays / wall / 1e6, 3)})
        if with_gt:
            wall, cpu = _time(lambda i: seq.ground_truth(min(i, seq.num_frames - 1)), 1)
            result["gt"] = {"grid": list(seq.rig.grid.shape), "wall_s": round(wall, 4), "cpu_s": round(cpu, 4)}
        return result
    finally:
        torch.set_num_threads(old_threads)
