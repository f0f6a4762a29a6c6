"""Experiment configuration: model + data + loss + optimiser + training loop, one YAML file.

``load_experiment_config("tiny_synth")`` reads the packaged preset
``selfocc_core/configs/tiny_synth.yaml``; any other string is a path. ``overrides`` are
``key.path=value`` strings (``--set`` on the command line) applied to the YAML mapping
before validation, so a typo in either is an error naming the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import yaml

from selfocc_core.config_io import ConfigError, from_dict, load_yaml
from selfocc_core.data.config import DataConfig
from selfocc_core.losses.config import LossConfig
from selfocc_core.model.config import ModelConfig

PRESET_DIR = Path(__file__).resolve().parents[1] / "configs"


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up, then a step or cosine decay (per optimiser step)."""

    lr: float = 1e-4
    """Peak learning rate."""
    backbone_lr_mult: float = 0.1
    """Learning-rate factor of the image backbone (pretrained features move slowly)."""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    warmup_steps: int = 1000
    """Steps of linear warm-up from lr * warmup_init_factor to lr."""
    warmup_init_factor: float = 0.01
    """Learning-rate factor at step 0."""
    schedule: Literal["cosine", "step", "constant"] = "step"
    """Decay after warm-up: 'step' (x step_gamma at each milestone), 'cosine' (to lr * min_lr_factor
    at the last step) or 'constant'."""
    step_milestones: list[float] = field(default_factory=lambda: [0.75])
    """'step' milestones as fractions of the total steps (0.75 = three quarters in)."""
    step_gamma: float = 0.1
    """'step' decay factor per milestone."""
    min_lr_factor: float = 0.0
    """'cosine' final learning-rate factor."""
    grad_clip: float = 35.0
    """Max global gradient norm; 0 = no clipping."""

    def __post_init__(self):
        if self.lr <= 0:
            raise ValueError(f"OptimConfig.lr must be positive, got {self.lr}")
        if self.warmup_steps < 0 or self.grad_clip < 0 or self.weight_decay < 0:
            raise ValueError("OptimConfig: warmup_steps, grad_clip and weight_decay must be >= 0")
        if any(not 0.0 < m <= 1.0 for m in self.step_milestones):
            raise ValueError(f"OptimConfig.step_milestones must be fractions in (0, 1], got {self.step_milestones}")


@dataclass(frozen=True)
class TrainConfig:
    """The training loop."""

    steps: int = 10000
    """Optimiser steps in total."""
    batch_size: int = 1
    """Samples per step per process (GPU)."""
    num_workers: int = 2
    """DataLoader worker processes per training process."""
    bf16: bool = True
    """bfloat16 autocast for the forward pass on CUDA (ignored on CPU)."""
    seed: int = 0
    """Seed of torch / numpy / python RNGs (each rank adds its rank)."""
    deterministic: bool = False
    """torch.use_deterministic_algorithms (exact resume on CPU; slower on GPU)."""
    log_interval: int = 20
    """Steps between scalar logs (log.jsonl, TensorBoard)."""
    image_log_interval: int = 500
    """Steps between rendered depth images in TensorBoard; 0 = never."""
    eval_interval: int = 1000
    """Steps between evaluations against ground truth (when the data has it); 0 = never."""
    eval_data: str = ""
    """Dataset for periodic evaluation (same syntax as --data); "" = the training data's 'val' split;
    "same" (or the --data value itself) = the training recording itself (per-sequence training)."""
    eval_samples: int = 8
    """Samples scored per evaluation."""
    eval_max_depth: float = 80.0
    """Metres: GT depth beyond this is not scored (use the reach of model.scene for a small box)."""
    eval_stride: int = 4
    """Ray stride (pixels) of the depth maps rendered for evaluation."""
    checkpoint_interval: int = 1000
    """Steps between checkpoints (last.pt is rewritten; a copy step_XXXXXXX.pt is kept)."""
    keep_checkpoints: int = 3
    """Periodic step_*.pt files kept (oldest deleted); last.pt is always kept."""
    max_nan_steps: int = 10
    """Consecutive non-finite losses (each step skipped) before training aborts."""
    max_wall_minutes: float = 0.0
    """Stop this invocation after this many wall-clock minutes (0 = no limit): last.pt holds the
    step reached, summary.json has ``stopped_at_wall_limit``; ``--resume`` continues. The learning
    rate schedule still runs over ``steps``: choose ``steps`` to fit the time on the machine."""

    def __post_init__(self):
        for name in ("steps", "batch_size", "log_interval", "checkpoint_interval", "max_nan_steps", "eval_samples",
                     "eval_stride"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.max_wall_minutes >= 0:
            raise ValueError(f"TrainConfig.max_wall_minutes must be >= 0 (0 = no limit), got {self.max_wall_minutes}")
        for name in ("num_workers", "image_log_interval", "eval_interval", "keep_checkpoints"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything one training run needs (saved in every checkpoint)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """Network and renderer."""
    data: DataConfig = field(default_factory=DataConfig)
    """Image size, cameras, temporal context."""
    loss: LossConfig = field(default_factory=LossConfig)
    """Loss weights and self-supervision settings."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimiser and learning-rate schedule."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Training loop."""

    def __post_init__(self):
        missing = [o for o in self.loss.anchor_offsets if o not in self.data.context_offsets]
        if missing:
            raise ValueError(f"loss.anchor_offsets {missing} are not in data.context_offsets "
                             f"{self.data.context_offsets}: the sample would not hold those anchor frames")


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A bare preset name -> selfocc_core/configs/<name>.yaml; anything else is a path."""
    s = str(name_or_path)
    if "/" not in s and not s.endswith((".yaml", ".yml")):
        path = PRESET_DIR / f"{s}.yaml"
        if not path.is_file():
            raise ConfigError(f"unknown config preset '{s}'; presets: {', '.join(preset_names())} (or give a YAML path)")
        return path
    path = Path(s)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    return path


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def apply_overrides(data: dict, overrides: Sequence[str], where: str = "--set") -> dict:
    """Set ``a.b.c=value`` items (value parsed as YAML) in a nested mapping; returns a copy."""
    import copy

    out = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{where}: '{item}' is not key=value")
        key, raw = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"{where}: empty key in '{item}'")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"{where}: cannot parse value of '{key}': {e}") from e
        # YAML 1.1 reads "3e-4" (no dot) as a string; words such as "infinity" stay strings
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            value = float(value)
        node = out
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"{where}: '{key}': '{p}' is not a section")
            node = nxt
        node[parts[-1]] = value
    return out


def experiment_config_from_dict(data: dict, where: str = "<dict>") -> ExperimentConfig:
    return from_dict(ExperimentConfig, data, where=where)


def load_experiment_config(name_or_path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Preset name or YAML path (+ ``key.path=value`` overrides) -> validated ExperimentConfig."""
    path = resolve_config_path(name_or_path)
    data = apply_overrides(load_yaml(path), overrides, where=f"{path} (--set)") if overrides else load_yaml(path)
    return experiment_config_from_dict(data, where=str(path))
