"""Evaluation: occupancy IoU/mIoU (Occ3D, SemanticKITTI-style geometry), depth metrics, `evaluate`."""

from selfocc_core.evaluation.depth_metrics import DepthEvalConfig, DepthMetrics, depth_errors
from selfocc_core.evaluation.evaluate import EvalConfig, evaluate, format_summary
from selfocc_core.evaluation.occupancy_metrics import (
    GeometryMetrics,
    OccupancyMetrics,
    PostProcessConfig,
    post_process,
)

__all__ = [
    "DepthEvalConfig", "DepthMetrics", "depth_errors", "EvalConfig", "evaluate", "format_summary",
    "GeometryMetrics", "OccupancyMetrics", "PostProcessConfig", "post_process",
]
