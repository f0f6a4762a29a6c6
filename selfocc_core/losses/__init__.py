"""SelfOcc's self-supervised losses: plain functions, weighted and summed in total.py."""

from selfocc_core.losses.config import LossConfig
from selfocc_core.losses.regularizers import edge_aware_smoothness, eikonal_loss, hessian_loss, sparsity_loss
from selfocc_core.losses.rendering_losses import rgb_loss, semantic_loss
from selfocc_core.losses.reprojection import RigView, reprojection_loss, sample_at_pixels
from selfocc_core.losses.ssim import photometric_error, ssim
from selfocc_core.losses.total import LossInputs, LossTerms, compute_losses

__all__ = [
    "LossConfig", "edge_aware_smoothness", "eikonal_loss", "hessian_loss", "sparsity_loss", "rgb_loss",
    "semantic_loss", "RigView", "reprojection_loss", "sample_at_pixels", "photometric_error", "ssim",
    "LossInputs", "LossTerms", "compute_losses",
]
