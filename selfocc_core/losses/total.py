"""All self-supervised terms, weighted and summed in one place.

`compute_losses` takes only images, rays, renderings and field queries (`LossInputs`): no
ground truth can reach it (the trainer strips it with ``Sample.without_gt`` first).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor

from selfocc_core.losses.config import LossConfig
from selfocc_core.losses.regularizers import (
    edge_aware_smoothness,
    eikonal_loss,
    free_space_loss,
    hessian_loss,
    prior_loss,
    sparsity_loss,
)
from selfocc_core.losses.rendering_losses import rgb_loss, semantic_loss
from selfocc_core.losses.reprojection import RigView, rays_to_images, reprojection_loss
from selfocc_core.rendering.types import RayBundle, RenderOutputs


@dataclass
class LossInputs:
    """What the losses see for one anchor ray grid.

    target_rgb: [B, R, 3] anchor image colours at the ray pixels
    rays, render: the anchor RayBundle and its rendering
    sources: the source frames' rigs (in the input ego frame)
    grid: (N, h, w) ray-grid layout of the R rays
    gradients: [*, 3] SDF gradients at ray samples (eikonal), or None
    hessian: [*, 3, 3] or [*] second derivatives at ray samples, or None
    random_sdf: [*] SDF at uniformly random points (sparsity, prior), or None
    random_prior: [*] the model's initial SDF at the same points (prior term), or None
    seg_labels: [B, R] long 2D segmentor labels at the rays (255 = ignore), or None
    """

    target_rgb: Tensor
    rays: RayBundle
    render: RenderOutputs
    sources: list[RigView]
    grid: tuple[int, int, int]
    gradients: Optional[Tensor] = None
    hessian: Optional[Tensor] = None
    random_sdf: Optional[Tensor] = None
    random_prior: Optional[Tensor] = None
    seg_labels: Optional[Tensor] = None


@dataclass
class LossTerms:
    """total: the weighted sum (scalar); terms: unweighted scalar per term (for logging);
    stats: extra scalars (e.g. the fraction of rays kept by auto-masking)."""

    total: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)


def compute_losses(cfg: LossConfig, inp: LossInputs) -> LossTerms:
    """Weighted sum of the enabled terms (a term with weight 0 is not computed)."""
    rays, render = inp.rays, inp.render
    B, R = rays.camera_index.shape
    if tuple(inp.target_rgb.shape) != (B, R, 3):
        raise ValueError(f"LossInputs.target_rgb must be {(B, R, 3)}, got {tuple(inp.target_rgb.shape)}")
    terms: dict[str, Tensor] = {}
    weights: dict[str, float] = {}
    stats: dict[str, float] = {}
    # 'infinity' and 'beyond_box' both let the leftover transmittance stand for scenery past the box
    has_background = cfg.background != "none"

    if cfg.reprojection_weight > 0 and inp.sources:
        kw = dict(alpha=cfg.ssim_alpha, automask=cfg.automask, source_cameras=cfg.source_cameras,
                  min_valid_weight=cfg.min_valid_weight)
        if cfg.reprojection_mode == "mvs":
            bg = (1.0 - render.accumulation) if has_background else None
            beyond = cfg.background == "beyond_box"
            out = reprojection_loss(inp.target_rgb, rays.origins, rays.directions, rays.camera_index, rays.pixels,
                                    inp.sources, inp.grid, t=render.t, weights=render.weights,
                                    background_weight=bg, background_far=rays.far if beyond else None,
                                    background_factors=cfg.background_factors if beyond else (), **kw)
        else:
            out = reprojection_loss(inp.target_rgb, rays.origins, rays.directions, rays.camera_index, rays.pixels,
                                    inp.sources, inp.grid, distance=render.distance, **kw)
        terms["reprojection"], weights["reprojection"] = out.loss, cfg.reprojection_weight
        stats["reprojection_mask_fraction"] = float(out.mask.float().mean())
    if cfg.rgb_weight > 0:
        rgb = render.rgb
        if has_background:
            rgb = rgb + (1.0 - render.accumulation).clamp(min=0.0).unsqueeze(-1) * inp.target_rgb.detach()
        terms["rgb"], weights["rgb"] = rgb_loss(rgb, inp.target_rgb), cfg.rgb_weight
    if cfg.eikonal_weight > 0 and inp.gradients is not None:
        terms["eikonal"], weights["eikonal"] = eikonal_loss(inp.gradients), cfg.eikonal_weight
    if cfg.hessian_weight > 0 and inp.hessian is not None:
        terms["hessian"], weights["hessian"] = hessian_loss(inp.hessian), cfg.hessian_weight
    if cfg.sparsity_weight > 0 and inp.random_sdf is not None:
        terms["sparsity"], weights["sparsity"] = sparsity_loss(inp.random_sdf, cfg.sparsity_tau), cfg.sparsity_weight
    if cfg.prior_weight > 0 and inp.random_sdf is not None and inp.random_prior is not None:
        terms["prior"], weights["prior"] = prior_loss(inp.random_sdf, inp.random_prior), cfg.prior_weight
    if cfg.free_space_weight > 0 and render.sdf is not None and render.weights is not None:
        terms["free_space"] = free_space_loss(render.sdf, render.weights, cfg.free_space_margin)
        weights["free_space"] = cfg.free_space_weight
    if cfg.smoothness_weight > 0:
        depth_img = rays_to_images(render.depth.unsqueeze(-1), inp.grid)[:, :, 0]  # [B, N, h, w]
        rgb_img = rays_to_images(inp.target_rgb, inp.grid)  # [B, N, 3, h, w]
        terms["smoothness"], weights["smoothness"] = edge_aware_smoothness(depth_img, rgb_img), cfg.smoothness_weight
    if cfg.semantic_weight > 0 and inp.seg_labels is not None and render.semantics is not None:
        terms["semantic"], weights["semantic"] = semantic_loss(render.semantics, inp.seg_labels), cfg.semantic_weight

    if not terms:
        raise ValueError("compute_losses: every loss term is disabled or lacks its inputs")
    total = sum(weights[k] * v for k, v in terms.items())
    return LossTerms(total=total, terms=terms, stats=stats)
