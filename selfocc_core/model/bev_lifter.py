"""BEV lifter (BEVFormer-style, no temporal attention): one top-view plane of queries.

Same interface as :class:`~selfocc_core.model.tpv_lifter.TPVLifter`; returns ``Planes(xy=bev,
z_line=height embedding)``, so the voxel feature is ``bev[x, y] + e[z]`` and the decoder MLP
resolves height. Each layer: deformable self-attention on the BEV plane -> norm -> image
cross-attention from pillars of ``num_points_in_pillar[0]`` heights -> norm -> FFN -> norm.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from selfocc_core.model.config import ModelConfig
from selfocc_core.model.deformable_attention import DeformableAttention
from selfocc_core.model.tpv_lifter import (
    FFN,
    ImageCrossAttention,
    Planes,
    plane_pillar_points,
    project_reference_points,
)


class BEVLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        C = cfg.embed_dim
        self.self_attn = DeformableAttention(C, cfg.num_heads, 1, 1, cfg.num_points)
        self.image = ImageCrossAttention(C, cfg.num_heads, cfg.num_levels, cfg.num_points_in_pillar[0],
                                         cfg.num_points, cfg.fpn_channels)
        self.ffn = FFN(C, cfg.ffn_dim, cfg.dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(C), nn.LayerNorm(C), nn.LayerNorm(C)
        self.drop = nn.Dropout(cfg.dropout)


class BEVLifter(nn.Module):
    """Image features -> :class:`Planes` with ``xy [B, C, tpv_h, tpv_w]`` and ``z_line [B, C, tpv_z]``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        C, H, W = cfg.embed_dim, cfg.tpv_h, cfg.tpv_w
        self.queries = nn.Parameter(torch.randn(H * W, C) * 0.02)
        self.pos = nn.Parameter(torch.randn(H * W, C) * 0.02)
        self.height = nn.Parameter(torch.randn(C, cfg.tpv_z) * 0.02)
        self.layers = nn.ModuleList(BEVLayer(cfg) for _ in range(cfg.num_layers))
        self.register_buffer("pillar", plane_pillar_points(cfg.scene, "xy", (H, W), cfg.num_points_in_pillar[0]), persistent=False)
        # own location on the BEV map, (col, row) in [0, 1]
        r, c = torch.meshgrid((torch.arange(H) + 0.5) / H, (torch.arange(W) + 0.5) / W, indexing="ij")
        self.register_buffer("self_ref", torch.stack([c, r], -1).reshape(H * W, 1, 1, 2), persistent=False)

    def forward(self, features: Sequence[Tensor], K: Tensor, T_ego_cam: Tensor, image_size: tuple[int, int]) -> Planes:
        B, N = K.shape[:2]
        if T_ego_cam.shape[:2] != (B, N) or features[0].shape[0] != B * N:
            raise ValueError(
                f"BEVLifter: K {tuple(K.shape)}, T_ego_cam {tuple(T_ego_cam.shape)} and features "
                f"{tuple(features[0].shape)} disagree on B*N"
            )
        H, W, C = self.cfg.tpv_h, self.cfg.tpv_w, self.cfg.embed_dim
        ref, mask = project_reference_points(self.pillar, K, T_ego_cam, image_size)
        q = self.queries.unsqueeze(0).expand(B, -1, -1)
        pos = self.pos.unsqueeze(0)
        self_ref = self.self_ref.unsqueeze(0).expand(B, -1, -1, -1, -1)
        for layer in self.layers:
            bev_map = q.transpose(1, 2).reshape(B, C, H, W)
            q = layer.norm1(q + layer.drop(layer.self_attn(q + pos, self_ref, [bev_map])))
            q = layer.norm2(q + layer.drop(layer.image(q + pos, ref, mask, features)))
            q = layer.norm3(q + layer.drop(layer.ffn(q)))
        xy = q.transpose(1, 2).reshape(B, C, H, W)
        return Planes(xy=xy, z_line=self.height.unsqueeze(0).expand(B, -1, -1))
