"""nuScenes via the official devkit: keyframes as inputs, camera sweeps as context.

Inputs are the keyframes (``sample`` records) of the chosen scenes. Context frames come
from the sweeps (all ``sample_data`` of the timing camera, CAM_FRONT by default, keyframes and
non-key frames alike), chosen by ego distance (`context.choose_context`); every other camera
contributes the sample_data nearest in time to the chosen timing-camera one.

Frames (sample.py): each camera's own ego pose is folded into its extrinsics,

    T_ego_cam = inv(T_world_egoref) @ T_world_ego_cam @ T_ego_cam_calibrated,

with ``egoref`` = the LIDAR_TOP ego pose for a keyframe (the frame of Occ3D ground truth and of
the LiDAR depth), and the timing camera's ego pose for a context frame (no LiDAR at sweep time).

Ground truth (``cfg.load_gt``): Occ3D-nuScenes ``<dataroot>/gts/<scene_name>/<sample_token>/
labels.npz`` (``semantics`` uint8 [200, 200, 16], ``mask_camera``, ``mask_lidar``) when the file
exists, and sparse depth from the keyframe's LIDAR_TOP scan.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from selfocc_core.data.config import DataConfig
from selfocc_core.data.context import choose_context
from selfocc_core.data.images import load_resized
from selfocc_core.data.lidar_depth import lidar_depth_maps
from selfocc_core.data.nuscenes_infos import NUSCENES_CAMERAS, load_lidar_bin
from selfocc_core.data.sample import Frame, GroundTruth, Sample
from selfocc_core.geometry.transforms import invert_transform, make_transform
from selfocc_core.geometry.voxel_grid import OCC3D_NUSCENES

log = logging.getLogger(__name__)

LIDAR = "LIDAR_TOP"


def find_version(dataroot: Path) -> str:
    """The single ``v1.0-*`` table folder in a nuScenes dataroot."""
    versions = sorted(p.name for p in dataroot.glob("v1.0-*") if p.is_dir())
    if not versions:
        raise FileNotFoundError(f"nuScenes: no v1.0-* table folder in {dataroot}")
    if len(versions) > 1:
        raise ValueError(f"nuScenes: several versions in {dataroot} ({versions}); set DataConfig.nuscenes_version")
    return versions[0]


def _split_scenes(version: str, split: str) -> list[str] | None:
    """Official scene names of a split, or None if the split is unknown."""
    from nuscenes.utils.splits import create_splits_scenes

    table = create_splits_scenes(verbose=False)
    key = f"mini_{split}" if version.endswith("mini") and split in ("train", "val") else split
    return table.get(key)


def load_occ3d(path: Path) -> GroundTruth:
    """Occ3D ``labels.npz`` -> GroundTruth with semantics and masks on `OCC3D_NUSCENES`."""
    try:
        z = np.load(path)
    except Exception as e:  # noqa: BLE001 - corrupt archive
        raise ValueError(f"{path}: not a readable npz: {e}") from e
    with z:
        out = {}
        for key in ("semantics", "mask_camera", "mask_lidar"):
            if key not in z.files:
                raise ValueError(f"{path}: missing array '{key}' (have {z.files})")
            a = z[key]
            if a.shape != OCC3D_NUSCENES.shape:
                raise ValueError(f"{path}: '{key}' has shape {a.shape}, expected {OCC3D_NUSCENES.shape}")
            out[key] = a
    return GroundTruth(
        grid=OCC3D_NUSCENES,
        occ_semantics=torch.from_numpy(out["semantics"].astype(np.uint8)),
        occ_mask_camera=torch.from_numpy(out["mask_camera"].astype(bool)),
        occ_mask_lidar=torch.from_numpy(out["mask_lidar"].astype(bool)),
    )


class NuScenesDataset(Dataset):
    """nuScenes keyframes with sweep context (see module docstring).

    dataroot: folder with ``v1.0-*/``, ``samples/``, ``sweeps/`` (and optionally ``gts/``).
    split: "train" / "val" / "test" (mini versions map train/val to mini_train/mini_val);
    `cfg.scenes` overrides it. A dataroot none of whose scenes is in any official split
    (e.g. a synthetic export) uses all its scenes for every split.
    """

    def __init__(self, dataroot: str | Path, cfg: DataConfig, split: str = "train", nusc=None):
        from nuscenes.nuscenes import NuScenes

        self.dataroot = Path(dataroot)
        self.cfg = cfg
        if nusc is None:
            if not self.dataroot.is_dir():
                raise FileNotFoundError(f"nuScenes dataroot not found: {self.dataroot}")
            version = cfg.nuscenes_version or find_version(self.dataroot)
            if not (self.dataroot / version).is_dir():
                raise FileNotFoundError(f"nuScenes: table folder {self.dataroot / version} not found")
            nusc = NuScenes(version=version, dataroot=str(self.dataroot), verbose=False)
        self.nusc = nusc
        self.version = nusc.version
        channels = {s["channel"] for s in nusc.sensor}
        cams = {s["channel"] for s in nusc.sensor if s["modality"] == "camera"}
        # all cameras: the standard six in their usual order, then any others by name
        self.cameras = list(cfg.cameras) or [c for c in NUSCENES_CAMERAS if c in cams] + sorted(cams - set(NUSCENES_CAMERAS))
        if not self.cameras:
            raise ValueError(f"nuScenes {self.dataroot / self.version}/sensor.json: no camera sensors")
        for c in self.cameras:
            if c not in channels:
                raise ValueError(f"nuScenes {self.dataroot / self.version}/sensor.json: camera '{c}' not in {sorted(channels)}")
        self.timing_camera = "CAM_FRONT" if "CAM_FRONT" in self.cameras else self.cameras[0]

        scenes = {s["name"]: s for s in nusc.scene}
        if cfg.scenes:
            missing = [n for n in cfg.scenes if n not in scenes]
            if missing:
                raise ValueError(f"nuScenes {self.version}: scenes {missing} not in scene.json")
            names = list(cfg.scenes)
        else:
            official = _split_scenes(self.version, split)
            if official is None:
                raise ValueError(f"nuScenes: unknown split '{split}'")
            names = [n for n in scenes if n in set(official)]
            if not names:
                from nuscenes.utils.splits import create_splits_scenes

                known = {n for v in create_splits_scenes(verbose=False).values() for n in v}
                if not any(n in known for n in scenes):
                    log.warning("nuScenes %s: no official scene names; using all %d scenes for split '%s'",
                                self.dataroot, len(scenes), split)
                    names = sorted(scenes)
        self._chains: list[list[dict]] = []  # per scene and sensor: sample_data in time order
        self._chain_of: dict[str, int] = {}  # sample_data token -> index into _chains
        self.items: list[tuple[str, str, dict[int, str]]] = []  # (scene name, sample token, {offset: timing sd token})
        for name in names:
            self._index_scene(scenes[name])

    # ---- indexing -----------------------------------------------------------------------
    def _chain(self, sd_token: str) -> list[dict]:
        """All sample_data of one sensor in the scene of ``sd_token``, time-ordered (cached)."""
        if sd_token in self._chain_of:
            return self._chains[self._chain_of[sd_token]]
        nusc = self.nusc
        sd = nusc.get("sample_data", sd_token)
        while sd["prev"]:
            sd = nusc.get("sample_data", sd["prev"])
        chain = [sd]
        while sd["next"]:
            sd = nusc.get("sample_data", sd["next"])
            chain.append(sd)
        self._chains.append(chain)
        for rec in chain:
            self._chain_of[rec["token"]] = len(self._chains) - 1
        return chain

    def _index_scene(self, scene: dict) -> None:
        nusc, cfg = self.nusc, self.cfg
        samples = []
        token = scene["first_sample_token"]
        while token:
            s = nusc.get("sample", token)
            samples.append(s)
            token = s["next"]
        if not samples:
            return
        for s in samples:
            for c in self.cameras:
                if c not in s["data"]:
                    raise ValueError(f"nuScenes {self.version}: sample {s['token']} of {scene['name']} has no {c} data")
        chain = self._chain(samples[0]["data"][self.timing_camera])
        pos = np.array([nusc.get("ego_pose", sd["ego_pose_token"])["translation"] for sd in chain], dtype=np.float64)
        ts = np.array([sd["timestamp"] for sd in chain], dtype=np.float64) * 1e-6
        where = {sd["token"]: i for i, sd in enumerate(chain)}
        for s in samples:
            i = where[s["data"][self.timing_camera]]
            ctx = choose_context(pos, ts, i, cfg.context_offsets, cfg.min_ego_distance, cfg.max_ego_distance, cfg.max_context_time)
            if cfg.require_context and len(ctx) != len(cfg.context_offsets):
                continue
            self.items.append((scene["name"], s["token"], {o: chain[j]["token"] for o, j in ctx.items()}))

    def __len__(self) -> int:
        return len(self.items)

    # ---- loading ------------------------------------------------------------------------
    def _T_world_ego(self, sd: dict) -> np.ndarray:
        pose = self.nusc.get("ego_pose", sd["ego_pose_token"])
        try:
            return make_transform(pose["rotation"], pose["translation"])
        except ValueError as e:
            raise ValueError(f"nuScenes ego_pose.json: record {pose['token']}: {e}") from e

    def _T_ego_sensor(self, sd: dict) -> tuple[np.ndarray, dict]:
        cs = self.nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        try:
            return make_transform(cs["rotation"], cs["translation"]), cs
        except ValueError as e:
            raise ValueError(f"nuScenes calibrated_sensor.json: record {cs['token']}: {e}") from e

    @staticmethod
    def _nearest(chain: list[dict], t: int) -> dict:
        ts = np.array([sd["timestamp"] for sd in chain])
        return chain[int(np.argmin(np.abs(ts - t)))]

    def _frame(self, sds: dict[str, dict], ref_sd: dict) -> Frame:
        cfg = self.cfg
        T_world_ref = self._T_world_ego(ref_sd)
        T_ref_world = invert_transform(T_world_ref)
        imgs, Ks, Ts = [], [], []
        for c in self.cameras:
            sd = sds[c]
            T_ego_cam, cs = self._T_ego_sensor(sd)
            K = np.asarray(cs.get("camera_intrinsic") or [], dtype=np.float64)
            if K.shape != (3, 3) or not np.all(np.isfinite(K)):
                raise ValueError(f"nuScenes calibrated_sensor.json: record {cs['token']} ({c}): camera_intrinsic must be a finite 3x3, got {K.tolist()}")
            img, K_new = load_resized(self.dataroot / sd["filename"], K, cfg.image_height, cfg.image_width)
            imgs.append(img)
            Ks.append(K_new)
            Ts.append(T_ref_world @ self._T_world_ego(sd) @ T_ego_cam)
        return Frame(
            images=torch.stack(imgs), K=torch.stack(Ks),
            T_ego_cam=torch.as_tensor(np.stack(Ts), dtype=torch.float32),
            T_world_ego=torch.as_tensor(T_world_ref, dtype=torch.float32),
            timestamp=ref_sd["timestamp"] * 1e-6,
            camera_names=list(self.cameras),
        )

    def __getitem__(self, index: int) -> Sample:
        nusc, cfg = self.nusc, self.cfg
        scene_name, sample_token, ctx = self.items[index]
        sample = nusc.get("sample", sample_token)
        sds = {c: nusc.get("sample_data", sample["data"][c]) for c in self.cameras}
        lidar_sd = nusc.get("sample_data", sample["data"][LIDAR]) if LIDAR in sample["data"] else None
        frame = self._frame(sds, lidar_sd or sds[self.timing_camera])

        context = {}
        for o, ref_token in ctx.items():
            ref = nusc.get("sample_data", ref_token)
            csds = {self.timing_camera: ref}
            for c in self.cameras:
                if c != self.timing_camera:
                    csds[c] = self._nearest(self._chain(sds[c]["token"]), ref["timestamp"])
            context[o] = self._frame(csds, ref)

        gt = None
        if cfg.load_gt:
            occ_path = self.dataroot / "gts" / scene_name / sample_token / "labels.npz"
            gt = load_occ3d(occ_path) if occ_path.is_file() else GroundTruth()
            if lidar_sd is not None:
                T_ego_lidar, _ = self._T_ego_sensor(lidar_sd)
                pts = load_lidar_bin(self.dataroot / lidar_sd["filename"])
                pts_ego = pts @ T_ego_lidar[:3, :3].T + T_ego_lidar[:3, 3]
                gt.depth = lidar_depth_maps(
                    torch.from_numpy(pts_ego), frame.K, frame.T_ego_cam.double(),
                    *frame.image_size, max_depth=cfg.gt_depth_max,
                )
        return Sample(frame=frame, context=context, gt=gt, sample_id=sample_token)
