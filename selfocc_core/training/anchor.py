"""Anchor-frame sampling: which frame's cameras are rendered, and which frames are its sources.

The field always lives in the input frame's ego frame (``ego0``). The anchor is the input
frame (offset 0) or an adjacent frame (+-1); its cameras are expressed in ego0 as
``T_ego0_camA = inv(T_world_ego0) @ T_world_egoA @ T_egoA_camA``. The sources are the anchor's
temporal neighbours that the sample holds (anchor 0: -1 and +1; anchor +1: 0 and +2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from selfocc_core.data.sample import Frame, Sample
from selfocc_core.geometry.transforms import invert_transform
from selfocc_core.losses.config import LossConfig
from selfocc_core.losses.reprojection import RigView


def frames_by_offset(sample: Sample) -> dict[int, Frame]:
    out = {0: sample.frame}
    out.update(sample.context)
    return out


def rig_in_input_frame(frame: Frame, T_world_ego0: Tensor) -> RigView:
    """A batched frame's cameras in the input ego frame: ``T_ego0_cam [B, N, 4, 4]``."""
    T_ego0_egoA = invert_transform(T_world_ego0) @ frame.T_world_ego  # [B, 4, 4]
    return RigView(images=frame.images, K=frame.K, T_ego0_cam=T_ego0_egoA.unsqueeze(1) @ frame.T_ego_cam)


def choose_anchor_offset(cfg: LossConfig, available: set[int], generator: Optional[torch.Generator] = None) -> int:
    """0 with probability ``anchor_current_prob``, else -1 (prob ``anchor_prev_prob``) or +1;
    falls back to 0 when the chosen neighbour is not in the sample."""
    u = torch.rand(2, generator=generator).tolist()
    if u[0] < cfg.anchor_current_prob:
        return 0
    offset = -1 if u[1] < cfg.anchor_prev_prob else 1
    return offset if offset in available else 0


@dataclass
class AnchorViews:
    """offset: the anchor's offset; anchor: its frame; anchor_rig: its cameras in ego0;
    sources: the neighbouring frames' rigs in ego0 (may be empty); source_offsets: their offsets."""

    offset: int
    anchor: Frame
    anchor_rig: RigView
    sources: list[RigView]
    source_offsets: list[int]


def anchor_views(sample: Sample, offset: int) -> AnchorViews:
    """Build the anchor and its sources for a batched (collated) sample."""
    frames = frames_by_offset(sample)
    if offset not in frames:
        raise ValueError(f"anchor offset {offset} not in the sample (offsets {sorted(frames)})")
    T_world_ego0 = sample.frame.T_world_ego
    if T_world_ego0.dim() != 3:
        raise ValueError("anchor_views expects a batched sample (use collate_samples)")
    src_offsets = [o for o in (offset - 1, offset + 1) if o in frames]
    return AnchorViews(
        offset=offset,
        anchor=frames[offset],
        anchor_rig=rig_in_input_frame(frames[offset], T_world_ego0),
        sources=[rig_in_input_frame(frames[o], T_world_ego0) for o in src_offsets],
        source_offsets=src_offsets,
    )
