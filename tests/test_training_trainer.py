"""Trainer: exact resume, NaN handling, ground-truth isolation, checkpoints, CLI errors."""

import dataclasses
import math
import warnings
from pathlib import Path

import pytest
import torch

from selfocc_core.data.sample import GroundTruth, collate_samples
from selfocc_core.losses.total import LossTerms
from selfocc_core.training import distributed as D
from selfocc_core.training import trainer as trainer_mod
from selfocc_core.training.checkpoint import build_model_from_checkpoint, load_checkpoint, save_checkpoint
from selfocc_core.training.trainer import Objective, Trainer, TrainingDivergedError, evaluate

from training_fakes import FakeDataset, micro_config

ENV = D.DistEnv(0, 1, 0, torch.device("cpu"))


def make_trainer(out, cfg=None, resume=False, data=None, eval_set=None):
    return Trainer(cfg or micro_config(), data or FakeDataset(4, with_gt=False), out, ENV, eval_set=eval_set,
                   resume=resume, progress=False)


def test_resume_is_exact(tmp_path):
    torch.set_num_threads(1)
    cfg = micro_config("train.deterministic=true")
    straight = make_trainer(tmp_path / "a", cfg)
    straight.run()
    assert straight.step == 4
    first = make_trainer(tmp_path / "b", cfg)
    first.run(stop_after=2)
    assert first.step == 2 and (tmp_path / "b" / "last.pt").is_file()
    del first
    torch.manual_seed(12345)  # the resumed run must not depend on the process's RNG state
    resumed = make_trainer(tmp_path / "b", cfg, resume=True)
    assert resumed.step == 2
    resumed.run()
    assert resumed.step == 4
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # a run folder is never silently overwritten
    with pytest.raises(FileExistsError, match="--resume"):
        make_trainer(tmp_path / "b", cfg)
    log = (tmp_path / "a" / "log.jsonl").read_text().splitlines()
    assert len(log) == 4 and '"loss/reprojection"' in log[-1]
    assert sorted(p.name for p in (tmp_path / "a").glob("step_*.pt")) == ["step_0000002.pt", "step_0000004.pt"]


