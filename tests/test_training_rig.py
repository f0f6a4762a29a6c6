"""The training rig stored in checkpoints (camera extrinsics in the training ego frame, ground z)."""

from __future__ import annotations

import pytest
import torch

from selfocc_core.inference.predictor import OccupancyPredictor
from selfocc_core.model.selfocc import SelfOccModel
from selfocc_core.training.checkpoint import load_checkpoint, rig_from_checkpoint, save_checkpoint, training_rig
from selfocc_core.training.config import load_experiment_config


def test_rig_round_trips_and_old_checkpoints_still_load(tmp_path):
    cfg = load_experiment_config("tiny_synth")
    model = SelfOccModel(cfg.model)
    T = torch.eye(4).repeat(2, 3, 1, 1)  # a batch [B=2, N=3, 4, 4]: the first sample is kept
    T[0, :, 2, 3] = torch.tensor([1.5, 1.6, 1.7])
    rig = training_rig(cfg.data.cameras, T, cfg.model.ground_height)
    assert rig["T_ego_cam"].shape == (3, 4, 4) and rig["T_ego_cam"].dtype == torch.float64
    new = save_checkpoint(tmp_path / "new.pt", model=model, config=cfg, step=0, with_rng=False, rig=rig)
    old = save_checkpoint(tmp_path / "old.pt", model=model, config=cfg, step=0, with_rng=False)
    got = rig_from_checkpoint(load_checkpoint(new))
    assert got["camera_names"] == list(cfg.data.cameras) and got["ground_z"] == cfg.model.ground_height
    torch.testing.assert_close(got["T_ego_cam"], T[0].double())
    assert rig_from_checkpoint(load_checkpoint(old)) is None  # written before the rig was stored
    p_new = OccupancyPredictor.from_checkpoint(new, device="cpu")
    torch.testing.assert_close(p_new.training_rig["T_ego_cam"], T[0].double())
    assert OccupancyPredictor.from_checkpoint(old, device="cpu").training_rig is None
    with pytest.raises(ValueError, match=r"T_ego_cam must be \[N, 4, 4\] for 2 cameras"):
        training_rig(["A", "B"], torch.eye(4)[None], 0.0)
