"""Evaluate a predictor on a dataset that carries ground truth.

For each sample (batch of one, in dataset order):
- occupancy: the prediction on the GT's grid vs ``gt.occ_semantics`` inside the camera mask
  (``gt.occ_mask_camera``, when present and `use_camera_mask`), optionally SelfOcc
  post-processed; geometry IoU / precision / recall always, per-class IoU and mIoU when the
  model has a semantic head (``occupancy``, the Occ3D protocol papers report);
- occupancy scores (``occupancy_scores``, see occupancy_scores.py): IoU, above-ground IoU per
  range bin and RayIoU of the model *and* of the flat-ground and perfect-ground references on
  the same voxels and rays, in two clearly separate sections: ``model_box`` (the GT voxels
  whose centres lie inside the model's own box; outside it the field is free by
  construction) and ``benchmark_grid`` (the whole GT grid, what papers score). RayIoU origins:
  the rig centre (mean camera position) of the sample's frame and of its adjacent context frames,
  expressed in the sample's ego frame;
- depth: the rendered per-camera depth vs ``gt.depth`` (LiDAR or rendered z-depth), and
  ``depth_ranges`` (depth_ranges.py): scores per GT range bin without the cap, the share of
  GT pixels beyond the cap and outside the model's box;
- novel depth: the scene lifted from the *previous* sample renders the current sample's
  cameras (``T_ego_prev_cam = inv(T_world_ego_prev) @ T_world_ego @ T_ego_cam``), scored
  against the current sample's GT depth. Consecutive samples count as adjacent when the ego
  moved at most `novel_max_distance` metres within `novel_max_time` seconds.

Results are a JSON-ready dict (NaN -> None).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Iterable, Optional

import numpy as np
import torch

from selfocc_core.classes import FREE_LABEL
from selfocc_core.evaluation.depth_metrics import (
    DepthEvalConfig, DepthMetrics, constant_median_depth, flat_ground_depth,
)
from selfocc_core.evaluation.depth_ranges import DepthRangeMetrics, box_exit_depth
from selfocc_core.evaluation.occupancy_metrics import (
    OccupancyMetrics, PostProcessConfig, ground_plane_occupancy, post_process,
)
from selfocc_core.evaluation.occupancy_scores import OccupancyScores, format_occupancy_section
from selfocc_core.evaluation.regions import box_description, crop_to_box
from selfocc_core.geometry.transforms import invert_transform


@dataclass(frozen=True)
class EvalConfig:
    """What `evaluate` scores and how."""

    max_samples: Optional[int] = None
    """Score at most this many samples (None = all)."""
    use_camera_mask: bool = True
    """Score occupancy only inside gt.occ_mask_camera (the Occ3D camera-only protocol)."""
    post_process: bool = False
    """Apply SelfOcc's clean-up (height cut, grid border) to predicted occupancy first."""
    post: PostProcessConfig = field(default_factory=PostProcessConfig)
    """Settings of the post-processing."""
    depth: DepthEvalConfig = field(default_factory=DepthEvalConfig)
    """Depth protocol (80 m cap, min depth, median scaling)."""
    crop_to_model: bool = False
    """Score occupancy only on GT voxels whose centres lie inside the model's own box (for a
    model whose box is smaller than the benchmark grid; off for benchmark numbers)."""
    ground_height: Optional[float] = None
    """When set, also score the ground-plane-only baseline (voxels at/below this height in the
    ego frame) on the same voxels, reported as ``ground_plane_baseline``."""
    novel_depth: bool = True
    """Also score depth rendered for the next sample's cameras from the previous scene."""
    novel_max_distance: float = 10.0
    """Metres the ego may move between samples for them to count as adjacent."""
    novel_max_time: float = 1.0
    """Seconds between samples for them to count as adjacent."""
    ray_iou: bool = True
    """Score RayIoU in ``occupancy_scores`` (a voxel traversal of ~14k rays per origin)."""


