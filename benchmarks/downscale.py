#!/usr/bin/env python3
"""Cost and error of the node's uint8 camera downscale candidates on real images (JSON).

    python benchmarks/downscale.py --out benchmarks/results/downscale_candidates.json
    python benchmarks/downscale.py --checkpoint runs/tiny/last.pt      # downstream effect on a trained model

Images: the six 1600x900 nuScenes keyframe cameras and the six 1936x1216 DDAD scene_02
cameras of ../shared/data/real, downscaled to the tiny_synth network input (64x112). The
reference is what the network was trained on: data.images.resize_image (float32, antialiased
bilinear, align_corners=False) of the uint8 image / 255. Per candidate: ms per image (min and
median of --reps passes over the images, --threads 1 and 2), and the error against the
reference in 0-255 units (mean, p99, max over all pixels and images). Downstream: the
predictor's outputs on the nuScenes keyframe with the candidate's network input vs the
reference input (occupancy voxels that flip, max |SDF|, |depth| difference) for a fresh
tiny_synth checkpoint of the six cameras and, with --checkpoint, a trained one.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real"


def load_images() -> dict[str, list[np.ndarray]]:
    from PIL import Image

    nus = sorted((REAL / "nuscenes_keyframe").glob("*.jpg"))
    ddad = sorted((REAL / "ddad_dgp" / "scene_02" / "rgb").glob("CAMERA_*/*.jpg"))
    pick = {}
    for p in ddad:  # one image per camera
        pick.setdefault(p.parent.name, p)
    out = {"nuscenes_1600x900": [np.asarray(Image.open(p).convert("RGB")).copy() for p in nus],
           "ddad_1936x1216": [np.asarray(Image.open(p).convert("RGB")).copy() for p in pick.values()]}
    if not all(out.values()):
        raise SystemExit(f"no real images under {REAL}")
    return out


def reference(img: np.ndarray, size) -> np.ndarray:
    """data.images.resize_image of img / 255, in 0-255 units, [3, h, w] float64."""
    from selfocc_core.data.images import resize_image

    x = torch.from_numpy(img).permute(2, 0, 1).float() / 255.0
    out, _ = resize_image(x, torch.eye(3), *size)
    return out.double().numpy() * 255.0


def candidates(size):
    """name -> fn(img [H, W, 3] uint8) -> [3, h, w] (uint8 or float, 0-255)."""
    import cv2

    from selfocc_ros.node_logic import downscale_uint8

    h, w = size

    def two_stage_area(img):  # exact 2x2 box, then the antialiased resize of the half image
        H, W = img.shape[:2]
        half = cv2.resize(img, (W // 2, H // 2), interpolation=cv2.INTER_AREA)
        return F.interpolate(torch.from_numpy(half).permute(2, 0, 1)[None], size=size, mode="bilinear",
                             align_corners=False, antialias=True)[0]

    def plain_rows(k):  # every k-th row from row 0, the filter's scale from the sizes: shifted by (k-1)/2 rows
        def f(img):
            x = torch.from_numpy(img[::k]).permute(2, 0, 1)[None]
            return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)[0]
        return f

    def rows_cols(kr, kc):
        def f(img):
            v = np.ascontiguousarray(img[(kr - 1) // 2::kr, (kc - 1) // 2::kc])
            return torch.ops.aten._upsample_bilinear2d_aa(torch.from_numpy(v).permute(2, 0, 1)[None], [h, w], False,
                                                          kr * h / img.shape[0], kc * w / img.shape[1])[0]
        return f

    return {
        "exact_uint8 (current, row_step 1)": lambda img: downscale_uint8(img, False, size, row_step=1),
        "row_step 3 (centred rows, explicit scale)": lambda img: downscale_uint8(img, False, size, row_step=3),
        "row_step 5": lambda img: downscale_uint8(img, False, size, row_step=5),
        "row_step 3 + every 5th column": rows_cols(3, 5),
        "rows ::3 from row 0, scale from sizes (bad: 1-row shift)": plain_rows(3),
        "cv2 INTER_AREA (box) direct": lambda img: torch.from_numpy(
            cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)).permute(2, 0, 1),
        "cv2 INTER_AREA 2x + antialiased bilinear": two_stage_area,
        "cv2 INTER_LINEAR (no antialias)": lambda img: torch.from_numpy(
            cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)).permute(2, 0, 1),
        "float32 resize_image (the reference itself)": lambda img: torch.from_numpy(reference(img, size)),
    }


def time_fn(fn, imgs, reps: int) -> dict:
    fn(imgs[0])
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for img in imgs:
            fn(img)
        ts.append((time.perf_counter() - t0) / len(imgs))
    return {"min_ms": round(min(ts) * 1e3, 3), "median_ms": round(float(np.median(ts)) * 1e3, 3)}


def error(fn, imgs, refs) -> dict:
    e = np.concatenate([np.abs(np.asarray(fn(img), dtype=np.float64) - r).ravel() for img, r in zip(imgs, refs)])
    return {"mean": round(float(e.mean()), 4), "p99": round(float(np.percentile(e, 99)), 3), "max": round(float(e.max()), 3)}


def downstream(predictor, names_fns, size) -> dict:
    """Predictor outputs on the nuScenes keyframe: each candidate's input vs the reference input."""
    from PIL import Image

    from selfocc_core.data.config import DataConfig
    from selfocc_core.data.open import open_dataset
    from selfocc_core.data.sample import Frame
    from selfocc_core.geometry.camera import scale_intrinsics

    pkl = next((REAL / "nuscenes_keyframe").glob("*.pkl"))
    cams = list(predictor.camera_names)
    s = open_dataset(str(pkl), DataConfig(image_height=900, image_width=1600, cameras=cams))[0]
    info = pickle.loads(pkl.read_bytes())["data_list"][0]
    root = pkl.parent
    imgs = [np.asarray(Image.open(root / Path(info["images"][c]["img_path"]).name).convert("RGB")).copy() for c in cams]
    h, w = size
    K = scale_intrinsics(s.frame.K.double(), w / 1600, h / 900).float()

    def run(images):
        frame = Frame(images=images.float(), K=K, T_ego_cam=s.frame.T_ego_cam, T_world_ego=s.frame.T_world_ego,
                      timestamp=s.frame.timestamp, camera_names=cams)
        return predictor.predict(frame, with_depth=True)

    ref = run(torch.stack([torch.from_numpy(reference(i, size)) for i in imgs]) / 255.0)
    out = {}
    for name, fn in names_fns.items():
        p = run(torch.stack([torch.as_tensor(np.asarray(fn(i), dtype=np.float32)) for i in imgs]) / 255.0)
        out[name] = {"occupancy_flipped_voxels": int((p.occupied != ref.occupied).sum()),
                     "occupied_reference": int(ref.occupied.sum()),
                     "max_abs_sdf_m": round(float((p.sdf - ref.sdf).abs().max()), 5),
                     "max_abs_depth_m": round(float((p.depth - ref.depth).abs().max()), 4),
                     "mean_abs_depth_m": round(float((p.depth - ref.depth).abs().mean()), 5)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=112)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--checkpoint", default="", help="also the downstream effect on this (trained) checkpoint")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    size = (args.height, args.width)
    sets = load_images()
    cands = candidates(size)
    refs = {k: [reference(i, size) for i in v] for k, v in sets.items()}
    from selfocc_core.bench import machine_info

    result = {"size": list(size), "machine": machine_info(torch.device("cpu")), "candidates": {}}
    for name, fn in cands.items():
        row = {"error_0_255": {k: error(fn, sets[k], refs[k]) for k in sets}}
        for t in args.threads:
            torch.set_num_threads(t)
            import cv2

            cv2.setNumThreads(t)
            row[f"threads_{t}"] = {k: time_fn(fn, sets[k], args.reps) for k in sets}
        result["candidates"][name] = row
        print(f"{name:58s} " + "  ".join(
            f"{k[:4]} {row['threads_1'][k]['min_ms']:.3f}/{row.get('threads_2', row['threads_1'])[k]['min_ms']:.3f} ms "
            f"err {row['error_0_255'][k]['mean']:.3f}/{row['error_0_255'][k]['max']:.1f}" for k in sets), flush=True)
    torch.set_num_threads(1)
    keep = {k: v for k, v in cands.items() if "reference itself" not in k}
    sys.path.insert(0, str(REPO / "benchmarks"))
    from node_overhead import NUSCENES, make_checkpoint

    from selfocc_core.inference.predictor import OccupancyPredictor

    models = {"fresh tiny_synth, 6 cameras": make_checkpoint("tiny_synth", NUSCENES)}
    if args.checkpoint:
        models[args.checkpoint] = args.checkpoint
    result["downstream"] = {}
    for label, ckpt in models.items():
        pred = OccupancyPredictor.from_checkpoint(ckpt, device="cpu")
        if tuple(pred.input_size) != size:
            print(f"skip downstream for {label}: input {pred.input_size} != {size}")
            continue
        result["downstream"][label] = downstream(pred, keep, size)
        for name, d in result["downstream"][label].items():
            print(f"  {label[:30]:30s} {name[:45]:45s} {d}", flush=True)
    text = json.dumps(result, indent=2)
    if args.out:
        from selfocc_core.io_utils import atomic_write_text

        atomic_write_text(args.out, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
