"""Predicted vs stereo depth on a real drive: a picture and the error per GT range bin.

    python training/stereo_depth_figure.py --ckpt runs/kitti_seq/last.pt \
        --data ../shared/data/real/kitti_raw_0001 --frames 20 60 100 --out docs/kitti_raw_0001_depth.png

Rows: one per frame: the image, the stereo reference depth (black = no reference), the rendered
depth (full 375x1242, rendered at --depth-stride and upsampled), and |pred - gt| / gt (0 .. 0.3).
Prints metric AbsRel / delta<1.25 per GT range bin over the chosen frames (JSON to --json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np

BINS = ((0.1, 10.0), (10.0, 20.0), (20.0, 40.0), (40.0, 80.0))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--frames", type=int, nargs="+", default=[20, 60, 100], help="dataset indices")
    p.add_argument("--out", default=None, help="PNG to write (small: half size)")
    p.add_argument("--json", default=None)
    p.add_argument("--depth-stride", type=int, default=1)
    p.add_argument("--stereo-disparity-offset", type=float, default=None)
    p.add_argument("--title", default="")
    args = p.parse_args(argv)

    from selfocc_core.data.open import open_dataset
    from selfocc_core.inference.predictor import OccupancyPredictor
    from selfocc_core.io_utils import atomic_write_text
    from selfocc_core.viz.colormaps import apply_colormap, colorize_depth, to_uint8_image
    from selfocc_core.viz.compare import caption, hstack, resize_to_height, save_png, vstack

    pred_ = OccupancyPredictor.from_checkpoint(args.ckpt, device="cpu", depth_stride=args.depth_stride)
    cfg = dataclasses.replace(pred_.config.data, load_gt=True, require_context=False, image_height=375, image_width=1242)
    if args.stereo_disparity_offset is not None:
        cfg = dataclasses.replace(cfg, stereo_disparity_offset=args.stereo_disparity_offset)
    ds = open_dataset(args.data, cfg, split="val")
    rows, per_bin = [], {f"{a:g}-{b:g}": [] for a, b in BINS}
    for i in args.frames:
        s = ds[i]
        out = pred_.predict(s.frame, with_depth=True)
        d = out.depth[0].numpy().clip(0.1, 80.0)
        g = s.gt.depth[0].numpy()
        valid = (g > 0.1) & (g < 80.0)
        rel = np.where(valid, np.abs(d - g) / np.maximum(g, 1e-6), np.nan)
        for (a, b), key in zip(BINS, per_bin):
            m = valid & (g >= a) & (g < b)
            if m.any():
                ratio = np.maximum(d[m] / g[m], g[m] / d[m])
                per_bin[key].append((int(m.sum()), float(rel[m].mean()), float((ratio < 1.25).mean())))
        gt_img = colorize_depth(np.where(valid, g, np.nan), max_depth=60.0)
        gt_img[~valid] = 0
        err = apply_colormap(np.where(valid, rel, np.nan), "magma", 0.0, 0.3)
        row = hstack([to_uint8_image(s.frame.images[0]), gt_img, colorize_depth(d, max_depth=60.0), err],
                     ["image_2", "stereo depth (0-60 m)", "rendered depth", "|err|/gt (0-0.3)"], height=188)
        rows.append(caption(row, f"frame {i}: AbsRel {np.nanmean(rel):.3f}  d1 "
                                 f"{float((np.maximum(d / g, g / d)[valid] < 1.25).mean()):.3f}", font_size=14))
    summary = {}
    for key, vals in per_bin.items():
        if vals:
            n = sum(v[0] for v in vals)
            summary[key] = {"pixels": n, "abs_rel": sum(v[0] * v[1] for v in vals) / n,
                            "a1": sum(v[0] * v[2] for v in vals) / n}
    print(json.dumps(summary, indent=1))
    if args.json:
        atomic_write_text(args.json, json.dumps({"frames": args.frames, "per_range": summary}, indent=1) + "\n")
    if args.out:
        img = vstack(rows)
        if args.title:
            img = caption(img, args.title, font_size=14)
        save_png(resize_to_height(img, img.shape[0] // 2) if img.shape[1] > 2000 else img, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
