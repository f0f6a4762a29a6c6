"""Losses on rendered ray values: colour (L1) and semantics (cross-entropy vs 2D pseudo-labels)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_LABEL = 255


def rgb_loss(pred: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """L1 between rendered colours ``pred [B, R, 3]`` and pixel colours ``target [B, R, 3]``.

    mask: optional [B, R] bool of rays that count.
    """
    if pred.shape != target.shape:
        raise ValueError(f"rgb_loss: pred {tuple(pred.shape)} vs target {tuple(target.shape)}")
    err = (pred - target).abs().mean(dim=-1)
    if mask is None:
        return err.mean()
    m = mask.to(err.dtype)
    return (err * m).sum() / m.sum().clamp_min(1.0)


def semantic_loss(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_LABEL) -> Tensor:
    """Cross-entropy of rendered logits ``[B, R, C]`` vs 2D segmentor labels ``[B, R]`` (long).

    Rays labelled ``ignore_index`` (255) do not count; with no labelled ray the loss is 0.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"semantic_loss: logits {tuple(logits.shape)} vs labels {tuple(labels.shape)}")
    C = logits.shape[-1]
    labels = labels.long()
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= C))
    if bool(bad.any()):
        raise ValueError(f"semantic_loss: labels outside [0, {C}) other than {ignore_index}: {labels[bad].unique().tolist()}")
    if not bool((labels != ignore_index).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.reshape(-1, C).float(), labels.reshape(-1), ignore_index=ignore_index)
