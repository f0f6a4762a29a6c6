"""SceneField sampling, finite-difference derivatives of analytic SDFs, decoder init, Planes."""

import pytest
import torch

from selfocc_core.geometry.voxel_grid import VoxelGridSpec
from selfocc_core.model.config import tiny_config
from selfocc_core.model.field import FieldDecoder, SceneField, sample_volume
from selfocc_core.model.tpv_lifter import Planes

GRID = VoxelGridSpec(-4.0, 4.0, -4.0, 4.0, -2.0, 2.0, 0.25)  # 32 x 32 x 16


def field_from(fn, grid=GRID, num_classes=0):
    c = grid.centers()  # [X, Y, Z, 3]
    sdf = fn(c)[None, None]
    rgb = torch.zeros(1, 3, *grid.shape)
    sem = torch.zeros(1, num_classes, *grid.shape) if num_classes else None
    return SceneField(grid, sdf, rgb, sem)


def interior_points(n, margin=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    lo = torch.tensor(GRID.lower) + margin
    hi = torch.tensor(GRID.upper) - margin
    return (lo + (hi - lo) * torch.rand(1, n, 3, generator=g))


def test_sampling_at_voxel_centres_returns_voxel_values():
    vol = torch.randn(1, 2, *GRID.shape)
    centres = GRID.centers()[None]  # [1, X, Y, Z, 3]
    vals, inside = sample_volume(vol, GRID, centres)
    assert vals.shape == (1, *GRID.shape, 2) and inside.all()
    torch.testing.assert_close(vals, vol.permute(0, 2, 3, 4, 1), atol=1e-5, rtol=1e-5)
    # midway between two voxels along y: the average
    p = GRID.index_to_metric(torch.tensor([[3.0, 4.5, 5.0]]))[None]
    v, _ = sample_volume(vol, GRID, p)
    torch.testing.assert_close(v[0, 0], 0.5 * (vol[0, :, 3, 4, 5] + vol[0, :, 3, 5, 5]), atol=1e-5, rtol=1e-5)


def test_plane_sdf_gradient_and_zero_hessian():
    f = field_from(lambda c: c[..., 2] - 0.3)
    p = interior_points(50, margin=GRID.voxel_size / 2)  # beyond the outer voxel centres values are clamped
    torch.testing.assert_close(f.sdf(p), p[..., 2] - 0.3, atol=1e-5, rtol=0)
    g = f.gradient(p)
    torch.testing.assert_close(g, torch.tensor([0.0, 0.0, 1.0]).expand_as(g), atol=1e-5, rtol=0)
    h = f.hessian(p)
    assert h.shape == (1, 50, 3, 3)
    assert h.abs().max() < 1e-4 and f.hessian_norm(p).max() < 1e-4


def test_sphere_sdf_gradient_is_unit_and_radial():
    centre = torch.tensor([0.5, -0.3, 0.1])
    f = field_from(lambda c: (c - centre).norm(dim=-1) - 1.0)
    p = interior_points(200, margin=0.6)
    r = (p - centre).norm(dim=-1)
    p = p[r > 1.2].view(1, -1, 3)  # away from the centre kink (curvature 1/r small vs voxel)
    g = f.gradient(p)
    assert (g.norm(dim=-1) - 1).abs().max() < 0.03
    radial = (p - centre) / (p - centre).norm(dim=-1, keepdim=True)
    assert (g / g.norm(dim=-1, keepdim=True) * radial).sum(-1).min() > 0.995
    # Hessian of |x|: trace = 2 / r (two unit curvatures of the sphere through x)
    tr = f.hessian(p).diagonal(dim1=-2, dim2=-1).sum(-1)
    rr = (p - centre).norm(dim=-1)
    assert ((tr - 2 / rr).abs() / (2 / rr)).median() < 0.1


def test_query_with_gradient_matches_separate_calls_and_outside_is_free():
    f = field_from(lambda c: c[..., 0] - 1.0, num_classes=3)
    p = torch.tensor([[[0.0, 0.0, 0.0], [2.5, 1.0, -1.0], [10.0, 0.0, 0.0], [0.0, 0.0, 9.0]]])
    out, grad = f.query(p, with_gradient=True)
    assert out.sdf.shape == (1, 4) and out.rgb.shape == (1, 4, 3) and out.semantics.shape == (1, 4, 3)
    torch.testing.assert_close(out.sdf[:, :2], torch.tensor([[-1.0, 1.5]]), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.sdf, f.sdf(p))
    torch.testing.assert_close(grad, f.gradient(p))
    # outside the box: positive, equal to the distance to the box
    torch.testing.assert_close(out.sdf[0, 2:], torch.tensor([6.0, 7.0]))
    torch.testing.assert_close(out.rgb, torch.full((1, 4, 3), 0.5))
    with pytest.raises(ValueError, match="points"):
        f.sdf(torch.zeros(1, 4, 2))


def test_decoder_initial_sdf_is_ground_plane_and_volumes():
    cfg = tiny_config(num_classes=4, ground_height=0.5)
    dec = FieldDecoder(cfg)
    X, Y, Z = cfg.scene.shape
    C = cfg.embed_dim
    planes = Planes(xy=torch.randn(2, C, 8, 8), yz=torch.randn(2, C, 8, 3), xz=torch.randn(2, C, 8, 3))
    field = dec(planes)
    sdf = field.sdf_volume()
    assert sdf.shape == (2, X, Y, Z)
    z = cfg.scene.centers()[..., 2]
    assert (sdf - (z - 0.5)).abs().max() < 0.1
    assert field.semantic_volume().shape == (2, 4, X, Y, Z)
    assert field.rgb_volume().shape == (2, 3, X, Y, Z)
    assert field.occupancy_volume().dtype == torch.bool
    # ground plane -> unit upward gradient in the interior
    g = field.gradient_volume()[:, :, 2:-2, 2:-2, 1:-1]
    assert (g[:, 2] - 1).abs().max() < 0.1
    pos = FieldDecoder(tiny_config(sdf_init="positive", sdf_init_offset=2.0))(planes)
    assert (pos.sdf_volume() > 1.8).all()


def test_planes_volume_is_broadcast_sum():
    xy = torch.arange(6.0).view(1, 1, 2, 3)
    yz = torch.arange(12.0).view(1, 1, 3, 4) * 10
    xz = torch.arange(8.0).view(1, 1, 2, 4) * 100
    vol = Planes(xy, yz, xz).volume((2, 3, 4))
    for i, j, k in [(0, 0, 0), (1, 2, 3), (1, 0, 2)]:
        assert vol[0, 0, i, j, k] == xy[0, 0, i, j] + yz[0, 0, j, k] + xz[0, 0, i, k]
    zl = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])
    vol2 = Planes(xy, z_line=zl).volume((2, 3, 4))
    assert vol2[0, 0, 1, 2, 3] == xy[0, 0, 1, 2] + 4.0
    assert Planes(xy).volume((4, 6, 5)).shape == (1, 1, 4, 6, 5)
