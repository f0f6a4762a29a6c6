"""`DataConfig`: what every dataset reader needs to know (plain, YAML-friendly)."""

from __future__ import annotations

from dataclasses import dataclass, field

GT_DEPTH_SOURCES = ("auto", "lidar", "stereo")


@dataclass(frozen=True)
class DataConfig:
    """Options shared by all readers (nuScenes, KITTI, DDAD, rosbag, synthetic)."""

    image_height: int = 224
    """Network input height in pixels; images are resized to it and K is updated."""

    image_width: int = 400
    """Network input width in pixels; images are resized to it and K is updated."""

    cameras: list[str] = field(default_factory=list)
    """Camera names to load, in this order (e.g. ["CAM_FRONT", "CAM_BACK"], KITTI "image_2").
    Empty = all cameras of the dataset (KITTI: the left colour camera image_2, else image_0)."""

    context_offsets: list[int] = field(default_factory=lambda: [-1, 1])
    """Temporal context to load around each input frame (-1 = previous, +1 = next, +-2 ...)."""

    min_ego_distance: float = 0.3
    """Metres the ego must have moved for a candidate frame to serve as context (stereo baseline);
    when the ego stands still the nearest frame in time is used instead."""

    max_ego_distance: float = 10.0
    """Metres beyond which a candidate frame is too far away to serve as context."""

    max_context_time: float = 1.0
    """Seconds: candidate context frames further from the input frame in time are ignored."""

    require_context: bool = True
    """Only yield input frames for which every offset in `context_offsets` has a frame
    (readers of single-frame data such as the nuScenes info pickle ignore this)."""

    load_gt: bool = True
    """Attach ground truth (occupancy, LiDAR depth) where the dataset has it (evaluation only)."""

    gt_depth_max: float = 80.0
    """Metres: LiDAR points (and stereo depths) further than this are left out of the GT depth maps."""

    gt_depth_source: str = "auto"
    """Where GT depth comes from (KITTI readers): "lidar" (Velodyne scans only), "stereo" (OpenCV
    SGBM with a left-right check on the rectified pair image_2/image_3 or image_0/image_1, see
    `data.stereo_depth`; invalid pixels carry no GT), or "auto" (LiDAR where the frame has a scan,
    else stereo where the camera has a stereo partner on disk)."""

    stereo_disparity_offset: float = 0.0
    """Pixels added to every measured stereo disparity (a rig constant: true d = measured d + offset;
    kitti_raw_0001's README measures 0.985 px for its colour pair)."""

    stereo_cache_dir: str = ""
    """Folder for the cached stereo depth maps; "" = $SELFOCC_CACHE_DIR/stereo_depth or
    ~/.cache/selfocc/stereo_depth."""

    scenes: list[str] = field(default_factory=list)
    """Scene / sequence / drive names to read (nuScenes scene names, KITTI "00", DDAD "scene_02").
    Empty = the dataset's own list for the requested split."""

    nuscenes_version: str = ""
    """nuScenes table version, e.g. "v1.0-mini". Empty = the one v1.0-* folder in the dataroot."""

    def __post_init__(self):
        if self.image_height <= 0 or self.image_width <= 0:
            raise ValueError(f"DataConfig: image size must be positive, got {self.image_height}x{self.image_width}")
        if 0 in self.context_offsets:
            raise ValueError("DataConfig.context_offsets must not contain 0 (the input frame itself)")
        if len(set(self.context_offsets)) != len(self.context_offsets):
            raise ValueError(f"DataConfig.context_offsets has duplicates: {self.context_offsets}")
        if self.min_ego_distance < 0 or self.max_ego_distance <= self.min_ego_distance:
            raise ValueError(
                f"DataConfig: need 0 <= min_ego_distance < max_ego_distance, got "
                f"{self.min_ego_distance}, {self.max_ego_distance}"
            )
        if self.gt_depth_source not in GT_DEPTH_SOURCES:
            raise ValueError(f"DataConfig.gt_depth_source must be one of {GT_DEPTH_SOURCES}, got {self.gt_depth_source!r}")
        if self.max_context_time <= 0:
            raise ValueError(f"DataConfig.max_context_time must be positive, got {self.max_context_time}")
