"""Subtraction of a template convolved with a known kernel leaves noise-like residuals."""

from __future__ import annotations

import numpy as np
from scipy import signal

from pipeline.psf import build_pixel_psf
from pipeline.subtract import SubtractConfig, subtract_images
from pipeline.types import MaskedImage
from simulator.render import add_point_sources


def test_difference_is_noise_like():
    rng = np.random.default_rng(11)
    ny, nx = 600, 600
    n = 36
    grid = np.stack(np.meshgrid(np.arange(6), np.arange(6)), -1).reshape(-1, 2)
    x = 50.0 + grid[:, 0] * 100.0 + rng.uniform(-0.5, 0.5, n)
    y = 50.0 + grid[:, 1] * 100.0 + rng.uniform(-0.5, 0.5, n)
    flux = 10 ** rng.uniform(4.5, 5.3, n)
    template_truth = np.zeros((ny, nx))
    add_point_sources(template_truth, x, y, flux, 3.4)
    u = np.arange(-10, 11)
    kernel = np.exp(-0.5 * (u[None, :] ** 2 + u[:, None] ** 2) / 2.0**2)
    kernel /= kernel.sum()
    science_truth = signal.fftconvolve(template_truth, kernel, mode="same")
    sky_sci, sky_tmpl = 400.0, 20.0
    science_var = sky_sci + science_truth
    template_var = np.full((ny, nx), sky_tmpl)
    science = science_truth + rng.normal(0.0, np.sqrt(science_var))
    template = template_truth + rng.normal(0.0, np.sqrt(template_var))
    mask = np.zeros((ny, nx), np.int32)
    sci = MaskedImage(image=science.astype(np.float32), mask=mask, variance=science_var.astype(np.float32))
    tmpl = MaskedImage(image=template.astype(np.float32), mask=mask.copy(), variance=template_var.astype(np.float32))
    psf = build_pixel_psf(science, x, y, spatial_order=0)
    result = subtract_images(sci, tmpl, x, y, science_sigma_pix=float(psf.sigma_at(300, 300)),
                             template_sigma_pix=3.4 / 2.3548, config=SubtractConfig(do_scale_variance=False),
                             science_psf=psf)
    pulls = (result.difference.image / np.sqrt(result.difference.variance))[30:-30, 30:-30]
    assert 0.9 < float(np.std(pulls)) < 1.1
    # The difference PSF is the science PSF convolved with the decorrelation kernel: a bit wider.
    assert result.difference_psf is not None
    assert float(result.difference_psf.fwhm_at(300, 300)) >= 0.98 * float(psf.fwhm_at(300, 300))


def _varying_pair(seed: int = 5):
    """A template with a constant PSF and a science image whose PSF widens from left to right (FWHM 4 to 6
    pixels) on a sky with a gradient; stars on a grid. Returns images, star positions and the true gradient."""
    rng = np.random.default_rng(seed)
    ny, nx = 800, 800
    grid = np.stack(np.meshgrid(np.arange(8), np.arange(8)), -1).reshape(-1, 2)
    x = 50.0 + grid[:, 0] * 100.0 + rng.uniform(-0.5, 0.5, 64)
    y = 50.0 + grid[:, 1] * 100.0 + rng.uniform(-0.5, 0.5, 64)
    flux = 10 ** rng.uniform(4.7, 5.3, 64)
    template_truth, science_truth = np.zeros((ny, nx)), np.zeros((ny, nx))
    add_point_sources(template_truth, x, y, flux, 3.0)
    for i in range(64):
        add_point_sources(science_truth, x[i:i + 1], y[i:i + 1], flux[i:i + 1], 4.0 + 2.0 * x[i] / nx)
    yy, xx = np.mgrid[0:ny, 0:nx]
    gradient = 30.0 * (2 * xx / (nx - 1) - 1) + 20.0 * (2 * yy / (ny - 1) - 1)
    science_var = 400.0 + science_truth
    template_var = np.full((ny, nx), 20.0)
    science = science_truth + gradient + rng.normal(0.0, np.sqrt(science_var))
    template = template_truth + rng.normal(0.0, np.sqrt(template_var))
    mask = np.zeros((ny, nx), np.int32)
    sci = MaskedImage(image=science.astype(np.float32), mask=mask, variance=science_var.astype(np.float32))
    tmpl = MaskedImage(image=template.astype(np.float32), mask=mask.copy(), variance=template_var.astype(np.float32))
    return sci, tmpl, x, y, gradient


def test_spatially_varying_kernel_and_background():
    """A first-order kernel follows a PSF that varies over the CCD, and a first-order background removes a sky
    gradient; a constant kernel leaves star residuals and the gradient's slope."""
    sci, tmpl, x, y, gradient = _varying_pair()
    results = {}
    for order in (0, 1):
        config = SubtractConfig(spatial_order=order, do_scale_variance=False, do_model_error_variance=False,
                                do_decorrelation=False)
        results[order] = subtract_images(sci, tmpl, x, y, science_sigma_pix=5.0 / 2.3548,
                                         template_sigma_pix=3.0 / 2.3548, config=config)
    assert results[1].kernel_model.order == 1 and results[0].kernel_model.order == 0

    def star_chi2(result):
        d, v = result.difference.image, result.difference.variance
        boxes = [(d[int(b) - 4:int(b) + 5, int(a) - 4:int(a) + 5] ** 2
                  / v[int(b) - 4:int(b) + 5, int(a) - 4:int(a) + 5]).mean() for a, b in zip(x, y)]
        return float(np.median(boxes))

    # Residuals at the stars: with the varying kernel near the noise (chi^2 per pixel ~1); constant: not.
    assert star_chi2(results[1]) < 1.5
    assert star_chi2(results[0]) > 2.0 * star_chi2(results[1])
    # Star-free sky between the stars (the grid's gaps, over the whole CCD): a first-order background removes
    # the +-50 gradient to a few (the rest is kernel wing beyond the stamps that the background absorbs);
    # a constant one leaves the slope.
    def sky(result):
        d = result.difference.image
        return np.array([np.median(d[b - 15:b + 15, a - 15:a + 15]) for b in (100, 400, 700) for a in (100, 400, 700)])

    assert np.abs(sky(results[1])).max() < 8.0
    assert np.abs(sky(results[0])).max() > 30.0
