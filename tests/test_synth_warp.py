"""THE key check of the synthetic world: frame t+1 (and t+2) warped into frame t with frame t's
GT depth and the GT relative pose reproduces frame t (what photometric self-supervision relies
on), for the nuScenes and the KITTI rig."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from selfocc_core.data.synthetic import SyntheticConfig, SyntheticDataset
from selfocc_core.geometry.camera import backproject, project
from selfocc_core.geometry.transforms import invert_transform, transform_points


@pytest.fixture(scope="module", params=[("nuscenes", 96, 176), ("kitti", 94, 310)], ids=["nuscenes", "kitti"])
def dataset(request):
    rig, h, w = request.param
    cfg = SyntheticConfig(seed=3, rig=rig, num_frames=3, image_height=h, image_width=w, context_offsets=[1, 2], with_gt=False)
    return SyntheticDataset(cfg)


def _warp(img_src, depth_tgt, depth_src, K, T_src_tgt):
    """Warp source image [3,H,W] into the target view; returns (warped [3,H,W], valid [H,W])."""
    H, W = depth_tgt.shape
    pts = backproject(depth_tgt, K).reshape(-1, 3)
    uv, z = project(transform_points(T_src_tgt, pts), K)
    grid = torch.stack([(uv[:, 0] + 0.5) / W * 2 - 1, (uv[:, 1] + 0.5) / H * 2 - 1], -1).reshape(1, H, W, 2)
    warped = F.grid_sample(img_src[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    d_src = F.grid_sample(depth_src[None, None], grid, mode="nearest", align_corners=False)[0, 0].reshape(-1)
    inside = (uv[:, 0] > 0.5) & (uv[:, 0] < W - 1.5) & (uv[:, 1] > 0.5) & (uv[:, 1] < H - 1.5)
    # occlusion: the point must be what the source camera sees there (depth consistency)
    visible = (depth_tgt.reshape(-1) > 0) & (z > 0.1) & ((d_src - z).abs() < 0.03 * z + 0.05)
    return warped, (inside & visible).reshape(H, W)


def _static(instance: torch.Tensor, moving_ids: set[int]) -> torch.Tensor:
    return ~torch.isin(instance, torch.tensor(sorted(moving_ids) or [-99]))


@pytest.mark.parametrize("offset", [1, 2])
def test_warp_next_frame_reproduces_current(dataset, offset):
    ds = dataset
    s = ds[0]
    nxt = s.context[offset]
    moving = set(ds.seq.world.prims.instance[ds.seq.world.prims.moving].tolist())
    r0, r1 = ds.rendered(0), ds.rendered(offset)
    inst0 = torch.from_numpy(r0["instance"]).long()
    depth0, depth1 = torch.from_numpy(r0["depth"]), torch.from_numpy(r1["depth"])
    T_world_cam0, T_world_cam1 = s.frame.T_world_cam, nxt.T_world_cam
    errs, base_errs, fracs = [], [], []
    for n in range(s.frame.num_cameras):
        T_c1_c0 = invert_transform(T_world_cam1[n]) @ T_world_cam0[n]
        warped, valid = _warp(nxt.images[n], depth0[n], depth1[n], s.frame.K[n], T_c1_c0)
        valid &= _static(inst0[n], moving)
        fracs.append(valid.float().mean().item())
        err = (warped - s.frame.images[n]).abs().mean(0)
        errs.append(err[valid].mean().item())
        # baseline: no motion compensation at all (same pixel in the next frame)
        base_errs.append((nxt.images[n] - s.frame.images[n]).abs().mean(0)[valid].mean().item())
    errs, base_errs = torch.tensor(errs), torch.tensor(base_errs)
    assert min(fracs) > 0.3, f"too few pixels visible in both frames: {fracs}"
    print("errors", errs.tolist(), "identity", base_errs.tolist())
    assert errs.max() < 0.02, f"photometric error after GT warp too large per camera: {errs.tolist()}"
    assert (base_errs > 2.5 * errs).all(), f"warp not better than identity: {errs.tolist()} vs {base_errs.tolist()}"


def test_warp_with_wrong_pose_is_worse(dataset):
    ds = dataset
    s = ds[0]
    nxt = s.context[1]
    depth0, depth1 = torch.from_numpy(ds.rendered(0)["depth"]), torch.from_numpy(ds.rendered(1)["depth"])
    n = 0  # CAM_FRONT
    T_c1_c0 = invert_transform(nxt.T_world_cam[n]) @ s.frame.T_world_cam[n]
    wrong = T_c1_c0.clone()
    wrong[2, 3] += 0.5  # half a metre along the optical axis
    warped, valid = _warp(nxt.images[n], depth0[n], depth1[n], s.frame.K[n], T_c1_c0)
    warped_w, _ = _warp(nxt.images[n], depth0[n], depth1[n], s.frame.K[n], wrong)
    good = (warped - s.frame.images[n]).abs().mean(0)[valid].mean()
    bad = (warped_w - s.frame.images[n]).abs().mean(0)[valid].mean()
    assert bad > 1.5 * good, (good.item(), bad.item())
