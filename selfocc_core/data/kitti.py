"""KITTI odometry and KITTI raw readers.

Ego frame: the Velodyne frame (REP 103 FLU: x forward, y left, z up, origin on the LiDAR),
so that the SemanticKITTI voxel grid (`geometry.voxel_grid.SEMANTIC_KITTI`) applies directly.
Without a velo->cam calibration (odometry ``calib.txt`` lacking ``Tr``) the ego frame is
the FLU frame at the rectified camera 0 (``T_ego_cam0 = T_FLU_OPTICAL``).
World frame: the ego frame of the first frame of the sequence.

Odometry layout (``<root>/sequences/XX`` and ``<root>/poses/XX.txt``):
  ``calib.txt``  ``P0..P3: `` 3x4 row-major rectified projections, ``P_k = K_k [I | t_k]`` with
                 t_k the offset of camera k from camera 0 (in camera-0 coordinates);
                 ``Tr: `` 3x4 Velodyne -> camera 0
  ``times.txt``  one timestamp (s) per frame
  ``image_0..3/NNNNNN.png``  (0/1 grayscale, 2/3 colour; grayscale is replicated to RGB)
  ``poses/XX.txt``  3x4 row-major camera-0 -> world per frame
  ``velodyne/NNNNNN.bin``  optional, float32 x 4, for the sparse GT depth
  Without a scan, GT depth is stereo depth (`DataConfig.gt_depth_source`, `data.stereo_depth`) of
  the rectified pair image_2/image_3 (or image_0/image_1) when the partner camera is on disk.
  ``voxels/NNNNNN.label`` (+ ``.invalid``)  optional SemanticKITTI SSC labels on the
                 SEMANTIC_KITTI grid, mapped to Occ3D class ids (`SEMANTICKITTI_TO_OCC3D`)

Raw layout (``<root>/<date>/<date>_drive_NNNN_sync``):
  ``<date>/calib_cam_to_cam.txt``  ``P_rect_0k`` (3x4), ``R_rect_00`` (3x3)
  ``<date>/calib_velo_to_cam.txt``  ``R`` (3x3), ``T`` (3): Velodyne -> unrectified camera 0
  ``<date>/calib_imu_to_velo.txt``  ``R``, ``T``: IMU -> Velodyne
  ``image_0k/data/NNNNNNNNNN.png`` + ``image_0k/timestamps.txt``; ``oxts/data/*.txt`` (lat, lon,
  alt, roll, pitch, yaw, ...); optional ``velodyne_points/data/*.bin``.
  Poses come from the OXTS GPS/IMU with the KITTI devkit's Mercator projection.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from selfocc_core.data.config import DataConfig
from selfocc_core.data.context import context_for_sequence
from selfocc_core.data.images import load_resized
from selfocc_core.data.lidar_depth import lidar_depth_maps
from selfocc_core.data.sample import Frame, GroundTruth, Sample
from selfocc_core.data.stereo_depth import StereoConfig, cached_stereo_depth, resize_depth_nearest
from selfocc_core.geometry.transforms import T_FLU_OPTICAL, invert_transform
from selfocc_core.geometry.voxel_grid import SEMANTIC_KITTI

# SemanticKITTI's split of the odometry sequences.
ODOMETRY_SPLITS = {
    "train": ["00", "01", "02", "03", "04", "05", "06", "07", "09", "10"],
    "val": ["08"],
    "test": [f"{i:02d}" for i in range(11, 22)],
}


def read_calib_file(path: Path) -> dict[str, np.ndarray]:
    """``KEY: v1 v2 ...`` lines -> {KEY: float array}; non-numeric values (dates) are skipped."""
    if not path.is_file():
        raise FileNotFoundError(f"KITTI calibration not found: {path}")
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if ":" not in line:
            continue
        key, _, val = line.partition(":")
        try:
            arr = np.array([float(x) for x in val.split()], dtype=np.float64)
        except ValueError:
            continue  # e.g. calib_time: 09-Jan-2012 13:57:47
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{path}:{n}: field '{key.strip()}' contains NaN or Inf")
        out[key.strip()] = arr
    return out


def _field(calib: dict, key: str, size: int, path: Path) -> np.ndarray:
    if key not in calib:
        raise ValueError(f"{path}: missing field '{key}' (have {sorted(calib)})")
    if calib[key].size != size:
        raise ValueError(f"{path}: field '{key}' must have {size} numbers, got {calib[key].size}")
    return calib[key]


def _h(M34: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :] = M34.reshape(3, 4)
    return T


def split_projection(P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rectified ``P = K [I | t]`` (3x4) -> (K 3x3, T_camk_cam0 4x4 = translation t)."""
    P = P.reshape(3, 4)
    K = P[:, :3].copy()
    T = np.eye(4)
    T[:3, 3] = np.linalg.solve(K, P[:, 3])
    return K, T


