"""Tiny hand-made samples and a micro experiment config for the training tests (fast on CPU)."""

from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset

from selfocc_core.data.sample import Frame, GroundTruth, Sample
from selfocc_core.geometry.transforms import T_FLU_OPTICAL
from selfocc_core.geometry.voxel_grid import VoxelGridSpec
from selfocc_core.training.config import load_experiment_config

H, W = 32, 48
MICRO_OVERRIDES = [
    "model.tpv_h=8", "model.tpv_w=8", "model.tpv_z=2", "model.embed_dim=16", "model.num_heads=2",
    "model.fpn_channels=16", "model.ffn_dim=16", "model.mlp_hidden=[16]", "model.num_samples=8",
    "model.scene={x_min: -12.8, x_max: 12.8, y_min: -12.8, y_max: 12.8, z_min: -1.6, z_max: 3.2, voxel_size: 1.6}",
    "data.image_height=32", "data.image_width=48", "data.cameras=[CAM_FRONT]",
    "loss.eikonal_points=64", "loss.hessian_points=32", "loss.sparsity_weight=0.01", "loss.sparsity_points=64",
    "loss.smoothness_weight=0.01",
    "train.num_workers=0", "train.log_interval=1", "train.image_log_interval=0", "train.eval_interval=0",
    "train.checkpoint_interval=2", "train.steps=4", "optim.warmup_steps=1",
]


def micro_config(*extra: str):
    return load_experiment_config("tiny_synth", MICRO_OVERRIDES + list(extra))


def _image(phase: float) -> torch.Tensor:
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    r = 0.5 + 0.4 * torch.sin(0.3 * u + phase)
    g = 0.5 + 0.4 * torch.cos(0.25 * v - 0.5 * phase)
    b = 0.5 + 0.3 * torch.sin(0.2 * (u + v) + phase)
    return torch.stack([r, g, b])[None]  # [1, 3, H, W]


def make_frame(i: int, seg: bool = False, x: float | None = None) -> Frame:
    """Frame i of a 1-camera drive at ``x`` metres along the road (default: 1 m per frame)."""
    K = torch.tensor([[30.0, 0.0, (W - 1) / 2], [0.0, 30.0, (H - 1) / 2], [0.0, 0.0, 1.0]])[None]
    T_ego_cam = torch.tensor(T_FLU_OPTICAL, dtype=torch.float32)
    T_ego_cam[:3, 3] = torch.tensor([1.0, 0.0, 1.5])
    T_world_ego = torch.eye(4)
    T_world_ego[0, 3] = 1.0 * i if x is None else x
    seg_labels = None
    if seg:
        seg_labels = torch.full((1, H, W), 255, dtype=torch.long)
        seg_labels[:, H // 2:] = 3
    return Frame(images=_image(0.7 * i), K=K, T_ego_cam=T_ego_cam[None], T_world_ego=T_world_ego,
                 timestamp=0.1 * i, camera_names=["CAM_FRONT"], seg_labels=seg_labels)


class FakeDataset(Dataset):
    """``n`` samples of a 1-camera drive with context -1/+1 and (optionally) ground truth."""

    def __init__(self, n: int = 6, with_gt: bool = True, seg: bool = False):
        self.n, self.with_gt, self.seg = n, with_gt, seg

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        gt = None
        if self.with_gt:
            grid = VoxelGridSpec(-12.8, 12.8, -12.8, 12.8, -1.6, 3.2, 1.6)
            sem = torch.full(grid.shape, 17, dtype=torch.uint8)
            sem[:, :, 0] = 11  # ground layer
            depth = torch.full((1, H, W), 0.0)
            depth[:, H // 2 + 2:] = 6.0
            gt = GroundTruth(grid=grid, occ_semantics=sem, occ_mask_camera=torch.ones(grid.shape, dtype=torch.bool),
                             depth=depth)
        return Sample(frame=make_frame(10 + i, self.seg),
                      context={-1: make_frame(9 + i, self.seg), 1: make_frame(11 + i, self.seg)},
                      gt=gt, sample_id=f"fake-{i}")
