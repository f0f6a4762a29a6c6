"""Every occupancy score for a prediction and its two references, on exactly the same voxels and rays.

References (built from the GT of each sample, scored like a model):
- ``flat_ground``: the ground-plane-only predictor (voxels with the lower face at/below
  ``ground_height``, labelled driveable_surface), what an untrained SelfOcc predicts;
- ``perfect_ground``: GT's own ground-layer voxels and nothing else (see regions.ground_layer):
  the best any ground-only prediction can do.

Scores per prediction (`OccupancyScores.compute`):
- ``iou / precision / recall`` (+ ``miou`` with semantics): Occ3D voxel scores inside the mask;
- ``above_ground``: IoU / precision / recall over the masked voxels outside the ground layer, and
  ``by_range`` the same per horizontal range bin (0-10, 10-20, 20-40 m). Both references
  predict nothing there (recall 0 by construction), so only a model that finds objects scores;
- ``ray_iou``: class-agnostic RayIoU (ray_metrics; geometry only, any occupied label matches)
  with ``ray_iou@1/@2/@4``; ``ray_miou``: SparseOcc's semantic RayIoU (semantic models only).

    >>> s = OccupancyScores(semantic=False)
    >>> s.update({"model": pred_labels}, gt_labels, grid, ground_height=0.0, mask=cam_mask, origins=origins)
    >>> s.compute()["model"]["above_ground"]["iou"], s.compute()["flat_ground"]["ray_iou"]["ray_iou"]
"""

from __future__ import annotations

import numpy as np
import torch

from selfocc_core.classes import CLASS_ID, FREE_LABEL
from selfocc_core.evaluation.occupancy_metrics import GeometryMetrics, OccupancyMetrics, ground_plane_occupancy
from selfocc_core.evaluation.ray_metrics import RayIoUConfig, RayIoUMetrics, first_hits, usable_origins
from selfocc_core.evaluation.regions import RANGE_BINS, as_numpy, bin_name, ground_layer, range_masks
from selfocc_core.geometry.voxel_grid import VoxelGridSpec

FLAT_GROUND = "flat_ground"
PERFECT_GROUND = "perfect_ground"
REFERENCES = (FLAT_GROUND, PERFECT_GROUND)
NUM_SCORED = FREE_LABEL  # GT labels 0..16 are classes; 17 free; anything else (255) ignored


def flat_ground_labels(grid: VoxelGridSpec, ground_height: float) -> np.ndarray:
    """``[X, Y, Z]`` uint8: driveable_surface at/below ``ground_height`` (lower face), free above."""
    flat = ground_plane_occupancy(grid, ground_height).numpy()
    return np.where(flat, CLASS_ID["driveable_surface"], FREE_LABEL).astype(np.uint8)


def perfect_ground_labels(gt_labels, grid: VoxelGridSpec, ground_height: float) -> np.ndarray:
    """``[X, Y, Z]`` uint8: the GT labels of GT's occupied ground-layer voxels, free elsewhere."""
    gt = as_numpy(gt_labels)
    layer = ground_layer(grid, ground_height, gt)
    occupied = (gt < NUM_SCORED) & (gt >= 0)
    return np.where(layer & occupied, gt, FREE_LABEL).astype(np.uint8)


def _geometry(m: GeometryMetrics) -> dict:
    r = m.compute()
    return {"iou": r["iou"], "precision": r["precision"], "recall": r["recall"]}


