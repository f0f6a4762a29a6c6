"""ROS 2 node: synchronized cameras + TF in, semantic voxel occupancy + depth images out.

    ros2 run selfocc_ros occupancy_node --ros-args --params-file config/occ.yaml -p checkpoint:=model.pt
    python -m selfocc_ros.occupancy_node --ros-args ...            (same, without ros2cli)

Subscribes (per camera): ``image_topic`` (sensor_msgs/Image, or CompressedImage when
``compressed``), ``info_topic`` (sensor_msgs/CameraInfo, latest kept), /tf, /tf_static.
Publishes, stamped with the input image stamp:
  ~/occupancy          sensor_msgs/PointCloud2   occupied voxel centres (x,y,z,confidence,label) in base_frame
  ~/occupancy_markers  visualization_msgs/MarkerArray  DELETEALL + one CUBE_LIST per class
  ~/grid               selfocc_msgs/OccupancyGrid3D    the dense grid (when selfocc_msgs is importable)
  ~/depth/<camera>     sensor_msgs/Image 32FC1   rendered depth, with the camera image's header
  /diagnostics         diagnostic_msgs/DiagnosticArray

Structure (lifecycle-style): ``configure()`` reads parameters and loads the model (a missing or
mismatched checkpoint ends start-up with a message naming the file), ``activate()`` creates the
subscriptions and the inference worker, ``deactivate()`` / ``cleanup()`` undo them. The executor
thread only queues synchronized sets; decoding, TF lookups (which may wait ``tf_timeout``),
inference and publishing run on the worker, always on the newest set (older ones are dropped).

Large images over Fast DDS on one machine: FASTDDS_DEFAULT_PROFILES_FILE=config/fastdds_large_images.xml
in *every* process of the graph (publishers, this node, RViz); see config/occ.yaml and
tools/dds_large_images.py.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from typing import Optional

import numpy as np
import rclpy
import torch
import rclpy.executors
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from selfocc_ros import compat
from selfocc_ros import conversions as conv
from selfocc_ros.node_logic import (
    CameraConfig,
    InputError,
    LatestWorker,
    NodeStats,
    WarnThrottle,
    assemble_frame,
    check_predictor_cameras,
    default_device,
    load_predictor,
)

NUSCENES_CAMERAS = ["CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT"]


def _grid_msg_type():
    try:
        from selfocc_msgs.msg import OccupancyGrid3D

        return OccupancyGrid3D
    except ImportError:
        return None


class OccupancyNode(Node):
    """See the module docstring. ``predictor`` (an object with ``predict(Frame)``) skips checkpoint loading."""

    def __init__(self, predictor=None, node_name: str = "selfocc_occupancy", **kwargs):
        super().__init__(node_name, **kwargs)
        self._injected_predictor = predictor
        self.predictor = None
        self.cameras: list[CameraConfig] = []
        self._sync = None
        self._worker: Optional[LatestWorker] = None
        self._publisher: Optional[LatestWorker] = None  # builds + sends messages off the inference thread
        self.published_counts = collections.Counter()  # messages sent per output (cloud, markers, grid, depth)
        self._infos: dict[str, CameraInfo] = {}
        self._infos_lock = threading.Lock()
        self._timers = []
        self._declare_parameters()
        self.pub_cloud = self.pub_markers = self.pub_grid = self.pub_diag = None
        self.pub_depth: dict[str, object] = {}
        self.stats: Optional[NodeStats] = None
        self.throttle = WarnThrottle(float(self.get_parameter("warn_throttle").value))
        self.on_result = None  # optional hook(assembled, prediction) for in-process tests/benchmarks
        self.timings: collections.deque = collections.deque(maxlen=1000)  # per published set (benchmarks)

    # ------------------------------------------------------------------ parameters

    def _declare(self, name, default, description):
        self.declare_parameter(name, default, ParameterDescriptor(description=description))

    def _declare_parameters(self) -> None:
        d = self._declare
        d("camera_names", NUSCENES_CAMERAS, "camera names, in the model's camera order")
        d("image_transport", "raw", "'raw' (sensor_msgs/Image) or 'compressed' (sensor_msgs/CompressedImage)")
        d("base_frame", "base_link", "ego frame of the grid, point cloud and markers (REP 105)")
        d("odom_frame", "odom", "fixed frame for the ego pose at each image stamp")
        d("checkpoint", "", "selfocc checkpoint file (save_checkpoint output)")
        d("model_config", "", "optional model YAML the checkpoint's config must match (empty: no check)")
        d("device", "auto", "torch device: auto (cuda if available), cpu, cuda, cuda:1 ...")
        d("torch_threads", 0, "torch CPU threads (0: torch's default)")
        d("sync.slop", 0.05, "approximate-time sync: max stamp spread of a camera set [s]")
        d("sync.queue_size", 10, "approximate-time sync: messages queued per camera")
        d("publish.pointcloud", True, "publish ~/occupancy (PointCloud2)")
        d("publish.markers", True, "publish ~/occupancy_markers (MarkerArray)")
        d("publish.depth", True, "publish ~/depth/<camera> (32FC1)")
        d("publish.grid", True, "publish ~/grid (selfocc_msgs/OccupancyGrid3D)")
        d("publish.grid_confidence", True, "fill OccupancyGrid3D.confidence")
        d("publish.grid_sdf", False, "fill OccupancyGrid3D.sdf")
        d("publish.marker_alpha", 1.0, "marker colour alpha")
        d("publish.marker_surface_only", True, "markers only for occupied voxels with a free neighbour")
        d("publish.marker_range", 30.0, "markers only within this distance of base_frame's origin [m] (0: all)")
        d("publish.marker_max_count", 10000, "at most this many marker cubes, the nearest kept (0: no cap)")
        d("publish.depth_width", 0, "width of ~/depth/<camera> [px] (0: the network input's, or from depth_height)")
        d("publish.depth_height", 0, "height of ~/depth/<camera> [px] (0: the network input's, or from depth_width)")
        d("qos.sensor_data", True, "inputs use the sensor-data QoS (best effort, depth 5); false: reliable")
        d("qos.depth", 5, "history depth of image/camera_info subscriptions")
        d("camera_timeout", 1.0, "a camera silent for longer [s] is reported stale")
        d("tf_timeout", 0.1, "how long the worker waits for TF at an image stamp [s]")
        d("tf_cache_time", 10.0, "TF buffer length [s]")
        d("diagnostics_period", 1.0, "period of /diagnostics [s]")
        d("warn_throttle", 5.0, "same warning at most once per this many seconds")
        names = list(self.get_parameter("camera_names").value)
        compressed = self.get_parameter("image_transport").value == "compressed"
        for n in names:
            suffix = "/image_raw/compressed" if compressed else "/image_raw"
            d(f"cameras.{n}.image_topic", f"/{n}{suffix}", f"image topic of {n}")
            d(f"cameras.{n}.info_topic", f"/{n}/camera_info", f"camera_info topic of {n}")
            d(f"cameras.{n}.frame_id", "", f"optical frame of {n} (empty: the image header's frame_id)")

    def p(self, name):
        return self.get_parameter(name).value

    # ------------------------------------------------------------------ lifecycle

    def configure(self) -> None:
        """Read parameters, load the model, create publishers. Raises on a bad checkpoint."""
        transport = self.p("image_transport")
        if transport not in ("raw", "compressed"):
            raise ValueError(f"parameter image_transport must be 'raw' or 'compressed', got '{transport}'")
        self.cameras = [
            CameraConfig(n, self.p(f"cameras.{n}.image_topic"), self.p(f"cameras.{n}.info_topic"),
                         transport == "compressed", self.p(f"cameras.{n}.frame_id"))
            for n in self.p("camera_names")
        ]
        if not self.cameras:
            raise ValueError("parameter camera_names is empty")
        if self._injected_predictor is not None:
            self.predictor = self._injected_predictor
        else:
            device = default_device(self.p("device"))
            self.get_logger().info(f"loading checkpoint {self.p('checkpoint')} on {device}")
            if int(self.p("torch_threads")) > 0:
                torch.set_num_threads(int(self.p("torch_threads")))
            self.predictor = load_predictor(self.p("checkpoint"), device, self.p("model_config"))
            check_predictor_cameras(self.predictor, [c.name for c in self.cameras], self.p("checkpoint"))
        self.stats = NodeStats([c.name for c in self.cameras], float(self.p("camera_timeout")))

        out_qos = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
        if self.p("publish.pointcloud"):
            self.pub_cloud = self.create_publisher(PointCloud2, "~/occupancy", out_qos)
        if self.p("publish.markers"):
            self.pub_markers = self.create_publisher(MarkerArray, "~/occupancy_markers", out_qos)
        if self.p("publish.depth"):
            self.pub_depth = {c.name: self.create_publisher(Image, f"~/depth/{c.name}", out_qos) for c in self.cameras}
        if self.p("publish.grid"):
            grid_type = _grid_msg_type()
            if grid_type is None:
                self.get_logger().warning(
                    "selfocc_msgs is not importable: ~/grid disabled (build it with `python tools/build_msgs.py`)")
            else:
                self.pub_grid = self.create_publisher(grid_type, "~/grid", out_qos)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.tf_buffer, self.tf_listener, self.tf_lookup = None, None, None
        try:
            self.tf_buffer, self.tf_listener, self.tf_lookup = compat.make_tf(self, float(self.p("tf_cache_time")))
        except ImportError as e:
            self.get_logger().error(f"no TF input: {e}")
        self.get_logger().info(f"backends: {compat.backends()}; cameras: {[c.name for c in self.cameras]}")

    def activate(self) -> None:
        """Start the worker, subscriptions and the diagnostics timer."""
        self._publisher = LatestWorker(self._publish_job, on_error=self._on_worker_error, name="selfocc-publish").start()
        self._worker = LatestWorker(self._process, on_error=self._on_worker_error).start()
        qos = qos_profile_sensor_data if self.p("qos.sensor_data") else QoSProfile(
            depth=int(self.p("qos.depth")), reliability=ReliabilityPolicy.RELIABLE)
        if self.p("qos.sensor_data"):
            qos = QoSProfile(depth=int(self.p("qos.depth")), reliability=qos.reliability,
                             durability=qos.durability, history=qos.history)
        img_type = CompressedImage if self.cameras[0].compressed else Image
        self._info_subs = [
            self.create_subscription(CameraInfo, c.info_topic, lambda m, c=c.name: self._on_info(c, m), qos)
            for c in self.cameras
        ]
        self._sync = compat.make_synchronized_subscribers(
            self, [(img_type, c.image_topic) for c in self.cameras], qos,
            int(self.p("sync.queue_size")), float(self.p("sync.slop")), self._on_synced, self._on_image)
        self._timers.append(self.create_timer(float(self.p("diagnostics_period")), self._publish_diagnostics))

    def deactivate(self) -> None:
        for t in self._timers:
            self.destroy_timer(t)
        self._timers = []
        if self._sync is not None:
            self._sync.destroy(self)
            self._sync = None
        for s in getattr(self, "_info_subs", []):
            self.destroy_subscription(s)
        self._info_subs = []
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        if self._publisher is not None:
            self._publisher.stop()
            self._publisher = None

    def cleanup(self) -> None:
        self.deactivate()
        self.predictor = None  # frees GPU memory held by the model

    def destroy_node(self):
        self.deactivate()
        return super().destroy_node()

    # ------------------------------------------------------------------ callbacks (executor thread)

    def _on_info(self, camera: str, msg: CameraInfo) -> None:
        with self._infos_lock:
            self._infos[camera] = msg

    def _on_image(self, index: int, msg) -> None:
        self.stats.on_image(self.cameras[index].name, time.monotonic())

    def _on_synced(self, *msgs) -> None:
        dropped = self._worker.submit((msgs, time.monotonic()))
        self.stats.on_synced(time.monotonic(), dropped)

    def _warn(self, key, text: str) -> None:
        if self.throttle.should_log(key, time.monotonic()):
            self.get_logger().warning(text)

    def _on_worker_error(self, e: BaseException) -> None:
        self.stats.on_error("inference", f"{type(e).__name__}: {e}")
        self._warn(("inference", type(e).__name__), f"inference failed: {type(e).__name__}: {e}")

    # ------------------------------------------------------------------ worker thread

    def _lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        if self.tf_lookup is None:
            raise RuntimeError("no TF listener (tf2_msgs not importable)")
        return self.tf_lookup(target, source, stamp_ns, float(self.p("tf_timeout")))

    def _wants(self, pub) -> bool:
        """Only outputs somebody subscribes to are built and published."""
        return pub is not None and pub.get_subscription_count() > 0

    def _depth_size(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """(H, W) of the depth images for frames of ``image_hw`` (the network input size)."""
        w, h = int(self.p("publish.depth_width")), int(self.p("publish.depth_height"))
        if w < 0 or h < 0:
            raise ValueError(f"publish.depth_width/height must be >= 0, got {w} x {h}")
        H, W = image_hw
        if w and h:
            return h, w
        if w:
            return max(1, round(H * w / W)), w
        if h:
            return h, max(1, round(W * h / H))
        return H, W

    def _process(self, item) -> None:
        msgs, t_synced = item
        t_start = time.perf_counter()
        wait_s = max(0.0, time.monotonic() - t_synced)
        want_depth = any(self._wants(p) for p in self.pub_depth.values())
        if not (want_depth or any(self._wants(p) for p in (self.pub_cloud, self.pub_markers, self.pub_grid))):
            self.stats.on_unwanted()  # no subscriber for any output: no inference either
            return
        # CameraInfo travels on its own topic: on start-up it may trail the first images a little.
        deadline = time.monotonic() + float(self.p("tf_timeout"))
        while True:
            with self._infos_lock:
                infos = [self._infos.get(c.name) for c in self.cameras]
            if all(i is not None for i in infos) or time.monotonic() >= deadline:
                break
            time.sleep(0.005)
        try:
            assembled = assemble_frame(msgs, infos, self.cameras, self._lookup, self.p("base_frame"), self.p("odom_frame"),
                                       network_size=getattr(self.predictor, "input_size", None),
                                       device=getattr(self.predictor, "device", "cpu"))
        except InputError as e:
            self.stats.on_error(e.kind, str(e))
            self._warn((e.kind, e.camera), f"dropping camera set: {e}")
            return
        t_model = time.perf_counter()
        if want_depth:
            pred = self.predictor.predict(assembled.frame, with_depth=True,
                                          depth_size=self._depth_size(assembled.frame.image_size))
        else:
            pred = self.predictor.predict(assembled.frame, with_depth=False)
        model_s = time.perf_counter() - t_model
        timing = {"wait_s": wait_s, "decode_s": assembled.decode_s, "tf_s": assembled.tf_s,
                  "resize_s": assembled.resize_s, "assemble_s": t_model - t_start, "model_s": model_s,
                  "t_done": time.perf_counter()}
        # messages are built and sent on their own thread: the next set's inference starts now
        if self._publisher.submit((pred, assembled, timing)):
            self.stats.on_result_dropped()  # the previous result was still waiting to be sent

    def _publish_job(self, item) -> None:
        pred, assembled, timing = item
        t_pub = time.perf_counter()
        stages = self.publish_prediction(pred, assembled)
        t_end = time.perf_counter()
        latency_s = (self.get_clock().now().nanoseconds - assembled.stamp_ns) / 1e9
        overhead = timing["assemble_s"] + (t_end - t_pub)
        self.stats.on_published(time.monotonic(), latency_s, timing["model_s"], overhead)
        self.timings.append({**timing, "publish_s": t_end - t_pub, "publish_stages_s": stages,
                             "publish_wait_s": t_pub - timing["t_done"],
                             "latency_s": latency_s})
        if self.on_result is not None:
            self.on_result(assembled, pred)

    def publish_prediction(self, pred, assembled) -> dict:
        """Publish every enabled output that has subscribers for one prediction (stamps = the input
        image stamp). Returns seconds per output (build + publish)."""
        stages = {}
        t = time.perf_counter()

        def lap(name):
            nonlocal t
            now = time.perf_counter()
            stages[name] = now - t
            t = now

        header = Header(stamp=conv.ns_to_stamp(assembled.stamp_ns), frame_id=self.p("base_frame"))
        grid = pred.grid
        labels = _np(pred.labels).astype(np.uint8, copy=False)
        confidence = _np(pred.confidence).astype(np.float32, copy=False) if getattr(pred, "confidence", None) is not None else None
        lap("arrays")
        if self._wants(self.pub_cloud):
            xyz, lab, conf = conv.occupied_points(labels, confidence, grid.lower, grid.voxel_size)
            self.pub_cloud.publish(conv.make_occupancy_cloud(xyz, lab, conf, header))
            self.published_counts["cloud"] += 1
            lap("cloud")
        if self._wants(self.pub_markers):
            xyz, lab = conv.marker_voxels(labels, grid.lower, grid.voxel_size, float(self.p("publish.marker_range")),
                                          int(self.p("publish.marker_max_count")),
                                          bool(self.p("publish.marker_surface_only")))
            self.pub_markers.publish(conv.make_occupancy_markers(
                xyz, lab, grid.voxel_size, header, alpha=float(self.p("publish.marker_alpha"))))
            self.published_counts["markers"] += 1
            lap("markers")
        if self._wants(self.pub_grid):
            sdf = _np(pred.sdf).astype(np.float32) if self.p("publish.grid_sdf") and getattr(pred, "sdf", None) is not None else None
            msg = conv.fill_grid_msg(self.pub_grid.msg_type(), labels, grid.lower, grid.voxel_size, header,
                                     confidence=confidence if self.p("publish.grid_confidence") else None, sdf=sdf)
            self.pub_grid.publish(msg)
            self.published_counts["grid"] += 1
            lap("grid")
        if self.pub_depth and getattr(pred, "depth", None) is not None:
            depth = _np(pred.depth).astype(np.float32, copy=False)
            for i, cam in enumerate(self.cameras):
                pub = self.pub_depth[cam.name]
                if self._wants(pub):
                    pub.publish(conv.depth_to_image(depth[i], assembled.headers[i]))
                    self.published_counts["depth"] += 1
            lap("depth")
        return stages

    # ------------------------------------------------------------------ diagnostics

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        for cam in self.stats.stale_cameras(now):
            self._warn(("stale", cam), f"camera {cam} silent for more than {self.stats.camera_timeout:.1f} s")
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        for s in self.stats.statuses(now, prefix=self.get_fully_qualified_name().lstrip("/")):
            arr.status.append(DiagnosticStatus(
                level=bytes([s.level]), name=s.name, message=s.message, hardware_id="selfocc",
                values=[KeyValue(key=k, value=v) for k, v in s.values.items()]))
        listener = self.tf_listener
        if listener is not None and getattr(listener, "rejected", 0):
            arr.status.append(DiagnosticStatus(
                level=bytes([1]), name=f"{self.get_fully_qualified_name().lstrip('/')}: tf input",
                message=f"{listener.rejected} transforms rejected; last: {listener.last_rejection}",
                hardware_id="selfocc"))
        self.pub_diag.publish(arr)


def _np(x):
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def main(args=None) -> int:
    """Entry point: configure (load the model), activate, spin. A bad checkpoint exits with status 1."""
    with rclpy.init(args=args):
        node = OccupancyNode()
        try:
            node.configure()
        except (FileNotFoundError, ValueError) as e:
            node.get_logger().fatal(f"start-up failed: {e}")
            node.destroy_node()
            return 1
        node.activate()
        try:
            rclpy.spin(node)
        except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
            pass
        finally:
            node.destroy_node()
    return 0


if __name__ == "__main__":
    sys.exit(main())
