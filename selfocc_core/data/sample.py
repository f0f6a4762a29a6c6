"""The one sample schema every reader yields and every model/loss consumes.

Unbatched shapes are written below; after `collate_samples` every tensor gains a leading
batch dimension B (``images [B, N, 3, H, W]``, ``T_world_ego [B, 4, 4]``, ``timestamp [B]``).

Frames (see geometry/transforms.py): ``T_ego_cam`` maps the camera *optical* frame into the
frame's reference ego frame. Readers fold per-camera ego motion into it (nuScenes cameras
fire at different instants), so ``T_world_cam = T_world_ego @ T_ego_cam`` is exact for
every camera.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from selfocc_core.geometry.voxel_grid import VoxelGridSpec


@dataclass
class Frame:
    """One time step of an N-camera rig.

    images:       [N, 3, H, W] float32 RGB in [0, 1]
    K:            [N, 3, 3] intrinsics of `images` as stored (already resized/cropped)
    T_ego_cam:    [N, 4, 4] camera optical frame -> reference ego frame
    T_world_ego:  [4, 4] reference ego pose at `timestamp`
    timestamp:    float seconds (tensor [B] when batched)
    camera_names: N names, e.g. "CAM_FRONT"
    seg_labels:   optional [N, H, W] int64 pseudo-labels from a 2D segmentor (not ground truth;
                  255 = ignore). This is the only label a loss may see.
    """

    images: Tensor
    K: Tensor
    T_ego_cam: Tensor
    T_world_ego: Tensor
    timestamp: float | Tensor
    camera_names: list[str]
    seg_labels: Optional[Tensor] = None

    def __post_init__(self):
        self.validate()

    @property
    def num_cameras(self) -> int:
        return self.images.shape[-4]

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W)"""
        return tuple(self.images.shape[-2:])

    @property
    def T_world_cam(self) -> Tensor:
        """[(B,) N, 4, 4]"""
        return self.T_world_ego.unsqueeze(-3) @ self.T_ego_cam

    def validate(self) -> None:
        imgs = self.images
        if imgs.dim() not in (4, 5) or imgs.shape[-3] != 3:
            raise ValueError(f"Frame.images must be [(B,) N, 3, H, W], got {tuple(imgs.shape)}")
        lead = imgs.shape[:-3]
        if tuple(self.K.shape) != (*lead, 3, 3):
            raise ValueError(f"Frame.K must be {(*lead, 3, 3)}, got {tuple(self.K.shape)}")
        if tuple(self.T_ego_cam.shape) != (*lead, 4, 4):
            raise ValueError(f"Frame.T_ego_cam must be {(*lead, 4, 4)}, got {tuple(self.T_ego_cam.shape)}")
        if tuple(self.T_world_ego.shape) != (*lead[:-1], 4, 4):
            raise ValueError(f"Frame.T_world_ego must be {(*lead[:-1], 4, 4)}, got {tuple(self.T_world_ego.shape)}")
        if len(self.camera_names) != lead[-1]:
            raise ValueError(f"Frame.camera_names has {len(self.camera_names)} names for {lead[-1]} cameras")
        names = ("K", "T_ego_cam", "T_world_ego")
        tensors = [getattr(self, n) for n in names]
        if all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) for t in tensors):
            # in numpy: a few 4x4 matrices, and no torch call to hand the GIL over (the node's worker)
            finite = [bool(np.isfinite(t.detach().numpy()).all()) for t in tensors]
        else:  # one host sync for the three (a device -> host read each would stall a GPU three times)
            finite = torch.stack([torch.isfinite(t).all() for t in tensors]).tolist()
        if not all(finite):
            bad = [n for n, ok in zip(names, finite) if not ok]
            raise ValueError(f"Frame.{bad[0]} contains NaN or Inf")
        if self.seg_labels is not None and tuple(self.seg_labels.shape) != (*lead, *imgs.shape[-2:]):
            raise ValueError(f"Frame.seg_labels must be {(*lead, *imgs.shape[-2:])}, got {tuple(self.seg_labels.shape)}")

    def to(self, device, non_blocking: bool = False) -> "Frame":
        return _map_tensors(self, lambda t: t.to(device, non_blocking=non_blocking))


