"""training/gt_sdf_bounds.py: the GT SDF (exact distance transform), the representation bound
scored by the trainer's evaluation, and the 3D-supervised loss."""

import importlib.util
import itertools
import json
from pathlib import Path

import pytest
import torch

from selfocc_core.data.sample import collate_samples
from selfocc_core.geometry.voxel_grid import VoxelGridSpec
from selfocc_core.model.selfocc import SelfOccModel

from training_fakes import MICRO_OVERRIDES, FakeDataset, micro_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

_spec = importlib.util.spec_from_file_location(
    "gt_sdf_bounds", Path(__file__).resolve().parents[1] / "training" / "gt_sdf_bounds.py")
bounds = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bounds)


def test_distance_transform_is_exact_euclidean():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(7, 6, 5, generator=g) < 0.1
    target[0, 0, 0] = True
    d = bounds.distance_to(target)
    pts = torch.tensor(list(itertools.product(range(7), range(6), range(5))), dtype=torch.float32)
    brute = torch.cdist(pts, pts[target.reshape(-1)]).amin(1).reshape(7, 6, 5)
    torch.testing.assert_close(d, brute)


def test_signed_distance_puts_the_surface_on_voxel_faces():
    occ = torch.zeros(4, 4, 8, dtype=torch.bool)
    occ[:, :, :3] = True  # ground: three layers
    sdf = bounds.signed_distance(occ, 0.4)
    torch.testing.assert_close(sdf[1, 1], torch.tensor([-1.0, -0.6, -0.2, 0.2, 0.6, 1.0, 1.4, 1.8]))
    assert ((sdf <= 0) == occ).all()
    through_centres = bounds.signed_distance(occ, 0.4, surface=0.0)  # the surface through the top layer's centres
    torch.testing.assert_close(through_centres[1, 1, :4], torch.tensor([-0.8, -0.4, 0.0, 0.4]))
    with pytest.raises(ValueError, match="surface must lie"):
        bounds.signed_distance(occ, 0.4, surface=1.0)


def test_sdf_on_field_reads_nodes_that_coincide_with_gt_centres():
    gt_grid = VoxelGridSpec(0.0, 4.0, 0.0, 4.0, 0.0, 2.0, 0.5)
    field_grid = VoxelGridSpec(0.0, 4.0, 0.0, 4.0, 0.0, 2.0, 0.5)
    z = gt_grid.centers()[..., 2]
    out = bounds.sdf_on_field(z - 1.0, gt_grid, field_grid)
    torch.testing.assert_close(out, z - 1.0)
    coarse = VoxelGridSpec(0.0, 4.0, 0.0, 4.0, 0.0, 2.0, 1.0)  # nodes between GT centres: linear stays linear
    torch.testing.assert_close(bounds.sdf_on_field(z - 1.0, gt_grid, coarse), coarse.centers()[..., 2] - 1.0)


def test_representation_bound_of_a_field_that_can_hold_the_gt_is_perfect():
    cfg = micro_config()  # field grid = the fake GT grid (1.6 m voxels)
    data = FakeDataset(3, with_gt=True)
    out = bounds.representation_bound(cfg, data, sharpness=64.0)
    assert out["occ/iou"] == pytest.approx(1.0) and out["occ/precision"] == pytest.approx(1.0)
    assert "depth/abs_rel" in out


def test_sdf_supervised_loss_falls_when_fitted():
    cfg = micro_config()
    torch.manual_seed(0)
    model = SelfOccModel(cfg.model)
    data = FakeDataset(1, with_gt=True)
    target = bounds.field_target(data, 0, cfg.model.scene)[None]
    frame = collate_samples([data[0]]).without_gt().frame
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = bounds.sdf_supervised_loss(model, frame, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    with pytest.raises(ValueError, match="not on the field grid"):
        bounds.sdf_supervised_loss(model, frame, target[..., :-1])


@pytest.mark.parametrize("mode", ["representation", "supervised"])
def test_main_prints_the_trainers_metrics(mode, monkeypatch, capsys):
    monkeypatch.setattr(bounds, "open_data", lambda spec, cfg, split: FakeDataset(2, with_gt=True))
    sets = [a for o in MICRO_OVERRIDES for a in ("--set", o)]
    assert bounds.main([mode, "--data", "fake", "--steps", "2", "--eval-interval", "1", *sets]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["step"] for x in lines] == ([0] if mode == "representation" else [0, 1, 2])
    assert all("occ/iou" in x and "depth/abs_rel" in x for x in lines)


def test_data_without_gt_occupancy_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setattr(bounds, "open_data", lambda spec, cfg, split: FakeDataset(2, with_gt=False))
    sets = [a for o in MICRO_OVERRIDES for a in ("--set", o)]
    assert bounds.main(["representation", "--data", "fake", *sets]) == 2
    assert "needs ground-truth occupancy" in capsys.readouterr().err
