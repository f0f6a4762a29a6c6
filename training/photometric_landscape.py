"""Diagnostic, not a training recipe: can the photometric (MVS-embedded) loss tell the right depth
from a wrong one on a recording, before any learning?

For each anchor frame, every ray of the trainer's ray grid gets depth proposals at the reference
depth (stereo or LiDAR, ``gt.depth``) times factors from 0.5 to 2 (log-spaced); each proposal is
warped into the source frames at the given offsets and scored with the loss's photometric error
(SSIM + L1 on the ray-grid images, `proposal_errors`), minimum over sources (Monodepth2). The
argmin factor per ray says what a perfect optimiser of the loss would render; reported per GT range
bin: the share of rays whose argmin lies within 10 % of the reference ("resolved"), the median
|log argmin|, the AbsRel if every ray rendered its own argmin (no smoothing by a field), and the share where the unwarped source beats the best proposal (auto-mask drops it).

    python training/photometric_landscape.py --config training/kitti_sequence.yaml \\
        --data ../shared/data/real/kitti_raw_0001 --frames 20 40 60 80 --sources -1 1 [--set ...]

No network, no training: a few seconds per frame. The reference depth never reaches a loss here
either; it only places the proposals whose photometric errors are compared.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

BINS = ((0.1, 10.0), (10.0, 20.0), (20.0, 40.0), (40.0, 80.0))


@torch.no_grad()
def landscape(cfg, data: str, frames: list[int], source_offsets: list[int], num_factors: int = 41,
              resolved_tol: float = 0.10) -> dict:
    from selfocc_core.data.sample import collate_samples
    from selfocc_core.losses.reprojection import identity_errors, proposal_errors, sample_at_pixels
    from selfocc_core.rendering.ray_sampler import generate_rays, ray_grid_shape
    from selfocc_core.training.anchor import frames_by_offset, rig_in_input_frame
    from selfocc_core.training.data import open_data
    from selfocc_core.training.trainer import gt_depth_at_rays

    offsets = sorted(set(source_offsets))
    if 0 in offsets or not offsets:
        raise ValueError(f"--sources: non-zero frame offsets wanted, got {source_offsets}")
    dcfg = dataclasses.replace(cfg.data, load_gt=True, context_offsets=offsets)
    ds = open_data(data, dcfg, "train")
    factors = torch.logspace(-1.0, 1.0, num_factors, base=2.0)
    lc, mc = cfg.loss, cfg.model
    per_bin = {f"{a:g}-{b:g}m": {"argmin": [], "automasked": []} for a, b in BINS}
    for i in frames:
        if not 0 <= i < len(ds):
            raise ValueError(f"frame {i} is outside the {len(ds)} frames of {data}")
        s = collate_samples([ds[i]])
        gt = s.gt
        fr = s.frame
        fbo = frames_by_offset(s)
        missing = [o for o in offsets if o not in fbo]
        if missing:
            continue  # near the ends of the drive
        rays = generate_rays(fr.K, fr.T_ego_cam, fr.image_size, mc.ray_stride, random_offset=False, box=mc.scene,
                             min_near=mc.min_near)
        h, w = ray_grid_shape(fr.image_size, mc.ray_stride)
        grid = (fr.num_cameras, h, w)
        target = sample_at_pixels(fr.images if fr.images.dim() == 5 else fr.images[None], rays.camera_index,
                                  rays.pixels)
        gtz = gt_depth_at_rays(gt.depth.float(), rays.camera_index, rays.pixels)  # [1, R]
        dist = gtz / rays.z_per_unit
        t = dist.unsqueeze(-1) * factors  # [1, R, F]
        pts = rays.origins.unsqueeze(2) + t.unsqueeze(-1) * rays.directions.unsqueeze(2)
        errs, idents = [], []
        for o in offsets:
            src = rig_in_input_frame(fbo[o], fr.T_world_ego)
            e, valid = proposal_errors(target, pts, rays.camera_index, src, grid, lc.ssim_alpha, lc.source_cameras)
            errs.append(torch.where(valid, e, torch.full_like(e, 1e3)))
            idents.append(identity_errors(target, rays.camera_index, rays.pixels, src, grid, lc.ssim_alpha))
        err = torch.stack(errs).min(0).values[0]  # [R, F]
        ident = torch.stack(idents).min(0).values[0]  # [R]
        best, arg = err.min(-1)
        ok = (gtz[0] > 0) & (best < 1e3)
        for a, b in BINS:
            m = ok & (gtz[0] >= a) & (gtz[0] < b)
            key = f"{a:g}-{b:g}m"
            per_bin[key]["argmin"].append(factors[arg[m]])
            per_bin[key]["automasked"].append((ident[m] < best[m]).float())
    out = {"data": data, "frames": frames, "sources": offsets, "image_size": list(ds[0].frame.image_size),
           "ray_stride": mc.ray_stride, "factors": [float(factors[0]), float(factors[-1]), num_factors],
           "by_range": {}}
    for key, v in per_bin.items():
        if not v["argmin"]:
            continue
        am = torch.cat(v["argmin"])
        if am.numel() == 0:
            continue
        out["by_range"][key] = {
            "rays": int(am.numel()),
            "resolved": float(((am - 1.0).abs() <= resolved_tol).float().mean()),
            "median_abs_log2": float(am.log2().abs().median()),
            "abs_rel_of_argmin": float((am - 1.0).abs().mean()),  # AbsRel if every ray rendered its argmin
            "too_near": float((am < 1.0 - resolved_tol).float().mean()),
            "too_far": float((am > 1.0 + resolved_tol).float().mean()),
            "automasked": float(torch.cat(v["automasked"]).mean()),
        }
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--frames", type=int, nargs="+", default=[20, 40, 60, 80])
    p.add_argument("--sources", type=int, nargs="+", default=[-1, 1], help="source frame offsets from the anchor")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from selfocc_core.config_io import ConfigError
    from selfocc_core.io_utils import atomic_write_text
    from selfocc_core.training.config import load_experiment_config

    try:
        cfg = load_experiment_config(args.config, args.overrides)
        res = landscape(cfg, args.data, args.frames, args.sources)
    except (ConfigError, ValueError) as e:
        print(f"photometric_landscape: {e}", file=sys.stderr)
        return 2
    res["overrides"] = args.overrides
    print(f"image {res['image_size']}, ray stride {res['ray_stride']}, sources {res['sources']}")
    for k, v in res["by_range"].items():
        print(f"  {k:8s} rays {v['rays']:6d}  resolved(+-10%) {v['resolved']:.3f}  too near {v['too_near']:.3f}  "
              f"too far {v['too_far']:.3f}  AbsRel(argmin) {v['abs_rel_of_argmin']:.3f}  auto-masked {v['automasked']:.3f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.json), json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
