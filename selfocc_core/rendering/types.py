"""Typed containers passed between ray generation, the field, the renderer and the losses.

All tensors are in the ego frame of the *input* frame (the frame the scene representation
was lifted from). Shapes: B batch, R rays, S samples per ray, C semantic classes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Optional

import torch
from torch import Tensor


@dataclass
class RayBundle:
    """Rays cast from the pixels of one (anchor) frame's cameras.

    origins:      [B, R, 3] ray origins (camera centres)
    directions:   [B, R, 3] unit directions
    z_per_unit:   [B, R] camera z-depth per metre along the ray (depth = t * z_per_unit)
    near, far:    [B, R] ray interval clipped to the scene box
    camera_index: [B, R] long, which camera of the anchor frame each ray comes from
    pixels:       [B, R, 2] (u, v) pixel coordinates in that camera's image
    valid:        optional [B, R] bool, the ray meets the scene box beyond the minimum near
    grid_shape:   optional (h, w): rays form N images of h x w (R = N * h * w, camera-major,
                  row-major), set by rendering.ray_sampler.generate_rays
    """

    origins: Tensor
    directions: Tensor
    z_per_unit: Tensor
    near: Tensor
    far: Tensor
    camera_index: Tensor
    pixels: Tensor
    valid: Optional[Tensor] = None
    grid_shape: Optional[tuple[int, int]] = None


@dataclass
class FieldOutputs:
    """What the field returns for query points [B, ..., 3].

    sdf:       [B, ...] signed distance in metres (negative inside)
    rgb:       [B, ..., 3] in [0, 1]
    semantics: [B, ..., C] logits, or None when the model has no semantic head
    """

    sdf: Tensor
    rgb: Tensor
    semantics: Optional[Tensor] = None


@dataclass
class RenderOutputs:
    """NeuS rendering of a RayBundle.

    t:            [B, R, S] sample distances along each ray
    sdf:          [B, R, S]
    weights:      [B, R, S] rendering weights (sum <= 1 per ray)
    distance:     [B, R] expected distance along the ray
    depth:        [B, R] expected camera z-depth (distance * z_per_unit)
    rgb:          [B, R, 3]
    semantics:    [B, R, C] or None
    accumulation: [B, R] sum of weights
    points:       optional [B, R, S, 3] sample positions (ego frame of the input frame)
    gradients:    optional [B, R, S, 3] SDF gradients at the samples (for the eikonal loss)
    deltas:       optional [B, R, S] length of ray each sample stands for
    """

    t: Tensor
    sdf: Tensor
    weights: Tensor
    distance: Tensor
    depth: Tensor
    rgb: Tensor
    accumulation: Tensor
    semantics: Optional[Tensor] = None
    points: Optional[Tensor] = None
    gradients: Optional[Tensor] = None
    deltas: Optional[Tensor] = None

    def float(self) -> "RenderOutputs":
        """A copy with bf16/fp16 tensors (from autocast) in float32, for losses computed outside
        autocast; float64 (gradcheck) and integer tensors are kept."""
        def up(x):
            return x.float() if isinstance(x, Tensor) and x.dtype in (torch.bfloat16, torch.float16) else x
        return replace(self, **{f.name: up(getattr(self, f.name)) for f in fields(self)})
