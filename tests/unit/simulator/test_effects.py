"""The simulator's switchable effects, each alone: elliptical PSFs of real PSFEx shapes, calibration frames with
their own noise, a master flat whose illumination is off by a stated fraction, hot pixels in no defect list.
Tolerances: the noise of a master bias of 20 frames within 3% of read noise / gain / sqrt(20) (a 4096 x 2048
frame measures it to 0.1%); the flat's illumination error at most the stated fraction and at least half of it
somewhere (smooth: its pixel-to-pixel part is the frames' photon noise, 1 / sqrt(10 x 20,000), within 3%)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import find_peaks
from scipy.special import gammainc

from simulator import SimConfig, camera, optics
from simulator.asteroids import asteroid_positions, asteroid_truth
from simulator.bright_stars import (
    GHOST_FRACTION,
    GHOST_SHIFT,
    HALO_FRACTION,
    SPIKE_FRACTION,
    STAMP_RADIUS,
    add_bright_star_optics,
    star_extras,
)
from simulator.calibrations import (
    bias_structure,
    flat_field,
    master_bias,
    master_flat,
    true_gains,
    unlisted_hot_pixels,
)
from simulator.crosstalk import coefficients, crosstalk_ghosts
from simulator.dcr import dcr_offsets
from simulator.detector import brighter_fatter, nonlinear
from simulator.images import true_electrons
from simulator.psf import ccd_psf
from simulator.render import add_galaxies, add_point_sources, sersic_b
from simulator.sky import sky_image
from simulator.sources import Sources, disk_radii, galaxy_magnitudes, make_sources, tile_plan
from simulator.trails import aircraft_trail, satellite_trail, trails
from simulator.world import make_exposures


def test_effects_off_and_then_the_truth_is_written():
    cfg = SimConfig(ccds=[35], calibration_noise=False, flat_illumination_error=0.0, n_unlisted_hot_pixels=0)
    assert np.array_equal(master_bias(cfg, 35), bias_structure(cfg.seed, 35))
    assert np.array_equal(master_flat(cfg, 35, "r"), flat_field(cfg.seed, 35, "r"))
    assert unlisted_hot_pixels(cfg, 35)[0].size == 0


def test_master_bias_carries_the_noise_of_its_frames():
    cfg = SimConfig(ccds=[35], calibration_noise=True)
    resid = master_bias(cfg, 35) - bias_structure(cfg.seed, 35)
    amp = camera.ccd(35).left_amp
    assert np.std(resid[:, :1024]) == pytest.approx(amp.read_noise / amp.gain / np.sqrt(20), rel=0.03)


@pytest.mark.parametrize("error", [0.01, 0.03])
def test_master_flat_illumination_error_is_smooth_and_of_the_stated_size(error):
    cfg = SimConfig(ccds=[28], flat_illumination_error=error, calibration_noise=False)
    ratio = master_flat(cfg, 28, "g") / flat_field(cfg.seed, 28, "g")
    assert np.ptp(ratio) <= 2 * error * 1.001 and np.abs(ratio - 1).max() >= 0.5 * error
    assert np.abs(np.diff(ratio, axis=1)).max() < 1e-4      # smooth: no pixel-to-pixel part
    noisy = master_flat(cfg.model_copy(update={"calibration_noise": True}), 28, "g") / master_flat(cfg, 28, "g")
    assert np.std(noisy) == pytest.approx(1 / np.sqrt(10 * 20000.0), rel=0.03)


def test_unlisted_hot_pixels_are_fixed_and_not_in_the_defect_lists():
    cfg = SimConfig(ccds=[1], n_unlisted_hot_pixels=50)
    y, x, e = unlisted_hot_pixels(cfg, 1)
    assert y.size == 50 and np.all((e >= 200) & (e <= 20000))
    again = unlisted_hot_pixels(cfg.model_copy(update={"n_epochs": 5}), 1)
    assert np.array_equal(again[0], y) and np.array_equal(again[1], x)
    listed = np.zeros((4096, 2048), bool)
    for x0, y0, w, h in camera.defect_boxes(1):
        listed[y0:y0 + h, x0:x0 + w] = True
    assert listed[y, x].mean() < 0.5     # drawn anywhere: most are outside the listed boxes


def test_psfs_vary_between_ccds_and_exposures_and_are_elliptical():
    cfg = SimConfig(ccds=[1, 28, 35], n_epochs=3)
    exps, _ = make_exposures(cfg)
    psfs = [ccd_psf(cfg, e, c) for e in exps for c in cfg.ccds]
    assert len({(p.beta, round(p.e1, 6)) for p in psfs}) > 5
    assert len({round(p.fwhm_pix, 6) for p in psfs}) == len(exps)    # the seeing: one per exposure
    p = max(psfs, key=lambda q: np.hypot(q.e1, q.e2))
    img = np.zeros((101, 101), np.float32)
    add_point_sources(img, [50.0], [50.0], [1e5], p.fwhm_pix, beta=p.beta, shape=([p.fwhm_pix], [p.e1], [p.e2]))
    yy, xx = np.mgrid[:101, :101] - 50.0
    w = img * np.exp(-(xx**2 + yy**2) / (2 * (1.5 * p.fwhm_pix / 2.355) ** 2))
    ixx, iyy, ixy = (w * xx * xx).sum(), (w * yy * yy).sum(), (w * xx * yy).sum()
    e1, e2 = (ixx - iyy) / (ixx + iyy), 2 * ixy / (ixx + iyy)
    # A circular weight rounds an elliptical profile (here to about 0.6 of its ellipticity); the direction stays
    measured, intended = np.hypot(e1, e2), np.hypot(p.e1, p.e2)
    assert 0.4 * intended <= measured <= 1.0 * intended
    assert np.cos(np.arctan2(e2, e1) - np.arctan2(p.e2, p.e1)) > 0.99
    assert np.hypot(p.e1, p.e2) > 0.02
    flat = SimConfig(ccds=[35], psf_variation=False)
    q = ccd_psf(flat, make_exposures(flat)[0][0], 35)
    assert (q.e1, q.e2, q.beta) == (0.0, 0.0, 3.5)


def _empty_sky(**overrides) -> tuple[SimConfig, list, Sources]:
    """A night of no stars, galaxies or transients (one effect then shows alone) and its exposures and sky."""
    cfg = SimConfig(**{**dict(ccds=[35], n_epochs=2, star_density=0, galaxy_density=0, n_transients=0,
                              psf_variation=False, sky_gradient=0.0), **overrides})
    exps, centers = make_exposures(cfg)
    return cfg, exps, make_sources(cfg, exps, centers, tile_plan(cfg, exps, centers))


def test_asteroids_move_between_epochs_and_their_flux_is_where_the_truth_says():
    cfg, exps, src = _empty_sky(asteroid_density=400.0)
    truth = asteroid_truth(src.asteroids, exps, cfg.ccds, src.epoch_mjd)
    ids = [set(np.asarray(truth["source_id"][truth["expnum"] == e.expnum]).tolist()) for e in exps]
    assert min(len(i) for i in ids) >= 5 and not ids[0] & ids[1]      # about 18 per CCD; never twice
    # Each moves at its rate: 0.1-0.5 deg/day between the epochs (days apart)
    dt = exps[1].mjd_mid - exps[0].mjd_mid
    r0 = asteroid_positions(src.asteroids, exps[0].mjd_mid, src.epoch_mjd)
    r1 = asteroid_positions(src.asteroids, exps[1].mjd_mid, src.epoch_mjd)
    moved = np.hypot((r1[0] - r0[0]) * np.cos(np.radians(r0[1])), r1[1] - r0[1]) / dt
    rate = np.hypot(src.asteroids["rate_east"], src.asteroids["rate_north"])
    assert np.allclose(moved, rate, rtol=0.02)
    # Their electrons: within 12 px of the truth position, the flux (PSF wing beyond: < 3%) to 4%
    exp = exps[0]
    img = true_electrons(cfg, exp, camera.ccd(35), src) - np.float32(exp.sky_e)
    t = truth[(truth["expnum"] == exp.expnum) & (truth["x"] > 20) & (truth["x"] < 2027) & (truth["y"] > 20)
              & (truth["y"] < 4075)]
    ix, iy = np.rint(t["x"]).astype(int), np.rint(t["y"]).astype(int)
    box = np.array([img[y - 12:y + 13, x - 12:x + 13].sum() for x, y in zip(ix, iy)])  # a dozen sources
    assert np.allclose(box, exp.flux_e(t["flux_njy"]), rtol=0.04)
    assert np.all(t["kind"] == "asteroid") and np.all(t["delta_flux_njy"] == t["flux_njy"])


def test_satellite_trail_is_a_straight_band_of_its_width_and_brightness():
    img, p = satellite_trail((1000, 1000), np.random.default_rng(5))
    y, x = np.mgrid[:1000, :1000]
    across = (x - p["x0"]) * np.sin(p["angle"]) - (y - p["y0"]) * np.cos(p["angle"])
    near = np.abs(across) < 6 * p["sigma_pix"]
    w = img[near]
    assert w.sum() / img.sum() > 0.999                                   # all of it on the line
    width = np.sqrt(np.sum(w * across[near] ** 2) / w.sum())
    assert width == pytest.approx(np.hypot(p["sigma_pix"], np.sqrt(1 / 12)), rel=0.03)
    along = (x - p["x0"]) * np.cos(p["angle"]) + (y - p["y0"]) * np.sin(p["angle"])
    length = np.ptp(along[near & (np.abs(across) < 0.5)])
    assert 0.7 <= img.sum() / length / p["per_pixel"] <= 1.3           # per unit length, a +/-30% glint
    assert not trails((50, 50), np.random.default_rng(1), satellites=0.0, aircraft=0.0, psf_sigma_pix=2.0).any()


def test_aircraft_trail_has_two_wing_lights_and_a_strobe_between():
    img, p = aircraft_trail((800, 800), np.random.default_rng(11), psf_sigma_pix=2.0)
    y, x = np.mgrid[:800, :800]
    across = (x - p["x0"]) * np.sin(p["angle"]) - (y - p["y0"]) * np.cos(p["angle"])
    profile = np.bincount(np.clip(np.rint(across + 100).astype(int), 0, 200).ravel(), weights=img.ravel(),
                          minlength=201)[1:200]
    top, _ = find_peaks(profile, prominence=0.1 * profile.max())
    peaks = top - 99                                                     # the two lights and the strobe
    half = p["separation_pix"] / 2
    assert np.allclose(peaks, [-half, 0, half], atol=1.5)


def test_crosstalk_ghost_is_mirrored_with_the_real_coefficients():
    ccd = camera.ccd(1)                                  # S29: A from B +4.24e-4, B from A -6.47e-4 (the table)
    signal = np.zeros((8, 2048), np.float32)
    signal[3, 100] = 40000.0                             # the left amplifier reads it ...
    signal[5, 2000] = 20000.0                            # ... and the right one this
    ghosts = crosstalk_ghosts(signal, ccd)
    k = coefficients(1)
    assert ghosts[3, 2047 - 100] == pytest.approx(40000.0 * k[ccd.right_amp.name], rel=1e-6)
    assert ghosts[5, 2047 - 2000] == pytest.approx(20000.0 * k[ccd.left_amp.name], rel=1e-6)
    assert np.count_nonzero(ghosts) == 2 and sorted(k.values()) == pytest.approx([-6.47e-4, 4.24e-4])


def test_amplifier_gains_are_off_by_the_stated_fraction():
    ratios = np.array([g / camera.ccd(c).amps[a].gain for c in range(1, 63)
                       for a, g in true_gains(SimConfig(gain_error=0.003), camera.ccd(c)).items()])
    # 124 amplifiers: the standard deviation of 124 draws is within 20% of the stated one (chi-square, ~99.9%)
    assert np.std(ratios - 1) == pytest.approx(0.003, rel=0.2) and np.abs(ratios - 1).max() < 0.015
    assert all(g == camera.ccd(35).amps[a].gain for a, g in true_gains(SimConfig(gain_error=0.0),
                                                                          camera.ccd(35)).items())


def test_galaxy_counts_follow_the_real_slopes_and_sizes_shrink_with_magnitude():
    rng = np.random.default_rng(2)
    r = galaxy_magnitudes(rng, 400_000)
    for lo, hi, slope in ((18.5, 20.0, 0.45), (21.5, 24.0, 0.32)):
        counts, edges = np.histogram(r, bins=np.arange(lo, hi + 0.01, 0.25))
        fit = np.polyfit(0.5 * (edges[1:] + edges[:-1]), np.log10(counts), 1)[0]
        assert fit == pytest.approx(slope, abs=0.02)      # Poisson: +/- 0.005 or better at these counts
    sizes = disk_radii(rng, np.full(20_000, 20.0)), disk_radii(rng, np.full(20_000, 24.0))
    assert np.median(sizes[0]) == pytest.approx(1.2, rel=0.03) and np.median(sizes[1]) == pytest.approx(0.5, rel=0.03)


@pytest.mark.parametrize(("bulge_frac", "sersic_n"), [(0.0, 1.0), (1.0, 4.0)])
def test_disks_and_bulges_have_their_sersic_light_profiles(bulge_frac, sersic_n):
    img = np.zeros((241, 241))
    jac = np.array([[-0.263, 0.0], [0.0, 0.263]])
    add_galaxies(img, [120.0], [120.0], [1e5], r_eff_arcsec=[3.0], q=[1.0], pa_deg=[0.0], jac=jac, fwhm_pix=1.0,
                 radius=110, bulge_frac=[bulge_frac], bulge_r_eff_arcsec=[3.0])
    yy, xx = np.mgrid[:241, :241]
    rad = np.hypot(xx - 120, yy - 120) * 0.263 / 3.0                   # in units of r_eff (11.4 px)
    # Enclosed light (analytic: the regularised incomplete gamma function), relative to that within the stamp
    b = sersic_b(sersic_n)
    stamp = gammainc(2 * sersic_n, b * (110 * 0.263 / 3.0) ** (1 / sersic_n))
    for x in (0.5, 1.0, 2.0):
        expect = gammainc(2 * sersic_n, b * x ** (1 / sersic_n)) / stamp
        assert img[rad <= x].sum() / img.sum() == pytest.approx(expect, abs=0.02)   # 4 samples/pixel, 1-px PSF


def test_sky_gradient_is_a_plane_of_the_stated_size_and_fringes_only_in_z_and_y():
    cfg = SimConfig(ccds=[1], bands=["z", "r"], n_epochs=2)
    exps, _ = make_exposures(cfg)
    z, r = exps
    ccd = camera.ccd(1)                                  # at the edge of the field: about 1 deg from its centre
    flat_sky = sky_image(r, ccd, seed=cfg.seed, gradient=0.0, fringe_scale=1.0)
    assert np.all(flat_sky == np.float32(r.sky_e))       # no fringes in r
    level = sky_image(r, ccd, seed=cfg.seed, gradient=0.02, fringe_scale=1.0) / np.float32(r.sky_e)
    assert np.abs(level - 1).max() <= 0.021 and np.ptp(level) > 0.001
    assert np.abs(np.diff(level, 2, axis=1)).max() < 1e-6             # a plane
    fringes = sky_image(z, ccd, seed=cfg.seed, gradient=0.0, fringe_scale=1.0) / np.float32(z.sky_e) - 1
    assert np.std(fringes) == pytest.approx(0.002, rel=0.01)
    spectrum = np.abs(np.fft.rfft(fringes[:, 1000] - fringes[:, 1000].mean()))
    period = fringes.shape[0] / np.argmax(spectrum)
    assert 20 <= period <= 150                            # waves of 40-120 px, seen along a column


def test_nonlinearity_is_the_stated_shortfall_at_saturation_and_bright_stars_are_fatter():
    sat = np.array([40000.0, 40000.0], np.float32)
    out = nonlinear(np.array([[4000.0, 40000.0]], np.float32), sat, 0.01)
    assert out[0] == pytest.approx([4000 * (1 - 0.001), 40000 * (1 - 0.01)], rel=1e-6)
    grow = brighter_fatter(np.array([1e3, 1e6, 1e8]), np.full(3, 4.0), 3.5, 0.02, 1.7e5)
    assert grow[0] == pytest.approx(1.0, abs=1e-4) and grow[2] == pytest.approx(1.02)
    assert 1.0 < grow[1] < 1.02
    # The rendered star is broader by that factor: its peak falls as the FWHM squared (a 4-pixel FWHM is well
    # sampled: to 0.3%)
    a, b = np.zeros((81, 81)), np.zeros((81, 81))
    add_point_sources(a, [40.0], [40.0], [1.0], 4.0, shape=([4.0], [0.0], [0.0]))
    add_point_sources(b, [40.0], [40.0], [1.0], 4.0, shape=([4.0 * grow[2]], [0.0], [0.0]))
    assert np.sqrt(a.max() / b.max()) == pytest.approx(1.02, abs=0.003)


def test_dcr_moves_stars_by_colour_towards_the_zenith_more_in_g_and_at_high_airmass():
    cfg = SimConfig(ccds=[35], bands=["g", "z"], n_epochs=2, airmass_range=(2.0, 2.0))
    g, z = make_exposures(cfg)[0]
    colour = np.array([0.7, 1.7, 0.2, 0.0, np.nan])       # reference, red, blue, g - r = 0, no colour
    east, north = dcr_offsets(g, cfg.seed, colour)
    shift = np.hypot(east, north)
    tan_z = np.sqrt(2.0**2 - 1.0)                                        # airmass 2: tan z = 1.73
    assert shift[0] == 0.0 and shift[4] == 0.0
    assert shift[1] == pytest.approx(0.10 * 1.0 * tan_z) and shift[2] == pytest.approx(0.10 * 0.5 * tan_z)
    # opposite directions for red and blue: along the parallactic angle
    assert east[1] * east[2] + north[1] * north[2] < 0
    assert np.hypot(*dcr_offsets(z, cfg.seed, colour))[1] == pytest.approx(0.01 * tan_z)


def test_bright_stars_have_spikes_a_halo_and_a_displaced_ghost():
    ccd = camera.ccd(1)                      # 200 mm from the optical axis: the ghost lands 1000 px from its star
    img = np.zeros(camera.CCD_SHAPE, np.float32)
    x0, y0 = 1800.0, 3500.0
    assert add_bright_star_optics(img, np.array([x0, 100.0]), np.array([y0, 100.0]), np.array([1e7, 1e5]),
                                  fwhm_pix=4.0, ccd=ccd) == 1        # the faint one: none
    r = STAMP_RADIUS
    extras = np.zeros_like(img)
    extras[int(y0) - r:int(y0) + r + 1, int(x0) - r:int(x0) + r + 1] = 1e7 * star_extras(4.0)
    ghost = img - extras
    assert img.sum() == pytest.approx(1e7 * (SPIKE_FRACTION + HALO_FRACTION + GHOST_FRACTION), rel=1e-3)
    assert ghost.sum() == pytest.approx(1e7 * GHOST_FRACTION, rel=1e-3)
    # spikes: along the CCD's axes, brighter than at the same radius off them
    assert img[int(y0), int(x0) - 150] > 3 * img[int(y0) - 106, int(x0) - 106]
    # the ghost: a ring, GHOST_SHIFT of the star's focal-plane position away from it
    fx, fy = optics.pixel_to_focal(ccd, x0, y0)
    yy, xx = np.nonzero(ghost > 0.5 * ghost.max())
    assert xx.mean() - x0 == pytest.approx(GHOST_SHIFT * fx / camera.PIXEL_SIZE_MM, abs=3)
    assert yy.mean() - y0 == pytest.approx(GHOST_SHIFT * fy / camera.PIXEL_SIZE_MM, abs=3)
    assert ghost[int(yy.mean()), int(xx.mean())] == 0                  # its hole: the secondary's shadow
