"""NeuS rendering: known SDFs render known depths; weights; float64 gradcheck; field + model path."""

import math

import pytest
import torch

from selfocc_core.geometry.voxel_grid import VoxelGridSpec
from selfocc_core.model.config import tiny_config
from selfocc_core.model.field import SceneField
from selfocc_core.model.selfocc import SelfOccModel
from selfocc_core.rendering.neus import SingleVarianceNetwork, neus_alpha, neus_render, weights_from_alpha
from selfocc_core.rendering.ray_sampler import generate_rays, sample_along_rays


def plane_along_ray(d, S=256, near=0.1, far=20.0, inv_s=2000.0, stratified=False):
    """A wall at distance d[r] facing ray r: sdf(t) = d - t, gradient = -direction."""
    R = d.shape[0]
    t, dt = sample_along_rays(torch.full((1, R), near), torch.full((1, R), far), S, stratified,
                              generator=torch.Generator().manual_seed(0))
    dirs = torch.nn.functional.normalize(torch.randn(1, R, 3, generator=torch.Generator().manual_seed(1)), dim=-1)
    sdf = d.view(1, R, 1) - t
    grads = -dirs[:, :, None, :].expand(1, R, S, 3)
    rgb = torch.zeros(1, R, S, 3)
    rgb[..., 0] = (t < d.view(1, R, 1)).float()  # red in front of the wall, green behind
    rgb[..., 1] = 1 - rgb[..., 0]
    zpu = torch.full((1, R), 0.8)
    return neus_render(t, dt, sdf, grads, dirs, inv_s, zpu, rgb, far=torch.full((1, R), far))


@pytest.mark.parametrize("stratified", [False, True])
def test_plane_renders_its_distance(stratified):
    d = torch.tensor([2.0, 7.3, 15.55])
    out = plane_along_ray(d, stratified=stratified)
    dt = (20.0 - 0.1) / 256
    torch.testing.assert_close(out.distance[0], d, atol=dt, rtol=0)
    torch.testing.assert_close(out.depth[0], 0.8 * out.distance[0])
    torch.testing.assert_close(out.accumulation[0], torch.ones(3), atol=1e-3, rtol=0)
    assert (out.weights.sum(-1) <= 1 + 1e-5).all()
    # weight mass sits in the bins around the surface; colour is what lies behind the surface start
    peak = out.t[0].gather(-1, out.weights[0].argmax(-1, keepdim=True))[:, 0]
    assert (peak - d).abs().max() < 2 * dt


def test_soft_surface_at_low_sharpness_and_empty_space():
    d = torch.tensor([5.0])
    soft = plane_along_ray(d, inv_s=5.0)
    assert soft.weights.max() < 0.2 and abs(soft.distance.item() - 5.0) < 0.6
    # all positive SDF far from any surface: nothing accumulates, distance falls to far
    S = 16
    t, dt = sample_along_rays(torch.full((1, 2), 0.5), torch.full((1, 2), 10.0), S, False)
    dirs = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]])
    out = neus_render(t, dt, torch.full((1, 2, S), 5.0), torch.zeros(1, 2, S, 3) + torch.tensor([0, 0, 1.0]),
                      dirs, 100.0, torch.ones(1, 2), torch.rand(1, 2, S, 3), far=torch.full((1, 2), 10.0),
                      ray_mask=torch.tensor([[True, False]]))
    assert out.accumulation.max() < 1e-3
    torch.testing.assert_close(out.distance, torch.full((1, 2), 10.0), atol=1e-2, rtol=0)
    assert out.weights[0, 1].abs().max() == 0  # masked ray


def test_weights_from_alpha_by_hand():
    a = torch.tensor([0.5, 0.5, 1.0, 0.3])
    w = weights_from_alpha(a)
    torch.testing.assert_close(w, torch.tensor([0.5, 0.25, 0.25, 0.0]), atol=1e-6, rtol=0)


def test_cos_anneal_ratio_zero_uses_half_cosine():
    # ratio 0: iter_cos = -relu(-cos/2 + 1/2); a surface seen edge-on (cos = 0) still gets opacity
    sdf = torch.tensor([[[0.0]]])
    g = torch.tensor([[[[0.0, 0.0, 1.0]]]])
    d = torch.tensor([[[1.0, 0.0, 0.0]]])
    dt = torch.tensor([[[0.2]]])
    a1 = neus_alpha(sdf, g, d, dt, 50.0, cos_anneal_ratio=1.0)
    a0 = neus_alpha(sdf, g, d, dt, 50.0, cos_anneal_ratio=0.0)
    assert a1.item() < 1e-3
    s = 50.0
    expect = (1 / (1 + math.exp(-s * 0.05)) - 1 / (1 + math.exp(s * 0.05))) / (1 / (1 + math.exp(-s * 0.05)))
    assert a0.item() == pytest.approx(expect, rel=1e-4)


