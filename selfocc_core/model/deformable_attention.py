"""Multi-scale deformable attention (Deformable DETR) in pure PyTorch via ``F.grid_sample``.

Coordinates: sampling locations are normalised image coordinates in [0, 1], ``(x, y) =
((u + 0.5) / W, (v + 0.5) / H)`` for pixel-index coordinates (u, v), which is exactly what
``grid_sample(..., align_corners=False)`` samples after the map ``g = 2 * loc - 1``.
Locations outside [0, 1] read zeros. Locations, weights and the bilinear sampling are kept in
float32 under autocast (bf16 would misplace samples by about a pixel on 200-wide maps).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def ms_deform_attn(values: Sequence[Tensor], sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    """Weighted sum of bilinear samples of per-head value maps.

    Args:
        values: L tensors ``[B, M, Dh, H_l, W_l]`` (M heads, Dh channels per head).
        sampling_locations: ``[B, Q, M, L, P, 2]`` in [0, 1] (x along W, y along H).
        attention_weights: ``[B, Q, M, L, P]``.

    Returns:
        ``[B, Q, M * Dh]`` with ``out[b, q, m*Dh + d] = sum_{l,p} w[b,q,m,l,p] *
        bilinear(values[l][b, m, d], loc[b,q,m,l,p])``.
    """
    B, Q, M, L, P, two = sampling_locations.shape
    if two != 2 or len(values) != L or tuple(attention_weights.shape) != (B, Q, M, L, P):
        raise ValueError(
            f"ms_deform_attn: got {len(values)} value levels, locations {tuple(sampling_locations.shape)}, "
            f"weights {tuple(attention_weights.shape)}; expected L levels, [B,Q,M,L,P,2] and [B,Q,M,L,P]"
        )
    # sample in float32 even under autocast: bf16 locations are off by ~1 pixel on big maps
    hi = torch.float64 if sampling_locations.dtype == torch.float64 else torch.float32
    grids = sampling_locations.to(hi) * 2.0 - 1.0
    out = None
    for lvl, v in enumerate(values):
        Bv, Mv, Dh, H, W = v.shape
        if (Bv, Mv) != (B, M):
            raise ValueError(f"ms_deform_attn: level {lvl} values {tuple(v.shape)} do not match B={B}, M={M}")
        g = grids[:, :, :, lvl].transpose(1, 2).reshape(B * M, Q, P, 2)
        vf = v.reshape(B * M, Dh, H, W)
        vf = vf.to(torch.promote_types(vf.dtype, hi))
        s = F.grid_sample(vf, g.to(vf.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
        w = attention_weights[:, :, :, lvl].transpose(1, 2).reshape(B * M, 1, Q, P).to(s.dtype)
        term = (s * w).sum(-1)  # [B*M, Dh, Q]
        out = term if out is None else out + term
    return out.view(B, M, -1, Q).permute(0, 3, 1, 2).reshape(B, Q, -1)


class DeformableAttention(nn.Module):
    """Deformable attention from queries to L value maps around D reference points per query.

    Each (head, level, reference point) gets ``num_points`` learned offsets (in units of that
    level's pixels) and weights predicted from the query; weights are softmax-normalised over
    all L * D * num_points samples of a head.

    forward(query ``[B, Q, C]``, reference_points ``[B*N, Q, L or 1, D, 2]`` in [0, 1],
    values: L maps ``[B*N, C_v, H_l, W_l]``) -> ``[B*N, Q, C]``. N >= 1 repeats every query over
    N value sources (the cameras), so offsets are predicted once per query.
    """

    def __init__(self, embed_dim: int, num_heads: int, num_levels: int, num_refs: int, num_points: int,
                 value_dim: int | None = None):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads, self.num_levels = embed_dim, num_heads, num_levels
        self.num_refs, self.num_points = num_refs, num_points
        n = num_heads * num_levels * num_refs * num_points
        self.sampling_offsets = nn.Linear(embed_dim, n * 2)
        self.attention_weights = nn.Linear(embed_dim, n)
        self.value_proj = nn.Linear(value_dim or embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        nn.init.zeros_(self.sampling_offsets.weight)
        # Deformable DETR init: head m looks in direction 2*pi*m/M, point p at distance p + 1.
        theta = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        grid = torch.stack([theta.cos(), theta.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.num_heads, 1, 1, 1, 2).repeat(1, self.num_levels, self.num_refs, self.num_points, 1)
        grid = grid * torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def project_values(self, values: Sequence[Tensor]) -> list[Tensor]:
        """Value maps ``[B', C_v, H, W]`` -> per-head ``[B', M, Dh, H, W]`` (a 1x1 conv)."""
        w = self.value_proj.weight[:, :, None, None]
        out = []
        for v in values:
            p = F.conv2d(v, w.to(v.dtype), self.value_proj.bias.to(v.dtype))
            out.append(p.view(p.shape[0], self.num_heads, -1, *p.shape[-2:]))
        return out

    def sample(self, query: Tensor, reference_points: Tensor, values: Sequence[Tensor]) -> Tensor:
        """Attention output before ``output_proj``. ``values`` as returned by :meth:`project_values`."""
        B, Q, C = query.shape
        BN = reference_points.shape[0]
        M, L, D, P = self.num_heads, self.num_levels, self.num_refs, self.num_points
        if reference_points.dim() != 5 or reference_points.shape[1] != Q or reference_points.shape[3] != D \
                or reference_points.shape[2] not in (1, L) or BN % B:
            raise ValueError(
                f"DeformableAttention: reference_points must be [B*N, {Q}, 1 or {L}, {D}, 2], got "
                f"{tuple(reference_points.shape)} for query {tuple(query.shape)}"
            )
        if len(values) != L:
            raise ValueError(f"DeformableAttention: expected {L} value levels, got {len(values)}")
        N = BN // B
        hi = torch.float64 if query.dtype == torch.float64 else torch.float32
        offsets = self.sampling_offsets(query).view(B, Q, M, L, D, P, 2).to(hi)
        weights = self.attention_weights(query).view(B, Q, M, L * D * P).to(hi).softmax(-1).view(B, Q, M, L, D * P)
        if N > 1:
            offsets = offsets.repeat_interleave(N, dim=0)
            weights = weights.repeat_interleave(N, dim=0)
        sizes = torch.tensor([[v.shape[-1], v.shape[-2]] for v in values], dtype=offsets.dtype, device=offsets.device)
        ref = reference_points.to(offsets.dtype)[:, :, None, :, :, None, :]  # [BN, Q, 1, L|1, D, 1, 2]
        loc = ref + offsets / sizes.view(1, 1, 1, L, 1, 1, 2)
        return ms_deform_attn(values, loc.view(BN, Q, M, L, D * P, 2), weights)

    def forward(self, query: Tensor, reference_points: Tensor, values: Sequence[Tensor]) -> Tensor:
        return self.output_proj(self.sample(query, reference_points, self.project_values(values)))
