"""Subtraction of a template convolved with a known kernel leaves noise-like residuals."""

from __future__ import annotations

import numpy as np
from scipy import signal

from pipeline.psf import build_pixel_psf
from pipeline.sim.render import add_point_sources
from pipeline.subtract import SubtractConfig, subtract
from pipeline.types import MaskedImage


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
    result = subtract(sci, tmpl, x, y, float(psf.sigma_at(300, 300)), 3.4 / 2.3548,
                      SubtractConfig(do_scale_variance=False), science_psf=psf)
    pulls = (result.difference.image / np.sqrt(result.difference.variance))[30:-30, 30:-30]
    assert 0.9 < float(np.std(pulls)) < 1.1
    # The difference PSF is the science PSF convolved with the decorrelation kernel: a bit wider.
    assert result.difference_psf is not None
    assert float(result.difference_psf.fwhm_at(300, 300)) >= 0.98 * float(psf.fwhm_at(300, 300))