def read_poses(path: Path) -> np.ndarray:
    """KITTI odometry poses file -> ``[T, 4, 4]`` (3x4 row-major per line)."""
    if not path.is_file():
        raise FileNotFoundError(f"KITTI poses not found: {path}")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            vals = np.array([float(x) for x in line.split()])
        except ValueError as e:
            raise ValueError(f"{path}:{n}: not numeric: {e}") from e
        if vals.size != 12:
            raise ValueError(f"{path}:{n}: a pose needs 12 numbers, got {vals.size}")
        if not np.all(np.isfinite(vals)):
            raise ValueError(f"{path}:{n}: pose contains NaN or Inf")
        rows.append(_h(vals))
    return np.stack(rows) if rows else np.zeros((0, 4, 4))


def read_times(path: Path) -> np.ndarray:
    """``times.txt`` (seconds per line) or raw ``timestamps.txt`` (``YYYY-MM-DD hh:mm:ss.fffffffff``)."""
    if not path.is_file():
        raise FileNotFoundError(f"KITTI timestamps not found: {path}")
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            if " " in line:
                day, clock = line.split(" ")
                hms, _, frac = clock.partition(".")
                t = _dt.datetime.strptime(f"{day} {hms}", "%Y-%m-%d %H:%M:%S").replace(tzinfo=_dt.timezone.utc)
                out.append(t.timestamp() + (float("0." + frac) if frac else 0.0))
            else:
                out.append(float(line))
        except ValueError as e:
            raise ValueError(f"{path}:{n}: cannot parse timestamp '{line}': {e}") from e
    ts = np.array(out, dtype=np.float64)
    if not np.all(np.isfinite(ts)):
        raise ValueError(f"{path}: timestamps contain NaN or Inf")
    return ts


# SemanticKITTI raw label id -> Occ3D class id (selfocc_core/classes.py); 0 = empty -> 17 free.
# Vehicles without an Occ3D twin (on-rails, other-vehicle) and other-object become "others" (0);
# structures (fence, pole, sign, other-structure) are "manmade" (15) as in nuScenes-lidarseg.
SEMANTICKITTI_TO_OCC3D = {
    0: 17, 10: 4, 11: 2, 13: 3, 15: 6, 16: 0, 18: 10, 20: 0, 30: 7, 31: 2, 32: 6,
    40: 11, 44: 11, 48: 13, 49: 12, 50: 15, 51: 15, 52: 15, 60: 11, 70: 16, 71: 16, 72: 14,
    80: 15, 81: 15, 99: 0, 252: 4, 253: 2, 254: 7, 255: 6, 256: 0, 257: 3, 258: 10, 259: 0,
}
SEMANTICKITTI_IGNORE = (1,)  # "outlier": left out of the masks


