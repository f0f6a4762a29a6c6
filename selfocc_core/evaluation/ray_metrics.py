"""RayIoU (SparseOcc, Liu et al. 2024): occupancy scored along query rays, as a LiDAR would see it.

Voxel IoU rewards thick guesses (a ground plane scores ~0.6 on a street because the road layer
is most of the occupied voxels) and punishes a surface one voxel off as much as a missing one.
RayIoU instead casts query rays from sensor origins through the predicted and the ground-truth
grid and compares what each ray hits first:

1. rays: a LiDAR-like pattern, 360 azimuths (1 degree) times pitches ``-(pi/2 - atan(k))``
   for k = 1..10 (ground hits at 1, 2, ..., 10 sensor heights) continued upwards with the last
   step until the pitch reaches 0.21 rad (the nuScenes LiDAR's upper limit): 39 x 360 rays;
2. origins: the sensor positions of the current frame and of adjacent frames, all in the
   current ego frame (SparseOcc: the LiDAR origins of up to 8 frames of the scene whose x and
   y lie within 39 m of the ego; here: the origins the caller passes, the current one first;
   adjacent ones outside the grid shrunk by `origin_margin` are dropped);
3. each ray is traversed voxel by voxel (Amanatides-Woo); its first-hit label is the class of
   the first occupied voxel, its depth the distance at which the ray *leaves* that voxel
   (SparseOcc's convention, the same for prediction and GT); a ray that hits nothing is free;
4. only rays whose GT first hit is occupied are scored. For class c and threshold d in 1, 2, 4 m:
   ``TP = #rays with GT class c, predicted class c and |depth_pred - depth_gt| < d``,
   ``IoU_c,d = TP / (#GT rays of c + #predicted rays of c - TP)``; counts are summed over the
   split, RayIoU@d = mean over classes present (nanmean), RayIoU = mean over the thresholds.

The class-agnostic variant (`semantic=False`) maps every occupied label to one class: it scores
geometry only, for models without a semantic head.

A flat ground plane earns the rays that see the road where GT sees road, and nothing for rays
that look at a car, a wall or a tree: those end at the wrong depth or never end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from selfocc_core.classes import FREE_LABEL
from selfocc_core.geometry.voxel_grid import VoxelGridSpec

THRESHOLDS = (1.0, 2.0, 4.0)


def lidar_ray_directions(num_azimuths: int = 360, top_pitch: float = 0.21) -> Tensor:
    """SparseOcc's query-ray pattern: unit directions ``[P * num_azimuths, 3]`` (float64, ego axes
    x forward, y left, z up), pitch-major; P = 39 for the default ``top_pitch``.

    >>> lidar_ray_directions().shape
    torch.Size([14040, 3])
    """
    pitches = [-(math.pi / 2 - math.atan(k + 1)) for k in range(10)]
    while pitches[-1] < top_pitch:
        pitches.append(2 * pitches[-1] - pitches[-2])
    p = torch.tensor(pitches, dtype=torch.float64)[:, None]
    a = torch.deg2rad(torch.arange(num_azimuths, dtype=torch.float64) * (360.0 / num_azimuths))[None, :]
    d = torch.stack([torch.cos(p) * torch.cos(a), torch.cos(p) * torch.sin(a), torch.sin(p).expand(-1, a.shape[1])], -1)
    return d.reshape(-1, 3)


def first_hits(labels: Tensor, grid: VoxelGridSpec, origins: Tensor, directions: Tensor,
               free_label: int = FREE_LABEL) -> tuple[Tensor, Tensor]:
    """First occupied voxel along each ray, in G label grids at once.

    Args:
        labels: ``[G, X, Y, Z]`` integer class ids on `grid` (`free_label` = free).
        origins: ``[T, 3]`` metric ray origins (ego frame of the grid), inside the grid.
        directions: ``[R, 3]`` unit directions; every origin casts every direction.

    Returns:
        ``(hit_label [G, T * R], depth [G, T * R])``, origin-major: the label of the first
        occupied voxel (`free_label` when the ray leaves the grid without a hit) and the metric
        distance at which the ray leaves that voxel (the grid exit distance for a free ray).

    >>> lab = torch.full((1, 4, 1, 1), 17); lab[0, 3] = 4
    >>> g = VoxelGridSpec(0, 4, 0, 1, 0, 1, 1.0)
    >>> first_hits(lab, g, torch.tensor([[0.5, 0.5, 0.5]]), torch.tensor([[1.0, 0, 0]]))
    (tensor([[4]]), tensor([[3.5000]], dtype=torch.float64))
    """
    if labels.dim() != 4 or tuple(labels.shape[1:]) != grid.shape:
        raise ValueError(f"first_hits: labels must be [G, {', '.join(map(str, grid.shape))}], "
                         f"got {tuple(labels.shape)}")
    if origins.dim() != 2 or origins.shape[-1] != 3 or directions.dim() != 2 or directions.shape[-1] != 3:
        raise ValueError(f"first_hits: origins [T, 3] and directions [R, 3] expected, got "
                         f"{tuple(origins.shape)} and {tuple(directions.shape)}")
    G = labels.shape[0]
    shape = torch.tensor(grid.shape)
    lower = torch.tensor(grid.lower, dtype=torch.float64)
    o = ((origins.double().cpu() - lower) / grid.voxel_size)  # voxel units
    if not ((o >= 0) & (o < shape)).all():
        raise ValueError(f"first_hits: every origin must lie inside the grid {grid}, got {origins.tolist()}")
    d = directions.double().cpu()
    d = d / d.norm(dim=-1, keepdim=True)
    T, R = o.shape[0], d.shape[0]
    o = o[:, None, :].expand(T, R, 3).reshape(-1, 3)
    d = d[None, :, :].expand(T, R, 3).reshape(-1, 3)
    M = o.shape[0]
    v = torch.floor(o).long()
    step = torch.where(d >= 0, 1, -1)
    inv = torch.where(d != 0, 1.0 / d, torch.full_like(d, math.inf))
    t_max = torch.where(d != 0, (v + (step > 0).long() - o) * inv, torch.full_like(d, math.inf))
    t_delta = torch.where(d != 0, step * inv, torch.full_like(d, math.inf))

    flat = labels.reshape(G, -1).cpu()
    occ_flat = flat != free_label
    strides = torch.tensor([grid.shape[1] * grid.shape[2], grid.shape[2], 1])
    hit_label = torch.full((G, M), free_label, dtype=flat.dtype)
    depth = torch.zeros(G, M, dtype=torch.float64)
    exit_t = torch.zeros(M, dtype=torch.float64)  # where each ray left its last voxel (grid exit)
    # state of the rays still travelling, compacted as rays finish
    ids, done = torch.arange(M), torch.zeros(G, M, dtype=torch.bool)
    for _ in range(int(shape.sum()) + 3):
        if ids.numel() == 0:
            break
        # exit distance of the current voxel, and the axis crossed (SparseOcc's tie order: x, y, z)
        tx, ty, tz = t_max[:, 0], t_max[:, 1], t_max[:, 2]
        axis = torch.where(tx < ty, torch.where(tx < tz, 0, 2), torch.where(ty < tz, 1, 2))
        rows = torch.arange(ids.numel())
        t_exit = t_max[rows, axis]
        idx = (v * strides).sum(-1)
        new = occ_flat[:, idx] & ~done  # [G, A]
        if new.any():
            g_i, a_i = new.nonzero(as_tuple=True)
            hit_label[g_i, ids[a_i]] = flat[g_i, idx[a_i]]
            depth[g_i, ids[a_i]] = t_exit[a_i] * grid.voxel_size
            done |= new
        exit_t[ids] = t_exit
        # step into the next voxel
        v[rows, axis] += step[rows, axis]
        t_max[rows, axis] += t_delta[rows, axis]
        keep = ((v >= 0) & (v < shape)).all(-1) & ~done.all(0)
        if not bool(keep.all()):
            ids, v, t_max, step, t_delta, done = ids[keep], v[keep], t_max[keep], step[keep], t_delta[keep], done[:, keep]
    depth = torch.where(hit_label == free_label, exit_t[None, :] * grid.voxel_size, depth)
    return hit_label, depth


@dataclass(frozen=True)
class RayIoUConfig:
    """How RayIoU is scored."""

    thresholds: tuple[float, ...] = THRESHOLDS
    """Depth tolerances in metres (SparseOcc: 1, 2, 4)."""
    semantic: bool = True
    """Classes must match (RayIoU); False: any occupied label matches any other (geometry only)."""
    num_classes: int = FREE_LABEL
    """Scored class ids 0..num_classes-1 (the free label is never a class)."""
    origin_margin: float = 1.0
    """Adjacent-frame origins closer than this (metres, horizontally) to the grid's x/y border are
    dropped (SparseOcc keeps origins within 39 m of a 40 m grid); the current frame's origin (the
    first) is kept whenever it lies inside the grid."""


def usable_origins(origins: Tensor, grid: VoxelGridSpec, margin: float = 1.0, keep_first: bool = True) -> Tensor:
    """The origins ``[T, 3]`` lying inside `grid` with `margin` metres to spare in x and y.

    With `keep_first` the first origin (the current frame's sensor) only has to lie inside the
    grid: a grid may start at the sensor (SemanticKITTI's x in [0, 51.2) m).
    """
    o = origins.double().reshape(-1, 3)
    lo, hi = torch.tensor(grid.lower, dtype=torch.float64), torch.tensor(grid.upper, dtype=torch.float64)
    inside = (o >= lo).all(-1) & (o < hi).all(-1)
    ok = inside & (o[:, :2] >= lo[:2] + margin).all(-1) & (o[:, :2] <= hi[:2] - margin).all(-1)
    if keep_first and len(o):
        ok[0] = inside[0]
    return o[ok]


class RayIoUMetrics:
    """Accumulates RayIoU counts over a split.

    >>> m = RayIoUMetrics(RayIoUConfig(semantic=False))
    >>> m.update(pred_labels, gt_labels, grid, origins)      # [X, Y, Z] each, origins [T, 3]
    >>> m.compute()["ray_iou"]

    ``update_many(preds [G, X, Y, Z], ...)`` scores several predictions against one GT with a
    single traversal (the model and its references on exactly the same rays) and needs one
    RayIoUMetrics per prediction (`metrics` list).
    """

    def __init__(self, cfg: RayIoUConfig = RayIoUConfig(), directions: Tensor | None = None):
        self.cfg = cfg
        self.directions = lidar_ray_directions() if directions is None else directions
        C, K = self._num_scored(), len(cfg.thresholds)
        self.gt_cnt = np.zeros(C, dtype=np.int64)
        self.pred_cnt = np.zeros(C, dtype=np.int64)
        self.tp_cnt = np.zeros((K, C), dtype=np.int64)
        self.num_rays = 0
        self.num_samples = 0

    def _num_scored(self) -> int:
        return self.cfg.num_classes if self.cfg.semantic else 1

    def _classes(self, lab: Tensor) -> Tensor:
        """Hit labels -> scored class ids (-1 = free / not scored)."""
        lab = lab.long()
        free = (lab == FREE_LABEL) | (lab < 0) | (lab >= self.cfg.num_classes)
        cls = lab if self.cfg.semantic else torch.zeros_like(lab)
        return torch.where(free, torch.full_like(cls, -1), cls)

    def add_hits(self, pred_label: Tensor, pred_depth: Tensor, gt_label: Tensor, gt_depth: Tensor) -> None:
        """Count one sample's rays: hit labels / depths ``[M]`` from `first_hits`."""
        gc, pc = self._classes(gt_label), self._classes(pred_label)
        keep = gc >= 0  # rays whose GT hits something
        gc, pc = gc[keep], pc[keep]
        err = (pred_depth[keep] - gt_depth[keep]).abs()
        C = self._num_scored()
        self.gt_cnt += np.bincount(gc.numpy(), minlength=C)[:C]
        self.pred_cnt += np.bincount(pc[pc >= 0].numpy(), minlength=C)[:C]
        same = (gc == pc)
        for j, thr in enumerate(self.cfg.thresholds):
            tp = gc[same & (err < thr)]
            self.tp_cnt[j] += np.bincount(tp.numpy(), minlength=C)[:C]
        self.num_rays += int(keep.sum())
        self.num_samples += 1

    def update(self, pred_labels, gt_labels, grid: VoxelGridSpec, origins: Tensor) -> None:
        """One sample: ``[X, Y, Z]`` predicted and GT labels on `grid`, sensor origins ``[T, 3]``."""
        update_many([self], torch.as_tensor(np.asarray(pred_labels))[None], gt_labels, grid, origins)

    def compute(self) -> dict:
        """``ray_iou`` (mean over thresholds), ``ray_iou@<d>`` per threshold, ``num_rays``;
        with semantics also ``per_class`` RayIoU (mean over thresholds). NaN when no ray was scored."""
        with np.errstate(divide="ignore", invalid="ignore"):
            union = self.gt_cnt[None, :] + self.pred_cnt[None, :] - self.tp_cnt
            iou = np.where(union > 0, self.tp_cnt / np.maximum(union, 1), np.nan)  # [K, C]
        out = {}
        per_thr = []
        for j, thr in enumerate(self.cfg.thresholds):
            row = iou[j]
            val = float(np.nanmean(row)) if np.isfinite(row).any() else float("nan")
            per_thr.append(val)
            out[f"ray_iou@{thr:g}"] = val
        out["ray_iou"] = float(np.nanmean(per_thr)) if np.isfinite(per_thr).any() else float("nan")
        if self.cfg.semantic:
            from selfocc_core.classes import OCC3D_CLASSES

            with np.errstate(invalid="ignore"):
                cls_mean = [float(np.nanmean(iou[:, c])) if np.isfinite(iou[:, c]).any() else float("nan")
                            for c in range(iou.shape[1])]
            out["per_class"] = {OCC3D_CLASSES[c] if c < len(OCC3D_CLASSES) else f"class_{c}": v
                                for c, v in enumerate(cls_mean)}
        out["num_rays"] = self.num_rays
        return out


def update_many(metrics: list[RayIoUMetrics], preds, gt_labels, grid: VoxelGridSpec, origins: Tensor) -> None:
    """Score G predictions ``[G, X, Y, Z]`` against one GT ``[X, Y, Z]`` on the same rays; ``metrics[g]``
    accumulates prediction g. All metrics must share one ray pattern and origin margin.

    Origins outside the grid (with the margin of ``metrics[0].cfg``) are dropped; with none left
    the sample adds nothing.
    """
    preds = torch.as_tensor(np.asarray(preds.cpu() if isinstance(preds, Tensor) else preds))
    gt = torch.as_tensor(np.asarray(gt_labels.cpu() if isinstance(gt_labels, Tensor) else gt_labels))
    if preds.dim() != 4 or len(metrics) != preds.shape[0] or tuple(preds.shape[1:]) != tuple(gt.shape):
        raise ValueError(f"update_many: {len(metrics)} metrics need preds [{len(metrics)}, *{tuple(gt.shape)}], "
                         f"got {tuple(preds.shape)}")
    o = usable_origins(torch.as_tensor(origins), grid, metrics[0].cfg.origin_margin)
    if o.shape[0] == 0:
        return
    lab, dep = first_hits(torch.cat([gt[None].to(preds.dtype), preds]), grid, o, metrics[0].directions)
    for g, m in enumerate(metrics):
        m.add_hits(lab[g + 1], dep[g + 1], lab[0], dep[0])