def _json_ready(x):
    if isinstance(x, dict):
        return {k: _json_ready(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_ready(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return None if math.isnan(float(x)) or math.isinf(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def _adjacent(prev: dict, T_world_ego: torch.Tensor, timestamp: float, cfg: EvalConfig) -> bool:
    moved = float((prev["T_world_ego"][:3, 3] - T_world_ego[:3, 3]).norm())
    return moved <= cfg.novel_max_distance and abs(timestamp - prev["timestamp"]) <= cfg.novel_max_time


def rig_origins(sample) -> torch.Tensor:
    """RayIoU origins ``[T, 3]``: the rig centre (mean camera position) of the sample's frame and
    of its adjacent context frames (offsets -1, +1), in the sample's ego frame (unbatched sample).
    Only the adjacent ones: the score must not change with a recipe's far anchor frames."""
    T_ego_world = invert_transform(sample.frame.T_world_ego.double().cpu())
    out = []
    for f in [sample.frame, *(sample.context[k] for k in sorted(sample.context) if abs(k) == 1)]:
        centre = f.T_ego_cam[..., :3, 3].double().cpu().reshape(-1, 3).mean(0)
        p = T_ego_world @ f.T_world_ego.double().cpu() @ torch.cat([centre, centre.new_ones(1)])
        out.append(p[:3])
    return torch.stack(out)


def _sections(gt_grid, model_box) -> dict:
    """{"model_box": (grid, slices), "benchmark_grid": (grid, slices)}; the box section is absent
    when no GT voxel centre lies inside the model's box, and when the box holds the whole grid
    (then it is a copy of the grid section, see `evaluate`)."""
    full = (gt_grid, (slice(None), slice(None), slice(None)))
    crop = crop_to_box(gt_grid, model_box)
    if crop is None or crop[0] == gt_grid:
        return {"benchmark_grid": full}
    return {"model_box": crop, "benchmark_grid": full}


def _inside_box(grid, box) -> torch.Tensor:
    """[X, Y, Z] bool: voxel centres of `grid` inside the box of `box`."""
    c = grid.centers()
    lo = torch.tensor(box.lower)
    hi = torch.tensor(box.upper)
    return ((c >= lo) & (c <= hi)).all(dim=-1)


def evaluate(predictor, samples: Iterable, cfg: EvalConfig = EvalConfig(), progress: bool = True,
             total: Optional[int] = None) -> dict:
    """Score `predictor` (an OccupancyPredictor) on `samples` (a Dataset or iterable of Samples with gt).

    Returns ``{"occupancy": {...}, "depth": {...}, "novel_depth": {...}, "num_samples", "mean_predict_ms"}``;
    a section is None when no sample had the ground truth it needs.
    """
    from tqdm import tqdm

    occ_m = OccupancyMetrics()
    base_m = OccupancyMetrics()
    semantic = bool(predictor.class_names) and len(predictor.class_names) > 1
    scores: dict[str, OccupancyScores] = {}
    section_grids: dict[str, object] = {}
    ground_height = cfg.ground_height if cfg.ground_height is not None else predictor.config.model.ground_height
    depth_m = DepthMetrics(cfg.depth)
    # The other scaling of the same depth (metric and median-scaled are both reported), and the
    # two depth baselines on the same pixels: a constant at each image's GT median, the flat ground.
    other_scaling = DepthEvalConfig(cfg.depth.min_depth, cfg.depth.max_depth, not cfg.depth.median_scaling)
    depth_other_m = DepthMetrics(other_scaling)
    const_m = DepthMetrics(dataclasses.replace(cfg.depth, median_scaling=False))
    flat_m = DepthMetrics(cfg.depth)
    range_m = DepthRangeMetrics(cfg.depth)
    novel_m = DepthMetrics(cfg.depth)
    n_occ = n_depth = n = 0
    ms = []
    prev = None
    if total is None and hasattr(samples, "__len__"):
        total = len(samples)
    if cfg.max_samples is not None:
        total = min(total or cfg.max_samples, cfg.max_samples)
    it = iter(samples[i] for i in range(total)) if hasattr(samples, "__getitem__") and total is not None else iter(samples)
    bar = tqdm(it, total=total, desc="evaluating", unit="sample", disable=not progress, leave=False)
    for sample in bar:
        if cfg.max_samples is not None and n >= cfg.max_samples:
            break
        gt = sample.gt
        if gt is None:
            raise ValueError(f"sample {sample.sample_id!r} has no ground truth: open the dataset with load_gt=True")
        frame = sample.frame
        grid = gt.grid if gt.occ_semantics is not None else None
        t0 = time.perf_counter()
        pred, field_ = predictor.predict(frame, grid=grid, with_depth=gt.depth is not None, return_field=True)
        ms.append(1e3 * (time.perf_counter() - t0))
        n += 1
        if gt.occ_semantics is not None:
            labels = pred.labels.numpy()
            if cfg.post_process:
                labels = post_process(labels, gt.grid, cfg.post)
            mask = gt.occ_mask_camera if (cfg.use_camera_mask and gt.occ_mask_camera is not None) else None
            if cfg.crop_to_model:
                inside = _inside_box(gt.grid, predictor.grid)
                mask = inside if mask is None else (torch.as_tensor(mask).bool() & inside)
            occ_m.update(labels, gt.occ_semantics, mask)
            if cfg.ground_height is not None:
                ground = ground_plane_occupancy(gt.grid, cfg.ground_height).numpy()
                base_m.update(np.where(ground, 0, FREE_LABEL).astype(np.uint8), gt.occ_semantics, mask)
            gt_lab = gt.occ_semantics.numpy()
            cam = gt.occ_mask_camera.numpy().astype(bool) if (cfg.use_camera_mask and gt.occ_mask_camera is not None) \
                else None
            origins = rig_origins(sample) if cfg.ray_iou else None
            for name, (sgrid, sl) in _sections(gt.grid, predictor.grid).items():
                if name not in scores:
                    scores[name] = OccupancyScores(semantic=semantic)
                    section_grids[name] = sgrid
                scores[name].update({"model": labels[sl]}, gt_lab[sl], sgrid, ground_height,
                                    mask=None if cam is None else cam[sl], origins=origins)
            n_occ += 1
        if gt.depth is not None:
            depth_m.update(pred.depth, gt.depth)
            depth_other_m.update(pred.depth, gt.depth)
            const_m.update(constant_median_depth(gt.depth, cfg.depth), gt.depth)
            flat = flat_ground_depth(frame.K, frame.T_ego_cam, frame.image_size, ground_height, predictor.grid)
            flat_m.update(flat, gt.depth)
            exit_z = box_exit_depth(frame.K.float(), frame.T_ego_cam.float(), frame.image_size, predictor.grid)
            range_m.update(pred.depth, gt.depth, exit_z)
            n_depth += 1
        T_world_ego = frame.T_world_ego.double().cpu()
        ts = float(frame.timestamp)
        if cfg.novel_depth and gt.depth is not None and prev is not None and _adjacent(prev, T_world_ego, ts, cfg):
            net_in = predictor.preprocess(frame)
            T_prev_ego = invert_transform(prev["T_world_ego"]) @ T_world_ego
            T_prev_cam = (T_prev_ego.float().unsqueeze(0) @ net_in.T_ego_cam[0].cpu()).unsqueeze(0)
            depth = predictor.render_depth(prev["field"], net_in.K, T_prev_cam, predictor.input_size,
                                           out_size=frame.image_size)
            novel_m.update(depth[0], gt.depth)
        prev = {"field": field_, "T_world_ego": T_world_ego, "timestamp": ts} if cfg.novel_depth else None
        if progress and n_occ:
            r = occ_m.compute()
            bar.set_postfix(IoU=f"{100 * r['iou']:.1f}")

    occ = None
    if n_occ:
        occ = occ_m.compute()
        occ["mask"] = "camera" if cfg.use_camera_mask else "none"
        occ["post_processed"] = cfg.post_process
        occ["cropped_to_model_box"] = cfg.crop_to_model
        occ["region"] = "model_box" if cfg.crop_to_model else "benchmark_grid"
        if not predictor.class_names or len(predictor.class_names) <= 1:  # no semantic head: geometry only
            occ.pop("miou")
            occ.pop("per_class_iou")
    baseline = None
    if n_occ and cfg.ground_height is not None:
        b = base_m.compute()
        baseline = {k: b[k] for k in ("iou", "precision", "recall")}
        baseline["ground_height"] = cfg.ground_height
    occ_scores = None
    if scores:
        occ_scores = {}
        for name, acc in scores.items():
            g = section_grids[name]
            what = "inside the model's box" if name == "model_box" else "the whole benchmark grid"
            occ_scores[name] = {
                "region": f"GT voxels {what}: {box_description(g)}",
                "mask": "camera" if cfg.use_camera_mask else "none",
                "ground_height": ground_height, **acc.compute()}
        if "model_box" not in occ_scores and crop_to_box(section_grids["benchmark_grid"], predictor.grid) is not None:
            occ_scores = {"model_box": {**copy.deepcopy(occ_scores["benchmark_grid"]), "region": (
                "the model's box holds the whole benchmark grid: " + box_description(section_grids["benchmark_grid"]))},
                **occ_scores}
    depth = depth_m.compute() if n_depth else None
    depth_other = depth_other_m.compute() if n_depth else None
    depth_baselines = None
    if n_depth:
        depth_baselines = {"constant_median": const_m.compute()}
        depth_baselines["flat_ground"] = {**flat_m.compute(), "ground_height": ground_height}
    novel = novel_m.compute() if novel_m.num_images else None
    return _json_ready({
        "num_samples": n,
        "occupancy": occ,
        "ground_plane_baseline": baseline,
        "occupancy_scores": occ_scores,
        "depth": depth,
        "depth_metric" if cfg.depth.median_scaling else "depth_median_scaled": depth_other,
        "depth_baselines": depth_baselines,
        "depth_ranges": range_m.compute() if n_depth else None,
        "novel_depth": novel,
        "depth_protocol": {"min_depth": cfg.depth.min_depth, "max_depth": cfg.depth.max_depth,
                           "median_scaling": cfg.depth.median_scaling},
        "mean_predict_ms": float(np.mean(ms)) if ms else float("nan"),
    })


def format_summary(results: dict) -> str:
    """A few human-readable lines of an `evaluate` result."""
    lines = [f"samples: {results.get('num_samples')}"]
    occ = results.get("occupancy")
    if occ:
        s = f"occupancy: IoU {100 * occ['iou']:.2f}  precision {100 * occ['precision']:.2f}  recall {100 * occ['recall']:.2f}"
        if occ.get("miou") is not None:
            s += f"  mIoU {100 * occ['miou']:.2f}"
        lines.append(s)
    base = results.get("ground_plane_baseline")
    if base:
        lines.append(f"ground-plane-only baseline (z <= {base['ground_height']:g} m): IoU {100 * base['iou']:.2f}  "
                     f"precision {100 * base['precision']:.2f}  recall {100 * base['recall']:.2f}")
    titles = {"model_box": "occupancy scores in the MODEL'S BOX (%)", "benchmark_grid": "occupancy scores on the "
              "whole BENCHMARK GRID (%)"}
    for name, sec in (results.get("occupancy_scores") or {}).items():
        lines += format_occupancy_section(sec, f"{titles.get(name, name)}: {sec['region']}, mask {sec['mask']}, "
                                               f"ground layer z <= {sec['ground_height']:g} m")
    scaling = "median-scaled" if (results.get("depth_protocol") or {}).get("median_scaling") else "metric"
    other = "metric" if scaling == "median-scaled" else "median-scaled"
    base = results.get("depth_baselines") or {}
    for key, name in (("depth", f"depth ({scaling})"), ("depth_median_scaled", f"depth ({other})"),
                      ("depth_metric", f"depth ({other})"),
                      ("constant_median", "  baseline: constant depth at the GT median"),
                      ("flat_ground", "  baseline: flat ground"), ("novel_depth", "novel depth")):
        d = base.get(key) if key in ("constant_median", "flat_ground") else results.get(key)
        if d and d.get("abs_rel") is not None:
            lines.append(f"{name}: AbsRel {d['abs_rel']:.3f}  SqRel {d['sq_rel']:.3f}  RMSE {d['rmse']:.2f} m  "
                         f"RMSElog {d['rmse_log']:.3f}  d1 {d['a1']:.3f}  d2 {d['a2']:.3f}  d3 {d['a3']:.3f}")
        if key == "depth" and results.get("depth_ranges"):
            lines += format_depth_ranges(results["depth_ranges"])
    return "\n".join(lines)


def format_depth_ranges(r: dict) -> list[str]:
    """Lines of a `DepthRangeMetrics.compute` result (JSON-ready)."""
    def f(x, fmt):
        return "-" if x is None else format(x, fmt)

    parts = [f"{b} AbsRel {f(v['abs_rel'], '.3f')} (n={v['num_pixels']})" for b, v in r["by_range"].items()]
    out = ["depth by GT range (uncapped): " + "  ".join(parts)]
    s = f"GT pixels beyond the {r['max_depth']:g} m cap: {f(r['share_beyond_cap'] and 100 * r['share_beyond_cap'], '.1f')} %"
    if r.get("share_outside_box") is not None:
        s += (f", outside the model's box: {100 * r['share_outside_box']:.1f} %, beyond reach (either): "
              f"{100 * r['share_beyond_reach']:.1f} %")
    out.append(s)
    return out
