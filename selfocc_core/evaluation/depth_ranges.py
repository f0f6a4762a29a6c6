"""Depth per GT range bin, and how much of the GT lies beyond what the model can render.

A depth score capped at the model's reach (the trainer scores GT below 25 m for a 51.2 m box)
hides the rays that end short: a ray through a false-positive voxel at 22 m whose GT is 30 m
away is not scored at all. So, next to the capped metrics:

- ``by_range``: AbsRel / RMSE / delta1 per GT depth bin ``[lo, hi)`` (0-10, 10-20, 20-40,
  40-80 m), pooled over the pixels of the split, with the prediction clamped to
  ``[min_depth, max bin edge]`` (not to the eval cap), so errors beyond the cap show;
- ``share_beyond_cap``: of the pixels with GT (``gt > min_depth``), the share at or beyond the
  eval cap ``max_depth`` (not in the capped metrics);
- ``share_outside_box``: of the same pixels, the share whose GT surface lies outside the model's
  box (farther than where the camera ray leaves it: the model cannot render it);
- ``share_beyond_reach``: either of the two.

Inputs are per-pixel maps of any leading shape ``[..., H, W]`` (or flat ``[..., R]`` at rays).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from selfocc_core.evaluation.depth_metrics import DepthEvalConfig
from selfocc_core.geometry.rays import image_rays
from selfocc_core.geometry.voxel_grid import VoxelGridSpec
from selfocc_core.rendering.ray_sampler import ray_box_intersection

DEPTH_BINS: tuple[tuple[float, float], ...] = ((0.0, 10.0), (10.0, 20.0), (20.0, 40.0), (40.0, 80.0))


def _np(x) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def box_exit_depth(K: Tensor, T_ego_cam: Tensor, image_size: tuple[int, int], box: VoxelGridSpec) -> Tensor:
    """Z-depth ``[N, H, W]`` at which the ray through each pixel centre of cameras ``K [N, 3, 3]``,
    ``T_ego_cam [N, 4, 4]`` leaves `box` (0 where the ray misses the box). A GT depth beyond it
    is a surface the model cannot render.

    >>> K = torch.tensor([[[10.0, 0, 1.5], [0, 10.0, 1.5], [0, 0, 1]]]); T = torch.eye(4)[None]
    >>> box_exit_depth(K, T, (4, 4), VoxelGridSpec(-50, 50, -50, 50, -5, 20, 1.0))[0, 1, 1]  # optical z = box z
    tensor(20.)
    """
    if K.dim() != 3 or tuple(T_ego_cam.shape) != (K.shape[0], 4, 4):
        raise ValueError(f"box_exit_depth: K [N, 3, 3] and T_ego_cam [N, 4, 4] expected, got "
                         f"{tuple(K.shape)} and {tuple(T_ego_cam.shape)}")
    H, W = image_size
    o, d, zpu = image_rays(K, T_ego_cam, image_size)
    t_in, t_out = ray_box_intersection(o, d, box.lower, box.upper)
    hit = t_out > t_in.clamp(min=0)
    z = torch.where(hit, t_out.clamp(min=0) * zpu, torch.zeros_like(t_out))
    return z.reshape(K.shape[0], H, W).float()


class DepthRangeMetrics:
    """Accumulates the scores of the module docstring over a split.

    ``update(pred, gt, exit_depth=None)``: maps of one shape; `exit_depth` is the z-depth at which
    each pixel's ray leaves the model's box (`box_exit_depth`, or ``far * z_per_unit`` of a
    RayBundle); without it ``share_outside_box`` is not reported.
    """

    def __init__(self, cfg: DepthEvalConfig | None = None, bins=DEPTH_BINS):
        self.cfg = cfg or DepthEvalConfig()
        self.bins = tuple(bins)
        self.top = max(hi for _, hi in self.bins)
        K = len(self.bins)
        self.n = np.zeros(K, dtype=np.int64)
        self.abs_rel = np.zeros(K)
        self.sq_err = np.zeros(K)
        self.a1 = np.zeros(K, dtype=np.int64)
        self.with_gt = 0
        self.beyond_cap = 0
        self.outside_box = 0
        self.beyond_reach = 0
        self.box_pixels = 0  # pixels with GT counted when an exit depth was given

    def update(self, pred, gt, exit_depth=None) -> None:
        p, g = _np(pred), _np(gt)
        if p.shape != g.shape:
            raise ValueError(f"DepthRangeMetrics.update: pred {p.shape} and gt {g.shape} differ in shape")
        e = None if exit_depth is None else _np(exit_depth)
        if e is not None and e.shape != g.shape:
            raise ValueError(f"DepthRangeMetrics.update: exit_depth {e.shape} and gt {g.shape} differ in shape")
        cfg = self.cfg
        has = np.isfinite(g) & (g > cfg.min_depth)
        beyond_cap = has & (g >= cfg.max_depth)
        self.with_gt += int(has.sum())
        self.beyond_cap += int(beyond_cap.sum())
        if e is not None:
            out = has & (g > e)
            self.outside_box += int(out.sum())
            self.beyond_reach += int((out | beyond_cap).sum())
            self.box_pixels += int(has.sum())
        if cfg.median_scaling:  # per map, over the pixels the capped metrics score
            H_W = g.shape[-2:] if g.ndim >= 2 else g.shape
            pm, gm = p.copy().reshape(-1, *H_W), g.reshape(-1, *H_W)
            for i in range(pm.shape[0]):
                v = (gm[i] > cfg.min_depth) & (gm[i] < cfg.max_depth) & np.isfinite(pm[i]) & np.isfinite(gm[i])
                if v.any() and np.median(pm[i][v]) > 0:
                    pm[i] = pm[i] * (np.median(gm[i][v]) / np.median(pm[i][v]))
            p = pm.reshape(p.shape)
        ok = has & np.isfinite(p)
        pc = np.clip(p, cfg.min_depth, self.top)
        for k, (lo, hi) in enumerate(self.bins):
            sel = ok & (g >= lo) & (g < hi)
            if not sel.any():
                continue
            gg, pp = g[sel], pc[sel]
            self.n[k] += gg.size
            self.abs_rel[k] += float(np.sum(np.abs(gg - pp) / gg))
            self.sq_err[k] += float(np.sum((gg - pp) ** 2))
            self.a1[k] += int(np.sum(np.maximum(gg / pp, pp / gg) < 1.25))

    def compute(self) -> dict:
        """``{"by_range": {"0-10m": {abs_rel, rmse, a1, num_pixels}, ...}, "share_beyond_cap",
        "share_outside_box", "share_beyond_reach", "max_depth", "num_pixels_with_gt"}`` (NaN where empty)."""
        from selfocc_core.evaluation.regions import bin_name

        by = {}
        for k, (lo, hi) in enumerate(self.bins):
            n = int(self.n[k])
            by[bin_name(lo, hi)] = {
                "abs_rel": self.abs_rel[k] / n if n else float("nan"),
                "rmse": float(np.sqrt(self.sq_err[k] / n)) if n else float("nan"),
                "a1": self.a1[k] / n if n else float("nan"),
                "num_pixels": n,
            }

        def share(a, b):
            return a / b if b else float("nan")

        out = {"by_range": by, "max_depth": self.cfg.max_depth, "num_pixels_with_gt": self.with_gt,
               "share_beyond_cap": share(self.beyond_cap, self.with_gt)}
        if self.box_pixels:
            out["share_outside_box"] = share(self.outside_box, self.box_pixels)
            out["share_beyond_reach"] = share(self.beyond_reach, self.box_pixels)
        return out
