"""`selfocc demo`: the end-to-end job on the embedded synthetic world (or your data/checkpoint).

With no arguments:
  1. build a small synthetic drive (procedural street, 3 front cameras; frames cached on disk);
  2. train the `tiny_synth` config self-supervised on it on the CPU for a few minutes (images and
     poses only: no depth, no labels), or reuse the checkpoint an earlier run cached under
     ``<out>/cache/<config hash>/model.pt``;
  3. predict on held-out frames of a *different* drive (another seed) and score them against
     the exact ground truth (occupancy IoU, above-ground IoU per range bin and RayIoU on the
     tiny model's 51.2 m box and on the whole GT grid; depth up to 25.6 m, per GT range bin and
     the share of GT the box cannot reach; novel-view depth), next to the untrained network (a
     flat ground plane) and the flat-ground and perfect-ground references on the same voxels;
  4. write ``<out>/``: ``depth.png`` (camera images, predicted and GT depth), ``occupancy.png``
     (bird's-eye and perspective occupancy beside GT), ``sequence.mp4`` (or .gif) over the
     held-out frames and ``metrics.json``; print a summary.

    selfocc demo                                    # the default: ~10 min on 2 CPU cores
    selfocc demo --steps 100 --out /tmp/quick       # shorter training
    selfocc demo --ckpt runs/x/last.pt --data /data/nuscenes --out demo_nus
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

DEFAULT_CONFIG = "tiny_synth"
DEFAULT_STEPS = 300
TRAIN_FRAMES = 24
EVAL_FRAMES = 4
DEMO_SEED = 7  # the training drive; held-out frames come from the 'val' split (seed + 1000)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help="dataset (same syntax as `selfocc train --data`); default: a "
                   f"synthetic drive of {TRAIN_FRAMES} frames")
    p.add_argument("--ckpt", default=None, help="use this checkpoint instead of training one")
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--steps", type=int, default=None, help=f"training steps (default {DEFAULT_STEPS})")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"training config preset or YAML (default {DEFAULT_CONFIG})")
    p.add_argument("--eval-frames", type=int, default=EVAL_FRAMES, help=f"held-out frames to predict (default {EVAL_FRAMES})")
    p.add_argument("--device", default="auto", help="cpu | cuda | auto (default)")
    p.add_argument("--retrain", action="store_true", help="ignore a cached checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


# ------------------------------------------------------------------------------------- helpers
def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def _config_key(cfg, data: str) -> str:
    from selfocc_core.config_io import to_dict

    blob = json.dumps({"config": to_dict(cfg), "data": data, "version": 1}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def _train_config(name: str, steps: int):
    from selfocc_core.training.config import load_experiment_config

    cfg = load_experiment_config(name)
    # the demo evaluates itself after training; checkpoints every 100 steps let an interrupted run resume
    train = dataclasses.replace(cfg.train, steps=steps, eval_interval=0, image_log_interval=0, num_workers=0,
                                checkpoint_interval=max(1, min(steps, 100)), keep_checkpoints=1)
    optim = dataclasses.replace(cfg.optim, warmup_steps=min(cfg.optim.warmup_steps, max(steps // 10, 1)))
    return dataclasses.replace(cfg, train=train, optim=optim)


def train_or_reuse(cfg, data: str, out: Path, device: str, retrain: bool, progress: bool) -> tuple[Path, dict]:
    """Train `cfg` on `data` (self-supervised) unless ``out/cache/<key>/model.pt`` exists. -> (ckpt, info)."""
    from selfocc_core.data.open import open_dataset
    from selfocc_core.training import distributed as D
    from selfocc_core.training.checkpoint import save_checkpoint
    from selfocc_core.training.trainer import Trainer

    key = _config_key(cfg, data)
    cache = out / "cache" / key
    model_path = cache / "model.pt"
    if model_path.is_file() and not retrain:
        _say(f"reusing the checkpoint cached by an earlier run: {model_path}")
        return model_path, {"cached": True, "steps": cfg.train.steps, "cache_key": key}
    run_dir = cache / "run"
    if retrain and cache.exists():
        shutil.rmtree(cache)
    _say(f"training '{cfg.train.steps}' steps of the tiny SelfOcc on {data} (self-supervised: images + poses only)")
    env = D.setup_distributed(device)
    # ground truth is never used for training: not loading it saves most of the synthetic cost
    train_set = open_dataset(data, dataclasses.replace(cfg.data, load_gt=False), "train")
    t0 = time.time()
    _prerender(train_set, "rendering training frames", progress)
    t_data = time.time() - t0
    trainer = Trainer(cfg, train_set, run_dir, env, eval_set=None, resume=True, progress=progress)
    t1 = time.time()
    result = trainer.run(eval_at_start=False)
    trainer.close()
    t_train = time.time() - t1
    # the cache keeps weights + config only (no optimiser state) and the training log
    save_checkpoint(model_path, model=trainer.model, config=cfg, step=result.step,
                    extra={"demo_data": data, "last_loss": result.last_loss}, with_rng=False, rig=trainer.rig)
    if (run_dir / "log.jsonl").is_file():
        shutil.copyfile(run_dir / "log.jsonl", cache / "train_log.jsonl")
    shutil.rmtree(run_dir, ignore_errors=True)
    info = {"cached": False, "steps": result.step, "last_loss": result.last_loss, "skipped_steps": result.skipped_steps,
            "train_seconds": round(t_train, 1), "data_seconds": round(t_data, 1), "cache_key": key,
            "train_frames": len(train_set)}
    _say(f"trained {result.step} steps in {t_train:.0f} s (last loss {result.last_loss:.4f}); cached {model_path}")
    return model_path, info


def _prerender(dataset, desc: str, progress: bool) -> None:
    """Touch every sample once (synthetic frames render and land in the on-disk cache) with a bar."""
    from tqdm import tqdm

    for i in tqdm(range(len(dataset)), desc=desc, unit="frame", disable=not progress, leave=False):
        if hasattr(dataset, "rendered"):  # SyntheticDataset: images only, no GT needed for training
            dataset.rendered(dataset.indices[i])
        else:
            dataset[i]


def _synthetic_spec(frames: int, seed: int, cache: Path) -> str:
    return f"synthetic:seed={seed},frames={frames},cache_dir={cache.as_posix()}"


# ------------------------------------------------------------------------------------ pictures
def _display_grid(model_grid, gt_grid):
    """The part of the GT grid inside the model's box (GT resolution) and the GT index slices."""
    from selfocc_core.geometry.voxel_grid import VoxelGridSpec

    vs = gt_grid.voxel_size

    def rng(lo_m, hi_m, lo_g, hi_g):
        lo, hi = max(lo_m, lo_g), min(hi_m, hi_g)
        i0 = int(round((lo - lo_g) / vs))
        i1 = int(round((hi - lo_g) / vs))
        return round(lo_g + i0 * vs, 6), round(lo_g + i1 * vs, 6), slice(i0, i1)

    x0, x1, sx = rng(model_grid.x_min, model_grid.x_max, gt_grid.x_min, gt_grid.x_max)
    y0, y1, sy = rng(model_grid.y_min, model_grid.y_max, gt_grid.y_min, gt_grid.y_max)
    return VoxelGridSpec(x0, x1, y0, y1, gt_grid.z_min, gt_grid.z_max, vs), (sx, sy, slice(None))


