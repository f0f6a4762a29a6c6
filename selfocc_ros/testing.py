"""Test and benchmark support for the occupancy node: a fixture publisher, an output collector
and a deterministic stand-in predictor. Usable in-process or as separate processes:

    python -m selfocc_ros.testing publish --frames 12 --rate 4 --cameras CAM_FRONT CAM_BACK
    python -m selfocc_ros.testing node --standin --ros-args --params-file config/occ.yaml

The publisher plays frames of the synthetic world (selfocc_core.data.synthetic.SyntheticDataset):
images + camera_info per camera, odom->base_link on /tf at each image stamp and
base_link-><camera>_optical_frame on /tf_static. ``faults`` injects bad input per frame index.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from selfocc_core.classes import FREE_LABEL
from selfocc_core.geometry.voxel_grid import VoxelGridSpec
from selfocc_ros import conversions as conv

FAULTS = ("encoding", "size", "corrupt", "tf_missing", "tf_nan", "tf_late", "silent")
"""encoding: camera 0 sends 'yuv422'; size: camera 0 image 2 px narrower than camera_info;
corrupt: camera 0 compressed payload truncated (compressed transport only); tf_missing: no
odom->base_link for the frame (lookup extrapolates); tf_nan: a NaN transform instead of the good
one; tf_late: the TF for the frame comes 0.5 s later than the images; silent: the last camera stops
sending from this frame on."""


def optical_frame(camera: str) -> str:
    return f"{camera.lower()}_optical_frame"


# ----------------------------------------------------------------------------- frames


@functools.lru_cache(maxsize=8)
def _dataset(cameras: tuple[str, ...], num_frames: int, height: int, width: int, seed: int, cache_dir: Optional[str]):
    from selfocc_core.data.synthetic import SyntheticConfig, SyntheticDataset

    return SyntheticDataset(SyntheticConfig(seed=seed, num_frames=num_frames, rig="nuscenes", cameras=list(cameras),
                                            image_height=height, image_width=width, with_gt=False,
                                            cache_dir=cache_dir))


def synthetic_frames(cameras: list[str], num_frames: int, height: int, width: int, seed: int = 0,
                     cache_dir: Optional[str] = None):
    """SyntheticDataset of the nuScenes rig restricted to ``cameras`` (no ground truth).

    One instance per argument set and process (rendered frames are kept); ``cache_dir`` also
    shares renders between processes (.npz files).
    """
    return _dataset(tuple(cameras), num_frames, height, width, seed, cache_dir)


# ----------------------------------------------------------------------------- stand-in model


@dataclass
class StandInPrediction:
    """Same fields as selfocc_core.inference.predictor.OccupancyPrediction."""

    grid: VoxelGridSpec
    occupied: torch.Tensor
    labels: torch.Tensor
    confidence: torch.Tensor
    sdf: torch.Tensor
    depth: Optional[torch.Tensor]
    camera_names: list[str] = field(default_factory=list)


class StandInPredictor:
    """A deterministic function of every Frame input (images, K, T_ego_cam, T_world_ego): lets the
    node plumbing be tested exactly without a trained model. Not a model of anything.
    """

    def __init__(self, grid: VoxelGridSpec = VoxelGridSpec(-8.0, 8.0, -8.0, 8.0, -1.0, 1.4, 0.4), delay_s: float = 0.0,
                 input_size: Optional[tuple[int, int]] = None):
        self.grid = grid
        self.delay_s = delay_s
        if input_size is not None:  # the node downscales images to it, as for a model's network input
            self.input_size = tuple(input_size)
        self.calls: list[dict] = []  # the keyword arguments of every predict call
        self.last_frame = None

    def predict(self, frame, with_depth: bool = True, depth_size=None) -> StandInPrediction:
        """``with_depth`` / ``depth_size`` as OccupancyPredictor.predict (bilinear resample of the depth)."""
        self.calls.append({"with_depth": with_depth, "depth_size": depth_size})
        self.last_frame = frame
        if self.delay_s:
            time.sleep(self.delay_s)
        centres = self.grid.centers(dtype=torch.float64)  # [X, Y, Z, 3] ego
        T = frame.T_world_ego.double()
        world = centres @ T[:3, :3].T + T[:3, 3]
        brightness = frame.images.double().mean(dim=(1, 2, 3))  # [N]
        cell = torch.floor(world[..., 0] / 2.0) + torch.floor(world[..., 1] / 2.0)
        k = torch.arange(centres.shape[2]).view(1, 1, -1)
        occupied = (torch.remainder(cell, 5) == 0) & (k < 2) | (k == 0)
        cls = torch.remainder(cell + torch.floor(brightness.sum() * 10), 16).long()
        labels = torch.where(occupied, cls, torch.full_like(cls, FREE_LABEL)).to(torch.uint8)
        confidence = torch.sigmoid(world[..., 2] + brightness.mean()).float()
        sdf = (world[..., 2] - 0.3).float()
        depth = (frame.images.double().mean(dim=1) * 10.0 + frame.T_ego_cam[:, 0, 3].double().view(-1, 1, 1)
                 + frame.K[:, 0, 0].double().view(-1, 1, 1) / 100.0).float()
        if not with_depth:
            depth = None
        elif depth_size is not None and tuple(depth_size) != tuple(depth.shape[-2:]):
            depth = torch.nn.functional.interpolate(depth[:, None], size=tuple(depth_size), mode="bilinear",
                                                    align_corners=False)[:, 0]
        return StandInPrediction(self.grid, labels != FREE_LABEL, labels, confidence, sdf, depth,
                                 list(frame.camera_names))


# ----------------------------------------------------------------------------- fixture publisher


class FixturePublisher:
    """Publishes synthetic frames on a node (created by the caller or here). Call ``publish_frame(i)``."""

    def __init__(self, node, cameras: list[str], num_frames: int = 8, height: int = 48, width: int = 88, seed: int = 0,
                 encoding: str = "rgb8", compressed: str = "", start_stamp_ns: Optional[int] = None,
                 faults: Optional[dict[int, str]] = None, cache_dir: Optional[str] = None,
                 output_size: Optional[tuple[int, int]] = None):
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

        from tf2_msgs.msg import TFMessage  # real, or the stand-in from tools/build_msgs.py

        self.node = node
        self.cameras = list(cameras)
        self.data = synthetic_frames(self.cameras, num_frames, height, width, seed, cache_dir)
        self.output_size = output_size  # publish images resized to (H, W) (K scaled), e.g. 900x1600
        self._resized: dict[int, tuple] = {}  # frame index -> (uint8 RGB, K) as published
        self._msgs: dict[tuple[int, int], object] = {}  # (frame, camera) -> raw Image message
        self.encoding, self.compressed = encoding, compressed
        self.faults = dict(faults or {})
        self.start_ns = start_stamp_ns if start_stamp_ns is not None else node.get_clock().now().nanoseconds
        self.silent_from: Optional[int] = next((i for i, f in sorted(self.faults.items()) if f == "silent"), None)
        self._TFMessage = TFMessage
        self._late_tf: list[tuple[float, object]] = []
        sensor = qos_profile_sensor_data
        self.pub_img = {c: node.create_publisher(CompressedImage if compressed else Image,
                                                 f"/{c}/image_raw" + ("/compressed" if compressed else ""), sensor)
                        for c in self.cameras}
        self.pub_info = {c: node.create_publisher(CameraInfo, f"/{c}/camera_info", sensor) for c in self.cameras}
        self.pub_tf = node.create_publisher(TFMessage, "/tf", QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        self.pub_tf_static = node.create_publisher(TFMessage, "/tf_static", QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.publish_static()

    def stamp_ns(self, i: int) -> int:
        return self.start_ns + int(round(self.data.seq.time(i) * 1e9))

    def publish_static(self) -> None:
        T = self.data.T_ego_cam.double().numpy()
        msg = self._TFMessage(transforms=[conv.matrix_to_transform_stamped(T[k], "base_link", optical_frame(c), 0)
                                          for k, c in enumerate(self.cameras)])
        self.pub_tf_static.publish(msg)

    def frame(self, i: int):
        """The published frame i (resized to output_size when set; float images made on each call)."""
        if self.output_size is None:
            return self.data.frame(i)
        from dataclasses import replace

        rgb, K = self._published(i)
        return replace(self.data.frame(i), images=torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255.0, K=K)

    def _published(self, i: int):
        """(``[N, H, W, 3] uint8`` RGB, K ``[N, 3, 3]``) of frame i as published, kept per frame
        (uint8 only: 6 x 1600x900 is 26 MB a frame, its float images 104 MB)."""
        if i not in self._resized:
            f = self.data.frame(i)
            K, imgs = f.K, f.images
            if self.output_size is not None:
                import torch.nn.functional as F

                from selfocc_core.geometry.camera import scale_intrinsics

                H, W = self.output_size
                h, w = f.image_size
                imgs = F.interpolate(imgs, size=(H, W), mode="bilinear", align_corners=False).clamp(0, 1)
                K = scale_intrinsics(K, W / w, H / h)
            rgb = (imgs.permute(0, 2, 3, 1).numpy() * 255.0 + 0.5).astype(np.uint8)
            self._resized[i] = (rgb, K)
        return self._resized[i]

    def publish_frame(self, i: int) -> int:
        """Publish TF, camera_info and images of frame i (with its faults). Returns the stamp [ns]."""
        from std_msgs.msg import Header

        fault = self.faults.get(i, "")
        stamp = self.stamp_ns(i)
        rgb, K = self._published(i)
        now = time.monotonic()
        for due, m in [x for x in self._late_tf if x[0] <= now]:
            self.pub_tf.publish(m)
        self._late_tf = [x for x in self._late_tf if x[0] > now]
        T_world_ego = self.data.frame(i).T_world_ego.double().numpy()
        tf = conv.matrix_to_transform_stamped(T_world_ego, "odom", "base_link", stamp)
        if fault == "tf_nan":
            tf.transform.translation.x = float("nan")
        if fault == "tf_late":
            self._late_tf.append((now + 0.5, self._TFMessage(transforms=[tf])))
        elif fault != "tf_missing":
            self.pub_tf.publish(self._TFMessage(transforms=[tf]))
        H, W = rgb.shape[1:3]
        for k, cam in enumerate(self.cameras):
            if self.silent_from is not None and i >= self.silent_from and k == len(self.cameras) - 1:
                continue
            header = Header(stamp=conv.ns_to_stamp(stamp), frame_id=optical_frame(cam))
            self.pub_info[cam].publish(conv.make_camera_info(K[k].double().numpy(), H, W, header))
            img = rgb[k]
            if k == 0 and fault == "size":
                img = img[:, :-2]
            if self.compressed:
                msg = conv.rgb_to_compressed(img, self.compressed, header)
                if k == 0 and fault == "corrupt":
                    msg.data = bytes(msg.data)[: len(msg.data) // 3]
            elif k == 0 and fault in ("encoding", "size"):
                msg = conv.numpy_to_image(img[..., ::-1] if self.encoding == "bgr8" else img,
                                          self.encoding if self.encoding in ("rgb8", "bgr8") else "rgb8", header)
                if fault == "encoding":
                    msg.encoding = "yuv422"
            else:  # as a camera driver with its own buffers: the pixels are not copied again per publication
                key = (i, k)
                if key not in self._msgs:
                    arr = img[..., ::-1] if self.encoding == "bgr8" else img
                    self._msgs[key] = conv.numpy_to_image(
                        arr, self.encoding if self.encoding in ("rgb8", "bgr8") else "rgb8", header)
                msg = self._msgs[key]
                msg.header = header
            self.pub_img[cam].publish(msg)
        return stamp


# ----------------------------------------------------------------------------- collector


class OutputCollector:
    """Subscribes to the node's outputs and stores them by stamp [ns]."""

    OUTPUTS = ("cloud", "markers", "grid", "depth", "diagnostics")

    def __init__(self, node, node_fqn: str = "/selfocc_occupancy", cameras: list[str] = (), outputs=OUTPUTS):
        """``outputs``: which of OUTPUTS to subscribe to (the node publishes only what has subscribers)."""
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image, PointCloud2
        from visualization_msgs.msg import MarkerArray

        unknown = set(outputs) - set(self.OUTPUTS)
        if unknown:
            raise ValueError(f"OutputCollector: unknown outputs {sorted(unknown)} (valid: {self.OUTPUTS})")
        self.node, self.outputs = node, tuple(outputs)
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.clouds: dict[int, object] = {}
        self.markers: dict[int, object] = {}
        self.grids: dict[int, object] = {}
        self.depth: dict[str, dict[int, object]] = {c: {} for c in cameras}
        self.diagnostics: list = []
        self.receive_time: dict[int, float] = {}  # monotonic, first output with that stamp
        self.receive_wall_ns: dict[int, int] = {}  # wall clock (the stamps' clock), cloud arrival
        st = conv.stamp_to_ns

        def keep(store):
            def cb(m):
                s = st(m.header.stamp) if hasattr(m, "header") else st(m.markers[-1].header.stamp)
                store[s] = m
                self.receive_time.setdefault(s, time.monotonic())
            return cb

        def keep_cloud(m):
            self.receive_wall_ns.setdefault(st(m.header.stamp), time.time_ns())
            keep(self.clouds)(m)

        self._subs = []
        if "cloud" in outputs:
            self._subs.append(node.create_subscription(PointCloud2, f"{node_fqn}/occupancy", keep_cloud, qos))
        if "markers" in outputs:
            self._subs.append(node.create_subscription(MarkerArray, f"{node_fqn}/occupancy_markers", keep(self.markers), qos))
        if "diagnostics" in outputs:
            self._subs.append(node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, qos))
        if "depth" in outputs:
            for c in cameras:
                self._subs.append(node.create_subscription(Image, f"{node_fqn}/depth/{c}", keep(self.depth[c]), qos))
        if "grid" in outputs:
            try:
                from selfocc_msgs.msg import OccupancyGrid3D

                self._subs.append(node.create_subscription(OccupancyGrid3D, f"{node_fqn}/grid", keep(self.grids), qos))
            except ImportError:
                pass

    def unsubscribe(self) -> None:
        """Destroy every subscription of this collector."""
        for sub in self._subs:
            self.node.destroy_subscription(sub)
        self._subs = []

    def complete(self, stamps, with_grid: bool = True) -> bool:
        """Every subscribed output (the grid only ``with_grid``) has arrived for every stamp."""
        o = self.outputs
        for s in stamps:
            if ("cloud" in o and s not in self.clouds) or ("markers" in o and s not in self.markers):
                return False
            if "depth" in o and any(s not in d for d in self.depth.values()):
                return False
            if with_grid and "grid" in o and s not in self.grids:
                return False
        return True

    def status(self, name_part: str):
        """Latest DiagnosticStatus whose name contains ``name_part`` (or None)."""
        for arr in reversed(self.diagnostics):
            for s in arr.status:
                if name_part in s.name:
                    return s
        return None