def load_semantickitti_voxels(label_path: Path) -> GroundTruth:
    """SemanticKITTI SSC labels ``voxels/NNNNNN.label`` (+ ``.invalid``) -> GroundTruth.

    ``.label``: uint16 raw ids, 256*256*32 in [X, Y, Z] C order on `SEMANTIC_KITTI` (Velodyne
    frame of that scan); ``.invalid``: bit-packed (MSB first) voxels never observed. Both masks
    are ``~invalid`` (minus outliers): the SSC benchmark evaluates exactly there.
    """
    shape = SEMANTIC_KITTI.shape
    n = int(np.prod(shape))
    if not label_path.is_file():
        raise FileNotFoundError(f"SemanticKITTI labels not found: {label_path}")
    raw = np.fromfile(label_path, dtype=np.uint16)
    if raw.size != n:
        raise ValueError(f"{label_path}: {raw.size} labels, expected {n} = {shape}")
    invalid_path = label_path.with_suffix(".invalid")
    if invalid_path.is_file():
        packed = np.fromfile(invalid_path, dtype=np.uint8)
        if packed.size * 8 != n:
            raise ValueError(f"{invalid_path}: {packed.size} bytes, expected {n // 8} (bit-packed {shape})")
        invalid = np.unpackbits(packed).astype(bool)
    else:
        invalid = np.zeros(n, bool)
    lut = np.zeros(65536, np.uint8)  # unknown ids -> others (0)
    for k, v in SEMANTICKITTI_TO_OCC3D.items():
        lut[k] = v
    sem = lut[raw]
    valid = ~invalid & ~np.isin(raw, SEMANTICKITTI_IGNORE)
    mask = torch.from_numpy(valid.reshape(shape))
    return GroundTruth(grid=SEMANTIC_KITTI, occ_semantics=torch.from_numpy(sem.reshape(shape)),
                       occ_mask_camera=mask, occ_mask_lidar=mask.clone())


def load_velodyne_bin(path: Path) -> np.ndarray:
    """KITTI ``.bin`` (float32 x 4) -> ``[M, 3]`` xyz in the Velodyne frame."""
    if not path.is_file():
        raise FileNotFoundError(f"KITTI Velodyne scan not found: {path}")
    raw = np.fromfile(path, dtype=np.float32)
    if raw.size % 4:
        raise ValueError(f"{path}: {raw.size} floats is not a multiple of 4 per point")
    return raw.reshape(-1, 4)[:, :3].astype(np.float64)


@dataclass
class KittiSequence:
    """One sequence/drive, all frames in time order (T frames, cameras in order)."""

    name: str
    cameras: list[str]
    image_paths: dict[str, list[Path]]  # camera -> T paths
    K: dict[str, np.ndarray]  # camera -> [3, 3] of the stored images
    T_ego_cam: dict[str, np.ndarray]  # camera -> [4, 4]
    T_world_ego: np.ndarray  # [T, 4, 4]
    timestamps: np.ndarray  # [T]
    lidar_paths: list[Optional[Path]] = field(default_factory=list)  # T entries, None = no scan
    voxel_label_paths: list[Optional[Path]] = field(default_factory=list)  # T entries, SemanticKITTI SSC
    stereo_partners: dict[str, tuple[list[Path], float]] = field(default_factory=dict)
    """camera -> (T image paths of its rectified stereo partner to the right, baseline in metres)."""

    def __post_init__(self):
        T = len(self.timestamps)
        if self.T_world_ego.shape != (T, 4, 4):
            raise ValueError(f"KITTI sequence {self.name}: {len(self.T_world_ego)} poses for {T} timestamps")
        for c in self.cameras:
            if len(self.image_paths[c]) != T:
                raise ValueError(f"KITTI sequence {self.name}: {len(self.image_paths[c])} {c} images for {T} timestamps")


