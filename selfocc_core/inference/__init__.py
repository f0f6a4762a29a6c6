"""Inference: `OccupancyPredictor.from_checkpoint(path).predict(frame) -> OccupancyPrediction`."""

from selfocc_core.inference.predictor import OccupancyPrediction, OccupancyPredictor

__all__ = ["OccupancyPrediction", "OccupancyPredictor"]
