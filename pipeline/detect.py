"""DIASource detection (positive and negative, matched filter) and measurement on the difference image."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import sep
from astropy.table import Table
from pydantic import BaseModel, ConfigDict, Field
from scipy.spatial import cKDTree

from pipeline.astrometry import pixel_scale_arcsec
from pipeline.convolution import coverage_at, matched_filter
from pipeline.masks import UNUSABLE, MaskBit
from pipeline.measure import aperture_flux, cut_stamps, pixel_flags, psf_flux
from pipeline.psf import FWHM_PER_SIGMA
from pipeline.streaks import StreakConfig, on_streaks, streak_lines
from pipeline.subtract import SubtractionResult
from pipeline.types import CalibratedExposure

log = logging.getLogger(__name__)

SOURCE_INDEX_LIMIT = 100_000
"""DiaSources per CCD-visit that the id packing leaves room for."""


class DetectConfig(BaseModel):
    """Configuration of DIASource detection and measurement."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    threshold_sigma: float = Field(5.0, gt=0, le=1000.0, description="Detection threshold on the "
                                                                     "matched-filtered SNR.")
    min_area_pix: int = Field(3, ge=1, description="Minimum connected pixels above threshold.")
    deblend_cont: float = Field(0.05, ge=0, le=1.0, description="sep deblending contrast of the score image.")
    aperture_radius_pix: float = Field(7.0, gt=0, le=100.0, description="Aperture flux radius, pixels (about "
                                                                        "2 arcsec).")
    dipole_match_fwhm: float = Field(1.5, ge=0, le=20.0, description="Opposite-sign pairs closer than this many "
                                                                     "FWHM are merged into one dipole DiaSource.")
    do_drop_flagged: bool = Field(True, description="Drop detections with bad or saturated pixels within 3 "
                                                     "pixels of their centre.")
    edge_margin_pix: int = Field(8, ge=0, le=1024, description="Detections closer to the CCD edge are dropped.")
    do_refine_centroids: bool = Field(True, description="Replace the detection centroid by a PSF-windowed "
                                                         "centroid on the difference image (sep.winpos).")
    do_drop_streaks: bool = Field(True, description="Drop detections on satellite and aircraft trails "
                                                     "(pipeline.streaks).")
    streaks: StreakConfig = StreakConfig()
    max_centroid_shift_pix: float = Field(1.5, gt=0, le=100.0, description="A refined centroid that moves this "
                                          "far or farther from the detection's is not used, pixels.")


def dia_source_id(visit: int, detector: int, index: np.ndarray) -> np.ndarray:
    """Deterministic DiaSource ids: ``(visit * 100 + detector) * 100000 + index``."""
    return (np.int64(visit) * 100 + np.int64(detector)) * SOURCE_INDEX_LIMIT + np.asarray(index, dtype=np.int64)


def score_image(image: np.ndarray, variance: np.ndarray, bad: np.ndarray, psf_kernel: np.ndarray, *,
                threshold: float | None = None) -> np.ndarray:
    """Matched-filter significance of a point source at every pixel: ``(D * P) / sqrt(V * P^2)``.

    Convolutions by float32 FFTs (:func:`~pipeline.convolution.matched_filter`), so the cost does not grow with
    the kernel; unusable pixels carry no weight, and where less than half the PSF is usable the score is 0.
    With ``threshold``, that coverage is found (by direct sums, :func:`~pipeline.convolution.coverage_at`)
    only where ``|score| >= threshold``, the pixels a detection at that threshold is made of: one FFT round
    trip less, and the scores below it are left as they are.
    """
    numerator, noise2, coverage = matched_filter(image, variance, bad, psf_kernel, with_coverage=threshold is None)
    # In place: the planes are this function's own (no CCD-sized temporaries).
    noise = np.sqrt(np.clip(noise2, 1e-30, None, out=noise2), out=noise2)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.divide(numerator, noise, out=numerator)
    if coverage is not None:
        score[(coverage < 0.5) | ~np.isfinite(score)] = 0.0
    else:
        score[~np.isfinite(score)] = 0.0
        iy, ix = np.nonzero(np.abs(score) >= threshold)
        low = coverage_at(bad, psf_kernel, iy, ix) < 0.5
        score[iy[low], ix[low]] = 0.0
    return np.ascontiguousarray(score, dtype=np.float32)


