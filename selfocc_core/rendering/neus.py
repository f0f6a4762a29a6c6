"""NeuS volume rendering of an SDF (Wang et al. 2021), as pure functions plus the variance parameter.

Per sample i with SDF f_i, gradient g_i, ray direction d and bin width delta_i:
    cos_i   = -( relu(-(d.g_i) / 2 + 1/2) * (1 - r) + relu(-(d.g_i)) * r )   (r = cos_anneal_ratio)
    f_prev  = f_i - cos_i * delta_i / 2,   f_next = f_i + cos_i * delta_i / 2
    alpha_i = clip((Phi_s(f_prev) - Phi_s(f_next) + 1e-5) / (Phi_s(f_prev) + 1e-5), 0, 1)
with Phi_s the sigmoid of slope s = exp(10 v). Weights w_i = alpha_i * prod_{j<i} (1 - alpha_j).
The transmittance product is computed in float32 even under autocast (autocast is disabled
inside the renderer; float64 inputs stay float64).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfocc_core.rendering.types import RenderOutputs


class SingleVarianceNetwork(nn.Module):
    """Learnable NeuS sharpness: ``inv_s = exp(10 * variance)`` (clamped to [1e-6, 1e6])."""

    def __init__(self, init_val: float = 0.3):
        super().__init__()
        self.variance = nn.Parameter(torch.tensor(float(init_val)))

    def forward(self) -> Tensor:
        return torch.exp(_hi(self.variance) * 10.0).clamp(1e-6, 1e6)


def _hi(x: Tensor) -> Tensor:
    """float64 stays float64 (gradcheck); anything else (bf16/fp16 under autocast) -> float32."""
    return x if x.dtype == torch.float64 else x.float()


def neus_alpha(sdf: Tensor, gradients: Tensor, directions: Tensor, deltas: Tensor, inv_s: Tensor | float,
               cos_anneal_ratio: float = 1.0) -> Tensor:
    """Discrete NeuS opacity ``[B, R, S]`` from ``sdf [B, R, S]``, ``gradients [B, R, S, 3]``,
    ``directions [B, R, 3]``, ``deltas [B, R, S]`` and the sharpness ``inv_s`` (scalar)."""
    if sdf.shape != deltas.shape or gradients.shape != (*sdf.shape, 3) or directions.shape != (*sdf.shape[:-1], 3):
        raise ValueError(
            f"neus_alpha: shapes sdf {tuple(sdf.shape)}, deltas {tuple(deltas.shape)}, gradients "
            f"{tuple(gradients.shape)}, directions {tuple(directions.shape)} are not [B,R,S], [B,R,S], [B,R,S,3], [B,R,3]"
        )
    sdf, gradients, directions, deltas = _hi(sdf), _hi(gradients), _hi(directions), _hi(deltas)
    true_cos = (directions.unsqueeze(-2) * gradients).sum(-1)
    r = cos_anneal_ratio
    iter_cos = -(F.relu(-true_cos * 0.5 + 0.5) * (1.0 - r) + F.relu(-true_cos) * r)
    half = iter_cos * deltas * 0.5
    prev_cdf = torch.sigmoid((sdf - half) * inv_s)
    next_cdf = torch.sigmoid((sdf + half) * inv_s)
    return ((prev_cdf - next_cdf + 1e-5) / (prev_cdf + 1e-5)).clamp(0.0, 1.0)


def weights_from_alpha(alpha: Tensor) -> Tensor:
    """``w_i = alpha_i * prod_{j<i}(1 - alpha_j)`` over the last dim, in float32 (or float64).

    An exact exclusive cumprod (no epsilon inside the product, which would let the weights sum
    above 1 over long rays); torch's cumprod backward handles factors equal to zero.
    """
    a = _hi(alpha)
    trans = torch.cumprod(torch.cat([torch.ones_like(a[..., :1]), 1.0 - a[..., :-1]], -1), dim=-1)
    return a * trans


def neus_render(t: Tensor, deltas: Tensor, sdf: Tensor, gradients: Tensor, directions: Tensor,
                inv_s: Tensor | float, z_per_unit: Tensor, rgb: Tensor, semantics: Optional[Tensor] = None,
                cos_anneal_ratio: float = 1.0, far: Optional[Tensor] = None,
                ray_mask: Optional[Tensor] = None) -> RenderOutputs:
    """Composite samples into per-ray outputs.

    Args:
        t, deltas, sdf: ``[B, R, S]``; gradients ``[B, R, S, 3]``; directions ``[B, R, 3]``;
        z_per_unit: ``[B, R]``; rgb ``[B, R, S, 3]``; semantics ``[B, R, S, C]`` logits or None.
        far: ``[B, R]`` where the transmittance left after the last sample is put when computing
            the expected distance (default: the last sample's t).
        ray_mask: ``[B, R]`` bool; rays marked False get zero weights.

    Returns:
        RenderOutputs: ``distance = sum w t + (1 - sum w) * far``, ``depth = distance * z_per_unit``,
        ``rgb = sum w rgb`` (no background colour), ``semantics = sum w logits``.
    """
    with torch.autocast(device_type=sdf.device.type, enabled=False):
        return _neus_render(t, deltas, sdf, gradients, directions, inv_s, z_per_unit, rgb, semantics,
                            cos_anneal_ratio, far, ray_mask)


def _neus_render(t, deltas, sdf, gradients, directions, inv_s, z_per_unit, rgb, semantics,
                 cos_anneal_ratio, far, ray_mask) -> RenderOutputs:
    alpha = neus_alpha(sdf, gradients, directions, deltas, inv_s, cos_anneal_ratio)
    if ray_mask is not None:
        alpha = alpha * ray_mask[..., None].to(alpha.dtype)
    weights = weights_from_alpha(alpha)
    acc = weights.sum(-1)
    tt = t.to(weights.dtype)
    far_t = tt[..., -1] if far is None else far.to(weights.dtype)
    distance = (weights * tt).sum(-1) + (1.0 - acc).clamp(min=0.0) * far_t
    depth = distance * z_per_unit.to(weights.dtype)
    col = (weights.unsqueeze(-1) * rgb.to(weights.dtype)).sum(-2)
    sem = None if semantics is None else (weights.unsqueeze(-1) * semantics.to(weights.dtype)).sum(-2)
    return RenderOutputs(t=t, sdf=sdf, weights=weights, distance=distance, depth=depth, rgb=col,
                         accumulation=acc, semantics=sem, gradients=gradients, deltas=deltas)
