"""ROS 2 node: synchronized cameras + TF in, semantic voxel occupancy + depth images out.

    ros2 run selfocc_ros occupancy_node --ros-args --params-file config/occ.yaml -p checkpoint:=model.pt
    python -m selfocc_ros.occupancy_node --ros-args ...            (same, without ros2cli)

Subscribes (per camera): ``image_topic`` (sensor_msgs/Image, or CompressedImage when
``compressed``), ``info_topic`` (sensor_msgs/CameraInfo, latest kept), /tf, /tf_static.
Publishes, stamped with the input image stamp:
  ~/occupancy          sensor_msgs/PointCloud2   occupied voxel centres (x,y,z,confidence,label) in base_frame
  ~/occupancy_markers  visualization_msgs/MarkerArray  DELETEALL + one CUBE_LIST per class, surface
                       voxels within publish.marker_range, at most publish.marker_max_count (nearest)
  ~/grid               selfocc_msgs/OccupancyGrid3D    the dense grid (when selfocc_msgs is importable)
  ~/depth/<camera>     sensor_msgs/Image 32FC1   rendered depth, with the camera image's header, at
                       publish.depth_width x depth_height (default: the network input size)
  /diagnostics         diagnostic_msgs/DiagnosticArray

Structure (lifecycle-style): ``configure()`` reads parameters and loads the model (a missing or
mismatched checkpoint ends start-up with a message naming the file), ``activate()`` creates the
subscriptions and the inference worker, ``deactivate()`` / ``cleanup()`` undo them. Each image is
decoded (a view of the message buffer) and downscaled once, in uint8, to the network input in its
subscription callback as it arrives (PreparedImage): the synchroniser then queues small tensors
and the message is released at once. The executor thread only does that and queues synchronized
sets; TF lookups (which may wait ``tf_timeout``) and inference run on the inference worker,
always on the newest set (older ones are dropped; image subscriptions keep ``qos.depth`` = 1
message, so an executor that falls behind also gets each camera's newest image). Messages are
built as CDR bytes from contiguous arrays and sent on a second worker, so the next inference
starts at once. Only outputs with subscribers are built (depth is not even rendered without a
depth subscriber, and a set nobody listens to is neither converted nor inferred).

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
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from selfocc_ros import compat
from selfocc_ros import conversions as conv
from selfocc_ros.shutdown import ShutdownRequest, exit_now
from selfocc_ros.node_logic import (
    ERROR,
    OK,
    WARN,
    CameraConfig,
    DiagStatus,
    InputError,
    LatestWorker,
    NodeStats,
    PreparedImage,
    WarnThrottle,
    assemble_frame,
    check_predictor_cameras,
    check_row_step,
    compare_rig,
    default_device,
    load_predictor,
    prepare_image,
)

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
        self._row_step = 1  # resize.row_step, read by configure()
        self.predictor = None
        self.cameras: list[CameraConfig] = []
        self._sync = None
        self._worker: Optional[LatestWorker] = None
        self._publisher: Optional[LatestWorker] = None  # builds + sends messages off the inference thread
        self._last_markers = -float("inf")  # monotonic time of the last marker message
        self.published_counts = collections.Counter()  # messages sent per output (cloud, markers, grid, depth)
        self.images_converted = 0  # images decoded + downscaled on arrival (none while nobody subscribes)
        self._infos: dict[str, CameraInfo] = {}
        self._infos_lock = threading.Lock()
        self._diag_timer = None
        self._info_subs = []
        self.pub_cloud = self.pub_markers = self.pub_grid = self.pub_diag = None
        self.pub_depth: dict[str, object] = {}
        self._closing = False
        self._rig_checked_key = None
        self.rig_status: Optional[DiagStatus] = None  # training rig vs TF (diagnostics)
        self._declare_parameters()
        self.stats: Optional[NodeStats] = None
        self.throttle = WarnThrottle(float(self.get_parameter("warn_throttle").value))
        self.on_result = None  # optional hook(assembled, prediction) for in-process tests/benchmarks
        self.timings: collections.deque = collections.deque(maxlen=1000)  # per published set (benchmarks)

    # ------------------------------------------------------------------ parameters

    # Parameters that take effect while the node runs (parameter callback below), besides every
    # publish.* switch/limit (read where used); every other one is read-only: `ros2 param set` is
    # refused with a reason instead of being ignored.
    RUNTIME_PARAMETERS = (
        "sync.slop", "max_queue_wait", "camera_timeout", "tf_timeout", "diagnostics_period", "warn_throttle",
        "rig_tolerance.translation", "rig_tolerance.rotation_deg",
    )

    def _declare(self, name, default, description):
        read_only = name not in self.RUNTIME_PARAMETERS and not name.startswith("publish.") and name != "camera_names"
        if read_only:
            description += " (read-only: set it at start-up)"
        self.declare_parameter(name, default, ParameterDescriptor(description=description, read_only=read_only))

    def _declare_parameters(self) -> None:
        d = self._declare
        self.declare_parameter("camera_names", Parameter.Type.STRING_ARRAY, ParameterDescriptor(
            description="camera names, in the model's camera order; unset or empty: the checkpoint's cameras "
                        "(fixed at start-up)"))
        d("image_transport", "raw", "'raw' (sensor_msgs/Image) or 'compressed' (sensor_msgs/CompressedImage)")
        d("base_frame", "base_link", "ego frame of the grid, point cloud and markers (REP 105)")
        d("odom_frame", "odom", "fixed frame for the ego pose at each image stamp")
        d("checkpoint", "", "selfocc checkpoint file (save_checkpoint output)")
        d("model_config", "", "optional model YAML the checkpoint's config must match (empty: no check)")
        d("device", "auto", "torch device: auto (cuda if available), cpu, cuda, cuda:1 ...")
        d("torch_threads", 0, "torch CPU threads (0: torch's default)")
        d("resize.row_step", 0, "CPU downscale of each camera image to the network input: the vertical filter reads "
          "every k-th row (centred, filter scale exact; odd k). 1: exact (every row); 0: auto, the largest odd k "
          "with >= 4 kept rows per output row (k=3 for 900 -> 64: half the cost, mean error +0.06/255; see "
          "benchmarks/downscale.py)")
        d("sync.slop", 0.05, "approximate-time sync: max stamp spread of a camera set [s]")
        d("sync.queue_size", 10, "approximate-time sync: messages queued per camera")
        d("max_queue_wait", 0.0, "a complete camera set that waited longer than this [s] for the running inference "
          "is dropped as stale (diagnostics: stale_sets) instead of inferred: bounds latency to about "
          "model time + this, at the cost of published rate when the model is slower than the cameras "
          "(0: no limit, every newest set is inferred)")
        d("publish.pointcloud", True, "publish ~/occupancy (PointCloud2)")
        d("publish.markers", True, "publish ~/occupancy_markers (MarkerArray)")
        d("publish.depth", True, "publish ~/depth/<camera> (32FC1)")
        d("publish.grid", True, "publish ~/grid (selfocc_msgs/OccupancyGrid3D)")
        d("publish.grid_confidence", True, "fill OccupancyGrid3D.confidence")
        d("publish.grid_sdf", False, "fill OccupancyGrid3D.sdf")
        d("publish.marker_alpha", 1.0, "marker colour alpha")
        d("publish.marker_surface_only", True, "markers only for occupied voxels with a free neighbour")
        d("publish.marker_range", 30.0, "markers only within this distance of base_frame's origin [m] (0: all)")
        d("publish.marker_max_count", 5000, "at most this many marker cubes, the nearest kept (0: no cap)")
        d("publish.marker_period", 0.0, "at most one ~/occupancy_markers per this many seconds (0: every result)")
        d("publish.depth_width", 0, "width of ~/depth/<camera> [px] (0: the network input's, or from depth_height)")
        d("publish.depth_height", 0, "height of ~/depth/<camera> [px] (0: the network input's, or from depth_width)")
        d("qos.sensor_data", True, "inputs use the sensor-data QoS (best effort, depth 5); false: reliable")
        d("qos.depth", 1, "history depth of image/camera_info subscriptions (1: an executor that falls behind "
          "gets each camera's newest image, never a backlog of older ones)")
        d("camera_timeout", 1.0, "a camera silent for longer [s] is reported stale")
        d("tf_timeout", 0.1, "how long the worker waits for TF at an image stamp [s]")
        d("tf_cache_time", 10.0, "TF buffer length [s]")
        d("diagnostics_period", 1.0, "period of /diagnostics [s]")
        d("warn_throttle", 5.0, "same warning at most once per this many seconds")
        d("rig_tolerance.translation", 0.05, "camera extrinsics from TF may differ from the checkpoint's training "
          "rig by this much [m] before an ERROR diagnostic")
        d("rig_tolerance.rotation_deg", 2.0, "same, rotation [deg]")
        self._cameras_declared = False
        self._configured = False
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)

    def _declare_camera_parameters(self, names) -> None:
        compressed = self.get_parameter("image_transport").value == "compressed"
        for n in names:
            suffix = "/image_raw/compressed" if compressed else "/image_raw"
            self._declare(f"cameras.{n}.image_topic", f"/{n}{suffix}", f"image topic of {n}")
            self._declare(f"cameras.{n}.info_topic", f"/{n}/camera_info", f"camera_info topic of {n}")
            self._declare(f"cameras.{n}.frame_id", "", f"optical frame of {n} (empty: the image header's frame_id)")
        self._cameras_declared = True

    def _camera_names_param(self) -> list[str]:
        try:
            return [n for n in (self.get_parameter("camera_names").value or []) if n]
        except ParameterUninitializedException:
            return []

    _POSITIVE = ("sync.slop", "camera_timeout", "diagnostics_period")
    _NON_NEGATIVE = ("tf_timeout", "max_queue_wait", "warn_throttle", "rig_tolerance.translation", "rig_tolerance.rotation_deg",
                     "publish.marker_range", "publish.marker_max_count", "publish.marker_period", "publish.depth_width",
                     "publish.depth_height")

    def _on_set_parameters(self, params) -> SetParametersResult:
        """Validate a set (`ros2 param set`, SetParameters): refuse what cannot apply, with a reason."""
        for prm in params:
            if prm.name == "camera_names" and self._configured:
                return SetParametersResult(successful=False, reason=(
                    "camera_names is fixed once the model is loaded (the checkpoint's cameras, in order); "
                    "restart the node to change it"))
            if prm.name in self._POSITIVE and not (isinstance(prm.value, (int, float)) and prm.value > 0):
                return SetParametersResult(successful=False, reason=f"{prm.name} must be > 0, got {prm.value!r}")
            if prm.name in self._NON_NEGATIVE and not (isinstance(prm.value, (int, float)) and prm.value >= 0):
                return SetParametersResult(successful=False, reason=f"{prm.name} must be >= 0, got {prm.value!r}")
            if prm.name == "publish.marker_alpha" and not (isinstance(prm.value, (int, float)) and 0 <= prm.value <= 1):
                return SetParametersResult(successful=False, reason=f"publish.marker_alpha must be in [0, 1], got {prm.value!r}")
            if prm.name == "publish.grid" and prm.value and self._configured and _grid_msg_type() is None:
                return SetParametersResult(successful=False, reason="selfocc_msgs is not importable: ~/grid unavailable")
        return SetParametersResult(successful=True)

    def _after_set_parameters(self, params) -> None:
        """Apply accepted run-time parameters (the rest are read where used: tf_timeout, publish.grid_*)."""
        if not self._configured:
            return
        names = {prm.name for prm in params}
        if names & {"publish.pointcloud", "publish.markers", "publish.depth", "publish.grid"}:
            self._create_publishers()
        if "sync.slop" in names and self._sync is not None:
            self._sync.set_slop(float(self.p("sync.slop")))
        if "max_queue_wait" in names and self._worker is not None:
            self._worker.max_wait = float(self.p("max_queue_wait"))
        if "camera_timeout" in names and self.stats is not None:
            self.stats.camera_timeout = float(self.p("camera_timeout"))
        if "warn_throttle" in names:
            self.throttle.period = float(self.p("warn_throttle"))
        if "diagnostics_period" in names and self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = self.create_timer(float(self.p("diagnostics_period")), self._publish_diagnostics)
        if names & {"rig_tolerance.translation", "rig_tolerance.rotation_deg"}:
            self._rig_checked_key = None  # re-check against TF with the new tolerance

    def p(self, name):
        return self.get_parameter(name).value

    # ------------------------------------------------------------------ lifecycle

    def configure(self) -> None:
        """Read parameters, load the model, create publishers. Raises on a bad checkpoint."""
        transport = self.p("image_transport")
        if transport not in ("raw", "compressed"):
            raise ValueError(f"parameter image_transport must be 'raw' or 'compressed', got '{transport}'")
        names = self._camera_names_param()
        if self._injected_predictor is not None:
            self.predictor = self._injected_predictor
        else:
            device = default_device(self.p("device"))
            self.get_logger().info(f"loading checkpoint {self.p('checkpoint')} on {device}")
            if int(self.p("torch_threads")) > 0:
                torch.set_num_threads(int(self.p("torch_threads")))
            self.predictor = load_predictor(self.p("checkpoint"), device, self.p("model_config"))
            if names:
                check_predictor_cameras(self.predictor, names, self.p("checkpoint"))
        if not names:  # the checkpoint's training cameras
            names = list(getattr(self.predictor, "camera_names", None) or [])
            if not names:
                raise ValueError("parameter camera_names is empty and the checkpoint names no cameras: "
                                 "set camera_names to the model's cameras, in order")
            self.set_parameters([Parameter("camera_names", Parameter.Type.STRING_ARRAY, names)])
            self.get_logger().info(f"camera_names from the checkpoint: {names}")
        if not self._cameras_declared:
            self._declare_camera_parameters(names)
        self.cameras = [
            CameraConfig(n, self.p(f"cameras.{n}.image_topic"), self.p(f"cameras.{n}.info_topic"),
                         transport == "compressed", self.p(f"cameras.{n}.frame_id"))
            for n in names
        ]
        self._row_step = check_row_step(int(self.p("resize.row_step")), "parameter resize.row_step")
        self.stats = NodeStats([c.name for c in self.cameras], float(self.p("camera_timeout")))
        self.throttle.period = float(self.p("warn_throttle"))
        self._configured = True
        self._create_publishers()
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.tf_buffer, self.tf_listener, self.tf_lookup = None, None, None
        try:
            self.tf_buffer, self.tf_listener, self.tf_lookup = compat.make_tf(self, float(self.p("tf_cache_time")))
        except ImportError as e:
            self.get_logger().error(f"no TF input: {e}")
        self.get_logger().info(f"backends: {compat.backends()}; cameras: {[c.name for c in self.cameras]}")

    def _create_publishers(self) -> None:
        """Publishers of the enabled outputs (created on first enable; a disabled one is kept but idle)."""
        out_qos = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
        if self.p("publish.pointcloud") and self.pub_cloud is None:
            self.pub_cloud = self.create_publisher(PointCloud2, "~/occupancy", out_qos)
        if self.p("publish.markers") and self.pub_markers is None:
            self.pub_markers = self.create_publisher(MarkerArray, "~/occupancy_markers", out_qos)
        if self.p("publish.depth") and not self.pub_depth:
            self.pub_depth = {c.name: self.create_publisher(Image, f"~/depth/{c.name}", out_qos) for c in self.cameras}
        if self.p("publish.grid") and self.pub_grid is None:
            grid_type = _grid_msg_type()
            if grid_type is None:
                self.get_logger().warning(
                    "selfocc_msgs is not importable: ~/grid disabled (build it with `python tools/build_msgs.py`)")
            else:
                self.pub_grid = self.create_publisher(grid_type, "~/grid", out_qos)

    def activate(self) -> None:
        """Start the worker, subscriptions and the diagnostics timer."""
        self._closing = False
        self._publisher = LatestWorker(self._publish_job, on_error=self._on_worker_error, name="selfocc-publish").start()
        self._worker = LatestWorker(self._process, on_error=self._on_worker_error, max_wait=float(self.p("max_queue_wait")),
                                    on_stale=lambda item, waited: self.stats.on_stale()).start()
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
            int(self.p("sync.queue_size")), float(self.p("sync.slop")), self._on_synced, self._on_image,
            transform=self._prepare)
        self._diag_timer = self.create_timer(float(self.p("diagnostics_period")), self._publish_diagnostics)

    def deactivate(self, worker_timeout: float = 5.0) -> bool:
        """Stop inputs, then the worker (it publishes nothing more); False when the worker is still
        inside ``predict`` after ``worker_timeout`` s."""
        self._closing = True
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        if self._sync is not None:
            self._sync.destroy(self)
            self._sync = None
        for s in self._info_subs:
            self.destroy_subscription(s)
        self._info_subs = []
        stopped = True
        if self._worker is not None:
            stopped = self._worker.stop(worker_timeout)
            self._worker = None
        if self._publisher is not None:
            stopped = self._publisher.stop(min(worker_timeout, 0.5)) and stopped
            self._publisher = None
        return stopped

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

    def _prepare(self, index: int, msg) -> PreparedImage:
        """Decode + downscale one image as it arrives (executor thread): its set then queues small
        tensors, the message is released, and the inference worker starts from network inputs."""
        if not self._wants_any():
            item = PreparedImage(msg.header, None, (0, 0))  # nobody listens: not converted (nor inferred)
        else:
            item = prepare_image(msg, self.cameras[index].name, getattr(self.predictor, "input_size", None),
                                 getattr(self.predictor, "device", "cpu"), self._row_step)
            self.images_converted += 1
        item.received_ns = self.get_clock().now().nanoseconds
        return item

    def _on_synced(self, *msgs) -> None:
        dropped = self._worker.submit((msgs, time.monotonic()))
        self.stats.on_synced(time.monotonic(), dropped)

    def _warn(self, key, text: str) -> None:
        if self.throttle.should_log(key, time.monotonic()):
            self.get_logger().warning(text)

    def _on_worker_error(self, e: BaseException) -> None:
        if self._closing or not self.context.ok():
            return  # shutting down: a publish racing the teardown is not an inference failure
        self.stats.on_error("inference", f"{type(e).__name__}: {e}")
        self._warn(("inference", type(e).__name__), f"inference failed: {type(e).__name__}: {e}")

    # ------------------------------------------------------------------ worker thread

    def _lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        if self.tf_lookup is None:
            raise RuntimeError("no TF listener (tf2_msgs not importable)")
        return self.tf_lookup(target, source, stamp_ns, float(self.p("tf_timeout")))

    def _wants(self, pub, switch: str) -> bool:
        """Only enabled outputs (``switch``, a publish.* parameter) somebody subscribes to are built and published."""
        return pub is not None and bool(self.p(switch)) and pub.get_subscription_count() > 0

    def _wants_any(self) -> bool:
        return (any(self._wants(p, "publish.depth") for p in self.pub_depth.values())
                or self._wants(self.pub_cloud, "publish.pointcloud") or self._wants(self.pub_markers, "publish.markers")
                or self._wants(self.pub_grid, "publish.grid"))

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
        t_start, c_start = time.perf_counter(), time.thread_time()
        wait_s = max(0.0, time.monotonic() - t_synced)
        want_depth = any(self._wants(p, "publish.depth") for p in self.pub_depth.values())
        if not (want_depth or self._wants(self.pub_cloud, "publish.pointcloud") or self._wants(
                self.pub_markers, "publish.markers") or self._wants(self.pub_grid, "publish.grid")):
            self.stats.on_unwanted()  # no subscriber for any output: no inference either
            return
        if any(isinstance(m, PreparedImage) and m.image is None and m.error is None for m in msgs):
            self.stats.on_unwanted()  # not converted on arrival (no subscriber then): skip this set
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
                                       device=getattr(self.predictor, "device", "cpu"), row_step=self._row_step)
        except InputError as e:
            self.stats.on_error(e.kind, str(e))
            self._warn((e.kind, e.camera), f"dropping camera set: {e}")
            return
        self._check_rig(msgs, assembled.stamp_ns)
        t_model, c_model = time.perf_counter(), time.thread_time()
        if want_depth:
            pred = self.predictor.predict(assembled.frame, with_depth=True,
                                          depth_size=self._depth_size(assembled.frame.image_size))
        else:
            pred = self.predictor.predict(assembled.frame, with_depth=False)
        model_s = time.perf_counter() - t_model
        if self._closing:
            return  # deactivated while the model ran: publish nothing more
        # prepare_s: decode + downscale in the subscription callbacks (overhead, off this thread)
        received = [getattr(m, "received_ns", None) for m in msgs]
        timing = {"wait_s": wait_s, "decode_s": assembled.decode_s, "tf_s": assembled.tf_s,
                  "resize_s": assembled.resize_s, "prepare_s": assembled.prepared_s, "prepare_cpu_s": assembled.prepared_cpu_s,
                  "assemble_s": t_model - t_start, "assemble_cpu_s": c_model - c_start, "model_s": model_s,
                  "t_done": time.perf_counter(),
                  "arrival_lag_s": (max(received) - assembled.stamp_ns) / 1e9 if None not in received else None}
        # messages are built and sent on their own thread: the next set's inference starts now
        if self._publisher.submit((pred, assembled, timing)):
            self.stats.on_result_dropped()  # the previous result was still waiting to be sent

    def _check_rig(self, msgs, stamp_ns: int) -> None:
        """Compare TF's camera extrinsics with the checkpoint's training rig: at the first set, and
        again when /tf_static changes or a tolerance is set. Beyond the tolerance: ERROR diagnostic
        and a warning naming both transforms (the model's geometry belongs to its training frame)."""
        rig = getattr(self.predictor, "training_rig", None)
        listener = self.tf_listener
        key = (getattr(listener, "static_updates", 0), self.p("base_frame"))
        if key == self._rig_checked_key:
            return
        self._rig_checked_key = key
        if rig is None:
            self.rig_status = DiagStatus("camera rig", OK, "checkpoint stores no training rig: extrinsics not checked")
            return
        frames = [c.frame_id or m.header.frame_id for c, m in zip(self.cameras, msgs)]
        base = self.p("base_frame")
        try:
            T_tf = np.stack([self._lookup(base, f, stamp_ns) for f in frames])
        except Exception as e:  # reported by the tf status already; check again with the next set
            self._rig_checked_key = None
            self.rig_status = DiagStatus("camera rig", WARN, f"cannot look up the camera extrinsics: {e}")
            return
        problems = compare_rig(T_tf, rig, [c.name for c in self.cameras], base, frames,
                               float(self.p("rig_tolerance.translation")), float(self.p("rig_tolerance.rotation_deg")))
        if problems:
            self.rig_status = DiagStatus("camera rig", ERROR, problems[0], {f"camera_{i}": p for i, p in enumerate(problems)})
            for p in problems:
                self.get_logger().warning(f"camera extrinsics differ from the training rig: {p}")
        else:
            self.rig_status = DiagStatus("camera rig", OK, f"TF extrinsics match the training rig within "
                                         f"{self.p('rig_tolerance.translation')} m / {self.p('rig_tolerance.rotation_deg')} deg")

    def _publish_job(self, item) -> None:
        if self._closing:
            return
        pred, assembled, timing = item
        t_pub = time.perf_counter()
        stages = self.publish_prediction(pred, assembled)
        t_end = time.perf_counter()
        latency_s = (self.get_clock().now().nanoseconds - assembled.stamp_ns) / 1e9
        overhead = timing["prepare_s"] + timing["assemble_s"] + (t_end - t_pub)
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
        if self._wants(self.pub_cloud, "publish.pointcloud"):
            # CDR bytes from the arrays (points gathered from the grid's cached centre table)
            self.pub_cloud.publish(conv.serialize_occupancy_cloud(labels, confidence, grid.lower, grid.voxel_size, header))
            self.published_counts["cloud"] += 1
            lap("cloud")
        if self._wants(self.pub_markers, "publish.markers") and \
                time.monotonic() - self._last_markers >= float(self.p("publish.marker_period")):
            self._last_markers = time.monotonic()
            xyz, lab = conv.marker_voxels(labels, grid.lower, grid.voxel_size, float(self.p("publish.marker_range")),
                                          int(self.p("publish.marker_max_count")),
                                          bool(self.p("publish.marker_surface_only")))
            # CDR bytes straight from the arrays: no Python object per cube
            self.pub_markers.publish(conv.serialize_occupancy_markers(
                xyz, lab, grid.voxel_size, header, alpha=float(self.p("publish.marker_alpha"))))
            self.published_counts["markers"] += 1
            lap("markers")
        if self._wants(self.pub_grid, "publish.grid"):
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
                if self._wants(pub, "publish.depth"):
                    pub.publish(conv.serialize_depth(depth[i], assembled.headers[i]))
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
        rig = self.rig_status
        if rig is not None:
            arr.status.append(DiagStatus_msg(rig, self.get_fully_qualified_name().lstrip("/")))
        listener = self.tf_listener
        if listener is not None and listener.rejected:
            arr.status.append(DiagnosticStatus(
                level=bytes([1]), name=f"{self.get_fully_qualified_name().lstrip('/')}: tf input",
                message=f"{listener.rejected} transforms rejected; last: {listener.last_rejection}",
                hardware_id="selfocc"))
        self.pub_diag.publish(arr)


def DiagStatus_msg(s: DiagStatus, prefix: str) -> DiagnosticStatus:  # noqa: N802 (a message factory)
    return DiagnosticStatus(level=bytes([s.level]), name=f"{prefix}: {s.name}", message=s.message, hardware_id="selfocc",
                            values=[KeyValue(key=k, value=v) for k, v in s.values.items()])


def _np(x):
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


EXECUTORS = ("single", "multi")


def make_executor(kind: str = "single", context=None):
    """The executor that spins the node: ``single`` (rclpy SingleThreadedExecutor, what main()
    uses) or ``multi`` (MultiThreadedExecutor, 2 threads; measured with the benchmark: its
    Python spin loop polls while callbacks run and takes CPU and GIL time from the inference
    thread, so it is kept only for comparison). rclpy.experimental.EventsExecutor stalled the
    benchmark's 12 Hz phase here (rclpy 9.1.2) and is not offered."""
    if kind == "single":
        return rclpy.executors.SingleThreadedExecutor(context=context)
    if kind == "multi":
        return rclpy.executors.MultiThreadedExecutor(num_threads=2, context=context)
    raise ValueError(f"executor must be one of {EXECUTORS}, got {kind!r}")


def main(args=None, exit_process: bool = True) -> int:
    """Entry point: configure (load the model), activate, spin until SIGINT/SIGTERM; exit status 0.

    A bad checkpoint exits with status 1. Shutdown (see selfocc_ros/shutdown.py): the signal only
    sets a flag, then inputs stop, the worker finishes its set without publishing, the node and
    the context go, in that order; a worker still inside a long ``predict`` after 1 s is not
    waited for. ``exit_process``: then end the process at once (``shutdown.exit_now``) instead of
    returning, so that finalizing the interpreter neither delays the exit nor runs under a
    still-busy worker.
    """
    stop = ShutdownRequest().install()
    with rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO) as init:
        node = OccupancyNode()
        try:
            node.configure()
        except (FileNotFoundError, ValueError) as e:
            node.get_logger().fatal(f"start-up failed: {e}")
            node.destroy_node()
            return 1
        node.activate()
        executor = make_executor("single")
        executor.add_node(node)
        stop.mark_ready()
        while not stop.requested() and init.context.ok():
            executor.spin_once(timeout_sec=0.1)
        node.get_logger().info(f"shutting down ({stop.describe()})")
        node.deactivate(worker_timeout=1.0)
        executor.remove_node(node)
        executor.shutdown(timeout_sec=0.5)
        node.destroy_node()
    if exit_process:
        exit_now(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
