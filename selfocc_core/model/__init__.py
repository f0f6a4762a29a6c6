"""SelfOcc network (pure PyTorch): images -> TPV/BEV features -> SDF field, rendered with NeuS.

Public API (all tensors in the ego frame of the *input* frame; B batch, N cameras):

    from selfocc_core.model import ModelConfig, SelfOccModel, SceneField, nuscenes_config, tiny_config
    from selfocc_core.rendering.ray_sampler import generate_rays

    cfg = tiny_config()                       # or nuscenes_config(), or load_dataclass(ModelConfig, yaml)
    model = SelfOccModel(cfg)
    field: SceneField = model(frame)          # frame: data.sample.Frame, batched [B, N, ...] or not
    rays = generate_rays(K [B,N,3,3], T_ego_cam [B,N,4,4], (H, W), cfg.ray_stride,
                         random_offset=True, box=cfg.scene, min_near=cfg.min_near)
    out = model.render(field, rays, num_samples=None, stratified=None, cos_anneal_ratio=None,
                       generator=None, chunk_rays=None, return_samples=True)
    # out: RenderOutputs with depth/distance/rgb/accumulation [B, R(,3)], weights/t/sdf/deltas
    #      [B, R, S], semantics [B, R, C] (weighted logits) or None, points/gradients [B, R, S, 3]
    # rays: R = N * h * w, camera-major then row-major; rays.grid_shape = (h, w) = (H//stride, W//stride);
    #       rays.valid [B, R] (False: the ray misses the box beyond min_near, zero weights)

Defaults: ``stratified`` = ``model.training``; ``num_samples`` = ``cfg.num_samples``; samples are
bin midpoints (or jittered inside the bins) uniform in distance or disparity between near and
far; the transmittance left after the last sample counts as depth ``far`` (box exit).
``chunk_rays`` splits big no-grad renders; ``return_samples=False`` drops points/gradients.

SelfOccModel stages: ``encode_images(frame) -> L x [B*N, C, H_l, W_l]``,
``lift(features, frame) -> Planes``, ``decode(planes) -> SceneField``, ``forward = all three``,
``render(field, rays, ...)``, ``inv_s()`` (NeuS sharpness exp(10 v)), attribute
``cos_anneal_ratio`` (default 1.0, set by the trainer for NeuS annealing).

SceneField (points ``[B, ..., 3]``):
    query(points, with_gradient=False) -> FieldOutputs (sdf [B, ...], rgb [B, ..., 3],
        semantics [B, ..., C] or None) [, gradient [B, ..., 3]]
    sdf(points) -> [B, ...]; gradient(points) -> [B, ..., 3]; hessian(points) -> [B, ..., 3, 3];
    hessian_norm(points) -> [B, ...] (Frobenius)
    sdf_volume() -> [B, X, Y, Z]; rgb_volume() -> [B, 3, X, Y, Z];
    semantic_volume() -> [B, C, X, Y, Z] logits or None; occupancy_volume(threshold=0) -> bool
    grid: VoxelGridSpec (= cfg.scene), whose shape is (X, Y, Z)
Points outside the scene box read a positive SDF (free space). The raw volumes are the
attributes ``_sdf [B, 1, X, Y, Z]``, ``_rgb`` (logits) and ``_sem``; ``SceneField(grid, sdf, rgb_logits,
sem_logits)`` rebuilds a field from them (the predictor's traced path does this).

Initial SDF: ``z - cfg.ground_height`` (a ground plane; ``sdf_init='positive'`` for all-free).
Precision: under autocast, sampling coordinates, the NeuS compositing and the SDF stay fp32.

Modules: config (ModelConfig + presets), resnet (torchvision-key ResNet), fpn, deformable_attention
(pure-torch multi-scale deformable attention), tpv_lifter (Planes, TPVLifter), bev_lifter,
field (FieldDecoder, SceneField), selfocc (SelfOccModel).
"""

from selfocc_core.model.config import ModelConfig, nuscenes_config, tiny_config
from selfocc_core.model.field import FieldDecoder, SceneField
from selfocc_core.model.selfocc import SelfOccModel
from selfocc_core.model.tpv_lifter import Planes

__all__ = ["ModelConfig", "nuscenes_config", "tiny_config", "FieldDecoder", "SceneField", "SelfOccModel", "Planes"]
