"""nuScenes keyframes from an mmdet3d-style info pickle (info_version 1.1, single frames).

Each entry of ``data_list`` holds ``ego2global`` (the ego pose at the LiDAR timestamp),
``images: {CAM_*: {img_path, cam2img, cam2ego, lidar2cam, timestamp}}`` and
``lidar_points: {lidar_path, lidar2ego}``. mmdet3d computes ``lidar2cam`` through the global
frame with each sensor's own ego pose, so

    T_ego_cam = lidar2ego @ inv(lidar2cam)

is the camera in the *LiDAR-time* ego frame with the ego motion between the two instants
folded in (the reference ego of sample.py is the LIDAR_TOP's). ``cam2ego`` alone would
ignore that motion (up to ~0.4 m at city speed).

Frames come without context (the pickle has no neighbours); GT is the sparse LiDAR depth.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from selfocc_core.data.config import DataConfig
from selfocc_core.data.images import load_resized
from selfocc_core.data.lidar_depth import lidar_depth_maps
from selfocc_core.data.sample import Frame, GroundTruth, Sample
from selfocc_core.geometry.transforms import invert_transform

NUSCENES_CAMERAS = ["CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT"]


def _matrix(entry: dict, key: str, shape: tuple, where: str) -> np.ndarray:
    if key not in entry:
        raise ValueError(f"{where}: missing field '{key}'")
    try:
        m = np.asarray(entry[key], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: field '{key}' is not a numeric array: {e}") from e
    if m.shape != shape:
        raise ValueError(f"{where}: field '{key}' must have shape {shape}, got {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{where}: field '{key}' contains NaN or Inf")
    return m


def load_lidar_bin(path: str | Path, num_features: int = 5) -> np.ndarray:
    """nuScenes ``.pcd.bin`` (float32 x num_features) -> ``[M, 3]`` xyz in the LiDAR frame."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LiDAR file not found: {path}")
    raw = np.fromfile(path, dtype=np.float32)
    if raw.size % num_features:
        raise ValueError(f"{path}: {raw.size} floats is not a multiple of {num_features} features per point")
    return raw.reshape(-1, num_features)[:, :3].astype(np.float64)


class NuScenesInfosDataset(Dataset):
    """Single nuScenes keyframes from an mmdet3d info pickle.

    info_path: the ``.pkl``; data_root: where image/LiDAR files are looked up (default: the
    pickle's folder). A file name is tried as ``data_root/<name>`` and then in the official
    layout ``data_root/samples/<CHANNEL>/<name>``.
    """

    def __init__(self, info_path: str | Path, cfg: DataConfig, data_root: str | Path | None = None):
        self.info_path = Path(info_path)
        if not self.info_path.is_file():
            raise FileNotFoundError(f"nuScenes info pickle not found: {self.info_path}")
        with open(self.info_path, "rb") as f:
            try:
                infos = pickle.load(f)
            except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
                raise ValueError(f"{self.info_path}: not a readable pickle: {e}") from e
        if not isinstance(infos, dict) or "data_list" not in infos:
            raise ValueError(f"{self.info_path}: expected a dict with 'data_list' (mmdet3d info format v1.1)")
        self.entries = list(infos["data_list"])
        self.cfg = cfg
        self.data_root = Path(data_root) if data_root is not None else self.info_path.parent

    def __len__(self) -> int:
        return len(self.entries)

    def _resolve(self, name: str, channel: str) -> Path:
        for p in (self.data_root / name, self.data_root / "samples" / channel / Path(name).name):
            if p.is_file():
                return p
        raise FileNotFoundError(f"{self.info_path}: {channel} file '{name}' not found under {self.data_root}")

    def __getitem__(self, index: int) -> Sample:
        entry = self.entries[index]
        where = f"{self.info_path} data_list[{index}]"
        cfg = self.cfg
        images_info = entry.get("images")
        if not isinstance(images_info, dict) or not images_info:
            raise ValueError(f"{where}: missing field 'images'")
        cameras = list(cfg.cameras) or [c for c in NUSCENES_CAMERAS if c in images_info]
        lidar = entry.get("lidar_points")
        if not isinstance(lidar, dict):
            raise ValueError(f"{where}: missing field 'lidar_points'")
        T_egolidar_lidar = _matrix(lidar, "lidar2ego", (4, 4), f"{where}.lidar_points")
        T_world_ego = _matrix(entry, "ego2global", (4, 4), where)

        imgs, Ks, Ts = [], [], []
        for cam in cameras:
            if cam not in images_info:
                raise ValueError(f"{where}: camera '{cam}' not in images (have {sorted(images_info)})")
            info = images_info[cam]
            cw = f"{where}.images.{cam}"
            K = _matrix(info, "cam2img", (3, 3), cw)
            T_cam_lidar = _matrix(info, "lidar2cam", (4, 4), cw)
            if "img_path" not in info:
                raise ValueError(f"{cw}: missing field 'img_path'")
            img, K_new = load_resized(self._resolve(info["img_path"], cam), K, cfg.image_height, cfg.image_width)
            imgs.append(img)
            Ks.append(K_new)
            Ts.append(T_egolidar_lidar @ invert_transform(T_cam_lidar))
        frame = Frame(
            images=torch.stack(imgs),
            K=torch.stack(Ks),
            T_ego_cam=torch.as_tensor(np.stack(Ts), dtype=torch.float32),
            T_world_ego=torch.as_tensor(T_world_ego, dtype=torch.float32),
            timestamp=float(entry.get("timestamp", 0.0)),
            camera_names=cameras,
        )
        gt = None
        if cfg.load_gt:
            if "lidar_path" not in lidar:
                raise ValueError(f"{where}.lidar_points: missing field 'lidar_path'")
            nfeat = int(lidar.get("num_pts_feats", 5))
            pts = load_lidar_bin(self._resolve(lidar["lidar_path"], "LIDAR_TOP"), nfeat)
            pts_ego = pts @ T_egolidar_lidar[:3, :3].T + T_egolidar_lidar[:3, 3]
            depth = lidar_depth_maps(
                torch.from_numpy(pts_ego), frame.K, torch.as_tensor(np.stack(Ts)),
                cfg.image_height, cfg.image_width, max_depth=cfg.gt_depth_max,
            )
            gt = GroundTruth(depth=depth)
        return Sample(frame=frame, context={}, gt=gt, sample_id=str(entry.get("token", index)))