def _detect_sign(score: np.ndarray, bad: np.ndarray, config: DetectConfig) -> np.ndarray:
    return sep.extract(score, config.threshold_sigma, mask=bad, minarea=config.min_area_pix,
                       filter_kernel=None, deblend_cont=config.deblend_cont)


@dataclass(frozen=True)
class _Detections:
    """Detections on the difference image, as parallel arrays (one entry per detection).

    ``x, y`` are a detection's own (refined) position; ``cx, cy`` its centre (a dipole's is the mid-point of
    its lobes); ``lobe_x, lobe_y`` the position of its dipole partner (its own without one); ``moments`` the
    second moments ``x2, y2, xy`` of its footprint on the score image, ``npix`` its area.
    """

    x: np.ndarray
    y: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    lobe_x: np.ndarray
    lobe_y: np.ndarray
    is_negative: np.ndarray
    has_pair: np.ndarray
    npix: np.ndarray
    moments: dict[str, np.ndarray]

    def take(self, index: np.ndarray) -> _Detections:
        """The detections selected by ``index`` (a boolean mask or an index array)."""
        x, y, cx, cy, lobe_x, lobe_y = (a[index] for a in (self.x, self.y, self.cx, self.cy, self.lobe_x,
                                                           self.lobe_y))
        return _Detections(x=x, y=y, cx=cx, cy=cy, lobe_x=lobe_x, lobe_y=lobe_y, is_negative=self.is_negative[index],
                           has_pair=self.has_pair[index], npix=self.npix[index],
                           moments={k: v[index] for k, v in self.moments.items()})


def detect_dia_sources(subtraction: SubtractionResult, exposure: CalibratedExposure, *,
                       config: DetectConfig = DetectConfig()) -> Table:
    """Detect and measure DiaSources.

    Parameters
    ----------
    subtraction : SubtractionResult
        The decorrelated difference image (nJy, with a calibrated variance), its PSF and the matched template.
    exposure : CalibratedExposure
        The science image (same grid), its WCS, PSF model, exposure metadata and CCD number.
    config : DetectConfig

    Returns
    -------
    Table
        One row per DiaSource with Rubin diaSource column names (``diaObjectId`` left for association),
        sorted deterministically so that ids are stable across re-processing.
    """
    difference, diff_psf = subtraction.difference, subtraction.psf
    image = np.ascontiguousarray(difference.image, dtype=np.float32)
    bad = ((difference.mask & int(UNUSABLE | MaskBit.EDGE)) != 0) | ~np.isfinite(image) \
        | ~(difference.variance > 0)
    ny, nx = image.shape
    sigma = float(diff_psf.sigma_at((nx - 1) / 2, (ny - 1) / 2))
    kernel = diff_psf.kernel((nx - 1) / 2, (ny - 1) / 2, int(np.clip(np.ceil(3 * sigma), 2, 15)))
    score = score_image(image, difference.variance, bad, kernel, threshold=config.threshold_sigma)
    x, y, is_negative, npix, moments = _detect_both_signs(image, score, bad, sigma=sigma, config=config)
    if config.do_drop_streaks and x.size:
        # Trails are not in the template; their detections are dropped, not flagged (as do_drop_flagged's)
        lines = streak_lines(moments, x, y, psf_sigma_pix=sigma, config=config.streaks)
        if len(lines):
            keep = ~on_streaks(x, y, lines, config=config.streaks)
            log.debug("%d trail line(s): %d detections dropped", len(lines), int((~keep).sum()))
            x, y, is_negative, npix = x[keep], y[keep], is_negative[keep], npix[keep]
            moments = {k: v[keep] for k, v in moments.items()}
    fwhm = sigma * FWHM_PER_SIGMA
    found = _merge_dipoles(x, y, is_negative, npix, moments, radius=config.dipole_match_fwhm * fwhm)
    found = found.take(np.lexsort((found.cx, np.rint(found.cy))))
    if config.do_drop_flagged and found.x.size:
        # Detections touching bad or saturated pixels are residuals of defects and bright stars (in the
        # simulator's truth none of the real transients are); they are dropped, not flagged.
        near = pixel_flags(difference.mask, found.cx, found.cy)
        found = found.take(~(near["pixelFlags_bad"] | near["pixelFlags_saturated"]))
    n = found.x.size
    if n > SOURCE_INDEX_LIMIT:
        raise ValueError(f"{n} DiaSources exceed the id packing limit {SOURCE_INDEX_LIMIT}")
    table = _measured_table(found, subtraction, exposure, sigma=sigma, config=config)
    log.debug("detected %d DiaSources (%d negative, %d dipoles)", n, int(table["isNegative"].sum()),
              int(found.has_pair.sum()))
    return table


