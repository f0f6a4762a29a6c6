"""Reprojection: a textured fronto-parallel plane seen by a laterally shifted source camera."""

import numpy as np
import pytest
import torch

from selfocc_core.geometry.camera import pixel_grid
from selfocc_core.geometry.rays import camera_rays
from selfocc_core.geometry.transforms import T_FLU_OPTICAL
from selfocc_core.losses.reprojection import (
    RigView,
    images_to_rays,
    project_into_rig,
    proposal_errors,
    rays_to_images,
    reprojection_loss,
    sample_at_pixels,
)

H, W = 24, 32
FX = FY = 30.0
CX, CY = (W - 1) / 2, (H - 1) / 2
PLANE_Z = 10.0  # metres in front of the anchor camera
BASELINE = 1.0  # source camera sits 1 m to the right (camera x)


def texture(X, Y):
    r = 0.5 + 0.25 * torch.sin(2.1 * X) + 0.2 * torch.cos(1.3 * Y + 0.5 * X)
    g = 0.5 + 0.3 * torch.cos(1.7 * X - 0.4 * Y)
    b = 0.5 + 0.3 * torch.sin(0.9 * Y + 1.9 * X + 1.0)
    return torch.stack([r, g, b], dim=0)


def plane_image(cam_x: float):
    """Image [3, H, W] of the plane Z = PLANE_Z from a camera at x = cam_x (anchor camera frame)."""
    uv = pixel_grid(H, W)
    X = (uv[..., 0] - CX) / FX * PLANE_Z + cam_x
    Y = (uv[..., 1] - CY) / FY * PLANE_Z
    return texture(X, Y)


def T_ego_anchor():
    T = torch.tensor(T_FLU_OPTICAL, dtype=torch.float32)
    T[:3, 3] = torch.tensor([1.5, 0.2, 1.6])
    return T


def shifted(T_ego_cam, dx):
    """The same camera moved by dx along its own x axis."""
    T_cam_camb = torch.eye(4)
    T_cam_camb[0, 3] = dx
    return T_ego_cam @ T_cam_camb


def K():
    return torch.tensor([[FX, 0, CX], [0, FY, CY], [0, 0, 1.0]])


def anchor_rays():
    T = T_ego_anchor()
    uv = pixel_grid(H, W).reshape(1, H * W, 2)
    o, d, zpu = camera_rays(uv, K()[None], T[None])
    cam = torch.zeros(1, H * W, dtype=torch.long)
    return o, d, zpu, cam, uv


def rig(image, T_ego_cam):
    return RigView(images=image[None, None], K=K()[None, None], T_ego0_cam=T_ego_cam[None, None])


DEPTHS = torch.tensor([5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.5, 15.0, 20.0])


def test_correct_depth_proposal_has_lowest_error():
    o, d, zpu, cam, uv = anchor_rays()
    target = plane_image(0.0)
    src = rig(plane_image(BASELINE), shifted(T_ego_anchor(), BASELINE))
    target_rgb = sample_at_pixels(target[None, None], cam, uv)
    t = DEPTHS.view(1, 1, -1) / zpu.unsqueeze(-1)  # ray distance giving each z-depth
    points = o.unsqueeze(2) + t.unsqueeze(-1) * d.unsqueeze(2)
    err, valid = proposal_errors(target_rgb, points, cam, src, (1, H, W))
    assert err.shape == valid.shape == (1, H * W, len(DEPTHS))
    # Compare proposals on rays valid for every proposal (inside the source for all depths).
    common = valid.all(-1)
    assert common.float().mean() > 0.6
    mean_err = (err * common.unsqueeze(-1)).sum(1) / common.sum()
    best = int(mean_err.argmin())
    assert float(DEPTHS[best]) == PLANE_Z, mean_err
    assert float(mean_err[0, best]) < 0.02
    assert float(mean_err[0, best]) < 0.3 * float(mean_err[0, mean_err[0] != mean_err[0, best]].min())


def test_weights_on_the_correct_proposal_minimise_the_loss():
    o, d, zpu, cam, uv = anchor_rays()
    target = plane_image(0.0)
    src = rig(plane_image(BASELINE), shifted(T_ego_anchor(), BASELINE))
    target_rgb = sample_at_pixels(target[None, None], cam, uv)
    t = DEPTHS.view(1, 1, -1) / zpu.unsqueeze(-1)
    losses = []
    for k in range(len(DEPTHS)):
        w = torch.zeros_like(t)
        w[..., k] = 1.0
        out = reprojection_loss(target_rgb, o, d, cam, uv, [src], (1, H, W), t=t, weights=w, automask=False)
        losses.append(float(out.loss))
    assert int(np.argmin(losses)) == int((DEPTHS == PLANE_Z).nonzero())
    # Gradient reaches the weights, and lowering weight on a wrong proposal lowers the loss.
    w = torch.full_like(t, 1.0 / len(DEPTHS)).requires_grad_(True)
    out = reprojection_loss(target_rgb, o, d, cam, uv, [src], (1, H, W), t=t, weights=w, automask=False)
    out.loss.backward()
    g = w.grad[0][out.mask[0]].mean(0)
    assert int(g.argmin()) == int((DEPTHS == PLANE_Z).nonzero())


def test_rendered_depth_mode_gradient_points_to_the_plane():
    o, d, zpu, cam, uv = anchor_rays()
    target = plane_image(0.0)
    src = rig(plane_image(BASELINE), shifted(T_ego_anchor(), BASELINE))
    target_rgb = sample_at_pixels(target[None, None], cam, uv)
    at_plane = PLANE_Z / zpu
    loss_true = reprojection_loss(target_rgb, o, d, cam, uv, [src], (1, H, W), distance=at_plane, automask=False).loss
    dist = (at_plane * 0.9).requires_grad_(True)  # too close
    loss_near = reprojection_loss(target_rgb, o, d, cam, uv, [src], (1, H, W), distance=dist, automask=False).loss
    loss_near.backward()
    assert float(loss_true) < 0.02 < float(loss_near.detach())
    assert float(dist.grad.sum()) < 0  # descending the loss pushes the depth out towards the plane


def test_min_over_sources_and_automask():
    o, d, zpu, cam, uv = anchor_rays()
    target = plane_image(0.0)
    good = rig(plane_image(BASELINE), shifted(T_ego_anchor(), BASELINE))
    torch.manual_seed(0)
    bad = rig(torch.rand(3, H, W), shifted(T_ego_anchor(), -BASELINE))
    target_rgb = sample_at_pixels(target[None, None], cam, uv)
    dist = (PLANE_Z / zpu)
    kw = dict(distance=dist, automask=False)
    only_good = reprojection_loss(target_rgb, o, d, cam, uv, [good], (1, H, W), **kw)
    only_bad = reprojection_loss(target_rgb, o, d, cam, uv, [bad], (1, H, W), **kw)
    both = reprojection_loss(target_rgb, o, d, cam, uv, [bad, good], (1, H, W), **kw)
    ok = only_good.mask & only_bad.mask
    expect = torch.minimum(only_good.per_ray, only_bad.per_ray)
    assert torch.allclose(both.per_ray[ok], expect[ok])
    assert float(both.loss) < 0.5 * float(only_bad.loss)
    # A source identical to the target (e.g. a scene moving with the camera): the identity
    # loss is ~0, so auto-masking drops (nearly) every ray.
    static = rig(target, shifted(T_ego_anchor(), BASELINE))
    masked = reprojection_loss(target_rgb, o, d, cam, uv, [static], (1, H, W), distance=dist, automask=True)
    unmasked = reprojection_loss(target_rgb, o, d, cam, uv, [static], (1, H, W), distance=dist, automask=False)
    assert masked.mask.float().mean() < 0.05
    assert unmasked.mask.float().mean() > 0.6


