"""Loss configuration: the weight of every term and the self-supervision settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class LossConfig:
    reprojection_weight: float = 1.0
    """Weight of the reprojection (photometric) loss."""
    reprojection_mode: Literal["mvs", "rendered_depth"] = "mvs"
    """'mvs': every ray sample is a depth proposal, errors averaged with the rendering weights
    (SelfOcc); 'rendered_depth': warp with the rendered depth only (Monodepth2)."""
    ssim_alpha: float = 0.85
    """Photometric error = alpha * (1 - SSIM) / 2 + (1 - alpha) * L1."""
    automask: bool = True
    """Monodepth2 auto-masking: drop rays whose identity (unwarped) loss is lower."""
    source_cameras: Literal["all", "same"] = "all"
    """Where a proposal is looked up in a source frame: 'same' camera as the anchor ray only,
    or 'all' cameras (same camera preferred, else the first camera it lands inside)."""
    min_valid_weight: float = 0.5
    """A ray counts for a source frame only if this fraction of its rendering weight projects
    inside the source images."""
    background: Literal["none", "infinity", "beyond_box"] = "infinity"
    """What the transmittance left after a ray's last sample stands for. 'infinity': a background
    beyond the scene box: in the MVS loss it is one more depth proposal at infinite distance, in
    the RGB loss it takes the pixel's own colour (nothing is modelled there), so sky and far
    scenery need no surface inside the box. 'beyond_box': as 'infinity', but the background
    proposal is the best of several depths beyond the ray's exit from the box
    (`background_factors` x exit distance, and infinity): a facade above the box's top or past
    its side is then explained beyond the box instead of by a false wall where the ray leaves
    it. 'none': rendered colour is sum(w * rgb) only."""
    background_factors: list[float] = field(default_factory=lambda: [1.25, 1.6, 2.0, 3.0, 5.0])
    """'beyond_box': background proposals at these multiples of the box exit distance (> 1)."""
    rgb_weight: float = 0.1
    """L1 between rendered colour and pixel colour."""
    eikonal_weight: float = 0.1
    """(|grad sdf| - 1)^2 at ray samples."""
    eikonal_points: int = 4096
    """Ray samples (drawn at random) where the SDF gradient is evaluated."""
    hessian_weight: float = 0.01
    """Second-derivative magnitude of the SDF at ray samples."""
    hessian_points: int = 1024
    """Ray samples where the Hessian is evaluated."""
    sparsity_weight: float = 0.0
    """exp(-tau * |sdf|) at uniformly random points in the scene box."""
    sparsity_tau: float = 5.0
    """tau of the sparsity term (1/m)."""
    sparsity_points: int = 4096
    """Random points for the sparsity term."""
    prior_weight: float = 0.0
    """L1 pull of the SDF towards the model's initial SDF (ModelConfig.sdf_init: the ground plane)
    at the sparsity term's random points: unobserved space (above the tallest structures, far
    corners) stays free instead of drifting."""
    free_space_weight: float = 0.0
    """Weight of `regularizers.free_space_loss`: negative SDF at ray samples the renderer sees
    through (transmittance-weighted); removes solid that NeuS renders transparent."""
    free_space_margin: float = 0.0
    """Metres: samples seen through must have SDF above this."""
    smoothness_weight: float = 0.0
    """Edge-aware smoothness of the mean-normalised ray-grid depth image."""
    semantic_weight: float = 0.1
    """Cross-entropy of rendered semantics vs the frame's 2D segmentor labels (used only when
    the frame has seg_labels and the model has a semantic head)."""
    anchor_current_prob: float = 0.333
    """Probability of rendering the input frame itself (offset 0) as the anchor; otherwise a frame
    of `anchor_offsets` is the anchor (its cameras expressed in the input frame's ego frame)."""
    anchor_prev_prob: float = 0.5
    """Given an anchor other than the input frame, the probability it lies in the past (a negative
    offset of `anchor_offsets`) rather than the future (a positive one)."""
    anchor_offsets: list[int] = field(default_factory=lambda: [-1, 1])
    """Frame offsets an anchor other than the input frame may take, uniformly within the side
    `anchor_prev_prob` picked (each must be in `data.context_offsets`). Anchors further along the
    drive render the input frame's field from where its far scenery is near (the official code
    draws anchors displaced 0.4-30 m): under forward motion the far range gets the parallax the
    near range has. [-1, 1]: the adjacent frames only."""
    source_offsets: list[int] = field(default_factory=lambda: [-1, 1])
    """Source frames of an anchor at offset a: the sample's frames at a + o for o in this list
    (those the sample has; `data.context_offsets` decides which frames it has). Wider offsets
    give far scenery more parallax under forward motion (training/photometric_bound.py --proposals around_gt);
    the reprojection loss takes the per-ray minimum over the sources."""
    min_source_baseline: float = 0.1
    """Metres: a source frame whose cameras moved less than this from the anchor's (mean camera
    centre distance) carries no depth signal (zero parallax: any depth explains it, and
    auto-masking drops the static scene) and is skipped for that sample, as the official
    'strict' context sampling never pairs frames without displacement. The trainer counts the
    skipped pairs (log.jsonl ``pairs/*``, summary.json); an anchor left without any usable
    source is replaced by another offset that has one, a sample without any is skipped.
    0 = keep every pair."""

    def __post_init__(self):
        for name in ("reprojection_weight", "rgb_weight", "eikonal_weight", "hessian_weight",
                     "sparsity_weight", "prior_weight", "free_space_weight", "smoothness_weight", "semantic_weight", "sparsity_tau"):
            if getattr(self, name) < 0:
                raise ValueError(f"LossConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("ssim_alpha", "min_valid_weight", "anchor_current_prob", "anchor_prev_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"LossConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        if not self.source_offsets or 0 in self.source_offsets or len(set(self.source_offsets)) != len(self.source_offsets):
            raise ValueError(f"LossConfig.source_offsets must be distinct non-zero frame offsets, got {self.source_offsets}")
        if not self.anchor_offsets or 0 in self.anchor_offsets or len(set(self.anchor_offsets)) != len(self.anchor_offsets):
            raise ValueError(f"LossConfig.anchor_offsets must be distinct non-zero frame offsets, got {self.anchor_offsets}")
        if self.min_source_baseline < 0:
            raise ValueError(f"LossConfig.min_source_baseline must be >= 0 (metres), got {self.min_source_baseline}")
        for name in ("eikonal_points", "hessian_points", "sparsity_points"):
            if getattr(self, name) < 1:
                raise ValueError(f"LossConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.background_factors or any(not f > 1.0 for f in self.background_factors):
            raise ValueError(f"LossConfig.background_factors must be a non-empty list of values > 1, "
                             f"got {self.background_factors}")
