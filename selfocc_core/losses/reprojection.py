"""Self-supervised reprojection losses on a ray grid.

The anchor frame's rays form, per camera, an image of ``h x w`` rays (``R = N * h * w``,
camera-major then row-major, as ``rendering.ray_sampler.generate_rays`` lays them out), so
SSIM can run on "ray-grid images".

Two variants:

* **MVS-embedded** (SelfOcc): every ray sample ``t_s`` is a depth proposal. Its 3D point is
  projected into each source frame, the source colour is sampled bilinearly, and a
  photometric error is computed per proposal on the warped ray-grid images. The per-ray loss
  is the rendering-weight average of the proposals' errors (weights renormalised over the
  proposals that project inside a source image). Gradients reach the field through the
  weights only: the proposals themselves are fixed candidates.
* **Rendered depth** (Monodepth2): one proposal per ray at the rendered distance; gradients
  flow through the sampled colour into the depth.

Source cameras: a point is looked up in the *same* camera as the anchor ray when it lands
inside that image, otherwise in the lowest-index other camera of the rig where it lands
inside (``source_cameras="all"``); ``"same"`` uses the anchor ray's camera only.
Then the Monodepth2 per-pixel minimum over source frames and auto-masking against the
identity loss (the unwarped source image vs the target) are applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from selfocc_core.geometry.camera import project
from selfocc_core.geometry.transforms import invert_transform, transform_points
from selfocc_core.losses.ssim import photometric_error

# Per-ray loss given to a (ray, source) pair without a valid projection, so the minimum over
# sources picks another source; rays invalid for every source are dropped.
_INVALID = 1.0e4
# Distance (m) of the "background at infinity" proposal.
BACKGROUND_DISTANCE = 1.0e4


@dataclass
class RigView:
    """One frame's cameras, expressed in the input frame's ego frame (``ego0``).

    images:     [B, N, 3, H, W] RGB in [0, 1]
    K:          [B, N, 3, 3]
    T_ego0_cam: [B, N, 4, 4] camera optical frame -> input ego frame
    valid:      optional [B] bool: False where this frame must not serve as a source for that
                batch element (e.g. no camera baseline to the anchor); None = valid everywhere
    """

    images: Tensor
    K: Tensor
    T_ego0_cam: Tensor
    valid: Optional[Tensor] = None

    def __post_init__(self):
        imgs = self.images
        if imgs.dim() != 5 or imgs.shape[2] != 3:
            raise ValueError(f"RigView.images must be [B, N, 3, H, W], got {tuple(imgs.shape)}")
        B, N = imgs.shape[:2]
        if tuple(self.K.shape) != (B, N, 3, 3):
            raise ValueError(f"RigView.K must be {(B, N, 3, 3)}, got {tuple(self.K.shape)}")
        if tuple(self.T_ego0_cam.shape) != (B, N, 4, 4):
            raise ValueError(f"RigView.T_ego0_cam must be {(B, N, 4, 4)}, got {tuple(self.T_ego0_cam.shape)}")
        if self.valid is not None and (tuple(self.valid.shape) != (B,) or self.valid.dtype != torch.bool):
            raise ValueError(f"RigView.valid must be a [{B}] bool tensor, got {tuple(self.valid.shape)} {self.valid.dtype}")


@dataclass
class ReprojectionOutputs:
    """loss: scalar; per_ray: [B, R] min over sources; mask: [B, R] bool, rays that count
    (valid in some source and, with auto-masking, not explained by a static camera)."""

    loss: Tensor
    per_ray: Tensor
    mask: Tensor


def _to_grid(uv: Tensor, H: int, W: int) -> Tensor:
    """Pixel coordinates (integer = pixel centre) -> grid_sample coords (align_corners=True)."""
    gx = uv[..., 0] / max(W - 1, 1) * 2.0 - 1.0
    gy = uv[..., 1] / max(H - 1, 1) * 2.0 - 1.0
    return torch.stack([gx, gy], dim=-1)


def _sample_image(image: Tensor, uv: Tensor, mode: str = "bilinear") -> Tensor:
    """image [B, C, H, W], uv [B, M, 2] -> [B, M, C] (border padding)."""
    H, W = image.shape[-2:]
    grid = _to_grid(uv, H, W).unsqueeze(2)  # [B, M, 1, 2]
    out = F.grid_sample(image, grid.to(image.dtype), mode=mode, padding_mode="border", align_corners=True)
    return out[..., 0].transpose(1, 2)


def sample_at_pixels(images: Tensor, camera_index: Tensor, pixels: Tensor, mode: str = "bilinear") -> Tensor:
    """Values of per-camera images at ray pixels.

    images: [B, N, C, H, W]; camera_index: [B, R] long; pixels: [B, R, 2] (u, v)
    returns [B, R, C]. ``mode="nearest"`` for label images.
    """
    if images.dim() != 5:
        raise ValueError(f"images must be [B, N, C, H, W], got {tuple(images.shape)}")
    B, N, C = images.shape[:3]
    if camera_index.shape != pixels.shape[:-1] or camera_index.shape[0] != B:
        raise ValueError(f"camera_index {tuple(camera_index.shape)} / pixels {tuple(pixels.shape)} mismatch (B={B})")
    out = images.new_zeros(*camera_index.shape, C)
    for n in range(N):
        sel = camera_index == n
        if not bool(sel.any()):
            continue
        vals = _sample_image(images[:, n], pixels, mode)
        out = torch.where(sel.unsqueeze(-1), vals, out)
    return out


def project_into_rig(
    points: Tensor,
    rig: RigView,
    prefer_camera: Tensor,
    source_cameras: Literal["all", "same"] = "all",
    min_depth: float = 0.1,
) -> tuple[Tensor, Tensor]:
    """Colours of ego0-frame points seen by a rig.

    points: [B, M, 3]; prefer_camera: [B, M] long (the anchor ray's camera index)
    returns colours [B, M, 3] and valid [B, M] bool (in front of and inside some image).
    """
    B, M, _ = points.shape
    N = rig.images.shape[1]
    H, W = rig.images.shape[-2:]
    T_cam_ego0 = invert_transform(rig.T_ego0_cam)
    colours = points.new_zeros(B, M, 3)
    best = torch.zeros(B, M, dtype=torch.long, device=points.device)
    for n in range(N):
        same = prefer_camera == n
        if source_cameras == "same" and not bool(same.any()):
            continue
        p_cam = transform_points(T_cam_ego0[:, n], points)
        uv, z = project(p_cam, rig.K[:, n])
        # The image covers [-0.5, W - 0.5] x [-0.5, H - 0.5] (integer pixel = centre).
        inside = (z > min_depth) & (uv[..., 0] >= -0.5) & (uv[..., 0] <= W - 0.5) & (uv[..., 1] >= -0.5) & (uv[..., 1] <= H - 0.5)
        if source_cameras == "same":
            inside = inside & same
        # Priority: 2 = inside the anchor ray's own camera, 1 = inside another camera.
        score = inside.long() * (1 + same.long())
        take = score > best
        # Points seen by no camera keep the border colour of their own camera, so that they do
        # not put artificial edges into the SSIM windows of valid neighbours.
        fallback = same & (best == 0) & ~take
        if not bool((take | fallback).any()):
            continue
        vals = _sample_image(rig.images[:, n], uv)
        colours = torch.where((take | fallback).unsqueeze(-1), vals, colours)
        best = torch.where(take, score, best)
    return colours, best > 0


def rays_to_images(x: Tensor, grid: tuple[int, int, int]) -> Tensor:
    """Ray values [B, R, *E, C] -> ray-grid images [B, N, *E, C, h, w] with R = N*h*w."""
    N, h, w = grid
    B, R = x.shape[:2]
    if R != N * h * w:
        raise ValueError(f"{R} rays do not form a ray grid of {N} cameras x {h} x {w}")
    extra = x.shape[2:]
    y = x.reshape(B, N, h, w, *extra)
    nd = y.dim()
    # move (h, w) behind the trailing dims: [B, N, *E, C, h, w]
    order = [0, 1, *range(4, nd), 2, 3]
    return y.permute(*order)


def images_to_rays(x: Tensor) -> Tensor:
    """Inverse of rays_to_images for maps without a channel: [B, N, *E, h, w] -> [B, R, *E]."""
    B, N = x.shape[:2]
    h, w = x.shape[-2:]
    nd = x.dim()
    order = [0, 1, nd - 2, nd - 1, *range(2, nd - 2)]
    y = x.permute(*order)
    return y.reshape(B, N * h * w, *y.shape[4:])


def proposal_errors(
    target_rgb: Tensor,
    points: Tensor,
    camera_index: Tensor,
    source: RigView,
    grid: tuple[int, int, int],
    alpha: float = 0.85,
    source_cameras: Literal["all", "same"] = "all",
) -> tuple[Tensor, Tensor]:
    """Photometric error of every depth proposal against one source frame.

    target_rgb: [B, R, 3]; points: [B, R, S, 3] proposals in ego0; camera_index: [B, R]
    returns errors [B, R, S] and valid [B, R, S] (the proposal projects inside the source).
    """
    B, R, S, _ = points.shape
    cam = camera_index.unsqueeze(-1).expand(B, R, S).reshape(B, R * S)
    colours, valid = project_into_rig(points.reshape(B, R * S, 3), source, cam, source_cameras)
    colours = colours.reshape(B, R, S, 3)
    warped = rays_to_images(colours, grid)  # [B, N, S, 3, h, w]
    target = rays_to_images(target_rgb, grid).unsqueeze(2).expand_as(warped)
    err = photometric_error(warped, target, alpha)  # [B, N, S, h, w]
    return images_to_rays(err), valid.reshape(B, R, S)


def identity_errors(
    target_rgb: Tensor, camera_index: Tensor, pixels: Tensor, source: RigView, grid: tuple[int, int, int], alpha: float = 0.85
) -> Tensor:
    """Monodepth2 identity loss: the unwarped source image at the same pixels. Returns [B, R]."""
    src = sample_at_pixels(source.images, camera_index, pixels)
    err = photometric_error(rays_to_images(src, grid), rays_to_images(target_rgb, grid), alpha)  # [B, N, h, w]
    return images_to_rays(err)


def _masked(per_ray: Tensor, valid: Optional[Tensor]) -> Tensor:
    """``per_ray`` [B, R] with the batch elements where the source is not valid set to _INVALID."""
    if valid is None:
        return per_ray
    return torch.where(valid.unsqueeze(-1), per_ray, torch.full_like(per_ray, _INVALID))


def reprojection_loss(
    target_rgb: Tensor,
    origins: Tensor,
    directions: Tensor,
    camera_index: Tensor,
    pixels: Tensor,
    sources: Sequence[RigView],
    grid: tuple[int, int, int],
    *,
    t: Optional[Tensor] = None,
    weights: Optional[Tensor] = None,
    distance: Optional[Tensor] = None,
    background_weight: Optional[Tensor] = None,
    background_far: Optional[Tensor] = None,
    background_factors: Sequence[float] = (),
    alpha: float = 0.85,
    automask: bool = True,
    source_cameras: Literal["all", "same"] = "all",
    min_valid_weight: float = 0.5,
) -> ReprojectionOutputs:
    """Reprojection loss of an anchor ray grid against source frames.

    target_rgb: [B, R, 3] anchor colours at the ray pixels
    origins, directions: [B, R, 3] rays in ego0; camera_index: [B, R]; pixels: [B, R, 2]
    MVS-embedded: pass ``t`` [B, R, S] and ``weights`` [B, R, S].
    Rendered depth: pass ``distance`` [B, R] (expected distance along the ray).
    background_weight: optional [B, R] (MVS only), the transmittance left after the last sample
    (``1 - accumulation``): it becomes one more proposal at infinite distance, so that sky and
    scenery beyond the scene box can be explained without putting surfaces inside the box.
    background_far, background_factors: optional [B, R] box exit distance and factors > 1: the
    background is then the best (lowest-error, per source) of the proposals at
    ``factor * background_far`` and at infinity (scenery just beyond the box: a facade above
    its top is not at infinity).
    min_valid_weight: a ray counts for a source only if at least this fraction of its
    rendering weight falls on proposals that project inside the source.
    A source whose ``valid`` is False for a batch element takes no part there (neither as a
    proposal nor in auto-masking); an element without any valid source has no ray that counts.
    """
    if (t is None) == (distance is None):
        raise ValueError("reprojection_loss: pass either t+weights (MVS-embedded) or distance (rendered depth)")
    if not sources:
        raise ValueError("reprojection_loss: no source frames")
    B, R = camera_index.shape
    for name, x, shape in (("target_rgb", target_rgb, (B, R, 3)), ("origins", origins, (B, R, 3)),
                           ("directions", directions, (B, R, 3)), ("pixels", pixels, (B, R, 2))):
        if tuple(x.shape) != shape:
            raise ValueError(f"reprojection_loss: {name} must be {shape}, got {tuple(x.shape)}")
    num_bg = 0  # background proposals appended after the ray samples
    if t is not None:
        if weights is None or weights.shape != t.shape or t.shape[:2] != (B, R):
            raise ValueError("reprojection_loss: t and weights must both be [B, R, S]")
        points = (origins.unsqueeze(2) + t.unsqueeze(-1) * directions.unsqueeze(2)).detach()
        w = weights
        if background_weight is not None:
            # A point this far projects like a direction (camera translation is negligible).
            bg_t = [torch.full_like(t[..., 0], BACKGROUND_DISTANCE)]
            if background_far is not None:
                bg_t = [background_far * f for f in background_factors] + bg_t
            bg_t = torch.stack(bg_t, dim=-1).detach()  # [B, R, K]
            bg_points = origins.unsqueeze(2) + bg_t.unsqueeze(-1) * directions.unsqueeze(2)
            points = torch.cat([points, bg_points.detach()], dim=2)
            w = torch.cat([w, background_weight.clamp(min=0.0).unsqueeze(-1)], dim=-1)
            num_bg = bg_t.shape[-1]
    else:
        points = (origins + distance.unsqueeze(-1) * directions).unsqueeze(2)
        w = torch.ones_like(points[..., 0])

    per_source = []
    for src in sources:
        err, valid = proposal_errors(target_rgb, points, camera_index, src, grid, alpha, source_cameras)
        if num_bg > 1:
            # one background proposal: the best valid one of the depths beyond the box
            bg_err = torch.where(valid[..., -num_bg:], err[..., -num_bg:], torch.full_like(err[..., -num_bg:], _INVALID))
            bg_err, _ = bg_err.min(dim=-1, keepdim=True)
            err = torch.cat([err[..., :-num_bg], bg_err], dim=-1)
            valid = torch.cat([valid[..., :-num_bg], bg_err < _INVALID], dim=-1)
        wv = w * valid.to(w.dtype)
        wsum = wv.sum(-1)
        loss = (wv * err).sum(-1) / wsum.clamp_min(1e-8)
        ok = (wsum > min_valid_weight * w.sum(-1).detach()) & (wsum > 1e-8)
        if src.valid is not None:
            ok = ok & src.valid.unsqueeze(-1)
        per_source.append(torch.where(ok, loss, torch.full_like(loss, _INVALID)))
    reproj = torch.stack(per_source, dim=-1).min(dim=-1).values  # [B, R]
    mask = reproj < _INVALID
    if automask:
        ident = torch.stack(
            [_masked(identity_errors(target_rgb, camera_index, pixels, s, grid, alpha), s.valid) for s in sources], dim=-1
        ).min(dim=-1).values
        # Tiny noise breaks ties on textureless areas (Monodepth2).
        ident = ident + 1e-5 * torch.randn_like(ident)
        mask = mask & (reproj < ident.detach())
    maskf = mask.to(reproj.dtype)
    loss = (reproj * maskf).sum() / maskf.sum().clamp_min(1.0)
    return ReprojectionOutputs(loss=loss, per_ray=reproj, mask=mask)
