"""Export synthetic drives in the nuScenes layout (loadable by the official nuscenes-devkit).

Layout written under ``DIR`` (one scene per seed, cameras rendered at ``--height x --width``,
12 Hz frames of which every 6th is a 2 Hz keyframe)::

    DIR/
      DONE                                   # written last: the export is complete
      v1.0-synth/                            # table folder (name = `version`)
        category.json attribute.json visibility.json instance.json sensor.json
        calibrated_sensor.json ego_pose.json log.json scene.json sample.json
        sample_data.json sample_annotation.json map.json
      maps/<map_token>.png                   # tiny blank semantic-prior map (the devkit opens it)
      samples/CAM_*/<scene>__CAM_*__<timestamp_us>.jpg     # keyframes
      samples/LIDAR_TOP/<scene>__LIDAR_TOP__<ts>.pcd.bin   # keyframes, float32 x5 (x,y,z,intensity,ring)
      sweeps/CAM_*/...jpg  sweeps/LIDAR_TOP/...pcd.bin     # the frames in between
      gts/<scene_name>/<sample_token>/labels.npz           # Occ3D-style GT per keyframe

Conventions (as nuScenes): translations in metres, rotations as quaternions [w, x, y, z];
``calibrated_sensor`` maps sensor -> ego (camera = optical frame), ``ego_pose`` maps ego ->
global; timestamps in microseconds; ``camera_intrinsic`` is the 3x3 K *of the written
images* (the native 1600x900 calibration scaled to the export size). All cameras of a frame
share one instant, so their ego poses are equal (each sample_data still has its own
ego_pose record, as in nuScenes). LIDAR_TOP sits 0.94 m ahead / 1.84 m above the ego origin
with the ego's axes. ``labels.npz`` holds ``semantics`` uint8 [200, 200, 16] (Occ3D classes,
17 = free), ``mask_camera`` and ``mask_lidar`` uint8, on the Occ3D grid in the keyframe's ego
frame. ``sample_annotation`` holds a 3D box per object (vehicles, bicycles, pedestrians) within
`ANNOTATION_RANGE_M` of the ego at each keyframe, ``instance`` one record per object, with
nuScenes categories (vehicle.car, vehicle.truck, vehicle.bus.rigid, vehicle.motorcycle,
vehicle.bicycle, human.pedestrian.adult); ``attribute`` is empty.

Scene names are ``synth-<seed:04d>``. Tokens are deterministic (md5 of what they name).
The export is written into ``DIR.partial`` and renamed onto ``DIR`` only when complete, and
``DONE`` is its last file, so an interrupted export is never mistaken for a complete one.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image

from selfocc_core.geometry.transforms import matrix_to_quaternion
from selfocc_core.io_utils import atomic_write_bytes, atomic_write_text
from selfocc_core.synth.occupancy import NUSCENES_LIDAR_IN_EGO, cast_lidar
from selfocc_core.synth.rigs import NUSCENES_CAMERAS
from selfocc_core.synth.sequence import SyntheticSequence

FRAME_RATE_HZ = 12.0
KEYFRAME_EVERY = 6  # 12 Hz frames -> 2 Hz keyframes
BASE_TIMESTAMP_US = 1_700_000_000_000_000
DONE_MARKER = "DONE"
LIDAR = "LIDAR_TOP"
ANNOTATION_RANGE_M = 50.0
_CATEGORY_OF_CLASS = {"car": "vehicle.car", "truck": "vehicle.truck", "bus": "vehicle.bus.rigid", "motorcycle": "vehicle.motorcycle",
                      "bicycle": "vehicle.bicycle", "pedestrian": "human.pedestrian.adult"}


def token(*parts) -> str:
    """Deterministic 32-hex token naming `parts`."""
    return hashlib.md5("/".join(str(p) for p in parts).encode()).hexdigest()


def is_complete(out_dir: str | Path) -> bool:
    """True when `out_dir` holds a finished export (its DONE marker exists)."""
    return (Path(out_dir) / DONE_MARKER).is_file()


def _jpg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _pose_record(tok: str, T: np.ndarray, **extra) -> dict:
    return {"token": tok, "translation": [float(v) for v in T[:3, 3]],
            "rotation": [float(v) for v in matrix_to_quaternion(T[:3, :3])], **extra}


def _annotate(tables: dict, scene_name: str, sample_token: str, boxes: list[dict]) -> None:
    known = {r["token"] for r in tables["instance"]}
    for b in boxes:
        inst_tok = token("instance", scene_name, b["instance"])
        if inst_tok not in known:
            tables["instance"].append({"token": inst_tok, "category_token": token("category", b["category"]),
                                       "nbr_annotations": 0, "first_annotation_token": "", "last_annotation_token": ""})
            known.add(inst_tok)
        q = matrix_to_quaternion(np.array([[np.cos(b["yaw"]), -np.sin(b["yaw"]), 0], [np.sin(b["yaw"]), np.cos(b["yaw"]), 0], [0, 0, 1]]))
        tables["sample_annotation"].append({
            "token": token("sample_annotation", scene_name, sample_token, b["instance"]), "sample_token": sample_token,
            "instance_token": inst_tok, "visibility_token": "4", "attribute_tokens": [],
            "translation": [float(v) for v in b["center"]], "size": [float(v) for v in b["size"]],
            "rotation": [float(v) for v in q], "prev": "", "next": "", "num_lidar_pts": 1, "num_radar_pts": 0})


def simulate_lidar(seq: SyntheticSequence, i: int) -> np.ndarray:
    """LIDAR_TOP scan of frame i: float32 [M, 5] (x, y, z in the LiDAR frame, intensity, ring)."""
    T = seq.T_world_ego(i)
    beams = 32
    _, d, t = cast_lidar(seq.world, seq.time(i), T, NUSCENES_LIDAR_IN_EGO, beams=beams, azimuths=1024)
    ok = torch.isfinite(t)
    d_ego = d @ torch.as_tensor(T[:3, :3], dtype=torch.float32)  # world -> ego (= LiDAR axes)
    pts = d_ego[ok] * t[ok, None]
    ring = torch.arange(beams).repeat_interleave(1024)[ok].float()
    intensity = torch.full_like(ring, 20.0)
    return torch.cat([pts, intensity[:, None], ring[:, None]], -1).numpy().astype(np.float32)


def object_boxes(seq: SyntheticSequence, i: int, max_range: float = ANNOTATION_RANGE_M) -> list[dict]:
    """3D boxes of the objects near the ego at frame i: dicts with instance (int), category,
    center (world, 3), size (nuScenes [width, length, height]), yaw, velocity (world, 3)."""
    from selfocc_core.classes import OCC3D_CLASSES

    prims = seq.world.prims.at(seq.time(i))
    ego = torch.as_tensor(seq.T_world_ego(i)[:3, 3], dtype=torch.float32)
    boxes = []
    for inst in torch.unique(prims.instance).tolist():
        if inst < 0:
            continue
        parts = torch.nonzero(prims.instance == inst).squeeze(-1)
        cls = OCC3D_CLASSES[int(prims.label[parts[0]])]
        if cls not in _CATEGORY_OF_CLASS:
            continue
        yaw = float(prims.yaw[parts[0]])
        c, sn = np.cos(yaw), np.sin(yaw)
        R = torch.tensor([[c, sn, 0.0], [-sn, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float32)  # world -> object axes
        centers = (prims.center[parts] - prims.center[parts[0]]) @ R.T
        lo = (centers - prims.half[parts]).min(0).values
        hi = (centers + prims.half[parts]).max(0).values
        mid = prims.center[parts[0]] + ((lo + hi) / 2) @ R  # object axes -> world
        if (mid[:2] - ego[:2]).norm() > max_range:
            continue
        ext = (hi - lo).tolist()
        boxes.append({"instance": inst, "category": _CATEGORY_OF_CLASS[cls], "center": mid.tolist(),
                      "size": [ext[1], ext[0], ext[2]], "yaw": yaw, "velocity": prims.velocity[parts[0]].tolist()})
    return boxes


def export_nuscenes(
    out_dir: str | Path,
    seeds: list[int] = (0,),
    num_keyframes: int = 4,
    height: int = 225,
    width: int = 400,
    version: str = "v1.0-synth",
    speed_mps: float = 10.0,
    with_lidar: bool = True,
    overwrite: bool = False,
    log: Optional[Callable[[str], None]] = None,
) -> Path:
    """Render and write the drives of `seeds` in the nuScenes layout (see module docstring)."""
    out_dir = Path(out_dir)
    if num_keyframes <= 0:
        raise ValueError(f"export_nuscenes: num_keyframes must be positive, got {num_keyframes}")
    if height <= 0 or width <= 0:
        raise ValueError(f"export_nuscenes: image size must be positive, got {height}x{width}")
    if not seeds:
        raise ValueError("export_nuscenes: no seeds given")
    if not version or "/" in version:
        raise ValueError(f"export_nuscenes: invalid version name {version!r}")
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"export_nuscenes: {out_dir} exists (pass overwrite=True / --overwrite)")
    tmp = out_dir.with_name(out_dir.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)  # a previous export that was interrupted
    tmp.mkdir(parents=True)
    log = log or (lambda msg: None)

    tables: dict[str, list] = {k: [] for k in (
        "category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose",
        "log", "scene", "sample", "sample_data", "sample_annotation", "map")}
    tables["visibility"] = [
        {"token": str(i + 1), "level": lvl, "description": f"visibility of whole object is between {lo} and {hi}%"}
        for i, (lvl, lo, hi) in enumerate([("v0-40", 0, 40), ("v40-60", 40, 60), ("v60-80", 60, 80), ("v80-100", 80, 100)])
    ]
    for name in (*_CATEGORY_OF_CLASS.values(), "movable_object.barrier", "movable_object.trafficcone"):
        tables["category"].append({"token": token("category", name), "name": name, "description": f"synthetic {name}"})
    channels = list(NUSCENES_CAMERAS) + ([LIDAR] if with_lidar else [])
    for ch in channels:
        tables["sensor"].append({"token": token("sensor", ch), "channel": ch, "modality": "lidar" if ch == LIDAR else "camera"})
    map_token = token("map", "synth-town")
    tables["map"].append({"token": map_token, "log_tokens": [], "category": "semantic_prior", "filename": f"maps/{map_token}.png"})
    (tmp / "maps").mkdir()
    Image.fromarray(np.zeros((20, 20), dtype=np.uint8)).save(tmp / "maps" / f"{map_token}.png")

    for seed in seeds:
        scene_name = f"synth-{int(seed):04d}"
        num_frames = (num_keyframes - 1) * KEYFRAME_EVERY + 1
        seq = SyntheticSequence(int(seed), num_frames, "nuscenes", None, speed_mps, FRAME_RATE_HZ)
        log_token = token("log", scene_name)
        tables["log"].append({"token": log_token, "logfile": f"{scene_name}-log", "vehicle": "synth-ego",
                              "date_captured": "2026-01-01", "location": "synth-town"})
        tables["map"][0]["log_tokens"].append(log_token)
        scene_token = token("scene", scene_name)
        cs_tokens = {}
        for n, cam in enumerate(seq.rig.cameras):
            cs_tokens[cam.name] = token("calibrated_sensor", scene_name, cam.name)
            tables["calibrated_sensor"].append(_pose_record(
                cs_tokens[cam.name], cam.T_ego_cam, sensor_token=token("sensor", cam.name),
                camera_intrinsic=cam.K_at(height, width, torch.float64).tolist()))
        if with_lidar:
            T_ego_lidar = np.eye(4)
            T_ego_lidar[:3, 3] = NUSCENES_LIDAR_IN_EGO
            cs_tokens[LIDAR] = token("calibrated_sensor", scene_name, LIDAR)
            tables["calibrated_sensor"].append(_pose_record(cs_tokens[LIDAR], T_ego_lidar, sensor_token=token("sensor", LIDAR), camera_intrinsic=[]))

        sample_tokens = [token("sample", scene_name, k) for k in range(num_keyframes)]
        for k, st in enumerate(sample_tokens):
            tables["sample"].append({
                "token": st, "timestamp": BASE_TIMESTAMP_US + int(round(seq.time(k * KEYFRAME_EVERY) * 1e6)),
                "prev": sample_tokens[k - 1] if k > 0 else "", "next": sample_tokens[k + 1] if k + 1 < num_keyframes else "",
                "scene_token": scene_token})
        tables["scene"].append({"token": scene_token, "log_token": log_token, "nbr_samples": num_keyframes,
                                "first_sample_token": sample_tokens[0], "last_sample_token": sample_tokens[-1],
                                "name": scene_name, "description": f"procedural street, seed {seed}"})

        for i in range(num_frames):
            key = i % KEYFRAME_EVERY == 0
            sample_token = sample_tokens[-(-i // KEYFRAME_EVERY)]  # sweeps belong to the next keyframe
            ts = BASE_TIMESTAMP_US + int(round(seq.time(i) * 1e6))
            T_world_ego = seq.T_world_ego(i)
            folder = "samples" if key else "sweeps"
            out = seq.render(i, height, width)
            rgb = (out.rgb.permute(0, 2, 3, 1) * 255.0 + 0.5).clamp(0, 255).to(torch.uint8).numpy()
            for ch in channels:
                sd_tok = token("sample_data", scene_name, ch, i)
                if ch == LIDAR:
                    fname = f"{folder}/{ch}/{scene_name}__{ch}__{ts}.pcd.bin"
                    atomic_write_bytes(tmp / fname, simulate_lidar(seq, i).tobytes())
                    fmt, h, w = "pcd", 0, 0
                else:
                    n = NUSCENES_CAMERAS.index(ch)
                    fname = f"{folder}/{ch}/{scene_name}__{ch}__{ts}.jpg"
                    atomic_write_bytes(tmp / fname, _jpg(rgb[n]))
                    fmt, h, w = "jpg", height, width
                ep_tok = token("ego_pose", scene_name, ch, i)
                tables["ego_pose"].append(_pose_record(ep_tok, T_world_ego, timestamp=ts))
                tables["sample_data"].append({
                    "token": sd_tok, "sample_token": sample_token, "ego_pose_token": ep_tok,
                    "calibrated_sensor_token": cs_tokens[ch], "timestamp": ts, "fileformat": fmt,
                    "is_key_frame": key, "height": h, "width": w, "filename": fname,
                    "prev": token("sample_data", scene_name, ch, i - 1) if i > 0 else "",
                    "next": token("sample_data", scene_name, ch, i + 1) if i + 1 < num_frames else ""})
            if key:
                _annotate(tables, scene_name, sample_token, object_boxes(seq, i))
                gt = seq.ground_truth(i)
                atomic_write_bytes(tmp / "gts" / scene_name / sample_token / "labels.npz", _npz(
                    semantics=gt.semantics.numpy().astype(np.uint8),
                    mask_camera=gt.mask_camera.numpy().astype(np.uint8),
                    mask_lidar=gt.mask_lidar.numpy().astype(np.uint8)))
            log(f"{scene_name}: frame {i + 1}/{num_frames}{' (keyframe)' if key else ''}")

    # link each instance's annotations in time
    by_instance: dict[str, list[dict]] = {}
    for ann in tables["sample_annotation"]:
        by_instance.setdefault(ann["instance_token"], []).append(ann)
    for inst_tok, anns in by_instance.items():
        for a, b in zip(anns[:-1], anns[1:]):
            a["next"], b["prev"] = b["token"], a["token"]
        rec = next(r for r in tables["instance"] if r["token"] == inst_tok)
        rec.update(nbr_annotations=len(anns), first_annotation_token=anns[0]["token"], last_annotation_token=anns[-1]["token"])
    for name, rows in tables.items():
        atomic_write_text(tmp / version / f"{name}.json", json.dumps(rows, indent=1))
    atomic_write_text(tmp / DONE_MARKER, json.dumps({"format": "nuscenes", "version": version, "seeds": [int(s) for s in seeds],
                                                      "num_keyframes": num_keyframes, "height": height, "width": width}))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir
