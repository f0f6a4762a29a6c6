"""Model configuration (one frozen dataclass, loaded from YAML with config_io).

Presets live here: :func:`nuscenes_config` (paper setting) and :func:`tiny_config` (CPU tests
and quick training). Make variants with ``dataclasses.replace``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, Optional

from selfocc_core.geometry.voxel_grid import VoxelGridSpec


@dataclass(frozen=True)
class ModelConfig:
    """SelfOcc network + NeuS renderer hyper-parameters.

    Plane naming over the ego grid ``[X, Y, Z]`` (x forward, y left, z up): the TPV planes are
    ``xy`` (top view, ``tpv_h x tpv_w``), ``yz`` (``tpv_w x tpv_z``) and ``xz``
    (``tpv_h x tpv_z``); ``tpv_h`` counts cells along ego x, ``tpv_w`` along ego y, ``tpv_z``
    along ego z. Planes cover the box of ``scene`` and are upsampled to its resolution.
    """

    backbone_depth: int = 50
    """ResNet depth: 18, 34, 50 or 101."""
    pretrained: Optional[str] = None
    """Path to a torchvision ResNet state_dict (.pth); None = random init."""
    frozen_stages: int = 1
    """-1 trains the whole backbone; 0 freezes the stem; k freezes the stem and layer1..k."""
    norm_eval: bool = True
    """Keep backbone BatchNorm in eval mode (frozen running statistics)."""
    out_indices: tuple[int, ...] = (1, 2, 3)
    """Backbone stages fed to the FPN (0..3 = strides 4, 8, 16, 32)."""
    fpn_channels: int = 96
    """FPN output channels (the value dim of the image cross-attention)."""
    fpn_extra_levels: int = 0
    """Extra stride-2 FPN levels on top of the last stage."""

    lifter: Literal["tpv", "bev"] = "tpv"
    """'tpv': three orthogonal planes; 'bev': one top-view plane plus a learned height embedding."""
    tpv_h: int = 100
    """Plane cells along ego x."""
    tpv_w: int = 100
    """Plane cells along ego y."""
    tpv_z: int = 8
    """Plane cells along ego z."""
    embed_dim: int = 96
    """Query / plane feature channels."""
    num_layers: int = 4
    """Lifter layers (cross-view attention, image cross-attention, FFN)."""
    num_heads: int = 8
    """Attention heads (embed_dim must be divisible by it)."""
    num_points: int = 2
    """Learned sampling offsets per head, level and reference point in image cross-attention."""
    num_points_in_pillar: tuple[int, int, int] = (4, 8, 8)
    """3D reference points per query of the xy (along z), yz (along x) and xz (along y) planes."""
    cross_view_points: int = 4
    """Reference points per query and plane in the cross-view (plane-to-plane) attention."""
    ffn_dim: int = 192
    """Hidden width of the lifter FFN."""
    dropout: float = 0.0
    """Dropout in the lifter (attention outputs and FFN)."""

    scene: VoxelGridSpec = VoxelGridSpec(-40.0, 40.0, -40.0, 40.0, -1.0, 5.4, 0.4)
    """Scene box (ego frame) and field resolution: the SDF volume is ``scene.shape``."""
    mlp_hidden: tuple[int, ...] = (128, 128)
    """Hidden widths of the per-voxel decoder MLP (1x1x1 convs)."""
    num_classes: int = 0
    """Semantic classes of the semantic head; 0 = no semantic head."""
    sdf_init: Literal["ground", "positive"] = "ground"
    """Initial SDF: 'ground' adds the fixed prior ``z - ground_height`` (the surface starts as a
    horizontal plane); 'positive' adds a constant ``+sdf_init_offset`` (everything free)."""
    ground_height: float = 0.0
    """Ego-frame z of the initial ground plane (sdf_init='ground')."""
    sdf_init_offset: float = 1.0
    """Constant SDF offset in metres (sdf_init='positive')."""

    init_variance: float = 0.3
    """NeuS variance parameter v at init; sharpness s = exp(10 v)."""
    num_samples: int = 64
    """Samples per ray."""
    sample_spacing: Literal["uniform", "disparity", "log"] = "uniform"
    """Sample spacing between near and far: uniform in distance, in inverse distance, or in log
    distance (the same relative step (far/near)^(1/S) at every range: what AbsRel measures)."""
    importance_samples: int = 0
    """Extra samples per ray placed where a first, gradient-free pass over the ``num_samples``
    samples puts its NeuS weight (NeRF/NeuS hierarchical sampling); both sets are rendered
    together, so every ray has ``num_samples + importance_samples`` depth proposals. 0 = off (the
    official SelfOcc code has no importance stage). The MVS-embedded loss can only place a surface
    at a sample, so proposals concentrated near the surface locate it more finely per sample."""
    ray_stride: int = 8
    """Ray grid stride in pixels (one ray per stride x stride cell)."""
    min_near: float = 0.1
    """Minimum ray start distance (m) from the camera centre."""
    input_height: int = 0
    """Network input height; 0 = the frame's image height. With a size set, the backbone sees the
    images resized to ``input_height x input_width`` while the rays and the photometric losses use
    the frame's full images: the loss's resolution, not the network's, limits how precisely a
    photometric error locates a surface (training/README.md, "Where the signal stops")."""
    input_width: int = 0
    """Network input width; 0 = the frame's image width (set both or neither)."""

    def __post_init__(self):
        if self.embed_dim % self.num_heads:
            raise ValueError(f"ModelConfig: embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})")
        if self.importance_samples < 0:
            raise ValueError(f"ModelConfig: importance_samples must be >= 0, got {self.importance_samples}")
        for name in ("tpv_h", "tpv_w", "tpv_z", "num_layers", "num_points", "cross_view_points", "num_samples", "ray_stride"):
            if getattr(self, name) < 1:
                raise ValueError(f"ModelConfig: {name} must be >= 1, got {getattr(self, name)}")
        if len(self.num_points_in_pillar) != 3 or min(self.num_points_in_pillar) < 1:
            raise ValueError(f"ModelConfig: num_points_in_pillar must be 3 positive ints, got {self.num_points_in_pillar}")
        if self.num_classes < 0:
            raise ValueError(f"ModelConfig: num_classes must be >= 0, got {self.num_classes}")
        if self.min_near <= 0:
            raise ValueError(f"ModelConfig: min_near must be positive, got {self.min_near}")
        if self.input_height < 0 or self.input_width < 0 or (self.input_height == 0) != (self.input_width == 0):
            raise ValueError(f"ModelConfig: input_height and input_width must both be 0 (the frame's size) or both "
                             f"positive, got {self.input_height}x{self.input_width}")

    @property
    def num_levels(self) -> int:
        """Feature levels seen by the image cross-attention."""
        return len(self.out_indices) + self.fpn_extra_levels


