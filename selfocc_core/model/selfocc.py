"""SelfOcc: multi-camera images -> 3D SDF/colour/semantic field -> NeuS rendering.

Stages, each callable on its own:
    encode_images(frame)        ResNet + FPN on ImageNet-normalised images -> L x [B*N, C, H_l, W_l]
    lift(features, frame)       TPV (or BEV) lifter -> Planes
    decode(planes)              per-voxel MLP -> SceneField
    forward(frame)              the three above
    render(field, rays)         sample rays, read the field, NeuS-composite -> RenderOutputs
Everything is in the ego frame of the input frame.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfocc_core.data.sample import Frame
from selfocc_core.model.bev_lifter import BEVLifter
from selfocc_core.model.config import ModelConfig
from selfocc_core.model.field import FieldDecoder, SceneField
from selfocc_core.model.fpn import FPN
from selfocc_core.model.resnet import ResNet
from selfocc_core.model.tpv_lifter import Planes, TPVLifter
from selfocc_core.rendering.neus import SingleVarianceNetwork, neus_alpha, neus_render, weights_from_alpha
from selfocc_core.rendering.ray_sampler import bin_edges, merge_samples, sample_along_rays, sample_pdf
from selfocc_core.rendering.types import RayBundle, RenderOutputs

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _batched(t: Tensor, unbatched_dim: int) -> Tensor:
    return t.unsqueeze(0) if t.dim() == unbatched_dim else t


class SelfOccModel(nn.Module):
    """See the module docstring. ``cos_anneal_ratio`` (attribute, default 1.0) is the NeuS cosine
    annealing used by :meth:`render` unless given there; the trainer may set it each step."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = ResNet(cfg.backbone_depth, cfg.out_indices, cfg.frozen_stages, cfg.norm_eval)
        if cfg.pretrained:
            self.backbone.load_pretrained(cfg.pretrained)
        self.neck = FPN(self.backbone.out_channels, cfg.fpn_channels, cfg.fpn_extra_levels)
        self.lifter = TPVLifter(cfg) if cfg.lifter == "tpv" else BEVLifter(cfg)
        self.decoder = FieldDecoder(cfg)
        self.variance = SingleVarianceNetwork(cfg.init_variance)
        self.register_buffer("img_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("img_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.cos_anneal_ratio = 1.0

    @property
    def grid(self):
        """The field's VoxelGridSpec (box and resolution)."""
        return self.cfg.scene

    def inv_s(self) -> Tensor:
        """NeuS sharpness s = exp(10 v) (scalar tensor, differentiable)."""
        return self.variance()

    def encode_images(self, frame: Frame) -> list[Tensor]:
        """``frame.images [(B,) N, 3, H, W]`` in [0, 1] -> L levels ``[B*N, fpn_channels, H_l, W_l]``.

        With ``cfg.input_height/width`` set the images are first resized to that size (bilinear,
        antialiased); the lifter's normalised image coordinates ((u + 0.5) / W) are the same at
        every size, so K and ``frame.image_size`` stay those of the full images.
        """
        imgs = _batched(frame.images, 4)
        B, N, _, H, W = imgs.shape
        x = imgs.reshape(B * N, 3, H, W)
        size = (self.cfg.input_height, self.cfg.input_width)
        if size[0] and size != (H, W):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        x = (x - self.img_mean) / self.img_std
        return self.neck(self.backbone(x))

    def lift(self, features: Sequence[Tensor], frame: Frame) -> Planes:
        """Multi-level features + the frame's cameras -> Planes."""
        K = _batched(frame.K, 3)
        T = _batched(frame.T_ego_cam, 3)
        return self.lifter(features, K, T, frame.image_size)

    def decode(self, planes: Planes) -> SceneField:
        return self.decoder(planes)

    def forward(self, frame: Frame) -> SceneField:
        """Frame (batched or not) -> SceneField in the frame's ego coordinates."""
        return self.decode(self.lift(self.encode_images(frame), frame))

    def render(self, field: SceneField, rays: RayBundle, num_samples: Optional[int] = None,
               stratified: Optional[bool] = None, cos_anneal_ratio: Optional[float] = None,
               generator: Optional[torch.Generator] = None, chunk_rays: Optional[int] = None,
               return_samples: bool = True) -> RenderOutputs:
        """NeuS-render ``rays`` (``[B, R]``) through ``field``.

        num_samples defaults to ``cfg.num_samples``; stratified (jittered samples) defaults to
        ``self.training``; cos_anneal_ratio to ``self.cos_anneal_ratio``. With
        ``return_samples`` the outputs include the sample points, SDF gradients and bin widths
        (for the eikonal / Hessian losses). ``chunk_rays`` renders at most that many rays at a
        time (for big evaluation renders under ``torch.no_grad``; results are concatenated).
        """
        if rays.origins.shape[0] != field.batch_size:
            raise ValueError(f"render: rays batch {rays.origins.shape[0]} != field batch {field.batch_size}")
        R = rays.origins.shape[1]
        if chunk_rays is not None and R > chunk_rays:
            parts = [self.render(field, _slice_rays(rays, i, min(i + chunk_rays, R)), num_samples, stratified,
                                 cos_anneal_ratio, generator, None, return_samples)
                     for i in range(0, R, chunk_rays)]
            return _cat_outputs(parts)
        S = num_samples or self.cfg.num_samples
        strat = self.training if stratified is None else stratified
        anneal = self.cos_anneal_ratio if cos_anneal_ratio is None else cos_anneal_ratio
        t, deltas = sample_along_rays(rays.near, rays.far, S, strat, self.cfg.sample_spacing, generator)
        if self.cfg.importance_samples > 0:
            t, deltas = self._importance_samples(field, rays, t, deltas, S, strat, anneal, generator)
        points = rays.origins[..., None, :] + rays.directions[..., None, :] * t[..., None]
        values, grads = field.query(points, with_gradient=True)
        out = neus_render(t, deltas, values.sdf, grads, rays.directions, self.inv_s(), rays.z_per_unit,
                          values.rgb, values.semantics, anneal, far=rays.far, ray_mask=rays.valid)
        if return_samples:
            out.points = points
        else:
            out.gradients = out.deltas = None
        return out

    @torch.no_grad()
    def _importance_samples(self, field: SceneField, rays: RayBundle, t: Tensor, deltas: Tensor, S: int,
                            stratified: bool, anneal: float, generator) -> tuple[Tensor, Tensor]:
        """The coarse samples ``t`` plus ``cfg.importance_samples`` drawn from their NeuS weights
        (no gradient through the placement), merged and sorted, with their bin widths."""
        points = rays.origins[..., None, :] + rays.directions[..., None, :] * t[..., None]
        values, grads = field.query(points, with_gradient=True)
        alpha = neus_alpha(values.sdf, grads, rays.directions, deltas, self.inv_s(), anneal)
        weights = weights_from_alpha(alpha * rays.valid[..., None].to(alpha.dtype))
        edges = bin_edges(rays.near, rays.far, S, self.cfg.sample_spacing)
        fine = sample_pdf(edges, weights, self.cfg.importance_samples, stratified, generator)
        return merge_samples(t, fine.to(t.dtype), rays.near, rays.far)


def _slice_rays(rays: RayBundle, start: int, stop: int) -> RayBundle:
    kw = {f.name: getattr(rays, f.name) for f in dataclasses.fields(rays)}
    for k, v in kw.items():
        if isinstance(v, Tensor):
            kw[k] = v[:, start:stop]
    kw["grid_shape"] = None  # a chunk is not a full ray image
    return RayBundle(**kw)


def _cat_outputs(parts: list[RenderOutputs]) -> RenderOutputs:
    kw = {}
    for f in dataclasses.fields(RenderOutputs):
        vals = [getattr(p, f.name) for p in parts]
        kw[f.name] = None if vals[0] is None else torch.cat(vals, dim=1)
    return RenderOutputs(**kw)