def test_single_variance_network():
    v = SingleVarianceNetwork(0.3)
    assert v().item() == pytest.approx(math.exp(3.0), rel=1e-6)
    v().backward()
    assert v.variance.grad.item() == pytest.approx(10 * math.exp(3.0), rel=1e-5)


def test_renderer_gradcheck_float64():
    g = torch.Generator().manual_seed(0)
    B, R, S, C = 1, 2, 5, 2
    t = torch.sort(torch.rand(B, R, S, generator=g, dtype=torch.float64) * 4 + 0.5, dim=-1)[0]
    dt = torch.full((B, R, S), 0.6, dtype=torch.float64)
    sdf = (2.0 - t + 0.1 * torch.randn(B, R, S, generator=g, dtype=torch.float64)).requires_grad_()
    grads = torch.randn(B, R, S, 3, generator=g, dtype=torch.float64).requires_grad_()
    dirs = torch.nn.functional.normalize(torch.randn(B, R, 3, generator=g, dtype=torch.float64), dim=-1)
    inv_s = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    rgb = torch.rand(B, R, S, 3, generator=g, dtype=torch.float64).requires_grad_()
    sem = torch.randn(B, R, S, C, generator=g, dtype=torch.float64).requires_grad_()
    zpu = torch.rand(B, R, generator=g, dtype=torch.float64) + 0.5

    def fn(sdf, grads, inv_s, rgb, sem):
        out = neus_render(t, dt, sdf, grads, dirs, inv_s, zpu, rgb, sem, cos_anneal_ratio=0.7)
        assert out.depth.dtype == torch.float64
        return out.depth, out.rgb, out.semantics, out.accumulation

    assert torch.autograd.gradcheck(fn, (sdf, grads, inv_s, rgb, sem), eps=1e-6, atol=1e-6)


def test_field_ground_plane_renders_analytic_depth():
    """Through the real path: SDF z - 0 stored on a grid, rays from a camera 2 m up pitched down."""
    cfg = tiny_config(scene=VoxelGridSpec(-8.0, 24.0, -8.0, 8.0, -2.0, 6.0, 0.5), init_variance=0.5, num_samples=128)
    model = SelfOccModel(cfg).eval()
    c = cfg.scene.centers()
    field = SceneField(cfg.scene, c[..., 2][None, None], torch.zeros(1, 3, *cfg.scene.shape))
    pitch = math.radians(20)  # looking forward and down
    R_fwd = torch.tensor([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])
    Ry = torch.tensor([[math.cos(pitch), 0, math.sin(pitch)], [0, 1, 0], [-math.sin(pitch), 0, math.cos(pitch)]])
    T = torch.eye(4)
    T[:3, :3] = Ry @ R_fwd
    T[:3, 3] = torch.tensor([0.0, 0.0, 2.0])
    H, W = 9, 9
    K = torch.tensor([[10.0, 0, 4], [0, 10.0, 4], [0, 0, 1]])
    rays = generate_rays(K.view(1, 1, 3, 3), T.view(1, 1, 4, 4), (H, W), 1, False, cfg.scene)
    out = model.render(field, rays)
    assert out.points.shape == (1, 81, 128, 3) and out.gradients.shape == (1, 81, 128, 3)
    dz = rays.directions[0, :, 2]
    hits = dz < -0.15  # rays that reach the ground inside the box
    t_true = 2.0 / -dz[hits]
    assert hits.sum() > 20
    step = (rays.far - rays.near)[0, hits] / 128
    err = (out.distance[0, hits] - t_true).abs()
    assert (err < 2 * step + 0.05).all(), err.max()
    torch.testing.assert_close(out.accumulation[0, hits], torch.ones(int(hits.sum())), atol=1e-2, rtol=0)
    torch.testing.assert_close(out.depth, out.distance * rays.z_per_unit)
    # gradients at the samples are the plane normal
    torch.testing.assert_close(out.gradients[0, hits][..., 2].mean(), torch.tensor(1.0), atol=1e-3, rtol=0)
