"""Write a list of frames as a video: mp4 when imageio-ffmpeg is installed, else an animated GIF."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from selfocc_core.io_utils import atomic_path


def mp4_available() -> bool:
    return importlib.util.find_spec("imageio_ffmpeg") is not None


def _even(img: np.ndarray) -> np.ndarray:
    """H.264 with yuv420p needs even sizes: pad by one pixel where needed."""
    h, w = img.shape[:2]
    return np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def write_video(frames: list[np.ndarray], path: str | Path, fps: float = 4.0) -> Path:
    """Frames ``[H, W, 3]`` uint8 (resized to the first frame's size) -> video file.

    `path` ending in ``.mp4`` is written as mp4 if imageio-ffmpeg is available, otherwise as
    a GIF beside it (suffix changed). Returns the path actually written (atomically).
    """
    import imageio.v2 as imageio
    from PIL import Image

    if not frames:
        raise ValueError("write_video: no frames")
    path = Path(path)
    h, w = frames[0].shape[:2]
    frames = [f if f.shape[:2] == (h, w) else np.asarray(Image.fromarray(f).resize((w, h))) for f in frames]
    if path.suffix.lower() == ".mp4" and not mp4_available():
        path = path.with_suffix(".gif")
    if path.suffix.lower() == ".mp4":
        # ffmpeg picks the container from the suffix, so the temporary file must end in .mp4
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.mp4")
        try:
            writer = imageio.get_writer(str(tmp), format="FFMPEG", fps=fps, codec="libx264",
                                        quality=8, macro_block_size=1, pixelformat="yuv420p")
            try:
                for f in frames:
                    writer.append_data(_even(f))
            finally:
                writer.close()
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
    elif path.suffix.lower() == ".gif":
        with atomic_path(path) as tmp:
            pil = [Image.fromarray(f) for f in frames]
            pil[0].save(tmp, format="GIF", save_all=True, append_images=pil[1:],
                        duration=int(round(1000 / fps)), loop=0, optimize=False)
    else:
        raise ValueError(f"write_video: unsupported video suffix {path.suffix!r} (use .mp4 or .gif)")
    return path