def test_project_into_rig_prefers_same_camera_then_others():
    # Two cameras: 0 looks forward, 1 looks left (ego frame FLU).
    T0 = torch.tensor(T_FLU_OPTICAL, dtype=torch.float32)
    Rz = torch.tensor([[0.0, -1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])  # yaw +90 deg
    T1 = Rz @ T0
    imgs = torch.stack([torch.full((3, H, W), 0.25), torch.full((3, H, W), 0.75)])[None]
    r = RigView(images=imgs, K=K().expand(1, 2, 3, 3), T_ego0_cam=torch.stack([T0, T1])[None])
    pts = torch.tensor([[[10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [-10.0, 0.0, 0.0]]])  # front, left, behind
    col, valid = project_into_rig(pts, r, torch.zeros(1, 3, dtype=torch.long), "all")
    assert valid.tolist() == [[True, True, False]]
    assert torch.allclose(col[0, 0], torch.full((3,), 0.25)) and torch.allclose(col[0, 1], torch.full((3,), 0.75))
    col, valid = project_into_rig(pts, r, torch.zeros(1, 3, dtype=torch.long), "same")
    assert valid.tolist() == [[True, False, False]]


def test_ray_grid_round_trip_and_shape_errors():
    x = torch.rand(2, 3 * 4 * 5, 6)
    img = rays_to_images(x.unsqueeze(-1), (3, 4, 5))
    assert img.shape == (2, 3, 6, 1, 4, 5)
    assert torch.equal(images_to_rays(img[:, :, :, 0]), x)
    with pytest.raises(ValueError, match="ray grid"):
        rays_to_images(x, (3, 4, 4))
    o, d, zpu, cam, uv = anchor_rays()
    with pytest.raises(ValueError, match="either t"):
        reprojection_loss(torch.zeros(1, H * W, 3), o, d, cam, uv, [rig(plane_image(0), T_ego_anchor())], (1, H, W))


def test_background_proposal_explains_a_scene_at_infinity():
    # Source identical to the target while the camera moved: only "infinitely far" fits.
    o, d, zpu, cam, uv = anchor_rays()
    target = plane_image(0.0)
    src = rig(target, shifted(T_ego_anchor(), BASELINE))
    target_rgb = sample_at_pixels(target[None, None], cam, uv)
    t = DEPTHS.view(1, 1, -1) / zpu.unsqueeze(-1)
    surface = torch.zeros_like(t)
    surface[..., 2] = 1.0  # all weight on a surface 7 m away
    kw = dict(t=t, automask=False)
    on_surface = reprojection_loss(target_rgb, o, d, cam, uv, [src], (1, H, W), weights=surface,
                                   background_weight=torch.zeros_like(t[..., 0]), **kw)
    transparent = reprojection_loss(target_rgb, o, d, cam, uv, [src], (1, H, W), weights=torch.zeros_like(t),
                                    background_weight=torch.ones_like(t[..., 0]), **kw)
    assert float(transparent.loss) < 1e-3 < 0.05 < float(on_surface.loss)
    # gradient: moving weight from the surface to the background lowers the loss
    bg = torch.full_like(t[..., 0], 0.5).requires_grad_(True)
    reprojection_loss(target_rgb, o, d, cam, uv, [src], (1, H, W), weights=surface * 0.5, background_weight=bg,
                      **kw).loss.backward()
    assert float(bg.grad.sum()) < 0


def test_background_beyond_the_box_explains_scenery_just_past_its_exit():
    # The plane (10 m) lies beyond a box the rays leave at 5 m: no sample inside the box can
    # explain it, nor can the background at infinity; a background proposal at 2 x the exit can.
    o, d, zpu, cam, uv = anchor_rays()
    src = rig(plane_image(BASELINE), shifted(T_ego_anchor(), BASELINE))
    target_rgb = sample_at_pixels(plane_image(0.0)[None, None], cam, uv)
    t = DEPTHS[:1].view(1, 1, -1) / zpu.unsqueeze(-1)  # one sample, 5 m (z), inside the box
    exit_t = PLANE_Z / 2 / zpu  # the box ends at z = 5 m
    kw = dict(t=t, weights=torch.zeros_like(t), background_weight=torch.ones_like(t[..., 0]), automask=False)
    at_infinity = reprojection_loss(target_rgb, o, d, cam, uv, [src], (1, H, W), **kw)
    beyond = reprojection_loss(target_rgb, o, d, cam, uv, [src], (1, H, W), background_far=exit_t,
                               background_factors=(1.5, 2.0, 3.0), **kw)
    wrong_factors = reprojection_loss(target_rgb, o, d, cam, uv, [src], (1, H, W), background_far=exit_t,
                                      background_factors=(1.2, 4.0), **kw)
    # (the mean keeps a few border rays whose 2x point leaves the source image)
    assert float(beyond.per_ray.median()) < 1e-3 and float(beyond.loss) < 0.1 * float(at_infinity.loss)
    assert float(at_infinity.per_ray.median()) > 0.3 and float(wrong_factors.per_ray.median()) > 0.15
