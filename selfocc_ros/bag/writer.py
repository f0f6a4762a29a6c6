"""Write a camera recording (images, camera_info, /tf, /tf_static) as a rosbag2 with `rosbags`.

No rclpy here: messages are built from the `rosbags` typestore and serialized to CDR, so a
bag can be written on a machine without ROS. The bag is written into ``<out>.partial/`` and
renamed onto ``<out>`` when complete, so a killed conversion never leaves a bag that looks
finished (``metadata.yaml`` is written last by rosbags, and the rename is atomic).

Conventions (REP 103/105): ``odom -> base_link`` on /tf at every ego pose, ``base_link ->
<camera>_optical_frame`` on /tf_static (offered with transient_local durability, i.e. latched).
"""

from __future__ import annotations

import io
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from selfocc_core.geometry.transforms import matrix_to_quaternion

log = logging.getLogger(__name__)

#: Message definitions are identical in Humble/Jazzy/Kilted for every type written here.
TYPESTORE = get_typestore(Stores.ROS2_JAZZY)

#: rosbag2 metadata version. 8 stores offered_qos_profiles as a YAML string, which every
#: rosbag2 from Humble to Kilted parses; 9 (Kilted's default) is not readable by Humble.
BAG_VERSION = 8

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"

_ZERO = QosTime(0, 0)
QOS_SENSOR = Qos(QosHistory.KEEP_LAST, 10, QosReliability.RELIABLE, QosDurability.VOLATILE,
                 _ZERO, _ZERO, QosLiveliness.AUTOMATIC, _ZERO, False)
#: What tf2_ros.StaticTransformBroadcaster offers: depth 1, reliable, transient_local (latched).
QOS_LATCHED = Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL,
                  _ZERO, _ZERO, QosLiveliness.AUTOMATIC, _ZERO, False)
QOS_TF = Qos(QosHistory.KEEP_LAST, 100, QosReliability.RELIABLE, QosDurability.VOLATILE,
             _ZERO, _ZERO, QosLiveliness.AUTOMATIC, _ZERO, False)


@dataclass
class EncodedImage:
    """An already-encoded image file (jpeg/png bytes), passed through with --compressed."""

    data: bytes
    format: str  # "jpeg" | "png"
    mono: bool = False


def optical_frame_id(camera: str) -> str:
    """``CAM_FRONT`` -> ``cam_front_optical_frame`` (REP 103 optical frame name)."""
    return f"{camera.strip('/').replace('/', '_').lower()}_optical_frame"


def _stamp(stamp_ns: int):
    Time = TYPESTORE.types["builtin_interfaces/msg/Time"]
    return Time(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000))


def _header(stamp_ns: int, frame_id: str):
    return TYPESTORE.types["std_msgs/msg/Header"](stamp=_stamp(stamp_ns), frame_id=frame_id)


def image_msg(pixels: np.ndarray, stamp_ns: int, frame_id: str):
    """uint8 ``[H, W, 3]`` RGB -> rgb8 Image, ``[H, W]`` grey -> mono8 Image."""
    pixels = np.ascontiguousarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] != 3):
        raise ValueError(f"image_msg: expected uint8 [H, W, 3] or [H, W], got {pixels.dtype} {pixels.shape}")
    h, w = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else 3
    return TYPESTORE.types[IMAGE](
        header=_header(stamp_ns, frame_id), height=h, width=w,
        encoding="mono8" if channels == 1 else "rgb8", is_bigendian=0, step=w * channels,
        data=pixels.reshape(-1),
    )


def compressed_image_msg(image: np.ndarray | EncodedImage, stamp_ns: int, frame_id: str, quality: int = 95):
    """CompressedImage; jpeg/png bytes are passed through, arrays are jpeg-encoded.

    The format string follows image_transport's compressed plugin: ``"rgb8; jpeg compressed bgr8"``.
    """
    if isinstance(image, EncodedImage):
        data, fmt, mono = image.data, image.format, image.mono
    else:
        from PIL import Image as PILImage

        mono = image.ndim == 2
        buf = io.BytesIO()
        PILImage.fromarray(np.ascontiguousarray(image)).save(buf, format="JPEG", quality=quality)
        data, fmt = buf.getvalue(), "jpeg"
    encoding = "mono8" if mono else "rgb8"
    fmt_str = f"{encoding}; {fmt} compressed {'mono8' if mono else 'bgr8'}"
    return TYPESTORE.types[COMPRESSED_IMAGE](
        header=_header(stamp_ns, frame_id), format=fmt_str, data=np.frombuffer(data, dtype=np.uint8)
    )


