"""Compose pictures: titled panels side by side, rows stacked, depth and class legends (PIL).

Everything takes and returns ``[H, W, 3]`` uint8 numpy images.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from selfocc_core.classes import OCC3D_CLASSES, OCC3D_COLORS
from selfocc_core.viz.colormaps import apply_colormap

PANEL_BG = (255, 255, 255)
TEXT = (20, 20, 20)


@lru_cache(maxsize=8)
def font(size: int = 16):
    """Pillow's bundled scalable font (no system fonts needed); bitmap fallback on old Pillow."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, fnt) -> tuple[int, int]:
    box = draw.textbbox((0, 0), text, font=fnt)
    return box[2] - box[0], box[3] - box[1]


def resize_to_height(img: np.ndarray, height: int, nearest: bool = False) -> np.ndarray:
    """Resize keeping the aspect ratio (bilinear, or nearest for label/voxel pictures)."""
    h, w = img.shape[:2]
    if h == height:
        return img
    width = max(1, int(round(w * height / h)))
    resample = Image.NEAREST if nearest else Image.BILINEAR
    return np.asarray(Image.fromarray(img).resize((width, height), resample))


def titled(img: np.ndarray, title: str, font_size: int = 16, bg=PANEL_BG) -> np.ndarray:
    """`img` with `title` centred in a bar above it."""
    fnt = font(font_size)
    bar_h = font_size + 10
    h, w = img.shape[:2]
    canvas = Image.new("RGB", (w, h + bar_h), bg)
    canvas.paste(Image.fromarray(img), (0, bar_h))
    draw = ImageDraw.Draw(canvas)
    tw, _ = _text_size(draw, title, fnt)
    draw.text((max(2, (w - tw) // 2), 4), title, fill=TEXT, font=fnt)
    return np.asarray(canvas)


def hstack(images: list[np.ndarray], titles: list[str] | None = None, height: int | None = None,
           pad: int = 6, bg=PANEL_BG, nearest: bool = False, font_size: int = 16) -> np.ndarray:
    """Panels in one row, resized to a common `height` (default: the tallest), each under its title."""
    if not images:
        raise ValueError("hstack: no images")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"hstack: {len(titles)} titles for {len(images)} images")
    height = height or max(im.shape[0] for im in images)
    panels = [resize_to_height(im, height, nearest) for im in images]
    if titles is not None:
        panels = [titled(p, t, font_size, bg) for p, t in zip(panels, titles)]
    H = max(p.shape[0] for p in panels)
    W = sum(p.shape[1] for p in panels) + pad * (len(panels) + 1)
    out = np.empty((H + 2 * pad, W, 3), dtype=np.uint8)
    out[:] = bg
    x = pad
    for p in panels:
        out[pad:pad + p.shape[0], x:x + p.shape[1]] = p
        x += p.shape[1] + pad
    return out


def vstack(rows: list[np.ndarray], bg=PANEL_BG, align: str = "left") -> np.ndarray:
    """Rows of different widths stacked vertically, padded with `bg`."""
    W = max(r.shape[1] for r in rows)
    out = np.empty((sum(r.shape[0] for r in rows), W, 3), dtype=np.uint8)
    out[:] = bg
    y = 0
    for r in rows:
        x = (W - r.shape[1]) // 2 if align == "center" else 0
        out[y:y + r.shape[0], x:x + r.shape[1]] = r
        y += r.shape[0]
    return out


def caption(img: np.ndarray, text: str, font_size: int = 18, bg=PANEL_BG) -> np.ndarray:
    """`img` with a left-aligned heading above it (for a figure title)."""
    fnt = font(font_size)
    bar_h = font_size + 14
    canvas = Image.new("RGB", (img.shape[1], img.shape[0] + bar_h), bg)
    canvas.paste(Image.fromarray(img), (0, bar_h))
    ImageDraw.Draw(canvas).text((8, 6), text, fill=TEXT, font=fnt)
    return np.asarray(canvas)


def depth_legend(height: int, max_depth: float, min_depth: float = 0.0, name: str = "turbo",
                 bar_width: int = 16, font_size: int = 13, bg=PANEL_BG) -> np.ndarray:
    """A vertical colour bar for `colorize_depth` (near at the top) with ticks in metres."""
    fnt = font(font_size)
    margin = font_size
    bar_h = max(height - 2 * margin, 10)
    vals = np.linspace(min_depth, max_depth, bar_h)[:, None].repeat(bar_width, axis=1)
    bar = apply_colormap(vals, name, min_depth, max_depth, reverse=(name == "turbo"))
    label_w = 8 + int(font_size * 0.62 * len(f"{max_depth:.0f} m"))
    canvas = Image.new("RGB", (bar_width + label_w + 4, height), bg)
    canvas.paste(Image.fromarray(bar), (2, margin))
    draw = ImageDraw.Draw(canvas)
    step = _nice_step((max_depth - min_depth) / 5)
    tick = np.ceil(min_depth / step) * step
    while tick <= max_depth + 1e-9:
        y = margin + int(round((tick - min_depth) / max(max_depth - min_depth, 1e-9) * (bar_h - 1)))
        draw.line([(2 + bar_width, y), (6 + bar_width, y)], fill=TEXT)
        draw.text((8 + bar_width, y - font_size // 2 - 1), f"{tick:.0f} m", fill=TEXT, font=fnt)
        tick += step
    return np.asarray(canvas)


def _nice_step(raw: float) -> float:
    mag = 10 ** np.floor(np.log10(max(raw, 1e-9)))
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return float(m * mag)
    return float(10 * mag)


def class_legend(class_ids, width: int | None = None, font_size: int = 13, colors=OCC3D_COLORS,
                 names=OCC3D_CLASSES, bg=PANEL_BG) -> np.ndarray:
    """Colour swatches with class names, laid out in rows to fit `width` (default: one row)."""
    fnt = font(font_size)
    ids = [int(c) for c in class_ids]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    items = [(c, 4 + font_size + 4 + _text_size(probe, names[c], fnt)[0] + 12) for c in ids]
    width = width or max(sum(w for _, w in items) + 8, 20)
    rows, row, x = [], [], 4
    for c, w in items:
        if row and x + w > width:
            rows.append(row)
            row, x = [], 4
        row.append((c, x))
        x += w
    if row:
        rows.append(row)
    line_h = font_size + 8
    canvas = Image.new("RGB", (width, max(1, len(rows)) * line_h + 4), bg)
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        y = 4 + r * line_h
        for c, x in row:
            draw.rectangle([x, y, x + font_size, y + font_size], fill=tuple(int(v) for v in colors[c]), outline=TEXT)
            draw.text((x + font_size + 4, y), names[c], fill=TEXT, font=fnt)
    return np.asarray(canvas)


def save_png(img: np.ndarray, path) -> None:
    """Write a PNG atomically."""
    from selfocc_core.io_utils import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(img).save(tmp, format="PNG")
