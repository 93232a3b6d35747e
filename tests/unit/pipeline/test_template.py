"""The template warp against truth: stars rendered on a sky tile, warped to a rotated, flipped and rescaled
science grid (as DECam CCDs sit on the survey's north-up tiles), compared with the same stars rendered directly
on the science grid."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
from astropy.wcs import WCS

from pipeline.masks import MaskBit
from pipeline.template import warp_template
from pipeline.types import TemplateTile, TilePsf

RA0, DEC0 = 150.0, -5.0
TILE_SCALE_DEG = 0.263 / 3600
SCI_SCALE_DEG = TILE_SCALE_DEG / 1.0018  # the science pixels are 0.18% smaller, as on CCD 28
FWHM_ARCSEC = 1.0
SCI_SHAPE = (300, 400)
TILE_SHAPE = (520, 520)


def _tan(crval, crpix, cd) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = crval
    wcs.wcs.crpix = crpix
    wcs.wcs.cd = cd
    return wcs


def _tile_wcs(crpix=(260.5, 260.5)) -> WCS:
    return _tan((RA0, DEC0), crpix, np.array([[-TILE_SCALE_DEG, 0.0], [0.0, TILE_SCALE_DEG]]))


def _science_wcs() -> WCS:
    # x runs south and y runs east (a transpose with a flip), a 0.02 degree rotation, and an offset centre.
    angle = np.deg2rad(0.02)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    cd = SCI_SCALE_DEG * rot @ np.array([[0.0, 1.0], [-1.0, 0.0]])
    return _tan((RA0 + 0.002, DEC0 - 0.001), (200.3, 150.7), cd)


def _render(shape, x, y, flux, sigma_pix) -> np.ndarray:
    """Circular Gaussians (total ``flux``), sampled at pixel centres."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    image = np.zeros(shape)
    for xi, yi, fi in zip(x, y, flux):
        image += fi / (2 * np.pi * sigma_pix**2) * np.exp(-((xx - xi) ** 2 + (yy - yi) ** 2) / (2 * sigma_pix**2))
    return image


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(5)
    sci = _science_wcs()
    n = 25
    sx, sy = rng.uniform(20, SCI_SHAPE[1] - 20, n), rng.uniform(20, SCI_SHAPE[0] - 20, n)
    flux = 10 ** rng.uniform(4.0, 5.5, n)
    ra, dec = sci.all_pix2world(sx, sy, 0)
    tile_wcs = _tile_wcs()
    tx, ty = tile_wcs.all_world2pix(ra, dec, 0)
    sigma_arcsec = FWHM_ARCSEC / 2.3548
    tile_image = _render(TILE_SHAPE, tx, ty, flux, sigma_arcsec / (TILE_SCALE_DEG * 3600)).astype(np.float32)
    truth = _render(SCI_SHAPE, sx, sy, flux, sigma_arcsec / (SCI_SCALE_DEG * 3600))
    return sci, tile_wcs, tile_image, truth, (sx, sy, flux)


def _tile(wcs, image, variance=None, mask=None, tile_id=1) -> TemplateTile:
    return TemplateTile(tile_id=tile_id, image=image,
                        variance=np.full(image.shape, 4.0, np.float32) if variance is None else variance,
                        mask=np.zeros(image.shape, np.int32) if mask is None else mask, wcs=wcs,
                        psf=_gaussian_psf(wcs))


def _gaussian_psf(wcs) -> TilePsf:
    """The tile's PSF model: its Gaussian at one node, in tile pixels."""
    sigma_pix = FWHM_ARCSEC / 2.3548 / (TILE_SCALE_DEG * 3600)
    yy, xx = np.mgrid[-15:16, -15:16]
    image = np.exp(-(xx**2 + yy**2) / (2 * sigma_pix**2))
    return TilePsf(images=(image / image.sum())[None], x=np.array([100.0]), y=np.array([100.0]))


