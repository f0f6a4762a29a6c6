"""Deformable attention against a brute-force loop with hand-written bilinear sampling."""

import math

import pytest
import torch

from selfocc_core.model.deformable_attention import DeformableAttention, ms_deform_attn
from selfocc_core.model.tpv_lifter import ImageCrossAttention, project_reference_points


def bilinear(img, x, y):
    """img [D, H, W]; (x, y) in [0, 1] image coordinates; zero outside (align_corners=False)."""
    D, H, W = img.shape
    px, py = x * W - 0.5, y * H - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    fx, fy = px - x0, py - y0
    val = torch.zeros(D, dtype=img.dtype)
    for dx, wx in ((0, 1 - fx), (1, fx)):
        for dy, wy in ((0, 1 - fy), (1, fy)):
            xi, yi = x0 + dx, y0 + dy
            if 0 <= xi < W and 0 <= yi < H:
                val = val + wx * wy * img[:, yi, xi]
    return val


def brute_force(values, loc, w):
    B, Q, M, L, P, _ = loc.shape
    Dh = values[0].shape[2]
    out = torch.zeros(B, Q, M * Dh, dtype=loc.dtype)
    for b in range(B):
        for q in range(Q):
            for m in range(M):
                acc = torch.zeros(Dh, dtype=loc.dtype)
                for l in range(L):
                    for p in range(P):
                        x, y = loc[b, q, m, l, p].tolist()
                        acc = acc + w[b, q, m, l, p] * bilinear(values[l][b, m], x, y)
                out[b, q, m * Dh:(m + 1) * Dh] = acc
    return out


def test_ms_deform_attn_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    B, Q, M, Dh, P = 2, 5, 2, 3, 3
    shapes = [(6, 7), (3, 4)]
    values = [torch.randn(B, M, Dh, h, w, generator=g, dtype=torch.float64) for h, w in shapes]
    # include locations outside [0, 1] (partly or fully outside: zero padding)
    loc = torch.rand(B, Q, M, len(shapes), P, 2, generator=g, dtype=torch.float64) * 1.4 - 0.2
    w = torch.rand(B, Q, M, len(shapes), P, generator=g, dtype=torch.float64)
    out = ms_deform_attn(values, loc, w)
    ref = brute_force(values, loc, w)
    assert out.shape == (B, Q, M * Dh)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_ms_deform_attn_reads_pixel_centre_exactly():
    v = torch.arange(12.0).view(1, 1, 1, 3, 4)
    # pixel (u=2, v=1) centre is ((2 + 0.5) / 4, (1 + 0.5) / 3)
    loc = torch.tensor([2.5 / 4, 1.5 / 3]).view(1, 1, 1, 1, 1, 2)
    out = ms_deform_attn([v], loc, torch.ones(1, 1, 1, 1, 1))
    assert out.item() == pytest.approx(v[0, 0, 0, 1, 2].item())


def test_ms_deform_attn_rejects_bad_shapes():
    with pytest.raises(ValueError, match="levels"):
        ms_deform_attn([torch.zeros(1, 1, 1, 2, 2)], torch.zeros(1, 1, 1, 2, 1, 2), torch.zeros(1, 1, 1, 2, 1))


