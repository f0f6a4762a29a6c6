"""SSIM / photometric error: hand-computed values, shapes, gradients."""

import math

import pytest
import torch

from selfocc_core.losses.ssim import C1, C2, photometric_error, ssim


def test_identical_images_give_one():
    x = torch.rand(2, 3, 7, 9)
    assert torch.allclose(ssim(x, x), torch.ones_like(x), atol=1e-5)
    assert photometric_error(x, x).abs().max() < 1e-5


@pytest.mark.parametrize("a,b", [(0.2, 0.7), (0.5, 0.5), (0.9, 0.1)])
def test_constant_images(a, b):
    x = torch.full((1, 3, 5, 6), a)
    y = torch.full((1, 3, 5, 6), b)
    expected = (2 * a * b + C1) / (a * a + b * b + C1)  # variances are 0: the contrast term is c2/c2
    assert torch.allclose(ssim(x, y), torch.full_like(x, expected), atol=1e-4)


def test_brightness_shift_centre_pixel():
    # 3x3 image 0..8 / 10; y = x + 0.1. At the centre the window is the whole image:
    # mu_x = 0.4, mu_y = 0.5, sigma_x = sigma_y = sigma_xy = var(0..8)/100 = 0.0666...
    x = (torch.arange(9.0) / 10).reshape(1, 1, 3, 3)
    y = x + 0.1
    var = 60.0 / 9.0 / 100.0
    expected = (2 * 0.4 * 0.5 + C1) * (2 * var + C2) / ((0.16 + 0.25 + C1) * (2 * var + C2))
    assert math.isclose(float(ssim(x, y)[0, 0, 1, 1]), expected, rel_tol=1e-5)


def test_photometric_error_mixes_ssim_and_l1():
    x = torch.full((1, 3, 4, 4), 0.2)
    y = torch.full((1, 3, 4, 4), 0.7)
    s = (2 * 0.2 * 0.7 + C1) / (0.04 + 0.49 + C1)
    expected = 0.85 * (1 - s) / 2 + 0.15 * 0.5
    err = photometric_error(x, y)
    assert err.shape == (1, 4, 4)
    assert torch.allclose(err, torch.full_like(err, expected), atol=1e-4)
    assert torch.allclose(photometric_error(x, y, alpha=0.0), torch.full_like(err, 0.5))


def test_any_leading_dims_and_shape_check():
    x, y = torch.rand(2, 3, 4, 3, 5, 6), torch.rand(2, 3, 4, 3, 5, 6)
    assert photometric_error(x, y).shape == (2, 3, 4, 5, 6)
    with pytest.raises(ValueError, match="shapes differ"):
        ssim(x, y[..., :5])


def test_gradcheck():
    x = torch.rand(1, 1, 4, 5, dtype=torch.float64, requires_grad=True)
    y = torch.rand(1, 1, 4, 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: photometric_error(a, y), (x,))