class _KittiDataset(Dataset):
    """Shared indexing / loading over `KittiSequence`s."""

    def __init__(self, sequences: list[KittiSequence], cfg: DataConfig):
        self.cfg = cfg
        self.sequences = sequences
        self.items: list[tuple[KittiSequence, int, dict[int, int]]] = []
        for seq in sequences:
            pos = seq.T_world_ego[:, :3, 3]
            table = context_for_sequence(
                pos, seq.timestamps, cfg.context_offsets, cfg.min_ego_distance, cfg.max_ego_distance,
                cfg.max_context_time, require_all=cfg.require_context,
            )
            self.items += [(seq, i, ctx) for i, ctx in table]

    def __len__(self) -> int:
        return len(self.items)

    def _frame(self, seq: KittiSequence, i: int) -> Frame:
        cfg = self.cfg
        imgs, Ks = [], []
        for c in seq.cameras:
            img, K = load_resized(seq.image_paths[c][i], seq.K[c], cfg.image_height, cfg.image_width)
            imgs.append(img)
            Ks.append(K)
        return Frame(
            images=torch.stack(imgs),
            K=torch.stack(Ks),
            T_ego_cam=torch.as_tensor(np.stack([seq.T_ego_cam[c] for c in seq.cameras]), dtype=torch.float32),
            T_world_ego=torch.as_tensor(seq.T_world_ego[i], dtype=torch.float32),
            timestamp=float(seq.timestamps[i]),
            camera_names=list(seq.cameras),
        )

    def __getitem__(self, index: int) -> Sample:
        seq, i, ctx = self.items[index]
        frame = self._frame(seq, i)
        context = {o: self._frame(seq, j) for o, j in ctx.items()}
        gt = None
        if self.cfg.load_gt:
            labels = seq.voxel_label_paths[i] if seq.voxel_label_paths else None
            lidar = seq.lidar_paths[i] if seq.lidar_paths else None
            if self.cfg.gt_depth_source == "stereo":
                lidar = None
            gt = load_semantickitti_voxels(labels) if labels is not None else GroundTruth()
            if lidar is not None:
                pts = torch.from_numpy(load_velodyne_bin(lidar))  # Velodyne frame == ego frame
                T = torch.as_tensor(np.stack([seq.T_ego_cam[c] for c in seq.cameras]))
                gt.depth = lidar_depth_maps(pts, frame.K, T, *frame.image_size, max_depth=self.cfg.gt_depth_max)
            elif self.cfg.gt_depth_source != "lidar" and any(c in seq.stereo_partners for c in seq.cameras):
                gt.depth = self._stereo_depth(seq, i, frame.image_size)
            if labels is None and gt.depth is None:
                gt = None
        return Sample(frame=frame, context=context, gt=gt, sample_id=f"{seq.name}/{i:06d}")

    def _stereo_depth(self, seq: KittiSequence, i: int, image_size: tuple[int, int]) -> torch.Tensor:
        """``[N, H, W]`` stereo depth of frame i per camera (0 = none), at ``image_size``."""
        cfg = self.cfg
        scfg = StereoConfig(disparity_offset=cfg.stereo_disparity_offset)
        maps = []
        for c in seq.cameras:
            depth = np.zeros(image_size, np.float32)
            if c in seq.stereo_partners:
                right, baseline = seq.stereo_partners[c]
                if right[i].is_file():
                    K = seq.K[c]
                    full = cached_stereo_depth(seq.image_paths[c][i], right[i], float(K[0, 0]), baseline, float(K[1, 2]),
                                               scfg, cfg.stereo_cache_dir or None)
                    full[full >= cfg.gt_depth_max] = 0.0
                    depth = resize_depth_nearest(full, *image_size)
            maps.append(torch.from_numpy(np.ascontiguousarray(depth)))
        return torch.stack(maps)

    def labelled_indices(self) -> list[int]:
        """Dataset indices whose frame has SemanticKITTI voxel labels (every 5th frame in the
        official release), e.g. ``Subset(ds, ds.labelled_indices())`` for evaluation."""
        return [k for k, (seq, i, _) in enumerate(self.items) if seq.voxel_label_paths and seq.voxel_label_paths[i] is not None]


def _odometry_root(path: Path) -> Path:
    for cand in (path, path / "dataset"):
        if (cand / "sequences").is_dir():
            return cand
    if path.parent.name == "sequences":
        return path.parent.parent
    raise FileNotFoundError(f"KITTI odometry: no 'sequences' folder at {path} or {path / 'dataset'}")