def _detect_both_signs(image: np.ndarray, score: np.ndarray, bad: np.ndarray, *, sigma: float,
                       config: DetectConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                      dict[str, np.ndarray]]:
    """Positive and negative detections on the score image, away from the CCD's edge and (with
    ``config.do_refine_centroids``) at their refined centroids: ``x, y, is_negative, npix, moments``."""
    ny, nx = image.shape
    positive = _detect_sign(score, bad, config)
    negative = _detect_sign(-score, bad, config)
    x = np.concatenate([positive["x"], negative["x"]]).astype(float)
    y = np.concatenate([positive["y"], negative["y"]]).astype(float)
    is_negative = np.concatenate([np.zeros(len(positive), bool), np.ones(len(negative), bool)])
    moments = {k: np.concatenate([positive[k], negative[k]]).astype(float) for k in ("x2", "y2", "xy")}
    npix = np.concatenate([positive["npix"], negative["npix"]]).astype(int)
    m = config.edge_margin_pix
    keep = (x >= m) & (x < nx - m) & (y >= m) & (y < ny - m)
    x, y, is_negative, npix = x[keep], y[keep], is_negative[keep], npix[keep]
    if config.do_refine_centroids and x.size:
        x, y = _refine_centroids(image, bad, x, y, is_negative, sigma=sigma,
                                 max_shift_pix=config.max_centroid_shift_pix)
    moments = {k: v[keep] for k, v in moments.items()}
    return x, y, is_negative, npix, moments


def _merge_dipoles(x: np.ndarray, y: np.ndarray, is_negative: np.ndarray, npix: np.ndarray,
                   moments: dict[str, np.ndarray], *, radius: float) -> _Detections:
    """The detections with each opposite-sign pair closer than ``radius`` merged into one dipole."""
    dipole_partner = _pair_dipoles(x, y, is_negative, radius)
    # A dipole becomes one DiaSource at the mid-point of its lobes; its negative lobe is dropped.
    has_pair = dipole_partner >= 0
    drop = has_pair & is_negative
    lobe_x = np.where(has_pair, x[np.where(has_pair, dipole_partner, 0)], x)
    lobe_y = np.where(has_pair, y[np.where(has_pair, dipole_partner, 0)], y)
    cx = np.where(has_pair, 0.5 * (x + lobe_x), x)
    cy = np.where(has_pair, 0.5 * (y + lobe_y), y)
    merged = _Detections(x=x, y=y, cx=cx, cy=cy, lobe_x=lobe_x, lobe_y=lobe_y, is_negative=is_negative,
                         has_pair=has_pair, npix=npix, moments=moments)
    return merged.take(~drop)


