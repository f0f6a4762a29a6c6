"""Train from a rosbag2 recording: camera images + camera_info + TF -> `Sample`s.

Pure Python (the `rosbags` library), no rclpy, so the core library never needs ROS.

How a recording becomes samples:

1. One scan over the bag indexes every image message per camera (header stamp, encoding),
   every camera_info and every TF message. A camera is an image topic's namespace
   (``/CAM_FRONT/image_raw`` and ``/CAM_FRONT/image_raw/compressed`` -> camera ``CAM_FRONT``,
   intrinsics from ``/CAM_FRONT/camera_info``).
2. Cameras are grouped into frames by nearest header stamp: the camera with the fewest images
   is the reference; each other camera contributes its image nearest in time within ``slop``
   (default: half the shortest camera period), else the frame is skipped. So cameras at
   different rates and dropped frames are handled.
3. Poses come from a small TF buffer (`TransformTimeline`): /tf_static is chained into
   ``T_ego_cam``; /tf is interpolated (lerp + slerp) at every image's own stamp. The reference
   ego pose is taken at the reference camera's stamp and each camera's own ego motion is
   folded into its ``T_ego_cam`` (as the Sample schema asks). A stamp outside the /tf data,
   or inside a gap longer than ``max_tf_gap``, cannot be posed: that frame is skipped.
4. Context frames are chosen by ego distance (`data/context.py`).

Everything skipped is counted in `RosbagDataset.summary` and logged in one line. A truncated
MCAP file (a recording killed before its index was written) is read by a sequential scan of
its complete records; a message whose bytes do not deserialize is skipped and counted.
"""

from __future__ import annotations

import io
import logging
import os
import struct
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from selfocc_core.data.config import DataConfig
from selfocc_core.data.context import context_for_sequence
from selfocc_core.data.images import resize_image
from selfocc_core.data.sample import Frame, Sample
from selfocc_core.geometry.camera import scale_intrinsics
from selfocc_core.geometry.transforms import invert_transform, make_transform, matrix_to_quaternion, slerp_quaternion

log = logging.getLogger(__name__)

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"

#: Raw encodings we decode, -> (channels, bytes per channel).
RAW_ENCODINGS = {
    "rgb8": (3, 1), "bgr8": (3, 1), "rgba8": (4, 1), "bgra8": (4, 1), "mono8": (1, 1), "8UC1": (1, 1),
    "8UC3": (3, 1), "mono16": (1, 2), "16UC1": (1, 2),
}
COMPRESSED_FORMATS = ("jpeg", "jpg", "png")
#: metadata.yaml custom_data key (written by `selfocc bag convert`): JSON {topic namespace: camera name}
CAMERA_NAMES_KEY = "selfocc_camera_names"


def bag_camera_names(path: Path) -> dict[str, str]:
    """{namespace: camera name} from a bag's metadata.yaml custom_data (empty if absent/unreadable)."""
    import json

    import yaml

    meta = Path(path) / "metadata.yaml"
    if not meta.is_file():
        return {}
    try:
        info = yaml.safe_load(meta.read_text())["rosbag2_bagfile_information"]
        names = json.loads((info.get("custom_data") or {}).get(CAMERA_NAMES_KEY, "{}"))
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as e:
        log.warning("%s: ignoring unreadable custom_data camera names (%s)", meta, e)
        return {}
    return {str(k): str(v) for k, v in names.items()} if isinstance(names, dict) else {}


def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY)


# ---------------------------------------------------------------------------------------------
# Bag access: rosbags for intact bags, a sequential scan for a truncated MCAP file


