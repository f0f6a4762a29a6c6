"""Datasets for training and periodic evaluation.

Dataset folders / bags go through ``data.open.open_dataset``. The synthetic world is opened here
so that training can span several generated streets and evaluation uses held-out ones:

    synthetic                          train: seeds 0..7; val: seeds 1000..1001
    synthetic:seed=3,seeds=4,frames=20 train: seeds 3..6 (20 frames each); val: 1003..1006
    synthetic:seed=1000,frames=6       one street (seeds=1)
    synthetic:seed=5000,frames=48,ego=slow_stop
                                       the ego brakes from 3 m/s to a stop in a queue
    options: seed, seeds, frames, rig (nuscenes|kitti), cache (folder for rendered frames),
             ego (constant|slow_stop), speed (m/s; default 10, slow_stop 3), fps (default 12)

Per-sequence training (train and score on the same recording): ``--eval-data same``
(`SAME_AS_TRAINING`), which opens the training spec itself instead of its held-out split.

Image size, cameras and context offsets come from the experiment's DataConfig; ground truth is
only rendered when ``cfg.load_gt`` (the trainer asks for it on evaluation data only).
"""

from __future__ import annotations

from torch.utils.data import ConcatDataset, Dataset

from selfocc_core.data.config import DataConfig
from selfocc_core.data.open import open_dataset, parse_spec_options

SYNTH_VAL_SEED_OFFSET = 1000
_SYNTH_OPTIONS = {"seed", "seeds", "frames", "rig", "cache", "ego", "speed", "fps"}
SAME_AS_TRAINING = "same"


def open_synthetic(spec: str, cfg: DataConfig, split: str) -> Dataset:
    from selfocc_core.data.synthetic import SyntheticConfig, SyntheticDataset

    opts = parse_spec_options(spec)
    unknown = sorted(set(opts) - _SYNTH_OPTIONS)
    if unknown:
        raise ValueError(f"dataset spec '{spec}': unknown option(s) {unknown}; valid: {sorted(_SYNTH_OPTIONS)}")
    explicit_seed = "seed" in opts
    seed = int(opts.get("seed", 0))
    count = int(opts.get("seeds", 1 if explicit_seed else (8 if split == "train" else 2)))
    if split != "train" and not (explicit_seed and "seeds" not in opts and seed >= SYNTH_VAL_SEED_OFFSET):
        if seed < SYNTH_VAL_SEED_OFFSET:
            seed += SYNTH_VAL_SEED_OFFSET  # held-out streets
    frames = int(opts.get("frames", 24 if split == "train" else 6))
    if count < 1 or frames < 1:
        raise ValueError(f"dataset spec '{spec}': seeds and frames must be >= 1")
    ego = str(opts.get("ego", "constant"))
    speed = float(opts.get("speed", 3.0 if ego == "slow_stop" else 10.0))
    fps = float(opts.get("fps", 12.0))
    parts = []
    for s in range(seed, seed + count):
        parts.append(SyntheticDataset(SyntheticConfig(
            seed=s, num_frames=frames, rig=str(opts.get("rig", "nuscenes")), cameras=list(cfg.cameras),
            image_height=cfg.image_height, image_width=cfg.image_width, context_offsets=list(cfg.context_offsets),
            require_context=False, with_gt=cfg.load_gt, cache_dir=opts.get("cache"), ego_motion=ego,
            speed_mps=speed, frame_rate_hz=fps, min_ego_distance=cfg.min_ego_distance,
            max_ego_distance=cfg.max_ego_distance, max_context_time=cfg.max_context_time)))
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)


def open_data(spec: str, cfg: DataConfig, split: str = "train") -> Dataset:
    """A training / evaluation dataset from a ``--data`` string (see module docstring)."""
    s = str(spec)
    if s == "synthetic" or s.startswith("synthetic:"):
        return open_synthetic(s, cfg, split)
    return open_dataset(s, cfg, split)


def eval_spec_and_split(eval_data: str, train_data: str) -> tuple[str, str]:
    """The periodic evaluation's dataset spec and split: ``eval_data`` "" = the training data's
    held-out 'val' split; "same" or the training spec itself = the training recording as it is
    (split 'train': per-sequence training scores the sequence it trains on)."""
    if not eval_data:
        return str(train_data), "val"
    if eval_data in (SAME_AS_TRAINING, str(train_data)):
        return str(train_data), "train"
    return str(eval_data), "val"
