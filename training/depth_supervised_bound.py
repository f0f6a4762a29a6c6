"""Diagnostic, not a training recipe: train a preset's model with *ground-truth depth* instead of
the self-supervised losses, to bound what any photometric loss could give that model.

If even GT depth cannot make the SDF occupancy beat a baseline, the limit is the model (size,
resolution, training length), not the self-supervision. Used for the synthetic-world
table in training/README.md:

    python training/depth_supervised_bound.py --config tiny_synth --data synthetic --steps 1000

Loss per ray of the input frame's cameras (`--loss`):
- `proposals` (default): the MVS-embedded reprojection loss with a perfect photometric oracle:
  every ray sample is a depth proposal, its error is its true relative distance error
  |t_i - d| / d (capped at 1), averaged with the rendering weights (the background proposal
  past the box counts 1). Like the photometric version it rewards weights that concentrate on
  the surface, so the NeuS sharpness grows as it does in self-supervised training.
- `expected`: relative L1 between the rendered (expected) depth and GT; surfaces stay fuzzy.
Where the GT surface lies beyond the box along the ray (sky, facades above the box top) both
modes push the rendered opacity to 0. Plus the preset's Eikonal term. Evaluation is the
trainer's (`evaluate`: held-out depth and occupancy vs the ground-plane baseline).
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import json
import sys
import time

import torch
from torch.utils.data import ConcatDataset

from selfocc_core.data.sample import GroundTruth, collate_samples
from selfocc_core.losses.regularizers import eikonal_loss
from selfocc_core.model.selfocc import SelfOccModel
from selfocc_core.rendering.ray_sampler import generate_rays
from selfocc_core.training.checkpoint import save_checkpoint
from selfocc_core.training.config import load_experiment_config
from selfocc_core.training.data import eval_spec_and_split, open_data
from selfocc_core.training.schedule import build_optimizer, build_scheduler
from selfocc_core.training.trainer import evaluate, gt_depth_at_rays


def depth_supervised_loss(model: SelfOccModel, sample, cfg, mode: str = "proposals") -> torch.Tensor:
    if sample.gt is None or sample.gt.depth is None:
        raise ValueError("depth_supervised_bound needs ground-truth depth (synthetic data, or LiDAR depth of a "
                         "dataset that has it); this sample has none")
    frame = sample.frame
    field_ = model(frame)
    rays = generate_rays(frame.K, frame.T_ego_cam, frame.image_size, cfg.model.ray_stride, random_offset=True,
                         box=cfg.model.scene, min_near=cfg.model.min_near)
    render = model.render(field_, rays)
    gt = gt_depth_at_rays(sample.gt.depth.float(), rays.camera_index, rays.pixels)
    inside = (gt > 0) & (gt / rays.z_per_unit < rays.far - 0.2)
    beyond = (gt > 0) & ~inside
    loss = render.depth.new_zeros(())
    if mode == "proposals":
        d = (gt / rays.z_per_unit).clamp(min=1e-3)  # GT distance along the ray
        err = ((render.t - d.unsqueeze(-1)).abs() / d.unsqueeze(-1)).clamp(max=1.0)  # [B, R, S]
        per_ray = (render.weights * err).sum(-1) + (1.0 - render.accumulation).clamp(min=0.0)
        if inside.any():
            loss = loss + per_ray[inside].mean()
    elif mode == "expected":
        if inside.any():
            loss = loss + ((render.depth - gt).abs() / gt.clamp(min=1.0))[inside].mean()
    else:
        raise ValueError(f"depth_supervised_loss: mode must be 'proposals' or 'expected', got {mode!r}")
    if beyond.any():
        loss = loss + 0.5 * render.accumulation[beyond].mean()
    if cfg.loss.eikonal_weight > 0 and render.gradients is not None:
        g = render.gradients.reshape(-1, 3)
        idx = torch.randint(0, g.shape[0], (min(cfg.loss.eikonal_points, g.shape[0]),))
        loss = loss + cfg.loss.eikonal_weight * eikonal_loss(g[idx])
    return loss


def with_gt_depth(dataset, idx: int):
    """Sample `idx`; from a synthetic dataset opened without GT, with its rendered GT depth attached
    (computing the occupancy and visibility GT of every training frame would dominate the run)."""
    sample = dataset[idx]
    if sample.gt is not None:
        return sample
    sub, j = dataset, idx
    while isinstance(sub, ConcatDataset):
        d = bisect.bisect_right(sub.cumulative_sizes, j)
        j, sub = j - (sub.cumulative_sizes[d - 1] if d else 0), sub.datasets[d]
    if not hasattr(sub, "rendered"):
        return sample
    depth = torch.from_numpy(sub.rendered(sub.indices[j])["depth"].copy())
    return dataclasses.replace(sample, gt=GroundTruth(depth=depth))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="tiny_synth")
    ap.add_argument("--data", default="synthetic", help="training data (needs GT depth), as for selfocc train")
    ap.add_argument("--eval-data", default="", help="held-out data; default: --data, split val; 'same': the training recording itself")
    ap.add_argument("--loss", choices=("proposals", "expected"), default="proposals",
                    help="per-proposal errors averaged with the weights (MVS analogue) or error of the expected depth")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--eval-interval", type=int, default=250)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-minutes", type=float, default=0.0,
                    help="stop training after this wall time (then the final evaluation), as train.max_wall_minutes")
    ap.add_argument("--save", default="", metavar="PT", help="write the trained model as a checkpoint (selfocc eval/demo read it)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_experiment_config(args.config, args.set)
    torch.manual_seed(cfg.train.seed)
    data_cfg = dataclasses.replace(cfg.data, load_gt=True)
    synthetic = str(args.data).startswith("synthetic")
    # synthetic training streets: GT depth straight from the renderer (no occupancy / visibility GT)
    train_set = open_data(args.data, dataclasses.replace(cfg.data, load_gt=not synthetic), "train")
    eval_spec, eval_split = eval_spec_and_split(args.eval_data, args.data)  # as the trainer's --eval-data
    eval_set = open_data(eval_spec, data_cfg, eval_split)
    model = SelfOccModel(cfg.model)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, args.steps)
    gen = torch.Generator().manual_seed(cfg.train.seed)
    device = torch.device("cpu")
    t_start = time.time()
    for step in range(args.steps + 1):
        if args.max_minutes > 0 and time.time() - t_start > 60.0 * args.max_minutes:
            args.steps = step  # out of time: evaluate and save this step as the last
        if (args.eval_interval > 0 and step % args.eval_interval == 0) or step == args.steps:
            metrics = evaluate(model, eval_set, cfg, device, cfg.train.eval_samples)
            print(json.dumps({"step": step, **{k: round(v, 4) for k, v in metrics.items()}}), flush=True)
        if step == args.steps:
            if args.save:
                save_checkpoint(args.save, model=model, config=cfg, step=step, with_rng=False)
            break
        sample = collate_samples([with_gt_depth(train_set, int(torch.randint(len(train_set), (1,), generator=gen)))])
        optimizer.zero_grad(set_to_none=True)
        try:
            loss = depth_supervised_loss(model, sample, cfg, args.loss)
        except ValueError as e:
            print(f"depth_supervised_bound: {e}", file=sys.stderr)
            return 2
        loss.backward()
        if cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        scheduler.step()
    return 0


if __name__ == "__main__":
    sys.exit(main())
