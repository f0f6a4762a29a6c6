"""Context pairs without a camera baseline are never trained on (LossConfig.min_source_baseline),
and the slow-and-stopped synthetic street that needs it."""

import json
import math

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from selfocc_core.data.sample import Sample, collate_samples
from selfocc_core.data.synthetic import SyntheticConfig, SyntheticDataset
from selfocc_core.losses.reprojection import RigView, reprojection_loss
from selfocc_core.synth.world import LANE_Y, generate_world, slow_stop_distance
from selfocc_core.training import distributed as D
from selfocc_core.training.anchor import anchor_views, usable_anchor_offset
from selfocc_core.training.data import eval_spec_and_split
from selfocc_core.training.trainer import Trainer

from training_fakes import make_frame, micro_config

ENV = D.DistEnv(0, 1, 0, torch.device("cpu"))


class PositionsDataset(Dataset):
    """Samples (frame, -1, +1) at the given ego positions (x, metres) per sample."""

    def __init__(self, xs):
        self.xs = xs

    def __len__(self):
        return len(self.xs)

    def __getitem__(self, i):
        prev, cur, nxt = self.xs[i]
        return Sample(frame=make_frame(10 + i, x=cur), context={-1: make_frame(9 + i, x=prev), 1: make_frame(11 + i, x=nxt)},
                      sample_id=f"pos-{i}")


# --- the loss ignores an invalid source ------------------------------------------------------
def test_invalid_source_takes_no_part_in_the_reprojection_loss():
    torch.manual_seed(0)
    B, N, H, W = 2, 1, 8, 12
    K = torch.tensor([[10.0, 0, 5.5], [0, 10.0, 3.5], [0, 0, 1]]).expand(B, N, 3, 3)
    T = torch.eye(4).expand(B, N, 4, 4).clone()
    target_img = torch.rand(B, N, 3, H, W)
    moved = T.clone()
    moved[..., 0, 3] = 0.5
    good = RigView(images=torch.rand(B, N, 3, H, W), K=K, T_ego0_cam=moved)
    # a zero-baseline copy of the anchor image explains every ray perfectly (identity error 0)
    copy = RigView(images=target_img, K=K, T_ego0_cam=T)
    ys, xs = torch.meshgrid(torch.arange(H).float(), torch.arange(W).float(), indexing="ij")
    pixels = torch.stack([xs, ys], -1).reshape(1, -1, 2).expand(B, -1, -1)
    R = pixels.shape[1]
    target = target_img[:, 0].flatten(2).transpose(1, 2)
    d = torch.cat([pixels, torch.ones(B, R, 1)], -1) @ torch.linalg.inv(K[0, 0]).T
    kw = dict(origins=torch.zeros(B, R, 3), directions=d / d.norm(dim=-1, keepdim=True),
              camera_index=torch.zeros(B, R, dtype=torch.long), pixels=pixels, grid=(N, H, W),
              distance=torch.full((B, R), 5.0), automask=True)
    only_good = reprojection_loss(target, sources=[good], **kw)
    with_copy = reprojection_loss(target, sources=[good, copy], **kw)
    # the copy explains every ray at any depth: no depth signal left
    assert with_copy.loss < 1e-5 < only_good.loss
    masked = RigView(images=copy.images, K=K, T_ego0_cam=T, valid=torch.tensor([False, False]))
    out = reprojection_loss(target, sources=[good, masked], **kw)
    assert torch.equal(out.mask, only_good.mask) and torch.allclose(out.loss, only_good.loss)
    # per batch element: element 1 without any valid source has no ray that counts
    none_valid = RigView(images=good.images, K=K, T_ego0_cam=moved, valid=torch.tensor([True, False]))
    out = reprojection_loss(target, sources=[none_valid], **kw)
    assert not out.mask[1].any() and torch.equal(out.mask[0], only_good.mask[0])
    with pytest.raises(ValueError, match="valid must be"):
        RigView(images=good.images, K=K, T_ego0_cam=moved, valid=torch.tensor([1, 0]))


# --- anchor and source choice ----------------------------------------------------------------
def test_anchor_views_mark_sources_without_baseline():
    s = collate_samples([PositionsDataset([(0.0, 0.0, 1.0)])[0]])  # standing at -1/0, moving to +1
    v = anchor_views(s, 0, min_baseline=0.1)
    assert v.source_offsets == [-1, 1]
    assert torch.allclose(v.baselines, torch.tensor([[0.0, 1.0]]), atol=1e-5)
    assert v.usable.tolist() == [[False, True]] and len(v.usable_sources()) == 1
    assert anchor_views(s, 0).usable.all()  # min_baseline 0 keeps every pair
    # anchor -1 has only source 0, which stood still: another anchor is taken
    assert usable_anchor_offset(s, -1, 0.1) == 0
    assert usable_anchor_offset(s, 1, 0.1) == 1
    still = collate_samples([PositionsDataset([(2.0, 2.0, 2.0)])[0]])
    assert usable_anchor_offset(still, 0, 0.1) is None


def test_source_offsets_choose_the_anchors_sources():
    from selfocc_core.losses.config import LossConfig

    s = collate_samples([PositionsDataset([(0.0, 1.0, 2.0)])[0]])  # frames at offsets -1, 0, 1
    assert anchor_views(s, 0, source_offsets=(-2, -1, 1, 2)).source_offsets == [-1, 1]  # +-2 not in the sample
    v = anchor_views(s, -1, source_offsets=(1, 2))  # wider baseline: the anchor at -1 sees 0 and +1
    assert v.source_offsets == [0, 1]
    assert torch.allclose(v.baselines, torch.tensor([[1.0, 2.0]]), atol=1e-5)
    assert anchor_views(s, 1, source_offsets=(2,)).source_offsets == []
    # the anchor at +1 has no source at +1+2: another anchor with a usable source is taken
    assert usable_anchor_offset(s, 1, 0.1, source_offsets=(2,)) == -1
    for bad in ([], [0, 1], [1, 1]):
        with pytest.raises(ValueError, match="source_offsets"):
            LossConfig(source_offsets=bad)


def test_anchor_offsets_reach_far_frames_with_the_configured_odds():
    from selfocc_core.config_io import ConfigError
    from selfocc_core.losses.config import LossConfig
    from selfocc_core.training.anchor import choose_anchor_offset
    from selfocc_core.training.config import load_experiment_config

    g = torch.Generator().manual_seed(0)
    cfg = LossConfig(anchor_current_prob=0.25, anchor_prev_prob=0.2, anchor_offsets=[-1, 1, 5, 10])
    have = {-1, 1, 4, 5, 9, 10}
    n = 8000
    counts = {}
    for _ in range(n):
        o = choose_anchor_offset(cfg, have, g)
        counts[o] = counts.get(o, 0) + 1
    assert set(counts) == {0, -1, 1, 5, 10}
    expect = {0: 0.25, -1: 0.75 * 0.2, 1: 0.75 * 0.8 / 3, 5: 0.75 * 0.8 / 3, 10: 0.75 * 0.8 / 3}
    for o, p in expect.items():
        assert abs(counts[o] / n - p) < 0.02, (o, counts[o] / n, p)
    # a frame the sample lacks (the end of a drive) falls back to the input frame
    short = [choose_anchor_offset(cfg, {-1, 1}, g) for _ in range(2000)]
    assert 5 not in short and 10 not in short and abs(short.count(0) / 2000 - (0.25 + 0.75 * 0.8 * 2 / 3)) < 0.04
    # one side only: every non-current anchor is on it, whatever anchor_prev_prob says
    future = LossConfig(anchor_current_prob=0.0, anchor_prev_prob=0.9, anchor_offsets=[2, 3])
    assert {choose_anchor_offset(future, {2, 3}, g) for _ in range(200)} == {2, 3}
    # the default [-1, 1] draws exactly what the adjacent-only rule drew (same two draws)
    d = LossConfig()
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for _ in range(200):
        u = torch.rand(2, generator=g2).tolist()
        old = 0 if u[0] < d.anchor_current_prob else (-1 if u[1] < d.anchor_prev_prob else 1)
        assert choose_anchor_offset(d, {-1, 1}, g1) == old
    for bad in ([], [0, 5], [5, 5]):
        with pytest.raises(ValueError, match="anchor_offsets"):
            LossConfig(anchor_offsets=bad)
    with pytest.raises(ConfigError, match=r"anchor_offsets \[5\] are not in data.context_offsets"):
        load_experiment_config("tiny_synth", ["loss.anchor_offsets=[-1,1,5]"])
    ok = load_experiment_config("tiny_synth", ["loss.anchor_offsets=[-1,1,5]", "data.context_offsets=[-1,1,4,5]"])
    assert ok.loss.anchor_offsets == [-1, 1, 5]


def test_trainer_skips_and_counts_pairs_without_baseline(tmp_path):
    torch.set_num_threads(1)
    data = PositionsDataset([(9.0, 10.0, 11.0), (11.0, 11.0, 12.0), (12.0, 12.0, 12.0), (12.0, 12.0, 12.0)])
    t = Trainer(micro_config("train.steps=6", "loss.min_source_baseline=0.2"), data, tmp_path / "run", ENV,
                progress=False)
    result = t.run()
    assert result.step == 6
    c = result.pairs
    # every sample-draw of the two standing samples is skipped, no step is trained on them
    assert c["samples_skipped_no_baseline"] >= 1
    assert c["pairs_skipped_no_baseline"] >= 0 and c["pairs_total"] >= 6
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(logged) == 6 and logged[-1]["pairs/samples_skipped_no_baseline"] == c["samples_skipped_no_baseline"]
    # without the check every pair is kept
    t0 = Trainer(micro_config("train.steps=2", "loss.min_source_baseline=0"), data, tmp_path / "run0", ENV,
                 progress=False)
    assert t0.run().pairs["samples_skipped_no_baseline"] == 0


class FarContextDataset(Dataset):
    """Samples of a drive at 1 m per frame with context frames at offsets -1, 1, 4, 5."""

    def __len__(self):
        return 3

    def __getitem__(self, i):
        return Sample(frame=make_frame(10 + i), context={o: make_frame(10 + i + o) for o in (-1, 1, 4, 5)},
                      sample_id=f"far-{i}")


def test_trainer_renders_far_anchors_from_the_input_frames_field(tmp_path):
    torch.set_num_threads(1)
    t = Trainer(micro_config("train.steps=8", "loss.anchor_current_prob=0", "loss.anchor_prev_prob=0",
                             "loss.anchor_offsets=[-1,1,5]", "data.context_offsets=[-1,1,4,5]"),
                FarContextDataset(), tmp_path / "run", ENV, progress=False)
    assert t.run().step == 8
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    offsets = {r["anchor_offset"] for r in logged}
    assert offsets == {1.0, 5.0}  # the anchor 5 m ahead (source 4) is rendered, and never -1
    assert all(math.isfinite(r["loss"]) for r in logged)


def test_trainer_on_a_standing_ego_fails_clearly(tmp_path):
    data = PositionsDataset([(3.0, 3.0, 3.0)] * 2)
    t = Trainer(micro_config("train.steps=2"), data, tmp_path / "run", ENV, progress=False)
    with pytest.raises(ValueError, match="min_source_baseline"):
        t.run()


def test_eval_spec_same_is_the_training_recording():
    assert eval_spec_and_split("", "synthetic:seed=3") == ("synthetic:seed=3", "val")
    assert eval_spec_and_split("same", "synthetic:seed=3") == ("synthetic:seed=3", "train")
    assert eval_spec_and_split("synthetic:seed=3", "synthetic:seed=3") == ("synthetic:seed=3", "train")
    assert eval_spec_and_split("/data/other", "synthetic:seed=3") == ("/data/other", "val")