def _measured_table(found: _Detections, subtraction: SubtractionResult, exposure: CalibratedExposure, *,
                    sigma: float, config: DetectConfig) -> Table:
    """The DiaSource table of the detections: fluxes on the difference, science and template images,
    centroids, shapes, dipole measurements and pixel flags (``sigma``: the difference PSF's)."""
    difference, template, diff_psf = subtraction.difference, subtraction.matched_template, subtraction.psf
    science, wcs, science_psf = exposure.masked, exposure.wcs, exposure.psf_model
    info, detector = exposure.info, exposure.ccdnum
    x, y, cx, cy, lobe_x, lobe_y = found.x, found.y, found.cx, found.cy, found.lobe_x, found.lobe_y
    is_negative, has_pair, npix, moments = found.is_negative, found.has_pair, found.npix, found.moments
    n = x.size
    diff_fit = psf_flux(difference, cx, cy, diff_psf)
    sci_fit = psf_flux(science, cx, cy, science_psf)
    tmpl_fit = psf_flux(template, cx, cy, diff_psf)
    ap, ap_err, ap_trunc = aperture_flux(difference, cx, cy, radius_pix=config.aperture_radius_pix)
    lobe_fit = psf_flux(difference, lobe_x, lobe_y, diff_psf)
    own_fit = psf_flux(difference, x, y, diff_psf)
    snr = diff_fit["flux"] / diff_fit["flux_err"]
    centroid_err = np.where(np.abs(snr) > 0, np.sqrt(2.0) * sigma / np.maximum(np.abs(snr), 1e-3), np.nan)
    ra, dec = wcs.all_pix2world(cx, cy, 0) if n else (np.zeros(0), np.zeros(0))
    scale_arcsec = pixel_scale_arcsec(wcs)
    flags = pixel_flags(difference.mask, cx, cy)
    psf_moment = sigma**2 * np.ones(n)
    ids = dia_source_id(info.expnum, detector, np.arange(n))
    dipole_length = np.hypot(x - lobe_x, y - lobe_y) * scale_arcsec
    dipole_angle = np.degrees(np.arctan2(lobe_y - y, lobe_x - x))
    bbox = np.clip(2 * np.ceil(np.sqrt(np.maximum(npix, 1))) + 1, 15, 101).astype(np.int32)
    table = Table({
        "diaSourceId": ids.astype(np.int64),
        "visit": np.full(n, info.expnum, np.int64),
        "detector": np.full(n, detector, np.int32),
        "midpointMjdTai": np.full(n, info.mjd_mid_tai),
        "exposureTime": np.full(n, info.exptime_s, np.float32),
        "ra": np.asarray(ra, float), "dec": np.asarray(dec, float),
        "raErr": (centroid_err * scale_arcsec / 3600.0).astype(np.float32),
        "decErr": (centroid_err * scale_arcsec / 3600.0).astype(np.float32),
        "x": cx.astype(np.float32), "y": cy.astype(np.float32),
        "xErr": centroid_err.astype(np.float32), "yErr": centroid_err.astype(np.float32),
        "centroid_flag": ~np.isfinite(centroid_err),
        "apFlux": ap.astype(np.float32), "apFluxErr": ap_err.astype(np.float32),
        "apFlux_flag": ~np.isfinite(ap), "apFlux_flag_apertureTruncated": ap_trunc,
        "isNegative": is_negative & ~has_pair,
        "snr": snr.astype(np.float32),
        "psfFlux": diff_fit["flux"].astype(np.float32), "psfFluxErr": diff_fit["flux_err"].astype(np.float32),
        "psfChi2": diff_fit["chi2"].astype(np.float32), "psfNdata": diff_fit["n_data"].astype(np.int32),
        "psfFlux_flag": ~np.isfinite(diff_fit["flux"]) | diff_fit["no_good_pixels"],
        "psfFlux_flag_edge": diff_fit["edge"], "psfFlux_flag_noGoodPixels": diff_fit["no_good_pixels"],
        "scienceFlux": sci_fit["flux"].astype(np.float32), "scienceFluxErr": sci_fit["flux_err"].astype(np.float32),
        "forced_PsfFlux_flag": ~np.isfinite(sci_fit["flux"]),
        "forced_PsfFlux_flag_edge": sci_fit["edge"], "forced_PsfFlux_flag_noGoodPixels": sci_fit["no_good_pixels"],
        "templateFlux": tmpl_fit["flux"].astype(np.float32), "templateFluxErr": tmpl_fit["flux_err"].astype(np.float32),
        "ixx": moments["x2"].astype(np.float32), "iyy": moments["y2"].astype(np.float32),
        "ixy": moments["xy"].astype(np.float32),
        "ixxPSF": psf_moment.astype(np.float32), "iyyPSF": psf_moment.astype(np.float32),
        "ixyPSF": np.zeros(n, np.float32),
        "shape_flag": ~np.isfinite(moments["x2"]),
        "isDipole": has_pair, "dipoleFitAttempted": has_pair,
        "dipoleMeanFlux": np.where(has_pair, 0.5 * (own_fit["flux"] - lobe_fit["flux"]), np.nan).astype(np.float32),
        "dipoleFluxDiff": np.where(has_pair, own_fit["flux"] + lobe_fit["flux"], np.nan).astype(np.float32),
        "dipoleLength": np.where(has_pair, dipole_length, np.nan).astype(np.float32),
        "dipoleAngle": np.where(has_pair, dipole_angle, np.nan).astype(np.float32),
        "dipoleNdata": np.where(has_pair, own_fit["n_data"] + lobe_fit["n_data"], 0).astype(np.int32),
        "trailNdata": np.zeros(n, np.int32),
        "band": np.full(n, info.band, dtype="U1"),
        "timeProcessedMjdTai": np.full(n, info.mjd_mid_tai),
        "bboxSize": bbox,
        **{k: v.astype(bool) for k, v in flags.items()},
    })
    return table


