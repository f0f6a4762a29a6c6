"""Colour maps for depth / confidence images and class colours (numpy, uint8 RGB out).

The turbo and magma tables are 17 evenly spaced samples of the published colour maps,
interpolated linearly; that is visually indistinguishable from the 256-entry tables.
"""

from __future__ import annotations

import numpy as np

from selfocc_core.classes import FREE_LABEL, OCC3D_COLORS

_TABLES = {
    "turbo": [
        [48, 18, 59], [64, 64, 162], [70, 107, 227], [66, 148, 255], [40, 188, 235], [24, 221, 194],
        [50, 242, 152], [109, 254, 98], [164, 252, 60], [205, 236, 52], [238, 207, 58], [253, 172, 52],
        [251, 126, 33], [235, 80, 14], [208, 47, 5], [169, 22, 1], [122, 4, 3],
    ],
    "magma": [
        [0, 0, 4], [10, 8, 34], [29, 17, 71], [54, 16, 107], [81, 18, 124], [106, 28, 129], [131, 38, 129],
        [156, 46, 127], [183, 55, 121], [208, 65, 111], [231, 82, 99], [245, 107, 92], [252, 137, 97],
        [254, 167, 114], [254, 196, 136], [253, 226, 163], [252, 253, 191],
    ],
}
COLORMAPS = tuple(_TABLES)


def apply_colormap(values, name: str = "turbo", vmin: float = 0.0, vmax: float = 1.0,
                   invalid_color=(0, 0, 0), reverse: bool = False) -> np.ndarray:
    """Scalars ``[...]`` -> RGB uint8 ``[..., 3]``; NaN/inf become `invalid_color`."""
    if name not in _TABLES:
        raise ValueError(f"unknown colormap {name!r}; choose from {COLORMAPS}")
    if hasattr(values, "detach"):
        values = values.detach().float().cpu().numpy()
    v = np.asarray(values, dtype=np.float64)
    table = np.asarray(_TABLES[name], dtype=np.float64)
    if reverse:
        table = table[::-1]
    finite = np.isfinite(v)
    t = np.clip((np.where(finite, v, vmin) - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0)
    x = t * (len(table) - 1)
    i0 = np.minimum(np.floor(x).astype(np.int64), len(table) - 2)
    w = (x - i0)[..., None]
    rgb = table[i0] * (1 - w) + table[i0 + 1] * w
    rgb[~finite] = invalid_color
    return np.round(rgb).astype(np.uint8)


def colorize_depth(depth, max_depth: float = 80.0, min_depth: float = 0.0, name: str = "turbo",
                   invalid_color=(0, 0, 0)) -> np.ndarray:
    """Depth ``[H, W]`` metres -> RGB ``[H, W, 3]``: near red, far blue (turbo reversed).

    Pixels with depth <= 0 (no data) get `invalid_color`.
    """
    if hasattr(depth, "detach"):
        depth = depth.detach().float().cpu().numpy()
    d = np.asarray(depth, dtype=np.float64)
    d = np.where(d > 0, d, np.nan)
    return apply_colormap(d, name, min_depth, max_depth, invalid_color, reverse=(name == "turbo"))


def label_colors(labels, colors: np.ndarray = OCC3D_COLORS) -> np.ndarray:
    """Class ids ``[...]`` -> RGB uint8 ``[..., 3]`` (Occ3D palette; ids beyond it map to free)."""
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    lab = np.asarray(labels).astype(np.int64)
    lab = np.where((lab >= 0) & (lab < len(colors)), lab, FREE_LABEL)
    return colors[lab]


def to_uint8_image(image) -> np.ndarray:
    """A camera image ``[3, H, W]`` float in [0, 1] (torch or numpy) -> ``[H, W, 3]`` uint8."""
    if hasattr(image, "detach"):
        image = image.detach().float().cpu().numpy()
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[0] == 3 and img.shape[-1] != 3:
        img = np.transpose(img, (1, 2, 0))
    if img.dtype != np.uint8:
        img = np.round(np.clip(img, 0.0, 1.0) * 255).astype(np.uint8)
    return img