def test_wall_time_limit_stops_and_resume_continues(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    clock = {"t": 1000.0}
    monkeypatch.setattr(trainer_mod.time, "time", lambda: clock["t"])
    real_step = Trainer.train_step

    def timed_step(self, batch):  # every step takes 40 s of "wall time"
        clock["t"] += 40.0
        return real_step(self, batch)

    monkeypatch.setattr(Trainer, "train_step", timed_step)
    cfg = micro_config("train.steps=6", "train.max_wall_minutes=1.5", "train.checkpoint_interval=100")
    t = make_trainer(tmp_path / "run", cfg)
    result = t.run()
    # 90 s allow the steps ending at 40 and 80 s; the step ending at 120 s is the last one
    assert result.stopped_at_wall_limit and result.step == 3 and t.step == 3
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 3
    resumed = make_trainer(tmp_path / "run", micro_config("train.steps=6", "train.checkpoint_interval=100"),
                           resume=True)
    r2 = resumed.run()
    assert r2.step == 6 and not r2.stopped_at_wall_limit
    with pytest.raises(ValueError, match="max_wall_minutes"):
        micro_config("train.max_wall_minutes=-1")


def _nan_losses(real, nan_steps):
    calls = {"n": 0}

    def fake(cfg, inp):
        out = real(cfg, inp)
        calls["n"] += 1
        if calls["n"] in nan_steps:
            return LossTerms(total=out.total * float("nan"), terms=out.terms, stats=out.stats)
        return out

    return fake


def test_nan_step_is_skipped_then_recovers(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_mod, "compute_losses", _nan_losses(trainer_mod.compute_losses, {2}))
    tr = make_trainer(tmp_path, micro_config("train.steps=3", "train.max_nan_steps=2"))
    batch = collate_samples([tr.train_set[0]])
    tr.train_step(batch)
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    with pytest.warns(UserWarning, match="non-finite loss"):
        tr.train_step(batch)
    after = tr.model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == []  # the NaN step changed nothing
    assert tr.consecutive_nan == 1 and tr.skipped == 1
    tr.train_step(batch)
    assert tr.consecutive_nan == 0 and tr.step == 3


def test_consecutive_nans_abort_with_clear_message(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_mod, "compute_losses", _nan_losses(trainer_mod.compute_losses, set(range(1, 100))))
    tr = make_trainer(tmp_path, micro_config("train.steps=10", "train.max_nan_steps=3"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(TrainingDivergedError, match="3 consecutive non-finite losses"):
            tr.run()
    assert tr.step == 2  # steps 0 and 1 skipped, the third NaN aborts


class ExplodingGroundTruth(GroundTruth):
    """Any attribute access raises: proves nothing loss-related reads the ground truth."""

    def __getattribute__(self, name):
        raise AssertionError(f"ground truth accessed: .{name}")


def test_ground_truth_never_reaches_the_losses(tmp_path):
    cfg = micro_config("loss.semantic_weight=0.1", "model.num_classes=5")
    data = FakeDataset(2, with_gt=True, seg=True)
    clean = collate_samples([data[0]]).without_gt()
    nan_gt = collate_samples([data[0]])
    nan_gt.gt.depth.fill_(float("nan"))
    nan_gt.gt.occ_semantics.fill_(0)
    exploding = dataclasses.replace(clean, gt=object.__new__(ExplodingGroundTruth))
    losses = []
    for batch in (clean, nan_gt, exploding):
        tr = make_trainer(tmp_path / str(len(losses)), cfg)
        torch.manual_seed(7)
        losses.append(tr.train_step(batch))
    assert "loss/semantic" in losses[0]
    for other in losses[1:]:
        assert other["loss"] == losses[0]["loss"]
        assert other["loss/reprojection"] == losses[0]["loss/reprojection"]
    # the objective itself refuses a sample that still carries ground truth
    with pytest.raises(ValueError, match="without_gt"):
        Objective(tr.model, cfg)(nan_gt, 0)


def test_evaluate_reports_depth_and_occupancy(tmp_path):
    cfg = micro_config()
    tr = make_trainer(tmp_path, cfg)
    m = evaluate(tr.model, FakeDataset(2, with_gt=True), cfg, torch.device("cpu"), 2, stride=4)
    assert 0 <= m["depth/abs_rel"] < 100 and 0 <= m["occ/iou"] <= 1
    assert 0 < m["occ/ground_plane_iou"] <= 1
    # GT depth is 6 m wherever it exists: a constant at the median is exact
    assert m["constant_depth/value"] == 6.0 and m["constant_depth/abs_rel"] < 1e-9 and m["constant_depth/a1"] == 1.0
    assert evaluate(tr.model, FakeDataset(2, with_gt=False), cfg, torch.device("cpu"), 2) == {}


class _PoleDataset(FakeDataset):
    """FakeDataset (GT: the road layer z in [-1.6, 0) of a 16 x 16 x 3 grid of 1.6 m voxels) plus a
    pole in the two layers above it at x, y in [4.8, 6.4) x [0, 1.6) (6-7 m from the ego)."""

    def __getitem__(self, i):
        s = super().__getitem__(i)
        s.gt.occ_semantics[11, 8, 1:] = 15
        return s


def test_evaluate_scores_against_references_on_the_same_voxels(tmp_path):
    cfg = micro_config()  # ground_height 0: the flat ground claims layers 0 and 1 (lower faces -1.6, 0)
    tr = make_trainer(tmp_path, cfg)
    m = evaluate(tr.model, _PoleDataset(2, with_gt=True), cfg, torch.device("cpu"), 2, stride=4)
    # the untrained field is the plane z = 0: the road layer exactly (centre -0.8), the pole missed
    assert m["occ/iou"] == pytest.approx(256 / 258) and m["occ/precision"] == 1.0
    # the flat ground: the road and the pole's lower voxel (TP 257) and 255 empty voxels of layer 1
    assert m["flat_ground/iou"] == pytest.approx(257 / 513) == m["occ/ground_plane_iou"]
    # the ground layer (flat layer + ground classes) holds the pole's lower voxel: GT's own ground is 257 voxels
    assert m["perfect_ground/iou"] == pytest.approx(257 / 258) and m["perfect_ground/precision"] == 1.0
    # above the ground layer only the pole's top voxel (layer 2) is scored: everyone misses it
    for p in ("occ/", "flat_ground/", "perfect_ground/"):
        assert m[f"{p}above_ground_recall"] == 0.0 and m[f"{p}above_ground_iou"] == 0.0
        assert m[f"{p}above_ground_iou_0-10m"] == 0.0 and math.isnan(m[f"{p}above_ground_iou_10-20m"])
    # RayIoU: the model sees the road where GT does; the flat ground's layer 1 holds the camera
    # (z = 1.5) and ends every ray in the camera's own voxel
    assert m["perfect_ground/rayiou"] >= m["occ/rayiou"] > m["flat_ground/rayiou"]
    assert 0 < m["occ/rayiou@4"] <= 1
    # depth: GT at 6 m, inside the 12.8 m box and below the 25 m cap
    assert m["depth/share_outside_box"] == 0 and m["depth/share_beyond_cap"] == 0
    assert math.isfinite(m["depth/abs_rel_0-10m"]) and math.isnan(m["depth/abs_rel_10-20m"])


def test_checkpoint_atomic_and_load_errors(tmp_path, monkeypatch):
    cfg = micro_config()
    tr = make_trainer(tmp_path / "run", cfg)
    path = tr.save()
    good = path.read_bytes()
    state = load_checkpoint(path, expected_config=cfg)
    assert state["step"] == 0 and state["config"]["model"]["tpv_h"] == 8 and state["format_version"] == 1

    def broken_save(obj, f, *a, **k):
        Path(f).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model=tr.model, config=cfg, step=99)
    monkeypatch.undo()
    assert path.read_bytes() == good  # previous checkpoint untouched
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []  # no temp left

    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "garbage.pt").write_bytes(b"\x00not a zip")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "garbage.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a selfocc checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"model\.tpv_h: checkpoint 8 vs config 12"):
        load_checkpoint(path, expected_config=micro_config("model.tpv_h=12"))
    with pytest.raises(ValueError, match="another model config"):
        make_trainer(tmp_path / "run", micro_config("model.tpv_h=12"), resume=True)

    model, cfg2 = build_model_from_checkpoint(path)
    assert cfg2 == cfg and not model.training
    for k, v in tr.model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)


