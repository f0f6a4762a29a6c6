"""SyntheticDataset: Sample schema, context at the sequence ends, caches, config errors."""

from __future__ import annotations

import pytest
import torch

from selfocc_core.config_io import ConfigError, from_dict
from selfocc_core.data.sample import collate_samples
from selfocc_core.data.synthetic import SyntheticConfig, SyntheticDataset
from selfocc_core.synth.rigs import get_rig
from selfocc_core.synth.sequence import SyntheticSequence

H, W = 24, 44


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_samples_follow_the_schema_and_context_rules():
    ds = SyntheticDataset(SyntheticConfig(seed=1, num_frames=4, image_height=H, image_width=W, with_gt=False))
    assert len(ds) == 4
    assert sorted(ds[0].context) == [1, 2]
    assert sorted(ds[1].context) == [-1, 1, 2]
    assert sorted(ds[3].context) == [-2, -1]
    s = ds[1]
    f = s.frame
    assert f.images.shape == (6, 3, H, W) and f.images.dtype == torch.float32
    assert 0.0 <= f.images.min() and f.images.max() <= 1.0 and f.images.std() > 0.05
    assert f.camera_names == get_rig("nuscenes").camera_names
    assert f.timestamp == pytest.approx(1 / 12)
    assert s.context[2].timestamp == pytest.approx(3 / 12)
    K = get_rig("nuscenes").cameras[0].K_at(H, W)
    assert torch.allclose(f.K[0], K)
    assert torch.allclose(f.T_ego_cam[3], torch.tensor(get_rig("nuscenes").cameras[3].T_ego_cam, dtype=torch.float32))
    # the ego drives forward ~10 m/s: 0.83 m between frames
    dx = (s.context[1].T_world_ego[:3, 3] - f.T_world_ego[:3, 3]).norm()
    assert dx.item() == pytest.approx(10 / 12, rel=0.01)
    assert s.gt is None and s.frame.seg_labels is None
    assert torch.equal(ds[2].frame.images, s.context[1].images)  # frames are shared, not re-rendered differently


def test_ground_truth_and_collate():
    cfg = SyntheticConfig(seed=2, num_frames=3, image_height=H, image_width=W, context_offsets=[-1, 1],
                          require_context=True, seg_labels_from_gt=True)
    ds = SyntheticDataset(cfg)
    assert len(ds) == 1 and ds.indices == [1]
    s = ds[0]
    gt = s.gt
    assert gt.grid.shape == (200, 200, 16)
    assert gt.occ_semantics.dtype == torch.uint8 and gt.occ_semantics.shape == (200, 200, 16)
    assert gt.occ_mask_camera.dtype == torch.bool and gt.occ_mask_lidar.dtype == torch.bool
    assert 0.02 < gt.occ_mask_camera.float().mean() < 0.9
    assert gt.depth.shape == (6, H, W) and gt.semantics_2d.shape == (6, H, W)
    assert torch.equal(s.frame.seg_labels, gt.semantics_2d)
    assert (gt.depth > 0).float().mean() > 0.5
    b = collate_samples([s, s])
    assert b.frame.images.shape == (2, 6, 3, H, W) and sorted(b.context) == [-1, 1]
    assert b.gt.occ_semantics.shape == (2, 200, 200, 16)
    assert s.without_gt().gt is None


def test_kitti_rig_dataset():
    ds = SyntheticDataset(SyntheticConfig(rig="kitti", num_frames=2, image_height=32, image_width=104, with_gt=False))
    f = ds[0].frame
    assert f.camera_names == ["image_2"] and f.images.shape == (1, 3, 32, 104)
    assert f.T_world_ego[2, 3].item() == pytest.approx(1.73)


def test_disk_cache_avoids_re_rendering(tmp_path, monkeypatch):
    cfg = SyntheticConfig(seed=3, num_frames=2, image_height=H, image_width=W, with_gt=True, cache_dir=str(tmp_path))
    a = SyntheticDataset(cfg)[0]
    files = sorted(p.name for p in tmp_path.rglob("*.npz"))
    assert files == ["frame_00000.npz", "frame_00001.npz", "occ_00000.npz"]
    assert not list(tmp_path.rglob("*.tmp"))

    def no_render(*args, **kwargs):
        raise AssertionError("rendered although cached")

    monkeypatch.setattr(SyntheticSequence, "render", no_render)
    monkeypatch.setattr(SyntheticSequence, "ground_truth", no_render)
    b = SyntheticDataset(cfg)[0]
    assert torch.equal(a.frame.images, b.frame.images) and torch.equal(a.gt.occ_semantics, b.gt.occ_semantics)
    assert torch.equal(a.gt.occ_mask_camera, b.gt.occ_mask_camera)
    # another seed must not reuse these files
    with pytest.raises(AssertionError, match="rendered although cached"):
        SyntheticDataset(SyntheticConfig(seed=4, num_frames=2, image_height=H, image_width=W, cache_dir=str(tmp_path)))[0]


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="unknown rig 'waymo'"):
        SyntheticConfig(rig="waymo")
    with pytest.raises(ValueError, match="image size must be positive"):
        SyntheticConfig(image_height=-5)
    with pytest.raises(ValueError, match="num_frames"):
        SyntheticConfig(num_frames=0)
    with pytest.raises(ValueError, match="unknown camera"):
        SyntheticDataset(SyntheticConfig(cameras=["CAM_FRONT", "CAM_ROOF"]))
    with pytest.raises(ValueError, match="no frame with all context offsets"):
        SyntheticDataset(SyntheticConfig(num_frames=2, require_context=True))
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(SyntheticConfig, {"seed": 1, "sead": 2})
    cfg = from_dict(SyntheticConfig, {"seed": 5, "cameras": ["CAM_FRONT"], "image_height": 16, "image_width": 32, "num_frames": 1})
    ds = SyntheticDataset(cfg)
    assert ds[0].frame.images.shape == (1, 3, 16, 32) and ds[0].context == {}
    with pytest.raises(IndexError):
        ds[1]
