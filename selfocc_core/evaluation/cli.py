"""`selfocc eval`: score a checkpoint on a dataset with ground truth and write the numbers as JSON.

Occupancy is reported in two labelled sections (JSON ``occupancy_scores``, and the printed
tables): ``model_box``, the GT voxels inside the model's own box, and ``benchmark_grid``, the
whole GT grid (where a model with a smaller box is free by construction outside it). Each holds
the model's IoU, above-ground IoU per range bin and RayIoU beside the flat-ground and
perfect-ground references on the same voxels and rays. ``occupancy`` keeps the Occ3D numbers on
the whole grid for comparison with papers.

    selfocc eval --ckpt runs/tiny/last.pt --data synthetic:seed=1000,frames=6 --json eval.json
    selfocc eval --ckpt nus.pt --data /data/nuscenes --json nus.json --post-process --max-samples 100
    selfocc eval --ckpt runs/kitti_raw/last.pt --data ../shared/data/real/kitti_raw_0001 --json k.json \
        --image-size 375x1242 --depth-stride 1     # one recorded drive, stereo reference depth

A KITTI root holding one sequence (a user's own drive) is scored as it is, whatever --split says;
without LiDAR scans the reference depth is SGBM stereo depth of image_2/image_3 (DataConfig
gt_depth_source / stereo_disparity_offset, cached outside the repository: `data.stereo_depth`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", required=True, help="checkpoint written by `selfocc train`")
    p.add_argument("--data", required=True, help="dataset with ground truth (same syntax as `selfocc train --data`)")
    p.add_argument("--json", required=True, help="where to write the results (atomically)")
    p.add_argument("--split", default="val", help="dataset split (default: val; KITTI odometry: 'all' = every "
                   "sequence; a root with a single sequence is scored as it is)")
    p.add_argument("--image-size", default=None, metavar="HxW", help="score at this image size (e.g. 375x1242, "
                   "KITTI's full size): GT depth at this size, rendered depth upsampled to it (default: the "
                   "checkpoint's network input size)")
    p.add_argument("--stereo-disparity-offset", type=float, default=None, metavar="PX",
                   help="stereo reference depth: pixels added to measured disparities (default: the checkpoint's "
                   "data.stereo_disparity_offset; kitti_raw_0001: 0.985)")
    p.add_argument("--max-samples", type=int, default=None, help="score at most N samples")
    p.add_argument("--post-process", action="store_true", help="SelfOcc clean-up (height cut, grid border) first")
    p.add_argument("--no-camera-mask", action="store_true", help="score every voxel, not only camera-visible ones")
    p.add_argument("--median-scaling", action="store_true", help="median-scale depth before scoring")
    p.add_argument("--max-depth", type=float, default=80.0, help="depth cap in metres (default 80)")
    p.add_argument("--no-novel-depth", action="store_true", help="skip novel-view depth on adjacent samples")
    p.add_argument("--depth-stride", type=int, default=None, help="pixels per rendered depth ray (default: the model's)")
    p.add_argument("--no-ray-iou", action="store_true", help="skip RayIoU (a voxel traversal per sample)")
    p.add_argument("--device", default="auto", help="cpu | cuda | auto (default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def eval_config(args: argparse.Namespace, predictor):
    """The EvalConfig of the command line. Occupancy is scored twice, in separate sections of the
    JSON and the table: on the model's own box and on the whole benchmark grid, each with the
    flat-ground and perfect-ground references on the same voxels (see evaluate.py)."""
    from selfocc_core.evaluation.depth_metrics import DepthEvalConfig
    from selfocc_core.evaluation.evaluate import EvalConfig

    return EvalConfig(
        max_samples=args.max_samples, use_camera_mask=not args.no_camera_mask, post_process=args.post_process,
        depth=DepthEvalConfig(max_depth=args.max_depth, median_scaling=args.median_scaling),
        novel_depth=not args.no_novel_depth, ground_height=predictor.config.model.ground_height,
        ray_iou=not args.no_ray_iou,
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from selfocc_core.data.open import open_dataset
    from selfocc_core.evaluation.evaluate import evaluate, format_summary
    from selfocc_core.inference.predictor import OccupancyPredictor
    from selfocc_core.io_utils import atomic_write_text

    if args.max_samples is not None and args.max_samples < 1:
        print("selfocc eval: --max-samples must be >= 1", file=sys.stderr)
        return 2
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    try:
        predictor = OccupancyPredictor.from_checkpoint(args.ckpt, device=device, depth_stride=args.depth_stride)
        # scoring needs only the adjacent context frames (RayIoU origins), not a recipe's far anchors
        data_cfg = dataclasses.replace(predictor.config.data, load_gt=True, require_context=False,
                                       context_offsets=[o for o in predictor.config.data.context_offsets if abs(o) == 1])
        if args.image_size is not None:
            h, _, w = args.image_size.lower().partition("x")
            if not (h.isdigit() and w.isdigit() and int(h) > 0 and int(w) > 0):
                raise ValueError(f"--image-size must be HxW in pixels (e.g. 375x1242), got {args.image_size!r}")
            data_cfg = dataclasses.replace(data_cfg, image_height=int(h), image_width=int(w))
        if args.stereo_disparity_offset is not None:
            data_cfg = dataclasses.replace(data_cfg, stereo_disparity_offset=args.stereo_disparity_offset)
        dataset = open_dataset(args.data, data_cfg, split=args.split)
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"selfocc eval: {e}", file=sys.stderr)
        return 2
    results = evaluate(predictor, dataset, eval_config(args, predictor), progress=not args.no_progress)
    results = {"checkpoint": str(args.ckpt), "data": str(args.data), "split": args.split,
               "image_size": [data_cfg.image_height, data_cfg.image_width], **results}
    atomic_write_text(args.json, json.dumps(results, indent=2) + "\n")
    print(format_summary(results))
    print(f"wrote {args.json}")
    return 0
