"""compute_losses: terms weighted and summed in one place; disabled terms are not computed."""

import math

import pytest
import torch

from selfocc_core.losses.config import LossConfig
from selfocc_core.losses.reprojection import RigView
from selfocc_core.losses.total import LossInputs, compute_losses
from selfocc_core.rendering.types import RayBundle, RenderOutputs

B, N, h, w, S = 1, 1, 4, 6, 5
R = N * h * w


def inputs(with_source=True):
    torch.manual_seed(0)
    uv = torch.stack(torch.meshgrid(torch.arange(w) * 4.0 + 1.5, torch.arange(h) * 4.0 + 1.5, indexing="xy"), -1)
    rays = RayBundle(origins=torch.zeros(B, R, 3), directions=torch.tensor([1.0, 0, 0]).expand(B, R, 3),
                     z_per_unit=torch.ones(B, R), near=torch.full((B, R), 0.5), far=torch.full((B, R), 20.0),
                     camera_index=torch.zeros(B, R, dtype=torch.long), pixels=uv.reshape(1, R, 2))
    weights = torch.full((B, R, S), 0.1)
    render = RenderOutputs(t=torch.linspace(1, 10, S).expand(B, R, S), sdf=torch.zeros(B, R, S), weights=weights,
                           distance=torch.full((B, R), 5.0), depth=torch.rand(B, R) + 4.0, rgb=torch.full((B, R, 3), 0.2),
                           accumulation=weights.sum(-1), semantics=torch.zeros(B, R, 3))
    K = torch.tensor([[10.0, 0, 11.5], [0, 10.0, 7.5], [0, 0, 1]])
    T = torch.tensor([[0.0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]])
    src = RigView(images=torch.rand(B, N, 3, 16, 24), K=K.expand(B, N, 3, 3), T_ego0_cam=T.expand(B, N, 4, 4))
    return LossInputs(target_rgb=torch.full((B, R, 3), 0.5), rays=rays, render=render,
                      sources=[src] if with_source else [], grid=(N, h, w), gradients=torch.zeros(10, 3),
                      hessian=torch.ones(10, 3, 3), random_sdf=torch.zeros(10),
                      seg_labels=torch.full((B, R), 255, dtype=torch.long))


def test_weighted_sum_matches_terms():
    cfg = LossConfig(rgb_weight=0.5, eikonal_weight=2.0, hessian_weight=0.1, sparsity_weight=0.3,
                     smoothness_weight=0.01, semantic_weight=0.7, background="none")
    out = compute_losses(cfg, inputs())
    assert set(out.terms) == {"reprojection", "rgb", "eikonal", "hessian", "sparsity", "smoothness", "semantic"}
    assert math.isclose(float(out.terms["rgb"]), 0.3, rel_tol=1e-6)  # |0.2 * 1.0 (weights sum 0.5) ...|
    assert float(out.terms["eikonal"]) == 1.0 and float(out.terms["sparsity"]) == 1.0
    assert math.isclose(float(out.terms["hessian"]), 3.0, rel_tol=1e-6)
    expected = sum(getattr(cfg, f"{k}_weight") * float(v) for k, v in out.terms.items())
    assert math.isclose(float(out.total), expected, rel_tol=1e-6)
    assert 0.0 <= out.stats["reprojection_mask_fraction"] <= 1.0


def test_background_colour_fills_the_leftover_transmittance():
    # accumulation 0.5: rendered 0.2 * ... rgb is already the weighted sum (0.2); with the
    # background = pixel colour the prediction becomes 0.2 + 0.5 * 0.5 = 0.45 -> L1 0.05.
    out = compute_losses(LossConfig(eikonal_weight=0, hessian_weight=0, background="infinity"), inputs())
    assert math.isclose(float(out.terms["rgb"]), 0.05, rel_tol=1e-5)


def test_disabled_terms_and_missing_inputs():
    cfg = LossConfig(reprojection_weight=0.0, rgb_weight=0.0, eikonal_weight=1.0, hessian_weight=0.0, semantic_weight=0.0)
    out = compute_losses(cfg, inputs(with_source=False))
    assert set(out.terms) == {"eikonal"}
    with pytest.raises(ValueError, match="disabled"):
        compute_losses(LossConfig(reprojection_weight=1.0, rgb_weight=0, eikonal_weight=0, hessian_weight=0,
                                  semantic_weight=0), inputs(with_source=False))
    with pytest.raises(ValueError, match="must be >= 0"):
        LossConfig(rgb_weight=-1.0)