def test_objective_under_bf16_autocast(tmp_path):
    # what the trainer runs on CUDA with train.bf16: the network in bf16, the losses in fp32
    # outside autocast (CPU autocast takes the same code path)
    cfg = micro_config("loss.semantic_weight=0.1", "model.num_classes=5", "loss.sparsity_weight=0.1")
    data = FakeDataset(2, with_gt=False, seg=True)
    batch = collate_samples([data[0]])
    tr = make_trainer(tmp_path, cfg)
    obj = Objective(tr.model, cfg)
    for offset in (0, 1):
        torch.manual_seed(3)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = obj(batch, offset)
        assert out["total"].dtype == torch.float32 and torch.isfinite(out["total"])
        tr.model.zero_grad()
        out["total"].backward()
        grads = [p.grad for p in tr.model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0


def test_beyond_box_background_reaches_the_reprojection_loss(tmp_path):
    batch = collate_samples([FakeDataset(2, with_gt=False)[0]])
    terms = {}
    for bg in ("infinity", "beyond_box"):
        cfg = micro_config(f"loss.background={bg}")
        tr = make_trainer(tmp_path / bg, cfg)
        torch.manual_seed(5)
        terms[bg] = float(Objective(tr.model, cfg)(batch, 1)["terms"]["reprojection"])
    assert math.isfinite(terms["beyond_box"]) and terms["beyond_box"] != terms["infinity"]
    with pytest.raises(ValueError, match="background_factors"):
        micro_config("loss.background_factors=[0.5]")
