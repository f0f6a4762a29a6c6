"""ResNet-18/34/50/101 image backbone with torchvision-compatible ``state_dict`` keys.

Keys follow torchvision exactly (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer2.0.downsample.0``,
``fc``...), so ImageNet weights saved from torchvision (``torch.save(resnet50().state_dict(), p)``)
load with :meth:`ResNet.load_pretrained`. ``fc`` exists only so the keys match; it is frozen and
never used in :meth:`ResNet.forward`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

# depth -> (block type, blocks per stage)
_ARCHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's v1.5 bottleneck (stride on the 3x3 conv)."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet feature extractor.

    Args:
        depth: 18, 34, 50 or 101.
        out_indices: which stages to return (0 = layer1 stride 4, 1 = layer2 stride 8,
            2 = layer3 stride 16, 3 = layer4 stride 32).
        frozen_stages: -1 trains everything; 0 freezes the stem (conv1/bn1); k >= 1 also
            freezes layer1..layerk (parameters get ``requires_grad=False``, BN kept in eval mode).
        norm_eval: keep every BatchNorm in eval mode (running statistics frozen, the usual
            choice for small detection/occupancy batches); affine parameters still train
            unless their stage is frozen.
    Stages after ``max(out_indices)`` (and ``fc``) exist for key compatibility only: they are
    never run and have ``requires_grad=False``.

    forward: images ``[B, 3, H, W]`` (already normalised) -> list of ``[B, C_i, H/s_i, W/s_i]``.
    """

    def __init__(self, depth: int = 50, out_indices: Sequence[int] = (1, 2, 3),
                 frozen_stages: int = -1, norm_eval: bool = False):
        super().__init__()
        if depth not in _ARCHS:
            raise ValueError(f"ResNet depth must be one of {sorted(_ARCHS)}, got {depth}")
        if not out_indices or any(i not in (0, 1, 2, 3) for i in out_indices) or list(out_indices) != sorted(set(out_indices)):
            raise ValueError(f"ResNet out_indices must be increasing stage ids in 0..3, got {tuple(out_indices)}")
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f"ResNet frozen_stages must be in -1..4, got {frozen_stages}")
        kind, blocks = _ARCHS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.depth = depth
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, blocks[0], 1)
        self.layer2 = self._make_layer(block, 128, blocks[1], 2)
        self.layer3 = self._make_layer(block, 256, blocks[2], 2)
        self.layer4 = self._make_layer(block, 512, blocks[3], 2)
        self.fc = nn.Linear(512 * block.expansion, 1000)  # key compatibility only
        self.fc.requires_grad_(False)

        self.stage_channels = tuple(c * block.expansion for c in (64, 128, 256, 512))
        self.out_channels = tuple(self.stage_channels[i] for i in self.out_indices)
        self.out_strides = tuple((4, 8, 16, 32)[i] for i in self.out_indices)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self._freeze()

    def _make_layer(self, block, planes: int, n: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, n)]
        return nn.Sequential(*layers)

    def _frozen_modules(self) -> list[nn.Module]:
        mods: list[nn.Module] = []
        if self.frozen_stages >= 0:
            mods += [self.conv1, self.bn1]
        for i in range(1, self.frozen_stages + 1):
            mods.append(getattr(self, f"layer{i}"))
        return mods

    def _freeze(self) -> None:
        for m in self._frozen_modules():
            m.requires_grad_(False)
        # stages after the last returned one are kept only for state_dict compatibility: never
        # run, so they must not ask for gradients (DDP would flag them as unused)
        for i in range(self.out_indices[-1] + 2, 5):
            getattr(self, f"layer{i}").requires_grad_(False)

    def train(self, mode: bool = True) -> "ResNet":
        super().train(mode)
        if mode:
            for m in self._frozen_modules():
                m.eval()
            if self.norm_eval:
                for m in self.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
        return self

    def forward(self, x: Tensor) -> list[Tensor]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"ResNet expects images [B, 3, H, W], got {tuple(x.shape)}")
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
            if i in self.out_indices:
                outs.append(x)
            if i >= self.out_indices[-1]:
                break
        return outs

    def load_pretrained(self, path: str | Path) -> None:
        """Load a torchvision-style state_dict from ``path`` (a ``.pth`` holding the dict itself,
        or a checkpoint with a ``state_dict``/``model`` entry).

        Raises FileNotFoundError for a missing file and ValueError naming the missing and
        unexpected keys or mismatched shapes (``fc.*`` may be absent: it is unused).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ResNet pretrained weights not found: {path}")
        sd = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model"):
            if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
                sd = sd[key]
        if not isinstance(sd, dict):
            raise ValueError(f"{path}: expected a state_dict mapping, got {type(sd).__name__}")
        own = self.state_dict()
        missing = sorted(k for k in own if k not in sd and not k.startswith("fc."))
        unexpected = sorted(k for k in sd if k not in own)
        if missing or unexpected:
            raise ValueError(
                f"{path}: not a torchvision resnet{self.depth} state_dict; "
                f"missing keys: {missing[:20]}{' ...' if len(missing) > 20 else ''}; "
                f"unexpected keys: {unexpected[:20]}{' ...' if len(unexpected) > 20 else ''}"
            )
        bad = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in sd if tuple(sd[k].shape) != tuple(own[k].shape)]
        if bad:
            raise ValueError(f"{path}: shape mismatch for resnet{self.depth}: {bad[:10]}")
        self.load_state_dict(sd, strict=False)
        self._freeze()