def depth_figure(sample, pred, max_depth: float, order: list[int], title: str):
    import numpy as np

    from selfocc_core.viz import caption, colorize_depth, depth_legend, hstack, to_uint8_image, vstack
    from selfocc_core.viz.compare import resize_to_height

    names = [sample.frame.camera_names[i] for i in order]
    height = 150
    imgs = [resize_to_height(to_uint8_image(sample.frame.images[i]), height) for i in order]
    pd = [resize_to_height(colorize_depth(pred.depth[i], max_depth), height) for i in order]
    rows = [hstack(imgs, names), hstack(pd, ["predicted depth"] * len(names))]
    if sample.gt is not None and sample.gt.depth is not None:
        gd = [resize_to_height(colorize_depth(sample.gt.depth[i], max_depth), height, nearest=True) for i in order]
        rows.append(hstack(gd, ["ground-truth depth (black: none)"] * len(names)))
    body = vstack(rows)
    legend = depth_legend(min(body.shape[0] - 20, 360), max_depth)
    fig = np.concatenate([body, np.full((body.shape[0], legend.shape[1] + 8, 3), 255, np.uint8)], axis=1)
    fig[10:10 + legend.shape[0], body.shape[1]:body.shape[1] + legend.shape[1]] = legend
    return caption(fig, title)


