"""TPV lifter (TPVFormer encoder): learnable queries on three orthogonal planes attend to the
multi-camera image features and to each other.

Planes over the ego grid (x forward, y left, z up), features channel-first:
    xy: [B, C, tpv_h, tpv_w]  top view, rows along x, columns along y
    yz: [B, C, tpv_w, tpv_z]  rows along y, columns along z
    xz: [B, C, tpv_h, tpv_z]  rows along x, columns along z
Every plane spans the scene box; plane cell (i, j) is centred like a voxel of that size.

One layer = cross-view hybrid attention (each query reads all three planes around the
projections of its pillar points) -> norm -> image cross-attention (deformable attention into
every camera's multi-level features around the projections of the query's pillar of 3D
reference points; a camera counts for a query when any pillar point lands inside its image,
and the result is averaged over those cameras) -> norm -> FFN -> norm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfocc_core.geometry.transforms import invert_transform
from selfocc_core.geometry.voxel_grid import VoxelGridSpec
from selfocc_core.model.config import ModelConfig
from selfocc_core.model.deformable_attention import DeformableAttention, PaddedMaps

PLANES = ("xy", "yz", "xz")


@dataclass
class Planes:
    """Factorised scene features; the volume is the broadcast sum of the factors present.

    xy:     [B, C, Hx, Wy]
    yz:     [B, C, Wy, Zz] or None
    xz:     [B, C, Hx, Zz] or None
    z_line: [B, C, Zz] or None (a height embedding, used by the BEV lifter)
    """

    xy: Tensor
    yz: Optional[Tensor] = None
    xz: Optional[Tensor] = None
    z_line: Optional[Tensor] = None

    def volume(self, size: tuple[int, int, int]) -> Tensor:
        """Upsample each factor (bilinear) to ``size = (X, Y, Z)`` and sum -> ``[B, C, X, Y, Z]``."""
        X, Y, Z = size

        def up2(t: Tensor, hw: tuple[int, int]) -> Tensor:
            return t if tuple(t.shape[-2:]) == hw else F.interpolate(t, size=hw, mode="bilinear", align_corners=False)

        vol = up2(self.xy, (X, Y))[..., None]
        if self.yz is not None:
            vol = vol + up2(self.yz, (Y, Z))[:, :, None]
        if self.xz is not None:
            vol = vol + up2(self.xz, (X, Z))[:, :, :, None]
        if self.z_line is not None:
            zl = self.z_line
            if zl.shape[-1] != Z:
                zl = F.interpolate(zl, size=Z, mode="linear", align_corners=False)
            vol = vol + zl[:, :, None, None, :]
        return vol.expand(-1, -1, X, Y, Z) if vol.shape[-1] != Z else vol


def _centres(lo: float, hi: float, n: int) -> Tensor:
    return lo + (torch.arange(n, dtype=torch.float32) + 0.5) * ((hi - lo) / n)


def plane_pillar_points(scene: VoxelGridSpec, plane: str, size: tuple[int, int], num: int) -> Tensor:
    """Metric ego points ``[Q, num, 3]`` of each query's pillar, Q = size[0] * size[1] row-major.

    xy queries get ``num`` heights along z, yz queries ``num`` points along x, xz along y.
    """
    xs = lambda n: _centres(scene.x_min, scene.x_max, n)
    ys = lambda n: _centres(scene.y_min, scene.y_max, n)
    zs = lambda n: _centres(scene.z_min, scene.z_max, n)
    a, b = size
    if plane == "xy":
        x, y, z = torch.meshgrid(xs(a), ys(b), zs(num), indexing="ij")
    elif plane == "yz":
        y, z, x = torch.meshgrid(ys(a), zs(b), xs(num), indexing="ij")
    elif plane == "xz":
        x, z, y = torch.meshgrid(xs(a), zs(b), ys(num), indexing="ij")
    else:
        raise ValueError(f"unknown plane {plane!r}, expected one of {PLANES}")
    return torch.stack([x, y, z], -1).reshape(a * b, num, 3)


def project_reference_points(points_ego: Tensor, K: Tensor, T_ego_cam: Tensor,
                             image_size: tuple[int, int], eps: float = 1e-2) -> tuple[Tensor, Tensor]:
    """Project ego points ``[Q, D, 3]`` into cameras ``K [B, N, 3, 3]``, ``T_ego_cam [B, N, 4, 4]``.

    Returns reference points ``[B*N, Q, 1, D, 2]`` in [0, 1] image coordinates (see
    deformable_attention.py) and a camera mask ``[B, N, Q]``: any pillar point in front of the
    camera and inside the image.
    """
    B, N = K.shape[:2]
    H, W = image_size
    Q, D, _ = points_ego.shape
    # fp32 even under autocast: bf16 matmuls would put points 25 m out ~0.1 m off (~1 pixel)
    with torch.autocast(device_type=K.device.type, enabled=False):
        T_cam_ego = invert_transform(T_ego_cam.float())  # [B, N, 4, 4]
        pts = points_ego.to(K.device, torch.float32).reshape(1, 1, Q * D, 3)
        p_cam = pts @ T_cam_ego[..., :3, :3].transpose(-1, -2) + T_cam_ego[..., None, :3, 3]
        pix = p_cam @ K.float().transpose(-1, -2)
    z = p_cam[..., 2:3]
    uv = pix[..., :2] / z.clamp(min=eps)
    size = torch.tensor([W, H], dtype=uv.dtype, device=uv.device)
    ref = (uv + 0.5) / size
    inside = (z[..., 0] > eps) & (ref >= 0).all(-1) & (ref <= 1).all(-1)  # [B, N, Q*D]
    ref = torch.where(inside[..., None], ref, torch.full_like(ref, -2.0))  # invalid -> reads zeros
    mask = inside.view(B, N, Q, D).any(-1)
    return ref.view(B * N, Q, 1, D, 2), mask


class ImageCrossAttention(nn.Module):
    """Deformable attention of plane queries into N cameras' multi-level features, averaged over
    the cameras that see each query (no camera: zero update).

    With ``rebatch`` (default) each camera only processes the queries it sees (TPVFormer's
    trick, vectorised: the visible queries of every camera are gathered into a padded
    ``[B*N, Q_max, C]`` batch and scattered back), which cuts the cost ~N/2-fold for surround
    rigs; the result equals the dense computation. Under torch.jit.trace / torch.compile the
    dense path is used (the padded size depends on the camera geometry).
    """

    def __init__(self, embed_dim: int, num_heads: int, num_levels: int, num_refs: int, num_points: int,
                 value_dim: int, rebatch: bool = True):
        super().__init__()
        self.attn = DeformableAttention(embed_dim, num_heads, num_levels, num_refs, num_points, value_dim)
        self.rebatch = rebatch

    def forward(self, query: Tensor, reference_points: Tensor, mask: Tensor,
                values: Sequence[Tensor] | PaddedMaps) -> Tensor:
        """query [B, Q, C]; reference_points [B*N, Q, 1, D, 2]; mask [B, N, Q]; values L x
        [B*N, C_v, H_l, W_l] (or those padded once, PaddedMaps) -> [B, Q, C]."""
        B, N, Q = mask.shape
        C = query.shape[-1]
        vals = self.attn.project_values(values)
        m = mask.reshape(B * N, Q)
        # the padded size is data-dependent: a trace/compile would bake it in, so use the dense path there
        static = torch.jit.is_tracing() or torch.compiler.is_compiling()
        q_max = int(m.sum(1).max()) if self.rebatch and not static else Q
        if q_max < Q:
            # visible queries first (stable order), padded to the largest count
            order = torch.argsort((~m).to(torch.uint8), dim=1, stable=True)[:, :q_max]  # [B*N, q_max]
            keep = torch.gather(m, 1, order)
            q_all = query.repeat_interleave(N, dim=0) if N > 1 else query
            q_sel = torch.gather(q_all, 1, order[..., None].expand(-1, -1, C))
            ref_idx = order.view(B * N, q_max, 1, 1, 1).expand(-1, -1, *reference_points.shape[2:])
            ref_sel = torch.gather(reference_points, 1, ref_idx)
            out_sel = self.attn.sample(q_sel, ref_sel, vals) * keep[..., None].to(q_sel.dtype)
            out = out_sel.new_zeros(B * N, Q, out_sel.shape[-1]).scatter(1, order[..., None].expand_as(out_sel), out_sel)
        else:
            out = self.attn.sample(query, reference_points, vals) * m[..., None].to(query.dtype)  # [B*N, Q, C]
        cnt = mask.sum(1).clamp(min=1).to(out.dtype)[..., None]  # [B, Q, 1]
        out = out.view(B, N, Q, -1).sum(1) / cnt
        return self.attn.output_proj(out)


class FFN(nn.Sequential):
    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, dim))


class TPVLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        C = cfg.embed_dim
        self.cross_view = DeformableAttention(C, cfg.num_heads, 3, cfg.cross_view_points, cfg.num_points)
        self.image = nn.ModuleDict({
            p: ImageCrossAttention(C, cfg.num_heads, cfg.num_levels, d, cfg.num_points, cfg.fpn_channels)
            for p, d in zip(PLANES, cfg.num_points_in_pillar)
        })
        self.ffn = FFN(C, cfg.ffn_dim, cfg.dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(C), nn.LayerNorm(C), nn.LayerNorm(C)
        self.drop = nn.Dropout(cfg.dropout)


class TPVLifter(nn.Module):
    """Image features -> :class:`Planes` (xy, yz, xz).

    forward(features: L x ``[B*N, C_f, H_l, W_l]`` (camera-major within batch, i.e. index
    b * N + n), K ``[B, N, 3, 3]``, T_ego_cam ``[B, N, 4, 4]``, image_size (H, W)) -> Planes.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        C = cfg.embed_dim
        self.sizes = {"xy": (cfg.tpv_h, cfg.tpv_w), "yz": (cfg.tpv_w, cfg.tpv_z), "xz": (cfg.tpv_h, cfg.tpv_z)}
        self.queries = nn.ParameterDict({p: nn.Parameter(torch.randn(a * b, C) * 0.02) for p, (a, b) in self.sizes.items()})
        self.pos = nn.ParameterDict({p: nn.Parameter(torch.randn(a * b, C) * 0.02) for p, (a, b) in self.sizes.items()})
        self.layers = nn.ModuleList(TPVLayer(cfg) for _ in range(cfg.num_layers))
        for p, d in zip(PLANES, cfg.num_points_in_pillar):
            self.register_buffer(f"pillar_{p}", plane_pillar_points(cfg.scene, p, self.sizes[p], d), persistent=False)
        self.register_buffer("cross_view_ref", self._cross_view_reference(), persistent=False)

    def _cross_view_reference(self) -> Tensor:
        """[Qtot, 3 planes, D_cv, 2]: each query's pillar points projected onto each plane, in
        the [0, 1] (column, row) coordinates of that plane's feature map."""
        s = self.cfg.scene
        lo = torch.tensor(s.lower)
        ext = torch.tensor(s.upper) - lo
        refs = []
        for p in PLANES:
            n = (plane_pillar_points(s, p, self.sizes[p], self.cfg.cross_view_points) - lo) / ext  # [Q, D, 3]
            nx, ny, nz = n.unbind(-1)
            # xy map: rows x, cols y -> (col, row) = (y, x); yz: (z, y); xz: (z, x)
            refs.append(torch.stack([torch.stack([ny, nx], -1), torch.stack([nz, ny], -1), torch.stack([nz, nx], -1)], 1))
        return torch.cat(refs, 0)

    def _split(self, q: Tensor) -> dict[str, Tensor]:
        counts = [a * b for a, b in self.sizes.values()]
        return dict(zip(PLANES, q.split(counts, dim=1)))

    def _maps(self, q: Tensor) -> list[Tensor]:
        B, _, C = q.shape
        return [t.transpose(1, 2).reshape(B, C, *self.sizes[p]) for p, t in self._split(q).items()]

    def _project_pillars(self, K: Tensor, T_ego_cam: Tensor, image_size: tuple[int, int]) -> dict:
        """plane -> (reference points, camera mask) of its pillars (project_reference_points); the
        three planes in one projection when their pillars have the same number of points."""
        pillars = [getattr(self, f"pillar_{p}") for p in PLANES]
        if len({t.shape[1] for t in pillars}) > 1:
            return {p: project_reference_points(t, K, T_ego_cam, image_size) for p, t in zip(PLANES, pillars)}
        ref, mask = project_reference_points(torch.cat(pillars, 0), K, T_ego_cam, image_size)
        counts = [t.shape[0] for t in pillars]
        return {p: (r, m) for p, r, m in zip(PLANES, ref.split(counts, 1), mask.split(counts, 2))}

    def forward(self, features: Sequence[Tensor], K: Tensor, T_ego_cam: Tensor, image_size: tuple[int, int]) -> Planes:
        B, N = K.shape[:2]
        if T_ego_cam.shape[:2] != (B, N) or features[0].shape[0] != B * N:
            raise ValueError(
                f"TPVLifter: K {tuple(K.shape)}, T_ego_cam {tuple(T_ego_cam.shape)} and features "
                f"{tuple(features[0].shape)} disagree on B*N"
            )
        refs = self._project_pillars(K, T_ego_cam, image_size)
        feats = PaddedMaps.of(list(features))  # padded once, read by every plane and layer
        q = torch.cat([self.queries[p] for p in PLANES], 0).unsqueeze(0).expand(B, -1, -1)
        pos = torch.cat([self.pos[p] for p in PLANES], 0).unsqueeze(0)
        cv_ref = self.cross_view_ref.unsqueeze(0).expand(B, -1, -1, -1, -1)
        for layer in self.layers:
            q = layer.norm1(q + layer.drop(layer.cross_view(q + pos, cv_ref, self._maps(q))))
            qs, ps = self._split(q), self._split(pos)
            upd = [layer.image[p](qs[p] + ps[p], refs[p][0], refs[p][1], feats) for p in PLANES]
            q = layer.norm2(q + layer.drop(torch.cat(upd, 1)))
            q = layer.norm3(q + layer.drop(layer.ffn(q)))
        xy, yz, xz = self._maps(q)
        return Planes(xy=xy, yz=yz, xz=xz)