def nuscenes_config(**overrides) -> ModelConfig:
    """Paper setting for nuScenes / Occ3D: ResNet-50 (strides 4-32, BN trained), 96-dim TPV with
    6 heads, 4 layers, dropout 0.1, input 384x800 (ray grid 48 x 100 = stride 8), 256 samples per
    ray, field on the Occ3D box at 0.4 m. The official code uses 257 x 257 x 25 planes on a
    non-linear mapping; here the planes are linear and match the 200 x 200 x 16 field."""
    cfg = ModelConfig(
        backbone_depth=50, frozen_stages=0, norm_eval=False, out_indices=(0, 1, 2, 3), fpn_channels=96,
        lifter="tpv", tpv_h=200, tpv_w=200, tpv_z=16, embed_dim=96, num_layers=4, num_heads=6,
        num_points=4, num_points_in_pillar=(4, 8, 8), cross_view_points=4, ffn_dim=192, dropout=0.1,
        scene=VoxelGridSpec(-40.0, 40.0, -40.0, 40.0, -1.0, 5.4, 0.4), mlp_hidden=(128, 128),
        num_samples=256, ray_stride=8, min_near=0.1,
    )
    return replace(cfg, **overrides)


def tiny_config(**overrides) -> ModelConfig:
    """Small enough to train on a 2-core CPU (ResNet-18, 32-dim planes, 1 layer, 1.6 m voxels)."""
    cfg = ModelConfig(
        backbone_depth=18, frozen_stages=-1, norm_eval=False, out_indices=(1, 2), fpn_channels=32,
        lifter="tpv", tpv_h=16, tpv_w=16, tpv_z=4, embed_dim=32, num_layers=1, num_heads=4,
        num_points=2, num_points_in_pillar=(4, 4, 4), cross_view_points=2, ffn_dim=64,
        scene=VoxelGridSpec(-25.6, 25.6, -25.6, 25.6, -2.0, 4.4, 1.6), mlp_hidden=(32,),
        num_samples=32, ray_stride=4, min_near=0.1,
    )
    return replace(cfg, **overrides)