class BagSource:
    """Uniform message access: ``topics`` {topic: msgtype}, ``messages()``, ``fetch()``."""

    topics: dict[str, str]
    recovered: bool = False

    def messages(self) -> Iterator[tuple[str, int, bytes]]:
        """(topic, log time ns, CDR bytes) for every message, in storage order."""
        raise NotImplementedError

    def fetch(self, topic: str, log_ns: int, nth: int) -> bytes:
        """The `nth` message of `topic` logged at `log_ns`."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class _RosbagsSource(BagSource):
    def __init__(self, path: Path):
        from rosbags.rosbag2 import Reader

        self.path = path
        self.reader = Reader(path)
        self.reader.open()
        self.topics = {c.topic: c.msgtype for c in self.reader.connections}
        self._conns = defaultdict(list)
        for c in self.reader.connections:
            self._conns[c.topic].append(c)

    def messages(self):
        for conn, t, raw in self.reader.messages():
            yield conn.topic, t, raw

    def fetch(self, topic, log_ns, nth):
        for i, (_, _, raw) in enumerate(self.reader.messages(self._conns[topic], start=log_ns, stop=log_ns + 1)):
            if i == nth:
                return bytes(raw)
        raise KeyError(f"{self.path}: message {nth} of {topic} at {log_ns} ns not found")

    def close(self):
        self.reader.close()


_MCAP_MAGIC = b"\x89MCAP0\r\n"


class _McapScanSource(BagSource):
    """Reads the complete records of an MCAP file front to back, stopping at a truncated one.

    Used when the file's summary/footer is missing (a recording or conversion killed midway).
    Message positions are kept so `fetch` can seek; compressed chunks are re-read whole.
    """

    recovered = True

    def __init__(self, path: Path):
        self.path = path
        self.topics: dict[str, str] = {}
        self._index: dict[tuple[str, int], list] = defaultdict(list)
        self._entries: list[tuple[str, int, tuple]] = []
        self.stop_reason = ""
        self._scan()

    @staticmethod
    def _string(buf: bytes, off: int) -> tuple[str, int]:
        (n,) = struct.unpack_from("<I", buf, off)
        return buf[off + 4: off + 4 + n].decode(), off + 4 + n

    def _scan(self) -> None:
        data = self.path.read_bytes() if self.path.stat().st_size < (1 << 31) else None
        if data is None:
            raise ValueError(f"{self.path}: too large to recover by scanning")
        if not data.startswith(_MCAP_MAGIC):
            raise ValueError(f"{self.path}: not an MCAP file (bad magic)")
        schemas: dict[int, str] = {}
        channels: dict[int, str] = {}
        self._records(data, len(_MCAP_MAGIC), len(data), None, schemas, channels)

    def _records(self, buf: bytes, off: int, end: int, chunk: Optional[tuple], schemas, channels) -> None:
        while off < end:
            if off + 9 > end:
                self.stop_reason = f"truncated record header at byte {off}"
                return
            op = buf[off]
            (length,) = struct.unpack_from("<Q", buf, off + 1)
            body = off + 9
            if body + length > end:
                self.stop_reason = f"truncated record (opcode 0x{op:02x}) at byte {off}"
                return
            if op == 0x03:  # Schema
                (sid,) = struct.unpack_from("<H", buf, body)
                name, _ = self._string(buf, body + 2)
                schemas[sid] = name
            elif op == 0x04:  # Channel
                cid, sid = struct.unpack_from("<HH", buf, body)
                topic, _ = self._string(buf, body + 4)
                channels[cid] = topic
                self.topics[topic] = schemas.get(sid, "")
            elif op == 0x05:  # Message
                cid, _seq, log_time, _pub = struct.unpack_from("<HIQQ", buf, body)
                start, stop = body + 22, body + length
                topic = channels.get(cid)
                if topic is not None:
                    where = ("file", start, stop) if chunk is None else ("chunk", chunk, start, stop)
                    key = (topic, log_time)
                    self._entries.append((topic, log_time, where))
                    self._index[key].append(where)
            elif op == 0x06:  # Chunk
                _s, _e, usize, _crc = struct.unpack_from("<QQQI", buf, body)
                comp, p = self._string(buf, body + 28)
                (csize,) = struct.unpack_from("<Q", buf, p)
                p += 8
                if comp:
                    inner = self._decompress(buf[p: p + csize], comp, usize)
                    self._records(inner, 0, len(inner), (off, comp), schemas, channels)
                else:
                    self._records(buf, p, p + csize, None, schemas, channels)
            elif op == 0x02:  # Footer
                return
            off = body + length

    @staticmethod
    def _decompress(data: bytes, comp: str, usize: int) -> bytes:
        if comp == "zstd":
            try:
                from compression import zstd  # Python >= 3.14
            except ImportError:
                from backports import zstd
            return zstd.decompress(data)
        if comp == "lz4":
            import lz4.frame

            return lz4.frame.decompress(data)
        raise ValueError(f"unsupported MCAP chunk compression {comp!r}")

    def _read(self, where) -> bytes:
        if where[0] == "file":
            with open(self.path, "rb") as f:
                f.seek(where[1])
                return f.read(where[2] - where[1])
        _, (chunk_off, comp), start, stop = where
        with open(self.path, "rb") as f:
            f.seek(chunk_off + 9)
            head = f.read(28 + 4)
            (n,) = struct.unpack_from("<I", head, 28)
            f.seek(chunk_off + 9 + 28 + 4 + n)
            (csize,) = struct.unpack("<Q", f.read(8))
            inner = self._decompress(f.read(csize), comp, 0)
        return inner[start:stop]

    def messages(self):
        for topic, t, where in self._entries:
            yield topic, t, self._read(where)

    def fetch(self, topic, log_ns, nth):
        return self._read(self._index[(topic, log_ns)][nth])


def open_bag(path: str | Path) -> BagSource:
    """Open a rosbag2 folder (or a bare .mcap/.db3 file).

    A folder or .mcap whose index cannot be read (a truncated MCAP) is recovered by scanning;
    anything else unreadable raises ValueError naming the file and the problem.
    """
    from rosbags.rosbag2 import ReaderError

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"rosbag not found: {path}")
    mcaps = [path] if path.suffix == ".mcap" else sorted(path.glob("*.mcap")) if path.is_dir() else []
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        if len(mcaps) == 1:
            log.warning("%s has no metadata.yaml (an unfinished recording?); reading %s directly", path, mcaps[0])
            path = mcaps[0]
        else:
            dbs = sorted(path.glob("*.db3"))
            if len(dbs) == 1:
                log.warning("%s has no metadata.yaml; reading %s directly", path, dbs[0])
                path = dbs[0]
            else:
                raise ValueError(f"{path}: no metadata.yaml and no single .mcap/.db3 file: not a rosbag2 folder")
    try:
        return _RosbagsSource(path)
    except (ReaderError, struct.error, EOFError, OSError, ValueError, KeyError, IndexError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        if len(mcaps) == 1:
            src = _McapScanSource(mcaps[0])
            n = len(src._entries)
            log.warning(
                "%s: MCAP index unreadable (%s: %s), file truncated? Recovered %d complete messages by "
                "scanning (%s)", mcaps[0], type(e).__name__, e, n, src.stop_reason or "end of file")
            if n == 0:
                raise ValueError(f"{mcaps[0]}: unreadable bag ({e}) and no complete message could be recovered") from e
            return src
        raise ValueError(f"{path}: cannot read rosbag ({type(e).__name__}: {e})") from e


# ---------------------------------------------------------------------------------------------
# TF buffer


class TransformTimeline:
    """A TF tree over a whole recording: static edges plus time series of dynamic edges.

    ``lookup(target, source, t_ns)`` returns ``T_target_source`` at time t (4x4 float64),
    interpolating each dynamic edge (translation lerp, rotation slerp) and raising LookupError
    when t is outside an edge's data (beyond ``tolerance_ns``) or inside a gap > ``max_gap_ns``.
    """

    def __init__(self, max_gap_ns: int = 500_000_000, tolerance_ns: int = 5_000_000):
        self.max_gap_ns = int(max_gap_ns)
        self.tolerance_ns = int(tolerance_ns)
        self.static: dict[str, tuple[str, np.ndarray]] = {}  # child -> (parent, T_parent_child)
        self._dyn: dict[str, tuple[str, list]] = {}  # child -> (parent, [(t, T)])
        self._frozen: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def add(self, parent: str, child: str, t_ns: int, T_parent_child: np.ndarray, static: bool) -> None:
        parent, child = parent.lstrip("/"), child.lstrip("/")
        if static:
            self.static[child] = (parent, T_parent_child)
            return
        entry = self._dyn.setdefault(child, (parent, []))
        if entry[0] != parent:
            log.warning("TF: %s re-parented from %s to %s; keeping %s", child, entry[0], parent, entry[0])
            return
        entry[1].append((int(t_ns), T_parent_child))
        self._frozen.pop(child, None)

    def parent(self, frame: str) -> Optional[str]:
        if frame in self.static:
            return self.static[frame][0]
        if frame in self._dyn:
            return self._dyn[frame][0]
        return None

    def is_dynamic(self, frame: str) -> bool:
        return frame in self._dyn and frame not in self.static

    def frames(self) -> set[str]:
        out = set(self.static) | set(self._dyn)
        out |= {p for p, _ in self.static.values()} | {p for p, _ in self._dyn.values()}
        return out

    def dynamic_range(self, frame: str) -> tuple[int, int]:
        t, _, _ = self._series(frame)
        return int(t[0]), int(t[-1])

    def _series(self, child: str):
        if child not in self._frozen:
            _, items = self._dyn[child]
            items.sort(key=lambda x: x[0])
            t = np.array([x[0] for x in items], dtype=np.int64)
            trans = np.stack([x[1][:3, 3] for x in items])
            quats = [matrix_to_quaternion(x[1][:3, :3]) for x in items]
            self._frozen[child] = (t, trans, quats)
        return self._frozen[child]

    def _edge(self, child: str, t_ns: int) -> np.ndarray:
        if child in self.static:
            return self.static[child][1]
        t, trans, quats = self._series(child)
        parent = self._dyn[child][0]
        if t_ns < t[0] - self.tolerance_ns or t_ns > t[-1] + self.tolerance_ns:
            raise LookupError(f"TF {parent} -> {child}: {t_ns} ns is outside the recorded range [{t[0]}, {t[-1]}]")
        j = int(np.searchsorted(t, t_ns))
        if j == 0:
            return make_transform(quats[0], trans[0])
        if j >= len(t):
            return make_transform(quats[-1], trans[-1])
        if t[j] == t_ns:
            return make_transform(quats[j], trans[j])
        t0, t1 = t[j - 1], t[j]
        if t1 - t0 > self.max_gap_ns:
            raise LookupError(f"TF {parent} -> {child}: gap of {(t1 - t0) / 1e9:.3f} s around {t_ns} ns")
        a = (t_ns - t0) / (t1 - t0)
        q = slerp_quaternion(quats[j - 1], quats[j], a)
        return make_transform(q, (1 - a) * trans[j - 1] + a * trans[j])

    def _to_root(self, frame: str, t_ns: int) -> tuple[str, np.ndarray]:
        T = np.eye(4)
        seen = set()
        while (p := self.parent(frame)) is not None:
            if frame in seen:
                raise LookupError(f"TF: loop through {frame}")
            seen.add(frame)
            T = self._edge(frame, t_ns) @ T
            frame = p
        return frame, T

    def lookup(self, target: str, source: str, t_ns: int) -> np.ndarray:
        r1, T_r_source = self._to_root(source, t_ns)
        r2, T_r_target = self._to_root(target, t_ns)
        if r1 != r2:
            raise LookupError(f"TF: {source} and {target} are not connected (roots {r1}, {r2})")
        return invert_transform(T_r_target) @ T_r_source


def _transform_from_msg(tr) -> np.ndarray:
    q, p = tr.transform.rotation, tr.transform.translation
    return make_transform([q.w, q.x, q.y, q.z], [p.x, p.y, p.z])


# ---------------------------------------------------------------------------------------------
# Image decoding


def decode_image_msg(msgtype: str, msg) -> np.ndarray:
    """sensor_msgs Image / CompressedImage (rosbags dataclass) -> uint8 ``[H, W, 3]`` RGB.

    Raises ValueError for an encoding/format it cannot decode or data of the wrong size.
    """
    if msgtype == COMPRESSED_IMAGE:
        from PIL import Image as PILImage, UnidentifiedImageError

        try:
            with PILImage.open(io.BytesIO(bytes(msg.data))) as im:
                return np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"cannot decode CompressedImage (format {msg.format!r}): {e}") from e
    enc = msg.encoding
    if enc not in RAW_ENCODINGS:
        raise ValueError(f"unsupported image encoding {enc!r} (supported: {sorted(RAW_ENCODINGS)})")
    ch, nbytes = RAW_ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.asarray(msg.data, dtype=np.uint8)
    if step < w * ch * nbytes or data.size < h * step:
        raise ValueError(f"image {w}x{h} {enc}: {data.size} bytes with step {step} is too small")
    rows = data[: h * step].reshape(h, step)[:, : w * ch * nbytes]
    if nbytes == 2:
        dt = ">u2" if msg.is_bigendian else "<u2"
        px = rows.copy().view(dt).reshape(h, w).astype(np.float32)
        px = (px * (255.0 / max(float(px.max()), 1.0))).round().astype(np.uint8)[..., None]
    else:
        px = rows.reshape(h, w, ch)
    if ch == 1:
        return np.repeat(px, 3, axis=-1)
    if enc in ("bgr8", "bgra8", "8UC3"):
        px = px[..., [2, 1, 0]]
    return np.ascontiguousarray(px[..., :3])


def _image_ok(msgtype: str, msg) -> bool:
    if msgtype == COMPRESSED_IMAGE:
        fmt = msg.format.lower()
        return fmt == "" or (any(k in fmt for k in COMPRESSED_FORMATS) and "compresseddepth" not in fmt)
    return msg.encoding in RAW_ENCODINGS


def camera_namespace(topic: str) -> str:
    """The camera a topic belongs to: ``/CAM_FRONT/image_raw/compressed`` and
    ``/CAM_FRONT/camera_info`` -> ``/CAM_FRONT``; a bare ``/image_2`` stays ``/image_2``."""
    t = topic.rstrip("/")
    if t.endswith("/compressed"):
        t = t[: -len("/compressed")]
    head, _, tail = t.rpartition("/")
    return head if head and (tail.startswith("image") or tail == "camera_info") else t


# ---------------------------------------------------------------------------------------------
# Dataset


@dataclass
class _Img:
    topic: str
    log_ns: int
    nth: int
    stamp_ns: int
    frame_id: str


@dataclass
class _Camera:
    name: str
    namespace: str
    frame_id: str = ""
    images: list[_Img] = field(default_factory=list)
    infos: list[tuple[int, np.ndarray, int, int]] = field(default_factory=list)  # (stamp, K, w, h)


@dataclass
class _BagFrame:
    stamp_ns: int
    images: list[_Img]  # one per camera, in camera order
    Ks: list[tuple[np.ndarray, int, int]]  # (K, camera_info width, height) per camera
    T_world_ego: np.ndarray
    T_ego_cam: list[np.ndarray]


class RosbagDataset(Dataset):
    """A rosbag2 recording (images + camera_info + TF) as `Sample`s.

    path:        bag folder (metadata.yaml) or a bare .mcap / .db3 file
    cfg:         DataConfig (image size, cameras, context offsets and distances)
    world_frame: fixed frame (default: the root of the TF tree, e.g. "odom"/"map")
    ego_frame:   vehicle frame (default: "base_link" if present, else the first frame above the
                 cameras that moves on /tf)
    slop:        seconds within which other cameras' images join the reference camera's frame
                 (default: half the shortest median camera period)
    max_tf_gap:  seconds; /tf gaps longer than this are not interpolated across

    After construction `summary` holds what was read and skipped (also logged in one line).
    """

    def __init__(self, path: str | Path, cfg: DataConfig, *, world_frame: Optional[str] = None,
                 ego_frame: Optional[str] = None, slop: Optional[float] = None, max_tf_gap: float = 0.5):
        self.path = Path(path)
        self.cfg = cfg
        self._ts = _typestore()
        self._source: Optional[BagSource] = None
        self._pid = None
        source = open_bag(self.path)
        self._source_kind = type(source)
        self.summary: dict = {
            "bag": str(self.path), "recovered_by_scan": bool(source.recovered), "frames": 0, "images": {},
            "skipped": Counter(), "cameras_without_camera_info": [], "cameras_ignored": [],
        }
        try:
            cams, tf = self._index(source, max_tf_gap)
        finally:
            if isinstance(source, _McapScanSource):
                self._source, self._pid = source, os.getpid()  # keep its (costly) index
            else:
                source.close()
        self._cameras = self._select_cameras(cams)
        self._frames = self._build_frames(tf, slop, world_frame, ego_frame)
        self._items = self._choose_context()
        s = self.summary
        s["frames"] = len(self._items)
        s["skipped"] = dict(s["skipped"])
        log.info("rosbag %s: %d samples from %d posed frames, cameras %s; skipped %s%s%s", self.path,
                 len(self._items), len(self._frames), [c.name for c in self._cameras], s["skipped"] or "nothing",
                 f"; no camera_info for {s['cameras_without_camera_info']}" if s["cameras_without_camera_info"] else "",
                 "; recovered from a truncated file" if s["recovered_by_scan"] else "")
        if not self._items:
            raise ValueError(f"rosbag {self.path}: no usable samples ({self._why_empty()})")

    # -- indexing -------------------------------------------------------------------------

    def _index(self, source: BagSource, max_tf_gap: float):
        ts = self._ts
        skipped = self.summary["skipped"]
        cams: dict[str, _Camera] = {}
        infos: dict[str, list] = defaultdict(list)
        tf = TransformTimeline(max_gap_ns=int(max_tf_gap * 1e9))
        seen: Counter = Counter()
        wanted = {t: m for t, m in source.topics.items() if m in (IMAGE, COMPRESSED_IMAGE, CAMERA_INFO, TF_MESSAGE)}
        aliases = bag_camera_names(self.path) if self.path.is_dir() else {}
        try:
            for topic, log_ns, raw in source.messages():
                msgtype = wanted.get(topic)
                if msgtype is None:
                    continue
                nth = seen[(topic, log_ns)]
                seen[(topic, log_ns)] += 1
                try:
                    msg = ts.deserialize_cdr(raw, msgtype)
                except Exception:  # noqa: BLE001 - any garbage in a message is "corrupt", not fatal
                    skipped["corrupt_messages"] += 1
                    continue
                if msgtype == TF_MESSAGE:
                    static = "tf_static" in topic
                    for tr in msg.transforms:
                        stamp = tr.header.stamp.sec * 1_000_000_000 + tr.header.stamp.nanosec
                        try:
                            T = _transform_from_msg(tr)
                        except ValueError:
                            skipped["invalid_transforms"] += 1
                            continue
                        tf.add(tr.header.frame_id, tr.child_frame_id, stamp, T, static)
                    continue
                stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                ns = camera_namespace(topic)
                if msgtype == CAMERA_INFO:
                    K = np.array(msg.k, dtype=np.float64).reshape(3, 3)
                    if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
                        skipped["invalid_camera_info"] += 1
                        continue
                    infos[ns].append((stamp, K, int(msg.width), int(msg.height)))
                    continue
                if not _image_ok(msgtype, msg):
                    skipped["unknown_encoding_images"] += 1
                    what = msg.format if msgtype == COMPRESSED_IMAGE else msg.encoding
                    if skipped[f"_warned:{topic}"] == 0:
                        log.warning("rosbag %s: %s has image encoding %r that cannot be decoded; skipping those",
                                    self.path, topic, what)
                    skipped[f"_warned:{topic}"] += 1
                    continue
                if ns not in cams:
                    cams[ns] = _Camera(aliases.get(ns) or ns.rsplit("/", 1)[-1] or ns, ns, msg.header.frame_id)
                cam = cams[ns]
                cam.images.append(_Img(topic, log_ns, nth, stamp, msg.header.frame_id.lstrip("/")))
        except Exception as e:  # noqa: BLE001 - storage errors mid-bag: keep what was read
            from rosbags.rosbag2 import ReaderError

            if not isinstance(e, (ReaderError, OSError, struct.error, ValueError)) and "apsw" not in type(e).__module__:
                raise
            log.warning("rosbag %s: storage error after %d messages (%s: %s); using what was read before it",
                        self.path, sum(seen.values()), type(e).__name__, e)
            self.summary["storage_error"] = f"{type(e).__name__}: {e}"
        for k in [k for k in skipped if k.startswith("_warned:")]:
            del skipped[k]
        # Rig order = order of the image topics in the bag (a converter writes them in rig order).
        topic_order = {t: i for i, t in enumerate(source.topics)}
        cams = dict(sorted(cams.items(), key=lambda kv: topic_order.get(kv[1].images[0].topic, 0)))
        for ns, cam in cams.items():
            cam.infos = sorted(infos.get(ns, []), key=lambda x: x[0])
            cam.images.sort(key=lambda im: im.stamp_ns)
            self.summary["images"][cam.name] = len(cam.images)
        if not cams:
            raise ValueError(f"rosbag {self.path}: no decodable image topics (topics: {source.topics})")
        return cams, tf

    def _select_cameras(self, cams: dict[str, _Camera]) -> list[_Camera]:
        by_name: dict[str, _Camera] = {}
        for cam in cams.values():
            if not cam.infos:
                self.summary["cameras_without_camera_info"].append(cam.name)
                log.warning("rosbag %s: no camera_info for %s (expected %s/camera_info); camera left out",
                            self.path, cam.name, cam.namespace)
                continue
            by_name[cam.name] = cam
        if self.cfg.cameras:
            lower = {n.lower(): c for n, c in by_name.items()}
            lower.update({c.namespace.lower().strip("/"): c for c in by_name.values()})
            for c in by_name.values():  # "camera_gray_left" for /kitti/camera_gray_left
                lower.setdefault(c.namespace.rsplit("/", 1)[-1].lower(), c)
            missing = [n for n in self.cfg.cameras if n.lower().strip("/") not in lower]
            if missing:
                raise ValueError(
                    f"rosbag {self.path}: DataConfig.cameras {missing} not found among cameras with images "
                    f"and camera_info {sorted(by_name)} (without camera_info: {self.summary['cameras_without_camera_info']})")
            chosen = [lower[n.lower().strip("/")] for n in self.cfg.cameras]
        else:
            chosen = list(by_name.values())
        self.summary["cameras_ignored"] = sorted(set(by_name) - {c.name for c in chosen})
        if not chosen:
            raise ValueError(f"rosbag {self.path}: no camera has both images and camera_info "
                             f"(without camera_info: {self.summary['cameras_without_camera_info']})")
        return chosen

    def _resolve_frames(self, tf: TransformTimeline, world: Optional[str], ego: Optional[str]) -> tuple[str, str]:
        frames = tf.frames()
        cam_frames = [c.images[0].frame_id for c in self._cameras if c.images]
        missing = [f for f in cam_frames if f not in frames]
        if missing:
            raise LookupError(f"camera frames {missing} are not in the TF tree (frames: {sorted(frames)})")
        if ego is None:
            if "base_link" in frames:
                ego = "base_link"
            else:  # climb static edges from a camera frame until the next edge moves
                ego = cam_frames[0]
                while ego in tf.static:
                    ego = tf.static[ego][0]
        if world is None:
            world = ego
            while (p := tf.parent(world)) is not None:
                world = p
        if world == ego:
            raise LookupError(f"ego frame {ego!r} has no moving parent on /tf (no odometry recorded)")
        return world, ego

    def _build_frames(self, tf: TransformTimeline, slop: Optional[float], world, ego) -> list[_BagFrame]:
        skipped = self.summary["skipped"]
        try:
            world, ego = self._resolve_frames(tf, world, ego)
        except LookupError as e:
            self.summary["tf_error"] = str(e)
            log.warning("rosbag %s: %s", self.path, e)
            skipped["frames_without_tf"] += min(len(c.images) for c in self._cameras)
            return []
        self.summary["world_frame"], self.summary["ego_frame"] = world, ego
        cams = self._cameras
        if slop is None:
            periods = [np.median(np.diff([i.stamp_ns for i in c.images])) for c in cams if len(c.images) > 1]
            slop_ns = int(0.5 * min(periods)) if periods else 0
        else:
            slop_ns = int(slop * 1e9)
        self.summary["slop_s"] = slop_ns / 1e9
        ref = min(range(len(cams)), key=lambda i: len(cams[i].images))
        stamps = [np.array([im.stamp_ns for im in c.images], dtype=np.int64) for c in cams]
        pose_cache: dict[int, np.ndarray] = {}

        def T_world_ego_at(t):
            if t not in pose_cache:
                pose_cache[t] = tf.lookup(world, ego, t)
            return pose_cache[t]

        frames = []
        for ref_img in cams[ref].images:
            t_ref = ref_img.stamp_ns
            chosen = []
            for ci, c in enumerate(cams):
                if ci == ref:
                    chosen.append(ref_img)
                    continue
                j = int(np.searchsorted(stamps[ci], t_ref))
                cand = [k for k in (j - 1, j) if 0 <= k < len(stamps[ci])]
                k = min(cand, key=lambda k: abs(int(stamps[ci][k]) - t_ref)) if cand else None
                if k is None or abs(int(stamps[ci][k]) - t_ref) > slop_ns:
                    break
                chosen.append(c.images[k])
            if len(chosen) != len(cams):
                skipped["frames_missing_a_camera"] += 1
                continue
            try:
                T_world_ego = T_world_ego_at(t_ref)
                T_ego_world = invert_transform(T_world_ego)
                T_ego_cam = [T_ego_world @ T_world_ego_at(im.stamp_ns) @ tf.lookup(ego, im.frame_id, im.stamp_ns)
                             for im in chosen]
            except LookupError as e:
                skipped["frames_without_tf"] += 1
                log.debug("rosbag %s: frame at %d ns: %s", self.path, t_ref, e)
                continue
            Ks = []
            for c, im in zip(cams, chosen):
                infos = c.infos
                k = min(range(len(infos)), key=lambda i: abs(infos[i][0] - im.stamp_ns))
                Ks.append(infos[k][1:])
            frames.append(_BagFrame(t_ref, chosen, Ks, T_world_ego, T_ego_cam))
        return frames

    def _choose_context(self) -> list[tuple[int, dict[int, int]]]:
        if not self._frames:
            return []
        cfg = self.cfg
        pos = np.stack([f.T_world_ego[:3, 3] for f in self._frames])
        ts = np.array([f.stamp_ns for f in self._frames], dtype=np.float64) * 1e-9
        ts = ts - ts[0]
        items = context_for_sequence(pos, ts, cfg.context_offsets, cfg.min_ego_distance, cfg.max_ego_distance,
                                     cfg.max_context_time, require_all=cfg.require_context)
        dropped = len(self._frames) - len(items)
        if dropped:
            self.summary["skipped"]["frames_without_context"] += dropped
        return items

    def _why_empty(self) -> str:
        s = self.summary
        parts = [f"images per camera {s['images']}", f"skipped {dict(s['skipped'])}"]
        for key in ("tf_error", "storage_error"):
            if key in s:
                parts.append(f"{key}: {s[key]}")
        return "; ".join(parts)

    # -- access ---------------------------------------------------------------------------

    @property
    def camera_names(self) -> list[str]:
        return [c.name for c in self._cameras]

    def __len__(self) -> int:
        return len(self._items)

    def _src(self) -> BagSource:
        src = self._source
        if src is not None and (self._pid == os.getpid() or isinstance(src, _McapScanSource)):
            return src
        self._source, self._pid = open_bag(self.path), os.getpid()  # (re)open, e.g. in a DataLoader worker
        return self._source

    def __getstate__(self):
        # DataLoader workers under spawn/forkserver get a pickled copy: open storage handles and
        # the typestore's generated (de)serializers do not pickle; both are recreated on demand.
        state = dict(self.__dict__)
        state["_ts"] = None
        if not isinstance(state.get("_source"), _McapScanSource):
            state["_source"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._ts = _typestore()

    def _load(self, im: _Img) -> np.ndarray:
        src = self._src()
        msgtype = src.topics[im.topic]
        try:
            raw = src.fetch(im.topic, im.log_ns, im.nth)
            return decode_image_msg(msgtype, self._ts.deserialize_cdr(raw, msgtype))
        except (ValueError, KeyError) as e:
            raise ValueError(f"rosbag {self.path}: {im.topic} at {im.stamp_ns} ns: {e}") from e

    def _frame(self, f: _BagFrame) -> Frame:
        H, W = self.cfg.image_height, self.cfg.image_width
        images, Ks = [], []
        for im, (K, info_w, info_h) in zip(f.images, f.Ks):
            px = self._load(im)
            h, w = px.shape[:2]
            K = torch.as_tensor(K, dtype=torch.float64)
            if info_w > 0 and info_h > 0 and (info_w, info_h) != (w, h):
                K = scale_intrinsics(K, w / info_w, h / info_h)  # camera_info for another resolution
            img = torch.from_numpy(px.copy()).permute(2, 0, 1).float().div_(255.0)
            img, K_new = resize_image(img, K, H, W)
            images.append(img)
            Ks.append(K_new)
        return Frame(
            images=torch.stack(images),
            K=torch.stack(Ks).float(),
            T_ego_cam=torch.as_tensor(np.stack(f.T_ego_cam), dtype=torch.float32),
            T_world_ego=torch.as_tensor(f.T_world_ego, dtype=torch.float32),
            timestamp=f.stamp_ns * 1e-9,
            camera_names=self.camera_names,
        )

    def frame_stamps_ns(self) -> list[int]:
        """Reference stamps (ns) of the samples' input frames, in order."""
        return [self._frames[i].stamp_ns for i, _ in self._items]

    def __getitem__(self, idx: int) -> Sample:
        if not -len(self) <= idx < len(self):
            raise IndexError(f"RosbagDataset index {idx} out of range [0, {len(self)})")
        i, ctx = self._items[idx]
        f = self._frames[i]
        return Sample(
            frame=self._frame(f),
            context={o: self._frame(self._frames[j]) for o, j in ctx.items()},
            sample_id=f"{self.path.name}:{f.stamp_ns}",
        )
