"""Diagnostic, not a training recipe: optimise one street's field *directly* (the SDF and colour
voxels are the parameters, no network) with the trainer's self-supervised losses, and compare it
with the representation bound (the ground-truth SDF written into the same field).

If direct optimisation cannot approach the bound, the losses or the renderer are at fault, not
the network: measure a change here (fast) before a long training run.

    python training/direct_optimisation.py --config tiny_synth --data synthetic:seed=1000,frames=24 \\
        --steps 600 --out runs/direct/base.json [--set model.num_samples=96 ...]

The field lives in the ego frame of the street's middle frame (``--ref``); every step draws a
frame of the street, its anchor (the trainer's choice, zero-baseline pairs skipped) and renders
the anchor's rays through the one field (`Objective` with ``field_`` / ``T_world_field``).
Scores: the trainer's `evaluate` on the reference frame (occupancy on its camera mask inside
the box, sub-voxel IoU, ground-plane baseline on the same voxels, depth on its rays), for
the optimised field, the ground-truth SDF written into the field (representation bound), the
initial field (flat ground). Writes a JSON with all three and the settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Subset

from selfocc_core.classes import FREE_LABEL
from selfocc_core.config_io import ConfigError
from selfocc_core.data.sample import Frame, collate_samples
from selfocc_core.io_utils import atomic_write_text
from selfocc_core.model.config import ModelConfig
from selfocc_core.model.field import SceneField, prior_sdf, sample_volume
from selfocc_core.model.selfocc import SelfOccModel
from selfocc_core.rendering.neus import SingleVarianceNetwork
from selfocc_core.training.anchor import choose_anchor_offset, frames_by_offset, usable_anchor_offset
from selfocc_core.training.config import ExperimentConfig, load_experiment_config
from selfocc_core.training.data import open_data
from selfocc_core.training.trainer import Objective, evaluate


class DirectField(nn.Module):
    """A free voxel field: ``sdf [1, 1, X, Y, Z]`` (metres, initialised like the model's prior),
    colour logits ``[1, 3, X, Y, Z]`` and the NeuS variance; quacks like `SelfOccModel` for
    `Objective` and `evaluate` (``forward(frame)`` ignores the frame: one scene)."""

    render = SelfOccModel.render
    _importance_samples = SelfOccModel._importance_samples  # model.importance_samples > 0
    grid = SelfOccModel.grid
    inv_s = SelfOccModel.inv_s

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.sdf = nn.Parameter(prior_sdf(cfg, cfg.scene.centers()[..., 2])[None, None].clone())
        self.rgb = nn.Parameter(torch.zeros(1, 3, *cfg.scene.shape))
        self.variance = SingleVarianceNetwork(cfg.init_variance)
        self.cos_anneal_ratio = 1.0

    def forward(self, frame: Frame) -> SceneField:
        B = frame.images.shape[0] if frame.images.dim() == 5 else 1
        return SceneField(self.cfg.scene, self.sdf.expand(B, -1, -1, -1, -1), self.rgb.expand(B, -1, -1, -1, -1))


def gt_sdf_volume(gt, field_grid) -> Tensor:
    """Signed distance (m, > 0 free) of the GT occupancy (its own grid), read at the field's voxel
    centres ``[1, 1, X, Y, Z]``: the representation bound."""
    from scipy.ndimage import distance_transform_edt

    sem = gt.occ_semantics if gt.occ_semantics.dim() == 3 else gt.occ_semantics[0]
    occ = (sem != FREE_LABEL).numpy()
    s = gt.grid.voxel_size
    sdf = (distance_transform_edt(~occ) - distance_transform_edt(occ)) * s
    sdf = np.where(occ, sdf + 0.5 * s, sdf - 0.5 * s)  # surface at the voxel faces, not its centres
    vol = torch.from_numpy(sdf).float()[None, None]
    pts = field_grid.centers()[None]
    vals, _ = sample_volume(vol, gt.grid, pts)
    return vals[..., 0][:, None]


def oracle_depth_loss(field: DirectField, sample, T_world_field: Tensor, cfg: ExperimentConfig) -> Tensor:
    """The GT-depth oracle (training/depth_supervised_bound.py, 'proposals') on the rays of the
    sample's input frame, cast through the one field: separates renderer from photometry."""
    from selfocc_core.losses.regularizers import eikonal_loss, free_space_loss
    from selfocc_core.rendering.ray_sampler import generate_rays
    from selfocc_core.training.anchor import rig_in_input_frame
    from selfocc_core.training.trainer import gt_depth_at_rays

    fr = sample.frame
    rig = rig_in_input_frame(fr, T_world_field)
    rays = generate_rays(rig.K, rig.T_ego0_cam, fr.image_size, cfg.model.ray_stride, random_offset=True,
                         box=cfg.model.scene, min_near=cfg.model.min_near)
    render = field.render(field(fr), rays)
    gt = gt_depth_at_rays(sample.gt.depth.float(), rays.camera_index, rays.pixels)
    d = (gt / rays.z_per_unit).clamp(min=1e-3)
    inside = (gt > 0) & (d < rays.far - 0.2)
    beyond = (gt > 0) & ~inside
    err = ((render.t - d.unsqueeze(-1)).abs() / d.unsqueeze(-1)).clamp(max=1.0)
    per_ray = (render.weights * err).sum(-1) + (1.0 - render.accumulation).clamp(min=0.0)
    loss = per_ray[inside].mean() + 0.5 * render.accumulation[beyond].mean()
    g = render.gradients.reshape(-1, 3)
    idx = torch.randint(0, g.shape[0], (min(cfg.loss.eikonal_points, g.shape[0]),))
    loss = loss + cfg.loss.eikonal_weight * eikonal_loss(g[idx])
    if cfg.loss.free_space_weight > 0:
        loss = loss + cfg.loss.free_space_weight * free_space_loss(render.sdf, render.weights, cfg.loss.free_space_margin)
    return loss


def direct_optimisation(cfg: ExperimentConfig, data: str, steps: int, lr: float, ref: int | None = None,
                        eval_every: int = 0, seed: int = 0, log=print, loss: str = "self_supervised",
                        cos_anneal_steps: int = 0, variance_lr: float | None = None,
                        frames: tuple[int, int] | None = None) -> dict:
    torch.manual_seed(seed)
    train = open_data(data, dataclasses.replace(cfg.data, load_gt=False), "train")
    scored = open_data(data, dataclasses.replace(cfg.data, load_gt=True), "train")
    if frames is not None:  # a sub-range of a long drive: the one field holds only what they see
        lo, hi = frames
        if not 0 <= lo < hi <= len(train):
            raise ValueError(f"--frames {lo}:{hi} is not a range inside the {len(train)} frames of {data}")
        train, scored = Subset(train, range(lo, hi)), Subset(scored, range(lo, hi))
    ref = len(train) // 2 if ref is None else ref
    ref_set = Subset(scored, [ref])
    T_world_field = collate_samples([train[ref]]).frame.T_world_ego
    samples = [collate_samples([train[i]]) for i in range(len(train))]
    dev = torch.device("cpu")

    field = DirectField(cfg.model)
    variance_lr = cfg.optim.lr if variance_lr is None else variance_lr
    out = {"data": data, "ref": ref, "steps": steps, "lr": lr, "loss": loss, "cos_anneal_steps": cos_anneal_steps,
           "variance_lr": variance_lr}
    if loss == "gt_depth":
        gt_samples = [collate_samples([scored[i]]) for i in range(len(scored))]
    out["flat_ground"] = evaluate(field, ref_set, cfg, dev, 1)
    gt = scored[ref].gt
    if gt.occ_semantics is not None:  # a real drive with only depth (stereo, LiDAR) has no bound
        bound = DirectField(cfg.model)
        with torch.no_grad():
            bound.sdf.copy_(gt_sdf_volume(gt, cfg.model.scene))
            bound.variance.variance.fill_(0.3)  # sharp rendering for the bound's depth
        out["representation_bound"] = evaluate(bound, ref_set, cfg, dev, 1)

    objective = Objective(field, cfg)  # type: ignore[arg-type]
    opt = torch.optim.Adam([{"params": [field.sdf, field.rgb], "lr": lr},
                            {"params": field.variance.parameters(), "lr": variance_lr}])
    lc = cfg.loss
    t0, skipped, curve = time.time(), 0, []
    field.train()
    for step in range(1, steps + 1):
        if cos_anneal_steps > 0:  # NeuS cos-anneal as in the official code: ratio 0 -> 1
            field.cos_anneal_ratio = min(1.0, (step - 1) / cos_anneal_steps)
        i = int(torch.randint(len(samples), (1,)))
        s = samples[i]
        if loss == "gt_depth":
            total = oracle_depth_loss(field, gt_samples[i], T_world_field, cfg)
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            res = {"total": total}
        else:
            res = None
        offset = choose_anchor_offset(lc, set(frames_by_offset(s)))
        if res is None and lc.min_source_baseline > 0:
            offset = usable_anchor_offset(s, offset, lc.min_source_baseline, lc.source_offsets)
            if offset is None:
                skipped += 1
                continue
        if res is None:
            res = objective(s, offset, field_=field(s.frame), T_world_field=T_world_field)
            opt.zero_grad(set_to_none=True)
            res["total"].backward()
            opt.step()
        if eval_every and step % eval_every == 0 and step < steps:
            m = evaluate(field, ref_set, cfg, dev, 1)
            curve.append({"step": step, **{k: m[k] for k in CURVE_KEYS if k in m}})
            log(f"step {step}: loss {float(res['total'].detach()):.4f} {curve[-1]} inv_s {float(field.inv_s().detach()):.2f}")
    out["wall_seconds"] = round(time.time() - t0, 1)
    out["samples_skipped_no_baseline"] = skipped
    out["optimised"] = evaluate(field, ref_set, cfg, dev, 1)
    out["final_inv_s"] = float(field.inv_s().detach())
    out["curve"] = curve
    out["field"] = field
    return out


KEYS = ("occ/iou_subvoxel", "occ/precision_subvoxel", "occ/recall_subvoxel", "occ/ground_plane_iou", "depth/abs_rel",
        "depth/a1", "depth/abs_rel_0-10m", "depth/abs_rel_10-20m", "depth/abs_rel_20-40m", "depth/abs_rel_40-80m")
CURVE_KEYS = ("occ/iou_subvoxel", "depth/abs_rel", "depth/a1", "depth/abs_rel_20-40m")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="tiny_synth")
    p.add_argument("--data", default="synthetic:seed=1000,frames=24")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=0.02, help="Adam learning rate of the SDF and colour voxels")
    p.add_argument("--ref", type=int, default=None, help="reference (scored) frame index; default the middle")
    p.add_argument("--eval-every", type=int, default=0)
    p.add_argument("--loss", choices=("self_supervised", "gt_depth"), default="self_supervised",
                   help="the trainer's losses, or the GT-depth oracle (renderer alone)")
    p.add_argument("--cos-anneal-steps", type=int, default=0,
                   help="NeuS cos-anneal ratio from 0 to 1 over this many steps (official: 5000); 0 = 1 throughout")
    p.add_argument("--variance-lr", type=float, default=None,
                   help="Adam learning rate of the NeuS variance (default optim.lr; 0 = fixed sharpness)")
    p.add_argument("--frames", default=None, metavar="LO:HI",
                   help="use only frames LO..HI-1 of the data (a real drive: what one field can hold); "
                        "--ref counts inside that range")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default=None, help="JSON result file")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    try:
        cfg = load_experiment_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"direct_optimisation: {e}", file=sys.stderr)
        return 2
    frames = None
    if args.frames:
        try:
            lo, hi = (int(x) for x in args.frames.split(":"))
        except ValueError:
            print(f"direct_optimisation: --frames wants LO:HI (two integers), got {args.frames!r}", file=sys.stderr)
            return 2
        frames = (lo, hi)
    try:
        res = direct_optimisation(cfg, args.data, args.steps, args.lr, args.ref, args.eval_every,
                                  loss=args.loss, cos_anneal_steps=args.cos_anneal_steps,
                                  variance_lr=args.variance_lr, frames=frames)
    except ValueError as e:
        print(f"direct_optimisation: {e}", file=sys.stderr)
        return 2
    res["frames"] = args.frames
    res["overrides"] = args.overrides
    field = res.pop("field")
    for name in ("flat_ground", "representation_bound", "optimised"):
        if name not in res:
            continue
        print(f"{name:22s}", " ".join(f"{k.split('/')[1]}={res[name].get(k, float('nan')):.3f}" for k in KEYS))
    print(f"wall {res['wall_seconds']} s, final inv_s {res['final_inv_s']:.2f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.out), json.dumps(res, indent=2) + "\n")
        torch.save({"sdf": field.sdf.detach(), "rgb": field.rgb.detach(), "variance": field.variance.variance.detach()},
                   Path(args.out).with_suffix(".pt"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
