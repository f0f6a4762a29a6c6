"""Reference depth from a rectified stereo pair (OpenCV SGBM with a left-right check), cached on disk.

For real recordings without LiDAR (e.g. ``kitti_raw_0001``: KITTI raw colour stereo, no scans)
this is the depth that rendered depth is scored against. Steps, for the left image L and the
right image R of one rectified pair (same K, baseline B metres along x):

1. ``d_L = SGBM(L, R)`` and ``d_R`` = the right image's disparity (SGBM on the mirrored pair);
   both padded on the left by `num_disparities` so the output covers the full width;
2. valid where ``d_L >= min_disparity``, ``|d_L(x) - d_R(round(x - d_L(x)))| <= lr_max_diff``
   (left-right consistency: occlusions and mismatches fail it), the 9x9 grey standard deviation is
   at least `min_texture_std` (textureless), and not within `sky_margin` px of a saturated
   (grey >= `saturation`) blob of at least `sky_min_area` px whose centroid lies above the
   principal point (the white sky);
3. ``depth = fx * B / (d_L + disparity_offset)`` on valid pixels, 0 elsewhere (0 = no reference).

`disparity_offset` is a per-rig constant (true d = measured d + offset): kitti_raw_0001's README
measures 0.985 px for its colour pair; use the value the poses were made with.

`cached_stereo_depth` stores each map as a 16-bit PNG of ``depth * 256`` (the KITTI depth
benchmark's encoding: 1/256 m steps, 0 = invalid) under a key of the image files (path, size,
mtime), the calibration and every setting, in `default_cache_dir()` unless told otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from selfocc_core.io_utils import atomic_write_bytes


@dataclass(frozen=True)
class StereoConfig:
    """SGBM settings and the validity checks (defaults: the kitti_raw_0001 README's recipe)."""

    num_disparities: int = 128
    """Disparity search range in pixels (a multiple of 16)."""
    block_size: int = 5
    """SGBM matching block size (odd)."""
    uniqueness_ratio: int = 10
    speckle_window_size: int = 100
    speckle_range: int = 2
    disparity_offset: float = 0.0
    """Pixels added to every measured disparity before depth = fx * B / d (rig constant)."""
    lr_max_diff: float = 1.0
    """Left-right check: largest |d_L(x) - d_R(x - d_L(x))| in pixels."""
    min_disparity: float = 1.0
    """Smaller measured disparities (beyond ~fx * B / 1 px) are invalid."""
    min_texture_std: float = 1.0
    """Grey-level standard deviation over 9x9 below this = textureless = invalid."""
    saturation: int = 250
    """Grey level from which a pixel counts as saturated (sky detection)."""
    sky_min_area: int = 50
    """Saturated blobs of at least this many pixels above the principal point are sky."""
    sky_margin: int = 3
    """Pixels around a sky blob that are invalid too."""

    def __post_init__(self):
        if self.num_disparities < 16 or self.num_disparities % 16:
            raise ValueError(f"StereoConfig.num_disparities must be a positive multiple of 16, got {self.num_disparities}")
        if self.block_size < 1 or self.block_size % 2 == 0:
            raise ValueError(f"StereoConfig.block_size must be odd and positive, got {self.block_size}")
        if self.lr_max_diff < 0 or self.min_disparity <= 0:
            raise ValueError("StereoConfig: need lr_max_diff >= 0 and min_disparity > 0")


def _grey(image: np.ndarray) -> np.ndarray:
    """``[H, W]`` or ``[H, W, 3]`` RGB uint8 -> grey uint8 ``[H, W]``."""
    import cv2

    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"stereo images must be uint8, got {image.dtype}")
    if image.ndim == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if image.ndim != 2:
        raise ValueError(f"stereo image must be [H, W] or [H, W, 3], got shape {image.shape}")
    return image


def sgbm_disparities(left: np.ndarray, right: np.ndarray, cfg: StereoConfig = StereoConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Full-width disparities of a rectified pair: ``(d_left, d_right)`` float32 ``[H, W]`` in pixels.

    ``d_left(x)``: the left pixel x matches right pixel ``x - d_left``; ``d_right(x)``: the right
    pixel x matches left pixel ``x + d_right``. Unmatched pixels are negative.
    """
    import cv2

    L, R = _grey(left), _grey(right)
    if L.shape != R.shape:
        raise ValueError(f"stereo pair differs in size: {L.shape} vs {R.shape}")
    nd, bs = cfg.num_disparities, cfg.block_size
    sgbm = cv2.StereoSGBM_create(
        minDisparity=0, numDisparities=nd, blockSize=bs, P1=8 * bs * bs, P2=32 * bs * bs, disp12MaxDiff=1,
        uniquenessRatio=cfg.uniqueness_ratio, speckleWindowSize=cfg.speckle_window_size,
        speckleRange=cfg.speckle_range, preFilterCap=63, mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY,
    )

    def pad(im):
        return cv2.copyMakeBorder(im, 0, 0, nd, 0, cv2.BORDER_CONSTANT, value=0)

    d_left = sgbm.compute(pad(L), pad(R))[:, nd:].astype(np.float32) / 16.0
    d_right = sgbm.compute(pad(np.ascontiguousarray(R[:, ::-1])), pad(np.ascontiguousarray(L[:, ::-1])))
    d_right = d_right[:, nd:][:, ::-1].astype(np.float32) / 16.0
    return d_left, np.ascontiguousarray(d_right)


def left_right_consistent(d_left: np.ndarray, d_right: np.ndarray, max_diff: float = 1.0) -> np.ndarray:
    """``[H, W]`` bool: ``d_left >= 0`` and ``|d_left(x) - d_right(round(x - d_left(x)))| <= max_diff``."""
    H, W = d_left.shape
    x = np.arange(W)[None, :].repeat(H, 0)
    xr = np.rint(x - d_left).astype(np.int64)
    inside = (d_left >= 0) & (xr >= 0) & (xr < W)
    dr = d_right[np.arange(H)[:, None], np.clip(xr, 0, W - 1)]
    return inside & (dr >= 0) & (np.abs(d_left - dr) <= max_diff)


def texture_and_sky_mask(grey: np.ndarray, cy: float, cfg: StereoConfig = StereoConfig()) -> np.ndarray:
    """``[H, W]`` bool: textured (9x9 std >= min_texture_std) and away from saturated sky blobs."""
    import cv2

    g = grey.astype(np.float32)
    mean = cv2.boxFilter(g, -1, (9, 9), borderType=cv2.BORDER_REFLECT)
    sq = cv2.boxFilter(g * g, -1, (9, 9), borderType=cv2.BORDER_REFLECT)
    ok = np.sqrt(np.maximum(sq - mean * mean, 0.0)) >= cfg.min_texture_std
    sat = (grey >= cfg.saturation).astype(np.uint8)
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(sat, connectivity=8)
    sky_ids = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= cfg.sky_min_area and centroids[i, 1] < cy]
    if sky_ids:
        sky = np.isin(labels, sky_ids).astype(np.uint8)
        k = 2 * cfg.sky_margin + 1
        sky = cv2.dilate(sky, np.ones((k, k), np.uint8))
        ok &= sky == 0
    return ok


def stereo_depth(left: np.ndarray, right: np.ndarray, fx: float, baseline: float, cy: float,
                 cfg: StereoConfig = StereoConfig()) -> np.ndarray:
    """Depth ``[H, W]`` float32 metres of the left image of a rectified pair, 0 where invalid.

    Args:
        left, right: uint8 ``[H, W]`` grey or ``[H, W, 3]`` RGB, rectified (rows aligned).
        fx: focal length in pixels; baseline: metres between the cameras (> 0, right of left);
        cy: principal point row (the sky test looks for saturated blobs above it).

    Example:
        >>> depth = stereo_depth(L, R, fx=721.5377, baseline=0.5327, cy=172.85)  # doctest: +SKIP
    """
    if not (fx > 0 and baseline > 0):
        raise ValueError(f"stereo_depth: need fx > 0 and baseline > 0, got fx={fx}, baseline={baseline}")
    d_left, d_right = sgbm_disparities(left, right, cfg)
    valid = (d_left >= cfg.min_disparity) & left_right_consistent(d_left, d_right, cfg.lr_max_diff)
    valid &= texture_and_sky_mask(_grey(left), cy, cfg)
    d = d_left + cfg.disparity_offset
    valid &= d > 0
    depth = np.zeros(d_left.shape, np.float32)
    depth[valid] = fx * baseline / d[valid]
    return depth


def default_cache_dir() -> Path:
    """``$SELFOCC_CACHE_DIR/stereo_depth``, else ``~/.cache/selfocc/stereo_depth`` (never the repository)."""
    root = os.environ.get("SELFOCC_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "selfocc") / "stereo_depth"


def _file_key(p: Path) -> list:
    st = p.stat()
    return [str(p.resolve()), st.st_size, st.st_mtime_ns]


def encode_depth_png(depth: np.ndarray) -> bytes:
    """Depth metres ``[H, W]`` -> 16-bit PNG bytes of ``round(depth * 256)`` (0 = invalid; <= 255.99 m)."""
    import cv2

    v = np.clip(np.rint(np.nan_to_num(depth, nan=0.0) * 256.0), 0, 65535).astype(np.uint16)
    ok, buf = cv2.imencode(".png", v)
    if not ok:
        raise ValueError("could not encode the depth map as PNG")
    return buf.tobytes()


def decode_depth_png(path: Path) -> np.ndarray:
    import cv2

    v = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if v is None or v.dtype != np.uint16 or v.ndim != 2:
        raise ValueError(f"{path}: not a 16-bit single-channel depth PNG")
    return v.astype(np.float32) / 256.0


def cached_stereo_depth(left_path: str | Path, right_path: str | Path, fx: float, baseline: float, cy: float,
                        cfg: StereoConfig = StereoConfig(), cache_dir: Optional[str | Path] = None) -> np.ndarray:
    """`stereo_depth` of two image files, read from / written to the cache (atomic writes)."""
    from PIL import Image

    left_path, right_path = Path(left_path), Path(right_path)
    for p in (left_path, right_path):
        if not p.is_file():
            raise FileNotFoundError(f"stereo image not found: {p}")
    key = json.dumps([_file_key(left_path), _file_key(right_path), round(fx, 6), round(baseline, 9), round(cy, 6),
                      asdict(cfg)], sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()[:20]
    path = Path(cache_dir or default_cache_dir()) / f"{left_path.stem}_{digest}.png"
    if path.is_file():
        return decode_depth_png(path)

    def read(p):
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)

    depth = stereo_depth(read(left_path), read(right_path), fx, baseline, cy, cfg)
    atomic_write_bytes(path, encode_depth_png(depth))
    return decode_depth_png(path)  # exactly what later reads return


def resize_depth_nearest(depth: np.ndarray, height: int, width: int) -> np.ndarray:
    """Depth ``[H, W]`` -> ``[height, width]`` by nearest sampling at the new pixel centres (no mixing
    of valid and invalid pixels)."""
    H, W = depth.shape
    if (H, W) == (height, width):
        return depth
    rows = np.minimum(((np.arange(height) + 0.5) * H / height).astype(np.int64), H - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * W / width).astype(np.int64), W - 1)
    return depth[rows[:, None], cols[None, :]]