@dataclass
class GroundTruth:
    """Evaluation-only labels. Never passed to a loss (the trainer strips it; see Sample.without_gt).

    occ_semantics:   [X, Y, Z] uint8 class ids on `grid` in the reference ego frame (17 = free)
    occ_mask_camera: [X, Y, Z] bool, voxels observed by a camera
    occ_mask_lidar:  [X, Y, Z] bool, voxels observed by the LiDAR
    depth:           [N, H, W] float32 z-depth in metres for the frame's images, 0 = unknown
    semantics_2d:    [N, H, W] int64 class ids per pixel
    """

    grid: Optional[VoxelGridSpec] = None
    occ_semantics: Optional[Tensor] = None
    occ_mask_camera: Optional[Tensor] = None
    occ_mask_lidar: Optional[Tensor] = None
    depth: Optional[Tensor] = None
    semantics_2d: Optional[Tensor] = None

    def to(self, device, non_blocking: bool = False) -> "GroundTruth":
        return _map_tensors(self, lambda t: t.to(device, non_blocking=non_blocking))


@dataclass
class Sample:
    """A network input frame plus the temporal context the self-supervised losses need.

    frame:   the input frame (offset 0)
    context: adjacent frames keyed by integer offset (-1 = previous, +1 = next, +-2 ...),
             chosen by the reader (by ego distance where the dataset has sweeps)
    gt:      optional ground truth for evaluation only
    """

    frame: Frame
    context: dict[int, Frame] = field(default_factory=dict)
    gt: Optional[GroundTruth] = None
    sample_id: str = ""

    def without_gt(self) -> "Sample":
        return replace(self, gt=None)

    def to(self, device, non_blocking: bool = False) -> "Sample":
        return Sample(
            frame=self.frame.to(device, non_blocking),
            context={k: f.to(device, non_blocking) for k, f in self.context.items()},
            gt=None if self.gt is None else self.gt.to(device, non_blocking),
            sample_id=self.sample_id,
        )


def _map_tensors(obj, fn):
    kwargs = {}
    for f in fields(obj):
        v = getattr(obj, f.name)
        kwargs[f.name] = fn(v) if isinstance(v, Tensor) else v
    return type(obj)(**kwargs)


def _stack_dataclass(items: list, cls):
    kwargs = {}
    for f in fields(cls):
        vals = [getattr(it, f.name) for it in items]
        if all(v is None for v in vals):
            kwargs[f.name] = None
        elif isinstance(vals[0], Tensor):
            if any(v is None for v in vals):
                raise ValueError(f"cannot batch {cls.__name__}.{f.name}: present in some samples only")
            kwargs[f.name] = torch.stack(vals)
        elif f.name == "timestamp":
            kwargs[f.name] = torch.tensor([float(v) for v in vals], dtype=torch.float64)
        elif f.name == "camera_names":
            if any(v != vals[0] for v in vals):
                raise ValueError(f"cannot batch frames with different cameras: {vals}")
            kwargs[f.name] = list(vals[0])
        else:
            if any(v != vals[0] for v in vals):
                raise ValueError(f"cannot batch {cls.__name__}.{f.name}: values differ")
            kwargs[f.name] = vals[0]
    return cls(**kwargs)


def collate_samples(samples: list[Sample]) -> Sample:
    """Stack samples into one batched Sample (a `torch.utils.data.DataLoader` collate_fn).

    Only context offsets present in every sample are kept.
    """
    if not samples:
        raise ValueError("collate_samples: empty list")
    offsets = set(samples[0].context)
    for s in samples[1:]:
        offsets &= set(s.context)
    frame = _stack_dataclass([s.frame for s in samples], Frame)
    context = {k: _stack_dataclass([s.context[k] for s in samples], Frame) for k in sorted(offsets)}
    gts = [s.gt for s in samples]
    gt = None if any(g is None for g in gts) else _stack_dataclass(gts, GroundTruth)
    return Sample(frame=frame, context=context, gt=gt, sample_id=",".join(s.sample_id for s in samples))