def camera_info_msg(K: np.ndarray, width: int, height: int, stamp_ns: int, frame_id: str):
    """CameraInfo for a rectified pinhole camera (no distortion): k = K, p = [K | 0]."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3) or not np.all(np.isfinite(K)):
        raise ValueError(f"camera_info_msg: K must be a finite 3x3 matrix, got {K!r}")
    P = np.zeros((3, 4))
    P[:, :3] = K
    RegionOfInterest = TYPESTORE.types["sensor_msgs/msg/RegionOfInterest"]
    return TYPESTORE.types[CAMERA_INFO](
        header=_header(stamp_ns, frame_id), height=int(height), width=int(width),
        distortion_model="plumb_bob", d=np.zeros(5), k=K.reshape(-1).copy(), r=np.eye(3).reshape(-1),
        p=P.reshape(-1), binning_x=0, binning_y=0,
        roi=RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    )


def transform_stamped(T_parent_child: np.ndarray, stamp_ns: int, parent: str, child: str):
    """geometry_msgs/TransformStamped from a 4x4 rigid transform (child frame -> parent frame)."""
    T = np.asarray(T_parent_child, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise ValueError(f"transform {parent} -> {child}: expected a finite 4x4 matrix, got {T!r}")
    w, x, y, z = matrix_to_quaternion(T[:3, :3])
    t = TYPESTORE.types
    return t["geometry_msgs/msg/TransformStamped"](
        header=_header(stamp_ns, parent), child_frame_id=child,
        transform=t["geometry_msgs/msg/Transform"](
            translation=t["geometry_msgs/msg/Vector3"](x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
            rotation=t["geometry_msgs/msg/Quaternion"](x=float(x), y=float(y), z=float(z), w=float(w)),
        ),
    )


def tf_message(transforms: list):
    return TYPESTORE.types[TF_MESSAGE](transforms=list(transforms))


class AtomicBagWriter:
    """rosbags Writer that writes into ``<out>.partial/`` and renames onto ``<out>`` on success.

    Usage::

        with AtomicBagWriter(out, storage="mcap") as bag:
            bag.write("/tf", TF_MESSAGE, stamp_ns, tf_message([...]))

    Topics are registered on first write (``qos`` applies then). On an exception the partial
    folder is left for inspection; it has no metadata.yaml, so it never looks complete.
    """

    def __init__(self, out: str | Path, storage: str = "mcap", overwrite: bool = False):
        self.out = Path(out)
        if storage not in ("mcap", "sqlite3"):
            raise ValueError(f"--storage must be 'mcap' or 'sqlite3', got {storage!r}")
        if self.out.exists() and not overwrite:
            raise FileExistsError(f"{self.out} exists already; choose another --out or remove it")
        self.overwrite = overwrite
        self.partial = self.out.with_name(self.out.name + ".partial")
        self.storage = storage
        self._writer: Writer | None = None
        self._connections: dict[str, object] = {}
        self.counts: dict[str, int] = {}
        #: written into metadata.yaml custom_data (e.g. source dataset, time offset)
        self.custom_data: dict[str, str] = {"converter": "selfocc bag convert"}

    def __enter__(self) -> "AtomicBagWriter":
        if self.partial.exists():
            log.warning("removing stale partial bag %s", self.partial)
            shutil.rmtree(self.partial)
        self.partial.mkdir(parents=True)
        # The storage file is named after the final bag (<name>/<name>_0.mcap style naming
        # is rosbag2's; rosbags names it <name>.mcap), so write into partial/<name>.
        plugin = StoragePlugin.MCAP if self.storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.partial / self.out.name, version=BAG_VERSION, storage_plugin=plugin)
        self._writer.open()
        return self

    def declare(self, topic: str, msgtype: str, qos: Qos = QOS_SENSOR):
        """Register a topic now (topics are listed in metadata.yaml in declaration order)."""
        assert self._writer is not None, "AtomicBagWriter used outside `with`"
        conn = self._connections.get(topic)
        if conn is None:
            conn = self._writer.add_connection(topic, msgtype, typestore=TYPESTORE, offered_qos_profiles=[qos])
            self._connections[topic] = conn
            self.counts[topic] = 0
        return conn

    def write(self, topic: str, msgtype: str, stamp_ns: int, msg, qos: Qos = QOS_SENSOR) -> None:
        conn = self.declare(topic, msgtype, qos)
        self._writer.write(conn, int(stamp_ns), TYPESTORE.serialize_cdr(msg, msgtype))
        self.counts[topic] += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        writer, self._writer = self._writer, None
        if exc_type is not None:
            if writer is not None and writer.storage is not None:
                writer.abort()
            log.error("conversion failed; partial output left in %s", self.partial)
            return
        for k, v in self.custom_data.items():
            writer.set_custom_data(k, str(v))
        writer.close()
        if self.out.exists() and self.overwrite:
            shutil.rmtree(self.out)
        os.replace(self.partial / self.out.name, self.out)
        self.partial.rmdir()
