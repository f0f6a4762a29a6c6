"""Evaluation: occupancy IoU/mIoU (Occ3D, SemanticKITTI-style geometry), RayIoU, above-ground scores with
flat-ground / perfect-ground references, depth metrics (also per range bin), `evaluate`."""

from selfocc_core.evaluation.depth_metrics import DepthEvalConfig, DepthMetrics, depth_errors
from selfocc_core.evaluation.depth_ranges import DepthRangeMetrics, box_exit_depth
from selfocc_core.evaluation.evaluate import EvalConfig, evaluate, format_summary
from selfocc_core.evaluation.occupancy_metrics import (
    GeometryMetrics,
    OccupancyMetrics,
    PostProcessConfig,
    post_process,
)
from selfocc_core.evaluation.occupancy_scores import OccupancyScores
from selfocc_core.evaluation.ray_metrics import RayIoUConfig, RayIoUMetrics, first_hits, lidar_ray_directions

__all__ = [
    "DepthEvalConfig", "DepthMetrics", "depth_errors", "EvalConfig", "evaluate", "format_summary",
    "GeometryMetrics", "OccupancyMetrics", "PostProcessConfig", "post_process",
    "DepthRangeMetrics", "box_exit_depth", "OccupancyScores", "RayIoUConfig", "RayIoUMetrics", "first_hits",
    "lidar_ray_directions",
]