class OccupancyScores:
    """Accumulates the scores of the module docstring over a split for named predictions plus
    the two references (added automatically from each sample's GT).

    Args:
        semantic: the model has a semantic head (adds mIoU and semantic RayIoU ``ray_miou``).
        bins: horizontal range bins of the above-ground scores.
        ray_cfg: RayIoU settings (thresholds, origin margin); None = SparseOcc's.
    """

    def __init__(self, semantic: bool = False, bins=RANGE_BINS, ray_cfg: RayIoUConfig | None = None,
                 references: tuple[str, ...] = REFERENCES):
        self.semantic = semantic
        self.bins = tuple(bins)
        self.references = tuple(references)
        self.ray_cfg = ray_cfg or RayIoUConfig()
        self._directions = None
        self.metrics: dict[str, dict] = {}
        self.num_samples = 0
        self.num_voxels = 0
        self.num_above_ground_voxels = 0
        self.num_ray_samples = 0

    def _for(self, name: str) -> dict:
        if name not in self.metrics:
            geo_cfg = RayIoUConfig(self.ray_cfg.thresholds, semantic=False, origin_margin=self.ray_cfg.origin_margin)
            sem_cfg = RayIoUConfig(self.ray_cfg.thresholds, semantic=True, origin_margin=self.ray_cfg.origin_margin)
            if self._directions is None:
                self._directions = RayIoUMetrics(geo_cfg).directions
            self.metrics[name] = {
                "occ": OccupancyMetrics(),
                "above": GeometryMetrics(),
                "bins": {bin_name(lo, hi): GeometryMetrics() for lo, hi in self.bins},
                "ray": RayIoUMetrics(geo_cfg, self._directions),
                "ray_sem": RayIoUMetrics(sem_cfg, self._directions) if self.semantic else None,
            }
        return self.metrics[name]

    def update(self, preds: dict, gt_labels, grid: VoxelGridSpec, ground_height: float, mask=None,
               origins=None) -> None:
        """One sample.

        Args:
            preds: name -> ``[X, Y, Z]`` predicted labels on `grid` (FREE_LABEL = free); names must
                not be a reference name.
            gt_labels: ``[X, Y, Z]`` GT labels; mask: ``[X, Y, Z]`` bool voxels to score (camera
                mask; None = all); origins: ``[T, 3]`` RayIoU origins in the grid's ego frame
                (None: no RayIoU for this sample). RayIoU ignores `mask` (SparseOcc casts rays
                through the whole grid and keeps the rays whose GT hits something).
        """
        gt = as_numpy(gt_labels)
        if gt.shape != grid.shape:
            raise ValueError(f"OccupancyScores.update: GT {gt.shape} does not match grid {grid.shape}")
        clash = set(preds) & set(self.references)
        if clash:
            raise ValueError(f"OccupancyScores.update: prediction names {sorted(clash)} are reserved for references")
        all_preds = {k: as_numpy(v) for k, v in preds.items()}
        for k, v in all_preds.items():
            if v.shape != grid.shape:
                raise ValueError(f"OccupancyScores.update: prediction '{k}' {v.shape} does not match grid {grid.shape}")
        if FLAT_GROUND in self.references:
            all_preds[FLAT_GROUND] = flat_ground_labels(grid, ground_height)
        if PERFECT_GROUND in self.references:
            all_preds[PERFECT_GROUND] = perfect_ground_labels(gt, grid, ground_height)
        m = np.ones(grid.shape, bool) if mask is None else as_numpy(mask).astype(bool)
        if m.shape != grid.shape:
            raise ValueError(f"OccupancyScores.update: mask {m.shape} does not match grid {grid.shape}")
        m = m & (gt >= 0) & (gt <= FREE_LABEL)  # 255 = unknown in GT: not scored
        gt_occ = gt < NUM_SCORED
        above = m & ~ground_layer(grid, ground_height, gt)
        bins = {k: above & v for k, v in range_masks(grid, self.bins).items()}
        for name, p in all_preds.items():
            acc = self._for(name)
            acc["occ"].update(p, gt, m)
            p_occ = p != FREE_LABEL
            acc["above"].update(p_occ, gt_occ, above)
            for k, bm in bins.items():
                acc["bins"][k].update(p_occ, gt_occ, bm)
        self.num_samples += 1
        self.num_voxels += int(m.sum())
        self.num_above_ground_voxels += int(above.sum())
        if origins is None:
            return
        o = usable_origins(torch.as_tensor(np.asarray(origins, dtype=np.float64)), grid, self.ray_cfg.origin_margin)
        if o.shape[0] == 0:
            return
        # one traversal for GT and every distinct prediction (a reference often equals another)
        grids, row = [gt.astype(np.int64)], {}
        for name, p in all_preds.items():
            same = next((r for k, r in row.items() if np.array_equal(all_preds[k], p)), None)
            if same is None:
                grids.append(p.astype(np.int64))
                same = len(grids) - 1
            row[name] = same
        lab, dep = first_hits(torch.from_numpy(np.stack(grids)), grid, o, self._directions, free_label=FREE_LABEL)
        for name, g in row.items():
            acc = self._for(name)
            acc["ray"].add_hits(lab[g], dep[g], lab[0], dep[0])
            if acc["ray_sem"] is not None:
                acc["ray_sem"].add_hits(lab[g], dep[g], lab[0], dep[0])
        self.num_ray_samples += 1

    def compute(self) -> dict:
        """``{name: scores}`` for every prediction and reference, plus ``num_samples``,
        ``num_voxels`` (scored voxels summed over samples), ``num_above_ground_voxels``."""
        out: dict = {}
        for name, acc in self.metrics.items():
            o = acc["occ"].compute()
            s = {"iou": o["iou"], "precision": o["precision"], "recall": o["recall"]}
            if self.semantic:
                s["miou"] = o["miou"]
            by_range = {k: _geometry(b) for k, b in acc["bins"].items()}
            s["above_ground"] = {**_geometry(acc["above"]), "by_range": by_range}
            if self.num_ray_samples:
                s["ray_iou"] = acc["ray"].compute()
                if acc["ray_sem"] is not None:
                    r = acc["ray_sem"].compute()
                    s["ray_miou"] = {k.replace("ray_iou", "ray_miou"): v for k, v in r.items()}
            out[name] = s
        out.update(num_samples=self.num_samples, num_voxels=self.num_voxels,
                   num_above_ground_voxels=self.num_above_ground_voxels, num_ray_samples=self.num_ray_samples)
        return out


