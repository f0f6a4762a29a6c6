"""Convert driving datasets (nuScenes, KITTI odometry, DDAD, synthetic samples) to rosbag2.

Each source is first described as a `Recording` (cameras with their fixed extrinsics, one
`ImageRecord` per camera image with its own stamp and intrinsics, and the ego poses); then
`write_recording` streams it time-sorted into a bag:

- ``/<ns>/image_raw`` sensor_msgs/Image (rgb8, or mono8 for grey cameras), or
  ``/<ns>/image_raw/compressed`` sensor_msgs/CompressedImage (jpeg) with ``compressed=True``
- ``/<ns>/camera_info`` sensor_msgs/CameraInfo with the image's stamp and frame id
- ``/tf`` odom -> base_link at every ego pose, ``/tf_static`` base_link -> ``<cam>_optical_frame``

Images are loaded lazily, one at a time, so converting a long scene needs little memory.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np

from selfocc_core.geometry.transforms import T_FLU_OPTICAL, invert_transform, make_transform
from selfocc_core.data.rosbag import CAMERA_NAMES_KEY
from selfocc_ros.bag.writer import (
    CAMERA_INFO,
    COMPRESSED_IMAGE,
    IMAGE,
    QOS_LATCHED,
    QOS_TF,
    TF_MESSAGE,
    AtomicBagWriter,
    EncodedImage,
    camera_info_msg,
    compressed_image_msg,
    image_msg,
    optical_frame_id,
    tf_message,
    transform_stamped,
)

log = logging.getLogger(__name__)

@dataclass
class CameraSpec:
    """A camera of the rig.

    name:       dataset name, e.g. "CAM_FRONT" (the bag's topic namespace defaults to "/<name>")
    T_base_cam: [4, 4] optical frame -> base_link (fixed over the recording)
    topic_ns:   topic namespace, e.g. "/CAM_FRONT" or "/kitti/camera_gray_left"
    """

    name: str
    T_base_cam: np.ndarray
    topic_ns: str = ""

    def __post_init__(self):
        if not self.topic_ns:
            self.topic_ns = "/" + self.name
        self.T_base_cam = np.asarray(self.T_base_cam, dtype=np.float64)
        if self.T_base_cam.shape != (4, 4):
            raise ValueError(f"camera {self.name}: T_base_cam must be 4x4, got {self.T_base_cam.shape}")

    @property
    def frame_id(self) -> str:
        return optical_frame_id(self.topic_ns.rsplit("/", 1)[-1] if "/" in self.topic_ns else self.name)


@dataclass
class ImageRecord:
    """One camera image. `load()` returns uint8 [H, W, 3] RGB / [H, W] grey, or EncodedImage."""

    camera: str
    stamp_ns: int
    K: np.ndarray
    width: int
    height: int
    load: Callable[[], object]


@dataclass
class PoseRecord:
    stamp_ns: int
    T_odom_base: np.ndarray


@dataclass
class Recording:
    source: str
    cameras: list[CameraSpec]
    images: list[ImageRecord]
    poses: list[PoseRecord]
    odom_frame: str = "odom"
    base_frame: str = "base_link"
    info: dict = field(default_factory=dict)

    def select_cameras(self, names: Optional[list[str]]) -> "Recording":
        """Keep only `names` (matched case-insensitively against name or topic namespace)."""
        if not names:
            return self
        wanted = {n.lower().strip("/") for n in names}
        keep = [c for c in self.cameras if c.name.lower() in wanted or c.topic_ns.lower().strip("/") in wanted]
        unknown = wanted - {c.name.lower() for c in keep} - {c.topic_ns.lower().strip("/") for c in keep}
        if unknown:
            raise ValueError(
                f"--cameras: unknown camera(s) {sorted(unknown)} in {self.source}; "
                f"available: {[c.name for c in self.cameras]}"
            )
        names_kept = {c.name for c in keep}
        return Recording(self.source, keep, [r for r in self.images if r.camera in names_kept], self.poses,
                         self.odom_frame, self.base_frame, dict(self.info))


# ---------------------------------------------------------------------------------------------
# Writing


def _load_pixels(data) -> np.ndarray:
    """EncodedImage -> uint8 pixels; arrays pass through."""
    if isinstance(data, EncodedImage):
        import io

        from PIL import Image as PILImage

        im = PILImage.open(io.BytesIO(data.data))
        im = im.convert("L") if data.mono or im.mode in ("L", "I;16", "I") else im.convert("RGB")
        return np.asarray(im)
    return data


def _poses_by_stamp(poses: list[PoseRecord]) -> dict[int, np.ndarray]:
    """One ego pose per stamp. TF holds one pose per instant, so poses that several sensors
    imply for the same stamp (DDAD: ~1 cm apart) are averaged (translation mean, rotation
    projected back onto SO(3))."""
    groups: dict[int, list[np.ndarray]] = {}
    for p in poses:
        groups.setdefault(p.stamp_ns, []).append(np.asarray(p.T_odom_base, dtype=np.float64))
    out = {}
    for t, Ts in groups.items():
        if len(Ts) == 1 or all(np.allclose(T, Ts[0], atol=1e-9) for T in Ts):
            out[t] = Ts[0]
            continue
        M = np.mean([T[:3, :3] for T in Ts], axis=0)
        U, _, Vt = np.linalg.svd(M)
        R = U @ np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))]) @ Vt
        out[t] = make_transform(R, np.mean([T[:3, 3] for T in Ts], axis=0))
    return out


def write_recording(rec: Recording, out: str | Path, storage: str = "mcap", compressed: bool = False,
                    overwrite: bool = False, progress: bool = False) -> dict:
    """Write `rec` as a rosbag2 at `out` (atomically). Returns {topic: message count}."""
    if not rec.images:
        raise ValueError(f"{rec.source}: no camera images to write")
    if not rec.poses:
        raise ValueError(f"{rec.source}: no ego poses to write")
    cams = {c.name: c for c in rec.cameras}
    events: list[tuple[int, int, object]] = [(p.stamp_ns, 0, p) for p in rec.poses]
    events += [(r.stamp_ns, 1, r) for r in rec.images]
    events.sort(key=lambda e: (e[0], e[1]))
    t0 = events[0][0]
    iterator = events
    if progress:
        from tqdm import tqdm

        iterator = tqdm(events, desc=f"writing {Path(out).name}", unit="msg")
    with AtomicBagWriter(out, storage=storage, overwrite=overwrite) as bag:
        bag.custom_data.update({"source": rec.source, **{k: str(v) for k, v in rec.info.items()}})
        # The dataset's own camera names (KITTI "image_0" on /kitti/camera_gray_left), so that
        # RosbagDataset yields the same names as the dataset's reader.
        bag.custom_data[CAMERA_NAMES_KEY] = json.dumps({c.topic_ns: c.name for c in rec.cameras})
        # Declare topics in rig order, so readers list the cameras in that order.
        bag.declare("/tf_static", TF_MESSAGE, QOS_LATCHED)
        bag.declare("/tf", TF_MESSAGE, QOS_TF)
        for c in rec.cameras:
            if compressed:
                bag.declare(f"{c.topic_ns}/image_raw/compressed", COMPRESSED_IMAGE)
            else:
                bag.declare(f"{c.topic_ns}/image_raw", IMAGE)
            bag.declare(f"{c.topic_ns}/camera_info", CAMERA_INFO)
        static = [transform_stamped(c.T_base_cam, t0, rec.base_frame, c.frame_id) for c in rec.cameras]
        bag.write("/tf_static", TF_MESSAGE, t0, tf_message(static), qos=QOS_LATCHED)
        pose_at = _poses_by_stamp(rec.poses)
        last_pose_ns = None
        for stamp, kind, item in iterator:
            if kind == 0:
                if stamp == last_pose_ns:
                    continue  # several cameras can share one ego pose
                last_pose_ns = stamp
                tf = transform_stamped(pose_at[stamp], stamp, rec.odom_frame, rec.base_frame)
                bag.write("/tf", TF_MESSAGE, stamp, tf_message([tf]), qos=QOS_TF)
                continue
            cam = cams[item.camera]
            data = item.load()
            if compressed:
                bag.write(f"{cam.topic_ns}/image_raw/compressed", COMPRESSED_IMAGE, stamp,
                          compressed_image_msg(data, stamp, cam.frame_id))
            else:
                pixels = _load_pixels(data)
                if pixels.shape[:2] != (item.height, item.width):
                    raise ValueError(
                        f"{rec.source}: {item.camera} image at {stamp} ns is {pixels.shape[1]}x{pixels.shape[0]}, "
                        f"calibration says {item.width}x{item.height}"
                    )
                bag.write(f"{cam.topic_ns}/image_raw", IMAGE, stamp, image_msg(pixels, stamp, cam.frame_id))
            bag.write(f"{cam.topic_ns}/camera_info", CAMERA_INFO, stamp,
                      camera_info_msg(item.K, item.width, item.height, stamp, cam.frame_id))
        counts = dict(bag.counts)
    log.info("wrote %s: %s", out, counts)
    return counts


# ---------------------------------------------------------------------------------------------
# Sources


#: Stamps of sources with relative time (synthetic drives start at 0 s) are shifted by this
#: (2020-09-13 12:26:40 UTC): ROS reads a zero stamp as "unset".
RELATIVE_TIME_EPOCH_NS = 1_600_000_000 * 1_000_000_000


def samples_recording(samples: Iterable, source: str = "samples", time_offset_ns: Optional[int] = None) -> Recording:
    """A recording from `selfocc_core.data.sample.Sample`s (e.g. the synthetic world).

    Only each sample's main frame is written (context frames are other frames of the same
    sequence); frames with an already-seen timestamp are skipped. Images are quantised to uint8.
    Stamps are ``timestamp * 1e9 + time_offset_ns``; by default the offset is
    RELATIVE_TIME_EPOCH_NS when the first timestamp is below 1e6 s (relative time), else 0.
    The offset is stored in the bag's custom_data (``time_offset_ns``).
    """
    import torch

    cameras: dict[str, CameraSpec] = {}
    images: list[ImageRecord] = []
    poses: list[PoseRecord] = []
    seen: set[int] = set()
    for s in samples:
        f = s.frame
        t = float(f.timestamp)
        if time_offset_ns is None:
            time_offset_ns = RELATIVE_TIME_EPOCH_NS if t < 1e6 else 0
        stamp = int(round(t * 1e9)) + time_offset_ns
        if stamp in seen:
            continue
        seen.add(stamp)
        poses.append(PoseRecord(stamp, f.T_world_ego.double().cpu().numpy()))
        imgs = (f.images.clamp(0, 1) * 255.0).round().to(dtype=torch.uint8)
        imgs = imgs.permute(0, 2, 3, 1).cpu().numpy()  # [N, H, W, 3]
        for i, name in enumerate(f.camera_names):
            T = f.T_ego_cam[i].double().cpu().numpy()
            if name not in cameras:
                cameras[name] = CameraSpec(name, T)
            elif not np.allclose(cameras[name].T_base_cam, T, atol=1e-5):
                log.warning("%s: camera %s extrinsics change over time; /tf_static keeps the first", source, name)
            h, w = imgs.shape[1:3]
            images.append(ImageRecord(name, stamp, f.K[i].double().cpu().numpy(), w, h,
                                      (lambda a=imgs[i]: a)))
    rec = Recording(source, list(cameras.values()), images, poses)
    rec.info["time_offset_ns"] = str(time_offset_ns or 0)
    return rec


def synthetic_recording(spec: Optional[str] = None, cameras: Optional[list[str]] = None) -> Recording:
    """The procedural world of `selfocc_core.data.synthetic` (without ground truth).

    spec: None/"default", a SyntheticConfig YAML file, or ``key=value,...`` options
    (e.g. ``"num_frames=10,rig=kitti,image_height=96"``).
    """
    from dataclasses import replace

    from selfocc_core.config_io import from_dict, load_dataclass
    from selfocc_core.data.open import parse_spec_options
    from selfocc_core.data.synthetic import SyntheticConfig, SyntheticDataset

    if not spec or spec in ("-", "default", "synthetic"):
        cfg = SyntheticConfig()
    elif Path(spec).is_file():
        cfg = load_dataclass(SyntheticConfig, spec)
    else:
        cfg = from_dict(SyntheticConfig, parse_spec_options("synthetic:" + spec.removeprefix("synthetic:")),
                        where="--from synthetic options")
    cfg = replace(cfg, with_gt=False, require_context=False, cameras=list(cameras or cfg.cameras))
    ds = SyntheticDataset(cfg)
    return samples_recording((ds[i] for i in range(len(ds))), source=f"synthetic:seed={cfg.seed}")


# KITTI odometry ------------------------------------------------------------------------------

#: image folder -> topic namespace (kitti2bag naming)
KITTI_CAMERAS = {
    "image_0": "/kitti/camera_gray_left",
    "image_1": "/kitti/camera_gray_right",
    "image_2": "/kitti/camera_color_left",
    "image_3": "/kitti/camera_color_right",
}
#: KITTI odometry has relative times only; stamps start at the day sequence 00 was driven
#: (2011-10-03 00:00 UTC) so that no stamp is zero (ROS reads time 0 as "unset").
KITTI_EPOCH_NS = 1_317_600_000 * 1_000_000_000


def _read_kitti_calib(path: Path) -> dict[str, np.ndarray]:
    out = {}
    for line in path.read_text().splitlines():
        if ":" not in line:
            continue
        key, vals = line.split(":", 1)
        nums = np.array([float(v) for v in vals.split()])
        if nums.size != 12:
            raise ValueError(f"{path}: {key} has {nums.size} numbers, expected 12")
        out[key.strip()] = nums.reshape(3, 4)
    return out


def kitti_odometry_recording(root: str | Path, sequence: str = "00") -> Recording:
    """KITTI odometry sequence (``dataset/`` root or ``sequences/<seq>`` folder).

    base_link is the Velodyne frame (FLU) when calib.txt has Tr, else a FLU frame at cam0.
    poses/<seq>.txt give cam0 -> world, with world = the optical cam0 frame of frame 0; odom
    is that frame turned FLU (z up, REP 105), ``T_odom_world = T_FLU_OPTICAL``.
    Rectified camera i has ``P_i = K [I | t_i]``, so its optical frame sits at ``-t_i`` in cam0.
    """
    root = Path(root)
    if (root / "calib.txt").is_file():
        seq_dir = root
        sequence = root.name
        pose_file = root.parent.parent / "poses" / f"{sequence}.txt"
    else:
        seq_dir = root / "sequences" / sequence
        pose_file = root / "poses" / f"{sequence}.txt"
    for p in (seq_dir / "calib.txt", seq_dir / "times.txt", pose_file):
        if not p.is_file():
            raise FileNotFoundError(f"KITTI odometry: {p} not found (expected <root>/sequences/{sequence}/ and poses/)")
    calib = _read_kitti_calib(seq_dir / "calib.txt")
    times = np.loadtxt(seq_dir / "times.txt", ndmin=1)
    poses = np.loadtxt(pose_file, ndmin=2)
    if poses.shape[1] != 12:
        raise ValueError(f"{pose_file}: expected 12 numbers per line, got {poses.shape[1]}")
    n = min(len(times), len(poses))
    if len(times) != len(poses):
        log.warning("KITTI %s: %d times but %d poses; using the first %d", sequence, len(times), len(poses), n)

    # Tr maps Velodyne points into cam0 (p_cam0 = Tr @ p_velo), i.e. Tr = T_cam0_velo.
    T_cam0_base = np.vstack([calib["Tr"], [0, 0, 0, 1]]) if "Tr" in calib else T_FLU_OPTICAL.T
    T_base_cam0 = invert_transform(T_cam0_base)
    T_odom_world = T_FLU_OPTICAL  # world = optical cam0 frame at frame 0
    stamps = [KITTI_EPOCH_NS + int(round(t * 1e9)) for t in times[:n]]
    pose_recs = []
    for i in range(n):
        T_world_cam0 = np.vstack([poses[i].reshape(3, 4), [0, 0, 0, 1]])
        pose_recs.append(PoseRecord(stamps[i], T_odom_world @ T_world_cam0 @ T_cam0_base))

    cameras, images = [], []
    for folder, ns in KITTI_CAMERAS.items():
        img_dir = seq_dir / folder
        key = f"P{folder[-1]}"
        if not img_dir.is_dir() or key not in calib:
            continue
        P = calib[key]
        K = P[:, :3].copy()
        t = np.linalg.solve(K, P[:, 3])
        T_cam0_cam = make_transform(np.eye(3), -t)
        cameras.append(CameraSpec(folder, T_base_cam0 @ T_cam0_cam, ns))
        files = sorted(img_dir.glob("*.png"))
        if not files:
            continue
        from PIL import Image as PILImage

        with PILImage.open(files[0]) as im:
            w, h = im.size
        for f in files:
            idx = int(f.stem)
            if idx >= n:
                continue
            images.append(ImageRecord(folder, stamps[idx], K, w, h, (lambda p=f: _read_png(p))))
    if not images:
        raise FileNotFoundError(f"KITTI odometry: no images under {seq_dir}/image_[0-3]")
    return Recording(f"kitti:{sequence}", cameras, images, pose_recs)


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image as PILImage

    with PILImage.open(path) as im:
        return np.asarray(im.convert("L") if im.mode in ("L", "I;16", "I") else im.convert("RGB"))


def _read_jpeg(path: Path, mono: bool = False) -> EncodedImage:
    return EncodedImage(Path(path).read_bytes(), "jpeg", mono)


# DDAD (TRI DGP) ------------------------------------------------------------------------------


def _dgp_pose(p: dict) -> np.ndarray:
    r, t = p["rotation"], p["translation"]
    return make_transform([r["qw"], r["qx"], r["qy"], r["qz"]], [t["x"], t["y"], t["z"]])


def _ddad_scene_files(root: Path, scene: Optional[str]) -> list[Path]:
    if root.is_file():
        return [root]
    own = sorted(root.glob("scene_*.json"))
    own = [p for p in own if not p.name.startswith("scene_dataset")]
    if own:
        return own
    files = sorted(root.glob("*/scene_*.json"))
    if scene:
        files = [p for p in files if p.parent.name == scene or p.stem == scene]
        if not files:
            raise FileNotFoundError(f"DDAD: scene {scene!r} not found under {root}")
    if not files:
        raise FileNotFoundError(f"DDAD: no scene_*.json under {root} or its sub-folders")
    return files[:1] if not scene else files


def ddad_recording(root: str | Path, scene: Optional[str] = None) -> Recording:
    """One DDAD scene in DGP layout (a dataset root with ``--scene`` or a scene folder).

    Datum poses are sensor -> world (pose_WS); calibration extrinsics are sensor -> vehicle
    (pose_VS, camera in the optical convention), so the ego pose at each image's own stamp is
    pose_WS @ inv(pose_VS). Stamps come from the file names (units of 1e-7 s); the ISO stamps
    in the json are wrong.
    """
    scene_file = _ddad_scene_files(Path(root), scene)[0]
    scene_dir = scene_file.parent
    doc = json.loads(scene_file.read_text())
    datums = {d["key"]: d for d in doc["data"]}
    calib_keys = {s["calibration_key"] for s in doc["samples"]}
    calibs = {}
    for key in calib_keys:
        c = json.loads((scene_dir / "calibration" / f"{key}.json").read_text())
        calibs[key] = {name: (c["extrinsics"][i], c["intrinsics"][i]) for i, name in enumerate(c["names"])}
    cameras: dict[str, CameraSpec] = {}
    images, poses = [], []
    seen = set()
    for s in doc["samples"]:
        cal = calibs[s["calibration_key"]]
        for key in s["datum_keys"]:
            d = datums[key]
            img = d["datum"].get("image")
            if img is None or key in seen:
                continue
            seen.add(key)
            name = d["id"]["name"]
            ext, intr = cal[name]
            T_ego_cam = _dgp_pose(ext)
            if name not in cameras:
                cameras[name] = CameraSpec(name, T_ego_cam)
            K = np.array([[intr["fx"], intr.get("skew", 0.0), intr["cx"]], [0, intr["fy"], intr["cy"]], [0, 0, 1.0]])
            stem = Path(img["filename"]).stem
            if not re.fullmatch(r"\d+", stem):
                raise ValueError(f"DDAD {scene_file}: image name {img['filename']!r} is not a 1e-7 s stamp")
            stamp = int(stem) * 100
            T_world_ego = _dgp_pose(img["pose"]) @ invert_transform(T_ego_cam)
            poses.append(PoseRecord(stamp, T_world_ego))
            path = scene_dir / img["filename"]
            images.append(ImageRecord(name, stamp, K, int(img["width"]), int(img["height"]),
                                      (lambda p=path: _read_jpeg(p))))
    if not images:
        raise ValueError(f"DDAD {scene_file}: no camera datums")
    # DDAD world coordinates are large (UTM-like); keep them: consumers use relative poses.
    return Recording(f"ddad:{scene_dir.name}", sorted(cameras.values(), key=lambda c: c.name), images, poses)


# nuScenes (through nuscenes-devkit) ----------------------------------------------------------


NUSCENES_CAMERA_ORDER = ["CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT",
                         "CAM_BACK_RIGHT"]


def _nusc_version(root: Path, version: Optional[str]) -> str:
    if version:
        return version
    found = sorted(p.name for p in root.glob("v1.0-*") if p.is_dir())
    if not found:
        raise FileNotFoundError(f"nuScenes: no v1.0-* table folder under {root}")
    for pref in ("v1.0-mini", "v1.0-trainval", "v1.0-test"):
        if pref in found:
            return pref
    return found[0]


def nuscenes_recording(root: str | Path, scene: Optional[str] = None, version: Optional[str] = None,
                       cameras: Optional[list[str]] = None) -> Recording:
    """One nuScenes scene: every camera sample_data (keyframes and sweeps) of all 6 cameras.

    Each sample_data has its own ego pose (cameras fire at different instants); all of them are
    emitted on /tf, time-sorted. Images are passed through as jpeg (or decoded to rgb8).
    """
    from nuscenes.nuscenes import NuScenes

    root = Path(root)
    nusc = NuScenes(version=_nusc_version(root, version), dataroot=str(root), verbose=False)
    if scene:
        matches = [s for s in nusc.scene if s["name"] == scene or s["token"] == scene]
        if not matches:
            raise ValueError(f"nuScenes: scene {scene!r} not found; have {[s['name'] for s in nusc.scene][:20]}")
        sc = matches[0]
    else:
        sc = nusc.scene[0]
        if len(nusc.scene) > 1:
            log.info("nuScenes: %d scenes, converting the first (%s); pick one with --scene", len(nusc.scene), sc["name"])
    first = nusc.get("sample", sc["first_sample_token"])
    channels = [ch for ch in first["data"] if nusc.get("sample_data", first["data"][ch])["sensor_modality"] == "camera"]
    if cameras:
        channels = [ch for ch in channels if ch.lower() in {c.lower() for c in cameras}]
    cam_specs, images, poses = [], [], {}
    order = {c: i for i, c in enumerate(NUSCENES_CAMERA_ORDER)}
    for ch in sorted(channels, key=lambda c: (order.get(c, len(order)), c)):
        sd = nusc.get("sample_data", first["data"][ch])
        while sd["prev"]:
            sd = nusc.get("sample_data", sd["prev"])
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        cam_specs.append(CameraSpec(ch, make_transform(cs["rotation"], cs["translation"])))
        while True:
            cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
            ep = nusc.get("ego_pose", sd["ego_pose_token"])
            stamp = int(sd["timestamp"]) * 1000
            poses[stamp] = PoseRecord(stamp, make_transform(ep["rotation"], ep["translation"]))
            path = root / sd["filename"]
            images.append(ImageRecord(ch, stamp, np.array(cs["camera_intrinsic"], dtype=np.float64),
                                      int(sd["width"]), int(sd["height"]), (lambda p=path: _read_jpeg(p))))
            if not sd["next"]:
                break
            sd = nusc.get("sample_data", sd["next"])
    if not images:
        raise ValueError(f"nuScenes scene {sc['name']}: no camera sample_data")
    rec = Recording(f"nuscenes:{sc['name']}", cam_specs, images, sorted(poses.values(), key=lambda p: p.stamp_ns))
    rec.info["scene"] = sc["name"]
    return rec


SOURCES = ("nuscenes", "kitti", "ddad", "synthetic")


def load_recording(kind: str, src: str | Path | None, scene: Optional[str] = None,
                   cameras: Optional[list[str]] = None) -> Recording:
    """Describe dataset `src` of type `kind` (one of SOURCES) as a Recording."""
    if kind == "nuscenes":
        rec = nuscenes_recording(src, scene=scene, cameras=cameras)
    elif kind == "kitti":
        rec = kitti_odometry_recording(src, sequence=scene or "00")
    elif kind == "ddad":
        rec = ddad_recording(src, scene=scene)
    elif kind == "synthetic":
        rec = synthetic_recording(None if src is None else str(src), cameras=cameras)
    else:
        raise ValueError(f"--from must be one of {SOURCES}, got {kind!r}")
    return rec.select_cameras(cameras)


def convert(kind: str, src, out, storage: str = "mcap", compressed: bool = False, cameras=None,
            scene: Optional[str] = None, overwrite: bool = False, progress: bool = False) -> dict:
    """Convert dataset `src` to a rosbag2 at `out`; returns {topic: message count}."""
    rec = load_recording(kind, src, scene=scene, cameras=cameras)
    return write_recording(rec, out, storage=storage, compressed=compressed, overwrite=overwrite, progress=progress)
