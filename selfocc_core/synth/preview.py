"""A one-image overview of a synthetic frame: camera images, colourised depth, and bird's-eye
views of the GT occupancy (top-most non-free class per column, Occ3D colours from classes.py),
all of it and restricted to the camera-visibility mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw

from selfocc_core.classes import FREE_LABEL, OCC3D_COLORS
from selfocc_core.io_utils import atomic_path
from selfocc_core.synth.sequence import SyntheticSequence

# nuScenes cameras arranged as seen from above: front row, back row (mirrored like the car)
_NUSCENES_LAYOUT = (("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT"), ("CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT"))


def bev_image(semantics: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Top-most non-free class per column of ``semantics [X, Y, Z]`` -> RGB ``[X, Y, 3]`` uint8.

    Rows run from +x (ahead, top) to -x, columns from +y (left) to -y, like a map seen from above.
    Voxels outside `mask` are treated as free; empty columns are white.
    """
    sem = semantics.copy()
    if mask is not None:
        sem[~mask.astype(bool)] = FREE_LABEL
    Z = sem.shape[-1]
    occupied = sem != FREE_LABEL
    k = np.where(occupied, np.arange(Z), -1).max(-1)
    top = np.take_along_axis(sem, np.clip(k, 0, None)[..., None], -1)[..., 0]
    top[k < 0] = FREE_LABEL
    rgb = OCC3D_COLORS[top]
    return np.ascontiguousarray(rgb[::-1, ::-1])


def depth_image(depth: np.ndarray, max_depth: float = 60.0) -> np.ndarray:
    """z-depth ``[H, W]`` (0 = none) -> RGB uint8 with the turbo colour map (near = red)."""
    d = np.clip(depth / max_depth, 0, 1)
    rgb = colormaps["turbo"](1.0 - d)[..., :3]
    rgb[depth <= 0] = 0.0
    return (rgb * 255).astype(np.uint8)


def _label(img: Image.Image, text: str) -> None:
    ImageDraw.Draw(img).text((3, 2), text, fill=(255, 255, 255), stroke_width=2, stroke_fill=(0, 0, 0))


def make_preview(seq: SyntheticSequence, i: int, height: int, width: int) -> np.ndarray:
    """Preview of frame i of `seq` rendered at (height, width) -> RGB uint8 image."""
    out = seq.render(i, height, width)
    gt = seq.ground_truth(i)
    rgb = (out.rgb.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    depth = out.depth.numpy()
    names = seq.rig.camera_names
    if set(names) == set(_NUSCENES_LAYOUT[0] + _NUSCENES_LAYOUT[1]):
        rows = [[names.index(c) for c in row] for row in _NUSCENES_LAYOUT]
    else:
        rows = [list(range(len(names)))]
    ncols = max(len(r) for r in rows)
    tiles_h = 2 * len(rows) * height
    canvas_w = ncols * width
    sem = gt.semantics.numpy()
    bev_all = bev_image(sem)
    bev_cam = bev_image(sem, gt.mask_camera.numpy())
    side = max(tiles_h // 2, 160)
    bevs = [Image.fromarray(b).resize((int(side * b.shape[1] / b.shape[0]), side), Image.NEAREST) for b in (bev_all, bev_cam)]
    bev_w = max(b.width for b in bevs)
    canvas = Image.new("RGB", (canvas_w + bev_w, max(tiles_h, 2 * side)), (40, 40, 40))
    for r, row in enumerate(rows):
        for c, n in enumerate(row):
            im = Image.fromarray(rgb[n])
            _label(im, names[n])
            canvas.paste(im, (c * width, r * height))
            dm = Image.fromarray(depth_image(depth[n]))
            _label(dm, f"{names[n]} depth")
            canvas.paste(dm, (c * width, (len(rows) + r) * height))
    for k, (b, title) in enumerate(zip(bevs, ("GT occupancy (BEV)", "camera-visible GT"))):
        _label(b, title)
        canvas.paste(b, (canvas_w, k * side))
    return np.asarray(canvas)


def write_preview(path: str | Path, seed: int = 0, rig: str = "nuscenes", cameras=None, frame: int = 0,
                  height: int = 160, width: int = 288) -> Path:
    """Render frame `frame` of the drive with `seed` and write the preview PNG atomically."""
    path = Path(path)
    if frame < 0:
        raise ValueError(f"preview: frame must be >= 0, got {frame}")
    seq = SyntheticSequence(seed, frame + 1, rig, cameras)
    img = make_preview(seq, frame, height, width)
    with atomic_path(path) as tmp:
        Image.fromarray(img).save(tmp, format="PNG")
    return path
