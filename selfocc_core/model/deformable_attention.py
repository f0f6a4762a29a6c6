"""Multi-scale deformable attention (Deformable DETR) in pure PyTorch via ``F.grid_sample``.

Coordinates: sampling locations are normalised image coordinates in [0, 1], ``(x, y) =
((u + 0.5) / W, (v + 0.5) / H)`` for pixel-index coordinates (u, v), which is exactly what
``grid_sample(..., align_corners=False)`` samples after the map ``g = 2 * loc - 1``.
Locations outside [0, 1] read zeros. Locations, weights and the bilinear sampling are kept in
float32 under autocast (bf16 would misplace samples by about a pixel on 200-wide maps).

Levels are sampled together (few kernels, no Python loop over levels or cameras): the L value
maps sit zero-padded in one :class:`LevelStack` ``[B, L, M, Dh, H_max, W_max]`` and one
``grid_sample`` reads all of them, each location rescaled by ``(W_l / W_max, H_l / H_max)``, which
puts it on the same pixel coordinate ``x * W_l - 0.5`` of level l (the zero padding is what
``padding_mode="zeros"`` reads outside a level anyway), so the result equals per-level sampling
(:func:`ms_deform_attn_per_level`, kept as the reference) up to float rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class LevelStack:
    """L value maps of different sizes, zero-padded into one tensor.

    maps:  ``[B, L, M, Dh, H_max, W_max]``, zero outside ``sizes[l]`` of each level
    sizes: L (H_l, W_l)
    """

    maps: Tensor
    sizes: tuple[tuple[int, int], ...]

    @property
    def num_levels(self) -> int:
        return len(self.sizes)

    def level(self, lvl: int) -> Tensor:
        """Level ``lvl`` unpadded: ``[B, M, Dh, H_l, W_l]`` (a view)."""
        h, w = self.sizes[lvl]
        return self.maps[:, lvl, :, :, :h, :w]


def level_sizes(maps: Sequence[Tensor]) -> tuple[tuple[int, int], ...]:
    return tuple((int(m.shape[-2]), int(m.shape[-1])) for m in maps)


def pad_levels(maps: Sequence[Tensor]) -> Tensor:
    """L maps ``[*, C, H_l, W_l]`` -> ``[*, L, C, H_max, W_max]``, zero-padded at the bottom / right.

    One copy per level, done once per forward for maps that several attentions read.
    """
    sizes = level_sizes(maps)
    Hm, Wm = max(h for h, _ in sizes), max(w for _, w in sizes)
    lead = maps[0].shape[:-3]
    C = maps[0].shape[-3]
    if len(maps) == 1:
        return maps[0].unsqueeze(-4)
    out = maps[0].new_zeros(*lead, len(maps), C, Hm, Wm)
    for lvl, (m, (h, w)) in enumerate(zip(maps, sizes)):
        out[..., lvl, :, :h, :w] = m
    return out


_MASKS: dict = {}


def level_mask(sizes: Sequence[tuple[int, int]], device=None, dtype=torch.float32) -> Tensor:
    """``[L, 1, H_max, W_max]``: 1 inside each level's size, 0 in its padding (kept per sizes and
    device: a fixed-shape model asks for the same few masks every forward)."""
    key = (tuple(sizes), str(device), dtype)
    if key not in _MASKS:
        if len(_MASKS) > 64:
            _MASKS.clear()
        _MASKS[key] = _level_mask(sizes, device, dtype)
    return _MASKS[key]


def _level_mask(sizes, device, dtype) -> Tensor:
    Hm, Wm = max(h for h, _ in sizes), max(w for _, w in sizes)
    rows = torch.arange(Hm, device=device).view(1, Hm, 1)
    cols = torch.arange(Wm, device=device).view(1, 1, Wm)
    hs = torch.tensor([h for h, _ in sizes], device=device).view(-1, 1, 1)
    ws = torch.tensor([w for _, w in sizes], device=device).view(-1, 1, 1)
    return ((rows < hs) & (cols < ws)).to(dtype).unsqueeze(1)


def ms_deform_attn(values: Union[Sequence[Tensor], LevelStack], sampling_locations: Tensor,
                   attention_weights: Tensor) -> Tensor:
    """Weighted sum of bilinear samples of per-head value maps, all levels in one ``grid_sample``.

    Args:
        values: a :class:`LevelStack`, or L tensors ``[B, M, Dh, H_l, W_l]`` (stacked here).
        sampling_locations: ``[B, Q, M, L, P, 2]`` in [0, 1] (x along W, y along H).
        attention_weights: ``[B, Q, M, L, P]``.

    Returns:
        ``[B, Q, M * Dh]``, as :func:`ms_deform_attn_per_level`.
    """
    B, Q, M, L, P, two = sampling_locations.shape
    if not isinstance(values, LevelStack):
        if two != 2 or len(values) != L:
            raise ValueError(
                f"ms_deform_attn: got {len(values)} value levels, locations {tuple(sampling_locations.shape)}, "
                f"weights {tuple(attention_weights.shape)}; expected L levels, [B,Q,M,L,P,2] and [B,Q,M,L,P]")
        for lvl, v in enumerate(values):
            if tuple(v.shape[:2]) != (B, M) or v.shape[2] != values[0].shape[2]:
                raise ValueError(f"ms_deform_attn: level {lvl} values {tuple(v.shape)} do not match B={B}, M={M}")
        values = LevelStack(pad_levels(values).transpose(1, 2) if L > 1 else values[0].unsqueeze(1),
                            level_sizes(values))
    maps = values.maps
    Bv, Lv, Mv, Dh, Hm, Wm = maps.shape
    if two != 2 or (Bv, Lv, Mv) != (B, L, M) or tuple(attention_weights.shape) != (B, Q, M, L, P):
        raise ValueError(
            f"ms_deform_attn: values {tuple(maps.shape)} ([B, L, M, Dh, H, W]), locations "
            f"{tuple(sampling_locations.shape)}, weights {tuple(attention_weights.shape)} disagree")
    # sample in float32 even under autocast: bf16 locations are off by ~1 pixel on big maps
    hi = torch.float64 if sampling_locations.dtype == torch.float64 else torch.float32
    if L > 1:
        scale = torch.tensor([[w / Wm, h / Hm] for h, w in values.sizes], dtype=hi, device=maps.device)
        loc = sampling_locations.to(hi) * scale.view(1, 1, 1, L, 1, 2)
    else:
        loc = sampling_locations.to(hi)
    g = (loc * 2.0 - 1.0).permute(0, 3, 2, 1, 4, 5).reshape(B * L * M, Q, P, 2)  # [(b, l, m), Q, P, 2]
    vf = maps.reshape(B * L * M, Dh, Hm, Wm)
    vf = vf.to(torch.promote_types(vf.dtype, hi))
    s = F.grid_sample(vf, g.to(vf.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
    w = attention_weights.permute(0, 3, 2, 1, 4).to(s.dtype)  # [B, L, M, Q, P]
    out = (s.view(B, L, M, Dh, Q, P) * w.unsqueeze(3)).sum((1, 5))  # [B, M, Dh, Q]
    return out.permute(0, 3, 1, 2).reshape(B, Q, M * Dh)


def ms_deform_attn_per_level(values: Sequence[Tensor], sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    """Weighted sum of bilinear samples of per-head value maps, one ``grid_sample`` per level
    (the reference :func:`ms_deform_attn` is tested against).

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

    def project_values(self, values: Union[Sequence[Tensor], "PaddedMaps"]) -> LevelStack:
        """Value maps -> per-head :class:`LevelStack` ``[B', L, M, Dh, H_max, W_max]`` (a 1x1 conv).

        ``values``: L maps ``[B', C_v, H_l, W_l]``, or the same already padded (:class:`PaddedMaps`,
        shared by several attentions): one conv over all levels, the padding zeroed after it.
        """
        if not isinstance(values, PaddedMaps):
            values = PaddedMaps.of(values)
        x = values.maps  # [B', L, C_v, Hm, Wm]
        Bp, L, Cv, Hm, Wm = x.shape
        w = self.value_proj.weight[:, :, None, None]
        p = F.conv2d(x.reshape(Bp * L, Cv, Hm, Wm), w.to(x.dtype), self.value_proj.bias.to(x.dtype))
        p = p.view(Bp, L, self.num_heads, -1, Hm, Wm)
        if values.mask is not None:  # the bias made the padding non-zero
            p = p * values.mask.to(p.dtype).view(1, L, 1, 1, Hm, Wm)
        return LevelStack(p, values.sizes)

    def sample(self, query: Tensor, reference_points: Tensor, values: LevelStack) -> Tensor:
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
        if values.num_levels != L:
            raise ValueError(f"DeformableAttention: expected {L} value levels, got {values.num_levels}")
        N = BN // B
        hi = torch.float64 if query.dtype == torch.float64 else torch.float32
        offsets = self.sampling_offsets(query).view(B, Q, M, L, D, P, 2).to(hi)
        weights = self.attention_weights(query).view(B, Q, M, L * D * P).to(hi).softmax(-1).view(B, Q, M, L, D * P)
        if N > 1:
            offsets = offsets.repeat_interleave(N, dim=0)
            weights = weights.repeat_interleave(N, dim=0)
        sizes = torch.tensor([[w, h] for h, w in values.sizes], dtype=offsets.dtype, device=offsets.device)
        ref = reference_points.to(offsets.dtype)[:, :, None, :, :, None, :]  # [BN, Q, 1, L|1, D, 1, 2]
        loc = ref + offsets / sizes.view(1, 1, 1, L, 1, 1, 2)
        return ms_deform_attn(values, loc.view(BN, Q, M, L, D * P, 2), weights)

    def forward(self, query: Tensor, reference_points: Tensor, values: Union[Sequence[Tensor], "PaddedMaps"]) -> Tensor:
        return self.output_proj(self.sample(query, reference_points, self.project_values(values)))


@dataclass
class PaddedMaps:
    """L feature maps ``[B', C, H_l, W_l]`` padded once into ``maps [B', L, C, H_max, W_max]``;
    ``mask [L, 1, H_max, W_max]`` (None for a single level) marks the real pixels."""

    maps: Tensor
    sizes: tuple[tuple[int, int], ...]
    mask: Tensor | None

    @classmethod
    def of(cls, maps: Sequence[Tensor]) -> "PaddedMaps":
        sizes = level_sizes(maps)
        mask = None if len(set(sizes)) == 1 else level_mask(sizes, device=maps[0].device)
        return cls(pad_levels(maps), sizes, mask)
