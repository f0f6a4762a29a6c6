"""Regularisers and rendering losses: hand-computed values, invariances, gradients."""

import math

import pytest
import torch
import torch.nn.functional as F

from selfocc_core.losses.regularizers import edge_aware_smoothness, eikonal_loss, hessian_loss, sparsity_loss
from selfocc_core.losses.rendering_losses import rgb_loss, semantic_loss


def sdf_gradient(fn, x):
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(x).sum(), x, create_graph=True)
    return g


def test_eikonal_zero_for_true_sdf_and_hand_value():
    x = torch.randn(100, 3) * 3 + 0.1
    assert float(eikonal_loss(sdf_gradient(lambda p: p.norm(dim=-1) - 1.0, x).detach())) < 1e-10
    # sdf = 2 * (|x| - 1): |grad| = 2 -> (2 - 1)^2 = 1
    assert math.isclose(float(eikonal_loss(sdf_gradient(lambda p: 2 * (p.norm(dim=-1) - 1.0), x)).detach()), 1.0, rel_tol=1e-5)
    # a zero gradient field costs 1 per point
    assert float(eikonal_loss(torch.zeros(7, 3))) == 1.0
    with pytest.raises(ValueError):
        eikonal_loss(torch.zeros(7, 2))


def test_hessian_matrix_and_magnitude():
    Hm = torch.zeros(4, 3, 3)
    Hm[:, 0, 0] = 3.0
    Hm[:, 1, 1] = 4.0
    assert math.isclose(float(hessian_loss(Hm)), 5.0)  # Frobenius norm sqrt(9 + 16)
    assert math.isclose(float(hessian_loss(torch.tensor([-1.0, 3.0]))), 2.0)
    # Sphere SDF |x| - 1: Hessian (I - n n^T) / r has Frobenius norm sqrt(2) / r.
    pts = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 4.0]])
    Hs = torch.stack([torch.autograd.functional.hessian(lambda p: p.norm() - 1.0, p) for p in pts])
    assert math.isclose(float(hessian_loss(Hs)), (math.sqrt(2) / 2 + math.sqrt(2) / 4) / 2, rel_tol=1e-5)


def test_sparsity():
    assert float(sparsity_loss(torch.zeros(5))) == 1.0
    assert math.isclose(float(sparsity_loss(torch.tensor([0.2, -0.2]), tau=5.0)), math.exp(-1.0), rel_tol=1e-6)


def test_smoothness_scale_invariant_and_edge_aware():
    torch.manual_seed(0)
    depth = torch.rand(2, 3, 6, 8) + 1.0
    flat = torch.full((2, 3, 3, 6, 8), 0.5)
    base = edge_aware_smoothness(depth, flat)
    assert torch.isclose(base, edge_aware_smoothness(depth * 4.0, flat))  # mean-normalised
    assert float(edge_aware_smoothness(torch.full((1, 4, 4), 7.0), torch.rand(1, 3, 4, 4))) == 0.0
    # A depth step that coincides with an image edge costs less than one in a flat image.
    step = torch.ones(1, 6, 8)
    step[..., 4:] = 3.0
    edge_img = torch.zeros(1, 3, 6, 8)
    edge_img[..., 4:] = 1.0
    assert edge_aware_smoothness(step, edge_img) < edge_aware_smoothness(step, torch.zeros(1, 3, 6, 8))
    # hand value: step of 2 / mean 2 = 1 at one of 7 column pairs, 0 vertically, flat image
    assert math.isclose(float(edge_aware_smoothness(step, torch.zeros(1, 3, 6, 8))), 1.0 / 7.0, rel_tol=1e-6)


def test_rgb_loss():
    pred = torch.zeros(1, 4, 3)
    target = torch.tensor([0.1, 0.2, 0.3]).expand(1, 4, 3)
    assert math.isclose(float(rgb_loss(pred, target)), 0.2, rel_tol=1e-6)
    mask = torch.tensor([[True, False, False, False]])
    assert math.isclose(float(rgb_loss(pred, target * torch.tensor([1, 2, 3, 4.0]).view(1, 4, 1), mask)), 0.2, rel_tol=1e-6)


def test_semantic_loss_ignore_and_values():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [5.0, 5.0, 5.0]]])
    labels = torch.tensor([[0, 255, 2]])
    expected = (F.cross_entropy(logits[0, 0:1], labels[0, 0:1]) + math.log(3.0)) / 2
    assert math.isclose(float(semantic_loss(logits, labels)), float(expected), rel_tol=1e-6)
    none = semantic_loss(logits.requires_grad_(True), torch.full((1, 3), 255))
    assert float(none) == 0.0 and none.requires_grad
    with pytest.raises(ValueError, match="labels outside"):
        semantic_loss(logits, torch.tensor([[0, 3, 1]]))


def test_prior_loss():
    from selfocc_core.losses.regularizers import prior_loss

    z = torch.tensor([-1.0, 0.0, 2.0])
    assert float(prior_loss(z, z)) == 0.0
    assert math.isclose(float(prior_loss(z + torch.tensor([0.3, -0.3, 0.0]), z)), 0.2, rel_tol=1e-6)
    with pytest.raises(ValueError):
        prior_loss(z, z[:2])


def test_free_space_loss_penalises_solid_only_where_the_ray_sees_through():
    from selfocc_core.losses.regularizers import free_space_loss

    # samples: solid seen through (T = 1), the surface (w = 1), solid behind it (T = 0)
    sdf = torch.tensor([[[-0.5, 0.0, -2.0]]], requires_grad=True)
    w = torch.tensor([[[0.0, 1.0, 0.0]]])
    loss = free_space_loss(sdf, w)
    assert math.isclose(float(loss), 0.5 / 3, rel_tol=1e-6)
    loss.backward()
    assert sdf.grad[0, 0, 0] < 0 and sdf.grad[0, 0, 2] == 0  # pushes the seen-through sample up only
    assert math.isclose(float(free_space_loss(sdf.detach(), w, margin=0.2)), (0.7 + 0.2) / 3, rel_tol=1e-6)
    with pytest.raises(ValueError):
        free_space_loss(sdf, w[..., :2])
