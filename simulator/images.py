"""Rendering simulated CCD images and template tiles from the sky and the exposure."""

from __future__ import annotations

import numpy as np

from simulator.calibrations import bias_levels, bias_structure, flat_drift, flat_field, unlisted_hot_pixels
from simulator.camera import CCD_SHAPE, RAW_SHAPE, SimCcd
from simulator.gaia import positions_at
from simulator.sources import Sources, flux_in
from simulator.world import READ_COLS_OFFSET, READ_ROWS_OFFSET, Exposure, mag_to_njy, name_tag, seeded_rng

from . import camera, optics
from .config import SimConfig
from .psf import ccd_psf
from .render import add_galaxies, add_point_sources, bleed, cosmic_rays, noise_equivalent_area


def true_electrons(cfg: SimConfig, exp: Exposure, ccd: SimCcd, src: Sources) -> np.ndarray:
    """The noiseless trimmed CCD in electrons: sky, stars, transients and galaxies through the CCD's PSF
    (:func:`simulator.psf.ccd_psf`; the galaxies through the PSF at the CCD's centre)."""
    ny, nx = CCD_SHAPE
    img = np.full(CCD_SHAPE, exp.sky_e, dtype=np.float32)
    t = src.table
    px, py = optics.sky_to_pixel(ccd, *positions_at(t, exp.mjd_mid, src.epoch_mjd), exp.ra, exp.dec)
    near = (np.asarray(t["field_id"]) == exp.field_id) & (px > -300) & (px < nx + 300) & (py > -300) \
        & (py < ny + 300)
    galaxy = np.asarray(t["kind"]) == "galaxy"
    psf = ccd_psf(cfg, exp, ccd.ccdnum)
    pts = np.nonzero(near & ~galaxy)[0]
    add_point_sources(img, px[pts], py[pts], flux_in(exp, src, pts), exp.fwhm_pix, beta=psf.beta,
                      shape=psf.at(px[pts], py[pts]))
    gal = np.nonzero(near & galaxy)[0]
    add_galaxies(img, px[gal], py[gal], flux_in(exp, src, gal), r_eff_arcsec=np.asarray(t["r_eff"])[gal],
                 q=np.asarray(t["q"])[gal], pa_deg=np.asarray(t["pa"])[gal],
                 jac=optics.local_jacobian(ccd, 1023.5, 2047.5, exp.ra, exp.dec), fwhm_pix=psf.fwhm_pix,
                 beta=psf.beta, e1=psf.e1, e2=psf.e2)
    return img


def render_ccd(cfg: SimConfig, exp: Exposure, ccd: SimCcd, src: Sources):
    """Raw (4146, 2160) uint16 pixels of one CCD and its truth CR mask."""
    rng = seeded_rng(cfg.seed, name_tag("ccd_"), exp.expnum, ccd.ccdnum)
    ny, nx = CCD_SHAPE
    dead = ccd.ccdnum in camera.DEAD_CCDS
    img = true_electrons(cfg, exp, ccd, src)
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
    gain_col = np.empty(nx, dtype=np.float32)
    fw_col = np.empty(nx, dtype=np.float32)
    for amp, cols in ((ccd.left_amp, slice(0, 1024)), (ccd.right_amp, slice(1024, 2048))):
        gain_col[cols] = amp.gain
        fw_col[cols] = (amp.saturation - level[amp.name] + 300.0) * amp.gain
    bleed(det, fw_col)
    raw = np.empty(RAW_SHAPE, dtype=np.float32)
    for amp, cols in ((ccd.left_amp, slice(0, 1080)), (ccd.right_amp, slice(1080, 2160))):
        drift = flat_drift(seeded_rng(cfg.seed, name_tag("drft"), exp.expnum, ccd.ccdnum, name_tag(amp.name)))
        lev = level[amp.name] + float(rng.normal(0, 3.0))
        raw[:, cols] = (lev + drift)[:, None]
        raw[:, cols] += rng.normal(0.0, amp.read_noise / amp.gain, (RAW_SHAPE[0], 1080)).astype(np.float32)
    data = raw[READ_ROWS_OFFSET:, READ_COLS_OFFSET:READ_COLS_OFFSET + nx]
    data += det / gain_col[None, :] + bias_structure(cfg.seed, ccd.ccdnum)
    boxes = camera.defect_boxes(ccd.ccdnum)
    if len(boxes):
        hot = rng.random(len(boxes)) < 0.5
        vals = np.where(hot, rng.uniform(8000, 65535, len(boxes)), rng.uniform(0, 1500, len(boxes)))
        for (x0, y0, w, h), v in zip(boxes, vals):  # a few hundred boxes, each a slice assignment
            data[y0:y0 + h, x0:x0 + w] = v
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
    add_galaxies(img, px[gal], py[gal], flux[gal], r_eff_arcsec=np.asarray(t["r_eff"])[gal],
                 q=np.asarray(t["q"])[gal], pa_deg=np.asarray(t["pa"])[gal], jac=jac, fwhm_pix=fwhm)
    var = np.full((n, n), sigma**2, dtype=np.float32)
    return img, var, fwhm, sigma


# ---------------------------------------------------------------------------------------------- writing
def extension_order(ccds) -> list[int]:
    """Order of the CCD extensions in a raw file: by DETPOS descending, never CCDNUM order (if > 1 CCD)."""
    order = sorted(ccds, key=lambda c: camera.ccd(c).detpos, reverse=True)
    if len(order) > 1 and order == sorted(order):
        order = order[::-1]
    return order