def _refine_centroids(image: np.ndarray, bad: np.ndarray, x: np.ndarray, y: np.ndarray, is_negative: np.ndarray, *,
                      sigma: float, max_shift_pix: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian-windowed centroids (sep.winpos, window sigma = PSF sigma) of each detection on the difference
    image, sign-flipped for negative detections; a detection whose centroid moves ``max_shift_pix`` or more,
    or fails, keeps its detected position."""
    data = np.where(bad, np.float32(0.0), image).astype(np.float32, copy=False)
    new_x, new_y = x.copy(), y.copy()
    for sign, sel in ((1.0, ~is_negative), (-1.0, is_negative)):
        if not sel.any():
            continue
        signed = data if sign > 0 else np.negative(data)
        wx, wy, flag = sep.winpos(np.ascontiguousarray(signed), x[sel], y[sel], sigma, mask=bad)
        ok = (flag == 0) & np.isfinite(wx) & np.isfinite(wy) & (np.hypot(wx - x[sel], wy - y[sel]) < max_shift_pix)
        new_x[sel] = np.where(ok, wx, x[sel])
        new_y[sel] = np.where(ok, wy, y[sel])
    return new_x, new_y


def _pair_dipoles(x: np.ndarray, y: np.ndarray, is_negative: np.ndarray, radius: float) -> np.ndarray:
    """Index of the closest opposite-sign detection within ``radius`` (mutual), or -1."""
    partner = np.full(x.size, -1, dtype=int)
    pos, neg = np.flatnonzero(~is_negative), np.flatnonzero(is_negative)
    if pos.size == 0 or neg.size == 0:
        return partner
    d_pn, i_pn = cKDTree(np.column_stack([x[neg], y[neg]])).query(np.column_stack([x[pos], y[pos]]),
                                                                      distance_upper_bound=radius)
    d_np, i_np = cKDTree(np.column_stack([x[pos], y[pos]])).query(np.column_stack([x[neg], y[neg]]),
                                                                      distance_upper_bound=radius)
    ok_p = np.isfinite(d_pn)
    mutual = np.zeros(pos.size, bool)
    mutual[ok_p] = i_np[i_pn[ok_p]] == np.arange(pos.size)[ok_p]
    partner[pos[mutual]] = neg[i_pn[mutual]]
    partner[neg[i_pn[mutual]]] = pos[mutual]
    return partner


__all__ = ["DetectConfig", "detect_dia_sources", "dia_source_id", "cut_stamps"]
