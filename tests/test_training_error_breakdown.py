"""training/depth_error_breakdown.py: the AbsRel shares add up and find the pixels that carry it."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

from depth_error_breakdown import breakdown  # noqa: E402


def test_shares_sum_to_one_and_locate_the_gross_misses():
    rng = np.random.default_rng(0)
    n = 10_000
    gt = rng.uniform(2.0, 60.0, n)
    pred = gt * rng.uniform(0.95, 1.05, n)  # 5 % misses everywhere ...
    rows = rng.uniform(0.0, 1.0, n)
    top = rows < 0.2
    far_miss = top & (rng.uniform(0, 1, n) < 0.1)
    pred[far_miss] = 80.0  # ... and 2 % of the pixels, all in the top rows, at the 80 m cap
    gt[:50] = 0.0  # no reference depth: not scored
    out = breakdown(pred, gt, rows)
    assert out["num_pixels"] == n - 50
    for key in ("by_ratio", "by_range", "by_row_band"):
        assert abs(sum(v["abs_rel_share"] for v in out[key].values()) - 1.0) < 2e-3
        assert abs(sum(v["pixels"] for v in out[key].values()) - 1.0) < 2e-3
    err = np.abs(np.clip(pred, 0.1, 80.0) - gt) / np.where(gt > 0, gt, 1)
    assert abs(out["abs_rel_pooled"] - err[gt > 0.1].mean()) < 1e-3
    # the misses at the cap are a few pixels and most of the score, all in the top row band
    gross = out["by_ratio"]["2-inf"]
    assert gross["pixels"] < 0.03 and gross["abs_rel_share"] > 0.5
    assert out["by_row_band"]["0.0-0.2"]["abs_rel_share"] > 0.5
    assert out["abs_rel_without_gross"] < 0.03 < out["abs_rel_pooled"]
