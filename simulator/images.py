"""Rendering simulated CCD images and template tiles from the sky and the exposure."""

from __future__ import annotations

import numpy as np

from simulator.asteroids import TRAIL_STEPS, trail_points
from simulator.bright_stars import add_bright_star_optics
from simulator.calibrations import (
    bias_levels,
    bias_structure,
    flat_drift,
    flat_field,
    true_gains,
    unlisted_hot_pixels,
)
from simulator.camera import CCD_SHAPE, RAW_SHAPE, SimCcd
from simulator.crosstalk import crosstalk_ghosts
from simulator.dcr import dcr_offsets
from simulator.detector import brighter_fatter, full_well_e, nonlinear
from simulator.gaia import positions_at
from simulator.sky import FRINGE_RMS, sky_image
from simulator.sources import Sources, flux_in
from simulator.trails import trails
from simulator.world import READ_COLS_OFFSET, READ_ROWS_OFFSET, Exposure, mag_to_njy, name_tag, seeded_rng

from . import camera, optics
from .config import SimConfig
from .psf import ccd_psf
from .render import add_galaxies, add_point_sources, bleed, cosmic_rays, noise_equivalent_area


def true_electrons(cfg: SimConfig, exp: Exposure, ccd: SimCcd, src: Sources) -> np.ndarray:
    """The noiseless trimmed CCD in electrons: sky, stars, transients and galaxies through the CCD's PSF
    (:func:`simulator.psf.ccd_psf`; the galaxies through the PSF at the CCD's centre)."""
    ny, nx = CCD_SHAPE
    if cfg.sky_gradient > 0 or (cfg.fringe_scale > 0 and exp.band in FRINGE_RMS):
        img = sky_image(exp, ccd, seed=cfg.seed, gradient=cfg.sky_gradient, fringe_scale=cfg.fringe_scale)
    else:
        img = np.full(CCD_SHAPE, exp.sky_e, dtype=np.float32)
    t = src.table
    px, py = optics.sky_to_pixel(ccd, *positions_at(t, exp.mjd_mid, src.epoch_mjd), exp.ra, exp.dec)
    near = (np.asarray(t["field_id"]) == exp.field_id) & (px > -300) & (px < nx + 300) & (py > -300) \
        & (py < ny + 300)
    galaxy = np.asarray(t["kind"]) == "galaxy"
    psf = ccd_psf(cfg, exp, ccd.ccdnum)
    pts = np.nonzero(near & ~galaxy)[0]
    flux = flux_in(exp, src, pts)
    if cfg.dcr:  # colour-dependent: through the CCD's local Jacobian (arcsec per pixel)
        colour = np.asarray(t["ref_mag_g"])[pts] - np.asarray(t["ref_mag_r"])[pts]
        new = np.isin(np.asarray(t["kind"])[pts], ("transient", "supernova"))    # of no colour: undisplaced
        east, north = dcr_offsets(exp, cfg.seed, np.where(new, np.nan, colour))
        step = np.linalg.solve(optics.local_jacobian(ccd, 1023.5, 2047.5, exp.ra, exp.dec), np.vstack([east, north]))
        px, py = px.copy(), py.copy()
        px[pts] += step[0]
        py[pts] += step[1]
    fwhm, e1, e2 = psf.at(px[pts], py[pts])
    if cfg.brighter_fatter > 0:
        fwhm = fwhm * brighter_fatter(flux, fwhm, psf.beta, cfg.brighter_fatter, full_well_e(ccd))
    add_point_sources(img, px[pts], py[pts], flux, exp.fwhm_pix * (1.0 + cfg.brighter_fatter), beta=psf.beta,
                      shape=(fwhm, e1, e2))
    if cfg.bright_star_optics:
        add_bright_star_optics(img, px[pts], py[pts], flux, fwhm_pix=exp.fwhm_pix, ccd=ccd)
    gal = np.nonzero(near & galaxy)[0]
    add_galaxies(img, px[gal], py[gal], flux_in(exp, src, gal), **galaxy_shapes(t, gal),
                 jac=optics.local_jacobian(ccd, 1023.5, 2047.5, exp.ra, exp.dec), fwhm_pix=psf.fwhm_pix,
                 beta=psf.beta, e1=psf.e1, e2=psf.e2)
    if src.asteroids is not None and len(src.asteroids):  # trailed: TRAIL_STEPS points along each motion
        ax, ay, af = trail_points(src.asteroids, exp, src.epoch_mjd, ccd)
        on = (af > 0) & ((ax > -50) & (ax < nx + 50) & (ay > -50) & (ay < ny + 50)).any(axis=0)
        ax, ay = ax[:, on].ravel(), ay[:, on].ravel()
        add_point_sources(img, ax, ay, np.tile(af[on] / TRAIL_STEPS, TRAIL_STEPS), exp.fwhm_pix, beta=psf.beta,
                          shape=psf.at(ax, ay))
    return img


