"""Diagnostic: the self-supervised training signal with a perfect oracle. How well can the
photometric error alone locate the surface along a ray, before any network or field is involved?

For every ray of one frame (the trainer's ray grid: `generate_rays` at ``--stride``) the depth
proposals at ``--samples`` points between box entry and exit are warped into the source frames
and scored exactly as the MVS-embedded loss scores them (`proposal_errors`: SSIM + L1 on the
ray-grid images, the minimum over sources). A renderer that put all its weight on the proposal
with the lowest error would render that proposal's depth; this script compares it with the
ground-truth depth of the ray, separately for rays that end on the ground and on objects.
If that winner is often far from the truth, no renderer, field or network trained with this
loss can be precise there: the images (their resolution, texture, baselines) are the limit.

    python training/photometric_bound.py --config tiny_synth \\
        --data synthetic:seed=1000,frames=24,cache=runs/cache --sources=-1,1 --stride 4 \\
        [--set data.image_height=256 --set data.image_width=448]

Rays count if their GT depth is below ``--max-depth`` and inside the box (the GT surface
lies at least 0.2 m before the ray's box exit). Ground rays: the GT surface point lies within
``--ground-tolerance`` of ``model.ground_height``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from selfocc_core.config_io import ConfigError
from selfocc_core.data.sample import collate_samples
from selfocc_core.io_utils import atomic_write_text
from selfocc_core.losses.reprojection import RigView, identity_errors, proposal_errors, sample_at_pixels
from selfocc_core.rendering.ray_sampler import generate_rays, ray_grid_shape, sample_along_rays
from selfocc_core.rendering.types import RayBundle
from selfocc_core.training.anchor import rig_in_input_frame
from selfocc_core.training.config import load_experiment_config
from selfocc_core.training.data import open_data
from selfocc_core.training.trainer import gt_depth_at_rays

_INVALID = 1.0e4


def photometric_winner(anchor: RigView, sources: Sequence[RigView], rays: RayBundle, grid: tuple[int, int, int],
                       num_samples: int, alpha: float = 0.85, source_cameras: str = "all") -> dict[str, Tensor]:
    """Per ray ``[B, R]``: the distance of the proposal with the lowest photometric error
    (``t_best``), that error (``error_best``) and the identity error of the unwarped sources
    (``error_identity``, Monodepth2 auto-masking drops rays where it is lower); ``t [B, R, S]``
    and ``errors [B, R, S]`` (minimum over sources; invalid projections get 1e4)."""
    t, _ = sample_along_rays(rays.near, rays.far, num_samples, stratified=False)
    points = rays.origins[..., None, :] + rays.directions[..., None, :] * t[..., None]
    target = sample_at_pixels(anchor.images, rays.camera_index, rays.pixels)
    per_source, ident = [], []
    for src in sources:
        err, valid = proposal_errors(target, points, rays.camera_index, src, grid, alpha, source_cameras)
        per_source.append(torch.where(valid, err, torch.full_like(err, _INVALID)))
        ident.append(identity_errors(target, rays.camera_index, rays.pixels, src, grid, alpha))
    errors = torch.stack(per_source, -1).min(-1).values
    best = errors.argmin(-1, keepdim=True)
    return {"t": t, "errors": errors, "t_best": t.gather(-1, best)[..., 0],
            "error_best": errors.gather(-1, best)[..., 0], "error_identity": torch.stack(ident, -1).min(-1).values}


def winner_scores(t_best: Tensor, distance_gt: Tensor, counted: Tensor) -> dict[str, float]:
    """Share of the counted rays whose winning proposal lies within 5 / 10 % of the GT distance,
    its median relative error, and the shares too short / too long by more than 10 %."""
    rel = ((t_best - distance_gt) / distance_gt)[counted]
    if rel.numel() == 0:
        return {"rays": 0}
    return {"rays": int(rel.numel()), "within_5pct": float((rel.abs() < 0.05).float().mean()),
            "within_10pct": float((rel.abs() < 0.10).float().mean()), "median_abs_rel": float(rel.abs().median()),
            "short_10pct": float((rel < -0.10).float().mean()), "long_10pct": float((rel > 0.10).float().mean())}


def photometric_bound(cfg, data: str, index: int | None, source_offsets: Sequence[int], stride: int, num_samples: int,
                      max_depth: float = 25.0, ground_tolerance: float = 0.15) -> dict:
    ds = open_data(data, dataclasses.replace(cfg.data, load_gt=True), "train")
    index = len(ds) // 2 if index is None else index
    if not 0 <= index < len(ds):
        raise ValueError(f"frame index {index} outside the dataset (0..{len(ds) - 1})")
    sample = collate_samples([ds[index]])
    if sample.gt is None or sample.gt.depth is None:
        raise ValueError(f"{data}: frame {index} has no ground-truth depth to compare with")
    fr = sample.frame
    anchor = rig_in_input_frame(fr, fr.T_world_ego)
    sources = []
    for k in source_offsets:
        if not 0 <= index + k < len(ds):
            raise ValueError(f"source offset {k} of frame {index} lies outside the dataset (0..{len(ds) - 1})")
        sources.append(rig_in_input_frame(collate_samples([ds[index + k]]).frame, fr.T_world_ego))
    rays = generate_rays(anchor.K, anchor.T_ego0_cam, fr.image_size, stride, random_offset=False,
                         box=cfg.model.scene, min_near=cfg.model.min_near)
    grid = (fr.num_cameras, *ray_grid_shape(fr.image_size, stride))
    with torch.no_grad():
        w = photometric_winner(anchor, sources, rays, grid, num_samples, cfg.loss.ssim_alpha, cfg.loss.source_cameras)
    gt = gt_depth_at_rays(sample.gt.depth.float(), rays.camera_index, rays.pixels)
    dist = gt / rays.z_per_unit
    counted = (gt > 0) & (gt < max_depth) & rays.valid & (dist < rays.far - 0.2)
    hit_z = rays.origins[..., 2] + rays.directions[..., 2] * dist
    ground = (hit_z - cfg.model.ground_height).abs() < ground_tolerance
    masked = w["error_identity"] <= w["error_best"]
    out = {"data": data, "index": index, "sources": list(source_offsets), "stride": stride, "samples": num_samples,
           "image_size": list(fr.image_size), "max_depth": max_depth}
    for name, m in (("ground", counted & ground), ("object", counted & ~ground), ("all", counted)):
        out[name] = {**winner_scores(w["t_best"], dist, m),
                     "automasked": float(masked[m].float().mean()) if bool(m.any()) else float("nan")}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="tiny_synth")
    p.add_argument("--data", default="synthetic:seed=1000,frames=24")
    p.add_argument("--index", type=int, default=None, help="frame scored (default: the middle one)")
    p.add_argument("--sources", default="-1,1", help="source frame offsets, comma-separated (write --sources=-1,1)")
    p.add_argument("--stride", type=int, default=None, help="ray grid stride in pixels (default model.ray_stride)")
    p.add_argument("--samples", type=int, default=256, help="depth proposals per ray")
    p.add_argument("--max-depth", type=float, default=25.0)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", default=None, help="write the result here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    try:
        cfg = load_experiment_config(args.config, args.overrides)
        offsets = [int(x) for x in args.sources.split(",") if x.strip()]
        res = photometric_bound(cfg, args.data, args.index, offsets, args.stride or cfg.model.ray_stride,
                                args.samples, args.max_depth)
    except (ConfigError, ValueError) as e:
        print(f"photometric_bound: {e}", file=sys.stderr)
        return 2
    print(f"image {res['image_size'][0]}x{res['image_size'][1]}, stride {res['stride']}, sources {res['sources']}, "
          f"{res['samples']} proposals")
    for name in ("ground", "object", "all"):
        r = res[name]
        if r.get("rays"):
            print(f"  {name:6s} rays {r['rays']:5d}  winner within 5 % {r['within_5pct']:.2f}, 10 % {r['within_10pct']:.2f}, "
                  f"median |rel| {r['median_abs_rel']:.3f}, short/long > 10 % {r['short_10pct']:.2f}/{r['long_10pct']:.2f}, "
                  f"automasked {r['automasked']:.2f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.json), json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