class KittiOdometryDataset(_KittiDataset):
    """KITTI odometry sequences (see module docstring).

    path: the folder holding ``sequences/`` and ``poses/`` (or its parent, or one sequence
    folder). split: "train"/"val"/"test" by SemanticKITTI (sequences present on disk only) or
    "all" (every sequence on disk), overridden by `cfg.scenes` (e.g. ["00"]). A root holding a
    single sequence (one recorded drive) serves it for every split: per-sequence training is
    evaluated on the drive itself. cfg.cameras: "image_0".."image_3"; empty = "image_2" if
    present, else "image_0" (monocular, like SelfOcc on SemanticKITTI).
    """

    def __init__(self, path: str | Path, cfg: DataConfig, split: str = "train"):
        path = Path(path)
        root = _odometry_root(path)
        if path.parent.name == "sequences" and not cfg.scenes:
            names = [path.name]
        elif cfg.scenes:
            names = list(cfg.scenes)
        else:
            if split not in ODOMETRY_SPLITS and split != "all":
                raise ValueError(f"KITTI odometry: unknown split '{split}' (use one of {sorted(ODOMETRY_SPLITS) + ['all']})")
            on_disk = sorted(p.name for p in (root / "sequences").iterdir() if p.is_dir())
            if split == "all" or len(on_disk) == 1:
                names = on_disk
            else:
                names = [s for s in ODOMETRY_SPLITS[split] if s in on_disk]
            if not names:
                raise FileNotFoundError(
                    f"KITTI odometry: none of the {split} sequences {ODOMETRY_SPLITS[split]} under {root / 'sequences'} "
                    f"(on disk: {on_disk}); choose sequences with data.scenes, split 'all', or pass one sequence folder")
        super().__init__([self._load_sequence(root, n, cfg) for n in names], cfg)

    @staticmethod
    def _load_sequence(root: Path, name: str, cfg: DataConfig) -> KittiSequence:
        seq_dir = root / "sequences" / name
        if not seq_dir.is_dir():
            raise FileNotFoundError(f"KITTI odometry: sequence folder not found: {seq_dir}")
        calib_path = seq_dir / "calib.txt"
        calib = read_calib_file(calib_path)
        cameras = list(cfg.cameras) or (["image_2"] if (seq_dir / "image_2").is_dir() else ["image_0"])
        if "Tr" in calib:
            T_cam0_velo = _h(_field(calib, "Tr", 12, calib_path))
            T_ego_cam0 = invert_transform(T_cam0_velo)
        else:
            T_ego_cam0 = T_FLU_OPTICAL.copy()
        K, T_ego_cam, t_cam = {}, {}, {}
        for c in cameras:
            if not (c.startswith("image_") and c[6:].isdigit()):
                raise ValueError(f"KITTI odometry: camera '{c}' is not one of image_0..image_3")
            if f"P{c[6:]}" not in calib:
                raise ValueError(f"KITTI odometry: camera '{c}' has no field 'P{c[6:]}' in {calib_path}")
            Kc, T_camk_cam0 = split_projection(_field(calib, f"P{c[6:]}", 12, calib_path))
            K[c] = Kc
            T_ego_cam[c] = T_ego_cam0 @ invert_transform(T_camk_cam0)
            t_cam[c] = T_camk_cam0[:3, 3]
        times_path = seq_dir / "times.txt"
        ts = read_times(times_path)
        poses_path = root / "poses" / f"{name}.txt"
        T_world_cam0 = read_poses(poses_path)
        if len(T_world_cam0) != len(ts):
            raise ValueError(f"KITTI odometry: {poses_path} has {len(T_world_cam0)} poses but {times_path} has {len(ts)} timestamps")
        # Poses are camera-0 poses in the first camera-0 frame; re-express as ego poses in the
        # first ego frame: T_world_ego = T_ego_cam0 @ T_cam0first_cam0 @ T_cam0_ego.
        T_world_ego = T_ego_cam0 @ T_world_cam0 @ invert_transform(T_ego_cam0)
        paths = {c: [seq_dir / c / f"{i:06d}.png" for i in range(len(ts))] for c in cameras}
        velo = seq_dir / "velodyne"
        lidar = [velo / f"{i:06d}.bin" if (velo / f"{i:06d}.bin").is_file() else None for i in range(len(ts))]
        vox = seq_dir / "voxels"
        labels = [vox / f"{i:06d}.label" if (vox / f"{i:06d}.label").is_file() else None for i in range(len(ts))]
        partners = {}
        for left, right in (("image_0", "image_1"), ("image_2", "image_3")):
            if left in cameras and (seq_dir / right).is_dir() and f"P{right[6:]}" in calib:
                _, T_r = split_projection(_field(calib, f"P{right[6:]}", 12, calib_path))
                partners[left] = ([seq_dir / right / f"{i:06d}.png" for i in range(len(ts))],
                                  _stereo_baseline(t_cam[left], T_r[:3, 3], calib_path))
        return KittiSequence(name, cameras, paths, K, T_ego_cam, T_world_ego, ts, lidar, labels, partners)


