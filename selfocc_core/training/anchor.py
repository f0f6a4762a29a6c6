"""Anchor-frame sampling: which frame's cameras are rendered, and which frames are its sources.

The field always lives in the input frame's ego frame (``ego0``). The anchor is the input
frame (offset 0) or another frame of the sample (``LossConfig.anchor_offsets``, by default the
adjacent ones +-1); its cameras are expressed in ego0 as
``T_ego0_camA = inv(T_world_ego0) @ T_world_egoA @ T_egoA_camA``. The sources are the anchor's
temporal neighbours that the sample holds (anchor 0: -1 and +1; anchor +1: 0 and +2).

A source whose cameras barely moved from the anchor's (``camera_baseline`` below
``min_baseline``) gives no parallax and is marked invalid for that batch element
(``RigView.valid``); `usable_anchor_offset` picks an anchor that has a usable source.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence

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
    """0 with probability ``anchor_current_prob``, else one of ``anchor_offsets``: a negative one
    with probability ``anchor_prev_prob`` (a positive one otherwise), uniformly within that side
    (the side that has offsets when only one has); falls back to 0 when the chosen offset is not in
    the sample (the ends of a sequence). Two uniform draws per call whatever the offsets."""
    u = torch.rand(2, generator=generator).tolist()
    if u[0] < cfg.anchor_current_prob:
        return 0
    past = sorted((o for o in cfg.anchor_offsets if o < 0), reverse=True)  # nearest first
    future = sorted(o for o in cfg.anchor_offsets if o > 0)
    p = cfg.anchor_prev_prob if past and future else float(bool(past))
    # one draw picks the side and, rescaled to [0, 1), the offset within it
    if u[1] < p:
        side, v = past, u[1] / p
    else:
        side, v = future, (u[1] - p) / (1.0 - p)
    offset = side[min(int(v * len(side)), len(side) - 1)]
    return offset if offset in available else 0


def camera_baseline(a: RigView, b: RigView) -> Tensor:
    """Mean distance (m) between corresponding camera centres of two rigs in one frame: ``[B]``."""
    return (a.T_ego0_cam[..., :3, 3] - b.T_ego0_cam[..., :3, 3]).norm(dim=-1).mean(-1)


@dataclass
class AnchorViews:
    """offset: the anchor's offset; anchor: its frame; anchor_rig: its cameras in ego0;
    sources: the neighbouring frames' rigs in ego0 (may be empty), each with ``valid`` [B]
    (baseline to the anchor >= min_baseline); source_offsets: their offsets;
    baselines: [B, len(sources)] camera baselines (m)."""

    offset: int
    anchor: Frame
    anchor_rig: RigView
    sources: list[RigView]
    source_offsets: list[int]
    baselines: Tensor

    @property
    def usable(self) -> Tensor:
        """[B, len(sources)] bool: the (sample, source) pairs that may be trained on."""
        if not self.sources:
            return torch.zeros(self.baselines.shape[0], 0, dtype=torch.bool, device=self.baselines.device)
        return torch.stack([s.valid for s in self.sources], dim=-1)

    def usable_sources(self) -> list[RigView]:
        """The sources valid for at least one batch element (the others are left out)."""
        return [s for s in self.sources if bool(s.valid.any())]


def anchor_views(sample: Sample, offset: int, min_baseline: float = 0.0,
                 T_world_ego0: Optional[Tensor] = None, source_offsets: Sequence[int] = (-1, 1)) -> AnchorViews:
    """Build the anchor and its sources for a batched (collated) sample; a source closer than
    ``min_baseline`` metres (camera centres, `camera_baseline`) to the anchor is marked invalid
    for that batch element. ``T_world_ego0`` ([B, 4, 4]): the frame the field lives in
    (default: the input frame's ego frame; a per-scene field may live in another frame).
    The sources are the sample's frames at ``offset + o`` for o in ``source_offsets``."""
    frames = frames_by_offset(sample)
    if offset not in frames:
        raise ValueError(f"anchor offset {offset} not in the sample (offsets {sorted(frames)})")
    if T_world_ego0 is None:
        T_world_ego0 = sample.frame.T_world_ego
    if T_world_ego0.dim() != 3:
        raise ValueError("anchor_views expects a batched sample (use collate_samples)")
    src_offsets = sorted(offset + o for o in source_offsets if offset + o in frames)
    anchor_rig = rig_in_input_frame(frames[offset], T_world_ego0)
    sources, baselines = [], []
    for o in src_offsets:
        rig = rig_in_input_frame(frames[o], T_world_ego0)
        d = camera_baseline(anchor_rig, rig)
        sources.append(replace(rig, valid=d >= min_baseline))
        baselines.append(d)
    B = T_world_ego0.shape[0]
    return AnchorViews(
        offset=offset,
        anchor=frames[offset],
        anchor_rig=anchor_rig,
        sources=sources,
        source_offsets=src_offsets,
        baselines=torch.stack(baselines, -1) if baselines else torch.zeros(B, 0, device=T_world_ego0.device),
    )


def usable_anchor_offset(sample: Sample, preferred: int, min_baseline: float,
                         source_offsets: Sequence[int] = (-1, 1)) -> Optional[int]:
    """``preferred`` if its anchor has a usable source (baseline >= ``min_baseline``) for some
    batch element, else the first of 0, -1, +1, -2, +2 ... that has, else None (no pair of
    frames in the sample moved enough)."""
    frames = frames_by_offset(sample)
    order = [preferred] + sorted((o for o in frames if o != preferred), key=lambda o: (abs(o), o))
    for o in order:
        if bool(anchor_views(sample, o, min_baseline, source_offsets=source_offsets).usable.any()):
            return o
    return None
