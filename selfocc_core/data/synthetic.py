"""Native dataset over the procedural synthetic world (selfocc_core/synth).

Each item is a `Sample` for frame i of one generated drive: the input frame, its temporal
context (offsets in `context_offsets`, chosen by ego distance as for recorded data:
`data.context.choose_context` with `min_ego_distance`; at the ends only the available
neighbours; a standing ego falls back to the nearest frame, whose zero baseline the trainer
then skips) and, with `with_gt`, exact ground truth (occupancy on the rig's grid
with camera/LiDAR visibility masks, z-depth and per-pixel classes).

Frames are rendered once and kept in memory; with `cache_dir` they are also stored as
``<cache_dir>/<key>/frame_NNNNN.npz`` (written atomically; the key hashes every setting that
changes the pixels), so a second process or run does not re-render.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from selfocc_core.data.context import context_for_sequence
from selfocc_core.data.sample import Frame, GroundTruth, Sample
from selfocc_core.io_utils import atomic_write_bytes
from selfocc_core.synth.rigs import RIG_NAMES
from selfocc_core.synth.sequence import SyntheticSequence
from selfocc_core.synth.world import EGO_MOTIONS

_CACHE_VERSION = 3  # bump when the world generator, renderer or ground truth output changes (3: ray-cast camera mask)


@dataclass(frozen=True)
class SyntheticConfig:
    """Settings of a synthetic drive and how it is presented as a dataset."""

    seed: int = 0
    """World seed: the same seed gives the same street, traffic and textures; use held-out
    seeds for evaluation."""

    num_frames: int = 24
    """Frames in the drive (at `frame_rate_hz`)."""

    rig: str = "nuscenes"
    """Camera rig: 'nuscenes' (6 surround cameras, Occ3D grid) or 'kitti' (image_2, SemanticKITTI grid)."""

    cameras: list[str] = field(default_factory=list)
    """Camera names to render, in this order; empty = all cameras of the rig."""

    image_height: int = 96
    """Rendered image height in pixels (intrinsics are scaled from the native size)."""

    image_width: int = 176
    """Rendered image width in pixels."""

    speed_mps: float = 10.0
    """Ego speed along the street (m/s); with ego_motion 'slow_stop' the speed before braking."""

    ego_motion: str = "constant"
    """'constant': steady speed; 'slow_stop': the ego brakes from `speed_mps` to a stop in a
    queue (cruise the first 25 % of the drive, stopped from 65 %) while the car ahead and the
    traffic beside keep moving (synth.world.generate_world). Try speed 3, 48 frames."""

    frame_rate_hz: float = 12.0
    """Frames per second of the drive."""

    context_offsets: list[int] = field(default_factory=lambda: [-1, 1, -2, 2])
    """Temporal context offsets attached to each sample where the neighbour exists."""

    min_ego_distance: float = 0.3
    """Metres the ego must have moved for a frame to serve as context (DataConfig.min_ego_distance);
    at 10 m/s and 12 Hz every adjacent frame qualifies (0.83 m)."""

    max_ego_distance: float = 10.0
    """Metres beyond which a frame is too far away to serve as context."""

    max_context_time: float = 1.0
    """Seconds: frames further from the input frame in time are not used as context."""

    require_context: bool = False
    """Only yield frames for which every offset in `context_offsets` exists (drops the ends)."""

    with_gt: bool = True
    """Attach ground truth (occupancy + masks, depth, 2D semantics). Evaluation only."""

    seg_labels_from_gt: bool = False
    """Oracle: put the rendered classes into Frame.seg_labels (stand-in for a 2D segmentor)."""

    cache_dir: Optional[str] = None
    """Folder for rendered frames as .npz (optional); None = memory only."""

    def __post_init__(self):
        if self.rig not in RIG_NAMES:
            raise ValueError(f"SyntheticConfig.rig: unknown rig '{self.rig}'; valid: {list(RIG_NAMES)}")
        if self.num_frames <= 0:
            raise ValueError(f"SyntheticConfig.num_frames must be positive, got {self.num_frames}")
        if self.image_height <= 0 or self.image_width <= 0:
            raise ValueError(f"SyntheticConfig: image size must be positive, got {self.image_height}x{self.image_width}")
        if self.frame_rate_hz <= 0 or self.speed_mps < 0:
            raise ValueError(f"SyntheticConfig: need frame_rate_hz > 0 and speed_mps >= 0, got {self.frame_rate_hz}, {self.speed_mps}")
        if 0 in self.context_offsets:
            raise ValueError("SyntheticConfig.context_offsets must not contain 0 (the input frame itself)")
        if self.ego_motion not in EGO_MOTIONS:
            raise ValueError(f"SyntheticConfig.ego_motion: unknown '{self.ego_motion}'; valid: {list(EGO_MOTIONS)}")
        if not 0 <= self.min_ego_distance < self.max_ego_distance or self.max_context_time <= 0:
            raise ValueError(f"SyntheticConfig: need 0 <= min_ego_distance < max_ego_distance and max_context_time > 0, "
                             f"got {self.min_ego_distance}, {self.max_ego_distance}, {self.max_context_time}")


class SyntheticDataset(Dataset):
    """`Sample`s of one synthetic drive (see module docstring)."""

    def __init__(self, cfg: SyntheticConfig):
        self.cfg = cfg
        self.seq = SyntheticSequence(cfg.seed, cfg.num_frames, cfg.rig, cfg.cameras or None, cfg.speed_mps,
                                     cfg.frame_rate_hz, ego_motion=cfg.ego_motion)
        self.camera_names = self.seq.rig.camera_names
        self.K = self.seq.intrinsics(cfg.image_height, cfg.image_width)
        self.T_ego_cam = self.seq.T_ego_cam()
        self.grid = self.seq.rig.grid
        self._frames: dict[int, dict] = {}
        self._gt: dict[int, dict] = {}
        T = cfg.num_frames
        table = context_for_sequence(
            np.stack([self.seq.T_world_ego(i)[:3, 3] for i in range(T)]), [self.seq.time(i) for i in range(T)],
            cfg.context_offsets, cfg.min_ego_distance, cfg.max_ego_distance, cfg.max_context_time,
            require_all=cfg.require_context)
        self.indices = [i for i, _ in table]
        self.context_index = dict(table)  # frame -> {offset: frame}
        if not self.indices:
            raise ValueError(
                f"SyntheticConfig: num_frames={cfg.num_frames} leaves no frame with all context offsets {cfg.context_offsets}"
            )
        self._cache = None
        if cfg.cache_dir:
            key = dict(asdict(cfg), version=_CACHE_VERSION)
            for k in ("context_offsets", "require_context", "with_gt", "seg_labels_from_gt", "cache_dir",
                      "min_ego_distance", "max_ego_distance", "max_context_time"):
                key.pop(k)
            if key["ego_motion"] == "constant":
                key.pop("ego_motion")  # the key of the streets cached before it existed
            digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
            self._cache = Path(cfg.cache_dir) / f"synth_{cfg.rig}_s{cfg.seed}_{digest}"

    def __len__(self) -> int:
        return len(self.indices)

    # -- rendering with caches ------------------------------------------------------------
    def _load_npz(self, name: str) -> Optional[dict]:
        if self._cache is None:
            return None
        path = self._cache / name
        if not path.is_file():
            return None
        with np.load(path) as z:
            return {k: z[k] for k in z.files}

    def _save_npz(self, name: str, arrays: dict):
        if self._cache is None:
            return
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_write_bytes(self._cache / name, buf.getvalue())

    def rendered(self, i: int) -> dict:
        """numpy arrays of frame i: rgb uint8 [N,H,W,3], depth float32 [N,H,W], semantics uint8, instance int32."""
        if i not in self._frames:
            name = f"frame_{i:05d}.npz"
            arrays = self._load_npz(name)
            if arrays is None:
                out = self.seq.render(i, self.cfg.image_height, self.cfg.image_width)
                arrays = {
                    "rgb": (out.rgb.permute(0, 2, 3, 1) * 255.0 + 0.5).clamp(0, 255).to(torch.uint8).numpy(),
                    "depth": out.depth.numpy().astype(np.float32),
                    "semantics": out.semantics.numpy().astype(np.uint8),
                    "instance": out.instance.numpy().astype(np.int32),
                }
                self._save_npz(name, arrays)
            self._frames[i] = arrays
        return self._frames[i]

    def occupancy(self, i: int) -> dict:
        """numpy arrays of frame i: semantics uint8 [X,Y,Z], mask_camera bool, mask_lidar bool."""
        if i not in self._gt:
            name = f"occ_{i:05d}.npz"
            arrays = self._load_npz(name)
            if arrays is None:
                gt = self.seq.ground_truth(i)
                arrays = {"semantics": gt.semantics.numpy(), "mask_camera": gt.mask_camera.numpy(), "mask_lidar": gt.mask_lidar.numpy()}
                self._save_npz(name, arrays)
            self._gt[i] = arrays
        return self._gt[i]

    # -- samples --------------------------------------------------------------------------
    def frame(self, i: int) -> Frame:
        r = self.rendered(i)
        seg = torch.from_numpy(r["semantics"].astype(np.int64)) if self.cfg.seg_labels_from_gt else None
        return Frame(
            images=torch.from_numpy(r["rgb"]).permute(0, 3, 1, 2).float() / 255.0,
            K=self.K.clone(),
            T_ego_cam=self.T_ego_cam.clone(),
            T_world_ego=torch.tensor(self.seq.T_world_ego(i), dtype=torch.float32),
            timestamp=self.seq.time(i),
            camera_names=list(self.camera_names),
            seg_labels=seg,
        )

    def __getitem__(self, idx: int) -> Sample:
        if not -len(self) <= idx < len(self):
            raise IndexError(f"SyntheticDataset index {idx} out of range for {len(self)} samples")
        i = self.indices[idx]
        context = {o: self.frame(j) for o, j in sorted(self.context_index[i].items())}
        gt = None
        if self.cfg.with_gt:
            r = self.rendered(i)
            occ = self.occupancy(i)
            gt = GroundTruth(
                grid=self.grid,
                occ_semantics=torch.from_numpy(occ["semantics"].astype(np.uint8)),
                occ_mask_camera=torch.from_numpy(occ["mask_camera"].astype(bool)),
                occ_mask_lidar=torch.from_numpy(occ["mask_lidar"].astype(bool)),
                depth=torch.from_numpy(r["depth"].copy()),
                semantics_2d=torch.from_numpy(r["semantics"].astype(np.int64)),
            )
        return Sample(frame=self.frame(i), context=context, gt=gt, sample_id=f"synth-{self.cfg.rig}-s{self.cfg.seed}-{i:05d}")