def occupancy_figure(pred_labels, gt_labels, grid, color_by: str, title: str, with_legend: bool):
    import numpy as np

    from selfocc_core.classes import FREE_LABEL
    from selfocc_core.viz import caption, chase_camera, class_legend, hstack, render_bev, render_perspective, vstack

    cam = chase_camera(grid, 480, 300)
    scale = max(1, int(round(300 / grid.shape[0])))
    shown = [pred_labels] if gt_labels is None else [pred_labels, gt_labels]
    bev = _crop_rows([render_bev(x, grid, scale=scale, color_by=color_by) for x in shown], grid, scale)
    per = [render_perspective(x, grid, cam, color_by=color_by) for x in shown]
    row1 = hstack([bev[0], per[0]], ["predicted: bird's-eye (forward = up)", "predicted: from behind and above"],
                  height=300, nearest=True)
    rows = [row1]
    if gt_labels is not None:
        rows.append(hstack([bev[1], per[1]], ["ground truth: bird's-eye", "ground truth: from behind and above"],
                           height=300, nearest=True))
    if with_legend:
        ids = set(np.unique(pred_labels).tolist()) | (set() if gt_labels is None else set(np.unique(gt_labels).tolist()))
        ids = sorted(ids - {FREE_LABEL})
        rows.append(class_legend(ids, width=row1.shape[1]))
    else:
        rows.append(_height_legend(row1.shape[1], grid))
    return caption(vstack(rows), title)


def _crop_rows(images, grid, scale: int, margin: int = 6):
    """Crop bird's-eye images (same size) to the rows that show anything, keeping the ego marker."""
    import numpy as np

    from selfocc_core.viz.voxels import BACKGROUND

    used = np.zeros(images[0].shape[0], dtype=bool)
    for im in images:
        used |= (im != np.asarray(BACKGROUND, np.uint8)).any(axis=2).any(axis=1)
    ego_row = int(grid.x_max / grid.voxel_size * scale)
    used[max(0, ego_row - 4 * scale):ego_row + 4 * scale] = True
    rows = np.nonzero(used)[0]
    lo, hi = max(0, rows.min() - margin), min(len(used), rows.max() + margin + 1)
    return [im[lo:hi] for im in images]