def galaxy_shapes(table, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The shape arguments of :func:`simulator.render.add_galaxies` of the galaxies at ``rows`` of the sources'
    table (no bulges where the table has none)."""
    shapes = dict(r_eff_arcsec=np.asarray(table["r_eff"])[rows], q=np.asarray(table["q"])[rows],
                  pa_deg=np.asarray(table["pa"])[rows])
    if "bulge_frac" in table.colnames:
        shapes.update(bulge_frac=np.asarray(table["bulge_frac"])[rows],
                      bulge_r_eff_arcsec=np.asarray(table["r_eff_bulge"])[rows])
    return shapes


def render_ccd(cfg: SimConfig, exp: Exposure, ccd: SimCcd, src: Sources):
    """Raw (4146, 2160) uint16 pixels of one CCD and its truth CR mask."""
    rng = seeded_rng(cfg.seed, name_tag("ccd_"), exp.expnum, ccd.ccdnum)
    ny, nx = CCD_SHAPE
    dead = ccd.ccdnum in camera.DEAD_CCDS
    img = true_electrons(cfg, exp, ccd, src)
    if cfg.satellite_trails > 0 or cfg.aircraft_trails > 0:
        img += trails(CCD_SHAPE, seeded_rng(cfg.seed, name_tag("trai"), exp.expnum, ccd.ccdnum),
                      satellites=cfg.satellite_trails, aircraft=cfg.aircraft_trails,
                      psf_sigma_pix=exp.fwhm_pix / 2.3548)
    flat = flat_field(cfg.seed, ccd.ccdnum, exp.band)
    if dead:
        det = np.zeros(CCD_SHAPE, dtype=np.float32)
    else:
        det = rng.poisson(img * flat).astype(np.float32)
    crs = cosmic_rays(CCD_SHAPE, cfg.cosmic_rays, rng)
    det += crs
    hot_y, hot_x, hot_e = unlisted_hot_pixels(cfg, ccd.ccdnum)
    det[hot_y, hot_x] += hot_e * np.float32(exp.exptime / 90.0)
    level = bias_levels(cfg.seed, ccd.ccdnum)
    gains = true_gains(cfg, ccd)
    gain_col = np.empty(nx, dtype=np.float32)
    fw_col = np.empty(nx, dtype=np.float32)
    sat_col = np.empty(nx, dtype=np.float32)
    for amp, cols in ((ccd.left_amp, slice(0, 1024)), (ccd.right_amp, slice(1024, 2048))):
        gain_col[cols] = gains[amp.name]
        sat_col[cols] = amp.saturation - level[amp.name]
        # the full well: its output (less by the non-linearity's shortfall) is 300 ADU above saturation
        fw_col[cols] = (amp.saturation - level[amp.name] + 300.0) * gains[amp.name] / (1.0 - cfg.nonlinearity)
    bleed(det, fw_col)
    raw = np.empty(RAW_SHAPE, dtype=np.float32)
    pedestal = np.empty(CCD_SHAPE, dtype=np.float32)      # bias level, drift and structure of the data section
    for amp, cols in ((ccd.left_amp, slice(0, 1080)), (ccd.right_amp, slice(1080, 2160))):
        drift = flat_drift(seeded_rng(cfg.seed, name_tag("drft"), exp.expnum, ccd.ccdnum, name_tag(amp.name)))
        lev = level[amp.name] + float(rng.normal(0, 3.0))
        raw[:, cols] = (lev + drift)[:, None]
        data_cols = slice(max(cols.start - READ_COLS_OFFSET, 0), min(cols.stop - READ_COLS_OFFSET, nx))
        pedestal[:, data_cols] = (lev + drift)[READ_ROWS_OFFSET:, None]
        raw[:, cols] += rng.normal(0.0, amp.read_noise / amp.gain, (RAW_SHAPE[0], 1080)).astype(np.float32)
    pedestal += bias_structure(cfg.seed, ccd.ccdnum)
    data = raw[READ_ROWS_OFFSET:, READ_COLS_OFFSET:READ_COLS_OFFSET + nx]
    signal = det / gain_col[None, :]
    if cfg.nonlinearity > 0:
        signal = nonlinear(signal, sat_col, cfg.nonlinearity)
    data += signal + bias_structure(cfg.seed, ccd.ccdnum)
    boxes = camera.defect_boxes(ccd.ccdnum)
    if len(boxes):
        hot = rng.random(len(boxes)) < 0.5
        vals = np.where(hot, rng.uniform(8000, 65535, len(boxes)), rng.uniform(0, 1500, len(boxes)))
        for (x0, y0, w, h), v in zip(boxes, vals):  # a few hundred boxes, each a slice assignment
            data[y0:y0 + h, x0:x0 + w] = v
    if cfg.crosstalk:  # of every charge the amplifiers read, defects' included
        data += crosstalk_ghosts(np.minimum(data, 65535.0) - pedestal, ccd)
    out = np.clip(np.rint(raw), 0, 65535).astype(np.uint16)
    return out, crs > 0


def render_tile(cfg: SimConfig, tile: dict, band: str, src: Sources):
    """Template tile image and variance (nJy, nJy^2) with the static sky (variables at their mean)."""
    rng = seeded_rng(cfg.seed, name_tag("tile"), tile["tile_id"], name_tag(band))
    n = tile["npix"]
    fwhm = cfg.template_fwhm / 0.263
    nea = noise_equivalent_area(fwhm)
    sigma = float(mag_to_njy(cfg.template_depth) / 5.0 / np.sqrt(nea))
    img = rng.normal(0.0, sigma, (n, n)).astype(np.float32)
    t = src.table
    kinds = np.asarray(t["kind"])
    static = (np.asarray(t["field_id"]) == tile["field_id"]) & np.isin(kinds, ("star", "variable", "galaxy"))
    px, py = tile["wcs"].all_world2pix(np.asarray(t["ra"]), np.asarray(t["dec"]), 0)
    near = static & (px > -300) & (px < n + 300) & (py > -300) & (py < n + 300)
    flux = mag_to_njy(np.asarray(t["ref_mag_" + band]))
    pts = np.nonzero(near & (kinds != "galaxy"))[0]
    add_point_sources(img, px[pts], py[pts], flux[pts], fwhm, floor_value=0.02 * sigma)
    gal = np.nonzero(near & (kinds == "galaxy"))[0]
    jac = np.array([[-0.263, 0.0], [0.0, 0.263]])
    add_galaxies(img, px[gal], py[gal], flux[gal], **galaxy_shapes(t, gal), jac=jac, fwhm_pix=fwhm)
    var = np.full((n, n), sigma**2, dtype=np.float32)
    return img, var, fwhm, sigma


# ---------------------------------------------------------------------------------------------- writing
def extension_order(ccds) -> list[int]:
    """Order of the CCD extensions in a raw file: by DETPOS descending, never CCDNUM order (if > 1 CCD)."""
    order = sorted(ccds, key=lambda c: camera.ccd(c).detpos, reverse=True)
    if len(order) > 1 and order == sorted(order):
        order = order[::-1]
    return order


