"""The ROS-free core of the occupancy node: frame assembly, drop-old worker, diagnostics bookkeeping.

The node (occupancy_node.py) is a thin adapter around these pieces: it feeds synchronized
image sets in, and turns their results into messages. Nothing here imports rclpy, so all of it
is unit-testable with plain message objects and a dict-backed TF lookup.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from selfocc_core.data.sample import Frame
from selfocc_core.geometry.transforms import invert_transform
from selfocc_core.geometry.camera import scale_intrinsics
from selfocc_ros import compat
from selfocc_ros import conversions as conv


class InputError(ValueError):
    """A synchronized set that cannot become a Frame. ``kind`` keys diagnostics and throttling."""

    def __init__(self, kind: str, camera: str, message: str):
        super().__init__(f"[{kind}] {camera + ': ' if camera else ''}{message}")
        self.kind = kind
        self.camera = camera


# kinds of InputError (diagnostic keys)
ERR_IMAGE = "image"  # bad encoding / data length / corrupt compressed payload
ERR_SIZE = "size"  # image size != camera_info size, or cameras of different sizes
ERR_INFO = "camera_info"  # no or invalid CameraInfo
ERR_TF = "tf"  # TF lookup failed (unknown frame, extrapolation, NaN rejected upstream)


@dataclass(frozen=True)
class CameraConfig:
    """One camera input."""

    name: str
    """Camera name as the model knows it (e.g. CAM_FRONT); also names ~/depth/<name>."""
    image_topic: str
    """sensor_msgs/Image topic, or sensor_msgs/CompressedImage topic when `compressed`."""
    info_topic: str
    """sensor_msgs/CameraInfo topic (latest message is used; its size must match the image)."""
    compressed: bool = False
    """Subscribe to CompressedImage (JPEG/PNG) instead of raw Image."""
    frame_id: str = ""
    """Optical frame (REP 103 *_optical_frame) for TF; empty = the image header's frame_id."""


# ----------------------------------------------------------------------------- frame assembly


def decode_image(msg, camera: str) -> np.ndarray:
    """Image or CompressedImage -> ``[H, W, 3] uint8`` RGB, ConversionError -> InputError(image)."""
    arr, bgr = decode_image_view(msg, camera)
    return np.ascontiguousarray(arr[..., ::-1]) if bgr else arr


def decode_image_view(msg, camera: str) -> tuple[np.ndarray, bool]:
    """Image or CompressedImage -> (``[H, W, 3] uint8``, is_bgr); a view of a raw message's buffer
    where the encoding allows (conversions.image_to_color_view). ConversionError -> InputError(image)."""
    try:
        if hasattr(msg, "format") and not hasattr(msg, "encoding"):
            return conv.compressed_to_rgb(msg), False
        if compat.have_cv_bridge():
            return compat.image_to_rgb(msg), False
        return conv.image_to_color_view(msg)
    except conv.ConversionError as e:
        raise InputError(ERR_IMAGE, camera, str(e)) from e


ROW_STEP_AUTO = 0
"""``row_step`` value: the largest odd step with at least 4 kept rows per output row (see row_step_for)."""


def row_step_for(in_height: int, out_height: int, row_step: int = ROW_STEP_AUTO) -> int:
    """The row decimation step :func:`downscale_uint8` uses for ``in_height`` -> ``out_height``.

    ``row_step`` 1: exact (every row); an odd k > 1: every k-th row; ``ROW_STEP_AUTO`` (0): the
    largest odd k <= (in_height / out_height) / 4, i.e. the triangle filter of half-width
    in/out rows still sees >= 4 kept rows on each side (k = 3 for 900 -> 64, 1 for 900 -> 384):

        >>> row_step_for(900, 64), row_step_for(900, 384), row_step_for(1216, 64), row_step_for(900, 64, 1)
        (3, 1, 3, 1)

    Even steps are refused: no offset puts a kept row at the centre of an even group, so the
    result would be shifted by half an input row.
    """
    if check_row_step(row_step) == ROW_STEP_AUTO:
        k = int(in_height / max(1, out_height) / 4.0)
        return max(1, k if k % 2 else k - 1)
    return row_step