def _height_legend(width: int, grid):
    import numpy as np
    from PIL import Image, ImageDraw

    from selfocc_core.viz.colormaps import apply_colormap
    from selfocc_core.viz.compare import TEXT, font

    n = grid.shape[2]
    canvas = Image.new("RGB", (width, 28), (255, 255, 255))
    d = ImageDraw.Draw(canvas)
    d.text((8, 6), "voxel height:", fill=TEXT, font=font(13))
    x = 110
    for k in range(0, n, max(1, n // 8)):
        c = tuple(int(v) for v in apply_colormap(np.array([k]), "turbo", 0, max(n - 1, 1))[0])
        z = grid.z_min + (k + 0.5) * grid.voxel_size
        d.rectangle([x, 7, x + 14, 21], fill=c, outline=TEXT)
        d.text((x + 18, 6), f"{z:+.1f} m", fill=TEXT, font=font(13))
        x += 78
    return np.asarray(canvas)


def video_frame(sample, pred, pred_labels, gt_labels, grid, color_by: str, max_depth: float, front: int, text: str):
    from selfocc_core.viz import caption, colorize_depth, hstack, render_bev, to_uint8_image

    img = to_uint8_image(sample.frame.images[front])
    dep = colorize_depth(pred.depth[front], max_depth)
    panels = [img, dep, render_bev(pred_labels, grid, scale=2, color_by=color_by)]
    titles = ["camera", "predicted depth", "predicted occupancy"]
    if gt_labels is not None:
        panels.append(render_bev(gt_labels, grid, scale=2, color_by=color_by))
        titles.append("ground-truth occupancy")
    row = hstack(panels, titles, height=200)
    return caption(row, text)


# ----------------------------------------------------------------------------------------- run
def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from selfocc_core.classes import FREE_LABEL
    from selfocc_core.config_io import ConfigError
    from selfocc_core.data.open import open_dataset
    from selfocc_core.evaluation.depth_metrics import DepthEvalConfig
    from selfocc_core.evaluation.evaluate import EvalConfig, evaluate
    from selfocc_core.inference.predictor import OccupancyPredictor
    from selfocc_core.io_utils import atomic_write_text
    from selfocc_core.model import SelfOccModel
    from selfocc_core.viz import save_png, write_video

    t_start = time.time()
    out = Path(args.out)
    progress = not args.no_progress
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cpu":
        torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
    if args.steps is not None and args.steps < 1:
        print("selfocc demo: --steps must be >= 1", file=sys.stderr)
        return 2
    if args.eval_frames < 1:
        print("selfocc demo: --eval-frames must be >= 1", file=sys.stderr)
        return 2
    frames_cache = out / "cache" / "frames"
    try:
        if args.ckpt:
            predictor = OccupancyPredictor.from_checkpoint(args.ckpt, device=device)
            cfg, ckpt, train_info = predictor.config, Path(args.ckpt), {"checkpoint": str(args.ckpt)}
            data = args.data or _synthetic_spec(max(args.eval_frames, 2), DEMO_SEED, frames_cache)
        else:
            cfg = _train_config(args.config, args.steps or DEFAULT_STEPS)
            data = args.data or _synthetic_spec(TRAIN_FRAMES, DEMO_SEED, frames_cache)
            ckpt, train_info = train_or_reuse(cfg, data, out, device, args.retrain, progress)
            predictor = OccupancyPredictor.from_checkpoint(ckpt, device=device, depth_stride=2)
        eval_data = data
        if data.startswith("synthetic"):  # held-out drive: the 'val' split shifts the seed
            eval_data = _synthetic_spec(args.eval_frames, DEMO_SEED, frames_cache) if not args.data else data
        data_cfg = dataclasses.replace(cfg.data, load_gt=True, require_context=False)
        eval_set = open_dataset(eval_data, data_cfg, "val")
    except (ConfigError, ValueError, FileNotFoundError, FileExistsError, ImportError) as e:
        print(f"selfocc demo: {e}", file=sys.stderr)
        return 2

    n_eval = min(args.eval_frames, len(eval_set))
    _say(f"predicting {n_eval} held-out frame(s) of {eval_data}")
    from tqdm import tqdm

    samples = [eval_set[i] for i in tqdm(range(n_eval), desc="loading held-out frames (with ground truth)",
                                         unit="frame", disable=not progress, leave=False)]
    # The tiny model sees a 51.2 m box: occupancy is scored on the GT voxels inside it and depth
    # up to the box's half-width (farther surfaces cannot be rendered from it).
    g = predictor.grid
    reach = min(80.0, g.x_max, -g.x_min, g.y_max, -g.y_min)
    eval_cfg = EvalConfig(crop_to_model=True, depth=DepthEvalConfig(max_depth=reach),
                          ground_height=cfg.model.ground_height)
    results = evaluate(predictor, samples, eval_cfg, progress=progress)
    # The baseline: the same network untrained (its SDF starts as a flat ground plane).
    torch.manual_seed(0)
    baseline = OccupancyPredictor(SelfOccModel(cfg.model), cfg, device=device, depth_stride=predictor.depth_stride)
    base_results = evaluate(baseline, samples, eval_cfg, progress=progress)

    # ---- pictures
    out.mkdir(parents=True, exist_ok=True)
    color_by = "class" if predictor.config.model.num_classes else "height"
    names = samples[0].frame.camera_names
    order = _camera_display_order(names)
    front = order[len(order) // 2]
    max_depth = 40.0
    frames_video = []
    figs = {}
    for j, s in enumerate(tqdm(samples, desc="drawing", unit="frame", disable=not progress, leave=False)):
        gt = s.gt
        if gt is None or gt.occ_semantics is None:
            grid = predictor.grid
            pred = predictor.predict(s.frame)
            pl, gl = pred.labels.numpy(), None
        else:
            grid, sl = _display_grid(predictor.grid, gt.grid)
            pred = predictor.predict(s.frame, grid=grid)
            mask = gt.occ_mask_camera.numpy()[sl] if gt.occ_mask_camera is not None else np.ones(grid.shape, bool)
            gl = np.where(mask, gt.occ_semantics.numpy()[sl], FREE_LABEL).astype(np.uint8)
            pl = np.where(mask, pred.labels.numpy(), FREE_LABEL).astype(np.uint8)
        if j == 0:
            figs["depth.png"] = depth_figure(s, pred, max_depth, order,
                                             f"{s.sample_id}: camera images, predicted depth, ground-truth depth")
            what = "camera-visible voxels" if gl is not None else "no occupancy ground truth in this data"
            figs["occupancy.png"] = occupancy_figure(
                pl, gl, grid, color_by, f"{s.sample_id}: occupancy within {grid.x_max:.0f} m ({what})",
                with_legend=color_by == "class")
        frames_video.append(video_frame(s, pred, pl, gl, grid, color_by, max_depth, front,
                                        f"{s.sample_id}  ({j + 1}/{len(samples)})"))
    for name, img in figs.items():
        save_png(img, out / name)
    video = write_video(frames_video, out / "sequence.mp4", fps=2.0)

    metrics = {
        "data": data, "eval_data": eval_data, "checkpoint": str(ckpt), "config": args.config if not args.ckpt else None,
        "training": train_info, "trained": results, "untrained_baseline": base_results,
        "files": {"depth": str(out / "depth.png"), "occupancy": str(out / "occupancy.png"), "video": str(video)},
        "wall_seconds": round(time.time() - t_start, 1), "device": device,
    }
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")

    print()
    print("=== selfocc demo ===")
    print(f"checkpoint: {ckpt}" + (" (cached)" if train_info.get("cached") else ""))
    for line in comparison_lines(results, base_results):
        print(line)
    print(f"wrote {out / 'depth.png'}, {out / 'occupancy.png'}, {video}, {out / 'metrics.json'}")
    print(f"total {time.time() - t_start:.0f} s")
    return 0


def comparison_lines(trained: dict, untrained: dict) -> list[str]:
    """The printed comparison: per occupancy section, one table with the trained network, the
    untrained one (its SDF starts as a flat ground plane) and the flat-ground and perfect-ground
    references on the same voxels and rays; then depth for both networks."""
    from selfocc_core.evaluation.evaluate import format_depth_ranges
    from selfocc_core.evaluation.occupancy_scores import REFERENCES, format_occupancy_section

    lines = [f"held-out samples: {trained.get('num_samples')}"]
    titles = {"model_box": "occupancy in the model's box (%)", "benchmark_grid": "occupancy on the whole GT grid (%)"}
    for name, sec in (trained.get("occupancy_scores") or {}).items():
        base = (untrained.get("occupancy_scores") or {}).get(name, {})
        merged = {"trained": sec["model"], **({"untrained": base["model"]} if "model" in base else {}),
                  **{k: sec[k] for k in REFERENCES if k in sec}}
        lines += format_occupancy_section(merged, f"{titles.get(name, name)}: {sec['region']}, mask {sec['mask']}")
    for label, r in (("trained", trained), ("untrained", untrained)):
        for key, what in (("depth", "depth"), ("novel_depth", "novel-view depth")):
            d = r.get(key)
            if d and d.get("abs_rel") is not None:
                lines.append(f"{label} {what}: AbsRel {d['abs_rel']:.3f}  RMSE {d['rmse']:.2f} m  d1 {d['a1']:.3f}  "
                             f"(GT below {r['depth_protocol']['max_depth']:g} m)")
            if key == "depth" and r.get("depth_ranges"):
                lines += ["  " + x for x in format_depth_ranges(r["depth_ranges"])]
    return lines


def _camera_display_order(names: list[str]) -> list[int]:
    """Left-to-right order for a row of pictures (FRONT_LEFT, FRONT, FRONT_RIGHT, ...)."""
    rank = {"CAM_FRONT_LEFT": 0, "CAM_FRONT": 1, "CAM_FRONT_RIGHT": 2, "CAM_BACK_RIGHT": 3, "CAM_BACK": 4,
            "CAM_BACK_LEFT": 5}
    return sorted(range(len(names)), key=lambda i: (rank.get(names[i], 10 + i)))
