"""DDAD in TRI's DGP json format.

Layout: ``scene_dataset_v1.0.json`` (``scene_splits: {"0": train, "1": val, "2": test}`` ->
scene json paths), ``scene_*/scene_<hash>.json`` (``samples`` with ``datum_keys`` and
``calibration_key``; ``data`` with one datum per sensor and sample), ``calibration/<key>.json``
(``names``, ``extrinsics`` = sensor -> vehicle, ``intrinsics`` fx, fy, cx, cy, skew),
``rgb/CAMERA_*/<stamp>.jpg`` and ``point_cloud/LIDAR/<stamp>.npz`` (key ``data`` = [M, 4]
x, y, z, intensity in the LiDAR frame).

Frames: a datum ``pose`` is the sensor's pose in the world (T_world_sensor). The ego frame is
the vehicle frame of the calibration (FLU; in DDAD it coincides with the LiDAR), taken at the
LiDAR's instant: ``T_world_ego = T_world_lidar @ inv(ext_lidar)`` and
``T_ego_cam = inv(T_world_ego) @ T_world_cam``, which folds each camera's own timing in.

Time: the ISO timestamps in DDAD's json are wrong; file names are stamps in units of 1e-7 s,
so ``timestamp = int(stem) * 1e-7`` seconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from selfocc_core.data.config import DataConfig
from selfocc_core.data.context import context_for_sequence
from selfocc_core.data.images import load_resized
from selfocc_core.data.lidar_depth import lidar_depth_maps
from selfocc_core.data.sample import Frame, GroundTruth, Sample
from selfocc_core.geometry.transforms import invert_transform, make_transform

SPLITS = {"train": "0", "val": "1", "test": "2"}
LIDAR = "LIDAR"


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"DDAD json not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from e


def _pose(p: dict, where: str) -> np.ndarray:
    try:
        r, t = p["rotation"], p["translation"]
        q = [float(r["qw"]), float(r["qx"]), float(r["qy"]), float(r["qz"])]
        xyz = [float(t["x"]), float(t["y"]), float(t["z"])]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{where}: malformed pose (need rotation qw,qx,qy,qz and translation x,y,z): {e!r}") from e
    try:
        return make_transform(q, xyz)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from e


def _stamp(filename: str) -> float:
    """Seconds from a DDAD file name (``<stamp in 1e-7 s>.jpg``)."""
    try:
        return int(Path(filename).stem) * 1e-7
    except ValueError as e:
        raise ValueError(f"DDAD file name '{filename}' is not a 1e-7 s timestamp") from e


@dataclass
class _DDADFrame:
    T_world_ego: np.ndarray
    timestamp: float
    images: dict  # camera -> (image Path, T_world_cam [4,4], K [3,3]), in rig order
    lidar: Path | None
    T_ego_lidar: np.ndarray


class DDADDataset(Dataset):
    """DDAD scenes (DGP json) -> `Sample` with context chosen by ego distance.

    path: ``scene_dataset_v1.0.json``, a folder holding it, or a single ``scene_*.json``.
    split: "train" / "val" / "test" (DGP split ids 0 / 1 / 2); `cfg.scenes` filters by scene
    folder name (e.g. "scene_02").
    """

    def __init__(self, path: str | Path, cfg: DataConfig, split: str = "train"):
        self.cfg = cfg
        path = Path(path)
        if path.is_dir():
            path = path / "scene_dataset_v1.0.json"
        if not path.is_file():
            raise FileNotFoundError(f"DDAD: {path} not found")
        doc = _read_json(path)
        if "scene_splits" in doc:
            if split not in SPLITS:
                raise ValueError(f"DDAD: unknown split '{split}' (use one of {sorted(SPLITS)})")
            entry = doc["scene_splits"].get(SPLITS[split])
            if entry is None:
                raise ValueError(f"{path}: no scene_splits['{SPLITS[split]}'] for split '{split}'")
            scene_files = [path.parent / f for f in entry.get("filenames", [])]
        else:
            scene_files = [path]
        if cfg.scenes:
            scene_files = [f for f in scene_files if f.parent.name in cfg.scenes]
            missing = set(cfg.scenes) - {f.parent.name for f in scene_files}
            if missing:
                raise ValueError(f"{path}: scenes {sorted(missing)} not in split '{split}'")
        self.source = path
        self.items: list[tuple[list[_DDADFrame], int, dict[int, int], str]] = []
        for scene_file in scene_files:
            frames = self._load_scene(scene_file)
            ts = np.array([f.timestamp for f in frames])
            pos = np.stack([f.T_world_ego[:3, 3] for f in frames]) if frames else np.zeros((0, 3))
            table = context_for_sequence(
                pos, ts, cfg.context_offsets, cfg.min_ego_distance, cfg.max_ego_distance,
                cfg.max_context_time, require_all=cfg.require_context,
            )
            for i, ctx in table:
                self.items.append((frames, i, ctx, f"{scene_file.parent.name}/{i}"))

    def _load_scene(self, scene_file: Path) -> list[_DDADFrame]:
        scene = _read_json(scene_file)
        root = scene_file.parent
        for key in ("samples", "data"):
            if key not in scene:
                raise ValueError(f"{scene_file}: missing field '{key}'")
        data = {d["key"]: d for d in scene["data"]}
        calibrations: dict[Path, tuple] = {}
        frames = []
        for si, s in enumerate(scene["samples"]):
            where = f"{scene_file} samples[{si}]"
            calib_file = root / "calibration" / f"{s.get('calibration_key', '')}.json"
            if calib_file not in calibrations:
                calibrations[calib_file] = self._calibration(calib_file)
            names, K_by, ext_by = calibrations[calib_file]
            cameras = list(self.cfg.cameras) or sorted(n for n in names if n.startswith("CAMERA_"))
            for c in cameras:
                if c not in names:
                    raise ValueError(f"{calib_file}: camera '{c}' not in calibration names {names}")
            by_name = {}
            for k in s.get("datum_keys", []):
                if k not in data:
                    raise ValueError(f"{where}: datum key {k} not in the scene's data")
                d = data[k]
                by_name[d["id"]["name"]] = d
            images = {}
            for c in cameras:
                if c not in by_name or "image" not in by_name[c]["datum"]:
                    raise ValueError(f"{where}: no image datum for camera '{c}'")
                img = by_name[c]["datum"]["image"]
                if K_by[c][0, 0] <= 0 or K_by[c][1, 1] <= 0:
                    raise ValueError(f"{calib_file}: camera '{c}' has a non-positive focal length")
                images[c] = (root / img["filename"], _pose(img["pose"], f"{where} {c}.pose"), K_by[c])
            lidar_path = None
            if LIDAR in by_name and "point_cloud" in by_name[LIDAR]["datum"]:
                pc = by_name[LIDAR]["datum"]["point_cloud"]
                T_world_lidar = _pose(pc["pose"], f"{where} {LIDAR}.pose")
                T_world_ego = T_world_lidar @ invert_transform(ext_by.get(LIDAR, np.eye(4)))
                lidar_path = root / pc["filename"]
                stamp = _stamp(pc["filename"])
            else:  # no LiDAR: the first camera's pose and extrinsics define the ego
                c0 = cameras[0]
                T_world_ego = images[c0][1] @ invert_transform(ext_by[c0])
                stamp = _stamp(images[c0][0].name)
            frames.append(_DDADFrame(T_world_ego, stamp, images, lidar_path, ext_by.get(LIDAR, np.eye(4))))
        frames.sort(key=lambda f: f.timestamp)
        return frames

    def _calibration(self, calib_file: Path):
        calib = _read_json(calib_file)
        try:
            names = list(calib["names"])
            if not (len(names) == len(calib["intrinsics"]) == len(calib["extrinsics"])):
                raise ValueError(
                    f"{calib_file}: names/intrinsics/extrinsics have different lengths "
                    f"({len(names)}, {len(calib['intrinsics'])}, {len(calib['extrinsics'])})"
                )
            K_by, ext_by = {}, {}
            for n, intr, ext in zip(names, calib["intrinsics"], calib["extrinsics"]):
                ext_by[n] = _pose(ext, f"{calib_file} extrinsics[{n}]")
                K = np.array([[intr["fx"], intr.get("skew", 0.0), intr["cx"]], [0, intr["fy"], intr["cy"]], [0, 0, 1]], dtype=np.float64)
                if not np.all(np.isfinite(K)):
                    raise ValueError(f"{calib_file}: intrinsics[{n}] contain NaN or Inf")
                K_by[n] = K
        except KeyError as e:
            raise ValueError(f"{calib_file}: missing field {e}") from e
        return names, K_by, ext_by

    def __len__(self) -> int:
        return len(self.items)

    def _frame(self, f: _DDADFrame) -> Frame:
        cfg = self.cfg
        imgs, Ks, Ts = [], [], []
        T_ego_world = invert_transform(f.T_world_ego)
        for path, T_world_cam, K in f.images.values():
            img, K_new = load_resized(path, K, cfg.image_height, cfg.image_width)
            imgs.append(img)
            Ks.append(K_new)
            Ts.append(T_ego_world @ T_world_cam)
        return Frame(
            images=torch.stack(imgs), K=torch.stack(Ks),
            T_ego_cam=torch.as_tensor(np.stack(Ts), dtype=torch.float32),
            T_world_ego=torch.as_tensor(f.T_world_ego, dtype=torch.float32),
            timestamp=f.timestamp, camera_names=list(f.images),
        )

    def __getitem__(self, index: int) -> Sample:
        frames, i, ctx, sid = self.items[index]
        frame = self._frame(frames[i])
        context = {o: self._frame(frames[j]) for o, j in ctx.items()}
        gt = None
        f = frames[i]
        if self.cfg.load_gt and f.lidar is not None:
            pts_ego = load_ddad_lidar(f.lidar) @ f.T_ego_lidar[:3, :3].T + f.T_ego_lidar[:3, 3]
            Ts = torch.as_tensor(np.stack([invert_transform(f.T_world_ego) @ v[1] for v in f.images.values()]))
            depth = lidar_depth_maps(torch.from_numpy(pts_ego), frame.K, Ts, *frame.image_size, max_depth=self.cfg.gt_depth_max)
            gt = GroundTruth(depth=depth)
        return Sample(frame=frame, context=context, gt=gt, sample_id=sid)


def load_ddad_lidar(path: str | Path) -> np.ndarray:
    """DDAD LiDAR npz (key ``data`` [M, >=3]) -> ``[M, 3]`` xyz in the LiDAR frame."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DDAD LiDAR file not found: {path}")
    with np.load(path) as z:
        if "data" not in z.files:
            raise ValueError(f"{path}: missing array 'data' (have {z.files})")
        data = np.asarray(z["data"], dtype=np.float64)
    if data.ndim != 2 or data.shape[1] < 3:
        raise ValueError(f"{path}: 'data' must be [M, >=3], got {data.shape}")
    return data[:, :3]
