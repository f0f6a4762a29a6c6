"""Export a synthetic drive in the KITTI odometry layout with SemanticKITTI-style voxel labels.

Layout written under ``DIR`` (sequence ``XX``, 10 Hz)::

    DIR/
      DONE                                   # written last: the export is complete
      poses/XX.txt                           # per frame, 3x4 row-major T_world_cam0; world = cam0 of frame 0
      sequences/XX/
        calib.txt                            # "P0: ..." .. "P3: ..." (3x4 row-major) and "Tr: ..." (velo -> cam0)
        times.txt                            # seconds, "%.6e" per line
        image_2/NNNNNN.png                   # left colour camera, height x width
        velodyne/NNNNNN.bin                  # float32 x4 (x, y, z, intensity), simulated 64-beam scan
        voxels/NNNNNN.label                  # uint16 [256*256*32] SemanticKITTI raw ids, every `voxel_every` frames
        voxels/NNNNNN.invalid                # np.packbits of the voxels seen neither by camera nor LiDAR

Calibration: the real sequence-00 ``P0..P3`` and ``Tr`` (rigs.py); if the images are not
1241x376, each P is left-multiplied by the pixel-centre-aligned resize matrix (same mapping
as geometry.camera.scale_intrinsics), so ``P2`` stays the projection for the written images.

Voxels: the SemanticKITTI grid (256 x 256 x 32 at 0.2 m; x 0..51.2 ahead, y -25.6..25.6,
z -2..4.4 in the Velodyne frame, which is our KITTI ego frame), flattened C-order over
[x, y, z] like SemanticKITTI. Occ3D classes map to SemanticKITTI raw ids as in
`OCC3D_TO_SEMANTICKITTI` (free -> 0 unlabeled; manmade -> 50 building, so poles and signs
also become building; traffic cones and others -> 99 other-object).

Written into ``DIR.partial`` and renamed onto ``DIR`` when complete; ``DONE`` is last.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image

from selfocc_core.classes import CLASS_ID
from selfocc_core.io_utils import atomic_write_bytes, atomic_write_text
from selfocc_core.synth.occupancy import KITTI_LIDAR_IN_EGO, cast_lidar
from selfocc_core.synth.rigs import KITTI_P, KITTI_TR
from selfocc_core.synth.sequence import SyntheticSequence

FRAME_RATE_HZ = 10.0
DONE_MARKER = "DONE"
NATIVE_SIZE = (376, 1241)  # (height, width)

# Occ3D class name -> SemanticKITTI raw label id (semantic-kitti.yaml "labels").
OCC3D_TO_SEMANTICKITTI = {
    "others": 99, "barrier": 51, "bicycle": 11, "bus": 13, "car": 10, "construction_vehicle": 20,
    "motorcycle": 15, "pedestrian": 30, "traffic_cone": 99, "trailer": 20, "truck": 18,
    "driveable_surface": 40, "other_flat": 49, "sidewalk": 48, "terrain": 72, "manmade": 50,
    "vegetation": 70, "free": 0,
}


def occ3d_to_semantickitti(semantics: np.ndarray) -> np.ndarray:
    """Occ3D class ids -> SemanticKITTI raw ids (uint16), same shape."""
    lut = np.zeros(len(CLASS_ID), dtype=np.uint16)
    for name, kid in OCC3D_TO_SEMANTICKITTI.items():
        lut[CLASS_ID[name]] = kid
    return lut[semantics]


def is_complete(out_dir: str | Path) -> bool:
    return (Path(out_dir) / DONE_MARKER).is_file()


def scaled_projection(P: np.ndarray, height: int, width: int) -> np.ndarray:
    """3x4 projection for images resized from 1241x376 to (height, width)."""
    sx, sy = width / NATIVE_SIZE[1], height / NATIVE_SIZE[0]
    S = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])
    return S @ P


def _row(M: np.ndarray) -> str:
    return " ".join(f"{v:.12e}" for v in np.asarray(M).reshape(-1))


def export_kitti(
    out_dir: str | Path,
    seed: int = 0,
    sequence: str = "00",
    num_frames: int = 20,
    height: int = 376,
    width: int = 1241,
    speed_mps: float = 10.0,
    voxel_every: int = 5,
    with_velodyne: bool = True,
    overwrite: bool = False,
    log: Optional[Callable[[str], None]] = None,
) -> Path:
    """Render and write one drive in the KITTI odometry layout (see module docstring)."""
    out_dir = Path(out_dir)
    if num_frames <= 0:
        raise ValueError(f"export_kitti: num_frames must be positive, got {num_frames}")
    if height <= 0 or width <= 0:
        raise ValueError(f"export_kitti: image size must be positive, got {height}x{width}")
    if voxel_every <= 0:
        raise ValueError(f"export_kitti: voxel_every must be positive, got {voxel_every}")
    if not (len(sequence) == 2 and sequence.isdigit()):
        raise ValueError(f"export_kitti: sequence must be two digits like '00', got {sequence!r}")
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"export_kitti: {out_dir} exists (pass overwrite=True / --overwrite)")
    tmp = out_dir.with_name(out_dir.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    seq_dir = tmp / "sequences" / sequence
    seq_dir.mkdir(parents=True)
    log = log or (lambda msg: None)

    seq = SyntheticSequence(int(seed), num_frames, "kitti", None, speed_mps, FRAME_RATE_HZ)
    calib = [f"{k}: {_row(scaled_projection(np.asarray(KITTI_P[k]).reshape(3, 4), height, width))}" for k in ("P0", "P1", "P2", "P3")]
    calib.append(f"Tr: {_row(np.asarray(KITTI_TR))}")
    atomic_write_text(seq_dir / "calib.txt", "\n".join(calib) + "\n")
    atomic_write_text(seq_dir / "times.txt", "".join(f"{seq.time(i):.6e}\n" for i in range(num_frames)))

    T_cam0_velo = np.eye(4)
    T_cam0_velo[:3, :] = np.asarray(KITTI_TR).reshape(3, 4)
    T_velo_cam0 = np.linalg.inv(T_cam0_velo)
    T_world_cam0_first = seq.T_world_ego(0) @ T_velo_cam0
    poses = []
    for i in range(num_frames):
        pose = np.linalg.inv(T_world_cam0_first) @ seq.T_world_ego(i) @ T_velo_cam0
        poses.append(_row(pose[:3, :]))
        out = seq.render(i, height, width)
        rgb = (out.rgb[0].permute(1, 2, 0) * 255.0 + 0.5).clamp(0, 255).to(torch.uint8).numpy()
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="PNG")
        atomic_write_bytes(seq_dir / "image_2" / f"{i:06d}.png", buf.getvalue())
        if with_velodyne:
            _, d, t = cast_lidar(seq.world, seq.time(i), seq.T_world_ego(i), KITTI_LIDAR_IN_EGO, beams=64, azimuths=1024,
                                 fov_deg=(-24.9, 2.0), max_range=80.0)
            ok = torch.isfinite(t)
            pts = (d @ torch.as_tensor(seq.T_world_ego(i)[:3, :3], dtype=torch.float32))[ok] * t[ok, None]
            scan = torch.cat([pts, torch.full_like(pts[:, :1], 0.3)], -1).numpy().astype(np.float32)
            atomic_write_bytes(seq_dir / "velodyne" / f"{i:06d}.bin", scan.tobytes())
        if i % voxel_every == 0:
            gt = seq.ground_truth(i)
            labels = occ3d_to_semantickitti(gt.semantics.numpy()).reshape(-1)
            invalid = ~(gt.mask_camera.numpy() | gt.mask_lidar.numpy()).reshape(-1)
            atomic_write_bytes(seq_dir / "voxels" / f"{i:06d}.label", labels.astype(np.uint16).tobytes())
            atomic_write_bytes(seq_dir / "voxels" / f"{i:06d}.invalid", np.packbits(invalid).tobytes())
        log(f"sequence {sequence}: frame {i + 1}/{num_frames}")
    atomic_write_text(tmp / "poses" / f"{sequence}.txt", "\n".join(poses) + "\n")
    atomic_write_text(tmp / DONE_MARKER, json.dumps({"format": "kitti", "sequence": sequence, "seed": int(seed),
                                                      "num_frames": num_frames, "height": height, "width": width}))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir
