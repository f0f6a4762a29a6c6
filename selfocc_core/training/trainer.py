"""The SelfOcc trainer, organised by the method's steps.

One optimiser step:
    sample.without_gt()          ground truth never reaches a loss
    choose_anchor_offset         render the input frame or an adjacent one
    objective(sample, anchor)    lift the field from the input frame, cast the anchor's rays,
                                 NeuS-render, compute the self-supervised losses (total.py)
    backward, clip, AdamW step   a non-finite loss or gradient skips the step (K in a row abort)
    log / evaluate / checkpoint  log.jsonl + TensorBoard; depth AbsRel and occupancy IoU when the
                                 evaluation data has ground truth; last.pt + step_*.pt
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from selfocc_core.classes import FREE_LABEL
from selfocc_core.data.sample import Sample, collate_samples
from selfocc_core.evaluation.occupancy_metrics import ground_plane_occupancy
from selfocc_core.geometry.voxel_grid import occupancy_from_sdf
from selfocc_core.io_utils import atomic_path
from selfocc_core.losses.reprojection import sample_at_pixels
from selfocc_core.losses.total import LossInputs, compute_losses
from selfocc_core.model.field import prior_sdf
from selfocc_core.model.selfocc import SelfOccModel
from selfocc_core.rendering.ray_sampler import generate_rays, ray_grid_shape
from selfocc_core.training import distributed as D
from selfocc_core.training.anchor import anchor_views, choose_anchor_offset, frames_by_offset, usable_anchor_offset
from selfocc_core.training.checkpoint import (
    load_checkpoint, restore_rng_state, rig_from_checkpoint, save_checkpoint, training_rig, unwrap,
)
from selfocc_core.training.config import ExperimentConfig
from selfocc_core.training.schedule import build_optimizer, build_scheduler

log = logging.getLogger("selfocc.train")


class TrainingDivergedError(RuntimeError):
    """Too many consecutive non-finite losses."""


# --------------------------------------------------------------------------------------------
# The objective: field from the input frame, rays from the anchor, losses (no ground truth).
# --------------------------------------------------------------------------------------------
class Objective(nn.Module):
    """Wraps the model so that one ``forward`` holds every parameter use (DDP needs that).

    ``forward(sample, anchor_offset)`` -> dict with 'total' (scalar), 'terms' (unweighted
    scalars), 'stats' (floats) and 'depth' ([B, N, h, w] rendered anchor depth, detached).
    ``field_`` and ``T_world_field`` ([B, 4, 4]) replace the lifted field and its frame (the
    per-scene direct-optimisation diagnostic, training/direct_optimisation.py).
    """

    def __init__(self, model: SelfOccModel, cfg: ExperimentConfig):
        super().__init__()
        self.model = model
        self.cfg = cfg

    def forward(self, sample: Sample, anchor_offset: int, field_=None, T_world_field: Optional[Tensor] = None) -> dict:
        if sample.gt is not None:
            raise ValueError("Objective: the sample still carries ground truth; call sample.without_gt() first")
        cfg, lc = self.cfg, self.cfg.loss
        if field_ is None:
            field_ = self.model(sample.frame)
        # Poses and rays in fp32 even under bf16 autocast (bf16 matmuls would move a camera 50 m
        # from the origin by ~0.2 m); only the network runs in bf16.
        with torch.autocast(device_type=sample.frame.images.device.type, enabled=False):
            views = anchor_views(sample, anchor_offset, lc.min_source_baseline, T_world_field, lc.source_offsets)
            rig = views.anchor_rig
            image_size = views.anchor.image_size
            stride = cfg.model.ray_stride
            rays = generate_rays(rig.K, rig.T_ego0_cam, image_size, stride, random_offset=True, box=cfg.model.scene,
                                 min_near=cfg.model.min_near)
        render = self.model.render(field_, rays)
        h, w = ray_grid_shape(image_size, stride)
        N = rig.images.shape[1]
        grid = (N, h, w)
        target = sample_at_pixels(rig.images, rays.camera_index, rays.pixels)
        B = target.shape[0]

        gradients = hessian = random_sdf = random_prior = seg = None
        if lc.eikonal_weight > 0 and render.gradients is not None:
            g = render.gradients.reshape(B, -1, 3)
            idx = torch.randint(0, g.shape[1], (min(lc.eikonal_points, g.shape[1]),), device=g.device)
            gradients = g[:, idx]
        if lc.hessian_weight > 0 and render.points is not None:
            p = render.points.reshape(B, -1, 3)
            idx = torch.randint(0, p.shape[1], (min(lc.hessian_points, p.shape[1]),), device=p.device)
            hessian = field_.hessian(p[:, idx].detach())
        if lc.sparsity_weight > 0 or lc.prior_weight > 0:
            lo = torch.tensor(cfg.model.scene.lower, device=target.device)
            hi = torch.tensor(cfg.model.scene.upper, device=target.device)
            pts = lo + (hi - lo) * torch.rand(B, lc.sparsity_points, 3, device=target.device)
            random_sdf = field_.sdf(pts)
            random_prior = prior_sdf(cfg.model, pts[..., 2])
        if lc.semantic_weight > 0 and views.anchor.seg_labels is not None:
            labels = views.anchor.seg_labels.unsqueeze(2).float()  # [B, N, 1, H, W]
            seg = sample_at_pixels(labels, rays.camera_index, rays.pixels, mode="nearest")[..., 0].round().long()

        with torch.autocast(device_type=target.device.type, enabled=False):
            terms = compute_losses(lc, LossInputs(
                target_rgb=target.float(), rays=rays, render=render.float(), sources=views.usable_sources(), grid=grid,
                gradients=None if gradients is None else gradients.float(),
                hessian=None if hessian is None else hessian.float(),
                random_sdf=None if random_sdf is None else random_sdf.float(), random_prior=random_prior,
                seg_labels=seg))
        depth = render.depth.detach().reshape(B, N, h, w)
        usable = views.usable
        return {"total": terms.total, "terms": terms.terms, "stats": terms.stats, "depth": depth,
                "anchor_rgb": target.detach().reshape(B, N, h, w, 3),
                "pairs": (int(usable.numel()), int((~usable).sum()))}


# --------------------------------------------------------------------------------------------
# Evaluation against ground truth (never used by the losses).
# --------------------------------------------------------------------------------------------
def gt_depth_at_rays(gt_depth: Tensor, camera_index: Tensor, pixels: Tensor) -> Tensor:
    """GT z-depth ``[B, N, H, W]`` read at the ray pixels -> ``[B, R]``: the value of the pixel the ray
    goes through (nearest, never interpolated across depth edges or into invalid zeros). The fixed
    evaluation rays go through pixel centres (`ray_grid_pixels`), so this is the GT of exactly
    that ray; a jittered training ray gets the GT of the pixel it lies in."""
    return sample_at_pixels(gt_depth.unsqueeze(2), camera_index, pixels, mode="nearest")[..., 0]


def sdf_occupancy(field_, grid, device=None, subvoxel: bool = False) -> Tensor:
    """Occupancy ``[X, Y, Z]`` bool of a (batch-1) field on ``grid``.

    ``subvoxel=False``: the project's rule, `occupancy_from_sdf` (SDF at the voxel centre <=
    a quarter voxel; stable for surfaces through voxel centres or on voxel faces).
    ``subvoxel=True``: SDF <= 0 at any of 2x2x2 points at +-voxel/4 around the centre (a
    cross-check: the same as the rule for axis-aligned planes, 8x the queries).
    """
    centres = grid.centers(device=device)  # [X, Y, Z, 3]
    if not subvoxel:
        return occupancy_from_sdf(field_.sdf(centres.unsqueeze(0))[0], grid.voxel_size).cpu()
    q = grid.voxel_size / 4
    offs = torch.tensor([[x, y, z] for x in (-q, q) for y in (-q, q) for z in (-q, q)], device=centres.device)
    pts = centres.unsqueeze(-2) + offs  # [X, Y, Z, 8, 3]
    return (field_.sdf(pts.unsqueeze(0))[0] <= 0).any(-1).cpu()


def _constant_depth_baseline(gt_maps: list[Tensor], depth_cfg) -> dict:
    """Depth metrics of predicting one constant, the median of every scored GT pixel, everywhere."""
    from selfocc_core.evaluation.depth_metrics import DepthMetrics

    g = torch.cat([m.reshape(-1) for m in gt_maps]).double()
    g = g[(g > depth_cfg.min_depth) & (g < depth_cfg.max_depth)]
    value = float(g.median()) if g.numel() else float("nan")
    m = DepthMetrics(depth_cfg)
    for gt in gt_maps:
        m.update(torch.full_like(gt, value), gt)
    return {**m.compute(), "value": value}


@torch.no_grad()
def evaluate(model: SelfOccModel, dataset: Dataset, cfg: ExperimentConfig, device: torch.device,
             max_samples: int, stride: Optional[int] = None) -> dict:
    """Depth metrics (vs GT depth at the rays of the input frame's cameras) and occupancy scores
    (vs GT inside the model's scene box) over ``max_samples`` samples spread evenly over the dataset.

    Keys (log.jsonl / TensorBoard):
    - ``depth/<metric>``: capped at ``train.eval_max_depth``; ``constant_depth/abs_rel|a1``: the
      baseline of one constant depth (``constant_depth/value``: the median of all scored GT
      pixels) for every pixel, scored on the same pixels; ``depth/abs_rel_<bin>``,
      ``depth/rmse_<bin>`` per GT range bin (uncapped, 80 m) and ``depth/share_beyond_cap``,
      ``depth/share_outside_box``, ``depth/share_beyond_reach`` (evaluation/depth_ranges.py);
    - ``occ/iou, precision, recall`` (camera mask, the project's occupancy rule), the same with
      ``_subvoxel`` (2x2x2 probes), ``occ/ground_plane_iou`` (the flat ground on the same voxels);
    - ``occ/above_ground_iou|precision|recall``, ``occ/above_ground_iou_<bin>`` (0-10, 10-20,
      20-40 m) and ``occ/rayiou``, ``occ/rayiou@1|2|4`` (class-agnostic RayIoU; origins: the rig
      centres of the sample's frames) of the model, and the same keys under ``flat_ground/`` and
      ``perfect_ground/`` for the references (evaluation/occupancy_scores.py).

    Returns {} when the dataset has no ground truth.
    """
    from selfocc_core.evaluation.depth_metrics import DepthEvalConfig, DepthMetrics
    from selfocc_core.evaluation.depth_ranges import DepthRangeMetrics
    from selfocc_core.evaluation.evaluate import rig_origins
    from selfocc_core.evaluation.occupancy_metrics import GeometryMetrics
    from selfocc_core.evaluation.occupancy_scores import OccupancyScores, flat_scores
    from selfocc_core.evaluation.regions import crop_to_box

    was_training = model.training
    model.eval()
    depth_cfg = DepthEvalConfig(max_depth=cfg.train.eval_max_depth)
    depth_m, range_m = DepthMetrics(depth_cfg), DepthRangeMetrics(depth_cfg)
    gt_maps = []  # for the constant-depth baseline (one depth for every pixel: the median GT)
    occ_m, sub_m, base_m = GeometryMetrics(), GeometryMetrics(), GeometryMetrics()
    scores = OccupancyScores(semantic=False)
    stride = stride or cfg.train.eval_stride
    try:
        n = min(max_samples, len(dataset))
        # evenly spread over the dataset (several streets / sequences), deterministic
        for i in sorted({int(round(x)) for x in np.linspace(0, len(dataset) - 1, n)}):
            raw = dataset[i]
            s = collate_samples([raw]).to(device)
            gt, inp = s.gt, s.without_gt()
            if gt is None:
                continue
            field_ = model(inp.frame)
            fr = inp.frame
            if gt.depth is not None:
                rays = generate_rays(fr.K, fr.T_ego_cam, fr.image_size, stride, random_offset=False,
                                     box=cfg.model.scene, min_near=cfg.model.min_near)
                render = model.render(field_, rays)
                h, w = ray_grid_shape(fr.image_size, stride)
                pred = render.depth.float().reshape(-1, fr.num_cameras, h, w)
                gtd = gt_depth_at_rays(gt.depth.float(), rays.camera_index, rays.pixels).reshape_as(pred)
                depth_m.update(pred, gtd)
                gt_maps.append(gtd.cpu())
                range_m.update(pred, gtd, (rays.far * rays.z_per_unit).float().reshape_as(pred))
            if gt.occ_semantics is not None and gt.grid is not None:
                centres = gt.grid.centers(device=device).unsqueeze(0)  # [1, X, Y, Z, 3]
                gt_occ = (gt.occ_semantics[0] != FREE_LABEL).cpu()
                # Score only voxels inside the model's scene box (outside it the field is free by
                # construction); the baseline is scored on the same voxels.
                n = cfg.model.scene.normalize(centres[0])
                mask = (n.abs() <= 1.0).all(-1).cpu()
                cam_mask = None if gt.occ_mask_camera is None else gt.occ_mask_camera[0].bool().cpu()
                if cam_mask is not None:
                    mask &= cam_mask
                occ = sdf_occupancy(field_, gt.grid, device)
                occ_m.update(occ, gt_occ, mask)
                sub_m.update(sdf_occupancy(field_, gt.grid, device, subvoxel=True), gt_occ, mask)
                base_m.update(ground_plane_occupancy(gt.grid, cfg.model.ground_height), gt_occ, mask)
                crop = crop_to_box(gt.grid, cfg.model.scene)
                if crop is not None:  # the same voxels as above, on the sub-grid of the box (for RayIoU)
                    sub, sl = crop
                    pred_lab = torch.where(occ[sl], 0, FREE_LABEL).to(torch.uint8)
                    cam = None if cam_mask is None else cam_mask[sl]
                    scores.update({"model": pred_lab}, gt.occ_semantics[0].cpu()[sl], sub, cfg.model.ground_height,
                                  mask=cam, origins=rig_origins(raw))
    finally:
        model.train(was_training)
    out = {}
    if depth_m.num_images:
        out.update({f"depth/{k}": v for k, v in depth_m.compute().items() if k != "num_images"})
        c = _constant_depth_baseline(gt_maps, depth_cfg)
        out.update({"constant_depth/abs_rel": c["abs_rel"], "constant_depth/a1": c["a1"],
                    "constant_depth/value": c["value"]})
        r = range_m.compute()
        for b, v in r["by_range"].items():
            out.update({f"depth/abs_rel_{b}": v["abs_rel"], f"depth/rmse_{b}": v["rmse"]})
        out.update({f"depth/{k}": r[k] for k in ("share_beyond_cap", "share_outside_box", "share_beyond_reach")
                    if k in r})
    if occ_m.num_samples:
        o, sv, b = occ_m.compute(), sub_m.compute(), base_m.compute()
        out.update({"occ/iou": o["iou"], "occ/precision": o["precision"], "occ/recall": o["recall"],
                    "occ/iou_subvoxel": sv["iou"], "occ/precision_subvoxel": sv["precision"],
                    "occ/recall_subvoxel": sv["recall"], "occ/ground_plane_iou": b["iou"]})
    if scores.num_samples:
        sc = scores.compute()
        new = flat_scores(sc, "model", "occ/")
        out.update({k: v for k, v in new.items() if k not in out})  # occ/iou etc. as computed above
        for ref in ("flat_ground", "perfect_ground"):
            out.update(flat_scores(sc, ref, f"{ref}/"))
    return out


# --------------------------------------------------------------------------------------------
# Data order: a pure function of (seed, epoch, rank), so a resumed run sees the same batches.
# --------------------------------------------------------------------------------------------
class _EpochSampler(Sampler):
    """Indices epoch after epoch from ``start_epoch`` (skipping the first ``skip_batches`` batches
    of that epoch), each epoch cut to a whole number of batches: one DataLoader (and one set of
    worker processes) serves the whole run."""

    def __init__(self, base: DistributedSampler, start_epoch: int, skip_batches: int, batch_size: int,
                 steps_per_epoch: int):
        self.base, self.start_epoch, self.skip = base, start_epoch, skip_batches
        self.bs, self.spe = batch_size, steps_per_epoch

    def __iter__(self):
        epoch, skip = self.start_epoch, self.skip
        while True:
            self.base.set_epoch(epoch)
            yield from list(self.base)[skip * self.bs: self.spe * self.bs]
            epoch, skip = epoch + 1, 0

    def __len__(self):
        return 2**62


class _CachedDataset(Dataset):
    """Keeps samples in memory after their first load (small procedural datasets)."""

    def __init__(self, base: Dataset):
        self.base, self.cache = base, {}

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        if i not in self.cache:
            self.cache[i] = self.base[i]
        return self.cache[i]


@dataclass
class TrainResult:
    step: int
    last_loss: float
    evals: list[dict] = field(default_factory=list)
    skipped_steps: int = 0
    pairs: dict = field(default_factory=dict)
    """Context-pair counts (see `Trainer.pair_counts`)."""
    stopped_at_wall_limit: bool = False
    """True when ``train.max_wall_minutes`` ended the run before ``train.steps``."""


class Trainer:
    """See the module docstring. ``run()`` trains to ``cfg.train.steps`` and returns a TrainResult."""

    def __init__(self, cfg: ExperimentConfig, train_set: Dataset, out_dir: str | Path, env: D.DistEnv,
                 eval_set: Optional[Dataset] = None, resume: bool = False, progress: bool = True):
        self.cfg, self.env, self.out = cfg, env, Path(out_dir)
        self.rig: Optional[dict] = None  # training rig (checkpoint.training_rig), from the first batch
        self.train_set = _CachedDataset(train_set) if cfg.train.num_workers == 0 else train_set
        self.eval_set = eval_set
        self.progress = progress and env.is_main
        if len(train_set) == 0:
            raise ValueError("training dataset is empty")
        self._seed_everything(cfg.train.seed + env.rank)
        if cfg.train.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.model = SelfOccModel(cfg.model).to(env.device)
        self.objective: nn.Module = Objective(self.model, cfg)
        if env.distributed:
            self.objective = nn.parallel.DistributedDataParallel(
                self.objective, device_ids=[env.device.index] if env.device.type == "cuda" else None)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, cfg.train.steps)
        self.step = 0
        self.consecutive_nan = 0
        self.skipped = 0
        # (anchor, source) pairs seen / skipped for lack of baseline (LossConfig.min_source_baseline),
        # anchors replaced by another offset, samples skipped without any usable pair
        self.pair_counts = {"pairs_total": 0, "pairs_skipped_no_baseline": 0, "anchors_replaced": 0,
                            "samples_skipped_no_baseline": 0}
        self.sampler = DistributedSampler(self.train_set, num_replicas=env.world_size, rank=env.rank, shuffle=True,
                                          seed=cfg.train.seed, drop_last=len(self.train_set) >= env.world_size)
        self.steps_per_epoch = max(len(self.sampler) // cfg.train.batch_size, 1)
        self.last_ckpt = self.out / "last.pt"
        if resume and self.last_ckpt.is_file():
            self._resume(self.last_ckpt)
        elif resume:
            log.warning("--resume: no %s yet, starting from scratch", self.last_ckpt)
        elif self.last_ckpt.is_file():
            raise FileExistsError(f"{self.out} already holds a run (last.pt); pass --resume to continue it "
                                  f"or choose another --out")
        self.writer = None
        if env.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            self._open_tensorboard()

    # --- set-up -------------------------------------------------------------------------------
    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def _open_tensorboard(self) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception as e:  # tensorboard missing or broken: keep training, log.jsonl still works
            warnings.warn(f"TensorBoard logging disabled: {e}")
            return
        self.writer = SummaryWriter(str(self.out / "tb"), purge_step=self.step if self.step else None)

    def _resume(self, path: Path) -> None:
        state = load_checkpoint(path, map_location=self.env.device, expected_config=self.cfg)
        self.rig = rig_from_checkpoint(state)
        self.model.load_state_dict(state["model"])
        if state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        if state.get("rng") is not None and not self.env.distributed:
            restore_rng_state(state["rng"])
        elif self.env.distributed:  # per-rank streams: reseed deterministically from the step
            self._seed_everything(self.cfg.train.seed + 1000003 * self.step + self.env.rank)
        if self.env.is_main:
            log.info("resumed %s at step %d", path, self.step)

    # --- data ---------------------------------------------------------------------------------
    def _batches(self) -> Iterator[Sample]:
        """Batches from the current step on, epoch after epoch (same order after a resume)."""
        bs = self.cfg.train.batch_size
        epoch, skip = divmod(self.step, self.steps_per_epoch)
        sampler = _EpochSampler(self.sampler, epoch, skip, bs, self.steps_per_epoch)
        workers = self.cfg.train.num_workers
        loader = DataLoader(self.train_set, batch_size=bs, sampler=sampler, num_workers=workers,
                            collate_fn=collate_samples, drop_last=True, pin_memory=self.env.device.type == "cuda",
                            persistent_workers=False, prefetch_factor=2 if workers else None,
                            generator=torch.Generator().manual_seed(self.cfg.train.seed * 100003 + self.step))
        return iter(loader)

    # --- one step -----------------------------------------------------------------------------
    def choose_anchor(self, sample: Sample) -> Optional[int]:
        """The anchor offset for a batch (`choose_anchor_offset`), replaced by one with a usable
        source when the drawn anchor has none (ego standing still); None when no pair of frames
        in the sample has ``loss.min_source_baseline`` (the sample is then skipped)."""
        lc = self.cfg.loss
        offset = choose_anchor_offset(lc, set(frames_by_offset(sample)))
        if lc.reprojection_weight <= 0 or lc.min_source_baseline <= 0:
            return offset
        chosen = usable_anchor_offset(sample, offset, lc.min_source_baseline, lc.source_offsets)
        if chosen is None:
            self.pair_counts["samples_skipped_no_baseline"] += sample.frame.images.shape[0]
        elif chosen != offset:
            self.pair_counts["anchors_replaced"] += 1
        return chosen

    def train_step(self, batch: Sample) -> Optional[dict]:
        """One optimiser step on a collated batch. Returns the logged scalars, or None when the
        batch has no context pair with a camera baseline (nothing trained, step not counted)."""
        if self.rig is None:  # stored in every checkpoint: the node checks its TF against it
            self.rig = training_rig(batch.frame.camera_names, batch.frame.T_ego_cam, self.cfg.model.ground_height)
        sample = batch.without_gt().to(self.env.device, non_blocking=True)
        offset = self.choose_anchor(sample)
        if offset is None:
            return None
        use_bf16 = self.cfg.train.bf16 and self.env.device.type == "cuda"
        self.optimizer.zero_grad(set_to_none=True)
        # BatchNorm running statistics change in the forward pass; keep a copy so that a skipped
        # (non-finite) step leaves the model exactly as it was.
        buffers = {k: v.detach().clone() for k, v in self.model.named_buffers()}
        with torch.autocast(device_type=self.env.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            out = self.objective(sample, offset)
        total = out["total"]
        self.pair_counts["pairs_total"] += out["pairs"][0]
        self.pair_counts["pairs_skipped_no_baseline"] += out["pairs"][1]
        total.backward()
        grad_norm = None
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.cfg.optim.grad_clip > 0 and params:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip)
        elif params:
            grad_norm = torch.linalg.vector_norm(torch.stack([p.grad.detach().norm() for p in params]))
        finite = bool(torch.isfinite(total.detach())) and (grad_norm is None or bool(torch.isfinite(grad_norm)))
        finite = D.all_ranks_true(self.env, finite)
        if finite:
            self.optimizer.step()
            self.consecutive_nan = 0
        else:
            self.optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                for k, v in self.model.named_buffers():
                    if k in buffers:
                        v.copy_(buffers[k])
            self.consecutive_nan += 1
            self.skipped += 1
            warnings.warn(f"step {self.step}: non-finite loss or gradient ({float(total.detach()):.4g}); step skipped "
                          f"({self.consecutive_nan} in a row, abort after {self.cfg.train.max_nan_steps})")
            if self.consecutive_nan >= self.cfg.train.max_nan_steps:
                raise TrainingDivergedError(
                    f"training diverged: {self.consecutive_nan} consecutive non-finite losses at step {self.step} "
                    f"(last loss {float(total.detach())}); lower optim.lr, raise optim.warmup_steps or check the "
                    f"data; the last good checkpoint is {self.last_ckpt}")
        self.scheduler.step()
        self.step += 1
        self._last_out = {"depth": out["depth"], "anchor_rgb": out["anchor_rgb"]}  # for image logs only
        scalars = {"loss": float(total.detach()), "anchor_offset": float(offset),
                   "lr": self.optimizer.param_groups[-1]["lr"] if self.optimizer.param_groups else 0.0}
        scalars.update({f"loss/{k}": float(v.detach()) for k, v in out["terms"].items()})
        scalars.update({f"stats/{k}": float(v) for k, v in out["stats"].items()})
        scalars.update({f"pairs/{k}": v for k, v in self.pair_counts.items()})
        if grad_norm is not None:
            scalars["grad_norm"] = float(grad_norm)
        inv_s = unwrap(self.model).inv_s()
        scalars["neus_inv_s"] = float(inv_s.detach())
        return scalars

    # --- logging / checkpoints -------------------------------------------------------------------
    def _log(self, record: dict) -> None:
        if not self.env.is_main:
            return
        line = json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()})
        with open(self.out / "log.jsonl", "a") as f:
            f.write(line + "\n")
        if self.writer is not None:
            for k, v in record.items():
                if k not in ("step", "kind", "time") and isinstance(v, (int, float)) and math.isfinite(v):
                    self.writer.add_scalar(k if "/" in k else f"train/{k}", v, record["step"])

    def _log_images(self) -> None:
        if self.writer is None or not hasattr(self, "_last_out"):
            return
        depth = self._last_out["depth"][0].float().cpu()  # [N, h, w]
        inv = 1.0 / depth.clamp(min=0.1)
        inv = (inv - inv.min()) / (inv.max() - inv.min()).clamp(min=1e-6)
        self.writer.add_images("render/inverse_depth", inv.unsqueeze(1), self.step, dataformats="NCHW")
        rgb = self._last_out["anchor_rgb"][0].float().cpu().permute(0, 3, 1, 2).clamp(0, 1)
        self.writer.add_images("render/anchor_rgb_at_rays", rgb, self.step, dataformats="NCHW")

    def save(self, periodic: bool = True) -> Optional[Path]:
        if not self.env.is_main:
            return None
        extra = {"skipped_steps": self.skipped}
        save_checkpoint(self.last_ckpt, model=self.model, config=self.cfg, step=self.step,
                        optimizer=self.optimizer, scheduler=self.scheduler, extra=extra, rig=self.rig)
        if periodic:
            dst = self.out / f"step_{self.step:07d}.pt"
            with atomic_path(dst) as tmp:
                shutil.copyfile(self.last_ckpt, tmp)
            old = sorted(self.out.glob("step_*.pt"))
            for p in old[:max(len(old) - self.cfg.train.keep_checkpoints, 0)]:
                p.unlink(missing_ok=True)
        return self.last_ckpt

    def run_eval(self) -> dict:
        if self.eval_set is None or not self.env.is_main:
            return {}
        t0 = time.time()
        metrics = evaluate(self.model, self.eval_set, self.cfg, self.env.device, self.cfg.train.eval_samples)
        if metrics:
            self._log({"kind": "eval", "step": self.step, "eval_seconds": round(time.time() - t0, 2), **metrics})
        return metrics

    # --- the loop -------------------------------------------------------------------------------
    def run(self, eval_at_start: bool = True, stop_after: Optional[int] = None) -> TrainResult:
        """Train to ``cfg.train.steps``; ``stop_after`` ends this invocation after that many steps
        (writing last.pt), e.g. to fit a job time limit, as ``train.max_wall_minutes`` does by wall
        time; ``--resume`` continues."""
        tc = self.cfg.train
        t_start = time.time()
        stop_step = tc.steps if stop_after is None else min(tc.steps, self.step + stop_after)
        result = TrainResult(step=self.step, last_loss=float("nan"))
        self.objective.train()
        if eval_at_start and tc.eval_interval > 0 and self.step == 0:
            m = self.run_eval()
            if m:
                result.evals.append({"step": 0, **m})
            D.barrier(self.env)
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=tc.steps, initial=self.step, desc="train", dynamic_ncols=True)
        t_last, n_last = time.time(), 0
        batches = self._batches()
        idle = 0  # consecutive batches without a usable context pair
        try:
            while self.step < stop_step:
                batch = next(batches)
                scalars = self.train_step(batch)
                if scalars is None:
                    idle += 1
                    if idle > 2 * len(self.train_set) + 10:
                        raise ValueError(
                            f"no training sample has a context frame whose cameras moved "
                            f">= loss.min_source_baseline = {self.cfg.loss.min_source_baseline} m from the anchor "
                            f"(ego standing still throughout?); {self.pair_counts}")
                    continue
                idle = 0
                result.last_loss = scalars["loss"]
                n_last += tc.batch_size * self.env.world_size
                if bar is not None:
                    bar.update(1)
                if self.step % tc.log_interval == 0 or self.step == tc.steps:
                    now = time.time()
                    sps = n_last / max(now - t_last, 1e-9)
                    t_last, n_last = now, 0
                    # only the total loss is averaged over ranks: the other keys may differ per rank
                    scalars.update(D.mean_over_ranks(self.env, {"loss": scalars["loss"]}))
                    self._log({"kind": "train", "step": self.step, "time": now, "samples_per_s": sps, **scalars})
                    if bar is not None:
                        bar.set_postfix(loss=f"{scalars['loss']:.4f}", sps=f"{sps:.2f}")
                if tc.image_log_interval and self.step % tc.image_log_interval == 0:
                    self._log_images()
                if tc.eval_interval and (self.step % tc.eval_interval == 0 or self.step == tc.steps):
                    m = self.run_eval()
                    if m:
                        result.evals.append({"step": self.step, **m})
                    D.barrier(self.env)
                out_of_time = False
                if tc.max_wall_minutes > 0:  # every rank stops at the same step (any rank's clock may end it)
                    out_of_time = not D.all_ranks_true(self.env, time.time() - t_start < 60.0 * tc.max_wall_minutes)
                if self.step % tc.checkpoint_interval == 0 or self.step == stop_step or out_of_time:
                    self.save(periodic=self.step % tc.checkpoint_interval == 0)
                    D.barrier(self.env)
                if out_of_time and self.step < stop_step:
                    result.stopped_at_wall_limit = True
                    log.info("train.max_wall_minutes = %g reached at step %d of %d; wrote %s", tc.max_wall_minutes,
                             self.step, tc.steps, self.last_ckpt)
                    break
        except KeyboardInterrupt:
            log.warning("interrupted at step %d; writing %s", self.step, self.last_ckpt)
            self.save(periodic=False)
            raise
        finally:
            if bar is not None:
                bar.close()
            if self.writer is not None:
                self.writer.flush()
        result.step, result.skipped_steps, result.pairs = self.step, self.skipped, dict(self.pair_counts)
        if self.pair_counts["pairs_skipped_no_baseline"] or self.pair_counts["samples_skipped_no_baseline"]:
            log.info("context pairs without baseline (< %.2f m) skipped: %s", self.cfg.loss.min_source_baseline,
                     self.pair_counts)
        return result

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
