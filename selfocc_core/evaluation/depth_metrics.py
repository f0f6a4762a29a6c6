"""Depth metrics (Eigen et al. / monodepth2 protocol).

For each image, pixels with ``min_depth < gt < max_depth`` are scored; predictions are
optionally median-scaled (``pred *= median(gt) / median(pred)``, for scale-ambiguous
monocular methods), then clamped to ``[min_depth, max_depth]``. Per image:

- AbsRel  = mean(|gt - pred| / gt)
- SqRel   = mean((gt - pred)^2 / gt)
- RMSE    = sqrt(mean((gt - pred)^2))
- RMSElog = sqrt(mean((log gt - log pred)^2))
- delta_k = fraction of pixels with max(gt / pred, pred / gt) < 1.25^k, k = 1, 2, 3

Dataset numbers are the mean over images (as monodepth2 and SceneRF report them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")


@dataclass(frozen=True)
class DepthEvalConfig:
    """How depth maps are scored."""

    min_depth: float = 0.1
    """GT below this (metres) is ignored; predictions are clamped up to it."""
    max_depth: float = 80.0
    """GT at or above this (metres) is ignored (the 80 m cap); predictions are clamped down to it."""
    median_scaling: bool = False
    """Scale each prediction by median(gt) / median(pred) over the valid pixels first."""


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def depth_errors(pred, gt, cfg: DepthEvalConfig | None = None) -> dict | None:
    """Metrics of one depth map ``pred [H, W]`` against ``gt [H, W]`` (0 = no GT).

    Returns a dict over `METRIC_NAMES` plus ``num_pixels``, or None when no pixel is valid.
    """
    cfg = cfg or DepthEvalConfig()
    pred, gt = _np(pred), _np(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"depth_errors: pred {pred.shape} and gt {gt.shape} differ in shape")
    valid = (gt > cfg.min_depth) & (gt < cfg.max_depth) & np.isfinite(gt) & np.isfinite(pred)
    if not valid.any():
        return None
    p, g = pred[valid], gt[valid]
    if cfg.median_scaling:
        med = np.median(p)
        if med > 0:
            p = p * (np.median(g) / med)
    p = np.clip(p, cfg.min_depth, cfg.max_depth)
    thresh = np.maximum(g / p, p / g)
    return {
        "abs_rel": float(np.mean(np.abs(g - p) / g)),
        "sq_rel": float(np.mean((g - p) ** 2 / g)),
        "rmse": float(np.sqrt(np.mean((g - p) ** 2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(g) - np.log(p)) ** 2))),
        "a1": float(np.mean(thresh < 1.25)),
        "a2": float(np.mean(thresh < 1.25**2)),
        "a3": float(np.mean(thresh < 1.25**3)),
        "num_pixels": int(valid.sum()),
    }


class DepthMetrics:
    """Mean of per-image depth metrics over a split.

    ``update(pred, gt)`` takes one map ``[H, W]`` or a stack ``[..., H, W]`` (each map is one image).
    """

    def __init__(self, cfg: DepthEvalConfig | None = None):
        self.cfg = cfg or DepthEvalConfig()
        self.sums = {k: 0.0 for k in METRIC_NAMES}
        self.num_images = 0

    def update(self, pred, gt) -> None:
        pred, gt = _np(pred), _np(gt)
        if pred.shape != gt.shape:
            raise ValueError(f"DepthMetrics.update: pred {pred.shape} and gt {gt.shape} differ in shape")
        H, W = gt.shape[-2:]
        for p, g in zip(pred.reshape(-1, H, W), gt.reshape(-1, H, W)):
            err = depth_errors(p, g, self.cfg)
            if err is None:
                continue
            for k in METRIC_NAMES:
                self.sums[k] += err[k]
            self.num_images += 1

    def compute(self) -> dict:
        """Means over images with any valid pixel; NaN when there were none."""
        n = self.num_images
        out = {k: (v / n if n else float("nan")) for k, v in self.sums.items()}
        out["num_images"] = n
        return out


def constant_median_depth(gt, cfg: DepthEvalConfig | None = None) -> np.ndarray:
    """The constant-depth baseline: each map of ``gt [..., H, W]`` filled with the median of its own
    valid GT pixels (what any constant prediction becomes under median scaling; 0 where none)."""
    cfg = cfg or DepthEvalConfig()
    gt = _np(gt)
    H, W = gt.shape[-2:]
    out = np.zeros_like(gt).reshape(-1, H, W)
    for k, g in enumerate(gt.reshape(-1, H, W)):
        valid = (g > cfg.min_depth) & (g < cfg.max_depth) & np.isfinite(g)
        if valid.any():
            out[k] = np.median(g[valid])
    return out.reshape(gt.shape)


def flat_ground_depth(K, T_ego_cam, image_size: tuple[int, int], ground_height: float, box=None) -> torch.Tensor:
    """The flat-ground baseline: z-depth ``[N, H, W]`` of the plane ``z = ground_height`` (ego frame)
    seen through the pixel centres of N cameras ``K [N, 3, 3]``, ``T_ego_cam [N, 4, 4]``, for images
    of ``image_size = (H, W)``. With ``box`` (a VoxelGridSpec) rays end at the box exit when the plane
    is not hit inside it, as a ground-only field in that box renders; without, they are +inf.
    """
    from selfocc_core.geometry.rays import image_rays
    from selfocc_core.rendering.ray_sampler import ray_box_intersection

    K = torch.as_tensor(K, dtype=torch.float64).reshape(-1, 3, 3)
    T = torch.as_tensor(T_ego_cam, dtype=torch.float64).reshape(-1, 4, 4)
    if K.shape[0] != T.shape[0]:
        raise ValueError(f"flat_ground_depth: {K.shape[0]} intrinsics for {T.shape[0]} camera poses")
    H, W = image_size
    o, d, z_per_unit = image_rays(K, T, image_size)
    dz = d[..., 2]
    t = torch.where(dz < -1e-9, (ground_height - o[..., 2]) / torch.where(dz < -1e-9, dz, -torch.ones_like(dz)),
                    torch.full_like(dz, float("inf")))
    t = torch.where(t > 0, t, torch.full_like(t, float("inf")))
    if box is not None:
        _, t_exit = ray_box_intersection(o, d, box.lower, box.upper)
        t = torch.minimum(t, t_exit.clamp(min=0.0))
    return (t * z_per_unit).reshape(-1, H, W).float()
