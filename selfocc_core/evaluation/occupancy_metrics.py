"""Occupancy metrics: Occ3D-nuScenes IoU / mIoU and SemanticKITTI-style geometry scores.

Conventions (Occ3D-nuScenes): labels ``[X, Y, Z]`` hold class ids 0..16 for occupied voxels
and ``FREE_LABEL`` (17) for free space. Metrics are computed only inside a mask (the
camera-visibility mask ``occ_mask_camera`` for the camera-only benchmark).

- geometry IoU: occupied (label != free) vs free, ``TP / (TP + FP + FN)``
- per-class IoU for classes 0..16 from a confusion matrix accumulated over the whole split
  (not averaged per sample), and mIoU = mean over classes that appear in GT or prediction
  (classes absent from both are NaN and skipped, as in the Occ3D toolkit's nanmean)

Accumulators (`OccupancyMetrics`) sum counts over samples and report dataset-level numbers.
Inputs may be numpy arrays or torch tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from selfocc_core.classes import FREE_LABEL, OCC3D_CLASSES

NUM_SEMANTIC = FREE_LABEL  # classes 0..16 are scored; 17 (free) is not


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_same_shape(**arrays) -> None:
    shapes = {k: tuple(v.shape) for k, v in arrays.items() if v is not None}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"occupancy metric inputs differ in shape: {shapes}")


def confusion_matrix(pred, gt, num_classes: int, mask=None) -> np.ndarray:
    """Counts ``[num_classes, num_classes]``: row = GT class, column = predicted class.

    pred, gt: integer arrays of one shape with values in [0, num_classes); mask: bool, same shape.
    Entries outside [0, num_classes) in GT (e.g. 255 = ignore) are skipped.
    """
    pred, gt = _np(pred).astype(np.int64), _np(gt).astype(np.int64)
    m = None if mask is None else _np(mask).astype(bool)
    _check_same_shape(pred=pred, gt=gt, mask=m)
    valid = (gt >= 0) & (gt < num_classes)
    if m is not None:
        valid &= m
    p, g = pred[valid], gt[valid]
    if p.size and (p.min() < 0 or p.max() >= num_classes):
        raise ValueError(f"predicted class ids must lie in [0, {num_classes}), got range [{p.min()}, {p.max()}]")
    return np.bincount(g * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_from_confusion(hist: np.ndarray) -> np.ndarray:
    """Per-class IoU ``diag / (row + col - diag)``; NaN where the class is in neither GT nor prediction."""
    hist = hist.astype(np.float64)
    tp = np.diag(hist)
    union = hist.sum(0) + hist.sum(1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def binary_counts(pred_occ, gt_occ, mask=None) -> tuple[int, int, int, int]:
    """(TP, FP, FN, TN) of bool occupancy arrays inside ``mask``."""
    p, g = _np(pred_occ).astype(bool), _np(gt_occ).astype(bool)
    m = None if mask is None else _np(mask).astype(bool)
    _check_same_shape(pred=p, gt=g, mask=m)
    if m is not None:
        p, g = p[m], g[m]
    tp = int(np.count_nonzero(p & g))
    fp = int(np.count_nonzero(p & ~g))
    fn = int(np.count_nonzero(~p & g))
    tn = int(p.size - tp - fp - fn)
    return tp, fp, fn, tn


def _ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b > 0 else float("nan")


@dataclass
class PostProcessConfig:
    """SelfOcc-style clean-up of a predicted occupancy grid before scoring.

    A self-supervised SDF has no supervision above the scene's tallest structures nor at the
    edge of the grid, where it tends to leave spurious surfaces; these are set free.
    """

    max_height: float | None = 4.2
    """Voxels whose centre z (ego frame, metres) is above this are set free. None = off."""
    border_voxels: int = 2
    """This many voxels along each x/y edge of the grid are set free. 0 = off."""


def post_process(labels, grid, cfg: PostProcessConfig | None = None) -> np.ndarray:
    """Labels ``[X, Y, Z]`` on `grid` -> a copy with the height cut and border set to free."""
    cfg = PostProcessConfig() if cfg is None else cfg
    out = _np(labels).copy()
    if tuple(out.shape) != tuple(grid.shape):
        raise ValueError(f"post_process: labels shape {tuple(out.shape)} does not match grid {grid.shape}")
    if cfg.max_height is not None:
        z_centres = grid.z_min + (np.arange(grid.shape[2]) + 0.5) * grid.voxel_size
        out[:, :, z_centres > cfg.max_height] = FREE_LABEL
    b = int(cfg.border_voxels)
    if b > 0:
        out[:b], out[-b:], out[:, :b], out[:, -b:] = FREE_LABEL, FREE_LABEL, FREE_LABEL, FREE_LABEL
    return out


def ground_plane_occupancy(grid, ground_height: float, device=None):
    """Ground-plane-only baseline ``[X, Y, Z]`` bool tensor: voxels whose lower face is at or
    below ``ground_height`` (the voxel holding the ground surface and everything beneath it).

    A camera-only model must beat this to show it learned anything above the road.
    """
    z_lower = grid.centers(device=device)[..., 2] - grid.voxel_size / 2
    return z_lower <= ground_height + 1e-6


class OccupancyMetrics:
    """Accumulates Occ3D-style geometry IoU and per-class IoU/mIoU over a split.

    >>> m = OccupancyMetrics(); m.update(pred_labels, gt_labels, mask=occ_mask_camera); m.compute()
    """

    def __init__(self, num_classes: int = NUM_SEMANTIC + 1, free_label: int = FREE_LABEL,
                 class_names: tuple[str, ...] = OCC3D_CLASSES):
        self.num_classes = num_classes
        self.free_label = free_label
        self.class_names = class_names
        self.hist = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.geo = np.zeros(4, dtype=np.int64)  # TP, FP, FN, TN
        self.num_samples = 0

    def update(self, pred_labels, gt_labels, mask=None) -> None:
        """pred_labels, gt_labels: ``[X, Y, Z]`` (or batched ``[B, X, Y, Z]``) class ids; mask: bool, same shape."""
        pred, gt = _np(pred_labels), _np(gt_labels)
        self.hist += confusion_matrix(pred, gt, self.num_classes, mask)
        gt_valid = (gt >= 0) & (gt < self.num_classes)
        m = gt_valid if mask is None else (_np(mask).astype(bool) & gt_valid)
        self.geo += np.array(binary_counts(pred != self.free_label, gt != self.free_label, m))
        self.num_samples += 1 if pred.ndim == 3 else pred.shape[0]

    def compute(self) -> dict:
        """Dataset-level numbers: ``iou`` (geometry), ``precision``, ``recall``, ``miou``, ``per_class_iou``.

        IoUs are fractions in [0, 1] (multiply by 100 for the percentages papers report);
        ``miou`` is NaN when no scored class appears.
        """
        tp, fp, fn, _ = (int(v) for v in self.geo)
        ious = iou_from_confusion(self.hist)
        scored = [c for c in range(self.num_classes) if c != self.free_label]
        per_class = {self.class_names[c]: float(ious[c]) for c in scored}
        vals = [ious[c] for c in scored if not math.isnan(ious[c])]
        return {
            "iou": _ratio(tp, tp + fp + fn),
            "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn),
            "miou": float(np.mean(vals)) if vals else float("nan"),
            "per_class_iou": per_class,
            "num_samples": self.num_samples,
        }


class GeometryMetrics:
    """SemanticKITTI / SceneRF scene-completion scores (occupied vs empty) accumulated over a split.

    ``update(pred_occ, gt_occ, mask)`` takes bool occupancy; for SemanticKITTI labels pass
    ``gt_occ = (labels > 0) & (labels != 255)`` and ``mask = labels != 255``.
    """

    def __init__(self):
        self.counts = np.zeros(4, dtype=np.int64)
        self.num_samples = 0

    def update(self, pred_occ, gt_occ, mask=None) -> None:
        self.counts += np.array(binary_counts(pred_occ, gt_occ, mask))
        self.num_samples += 1

    def compute(self) -> dict:
        tp, fp, fn, _ = (int(v) for v in self.counts)
        return {
            "iou": _ratio(tp, tp + fp + fn),
            "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn),
            "num_samples": self.num_samples,
        }