def test_module_equals_functional_with_its_offsets():
    torch.manual_seed(0)
    C, M, L, D, P = 8, 2, 2, 3, 2
    attn = DeformableAttention(C, M, L, D, P, value_dim=5).double()
    torch.nn.init.normal_(attn.sampling_offsets.weight, std=0.1)
    torch.nn.init.normal_(attn.attention_weights.weight, std=0.1)
    q = torch.randn(1, 4, C, dtype=torch.float64)
    ref = torch.rand(1, 4, 1, D, 2, dtype=torch.float64)
    feats = [torch.randn(1, 5, 6, 8, dtype=torch.float64), torch.randn(1, 5, 3, 4, dtype=torch.float64)]
    out = attn(q, ref, feats)
    # recompute by hand: offsets in pixels of each level, softmax over L*D*P
    off = attn.sampling_offsets(q).view(1, 4, M, L, D, P, 2)
    wts = attn.attention_weights(q).view(1, 4, M, -1).softmax(-1).view(1, 4, M, L, D * P)
    loc = torch.stack([ref[:, :, None, 0, :, None, :] + off[:, :, :, l] / torch.tensor([f.shape[-1], f.shape[-2]], dtype=q.dtype)
                       for l, f in enumerate(feats)], 3)  # [1, 4, M, L, D, P, 2]
    vals = [torch.einsum("oc,bchw->bohw", attn.value_proj.weight, f) + attn.value_proj.bias.view(1, -1, 1, 1) for f in feats]
    vals = [v.view(1, M, C // M, *v.shape[-2:]) for v in vals]
    expect = attn.output_proj(brute_force(vals, loc.reshape(1, 4, M, L, D * P, 2), wts))
    torch.testing.assert_close(out, expect, rtol=1e-9, atol=1e-9)


def test_initial_offsets_point_in_head_directions():
    attn = DeformableAttention(8, 4, 1, 1, 2)
    off = attn.sampling_offsets.bias.view(4, 1, 1, 2, 2)
    # head 0 looks along +x, head 1 along +y; point p at distance p + 1
    torch.testing.assert_close(off[0, 0, 0], torch.tensor([[1.0, 0.0], [2.0, 0.0]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(off[1, 0, 0], torch.tensor([[0.0, 1.0], [0.0, 2.0]]), atol=1e-6, rtol=0)


def test_image_cross_attention_averages_over_seeing_cameras_only():
    torch.manual_seed(0)
    C, B, N, Q = 8, 1, 2, 3
    ica = ImageCrossAttention(C, 2, 1, 2, 2, value_dim=C)
    q = torch.randn(B, Q, C)
    ref = torch.rand(B * N, Q, 1, 2, 2)
    feats = torch.randn(B * N, C, 5, 6)
    mask = torch.tensor([[[True, True, False], [False, True, False]]])
    out = ica(q, ref, mask, [feats])
    single0 = ica(q, ref[:1], torch.ones(1, 1, Q, dtype=torch.bool), [feats[:1]])
    single1 = ica(q, ref[1:], torch.ones(1, 1, Q, dtype=torch.bool), [feats[1:]])
    torch.testing.assert_close(out[0, 0], single0[0, 0])  # seen by camera 0 only
    bias_only = ica.attn.output_proj.bias
    torch.testing.assert_close(out[0, 1] - bias_only, 0.5 * (single0[0, 1] - bias_only + single1[0, 1] - bias_only))
    torch.testing.assert_close(out[0, 2], bias_only)  # seen by no camera: no image information
    # changing camera 1's features cannot affect query 0
    out2 = ica(q, ref, mask, [torch.cat([feats[:1], torch.randn(1, C, 5, 6)])])
    torch.testing.assert_close(out2[0, 0], out[0, 0])


def test_project_reference_points_centre_and_behind():
    # camera at the ego origin looking along +x (optical z = ego x)
    T = torch.tensor([[0.0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]]).view(1, 1, 4, 4)
    K = torch.tensor([[50.0, 0, 39.5], [0, 50.0, 29.5], [0, 0, 1]]).view(1, 1, 3, 3)
    pts = torch.tensor([[[10.0, 0.0, 0.0], [-10.0, 0.0, 0.0]], [[-5.0, 0.0, 0.0], [-5.0, 1.0, 0.0]]])  # [Q=2, D=2, 3]
    ref, mask = project_reference_points(pts, K, T, (60, 80))
    torch.testing.assert_close(ref[0, 0, 0, 0], torch.tensor([0.5, 0.5]))
    assert mask.tolist() == [[[True, False]]]


def test_image_cross_attention_rebatch_equals_dense():
    torch.manual_seed(0)
    C, B, N, Q = 8, 2, 3, 7
    ica = ImageCrossAttention(C, 2, 2, 2, 2, value_dim=C)
    torch.nn.init.normal_(ica.attn.sampling_offsets.weight, std=0.3)
    torch.nn.init.normal_(ica.attn.attention_weights.weight, std=0.3)
    q = torch.randn(B, Q, C, requires_grad=True)
    ref = torch.rand(B * N, Q, 1, 2, 2)
    feats = [torch.randn(B * N, C, 6, 8), torch.randn(B * N, C, 3, 4)]
    mask = torch.rand(B, N, Q) < 0.4
    out = ica(q, ref, mask, feats)
    g = torch.autograd.grad(out.square().sum(), q)[0]
    ica.rebatch = False
    dense = ica(q, ref, mask, feats)
    g_dense = torch.autograd.grad(dense.square().sum(), q)[0]
    torch.testing.assert_close(out, dense, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g, g_dense, atol=1e-5, rtol=1e-5)


def test_sampling_stays_accurate_under_bf16_autocast():
    # a 200-wide map with a linear ramp: bf16 locations would be off by ~1 pixel
    W = 200
    v = torch.arange(W, dtype=torch.float32).view(1, 1, 1, 1, W).expand(1, 1, 1, 2, W).contiguous()
    x = torch.tensor([0.3, 0.61, 0.8771])
    loc = torch.stack([x, torch.full_like(x, 0.5)], -1).view(1, 3, 1, 1, 1, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ms_deform_attn([v.bfloat16()], loc, torch.ones(1, 3, 1, 1, 1))
    # bf16 value storage is exact for integers < 256; sampling must use fp32 coordinates
    torch.testing.assert_close(out.float().view(3), x * W - 0.5, atol=0.02, rtol=0)


def test_plane_pillars_and_camera_visibility_follow_ego_axes():
    from selfocc_core.geometry.voxel_grid import VoxelGridSpec
    from selfocc_core.model.tpv_lifter import plane_pillar_points

    scene = VoxelGridSpec(-10.0, 10.0, -10.0, 10.0, -2.0, 2.0, 1.0)
    xy = plane_pillar_points(scene, "xy", (4, 2), 2)  # rows along x, columns along y, heights along z
    assert xy.shape == (8, 2, 3)
    torch.testing.assert_close(xy[0, 0], torch.tensor([-7.5, -5.0, -1.0]))
    torch.testing.assert_close(xy[1, 1], torch.tensor([-7.5, 5.0, 1.0]))  # row 0, column 1, upper point
    torch.testing.assert_close(xy[2], torch.tensor([[-2.5, -5.0, -1.0], [-2.5, -5.0, 1.0]]))
    yz = plane_pillar_points(scene, "yz", (2, 4), 2)  # rows y, columns z, pillar along x
    torch.testing.assert_close(yz[1, :, 0], torch.tensor([-5.0, 5.0]))
    torch.testing.assert_close(yz[1, 0, 1:], torch.tensor([-5.0, -0.5]))
    xz = plane_pillar_points(scene, "xz", (4, 4), 2)  # rows x, columns z, pillar along y
    torch.testing.assert_close(xz[5, 0], torch.tensor([-2.5, -5.0, -0.5]))

    # a forward camera (90 deg field of view) at the origin sees the xy pillars in front, not behind
    T = torch.tensor([[0.0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]]).view(1, 1, 4, 4)
    K = torch.tensor([[50.0, 0, 49.5], [0, 50.0, 49.5], [0, 0, 1]]).view(1, 1, 3, 3)
    pts = plane_pillar_points(scene, "xy", (20, 20), 4)
    _, mask = project_reference_points(pts, K, T, (100, 100))
    x, y = pts[:, 0, 0], pts[:, 0, 1]
    clear = (x - y.abs()).abs() > 1e-3  # skip pillars exactly on the field-of-view edge
    assert clear.sum() > 300
    assert torch.equal(mask[0, 0][clear], (x > y.abs())[clear])


# ----------------------------------------------------------------------------- levels in one grid_sample


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_levels_equal_per_level_sampling(dtype):
    from selfocc_core.model.deformable_attention import ms_deform_attn_per_level

    g = torch.Generator().manual_seed(3)
    B, Q, M, Dh, P = 2, 40, 3, 4, 5
    shapes = [(12, 20), (6, 10), (3, 5), (1, 2)]
    values = [torch.randn(B, M, Dh, h, w, generator=g, dtype=dtype) for h, w in shapes]
    loc = torch.rand(B, Q, M, len(shapes), P, 2, generator=g, dtype=dtype) * 1.6 - 0.3  # in, on and past the edges
    loc[0, 0, 0, :, 0] = torch.tensor([1.0, 1.0], dtype=dtype)  # exactly on the far border
    w = torch.rand(B, Q, M, len(shapes), P, generator=g, dtype=dtype)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(ms_deform_attn(values, loc, w), ms_deform_attn_per_level(values, loc, w),
                               rtol=tol, atol=tol)


def test_padded_projection_equals_per_level_projection():
    from selfocc_core.model.deformable_attention import PaddedMaps

    torch.manual_seed(0)
    attn = DeformableAttention(16, 4, 2, 1, 2, value_dim=8)
    torch.nn.init.normal_(attn.value_proj.bias)  # a non-zero bias must not leak into the padding
    maps = [torch.randn(3, 8, 6, 10), torch.randn(3, 8, 3, 5)]
    for stack in (attn.project_values(maps), attn.project_values(PaddedMaps.of(maps))):
        for lvl, m in enumerate(maps):
            want = torch.nn.functional.conv2d(m, attn.value_proj.weight[:, :, None, None], attn.value_proj.bias)
            torch.testing.assert_close(stack.level(lvl), want.view(3, 4, 4, *m.shape[-2:]))
        assert (stack.maps[:, 1, :, :, 3:, :] == 0).all() and (stack.maps[:, 1, :, :, :, 5:] == 0).all()


def test_model_output_equals_the_per_level_implementation(monkeypatch):
    """The whole TPV lifter with the fused sampler against the same weights with one grid_sample
    per level (the implementation before the fusion)."""
    import selfocc_core.model.deformable_attention as da
    from selfocc_core.model.tpv_lifter import TPVLifter
    from selfocc_core.training.config import load_experiment_config
    from test_predictor_core import make_frame

    cfg = load_experiment_config("tiny_synth", ["model.tpv_h=8", "model.tpv_w=8"]).model
    torch.manual_seed(0)
    lifter = TPVLifter(cfg).eval()
    for mod in lifter.modules():  # non-trivial offsets and weights
        if isinstance(mod, DeformableAttention):
            torch.nn.init.normal_(mod.sampling_offsets.weight, std=0.5)
            torch.nn.init.normal_(mod.attention_weights.weight, std=0.5)
    frame = make_frame()
    feats = [torch.randn(3, cfg.fpn_channels, 8, 14), torch.randn(3, cfg.fpn_channels, 4, 7)]
    args = (feats, frame.K[None], frame.T_ego_cam[None], frame.image_size)
    with torch.no_grad():
        fused = lifter(*args)
        monkeypatch.setattr(da, "ms_deform_attn", lambda stack, loc, w: da.ms_deform_attn_per_level(
            [stack.level(i) for i in range(stack.num_levels)], loc, w))
        ref = lifter(*args)
    for a, b in zip((fused.xy, fused.yz, fused.xz), (ref.xy, ref.yz, ref.xz)):
        assert a.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_pillars_of_the_three_planes_projected_at_once_equal_one_by_one():
    from selfocc_core.model.tpv_lifter import PLANES, TPVLifter
    from selfocc_core.training.config import load_experiment_config
    from test_predictor_core import make_frame

    lifter = TPVLifter(load_experiment_config("tiny_synth", ["model.tpv_h=8", "model.tpv_w=8"]).model)
    f = make_frame()
    together = lifter._project_pillars(f.K[None], f.T_ego_cam[None], f.image_size)
    for p in PLANES:
        ref, mask = project_reference_points(getattr(lifter, f"pillar_{p}"), f.K[None], f.T_ego_cam[None], f.image_size)
        assert torch.equal(together[p][0], ref) and torch.equal(together[p][1], mask) and mask.any()
