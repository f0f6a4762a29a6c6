"""Datasets: one sample schema (`sample.py`) and readers for each source."""

from selfocc_core.data.sample import Frame, GroundTruth, Sample, collate_samples

__all__ = ["Frame", "GroundTruth", "Sample", "collate_samples"]