def _stereo_baseline(t_left: np.ndarray, t_right: np.ndarray, where: Path) -> float:
    """Metres from a rectified left camera to its partner on the right, from their offsets
    ``t_k`` (``P_k = K [I | t_k]``: x_camk = x_cam0 + t_k, so the partner's centre is further +x)."""
    b = float(t_left[0] - t_right[0])
    if not b > 0:
        raise ValueError(f"{where}: stereo partner is not to the right of the left camera (baseline {b:.4f} m)")
    return b


def oxts_poses(oxts: np.ndarray) -> np.ndarray:
    """OXTS rows ``[T, >=6]`` (lat, lon, alt, roll, pitch, yaw) -> IMU poses ``[T, 4, 4]``.

    The KITTI devkit's convention: Mercator with the scale of the first latitude, then
    ``R = Rz(yaw) Ry(pitch) Rx(roll)``, relative to nothing (absolute metres).
    """
    er = 6378137.0
    scale = np.cos(oxts[0, 0] * np.pi / 180.0)
    out = []
    for lat, lon, alt, roll, pitch, yaw in oxts[:, :6]:
        tx = scale * lon * np.pi * er / 180.0
        ty = scale * er * np.log(np.tan((90.0 + lat) * np.pi / 360.0))
        cr, sr, cp, sp, cy, sy = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
        Rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
        Ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
        Rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
        T = np.eye(4)
        T[:3, :3] = Rz @ Ry @ Rx
        T[:3, 3] = [tx, ty, alt]
        out.append(T)
    return np.stack(out)


def _rt(calib: dict, path: Path) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = _field(calib, "R", 9, path).reshape(3, 3)
    T[:3, 3] = _field(calib, "T", 3, path)
    return T