def test_warped_stars_match_truth(scene):
    sci, tile_wcs, tile_image, truth, (sx, sy, flux) = scene
    template = warp_template([_tile(tile_wcs, tile_image)], sci, SCI_SHAPE)
    # The FWHM measured from the tile's PSF model (half-maximum radius of a sampled Gaussian: within 2%).
    assert template.psf_fwhm_arcsec == pytest.approx(FWHM_ARCSEC, rel=0.02)
    warped = template.masked
    assert not (warped.mask & int(MaskBit.NO_DATA)).any()
    residual = warped.image - truth
    # Cubic-spline interpolation of a 3.8-pixel FWHM star: within 1% of the brightest peak everywhere.
    assert np.abs(residual).max() < 0.01 * truth.max()
    # Flux (per science pixel, scaled by the pixel-area ratio) and positions of each star.
    half = 8
    for x, y, f in zip(sx, sy, flux):
        box = (slice(int(y) - half, int(y) + half + 1), slice(int(x) - half, int(x) + half + 1))
        stamp, true_stamp = warped.image[box], truth[box]
        assert stamp.sum() == pytest.approx(true_stamp.sum(), rel=2e-3)
        yy, xx = np.mgrid[box]
        # Centroids agree within 0.01 pixel (a 0.003 arcsec position error).
        assert abs((stamp * xx).sum() / stamp.sum() - (true_stamp * xx).sum() / true_stamp.sum()) < 0.01
        assert abs((stamp * yy).sum() / stamp.sum() - (true_stamp * yy).sum() / true_stamp.sum()) < 0.01
    # A constant variance scales by the square of the pixel-area ratio (the image scales by the ratio).
    area_ratio = (SCI_SCALE_DEG / TILE_SCALE_DEG) ** 2
    np.testing.assert_allclose(warped.variance, 4.0 * area_ratio**2, rtol=1e-5)


def test_masks_missing_data_and_second_tile(scene):
    sci, tile_wcs, tile_image, truth, _ = scene
    image = tile_image.copy()
    mask = np.zeros(image.shape, np.int32)
    image[:, :200] = np.nan  # the tile has no data over its eastern part
    mask[300:320, 300:320] = int(MaskBit.SAT)
    first = _tile(tile_wcs, image, mask=mask)
    warped = warp_template([first], sci, SCI_SHAPE).masked
    no_data = (warped.mask & int(MaskBit.NO_DATA)) != 0
    assert 0.1 < no_data.mean() < 0.9
    assert (warped.image[no_data] == 0).all() and (warped.variance[no_data] == 0).all()
    # The saturated block lands where its corners map to, by nearest neighbour.
    sat = (warped.mask & int(MaskBit.SAT)) != 0
    ra, dec = tile_wcs.all_pix2world([300, 319], [300, 319], 0)
    cx, cy = sci.all_world2pix(ra, dec, 0)
    x_lo, x_hi = sorted(np.rint(cx).astype(int))
    y_lo, y_hi = sorted(np.rint(cy).astype(int))
    assert sat[y_lo:y_hi + 1, x_lo:x_hi + 1].mean() > 0.9 and sat.sum() <= 1.2 * 20 * 20
    # A second tile covering the whole CCD fills what the first left empty, and only that.
    second = _tile(_tile_wcs(), tile_image, tile_id=2)
    both = warp_template([first, second], sci, SCI_SHAPE).masked
    filled = no_data & ((both.mask & int(MaskBit.NO_DATA)) == 0)
    assert filled.mean() > 0.05
    interior = filled & (np.abs(both.image - truth) < 0.01 * truth.max())
    assert interior.sum() >= 0.97 * filled.sum()
    np.testing.assert_array_equal(both.image[~no_data], warped.image[~no_data])


def test_threads_give_the_same_template(scene):
    sci, tile_wcs, tile_image, _, _ = scene
    tiles = [_tile(tile_wcs, tile_image)]
    one = warp_template(tiles, sci, SCI_SHAPE).masked
    with scipy.fft.set_workers(2):
        two = warp_template(tiles, sci, SCI_SHAPE).masked
    np.testing.assert_array_equal(one.image, two.image)
    np.testing.assert_array_equal(one.variance, two.variance)
    np.testing.assert_array_equal(one.mask, two.mask)


def test_coarse_map_upsampling_is_bilinear():
    """The coarse-grid mapping is spread to every pixel of a box as a bilinear interpolation would (scipy's
    ``map_coordinates(order=1)`` on the coarse grid's fractional indices), to float32 rounding."""
    from scipy import ndimage

    from pipeline.template import _coarse_grid, _upsample

    shape = (300, 410)
    gy, gx = _coarse_grid(shape, 64)
    yy, xx = np.meshgrid(gy, gx, indexing="ij")
    coarse = 1000.0 + 0.9 * xx - 0.05 * yy + 2e-4 * xx * yy + 1e-4 * yy**2
    rows, cols = slice(37, 290), slice(5, 410)
    got = _upsample(coarse, gy, gx, rows, cols)
    fy = np.interp(np.arange(rows.start, rows.stop), gy, np.arange(gy.size))
    fx = np.interp(np.arange(cols.start, cols.stop), gx, np.arange(gx.size))
    want = ndimage.map_coordinates(coarse, np.meshgrid(fy, fx, indexing="ij"), order=1)
    assert got.dtype == np.float32 and got.shape == want.shape
    # float32 keeps 24 bits: one unit in the last place is 1.2e-4 pixel between 1,024 and 2,048; two allowed.
    np.testing.assert_allclose(got, want, rtol=0, atol=2.5e-4)
