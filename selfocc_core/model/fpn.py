"""Feature pyramid neck: lateral 1x1 convs, top-down nearest upsampling + add, 3x3 output convs."""

from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn


class FPN(nn.Module):
    """Maps backbone levels ``[B, C_i, H_i, W_i]`` (fine to coarse) to ``[B, out_channels, H_i, W_i]``.

    ``num_extra`` adds coarser levels by stride-2 3x3 convs on the last output.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int, num_extra: int = 0):
        super().__init__()
        self.in_channels = tuple(in_channels)
        self.out_channels = out_channels
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.output = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels)
        self.extra = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1) for _ in range(num_extra))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        if len(feats) != len(self.lateral):
            raise ValueError(f"FPN expects {len(self.lateral)} levels, got {len(feats)}")
        lat = [conv(f) for conv, f in zip(self.lateral, feats)]
        for i in range(len(lat) - 1, 0, -1):
            lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[-2:], mode="nearest")
        outs = [conv(x) for conv, x in zip(self.output, lat)]
        for conv in self.extra:
            outs.append(conv(outs[-1]))
        return outs