def _pct(x) -> str:
    return "-" if x is None or (isinstance(x, float) and x != x) else f"{100 * x:.2f}"


def format_occupancy_section(section: dict, title: str) -> list[str]:
    """A table of one `OccupancyScores.compute` result (JSON-ready, NaN may be None): one row per
    score, one column per prediction (the model first, then the references), in percent."""
    names = [k for k, v in section.items() if isinstance(v, dict) and "iou" in v]
    names = [k for k in names if k not in REFERENCES] + [k for k in REFERENCES if k in names]
    if not names:
        return []
    heads = [k.replace("_", " ") for k in names]
    width = max(12, *(len(h) for h in heads)) + 2
    rows: list[tuple[str, list]] = [
        ("IoU", [section[k]["iou"] for k in names]),
        ("precision", [section[k]["precision"] for k in names]),
        ("recall", [section[k]["recall"] for k in names]),
    ]
    if all("miou" in section[k] for k in names):
        rows.append(("mIoU", [section[k]["miou"] for k in names]))
    for key, label in (("iou", "above-ground IoU"), ("precision", "above-ground precision"),
                       ("recall", "above-ground recall")):
        rows.append((label, [section[k]["above_ground"][key] for k in names]))
    for b in section[names[0]]["above_ground"]["by_range"]:
        rows.append((f"  above-ground IoU {b}", [section[k]["above_ground"]["by_range"][b]["iou"] for k in names]))
    if all("ray_iou" in section[k] for k in names):
        r0 = section[names[0]]["ray_iou"]
        rows.append(("RayIoU (geometry)", [section[k]["ray_iou"]["ray_iou"] for k in names]))
        for t in [k for k in r0 if k.startswith("ray_iou@")]:
            rows.append((f"  RayIoU{t[len('ray_iou'):]}", [section[k]["ray_iou"][t] for k in names]))
    if all("ray_miou" in section[k] for k in names):
        rows.append(("RayIoU (semantic)", [section[k]["ray_miou"]["ray_miou"] for k in names]))
    label_w = max(len(r[0]) for r in rows) + 2
    lines = [title, " " * (label_w + 2) + "".join(h.rjust(width) for h in heads)]
    for label, vals in rows:
        lines.append("  " + label.ljust(label_w) + "".join(_pct(v).rjust(width) for v in vals))
    return lines


def flat_scores(scores: dict, name: str, prefix: str) -> dict[str, float]:
    """One prediction's scores of an `OccupancyScores.compute` result as flat log keys:
    ``{prefix}iou, precision, recall, above_ground_iou/_precision/_recall, above_ground_iou_<bin>,
    rayiou, rayiou@<d>`` (+ ``miou``, ``ray_miou`` with semantics)."""
    s = scores[name]
    out = {f"{prefix}{k}": s[k] for k in ("iou", "precision", "recall", "miou") if k in s}
    a = s["above_ground"]
    out.update({f"{prefix}above_ground_{k}": a[k] for k in ("iou", "precision", "recall")})
    out.update({f"{prefix}above_ground_iou_{b}": v["iou"] for b, v in a["by_range"].items()})
    if "ray_iou" in s:
        out.update({f"{prefix}{k.replace('ray_iou', 'rayiou')}": v for k, v in s["ray_iou"].items()
                    if k.startswith("ray_iou")})
    if "ray_miou" in s:
        out[f"{prefix}ray_miou"] = s["ray_miou"]["ray_miou"]
    return out
