"""Image loading and resizing that keeps the intrinsics consistent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from selfocc_core.geometry.camera import scale_intrinsics


def load_image(path: str | Path) -> Tensor:
    """Read an image file as float32 RGB ``[3, H, W]`` in [0, 1].

    Grayscale (e.g. KITTI image_0) is replicated to 3 channels; alpha is dropped.
    A missing or unreadable file raises FileNotFoundError / ValueError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            rgb = im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e
    arr = np.asarray(rgb, dtype=np.uint8)  # [H, W, 3]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def resize_image(image: Tensor, K: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Resize ``image [3, H, W]`` (or ``[N, 3, H, W]``) to (height, width), antialiased.

    Returns the resized image and ``K`` ``(*, 3, 3)`` updated with
    `geometry.camera.scale_intrinsics` (pixel-centre aligned, like align_corners=False).
    """
    if image.dim() not in (3, 4) or image.shape[-3] != 3:
        raise ValueError(f"resize_image: image must be [(N,) 3, H, W], got {tuple(image.shape)}")
    if K.shape[-2:] != (3, 3):
        raise ValueError(f"resize_image: K must be (*, 3, 3), got {tuple(K.shape)}")
    H, W = image.shape[-2:]
    if (H, W) == (height, width):
        return image, K.clone()
    batched = image.unsqueeze(0) if image.dim() == 3 else image
    out = F.interpolate(batched, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    out = out.clamp_(0.0, 1.0)
    K_new = scale_intrinsics(K, width / W, height / H)
    return (out[0] if image.dim() == 3 else out), K_new


def load_resized(path: str | Path, K, height: int, width: int) -> tuple[Tensor, Tensor]:
    """`load_image` then `resize_image`; K may be a numpy array or tensor ``[3, 3]``.

    Returns ``(image [3, height, width], K [3, 3] float32)``.
    """
    K = torch.as_tensor(np.asarray(K, dtype=np.float64)).reshape(3, 3)
    image = load_image(path)
    image, K = resize_image(image, K, height, width)
    return image, K.float()
