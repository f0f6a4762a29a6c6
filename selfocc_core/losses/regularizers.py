"""Geometry regularisers of the SDF field and of the rendered depth."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def eikonal_loss(gradients: Tensor) -> Tensor:
    """Mean of ``(|grad sdf| - 1)^2`` over SDF gradients ``[*, 3]``."""
    if gradients.shape[-1] != 3:
        raise ValueError(f"eikonal_loss: gradients must be [*, 3], got {tuple(gradients.shape)}")
    return ((gradients.norm(dim=-1) - 1.0) ** 2).mean()


def hessian_loss(hessian: Tensor) -> Tensor:
    """Second-derivative magnitude of the SDF.

    hessian: either full matrices ``[*, 3, 3]`` (mean Frobenius norm) or already-reduced
    magnitudes ``[*]`` (mean absolute value; e.g. the norm of the Laplacian per point).
    """
    if hessian.dim() >= 2 and hessian.shape[-2:] == (3, 3):
        return hessian.flatten(-2).norm(dim=-1).mean()
    return hessian.abs().mean()


def sparsity_loss(sdf: Tensor, tau: float = 5.0) -> Tensor:
    """Mean of ``exp(-tau * |sdf|)`` at (random) points: pushes the surface to be sparse."""
    return torch.exp(-tau * sdf.abs()).mean()


def free_space_loss(sdf: Tensor, weights: Tensor, margin: float = 0.0) -> Tensor:
    """Solid where the renderer sees through: mean over ray samples of ``T_i * relu(margin - sdf_i)``
    with ``T_i = 1 - sum_{j<i} w_j`` the (detached) transmittance before sample i.

    NeuS gives opacity only where the SDF *falls* along the ray (``-relu(-d.grad)``), so a
    negative-SDF region whose gradient is across the ray (a slab reached from the side) is
    transparent to it: the photometric losses never see it, the occupancy read-out (SDF <= 0)
    counts it. Samples the renderer treats as free space (high T) must have SDF > margin.

    sdf, weights: ``[B, R, S]``. Returns a scalar.

        >>> free_space_loss(torch.tensor([[[-1.0, 2.0]]]), torch.tensor([[[0.0, 1.0]]]))
        tensor(0.5000)
    """
    if sdf.shape != weights.shape:
        raise ValueError(f"free_space_loss: sdf {tuple(sdf.shape)} vs weights {tuple(weights.shape)}")
    w = weights.detach().float()
    trans = (1.0 - (torch.cumsum(w, -1) - w)).clamp(0.0, 1.0)
    return (trans * torch.relu(margin - sdf.float())).mean()


def prior_loss(sdf: Tensor, prior: Tensor) -> Tensor:
    """Mean ``|sdf - prior|`` at (random) points: where the images say nothing, the field keeps
    its initial shape (e.g. the ground plane ``z - ground_height``: free above, solid below).
    L1, so that real structures can depart from the prior where the photometric losses want."""
    if sdf.shape != prior.shape:
        raise ValueError(f"prior_loss: sdf {tuple(sdf.shape)} vs prior {tuple(prior.shape)}")
    return (sdf - prior).abs().mean()


def edge_aware_smoothness(depth: Tensor, image: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """Edge-aware smoothness of a depth image (Monodepth2, on mean-normalised depth).

    depth: [*, h, w] (the ray-grid depth image); image: [*, 3, h, w] (colours at the rays)
    Depth is divided by its per-image mean so the loss does not favour shrinking the scene.
    """
    if image.shape[:-3] != depth.shape[:-2] or image.shape[-2:] != depth.shape[-2:]:
        raise ValueError(f"edge_aware_smoothness: depth {tuple(depth.shape)} vs image {tuple(image.shape)}")
    d = depth / depth.mean(dim=(-2, -1), keepdim=True).clamp_min(1e-6)
    gx = (d[..., :, :-1] - d[..., :, 1:]).abs()
    gy = (d[..., :-1, :] - d[..., 1:, :]).abs()
    ix = (image[..., :, :-1] - image[..., :, 1:]).abs().mean(dim=-3)
    iy = (image[..., :-1, :] - image[..., 1:, :]).abs().mean(dim=-3)
    gx = gx * torch.exp(-ix)
    gy = gy * torch.exp(-iy)
    return gx.mean() + gy.mean()