# --- the slow and stopped street ---------------------------------------------------------------
def test_slow_stop_profile():
    D_ = 4.0
    xs = [slow_stop_distance(t, 3.0, D_) for t in np.linspace(0, D_, 41)]
    assert xs[0] == 0.0 and np.all(np.diff(xs) >= -1e-12)
    assert math.isclose(xs[5] - xs[4], 0.3, rel_tol=1e-9)  # cruising at 3 m/s
    assert xs[-1] == xs[30] and math.isclose(xs[-1], 3.0 * 1.0 + 3.0 * 1.6 / 2)  # stopped from 65 %


def test_slow_stop_world_traffic_keeps_moving_while_the_ego_stands():
    w = generate_world(5, duration_s=4.0, speed_mps=3.0, ego_motion="slow_stop")
    assert np.allclose(w.T_world_ego(3.0), w.T_world_ego(4.0))  # standing
    p = w.prims
    moving = p.moving & (p.instance >= 0)
    lane_ahead = moving & ((p.center[:, 1] - LANE_Y).abs() < 0.5) & (p.center[:, 0] > 0)
    assert lane_ahead.any()
    ego_front = w.T_world_ego(4.0)[0, 3] + 2.5
    for t in (0.0, 2.0, 4.0):  # the lead car creeps on and stays ahead of the ego
        rear = (p.at(t).center[lane_ahead, 0] - p.half[lane_ahead, 0]).min()
        assert rear > w.T_world_ego(t)[0, 3] + 2.5 and rear > ego_front - 0.1 * (4.0 - t)
    beside = moving & ((p.center[:, 1] + LANE_Y).abs() < 0.5)
    assert ((p.at(4.0).center[beside, 0] - w.T_world_ego(4.0)[0, 3]).abs() < 10).any()  # traffic passes beside
    with pytest.raises(ValueError, match="ego_motion"):
        generate_world(5, 4.0, ego_motion="reverse")


def test_slow_stop_dataset_context_and_spec():
    cfg = SyntheticConfig(seed=5000, num_frames=48, ego_motion="slow_stop", speed_mps=3.0, cameras=["CAM_FRONT"],
                          image_height=16, image_width=24, context_offsets=[-1, 1], with_gt=False)
    ds = SyntheticDataset(cfg)
    assert len(ds) == 48
    # while slowing, context walks to the first frame >= 0.3 m away (not the adjacent 0.25 m one)
    assert ds.context_index[5] == {-1: 3, 1: 7}
    # standing: the nearest frame (zero baseline) for the trainer to skip
    pos = lambda i: ds.seq.T_world_ego(i)[:3, 3]
    assert np.linalg.norm(pos(44) - pos(ds.context_index[44][1])) < 1e-9
    s = collate_samples([ds[44]])
    assert usable_anchor_offset(s, 0, 0.1) is None
    img = ds[0].frame.images
    assert img.shape == (1, 3, 16, 24) and float(img.std()) > 0.01
    # the default street keeps its adjacent-frame context (0.83 m per frame)
    ds0 = SyntheticDataset(SyntheticConfig(seed=0, num_frames=6, cameras=["CAM_FRONT"], context_offsets=[-1, 1, -2, 2],
                                           with_gt=False))
    assert ds0.context_index[3] == {-2: 1, -1: 2, 1: 4, 2: 5}
    with pytest.raises(ValueError, match="ego_motion"):
        SyntheticConfig(ego_motion="fast")
    from selfocc_core.data.config import DataConfig
    from selfocc_core.training.data import open_data

    d = open_data("synthetic:seed=5000,frames=12,ego=slow_stop", DataConfig(image_height=16, image_width=24,
                  cameras=["CAM_FRONT"], load_gt=False), "train")
    assert d.cfg.ego_motion == "slow_stop" and d.cfg.speed_mps == 3.0
