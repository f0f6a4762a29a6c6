"""Checkpoints: atomic save, validated load, and model reconstruction from the stored config.

A checkpoint is a ``torch.save`` dict:

    format_version  int (CHECKPOINT_FORMAT_VERSION)
    model           state_dict of SelfOccModel (never of a DDP wrapper)
    optimizer       AdamW state_dict or None
    scheduler       LambdaLR state_dict or None
    step            optimiser steps done
    config          ExperimentConfig as a plain dict (config_io.to_dict)
    rng             torch / numpy / python / cuda RNG states (exact resume)
    extra           free-form dict (e.g. last evaluation numbers)
    rig             optional training rig (training_rig()): camera_names, T_ego_cam [N, 4, 4]
                    float64 (camera optical frame -> the training ego frame), ground_z (ego-frame
                    z of the ground the model assumes). Absent in older checkpoints, which load.

Everything is stored as tensors / plain Python so it loads with ``weights_only=True``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from selfocc_core.config_io import ConfigError, to_dict
from selfocc_core.io_utils import atomic_path
from selfocc_core.training.config import ExperimentConfig, experiment_config_from_dict

CHECKPOINT_FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "model", "step", "config")


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside a DistributedDataParallel wrapper (or the module itself)."""
    return model.module if hasattr(model, "module") and isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def capture_rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    path: str | Path,
    *,
    model: torch.nn.Module,
    config: ExperimentConfig,
    step: int,
    optimizer: Optional[torch.optim.Optimizer] = None,
    scheduler: Optional[Any] = None,
    extra: Optional[dict] = None,
    with_rng: bool = True,
    rig: Optional[dict] = None,
) -> Path:
    """Write a checkpoint atomically (a crash leaves the previous file intact). Returns the path.

    ``rig``: the training rig from :func:`training_rig` (the ROS node compares it with TF)."""
    state = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "model": unwrap(model).state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "step": int(step),
        "config": to_dict(config),
        "rng": capture_rng_state() if with_rng else None,
        "extra": dict(extra or {}),
    }
    if rig is not None:
        state["rig"] = rig
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def training_rig(camera_names, T_ego_cam, ground_z: float) -> dict:
    """The camera rig a model is trained on, for the checkpoint: ``T_ego_cam`` ``[N, 4, 4]`` (or a
    batch ``[B, N, 4, 4]``: the first sample is taken) maps each camera's optical frame to the
    training ego frame; ``ground_z`` is that frame's ground height (model.ground_height).

        >>> rig = training_rig(["CAM_FRONT"], torch.eye(4)[None], 0.0)
        >>> rig["T_ego_cam"].shape, rig["camera_names"]
        (torch.Size([1, 4, 4]), ['CAM_FRONT'])
    """
    T = torch.as_tensor(T_ego_cam).detach().to("cpu", torch.float64)
    if T.dim() == 4:
        T = T[0]
    names = [str(n) for n in camera_names]
    if T.dim() != 3 or T.shape[1:] != (4, 4) or T.shape[0] != len(names):
        raise ValueError(f"training_rig: T_ego_cam must be [N, 4, 4] for {len(names)} cameras, got {tuple(T.shape)}")
    return {"camera_names": names, "T_ego_cam": T.clone(), "ground_z": float(ground_z)}


def rig_from_checkpoint(state: dict) -> Optional[dict]:
    """The stored training rig, or None (checkpoints written before it was stored)."""
    rig = state.get("rig")
    if not rig:
        return None
    return {"camera_names": list(rig["camera_names"]),
            "T_ego_cam": torch.as_tensor(rig["T_ego_cam"]).detach().to("cpu", torch.float64),
            "ground_z": float(rig["ground_z"])}


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if a == b else [f"{prefix}: checkpoint {a!r} vs config {b!r}"]


def config_differences(ckpt_config: dict, config: ExperimentConfig, section: str = "model") -> list[str]:
    """Keys of ``section`` whose values differ between a checkpoint's config dict and ``config``."""
    return _diff_keys(ckpt_config.get(section, {}), to_dict(config).get(section, {}), section)


def load_checkpoint(
    path: str | Path, map_location: Any = "cpu", expected_config: Optional[ExperimentConfig] = None
) -> dict:
    """Load and validate a checkpoint dict (see module docstring for its keys).

    Raises FileNotFoundError for a missing file, ValueError for a corrupt / foreign file, an
    unsupported format version, or (with ``expected_config``) a model config that differs.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, pickle garbage, wrong file type
        raise ValueError(f"{path}: not a readable checkpoint (corrupt or not written by torch.save): {e}") from e
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED_KEYS):
        have = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path}: not a selfocc checkpoint (needs keys {REQUIRED_KEYS}, has {have})")
    if state["format_version"] != CHECKPOINT_FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format version {state['format_version']} is not supported "
                         f"(this code reads version {CHECKPOINT_FORMAT_VERSION})")
    if expected_config is not None:
        diffs = config_differences(state["config"], expected_config, "model")
        if diffs:
            raise ValueError(f"{path}: checkpoint was trained with another model config:\n  " + "\n  ".join(diffs))
    return state


def config_from_checkpoint(state: dict, where: str = "<checkpoint>") -> ExperimentConfig:
    try:
        return experiment_config_from_dict(state["config"], where=f"{where} (stored config)")
    except ConfigError as e:
        raise ValueError(f"{where}: stored config does not match this version of the code: {e}") from e


def build_model_from_checkpoint(path: str | Path, device: Any = "cpu"):
    """-> (SelfOccModel in eval mode on ``device`` with the checkpoint's weights, ExperimentConfig)."""
    from selfocc_core.model.selfocc import SelfOccModel

    state = load_checkpoint(path, map_location="cpu")
    cfg = config_from_checkpoint(state, str(path))
    model = SelfOccModel(cfg.model)
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not fit the model of its config: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    model = model.to(device).eval()
    model.training_rig = rig_from_checkpoint(state)  # read by OccupancyPredictor.training_rig
    return model, cfg
