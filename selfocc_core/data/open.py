"""`open_dataset`: one entry point that recognises a dataset by its layout."""

from __future__ import annotations

import importlib
from pathlib import Path

from torch.utils.data import Dataset

from selfocc_core.data.config import DataConfig

# What `open_dataset` looks for, in order (also the text of the "unknown layout" error).
LAYOUTS = [
    ("synthetic", "the string 'synthetic' or 'synthetic:key=value,...' (e.g. synthetic:seed=3,frames=20)"),
    ("nuscenes", "a nuScenes dataroot: a folder with a v1.0-* table folder (sample.json, ...)"),
    ("nuscenes_infos", "an mmdet3d nuScenes info pickle (*.pkl with data_list)"),
    ("kitti_odometry", "KITTI odometry: sequences/<NN>/calib.txt (in the folder, its dataset/ subfolder, or a sequence folder)"),
    ("kitti_raw", "KITTI raw: <date>/calib_cam_to_cam.txt with <date>_drive_NNNN_sync folders"),
    ("ddad", "DDAD/DGP: scene_dataset_v1.0.json (or a scene_*.json file)"),
    ("rosbag", "a rosbag2 folder with metadata.yaml (or a bare .mcap / .db3 file)"),
]


def parse_spec_options(spec: str) -> dict:
    """``"synthetic:seed=3,frames=20"`` -> ``{"seed": 3, "frames": 20}`` (ints, floats, bools, strings)."""
    _, _, rest = spec.partition(":")
    out = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, val = part.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"dataset spec '{spec}': option '{part}' must be key=value")
        val = val.strip()
        if val.lower() in ("true", "false"):
            out[key.strip()] = val.lower() == "true"
            continue
        for conv in (int, float):
            try:
                out[key.strip()] = conv(val)
                break
            except ValueError:
                pass
        else:
            out[key.strip()] = val
    return out


def detect_layout(data: str | Path) -> str:
    """The LAYOUTS name of what lives at ``data``; ValueError listing what was looked for."""
    s = str(data)
    if s == "synthetic" or s.startswith("synthetic:"):
        return "synthetic"
    p = Path(data)
    if not p.exists():
        raise FileNotFoundError(f"dataset path does not exist: {p}")
    if p.is_file():
        if p.suffix == ".pkl":
            return "nuscenes_infos"
        if p.suffix == ".json" and (p.name == "scene_dataset_v1.0.json" or p.name.startswith("scene_")):
            return "ddad"
        if p.name == "metadata.yaml" or p.suffix in (".mcap", ".db3"):
            return "rosbag"
    else:
        if any(q.is_dir() for q in p.glob("v1.0-*")):
            return "nuscenes"
        if (p / "metadata.yaml").is_file():
            return "rosbag"
        if (p / "scene_dataset_v1.0.json").is_file():
            return "ddad"
        if (p / "calib.txt").is_file() and p.parent.name == "sequences":
            return "kitti_odometry"
        for root in (p, p / "dataset"):
            if any((q / "calib.txt").is_file() for q in (root / "sequences").glob("*")):
                return "kitti_odometry"
        if (p / "oxts").is_dir() or (p / "calib_cam_to_cam.txt").is_file() or any(p.glob("*/calib_cam_to_cam.txt")):
            return "kitti_raw"
    looked = "\n  - ".join(d for _, d in LAYOUTS)
    raise ValueError(f"cannot tell what dataset is at {p}; looked for:\n  - {looked}")


def _import(module: str, cls: str, layout: str):
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as e:
        raise ImportError(f"dataset layout '{layout}' needs {module}.{cls}, which is not available: {e}") from e


# Short spellings accepted in "synthetic:..." specs.
SYNTHETIC_ALIASES = {"frames": "num_frames", "speed": "speed_mps", "fps": "frame_rate_hz", "ego": "ego_motion"}
# Held-out drives: the val/test splits shift the seed so they never repeat a training drive.
SYNTHETIC_SPLIT_SEED_OFFSET = {"train": 0, "val": 1000, "test": 2000}


def _open_synthetic(spec: str, cfg: DataConfig, split: str) -> Dataset:
    """``synthetic[:key=value,...]`` -> SyntheticDataset; keys are SyntheticConfig fields
    (or the aliases frames/speed/fps); image size, cameras, context and GT come from `cfg`.
    Split "val"/"test" adds 1000/2000 to the seed."""
    from selfocc_core.config_io import from_dict

    SyntheticConfig = _import("selfocc_core.data.synthetic", "SyntheticConfig", "synthetic")
    SyntheticDataset = _import("selfocc_core.data.synthetic", "SyntheticDataset", "synthetic")
    if split not in SYNTHETIC_SPLIT_SEED_OFFSET:
        raise ValueError(f"synthetic: unknown split '{split}' (use one of {sorted(SYNTHETIC_SPLIT_SEED_OFFSET)})")
    options = {SYNTHETIC_ALIASES.get(k, k): v for k, v in parse_spec_options(spec).items()}
    values = {
        "image_height": cfg.image_height, "image_width": cfg.image_width, "cameras": list(cfg.cameras),
        "context_offsets": list(cfg.context_offsets), "require_context": cfg.require_context, "with_gt": cfg.load_gt,
        "min_ego_distance": cfg.min_ego_distance, "max_ego_distance": cfg.max_ego_distance,
        "max_context_time": cfg.max_context_time,
    }
    values.update(options)
    values["seed"] = int(values.get("seed", 0)) + SYNTHETIC_SPLIT_SEED_OFFSET[split]
    return SyntheticDataset(from_dict(SyntheticConfig, values, where=f"dataset spec '{spec}'"))


def open_dataset(data: str, cfg: DataConfig, split: str = "train") -> Dataset:
    """Open the dataset at ``data`` (see LAYOUTS) as a torch Dataset yielding `Sample`s."""
    layout = detect_layout(data)
    if layout == "synthetic":
        return _open_synthetic(str(data), cfg, split)
    if layout == "nuscenes":
        from selfocc_core.data.nuscenes import NuScenesDataset

        return NuScenesDataset(data, cfg, split)
    if layout == "nuscenes_infos":
        from selfocc_core.data.nuscenes_infos import NuScenesInfosDataset

        return NuScenesInfosDataset(data, cfg)
    if layout == "kitti_odometry":
        from selfocc_core.data.kitti import KittiOdometryDataset

        return KittiOdometryDataset(data, cfg, split)
    if layout == "kitti_raw":
        from selfocc_core.data.kitti import KittiRawDataset

        return KittiRawDataset(data, cfg, split)
    if layout == "ddad":
        from selfocc_core.data.ddad import DDADDataset

        return DDADDataset(data, cfg, split)
    RosbagDataset = _import("selfocc_core.data.rosbag", "RosbagDataset", layout)
    path = Path(data)
    return RosbagDataset(path.parent if path.name == "metadata.yaml" else path, cfg)
