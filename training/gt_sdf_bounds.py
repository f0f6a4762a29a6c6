"""Diagnostics, not training recipes: two bounds from the ground-truth SDF, scored exactly as the
trainer scores a model (`trainer.evaluate`: the same held-out samples, voxels and rules as the
self-supervised runs and training/depth_supervised_bound.py).

    # representation bound: the GT SDF written straight into the model's field (no network)
    python training/gt_sdf_bounds.py representation --config tiny_synth --data synthetic
    # 3D-supervised bound: the same network trained on the GT SDF (L1 at the field nodes)
    python training/gt_sdf_bounds.py supervised --config tiny_synth --data synthetic --steps 1000

GT SDF (`signed_distance`): the Euclidean distance transform of the GT occupancy (label != free)
on the GT grid (exact up to 16 voxels, truncated beyond), signed and shifted so that the surface lies on the faces between occupied
and free voxels: a free voxel centre next to an occupied voxel reads +voxel/2, an occupied one
next to free space -voxel/2. `sdf_on_field` reads it (trilinearly, border values outside the GT
grid) at the model's field nodes, i.e. what a field of this resolution can hold at best.

- `representation`: a `GroundTruthField` model returns that field for each held-out frame; its
  rendered depth uses the NeuS sharpness `--sharpness` (default 64 /m: the surface is a step
  at this field resolution) and the preset's samples per ray unless `--set model.num_samples=N`.
  If even this scores low, the field's resolution (not the network) is the limit.
- `supervised`: the preset's network (images in, as in self-supervised training) is trained
  with L1 between its SDF and the GT SDF at every field node (`sdf_supervised_loss`), nothing
  else. Between the representation bound and this: what the network can learn with perfect 3D
  labels in this budget. Synthetic training streets need no masks here: their GT occupancy is
  computed directly from the world (`occupancy_semantics`), other datasets are opened with GT.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time

import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset

from selfocc_core.classes import FREE_LABEL
from selfocc_core.data.sample import collate_samples
from selfocc_core.geometry.voxel_grid import VoxelGridSpec
from selfocc_core.model.field import SceneField, sample_volume
from selfocc_core.model.selfocc import SelfOccModel
from selfocc_core.training.checkpoint import save_checkpoint
from selfocc_core.training.config import load_experiment_config
from selfocc_core.training.data import eval_spec_and_split, open_data
from selfocc_core.training.schedule import build_optimizer, build_scheduler
from selfocc_core.training.trainer import evaluate

def _squared_distance_along(f: Tensor, dim: int, window: int) -> Tensor:
    """One pass of the separable squared EDT: ``g[i] = min_{|i - j| <= window} f[j] + (i - j)^2``
    along `dim` (Saito & Toriwaki's decomposition, with a bounded search window)."""
    n = f.shape[dim]
    g = f.clone()
    for k in range(1, min(window, n - 1) + 1):
        lo, hi = f.narrow(dim, 0, n - k), f.narrow(dim, k, n - k)  # f[j] for j = i - k / i + k
        g.narrow(dim, k, n - k).copy_(torch.minimum(g.narrow(dim, k, n - k), lo + k * k))
        g.narrow(dim, 0, n - k).copy_(torch.minimum(g.narrow(dim, 0, n - k), hi + k * k))
    return g


def distance_to(target: Tensor, window: int = 16) -> Tensor:
    """Euclidean distance (voxels) from every voxel centre of ``[X, Y, Z]`` to the nearest `target`
    voxel centre: exact up to `window` voxels, larger distances read as at least `window` (the
    SDF is truncated there; 16 voxels are 6.4 m at 0.4 m)."""
    far = float(3 * (window + 1) ** 2)
    f = torch.where(target.bool(), 0.0, far)
    for dim in range(f.dim()):
        f = _squared_distance_along(f, dim, window)
    return f.clamp(max=far).sqrt()


def signed_distance(occupied: Tensor, voxel_size: float, surface: float = 0.5) -> Tensor:
    """GT SDF ``[X, Y, Z]`` (metres, negative inside) of a voxel occupancy ``[X, Y, Z]`` bool, with
    the surface `surface` voxels beyond the outermost occupied centres (0.5: on the voxel faces,
    0: through those centres): ``(distance to the nearest occupied centre - surface) * voxel`` in
    free voxels, ``-(distance to the nearest free centre - (1 - surface)) * voxel`` in occupied ones.

    >>> signed_distance(torch.tensor([[[False, True, True, False, False]]]), 1.0)[0, 0].tolist()
    [0.5, -0.5, -0.5, 0.5, 1.5]
    """
    if not 0.0 <= surface < 1.0:
        raise ValueError(f"signed_distance: surface must lie in [0, 1), got {surface}")
    occ = occupied.bool()
    sdf = torch.where(occ, -(distance_to(~occ) - (1.0 - surface)), distance_to(occ) - surface)
    return sdf * float(voxel_size)


def sdf_on_field(gt_sdf: Tensor, gt_grid: VoxelGridSpec, field_grid: VoxelGridSpec) -> Tensor:
    """The GT SDF ``[X, Y, Z]`` on `gt_grid` read trilinearly at the nodes (voxel centres) of
    `field_grid` -> ``[X', Y', Z']`` (border values where a node lies outside the GT grid)."""
    nodes = field_grid.centers(device=gt_sdf.device).unsqueeze(0)
    return sample_volume(gt_sdf[None, None].float(), gt_grid, nodes)[0][0, ..., 0]


def frame_key(frame) -> tuple:
    """Identifies a (batch-1) frame by its time stamp, pose and images (streets of different
    seeds share time stamps and poses)."""
    T = frame.T_world_ego.reshape(-1)[:12].double().cpu()
    ts = float(torch.as_tensor(frame.timestamp).reshape(-1)[0])
    return (round(ts, 6), *(round(float(v), 4) for v in T), round(float(frame.images.double().sum()), 2))


class GroundTruthField(SelfOccModel):
    """A 'model' whose field for a frame is that frame's GT SDF on the model's field grid, with the
    NeuS sharpness fixed at `sharpness` (1/m). The network parts exist but are never run."""

    def __init__(self, cfg, fields: dict[tuple, Tensor], sharpness: float = 64.0):
        super().__init__(cfg)
        self.fields = fields
        with torch.no_grad():
            self.variance.variance.fill_(math.log(sharpness) / 10.0)

    def forward(self, frame) -> SceneField:
        key = frame_key(frame)
        if key not in self.fields:
            raise KeyError(f"GroundTruthField: no GT field for the frame at t={key[0]}")
        sdf = self.fields[key].to(frame.images.device)[None, None]
        return SceneField(self.grid, sdf, torch.zeros(1, 3, *self.grid.shape, device=sdf.device))


def gt_occupancy(dataset: Dataset, idx: int) -> tuple[Tensor, VoxelGridSpec]:
    """GT occupancy ``[X, Y, Z]`` bool and its grid of sample `idx`; synthetic streets compute it
    from the world (no visibility masks), other datasets read ``sample.gt``."""
    sub, j = dataset, idx
    while isinstance(sub, ConcatDataset):
        import bisect

        d = bisect.bisect_right(sub.cumulative_sizes, j)
        j = j - (sub.cumulative_sizes[d - 1] if d else 0)
        sub = sub.datasets[d]
    seq = getattr(sub, "seq", None)
    if seq is not None:  # SyntheticDataset
        from selfocc_core.synth.occupancy import occupancy_semantics

        i = sub.indices[j]
        grid = seq.rig.grid
        return occupancy_semantics(seq.world, seq.time(i), seq.T_world_ego(i), grid) != FREE_LABEL, grid
    gt = dataset[idx].gt
    if gt is None or gt.occ_semantics is None or gt.grid is None:
        raise ValueError("gt_sdf_bounds needs ground-truth occupancy; this dataset's samples have none")
    return torch.as_tensor(gt.occ_semantics) != FREE_LABEL, gt.grid


def field_target(dataset: Dataset, idx: int, field_grid: VoxelGridSpec, surface: float = 0.5) -> Tensor:
    """GT SDF of sample `idx` at the field nodes ``[X', Y', Z']``."""
    occ, grid = gt_occupancy(dataset, idx)
    return sdf_on_field(signed_distance(occ, grid.voxel_size, surface), grid, field_grid)


def representation_bound(cfg, eval_set: Dataset, sharpness: float = 64.0, device=torch.device("cpu"),
                         surface: float = 0.5) -> dict:
    """`trainer.evaluate` of the GT SDF written into the field (see the module docstring)."""
    fields = {}
    for i in range(len(eval_set)):
        fields[frame_key(eval_set[i].frame)] = field_target(eval_set, i, cfg.model.scene, surface)
    model = GroundTruthField(cfg.model, fields, sharpness).to(device)
    return evaluate(model, eval_set, cfg, device, cfg.train.eval_samples)


def sdf_supervised_loss(model: SelfOccModel, frame, target: Tensor) -> Tensor:
    """Mean |SDF - GT SDF| over the field nodes; ``target [B, X, Y, Z]`` on the model's grid."""
    sdf = model(frame).sdf_volume().float()
    if sdf.shape != target.shape:
        raise ValueError(f"sdf_supervised_loss: target {tuple(target.shape)} is not on the field grid {tuple(sdf.shape)}")
    return (sdf - target).abs().mean()


def _print(step, metrics):
    print(json.dumps({"step": step, **{k: round(v, 4) for k, v in metrics.items()}}), flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=("representation", "supervised"))
    ap.add_argument("--config", default="tiny_synth")
    ap.add_argument("--data", default="synthetic", help="training data, as for selfocc train")
    ap.add_argument("--eval-data", default="", help="held-out data; default: --data, split val; 'same': the training recording itself")
    ap.add_argument("--sharpness", type=float, default=64.0, help="representation: NeuS sharpness s (1/m)")
    ap.add_argument("--steps", type=int, default=1000, help="supervised: optimiser steps")
    ap.add_argument("--eval-interval", type=int, default=250)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-minutes", type=float, default=0.0,
                    help="stop training after this wall time (then the final evaluation), as train.max_wall_minutes")
    ap.add_argument("--save", default="", metavar="PT", help="supervised: write the trained model as a checkpoint")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_experiment_config(args.config, args.set)
    torch.manual_seed(cfg.train.seed)
    device = torch.device("cpu")
    eval_spec, eval_split = eval_spec_and_split(args.eval_data, args.data)  # as the trainer's --eval-data
    eval_set = open_data(eval_spec, dataclasses.replace(cfg.data, load_gt=True), eval_split)
    try:
        if args.mode == "representation":
            _print(0, representation_bound(cfg, eval_set, args.sharpness, device))
            return 0
        synthetic = str(args.data).startswith("synthetic")
        train_set = open_data(args.data, dataclasses.replace(cfg.data, load_gt=not synthetic), "train")
        model = SelfOccModel(cfg.model)
        optimizer = build_optimizer(model, cfg.optim)
        scheduler = build_scheduler(optimizer, cfg.optim, args.steps)
        gen = torch.Generator().manual_seed(cfg.train.seed)
        targets: dict[int, Tensor] = {}
        t_start = time.time()
        for step in range(args.steps + 1):
            if args.max_minutes > 0 and time.time() - t_start > 60.0 * args.max_minutes:
                args.steps = step  # out of time: evaluate and save this step as the last
            if (args.eval_interval > 0 and step % args.eval_interval == 0) or step == args.steps:
                _print(step, evaluate(model, eval_set, cfg, device, cfg.train.eval_samples))
            if step == args.steps:
                break
            i = int(torch.randint(len(train_set), (1,), generator=gen))
            if i not in targets:
                targets[i] = field_target(train_set, i, cfg.model.scene)
            sample = collate_samples([train_set[i]]).without_gt()
            model.train()
            optimizer.zero_grad(set_to_none=True)
            loss = sdf_supervised_loss(model, sample.frame, targets[i][None])
            loss.backward()
            if cfg.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            scheduler.step()
        if args.save:
            save_checkpoint(args.save, model=model, config=cfg, step=args.steps, with_rng=False)
    except ValueError as e:
        print(f"gt_sdf_bounds: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
