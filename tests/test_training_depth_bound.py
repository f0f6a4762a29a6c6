"""training/depth_supervised_bound.py: the GT-depth diagnostic fits GT depth and ignores GT beyond the box."""

import importlib.util
from pathlib import Path

import pytest
import torch

from selfocc_core.data.sample import collate_samples
from selfocc_core.model.selfocc import SelfOccModel

from training_fakes import FakeDataset, micro_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

_spec = importlib.util.spec_from_file_location(
    "depth_supervised_bound", Path(__file__).resolve().parents[1] / "training" / "depth_supervised_bound.py")
bound = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bound)


@pytest.mark.parametrize("mode", ["proposals", "expected"])
def test_gt_depth_loss_falls_when_fitted(mode):
    cfg = micro_config("loss.eikonal_weight=0.0")
    torch.manual_seed(0)
    model = SelfOccModel(cfg.model)
    sample = collate_samples([FakeDataset(1, with_gt=True)[0]])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        torch.manual_seed(1)  # same ray offsets every step
        loss = bound.depth_supervised_loss(model, sample, cfg, mode)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0], losses


def test_gt_beyond_the_box_only_asks_for_transparency():
    cfg = micro_config("loss.eikonal_weight=0.0")
    model = SelfOccModel(cfg.model)
    sample = collate_samples([FakeDataset(1, with_gt=True)[0]])
    sample.gt.depth.fill_(1e4)  # every GT surface far beyond the box
    torch.manual_seed(1)
    loss = bound.depth_supervised_loss(model, sample, cfg)
    frame = sample.frame
    torch.manual_seed(1)
    rays = bound.generate_rays(frame.K, frame.T_ego_cam, frame.image_size, cfg.model.ray_stride, random_offset=True,
                               box=cfg.model.scene, min_near=cfg.model.min_near)
    acc = model.render(model(frame), rays).accumulation
    torch.testing.assert_close(loss, 0.5 * acc.mean())


def test_data_without_gt_depth_is_a_clear_error():
    cfg = micro_config()
    sample = collate_samples([FakeDataset(1, with_gt=False)[0]])
    with pytest.raises(ValueError, match="needs ground-truth depth"):
        bound.depth_supervised_loss(SelfOccModel(cfg.model), sample, cfg)


def test_unknown_mode_is_an_error():
    cfg = micro_config()
    sample = collate_samples([FakeDataset(1, with_gt=True)[0]])
    with pytest.raises(ValueError, match="mode must be"):
        bound.depth_supervised_loss(SelfOccModel(cfg.model), sample, cfg, "median")


def test_main_prints_metrics_and_saves_a_loadable_checkpoint(tmp_path, monkeypatch, capsys):
    import json

    from selfocc_core.training.checkpoint import build_model_from_checkpoint
    from training_fakes import MICRO_OVERRIDES

    monkeypatch.setattr(bound, "open_data", lambda spec, cfg, split: FakeDataset(2, with_gt=True))
    sets = [a for o in MICRO_OVERRIDES for a in ("--set", o)]
    out = tmp_path / "bound.pt"
    assert bound.main(["--steps", "2", "--eval-interval", "1", "--save", str(out), *sets]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["step"] for x in lines] == [0, 1, 2] and all("occ/iou" in x and "depth/abs_rel" in x for x in lines)
    model, cfg = build_model_from_checkpoint(out)
    assert cfg.data.image_width == 48 and sum(p.numel() for p in model.parameters()) > 0


def test_synthetic_training_frames_get_rendered_gt_depth_without_occupancy_gt():
    from torch.utils.data import ConcatDataset

    from selfocc_core.data.synthetic import SyntheticConfig, SyntheticDataset

    def street(seed):
        return SyntheticDataset(SyntheticConfig(seed=seed, num_frames=2, cameras=["CAM_FRONT"], image_height=16,
                                                image_width=24, context_offsets=[], require_context=False,
                                                with_gt=False))

    data = ConcatDataset([street(0), street(1)])
    s = bound.with_gt_depth(data, 3)
    assert s.gt.occ_semantics is None and s.gt.depth.shape == (1, 16, 24)
    torch.testing.assert_close(s.gt.depth, torch.from_numpy(data.datasets[1].rendered(1)["depth"]))
    assert (s.gt.depth > 0).any()