class KittiRawDataset(_KittiDataset):
    """KITTI raw synced+rectified drives (see module docstring).

    path: the root holding ``<date>/`` folders, one date folder, or one drive folder.
    cfg.scenes: drive names (``2011_09_26_drive_0001_sync``); empty = all drives found.
    cfg.cameras: "image_00".."image_03"; empty = "image_02".
    """

    def __init__(self, path: str | Path, cfg: DataConfig, split: str = "train"):
        path = Path(path)
        if (path / "oxts").is_dir():
            drives = [path]
        else:
            drives = sorted(p for p in path.glob("*_drive_*_sync") if p.is_dir())
            drives += sorted(p for p in path.glob("*/*_drive_*_sync") if p.is_dir())
        if cfg.scenes:
            drives = [d for d in drives if d.name in cfg.scenes]
            missing = set(cfg.scenes) - {d.name for d in drives}
            if missing:
                raise FileNotFoundError(f"KITTI raw: drives {sorted(missing)} not found under {path}")
        if not drives:
            raise FileNotFoundError(f"KITTI raw: no <date>_drive_NNNN_sync folder with oxts/ under {path}")
        super().__init__([self._load_drive(d, cfg) for d in drives], cfg)

    @staticmethod
    def _load_drive(drive: Path, cfg: DataConfig) -> KittiSequence:
        date_dir = drive.parent
        c2c_path = date_dir / "calib_cam_to_cam.txt"
        v2c_path = date_dir / "calib_velo_to_cam.txt"
        i2v_path = date_dir / "calib_imu_to_velo.txt"
        c2c = read_calib_file(c2c_path)
        T_cam0_velo = _rt(read_calib_file(v2c_path), v2c_path)
        T_velo_imu = _rt(read_calib_file(i2v_path), i2v_path)
        R_rect = np.eye(4)
        R_rect[:3, :3] = _field(c2c, "R_rect_00", 9, c2c_path).reshape(3, 3)
        T_rect0_velo = R_rect @ T_cam0_velo
        cameras = list(cfg.cameras) or ["image_02"]
        K, T_ego_cam, paths, t_rect = {}, {}, {}, {}
        ts = None
        for c in cameras:
            if not (c.startswith("image_0") and c[7:].isdigit()):
                raise ValueError(f"KITTI raw: camera '{c}' is not one of image_00..image_03")
            if f"P_rect_0{c[7:]}" not in c2c:
                raise ValueError(f"KITTI raw: camera '{c}' has no field 'P_rect_0{c[7:]}' in {c2c_path}")
            Kc, T_camk_rect0 = split_projection(_field(c2c, f"P_rect_0{c[7:]}", 12, c2c_path))
            K[c] = Kc
            t_rect[c] = T_camk_rect0[:3, 3]
            T_ego_cam[c] = invert_transform(T_camk_rect0 @ T_rect0_velo)
            files = sorted((drive / c / "data").glob("*.png"))
            if not files:
                raise FileNotFoundError(f"KITTI raw: no images in {drive / c / 'data'}")
            paths[c] = files
            if ts is None:
                ts = read_times(drive / c / "timestamps.txt")
            if len(files) != len(ts):
                raise ValueError(f"KITTI raw: {len(files)} images in {drive / c / 'data'} but {len(ts)} timestamps in {drive / cameras[0] / 'timestamps.txt'}")
        oxts_files = sorted((drive / "oxts" / "data").glob("*.txt"))
        if len(oxts_files) != len(ts):
            raise ValueError(f"KITTI raw: {len(oxts_files)} OXTS files in {drive / 'oxts' / 'data'} for {len(ts)} frames")
        rows = []
        for f in oxts_files:
            try:
                vals = np.array([float(x) for x in f.read_text().split()])
            except ValueError as e:
                raise ValueError(f"{f}: not numeric: {e}") from e
            if vals.size < 6 or not np.all(np.isfinite(vals[:6])):
                raise ValueError(f"{f}: need finite lat, lon, alt, roll, pitch, yaw (got {vals[:6]})")
            rows.append(vals[:6])
        T_w_imu = oxts_poses(np.stack(rows))
        T_w_velo = T_w_imu @ invert_transform(T_velo_imu)
        T_world_ego = invert_transform(T_w_velo[0]) @ T_w_velo
        velo = drive / "velodyne_points" / "data"
        lidar = [velo / (p.stem + ".bin") if (velo / (p.stem + ".bin")).is_file() else None for p in paths[cameras[0]]]
        partners = {}
        for left, right in (("image_00", "image_01"), ("image_02", "image_03")):
            if left in cameras and (drive / right / "data").is_dir() and f"P_rect_0{right[7:]}" in c2c:
                _, T_r = split_projection(_field(c2c, f"P_rect_0{right[7:]}", 12, c2c_path))
                partners[left] = ([drive / right / "data" / p.name for p in paths[left]],
                                  _stereo_baseline(t_rect[left], T_r[:3, 3], c2c_path))
        return KittiSequence(drive.name, cameras, paths, K, T_ego_cam, T_world_ego, ts, lidar, [], partners)
