"""Diagnostic: the self-supervised training signal with a perfect oracle. How well can the
photometric error alone locate the surface along a ray, before any network or field is involved?

For every ray of a frame (the trainer's ray grid: `generate_rays` at ``--stride``) depth
proposals are warped into the frame's context frames at ``--sources`` (chosen by the dataset as
for training) and scored exactly as the MVS-embedded loss scores them (`proposal_errors`: SSIM +
L1 on the ray-grid images, the minimum over sources). A renderer that put all its weight on the
proposal with the lowest error would render that proposal's depth: the *winner*. It is compared
with the reference depth of the ray (GT, LiDAR or stereo), which places nothing else.

Proposals (``--proposals``):
* ``ray`` (default): ``--samples`` points uniform between box entry and exit, as the trainer's
  renderer samples them, so a wrong match anywhere along the ray can win;
* ``around_gt``: the reference distance times 41 factors from 0.5 to 2 (log-spaced): only the
  neighbourhood of the truth competes (the local landscape of the loss).

Reported per group (ground / object rays: the reference surface point within
``--ground-tolerance`` of ``model.ground_height`` or not; all rays) and per reference range bin:
the share of rays whose winner lies within 5 / 10 % of the reference ("resolved" = 10 %), too
near / too far by more than 10 %, the median relative error, the AbsRel if every ray rendered its
winner, and the share where the unwarped source beats the winner (auto-masking drops those).
If the winner is often far from the truth, no renderer, field or network trained with this loss
can be precise there: the images (resolution, texture, baselines) are the limit.

    python training/photometric_bound.py --config tiny_synth --data synthetic:seed=1000,frames=24 \\
        --stride 4 [--sources -2 -1 1 2] [--set data.image_height=256 --set data.image_width=448]
    python training/photometric_bound.py --config training/kitti_sequence.yaml \\
        --data ../shared/data/real/kitti_raw_0001 --frames 20 40 60 80 --proposals around_gt

Rays count if their reference depth is valid, below ``--max-depth`` and inside the box (at least
0.2 m before the ray's box exit; with ``around_gt`` the box does not limit the proposals).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import Tensor

from selfocc_core.losses.reprojection import RigView, identity_errors, proposal_errors, sample_at_pixels
from selfocc_core.rendering.ray_sampler import sample_along_rays
from selfocc_core.rendering.types import RayBundle

_INVALID = 1.0e4
RANGE_BINS = ((0.1, 10.0), (10.0, 20.0), (20.0, 40.0), (40.0, 80.0))
GT_FACTORS = torch.logspace(-1.0, 1.0, 41, base=2.0)


def photometric_winner(anchor: RigView, sources: Sequence[RigView], rays: RayBundle, grid: tuple[int, int, int],
                       t: Tensor, alpha: float = 0.85, source_cameras: str = "all") -> dict[str, Tensor]:
    """Proposals at distances ``t [B, R, S]`` along the rays, scored against the sources.

    Returns per ray ``[B, R]``: the winning distance ``t_best``, its error ``error_best`` and
    the identity error of the unwarped sources ``error_identity``; and ``errors [B, R, S]``
    (minimum over sources; a proposal that projects into no source gets 1e4)."""
    points = rays.origins[..., None, :] + rays.directions[..., None, :] * t[..., None]
    target = sample_at_pixels(anchor.images, rays.camera_index, rays.pixels)
    per_source, ident = [], []
    for src in sources:
        err, valid = proposal_errors(target, points, rays.camera_index, src, grid, alpha, source_cameras)
        per_source.append(torch.where(valid, err, torch.full_like(err, _INVALID)))
        ident.append(identity_errors(target, rays.camera_index, rays.pixels, src, grid, alpha))
    errors = torch.stack(per_source, -1).min(-1).values
    best = errors.argmin(-1, keepdim=True)
    return {"errors": errors, "t_best": t.gather(-1, best)[..., 0], "error_best": errors.gather(-1, best)[..., 0],
            "error_identity": torch.stack(ident, -1).min(-1).values}


def winner_scores(t_best: Tensor, distance_gt: Tensor, counted: Tensor,
                  automasked: Optional[Tensor] = None) -> dict[str, float]:
    """Scores of the winners of the ``counted`` rays against the reference distances."""
    rel = ((t_best - distance_gt) / distance_gt)[counted]
    if rel.numel() == 0:
        return {"rays": 0}
    out = {"rays": int(rel.numel()), "within_5pct": float((rel.abs() < 0.05).float().mean()),
           "resolved": float((rel.abs() <= 0.10).float().mean()), "median_abs_rel": float(rel.abs().median()),
           "abs_rel_of_winner": float(rel.abs().mean()),
           "too_near": float((rel < -0.10).float().mean()), "too_far": float((rel > 0.10).float().mean())}
    if automasked is not None:
        out["automasked"] = float(automasked[counted].float().mean())
    return out


def photometric_bound(cfg, data: str, frames: Optional[Sequence[int]], source_offsets: Sequence[int],
                      stride: Optional[int] = None, proposals: str = "ray", num_samples: int = 256,
                      max_depth: float = 80.0, ground_tolerance: float = 0.15) -> dict:
    """Winners of ``frames`` of ``data`` (default: the middle frame) against their reference depth."""
    from selfocc_core.data.sample import collate_samples
    from selfocc_core.rendering.ray_sampler import generate_rays, ray_grid_shape
    from selfocc_core.training.anchor import frames_by_offset, rig_in_input_frame
    from selfocc_core.training.data import open_data
    from selfocc_core.training.trainer import gt_depth_at_rays

    offsets = sorted(set(source_offsets))
    if 0 in offsets or not offsets:
        raise ValueError(f"--sources: non-zero frame offsets wanted, got {list(source_offsets)}")
    if proposals not in ("ray", "around_gt"):
        raise ValueError(f"--proposals must be 'ray' or 'around_gt', got {proposals!r}")
    ds = open_data(data, dataclasses.replace(cfg.data, load_gt=True, context_offsets=offsets), "train")
    frames = [len(ds) // 2] if not frames else list(frames)
    mc, lc = cfg.model, cfg.loss
    stride = stride or mc.ray_stride
    rows: dict[str, list[Tensor]] = {}  # per-ray values of every frame, concatenated below
    used = []
    for i in frames:
        if not 0 <= i < len(ds):
            raise ValueError(f"frame {i} is outside the {len(ds)} frames of {data}")
        s = collate_samples([ds[i]])
        if s.gt is None or s.gt.depth is None:
            raise ValueError(f"{data}: frame {i} has no reference depth to compare with")
        context = frames_by_offset(s)
        if any(o not in context for o in offsets):
            continue  # near the ends of the drive
        fr = s.frame
        anchor = rig_in_input_frame(fr, fr.T_world_ego)
        sources = [rig_in_input_frame(context[o], fr.T_world_ego) for o in offsets]
        rays = generate_rays(anchor.K, anchor.T_ego0_cam, fr.image_size, stride, random_offset=False,
                             box=mc.scene, min_near=mc.min_near)
        grid = (fr.num_cameras, *ray_grid_shape(fr.image_size, stride))
        gt = gt_depth_at_rays(s.gt.depth.float(), rays.camera_index, rays.pixels)
        dist = (gt / rays.z_per_unit).clamp(min=1e-3)
        if proposals == "ray":
            t, _ = sample_along_rays(rays.near, rays.far, num_samples, stratified=False)
            counted = rays.valid & (dist < rays.far - 0.2)
        else:
            t = dist.unsqueeze(-1) * GT_FACTORS.to(dist)
            counted = torch.ones_like(rays.valid)
        with torch.no_grad():
            w = photometric_winner(anchor, sources, rays, grid, t, lc.ssim_alpha, lc.source_cameras)
        counted = counted & (gt > 0) & (gt < max_depth) & (w["error_best"] < _INVALID)
        hit_z = rays.origins[..., 2] + rays.directions[..., 2] * dist
        for k, v in (("t_best", w["t_best"]), ("dist", dist), ("counted", counted),
                     ("ground", (hit_z - mc.ground_height).abs() < ground_tolerance),
                     ("masked", w["error_identity"] <= w["error_best"]), ("gt", gt)):
            rows.setdefault(k, []).append(v.reshape(-1))
        used.append(i)
    if not used:
        raise ValueError(f"none of the frames {frames} has context frames at every offset {offsets}")
    r = {k: torch.cat(v) for k, v in rows.items()}
    out = {"data": data, "frames": used, "sources": offsets, "stride": stride, "proposals": proposals,
           "samples": num_samples if proposals == "ray" else len(GT_FACTORS),
           "image_size": list(fr.image_size),
           "max_depth": max_depth}
    for name, m in (("ground", r["counted"] & r["ground"]), ("object", r["counted"] & ~r["ground"]),
                    ("all", r["counted"])):
        out[name] = winner_scores(r["t_best"], r["dist"], m, r["masked"])
    out["by_range"] = {}
    for a, b in RANGE_BINS:
        m = r["counted"] & (r["gt"] >= a) & (r["gt"] < b)
        if bool(m.any()):
            out["by_range"][f"{a:g}-{b:g}m"] = winner_scores(r["t_best"], r["dist"], m, r["masked"])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="tiny_synth")
    p.add_argument("--data", default="synthetic:seed=1000,frames=24")
    p.add_argument("--frames", type=int, nargs="+", default=None, help="frames scored (default: the middle one)")
    p.add_argument("--sources", type=int, nargs="+", default=[-1, 1], help="source frame offsets from the frame")
    p.add_argument("--stride", type=int, default=None, help="ray grid stride in pixels (default model.ray_stride)")
    p.add_argument("--proposals", choices=("ray", "around_gt"), default="ray")
    p.add_argument("--samples", type=int, default=256, help="proposals per ray with --proposals ray")
    p.add_argument("--max-depth", type=float, default=80.0)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", default=None, help="write the result here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from selfocc_core.config_io import ConfigError
    from selfocc_core.io_utils import atomic_write_text
    from selfocc_core.training.config import load_experiment_config

    try:
        cfg = load_experiment_config(args.config, args.overrides)
        res = photometric_bound(cfg, args.data, args.frames, args.sources, args.stride, args.proposals,
                                args.samples, args.max_depth)
    except (ConfigError, ValueError) as e:
        print(f"photometric_bound: {e}", file=sys.stderr)
        return 2
    res["overrides"] = args.overrides
    print(f"image {res['image_size']}, stride {res['stride']}, sources {res['sources']}, "
          f"{res['samples']} proposals ({res['proposals']}), frames {res['frames']}")
    groups = [(k, res[k]) for k in ("ground", "object", "all")] + list(res["by_range"].items())
    for name, r in groups:
        if r.get("rays"):
            print(f"  {name:8s} rays {r['rays']:6d}  resolved(+-10%) {r['resolved']:.2f} (5 %: {r['within_5pct']:.2f})  "
                  f"too near {r['too_near']:.2f}  too far {r['too_far']:.2f}  median |rel| {r['median_abs_rel']:.3f}  "
                  f"AbsRel(winner) {r['abs_rel_of_winner']:.3f}  auto-masked {r['automasked']:.2f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.json), json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
