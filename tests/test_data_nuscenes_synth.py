"""The nuScenes reader on the synthetic nuScenes export (selfocc synth --format nuscenes).

Slow (renders 13 frames x 6 cameras + LiDAR + Occ3D labels): the default suite covers the
reader with a hand-written devkit dataroot (test_data_nuscenes.py) instead.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selfocc_core.data.config import DataConfig
from selfocc_core.data.nuscenes import NuScenesDataset
from selfocc_core.data.open import open_dataset
from selfocc_core.data.sample import collate_samples

exn = pytest.importorskip("selfocc_core.synth.export_nuscenes")

H, W = 36, 64
SEED = 2


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("synth") / "nus"
    exn.export_nuscenes(out, seeds=[SEED], num_keyframes=3, height=H, width=W)
    yield out
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_reader_on_synthetic_export(export):
    from selfocc_core.synth.sequence import SyntheticSequence

    ds = open_dataset(str(export), DataConfig(image_height=H, image_width=W))
    assert isinstance(ds, NuScenesDataset)
    assert len(ds) == 1  # keyframes 0, 6, 12: only the middle has sweeps on both sides
    s = ds[0]
    f = s.frame
    assert f.camera_names == ["CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT"]
    assert f.images.shape == (6, 3, H, W) and sorted(s.context) == [-1, 1]
    # the exporter's truth: 13 frames at 12 Hz, all cameras at one instant
    seq = SyntheticSequence(SEED, 13, "nuscenes", None, 10.0, exn.FRAME_RATE_HZ)
    assert np.allclose(f.T_world_ego.double().numpy(), seq.T_world_ego(6), atol=1e-3)
    T_ego_cam = np.stack([c.T_ego_cam for c in seq.rig.cameras])
    assert np.allclose(f.T_ego_cam.double().numpy(), T_ego_cam, atol=1e-4)
    # 10 m/s at 12 Hz = 0.83 m per sweep >= min_ego_distance: the adjacent sweeps
    for o in (-1, 1):
        assert np.allclose(s.context[o].T_world_ego.double().numpy(), seq.T_world_ego(6 + o), atol=1e-3)
        assert s.context[o].timestamp - f.timestamp == pytest.approx(o / 12, abs=1e-4)
    # Occ3D labels and masks as written
    z = np.load(export / "gts" / f"synth-{SEED:04d}" / s.sample_id / "labels.npz")
    assert torch.equal(s.gt.occ_semantics, torch.from_numpy(z["semantics"]))
    assert torch.equal(s.gt.occ_mask_camera, torch.from_numpy(z["mask_camera"].astype(bool)))
    assert torch.equal(s.gt.occ_mask_lidar, torch.from_numpy(z["mask_lidar"].astype(bool)))
    assert 0 < s.gt.occ_mask_camera.sum() < s.gt.occ_mask_camera.numel()
    # LiDAR depth agrees with the renderer's depth where both exist
    rendered = seq.render(6, H, W).depth
    d = s.gt.depth
    both = (d > 0) & (rendered > 0) & (rendered < 60)
    assert both.sum() > 300
    rel = ((d[both] - rendered[both]).abs() / rendered[both]).median()
    assert rel < 0.05, rel
    b = collate_samples([s, s])
    assert b.context[-1].images.shape == (2, 6, 3, H, W)