def check_row_step(row_step: int, name: str = "row_step") -> int:
    """``row_step`` itself when it is ``ROW_STEP_AUTO`` (0) or an odd step >= 1, else ValueError naming ``name``."""
    if row_step != ROW_STEP_AUTO and (row_step < 1 or row_step % 2 == 0):
        raise ValueError(f"{name} must be 0 (auto) or an odd step >= 1, got {row_step}")
    return row_step


def downscale_uint8(img: np.ndarray, bgr: bool, size: Optional[tuple[int, int]] = None,
                    device: str | torch.device = "cpu", row_step: int = 1) -> Tensor:
    """One decoded ``[H, W, 3] uint8`` image (a view allowed) -> ``[3, h, w]`` RGB, 0-255: uint8 on
    the CPU, float32 on a CUDA ``device``; never a view of ``img``.

    ``size = (h, w)``: the network input. The image is downscaled before anything else touches
    all its pixels: antialiased bilinear (align_corners=False) like data.images.resize_image,
    but on uint8 on the CPU (torch's vectorised uint8 path, ~20x cheaper than converting
    1600x900 to float first; the result differs from the float resize by < 1/255) and in float
    on a CUDA device after the uint8 upload. BGR channels are swapped after the resize.
    ``size=None``: no resize. As few torch calls as possible (each one hands the GIL over, and
    this runs in a subscription callback beside the inference thread): the float conversion of a
    camera set is one call, in :func:`network_images`.

    ``row_step`` (CPU only; :func:`row_step_for`, 1 = exact): the vertical filter reads only every
    k-th row, rows (k-1)/2, (k-1)/2 + k, ... -- each the centre of its group of k, so with the
    filter's scale given explicitly (k * h / H per kept row) every output row keeps the exact
    resize's centre and support, and only the triangle's integral over rows becomes a sum at
    stride k. On 1600x900 -> 64x112 with k = 3 this costs ~0.6x the exact resize for a mean error
    of ~0.06/255 more than the uint8 rounding (benchmarks/downscale.py has the numbers).
    """
    import torch.nn.functional as F

    device = torch.device(device)
    H, W = img.shape[:2]
    h, w = size or (H, W)
    k = row_step_for(H, h, row_step) if (h, w) != (H, W) and device.type == "cpu" else 1
    if k > 1:
        # the kept rows, copied by numpy (~0.1 ms): torch given the strided view copies it itself,
        # in a 2-thread parallel region that took 7 ms instead of 0.5 on the loaded 2-core machine
        img = np.ascontiguousarray(img[(k - 1) // 2::k])
    elif not img.flags.writeable or min(img.strides) < 0:  # bytes-backed (tests) or flipped: torch needs a copy
        img = img.copy()
    x = torch.from_numpy(img[None]).permute(0, 3, 1, 2)  # [1, 3, H, W] channels-last view, no copy
    if (h, w) != (H, W):
        if k > 1:
            # the aten op takes the scales the filter uses (output / input), here not the ratio of sizes
            x = torch.ops.aten._upsample_bilinear2d_aa(x, [h, w], False, k * h / H, w / W)
        elif device.type == "cpu":
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        else:
            x = F.interpolate(x.to(device, non_blocking=True).float(), size=(h, w), mode="bilinear",
                              align_corners=False, antialias=True).clamp_(0.0, 255.0)
    elif device.type == "cpu":
        x = x.clone()  # the message buffer goes after the callback
    else:
        x = x.to(device).float()
    return x[0].flip(0) if bgr else x[0]


def network_images(images: Sequence[Tensor]) -> Tensor:
    """N :func:`downscale_uint8` results -> ``[N, 3, h, w]`` float32 in [0, 1], contiguous (`/ 255`
    as the data readers do).

    On the CPU in numpy, single-threaded: a torch op this size (129k elements for 6 x 64x112)
    runs as a 2-thread parallel region, which waits for a descheduled thread whenever the other
    core is busy (the camera driver, the executor): measured 12-24 ms instead of 0.06 ms on the
    loaded 2-core machine. The values are the same (float32 division by 255 either way).
    """
    images = list(images)
    if images[0].device.type != "cpu":
        return torch.stack(images).float().div_(255.0).contiguous()
    stacked = np.stack([x.numpy() for x in images])
    return torch.from_numpy(np.divide(stacked, np.float32(255.0), dtype=np.float32))


def downscale_image(img: np.ndarray, bgr: bool, size: Optional[tuple[int, int]] = None,
                    device: str | torch.device = "cpu", row_step: int = 1) -> Tensor:
    """One decoded ``[H, W, 3] uint8`` image -> ``[3, h, w]`` float32 RGB in [0, 1] on ``device``
    (:func:`downscale_uint8`, then `/ 255`)."""
    return network_images([downscale_uint8(img, bgr, size, device, row_step)])[0]


def images_to_network_input(images: Sequence[np.ndarray], bgr: Sequence[bool], K: np.ndarray,
                            size: Optional[tuple[int, int]] = None,
                            device: str | torch.device = "cpu", row_step: int = 1) -> tuple[Tensor, Tensor]:
    """N decoded ``[H, W, 3] uint8`` images (views allowed) -> (``[N, 3, h, w]`` float32 in [0, 1]
    on ``device``, ``K [N, 3, 3]`` float32 scaled to (h, w)), each image by :func:`downscale_image`."""
    H, W = images[0].shape[:2]
    h, w = size or (H, W)
    out = network_images([downscale_uint8(img, swap, size, device, row_step) for img, swap in zip(images, bgr)])
    K_t = torch.as_tensor(np.asarray(K), dtype=torch.float64)
    if (h, w) != (H, W):
        K_t = scale_intrinsics(K_t, w / W, h / H)
    return out, K_t.float().to(device)


@dataclass
class PreparedImage:
    """One camera image as the subscription callback leaves it for the synchroniser: decoded and
    downscaled to the network input as it arrived (off the inference thread), so the camera set
    queues ~86 kB per image instead of the 4.3 MB message, which is released at once.

    ``header``: the message's std_msgs/Header (the synchroniser reads ``header.stamp``);
    ``image``: ``[3, h, w]`` RGB 0-255 (downscale_uint8: uint8 on the CPU; None when ``error`` is set or nothing was
    converted because no output had subscribers); ``full_hw``: (H, W) of the received image
    (checked against CameraInfo and used to scale K); ``decode_s`` / ``resize_s``: callback cost.
    The image never aliases the message buffer, so the message can go as soon as the callback returns.
    """

    header: object
    image: Optional[Tensor]
    full_hw: tuple[int, int]
    decode_s: float = 0.0
    resize_s: float = 0.0
    error: Optional[InputError] = None
    received_ns: Optional[int] = None  # node clock when the callback got the message (latency breakdown)
    cpu_s: float = 0.0  # this thread's CPU time for decode + resize (wall minus preemption by other threads / processes)


def prepare_image(msg, camera: str, size: Optional[tuple[int, int]] = None,
                  device: str | torch.device = "cpu", row_step: int = 1) -> PreparedImage:
    """Image / CompressedImage -> PreparedImage (decode_image_view + downscale_uint8 with ``row_step``); a bad image
    becomes a PreparedImage carrying its InputError (raised when its set is assembled, so the set
    is reported like any other bad input)."""
    t0, c0 = time.perf_counter(), time.thread_time()
    try:
        rgb, bgr = decode_image_view(msg, camera)
    except InputError as e:
        return PreparedImage(msg.header, None, (0, 0), time.perf_counter() - t0, 0.0, e)
    t1 = time.perf_counter()
    image = downscale_uint8(rgb, bgr, size, device, row_step)
    return PreparedImage(msg.header, image, tuple(rgb.shape[:2]), t1 - t0, time.perf_counter() - t1,
                         cpu_s=time.thread_time() - c0)


TfLookup = Callable[[str, str, int], np.ndarray]
"""``lookup(target_frame, source_frame, stamp_ns) -> 4x4 T_target_source``; raises on failure."""


@dataclass
class AssembledFrame:
    frame: Frame
    stamp_ns: int
    headers: list  # per camera std_msgs/Header of the input image (depth images reuse it)
    decode_s: float
    tf_s: float
    resize_s: float = 0.0  # uint8 -> network input (resize, normalise, to device)
    input_size: tuple[int, int] = (0, 0)  # (H, W) of the received images
    prepared_s: float = 0.0  # of decode_s + resize_s, what the subscription callbacks spent (PreparedImage)
    prepared_cpu_s: float = 0.0  # the callbacks' CPU time for it (PreparedImage.cpu_s)


def assemble_frame(
    images: Sequence,
    infos: Sequence,
    cameras: Sequence[CameraConfig],
    tf_lookup: TfLookup,
    base_frame: str,
    odom_frame: str,
    network_size: Optional[tuple[int, int]] = None,
    device: str | torch.device = "cpu",
    row_step: int = 1,
) -> AssembledFrame:
    """Synchronized image messages (or their PreparedImages) + latest CameraInfos + TF -> a model Frame.

    images[i]/infos[i] belong to cameras[i]. The frame's stamp is camera 0's image stamp;
    ``T_world_ego = T_odom_base(t0)`` and, folding per-camera ego motion as the readers do,
    ``T_ego_cam_i = T_odom_base(t0)^-1 @ T_odom_cam_i(t_i)``.
    ``network_size = (h, w)``: the frame's images are already downscaled to it (K scaled), on
    ``device`` (see images_to_network_input); None: the received size, on the CPU. ``row_step``:
    of messages prepared here (downscale_uint8).
    Raises InputError (kind image/size/camera_info/tf).
    """
    if not (len(images) == len(infos) == len(cameras)):
        raise ValueError(f"assemble_frame: {len(images)} images, {len(infos)} infos, {len(cameras)} cameras")
    t0 = time.perf_counter()
    # messages are prepared here; PreparedImages were prepared by the subscription callbacks
    items = [m if isinstance(m, PreparedImage) else prepare_image(m, cam.name, network_size, device, row_step)
             for m, cam in zip(images, cameras)]
    prepared = [it for it, m in zip(items, images) if isinstance(m, PreparedImage)]
    prepared_s = sum(it.decode_s + it.resize_s for it in prepared)
    prepared_cpu_s = sum(it.cpu_s for it in prepared)
    Ks = []
    for it, info, cam in zip(items, infos, cameras):
        if info is None:
            raise InputError(ERR_INFO, cam.name, f"no CameraInfo received yet on {cam.info_topic}")
        if it.error is not None:
            raise it.error
        if it.image is None:
            raise ValueError(f"assemble_frame: camera {cam.name}'s image was not converted")
        try:
            conv.check_image_matches_info(it.full_hw, info, cam.name)
            K = conv.camera_info_to_K(info)
        except conv.ConversionError as e:
            raise InputError(ERR_SIZE if "camera_info says" in str(e) else ERR_INFO, cam.name, str(e)) from e
        Ks.append(K)
    sizes = {it.full_hw for it in items}
    if len(sizes) != 1:
        raise InputError(ERR_SIZE, "", f"cameras have different image sizes {sorted(sizes)}; the model needs one size")
    t1 = time.perf_counter()

    stamps = [conv.stamp_to_ns(it.header.stamp) for it in items]
    stamp0 = stamps[0]
    try:
        T_world_ego = np.asarray(tf_lookup(odom_frame, base_frame, stamp0), dtype=np.float64)
    except Exception as e:  # tf2 exceptions have no common importable base here
        raise InputError(ERR_TF, "", f"{odom_frame} <- {base_frame} at {stamp0 / 1e9:.3f}: {e}") from e
    T_ego_world = invert_transform(T_world_ego)
    T_ego_cams = []
    for it, cam, st in zip(items, cameras, stamps):
        cam_frame = cam.frame_id or it.header.frame_id
        if not cam_frame:
            raise InputError(ERR_TF, cam.name, "image has an empty header.frame_id and no frame_id is configured")
        try:
            T_world_cam = np.asarray(tf_lookup(odom_frame, cam_frame, st), dtype=np.float64)
        except Exception as e:
            raise InputError(ERR_TF, cam.name, f"{odom_frame} <- {cam_frame} at {st / 1e9:.3f}: {e}") from e
        T_ego_cams.append(T_ego_world @ T_world_cam)
    T_ego_cam = np.stack(T_ego_cams)
    if not (np.isfinite(T_ego_cam).all() and np.isfinite(T_world_ego).all()):
        raise InputError(ERR_TF, "", "TF produced a non-finite transform")
    t2 = time.perf_counter()

    images_t = network_images([it.image for it in items])
    dev = images_t.device
    H, W = items[0].full_hw
    h, w = images_t.shape[-2:]
    K = np.stack(Ks).astype(np.float64)
    if (h, w) != (H, W):  # in numpy: no torch op (and its thread pool) in the worker's assembly
        K = scale_intrinsics(K, w / W, h / H)
    # float32 in numpy, then one from_numpy each (and a copy to the model's device): each torch call
    # hands the GIL over, which on the busy 2-core machine can cost far more than the op itself
    as_tensor = (lambda a: torch.from_numpy(a.astype(np.float32))) if dev.type == "cpu" else \
        (lambda a: torch.from_numpy(a.astype(np.float32)).to(dev))
    frame = Frame(
        images=images_t,
        K=as_tensor(K),
        T_ego_cam=as_tensor(T_ego_cam),
        T_world_ego=as_tensor(T_world_ego),
        timestamp=stamp0 / 1e9,
        camera_names=[c.name for c in cameras],
    )
    t3 = time.perf_counter()
    decode_s = sum(it.decode_s for it in items)
    resize_s = sum(it.resize_s for it in items) + (t3 - t2)
    # decode_s / resize_s: all of it, wherever it ran; prepared_s: the part the callbacks did
    return AssembledFrame(frame, stamp0, [it.header for it in items], decode_s, t2 - t1, resize_s, (H, W), prepared_s,
                          prepared_cpu_s)


# ----------------------------------------------------------------------------- worker


class LatestWorker:
    """Runs ``process(item)`` on a thread, always on the newest submitted item (drop-old).

    ``submit`` never blocks: an item still waiting when a newer one arrives is dropped and
    counted. Exceptions from ``process`` go to ``on_error`` (the thread keeps running).

    ``max_wait`` (seconds, 0 = no limit): an item that waited longer than this for the running
    ``process`` to finish is not processed when the thread comes to it (counted in ``stale``;
    ``on_stale(item, waited_s)`` is told); the thread then waits for the next submitted item.
    Bounds the age of what is processed (latency) at the cost of idle time (rate).
    """

    def __init__(self, process: Callable[[object], None], on_error: Callable[[BaseException], None] | None = None,
                 name: str = "selfocc-inference", max_wait: float = 0.0,
                 on_stale: Callable[[object, float], None] | None = None):
        if max_wait < 0:
            raise ValueError(f"max_wait must be >= 0 (0: no limit), got {max_wait}")
        self._process = process
        self._on_error = on_error
        self._on_stale = on_stale
        self.max_wait = max_wait
        self._cond = threading.Condition()
        self._item = None
        self._item_t = 0.0  # monotonic time of the submit of the waiting item
        self._has_item = False
        self._stop = False
        self._busy = False
        self.submitted = 0
        self.dropped = 0
        self.stale = 0
        self.processed = 0
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "LatestWorker":
        self._thread.start()
        return self

    def submit(self, item) -> bool:
        """Queue ``item``; returns True when it replaced an unprocessed one (which is dropped)."""
        with self._cond:
            replaced = self._has_item
            self._item, self._has_item, self._item_t = item, True, time.monotonic()
            self.submitted += 1
            if replaced:
                self.dropped += 1
            self._cond.notify()
        return replaced

    def idle(self) -> bool:
        with self._cond:
            return not self._has_item and not self._busy

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop after the current item (a queued one is dropped); True when the thread has ended
        within ``timeout`` s (False: ``process`` is still running, e.g. a long inference)."""
        with self._cond:
            self._stop = True
            self._item, self._has_item = None, False
            self._cond.notify()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def stopping(self) -> bool:
        return self._stop

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._has_item and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                item, self._item, self._has_item = self._item, None, False
                waited = time.monotonic() - self._item_t
                if self.max_wait > 0 and waited > self.max_wait:
                    self.stale += 1
                    stale = True
                else:
                    stale = False
                    self._busy = True
            if stale:
                if self._on_stale is not None:
                    self._on_stale(item, waited)
                continue
            try:
                self._process(item)
                self.processed += 1
            except BaseException as e:  # keep serving; the node reports it
                self.errors += 1
                if self._on_error is not None:
                    self._on_error(e)
            finally:
                with self._cond:
                    self._busy = False


# ----------------------------------------------------------------------------- diagnostics

OK, WARN, ERROR, STALE = 0, 1, 2, 3  # diagnostic_msgs/DiagnosticStatus levels


@dataclass
class DiagStatus:
    name: str
    level: int
    message: str
    values: dict[str, str] = field(default_factory=dict)


class RateMeter:
    """Events per second over a sliding window of the last ``window`` seconds."""

    def __init__(self, window: float = 5.0):
        self.window = window
        self.times: collections.deque[float] = collections.deque()

    def tick(self, now: float) -> None:
        self.times.append(now)
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self.times and self.times[0] < now - self.window:
            self.times.popleft()

    def rate(self, now: float) -> float:
        self._trim(now)
        if len(self.times) < 2:
            return 0.0
        span = max(now - self.times[0], self.times[-1] - self.times[0])
        return (len(self.times) - 1) / span if span > 0 else 0.0


class WarnThrottle:
    """Per-key log throttling: a key may log once every ``period`` seconds."""

    def __init__(self, period: float = 5.0):
        self.period = period
        self._last: dict[object, float] = {}

    def should_log(self, key, now: float) -> bool:
        last = self._last.get(key)
        if last is None or now - last >= self.period:
            self._last[key] = now
            return True
        return False


class NodeStats:
    """Counters and windows behind /diagnostics. Thread-safe; times are monotonic seconds."""

    def __init__(self, camera_names: Sequence[str], camera_timeout: float, window: float = 5.0):
        self.camera_names = list(camera_names)
        self.camera_timeout = camera_timeout
        self._lock = threading.Lock()
        self.rx_rate = {c: RateMeter(window) for c in self.camera_names}
        self.last_rx: dict[str, Optional[float]] = {c: None for c in self.camera_names}
        self.start_time = time.monotonic()
        self.synced = RateMeter(window)
        self.published = RateMeter(window)
        self.sets_synced = 0
        self.sets_dropped = 0
        self.sets_stale = 0  # waited longer than max_queue_wait for the running inference: not inferred
        self.sets_published = 0
        self.sets_unwanted = 0  # no output had a subscriber: not even inferred
        self.results_dropped = 0  # inferred, but replaced by a newer result before it could be sent
        self.errors: collections.Counter = collections.Counter()  # kind -> count
        self.last_error: dict[str, str] = {}
        self.latency = collections.deque(maxlen=50)  # image stamp -> publish (s, ROS clock)
        self.model_s = collections.deque(maxlen=50)
        self.overhead_s = collections.deque(maxlen=50)

    def on_image(self, camera: str, now: float) -> None:
        with self._lock:
            self.rx_rate[camera].tick(now)
            self.last_rx[camera] = now

    def on_synced(self, now: float, dropped: bool) -> None:
        with self._lock:
            self.sets_synced += 1
            self.sets_dropped += int(dropped)
            self.synced.tick(now)

    def on_stale(self) -> None:
        with self._lock:
            self.sets_stale += 1

    def on_unwanted(self) -> None:
        with self._lock:
            self.sets_unwanted += 1

    def on_result_dropped(self) -> None:
        with self._lock:
            self.results_dropped += 1

    def on_error(self, kind: str, message: str) -> None:
        with self._lock:
            self.errors[kind] += 1
            self.last_error[kind] = message

    def on_published(self, now: float, latency_s: float, model_s: float, overhead_s: float) -> None:
        with self._lock:
            self.sets_published += 1
            self.published.tick(now)
            self.latency.append(latency_s)
            self.model_s.append(model_s)
            self.overhead_s.append(overhead_s)

    def stale_cameras(self, now: float) -> list[str]:
        with self._lock:
            ref = {c: (t if t is not None else self.start_time) for c, t in self.last_rx.items()}
        return [c for c, t in ref.items() if now - t > self.camera_timeout]

    def statuses(self, now: float, prefix: str = "selfocc_ros") -> list[DiagStatus]:
        stale = set(self.stale_cameras(now))
        out = []
        with self._lock:
            for c in self.camera_names:
                last = self.last_rx[c]
                age = (now - last) if last is not None else float("inf")
                level = WARN if c in stale else OK
                msg = (f"no image for {age:.1f} s (timeout {self.camera_timeout:.1f} s)" if last is not None
                       else "no image received yet") if c in stale else "ok"
                out.append(DiagStatus(f"{prefix}: camera {c}", level, msg, {
                    "rate_hz": f"{self.rx_rate[c].rate(now):.2f}",
                    "age_s": "inf" if last is None else f"{age:.3f}",
                }))
            lat = np.array(self.latency) if self.latency else np.zeros(0)
            values = {
                "synced_sets": str(self.sets_synced),
                "dropped_sets": str(self.sets_dropped),
                "stale_sets": str(self.sets_stale),
                "published_sets": str(self.sets_published),
                "sets_without_subscribers": str(self.sets_unwanted),
                "results_dropped": str(self.results_dropped),
                "sync_rate_hz": f"{self.synced.rate(now):.2f}",
                "publish_rate_hz": f"{self.published.rate(now):.2f}",
                "latency_mean_s": f"{lat.mean():.4f}" if lat.size else "nan",
                "latency_max_s": f"{lat.max():.4f}" if lat.size else "nan",
                "model_mean_s": f"{np.mean(self.model_s):.4f}" if self.model_s else "nan",
                "overhead_mean_s": f"{np.mean(self.overhead_s):.4f}" if self.overhead_s else "nan",
            }
            for kind in (ERR_IMAGE, ERR_SIZE, ERR_INFO, ERR_TF, "inference"):
                values[f"errors_{kind}"] = str(self.errors.get(kind, 0))
            level, msg = OK, "ok"
            if self.errors:
                kind = max(self.last_error, key=lambda k: self.errors[k])
                level, msg = WARN, f"{sum(self.errors.values())} input errors; last {kind}: {self.last_error[kind]}"
            if stale:
                level = max(level, WARN)
                msg = f"stale cameras: {', '.join(sorted(stale))}" + ("" if msg == "ok" else f"; {msg}")
            out.insert(0, DiagStatus(f"{prefix}: pipeline", level, msg, values))
            tf_level = WARN if self.errors.get(ERR_TF) else OK
            out.insert(1, DiagStatus(f"{prefix}: tf", tf_level, self.last_error.get(ERR_TF, "ok"),
                                     {"failures": str(self.errors.get(ERR_TF, 0))}))
        return out


# ----------------------------------------------------------------------------- model


def load_predictor(checkpoint: str, device: str, model_config: str = ""):
    """OccupancyPredictor.from_checkpoint with start-up errors that name the file and expected config.

    ``model_config``: optional model YAML the checkpoint's stored config must equal.

    Raises FileNotFoundError (missing file) or ValueError (not a selfocc checkpoint / mismatched
    config); the node lets these end start-up.
    """
    path = Path(checkpoint).expanduser()
    expected = "a selfocc_core checkpoint (selfocc_core.training.checkpoint.save_checkpoint, e.g. the tiny_synth preset)"
    if not checkpoint:
        raise FileNotFoundError(f"parameter 'checkpoint' is empty: set it to {expected}")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (expected {expected})")
    from selfocc_core.inference.predictor import OccupancyPredictor

    try:
        return OccupancyPredictor.from_checkpoint(str(path), device=device, expected_config=model_config or None)
    except FileNotFoundError as e:  # a missing model_config preset/file
        raise FileNotFoundError(f"{e} (checkpoint {path}, model_config '{model_config}')") from e
    except ValueError as e:
        raise ValueError(f"cannot use checkpoint {path}: {e} (expected {expected}"
                         + (f" with the model config '{model_config}')" if model_config else ")")) from e
    except Exception as e:  # anything else from torch.load / building the model -> one clear message
        raise ValueError(f"cannot load checkpoint {path}: {type(e).__name__}: {e} (expected {expected})") from e


def check_predictor_cameras(predictor, camera_names: Sequence[str], checkpoint: str = "") -> None:
    """The node's cameras must be the checkpoint's training cameras, in order (when it names them)."""
    expected = list(getattr(predictor, "camera_names", []) or [])
    if expected and list(camera_names) != expected:
        raise ValueError(f"checkpoint {checkpoint or '<model>'} was trained on cameras {expected} (in this order), "
                         f"but the node's parameter camera_names is {list(camera_names)}")


def default_device(requested: str) -> str:
    if requested in ("", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


# ----------------------------------------------------------------------------- training rig vs TF


def _fmt_T(T: np.ndarray) -> str:
    from selfocc_core.geometry.transforms import matrix_to_quaternion

    t = T[:3, 3]
    q = matrix_to_quaternion(T[:3, :3])
    return f"t=({t[0]:.3f}, {t[1]:.3f}, {t[2]:.3f}) m q_wxyz=({q[0]:.3f}, {q[1]:.3f}, {q[2]:.3f}, {q[3]:.3f})"


def compare_rig(T_tf: np.ndarray, rig: dict, camera_names: Sequence[str], base_frame: str, camera_frames: Sequence[str],
                tol_translation: float, tol_rotation_deg: float) -> list[str]:
    """Cameras whose TF extrinsics differ from the checkpoint's training rig beyond the tolerances.

    ``T_tf[i]`` is ``T_base_cam`` from TF (``base_frame`` <- ``camera_frames[i]``), ``rig`` the
    stored training rig (``T_ego_cam`` in the training ego frame). Returns one message per camera
    that differs, naming both transforms, the difference and what it means for the ego frame:

        >>> rig = {"camera_names": ["A"], "T_ego_cam": np.eye(4)[None], "ground_z": 0.0}
        >>> T = np.eye(4); T[2, 3] = 1.65
        >>> compare_rig(T[None], rig, ["A"], "base_link", ["a_optical"], 0.05, 2.0)[0][:60]
        'A: TF base_link <- a_optical is t=(0.000, 0.000, 1.650) m q_'
    """
    T_tf = np.asarray(T_tf, dtype=np.float64)
    T_rig = np.asarray(rig["T_ego_cam"], dtype=np.float64)
    names = list(rig["camera_names"])
    out = []
    for i, cam in enumerate(camera_names):
        if cam not in names:
            continue
        R = T_rig[names.index(cam)]
        dt = float(np.linalg.norm(T_tf[i, :3, 3] - R[:3, 3]))
        cos = (np.trace(T_tf[i, :3, :3].T @ R[:3, :3]) - 1.0) / 2.0
        dr = float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
        if dt > tol_translation or dr > tol_rotation_deg:
            dz = T_tf[i, 2, 3] - R[2, 3]
            out.append(
                f"{cam}: TF {base_frame} <- {camera_frames[i]} is {_fmt_T(T_tf[i])}, but the checkpoint was trained "
                f"with T_ego_cam {_fmt_T(R)} (differs by {dt:.3f} m, {dr:.1f} deg; tolerance {tol_translation} m, "
                f"{tol_rotation_deg} deg): base_frame '{base_frame}' is not the training ego frame"
                + (f" (the training ground z={rig['ground_z']:.2f} m would be at z={rig['ground_z'] + dz:.2f} m in "
                   f"{base_frame})" if abs(dz) > tol_translation else ""))
    return out
