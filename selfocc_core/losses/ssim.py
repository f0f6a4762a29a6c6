"""SSIM and the Monodepth2 photometric error on image tensors ``[*, C, H, W]``.

SSIM uses a 3x3 box window with reflection padding (Monodepth2), so the output keeps the
input size: ``ssim(x, y)`` is a per-pixel map, not a scalar.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

C1 = 0.01**2
C2 = 0.03**2


def _flat4(x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
    if x.dim() < 3:
        raise ValueError(f"expected images [*, C, H, W], got {tuple(x.shape)}")
    lead = x.shape[:-3]
    return x.reshape(-1, *x.shape[-3:]), lead


def ssim(x: Tensor, y: Tensor, window: int = 3, c1: float = C1, c2: float = C2) -> Tensor:
    """Per-pixel SSIM of images ``x, y [*, C, H, W]`` -> ``[*, C, H, W]`` in [-1, 1].

    Local statistics are box means over ``window x window`` with reflection padding.
    Example: two constant images a and b give ``(2ab + c1) / (a^2 + b^2 + c1)`` everywhere.
    """
    if x.shape != y.shape:
        raise ValueError(f"ssim: shapes differ {tuple(x.shape)} vs {tuple(y.shape)}")
    xf, lead = _flat4(x)
    yf, _ = _flat4(y)
    pad = window // 2
    H, W = xf.shape[-2:]
    mode = "reflect" if H > pad and W > pad else "replicate"
    xp = F.pad(xf, (pad, pad, pad, pad), mode=mode)
    yp = F.pad(yf, (pad, pad, pad, pad), mode=mode)
    pool = lambda t: F.avg_pool2d(t, window, stride=1)  # noqa: E731
    mu_x, mu_y = pool(xp), pool(yp)
    sigma_x = pool(xp * xp) - mu_x * mu_x
    sigma_y = pool(yp * yp) - mu_y * mu_y
    sigma_xy = pool(xp * yp) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (sigma_x + sigma_y + c2)
    return (num / den).reshape(*lead, *xf.shape[-3:])


def photometric_error(pred: Tensor, target: Tensor, alpha: float = 0.85) -> Tensor:
    """Monodepth2 error ``alpha * (1 - SSIM) / 2 + (1 - alpha) * |pred - target|``.

    pred, target: ``[*, C, H, W]``; returns ``[*, H, W]`` (mean over channels).
    """
    if pred.shape != target.shape:
        raise ValueError(f"photometric_error: shapes differ {tuple(pred.shape)} vs {tuple(target.shape)}")
    l1 = (pred - target).abs().mean(dim=-3)
    if alpha == 0.0:
        return l1
    dssim = ((1.0 - ssim(pred, target)) / 2.0).clamp(0.0, 1.0).mean(dim=-3)
    return alpha * dssim + (1.0 - alpha) * l1
