"""Diagnostic: where a checkpoint's depth AbsRel comes from, on a recording with reference depth.

`selfocc eval` reports AbsRel per GT range; this splits the AbsRel *sum* (so the shares add up
to the score) by how wrong each pixel is (pred / GT bands: a few pixels rendered at the box exit
or at the 80 m cap can outweigh thousands of 10 % misses), by GT range and by image row band,
and says what the score would be with the gross misses alone fixed. Same protocol as
`selfocc eval` (pixels with 0.1 < GT < max depth, predictions clamped to [0.1, max depth],
per-image mean; this pools the pixels of the scored frames, which weighs frames by their valid
pixels, so its total can differ from the per-image mean in the third decimal).

    SELFOCC_CACHE_DIR=... python training/depth_error_breakdown.py --ckpt RUN/last.pt \\
        --data ../shared/data/real/kitti_raw_0001 --image-size 375x1242 --every 10 --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import torch

RATIO_BANDS = ((0.0, 0.5), (0.5, 0.8), (0.8, 1.25), (1.25, 2.0), (2.0, float("inf")))
RANGE_BANDS = ((0.0, 10.0), (10.0, 20.0), (20.0, 40.0), (40.0, 80.0))


def breakdown(pred: np.ndarray, gt: np.ndarray, rows: np.ndarray, num_row_bands: int = 5,
              min_depth: float = 0.1, max_depth: float = 80.0) -> dict:
    """Shares of the pooled AbsRel sum of ``pred``/``gt`` pixels (1-D arrays; ``rows`` in [0, 1):
    the pixel's image row over the image height)."""
    valid = (gt > min_depth) & (gt < max_depth) & np.isfinite(pred)
    p, g, r = np.clip(pred[valid], min_depth, max_depth), gt[valid], rows[valid]
    err = np.abs(p - g) / g
    total = float(err.sum())
    ratio = p / g

    def part(mask) -> dict:
        return {"pixels": round(float(mask.mean()), 4), "abs_rel_share": round(float(err[mask].sum() / total), 4),
                "abs_rel_within": round(float(err[mask].mean()), 4) if mask.any() else None}

    out = {"abs_rel_pooled": round(float(err.mean()), 4), "num_pixels": int(valid.sum()), "by_ratio": {},
           "by_range": {}, "by_row_band": {}}
    for lo, hi in RATIO_BANDS:
        out["by_ratio"][f"{lo:g}-{hi:g}"] = part((ratio >= lo) & (ratio < hi))
    for lo, hi in RANGE_BANDS:
        out["by_range"][f"{lo:g}-{hi:g}m"] = part((g >= lo) & (g < hi))
    for k in range(num_row_bands):
        lo, hi = k / num_row_bands, (k + 1) / num_row_bands
        out["by_row_band"][f"{lo:.1f}-{hi:.1f}"] = part((r >= lo) & (r < hi))
    gross = (ratio >= 2.0) | (ratio < 0.5)
    out["abs_rel_without_gross"] = round(float(np.where(gross, 0.0, err).mean()), 4)
    out["gross_share_of_pixels"] = round(float(gross.mean()), 4)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--image-size", default=None, help="HxW of the scored images (e.g. 375x1242)")
    ap.add_argument("--every", type=int, default=10, help="score every N-th frame")
    ap.add_argument("--depth-stride", type=int, default=1)
    ap.add_argument("--max-depth", type=float, default=80.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from selfocc_core.data.open import open_dataset
    from selfocc_core.inference.predictor import OccupancyPredictor

    predictor = OccupancyPredictor.from_checkpoint(args.ckpt, device="cpu", depth_stride=args.depth_stride)
    data_cfg = dataclasses.replace(predictor.config.data, load_gt=True, require_context=False, context_offsets=[])
    if args.image_size:
        h, _, w = args.image_size.lower().partition("x")
        data_cfg = dataclasses.replace(data_cfg, image_height=int(h), image_width=int(w))
    dataset = open_dataset(args.data, data_cfg, split="train")
    preds, gts, rows = [], [], []
    for i in range(0, len(dataset), max(1, args.every)):
        sample = dataset[i]
        if sample.gt is None or sample.gt.depth is None:
            continue
        pred = predictor.predict(sample.frame, with_depth=True).depth.numpy()
        gt = sample.gt.depth.numpy()
        H = gt.shape[-2]
        preds.append(pred.reshape(-1))
        gts.append(gt.reshape(-1))
        rows.append(np.broadcast_to((np.arange(H)[:, None] / H), gt.shape).reshape(-1))
    if not preds:
        print("depth_error_breakdown: no frame with reference depth")
        return 2
    out = breakdown(np.concatenate(preds), np.concatenate(gts), np.concatenate(rows), max_depth=args.max_depth)
    out.update(checkpoint=args.ckpt, data=args.data, frames=len(preds), every=args.every)
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        from selfocc_core.io_utils import atomic_write_text

        atomic_write_text(args.json, text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