# ----------------------------------------------------------------------------- CLI


def _publish_main(argv) -> int:
    import rclpy

    ap = argparse.ArgumentParser(prog="selfocc_ros.testing publish")
    ap.add_argument("--cameras", nargs="+", default=["CAM_FRONT", "CAM_BACK"])
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--rate", type=float, default=4.0, help="frames per second")
    ap.add_argument("--height", type=int, default=48)
    ap.add_argument("--width", type=int, default=88)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--encoding", default="rgb8")
    ap.add_argument("--compressed", default="", choices=["", "jpeg", "png"])
    ap.add_argument("--start-stamp-ns", type=int, default=None)
    ap.add_argument("--wait", type=float, default=2.0, help="seconds to wait for subscribers before playing")
    ap.add_argument("--fault", action="append", default=[], help="INDEX:KIND, KIND in " + ", ".join(FAULTS))
    ap.add_argument("--linger", type=float, default=1.0, help="seconds to keep running after the last frame")
    ap.add_argument("--loop", action="store_true", help="replay forever (with increasing stamps)")
    ap.add_argument("--cache-dir", default=None, help="share rendered frames between processes (.npz)")
    args, ros_args = ap.parse_known_args(argv)
    faults = {}
    for f in args.fault:
        i, kind = f.split(":", 1)
        if kind not in FAULTS:
            raise SystemExit(f"unknown fault '{kind}' (valid: {FAULTS})")
        faults[int(i)] = kind
    with rclpy.init(args=ros_args):
        node = rclpy.create_node("selfocc_fixture_publisher")
        pub = FixturePublisher(node, args.cameras, args.frames, args.height, args.width, args.seed, args.encoding,
                               args.compressed, args.start_stamp_ns, faults, args.cache_dir)
        for i in range(args.frames):  # render before playing so the rate holds
            pub.frame(i)
        end = time.monotonic() + args.wait
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.05)
        period = 1.0 / args.rate
        rnd = 0
        while True:
            for i in range(args.frames):
                t0 = time.monotonic()
                stamp = pub.publish_frame(i)
                print(f"published {i} {stamp}", flush=True)
                while time.monotonic() - t0 < period:
                    rclpy.spin_once(node, timeout_sec=max(0.0, period - (time.monotonic() - t0)))
            if not args.loop:
                break
            rnd += 1
            pub.start_ns += int(round((pub.data.seq.time(args.frames - 1) + period) * 1e9))
        end = time.monotonic() + args.linger
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.05)
        node.destroy_node()
    return 0


def _node_main(argv) -> int:
    import rclpy

    from selfocc_ros.occupancy_node import OccupancyNode

    ap = argparse.ArgumentParser(prog="selfocc_ros.testing node")
    ap.add_argument("--standin", action="store_true", help="use StandInPredictor instead of the checkpoint")
    ap.add_argument("--delay", type=float, default=0.0, help="stand-in model time [s]")
    args, ros_args = ap.parse_known_args(argv)
    with rclpy.init(args=ros_args):
        node = OccupancyNode(predictor=StandInPredictor(delay_s=args.delay) if args.standin else None)
        try:
            node.configure()
        except (FileNotFoundError, ValueError) as e:
            node.get_logger().fatal(f"start-up failed: {e}")
            return 1
        node.activate()
        try:
            rclpy.spin(node)
        except Exception:
            pass
        finally:
            node.destroy_node()
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("publish", "node"):
        print("usage: python -m selfocc_ros.testing {publish,node} ...", file=sys.stderr)
        return 2
    return (_publish_main if argv[0] == "publish" else _node_main)(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
