"""Pixel PSF model against synthetic Moffat stars of known FWHM and flux."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.measure import psf_flux
from pipeline.psf import PixelPsf, StarStampCache, build_pixel_psf, nanmedian_first_axis, psf_from_gaussian
from pipeline.types import MaskedImage
from simulator.render import add_point_sources


def _star_field(fwhm_pix: float, seed: int = 3, n: int = 30, shape=(800, 800), sky: float = 1000.0):
    rng = np.random.default_rng(seed)
    ny, nx = shape
    grid = np.stack(np.meshgrid(np.arange(6), np.arange(5)), -1).reshape(-1, 2)[:n]
    x = 60.0 + grid[:, 0] * 130.0 + rng.uniform(-0.5, 0.5, n)
    y = 60.0 + grid[:, 1] * 150.0 + rng.uniform(-0.5, 0.5, n)
    flux = 10 ** rng.uniform(5.0, 5.7, n)
    truth = np.zeros(shape)
    add_point_sources(truth, x, y, flux, fwhm_pix)
    image = truth + rng.normal(0.0, np.sqrt(sky + truth))
    return image, x, y, flux


@pytest.mark.parametrize("fwhm_pix", [3.5, 5.0, 7.5])
def test_pixel_psf_fwhm_and_flux(fwhm_pix):
    image, x, y, _ = _star_field(fwhm_pix)
    psf = build_pixel_psf(image, x, y, spatial_order=0)
    assert isinstance(psf, PixelPsf)
    assert abs(float(psf.fwhm_at(400.0, 400.0)) / fwhm_pix - 1) < 0.03
    # PSF flux of noiseless point sources at random sub-pixel positions.
    rng = np.random.default_rng(7)
    xs, ys = rng.uniform(50, 750, 40), rng.uniform(50, 750, 40)
    true_flux = np.full(40, 2.0e5)
    clean = np.zeros(image.shape)
    add_point_sources(clean, xs[:20], ys[:20], true_flux[:20], fwhm_pix)
    plane = MaskedImage(image=clean, mask=np.zeros(clean.shape, np.int32), variance=np.ones_like(clean))
    fit = psf_flux(plane, xs[:20], ys[:20], psf)
    assert abs(np.median(fit["flux"] / true_flux[:20]) - 1) < 0.02


def test_stamps_are_normalised_and_centred():
    psf = psf_from_gaussian(2.0, (100, 100))
    stamps = psf.stamps(np.array([10.3, 50.0]), np.array([20.0, 60.4]), 12)
    assert stamps.shape == (2, 25, 25)
    np.testing.assert_allclose(stamps.sum(axis=(1, 2)), 1.0, atol=1e-3)
    u = np.arange(-12, 13)
    cx = np.sum(stamps[0] * u[None, :]) / stamps[0].sum()
    cy = np.sum(stamps[1] * u[:, None]) / stamps[1].sum()
    assert abs(cx - 0.3) < 0.02 and abs(cy - 0.4) < 0.02
    assert abs(float(psf.sigma_at(0, 0)) - 2.0) < 0.05


def test_star_at_the_image_edge_is_used_without_its_missing_pixels():
    """A PSF star whose stamp leaves the image (a star a few pixels from the CCD edge, as a real night had):
    its outside pixels count as masked, and the model is the same as without that star to within 1%."""
    image, x, y, _ = _star_field(5.0)
    edge_x, edge_y = np.append(x, 797.6), np.append(y, 400.2)
    add_point_sources(image, edge_x[-1:], edge_y[-1:], np.array([3e5]), 5.0)
    with_edge = build_pixel_psf(image, edge_x, edge_y, spatial_order=0, half_size=12)
    without = build_pixel_psf(image, x, y, spatial_order=0, half_size=12)
    assert abs(float(with_edge.fwhm_at(400.0, 400.0)) / float(without.fwhm_at(400.0, 400.0)) - 1) < 0.01


def test_nanmedian_first_axis_is_numpys():
    rng = np.random.default_rng(5)
    for shape in [(7, 5, 5), (40, 9), (1, 4), (2, 6)]:
        values = rng.normal(size=shape)
        values[rng.random(shape) < 0.3] = np.nan
        values[..., 0] = np.nan  # a column with no value
        values.flat[1] = np.inf
        with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning):
            expected = np.nanmedian(values, axis=0)
        np.testing.assert_array_equal(nanmedian_first_axis(values), expected)  # exact, NaN where numpy's is


def test_rebuild_from_a_subset_of_cached_stamps_is_a_fresh_build():
    image, x, y, _ = _star_field(5.0)
    mask = np.zeros(image.shape, bool)
    mask[300:305, :] = True
    cache = StarStampCache()
    build_pixel_psf(image, x, y, mask=mask, fwhm_guess_pix=5.0, spatial_order=1, stamp_cache=cache)
    keep = np.arange(len(x)) % 4 != 1
    rebuilt = build_pixel_psf(image, x[keep][::-1], y[keep][::-1], mask=mask, fwhm_guess_pix=5.0, spatial_order=1,
                              stamp_cache=cache)
    fresh = build_pixel_psf(image, x[keep][::-1], y[keep][::-1], mask=mask, fwhm_guess_pix=5.0, spatial_order=1)
    np.testing.assert_array_equal(rebuilt.images, fresh.images)
    # A star not in the cache: the stamps are cut again, not taken from a wrong entry.
    moved = build_pixel_psf(image, x + 0.25, y, mask=mask, fwhm_guess_pix=5.0, spatial_order=1, stamp_cache=cache)
    np.testing.assert_array_equal(moved.images, build_pixel_psf(image, x + 0.25, y, mask=mask, fwhm_guess_pix=5.0,
                                                                spatial_order=1).images)
