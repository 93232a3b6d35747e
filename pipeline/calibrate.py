"""Characterize and calibrate one ISR-corrected CCD: background, sources, PSF, WCS, zero point.

The result is a :class:`pipeline.types.CalibratedExposure` in nJy and its source catalog.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import sep
from astropy.stats import sigma_clip
from astropy.table import Table
from astropy.wcs import WCS
from pydantic import BaseModel, ConfigDict, Field

from pipeline.astrometry import AstrometryConfig, CameraModel, fit_wcs
from pipeline.background import BackgroundConfig, subtract_background
from pipeline.errors import AlgorithmError, NoWorkError
from pipeline.masks import UNUSABLE, MaskBit
from pipeline.measure import cut_stamps, psf_flux
from pipeline.photometry import fit_zero_point, njy_per_electron
from pipeline.psf import GaussianPsf, PixelPsf, Psf, StarStampCache, build_pixel_psf, fit_psf
from pipeline.sources import SourceDetectionConfig, detect_sources, select_psf_stars
from pipeline.types import CalibratedExposure, ExposureInfo, MaskedImage

log = logging.getLogger(__name__)


class CalibrateConfig(BaseModel):
    """Configuration of characterization and calibration."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    background: BackgroundConfig = BackgroundConfig()
    detection: SourceDetectionConfig = SourceDetectionConfig()
    astrometry: AstrometryConfig = AstrometryConfig()
    psf_spatial_order: int = Field(1, ge=0, le=1, description="Order of the PSF width's variation across the "
                                                              "CCD (0 constant, 1 linear).")
    psf_star_min_snr: float = Field(30.0, gt=0, description="Least SNR of a PSF star.")
    psf_max_stars: int = Field(300, ge=1, description="Most PSF stars (the brightest are kept).")
    psf_isolation_sigmas: float = Field(6.0, ge=0, le=100.0, description="A PSF star's neighbours are looked for "
                                                                         "within this many PSF sigmas.")
    psf_max_neighbour_flux_ratio: float = Field(0.02, ge=0, description="A PSF star with a neighbour brighter "
                                                "than this fraction of its flux is dropped.")
    halo_n_sigma: float = Field(4.0, gt=0, description="PSF stars whose PSF-subtracted light at 2 to 3.5 FWHM is "
                                                       "this many sigma from 0 are dropped (halos, gradients).")
    flux_scale_min_snr: float = Field(100.0, gt=0, description="The pixel PSF's aperture correction uses PSF "
                                      "stars of this PSF SNR or more when there are min_stars of them.")
    astrometry_min_snr: float = Field(30.0, gt=0, description="Least SNR of stars used in the astrometric fit.")
    astrometry_fallback_min_snr: float = Field(10.0, gt=0, description="Least SNR of the stars of the "
                                               "astrometric fit when too few clean stars pass astrometry_min_snr.")
    psf_half_size: int | None = Field(None, ge=2, le=256, description="Half size of the pixel PSF model, pixels; "
                                                                      "None sizes it to 3.3 FWHM (all but ~0.3% "
                                                                      "of the wings).")
    do_pixel_psf: bool = Field(True, description="Empirical pixel PSF; False for the Gaussian-moment model.")
    min_stars: int = Field(5, ge=1, description="Fewest stars for PSF and zero point; fewer is a NoWorkError "
                                                "(clouds).")


def calibrate(isr_image: MaskedImage, header_wcs: WCS, refcat: Table, *, info: ExposureInfo, ccdnum: int,
              config: CalibrateConfig = CalibrateConfig(), camera: CameraModel | None = None
              ) -> tuple[CalibratedExposure, Table]:
    """Calibrate an ISR-corrected CCD in electrons.

    Parameters
    ----------
    isr_image : MaskedImage
        ISR output: image and variance in electrons, mask bits.
    header_wcs : WCS
        Rough WCS from the raw header (starting point of the astrometric fit).
    refcat : Table
        Reference stars at the exposure's epoch: ``ra``, ``dec`` and ``<band>_mag`` (what
        :func:`pipeline.refcat.reference_stars` makes of the Gaia catalog).
    info : ExposureInfo
    ccdnum : int
    config : CalibrateConfig
    camera : callable, optional
        The instrument's nominal pixel -> field-angle model of this CCD; the astrometric fit then solves only
        for a low-order map on top of it.

    Returns
    -------
    exposure : CalibratedExposure
        Background-subtracted image and variance in nJy.
    sources : Table
        Detected sources with ``ra``, ``dec``, ``is_psf_star`` and calibrated ``flux_njy``.

    Raises
    ------
    NoWorkError
        Too few stars to calibrate (clouds, an all-saturated CCD).
    AlgorithmError
        The astrometric or photometric fit failed.
    """
    image, mask, variance = isr_image.image, isr_image.mask, isr_image.variance
    subtracted, _ = subtract_background(image, mask, config=config.background)
    sources = detect_sources(subtracted, variance, mask, config=config.detection)
    stars = select_psf_stars(sources, min_snr=config.psf_star_min_snr, max_stars=config.psf_max_stars,
                             isolation_sigmas=config.psf_isolation_sigmas,
                             max_neighbour_flux_ratio=config.psf_max_neighbour_flux_ratio)
    if stars.sum() < config.min_stars:
        raise NoWorkError(f"CCD {ccdnum}: only {int(stars.sum())} usable stars (clouds or saturation?)",
                          stage="calibrate")
    star_x = np.asarray(sources["x"][stars])
    star_y = np.asarray(sources["y"][stars])
    psf_bad = (mask & int(UNUSABLE | MaskBit.SAT)) != 0
    stamp_cache = StarStampCache()
    psf = _measure_psf(subtracted, psf_bad, star_x, star_y, config, stamp_cache=stamp_cache)
    ny, nx = image.shape
    electrons = MaskedImage(image=subtracted, mask=mask, variance=variance)
    # Stars in a bright neighbour's halo or on a gradient bend the model's wings and bias every PSF flux
    # (and so the zero point) by per cent: drop them and build the model again.
    in_halo = halo_contaminated(electrons, star_x, star_y, psf, fwhm_pix=float(psf.fwhm_at((nx - 1) / 2, (ny - 1) / 2)),
                                n_sigma=config.halo_n_sigma)
    if in_halo.any() and (~in_halo).sum() >= config.min_stars:
        stars[np.flatnonzero(stars)[in_halo]] = False
        star_x, star_y = star_x[~in_halo], star_y[~in_halo]
        psf = _measure_psf(subtracted, psf_bad, star_x, star_y, config, stamp_cache=stamp_cache)
    del stamp_cache
    fwhm_center = float(psf.fwhm_at((nx - 1) / 2, (ny - 1) / 2))
    if isinstance(psf, PixelPsf):
        flux_scale, n_flux_scale = psf_flux_scale(electrons, star_x, star_y, psf, fwhm_pix=fwhm_center,
                                                  min_stars=config.min_stars, min_snr=config.flux_scale_min_snr)
        psf = dataclasses.replace(psf, flux_scale=flux_scale)
    else:
        flux_scale, n_flux_scale = 1.0, 0
    aperture_correction = psf_aperture_correction(psf, config.detection.aperture_radius_pix,
                                                  (nx - 1) / 2, (ny - 1) / 2)
    wcs, matches = _fit_astrometry(sources, refcat, header_wcs, shape=image.shape, config=config, camera=camera)
    mag_col = f"{info.band}_mag"
    if mag_col not in refcat.colnames:
        raise AlgorithmError(f"reference catalog has no {mag_col} column", stage="photometry")
    matched_is_star = stars[np.asarray(matches["src_index"])]
    phot = matches[matched_is_star] if matched_is_star.sum() >= config.min_stars else matches
    phot_flux, phot_flux_err = _zero_point_star_fluxes(electrons, sources, np.asarray(phot["src_index"]), psf,
                                                       fwhm_pix=fwhm_center, aperture_correction=aperture_correction)
    ref_rows = np.asarray(phot["ref_index"])
    ref_err = np.asarray(refcat[f"{mag_col}_err"][ref_rows], float) if f"{mag_col}_err" in refcat.colnames else None
    zero_point, zp_err, n_zp = fit_zero_point(
        phot_flux, np.asarray(refcat[mag_col][ref_rows], dtype=float), instrumental_flux_err_e=phot_flux_err,
        ref_mag_err=ref_err, min_stars=config.min_stars)
    scale = njy_per_electron(zero_point)
    calibrated = MaskedImage(image=(subtracted * scale).astype(np.float32, copy=False), mask=mask,
                             variance=(variance * scale**2).astype(np.float32, copy=False))
    fwhm = float(psf.fwhm_at((nx - 1) / 2, (ny - 1) / 2))
    ra, dec = wcs.all_pix2world(np.asarray(sources["x"]), np.asarray(sources["y"]), 0)
    sources["ra"] = ra
    sources["dec"] = dec
    sources["is_psf_star"] = stars
    sources["flux_njy"] = np.asarray(sources["flux_aper"]) * scale * aperture_correction
    metadata = {"astrometry_rms_arcsec": matches.meta["rms_arcsec"], "n_astrometry_matches": len(matches),
                "zero_point_err": zp_err, "n_zero_point_stars": n_zp, "n_psf_stars": int(stars.sum()),
                "aperture_correction": aperture_correction, "psf_flux_scale": flux_scale,
                "n_psf_flux_scale_stars": n_flux_scale}
    log.info("calibrated CCD %d: fwhm %.2f pix, zp %.3f, astrometry rms %.3f arcsec (%d stars)",
             ccdnum, fwhm, zero_point, matches.meta["rms_arcsec"], len(matches))
    exposure = CalibratedExposure(masked=calibrated, wcs=wcs, psf_fwhm_pix=fwhm, psf_model=psf,
                                  zero_point=zero_point, info=info, ccdnum=ccdnum, metadata=metadata)
    return exposure, sources


def _fit_astrometry(sources: Table, refcat: Table, header_wcs: WCS, *, shape: tuple[int, int],
                    config: CalibrateConfig, camera: CameraModel | None) -> tuple[WCS, Table]:
    """The fitted WCS and its matches (``src_index`` into ``sources``), from the bright, clean sources."""
    # Faint stars' centroids (error ~ FWHM / SNR) would dominate an unweighted fit: use bright, clean ones.
    astro = (np.asarray(sources["snr"]) > config.astrometry_min_snr) & (np.asarray(sources["sep_flags"]) == 0) \
        & ((np.asarray(sources["mask_flags"]) & int(UNUSABLE | MaskBit.INTRP)) == 0)
    if astro.sum() < 3 * config.astrometry.min_matches:
        astro = np.asarray(sources["snr"]) > config.astrometry_fallback_min_snr
    astro_index = np.flatnonzero(astro)
    wcs, matches = fit_wcs(np.asarray(sources["x"])[astro], np.asarray(sources["y"])[astro],
                           np.asarray(sources["flux_aper"])[astro], refcat, header_wcs, shape=shape,
                           config=config.astrometry, camera=camera)
    matches["src_index"] = astro_index[np.asarray(matches["src_index"])]
    return wcs, matches


def _zero_point_star_fluxes(electrons: MaskedImage, sources: Table, phot_index: np.ndarray, psf: Psf, *,
                            fwhm_pix: float, aperture_correction: float) -> tuple[np.ndarray, np.ndarray]:
    """Instrumental fluxes and errors (electrons) of the zero point's stars ``sources[phot_index]``: PSF
    fluxes with a pixel PSF, aperture fluxes times the aperture correction with the Gaussian model."""
    if isinstance(psf, PixelPsf):
        # PSF fluxes refer to the model's total flux and are less sensitive to neighbours than apertures.
        fit = psf_flux(electrons, np.asarray(sources["x"])[phot_index], np.asarray(sources["y"])[phot_index], psf,
                       half=int(np.clip(np.ceil(1.5 * fwhm_pix), 4, 15)))
        return fit["flux"], fit["flux_err"]
    phot_flux = np.asarray(sources["flux_aper"])[phot_index] * aperture_correction
    phot_flux_err = np.asarray(sources["flux_aper_err"])[phot_index] * aperture_correction
    return phot_flux, phot_flux_err


def _measure_psf(image: np.ndarray, bad: np.ndarray, x: np.ndarray, y: np.ndarray, config: CalibrateConfig, *,
                 stamp_cache: StarStampCache | None = None) -> PixelPsf | GaussianPsf:
    """The PSF model from the selected stars: a pixel PSF, or the Gaussian model if that fails. ``bad`` is
    True on the pixels no PSF star may use (unusable, saturated)."""
    sigma = measure_gaussian_sigma(image, x, y)
    gaussian = fit_psf(x, y, sigma, spatial_order=config.psf_spatial_order)
    if not config.do_pixel_psf:
        return gaussian
    ny, nx = image.shape
    try:
        return build_pixel_psf(image, x, y, mask=bad, half_size=config.psf_half_size,
                               fwhm_guess_pix=float(gaussian.fwhm_at((nx - 1) / 2, (ny - 1) / 2)),
                               spatial_order=config.psf_spatial_order, stamp_cache=stamp_cache)
    except AlgorithmError as err:
        log.warning("pixel PSF failed (%s); using the Gaussian model", err)
        return gaussian


def halo_contaminated(masked: MaskedImage, x: np.ndarray, y: np.ndarray, psf: Psf, *, fwhm_pix: float,
                      n_sigma: float = 4.0) -> np.ndarray:
    """True for stars with significant light beyond their own PSF wing in an annulus at 2 to 3.5 FWHM.

    The star's PSF fit is subtracted and the residual summed over the annulus's usable pixels; the sum is
    compared with its noise from the variance plane.
    """
    image, variance, mask = masked.image, masked.variance, masked.mask
    half = int(np.ceil(3.5 * fwhm_pix))
    fit = psf_flux(masked, x, y, psf)
    data, outside = cut_stamps(image, x, y, half)
    var, _ = cut_stamps(variance, x, y, half, fill=np.inf)
    bits, _ = cut_stamps(mask, x, y, half, fill=int(MaskBit.NO_DATA))
    resid = data - np.nan_to_num(fit["flux"])[:, None, None] * psf.stamps(x, y, half)
    off = np.arange(-half, half + 1)
    r = np.hypot(off[None, :], off[:, None])
    annulus = (r >= 2.0 * fwhm_pix) & (r <= 3.5 * fwhm_pix) & ~outside & ((bits & int(UNUSABLE)) == 0) \
        & np.isfinite(var) & np.isfinite(data)
    excess = np.sum(np.where(annulus, resid, 0.0), axis=(1, 2))
    noise = np.sqrt(np.sum(np.where(annulus, var, 0.0), axis=(1, 2)))
    return np.abs(excess) > n_sigma * noise


def psf_flux_scale(masked: MaskedImage, x: np.ndarray, y: np.ndarray, psf: PixelPsf, *, fwhm_pix: float,
                   min_stars: int = 5, clip_sigma: float = 3.0, min_snr: float = 100.0) -> tuple[float, int]:
    """Aperture correction of a pixel PSF's fluxes, from the PSF stars.

    Each star's flux in a circle of radius 3 FWHM with no masked pixel, carried to total flux by the model's
    own curve of growth beyond that radius, over its PSF flux, for stars of PSF SNR ``min_snr`` and more
    (all usable stars if fewer than ``min_stars`` are that bright). The result is the inverse-variance weighted,
    sigma-clipped mean of these ratios: PSF fluxes times it are total fluxes, whatever small error the
    model's profile has (an empirical model from a few dozen stars is a per cent off in its core).

    Returns
    -------
    scale : float
        1.0 when fewer than ``min_stars`` stars are usable.
    n_used : int
    """
    image, variance, mask = masked.image, masked.variance, masked.mask
    ny, nx = image.shape
    radius = float(min(3.0 * fwhm_pix, psf.half_size - 1))
    fit = psf_flux(masked, x, y, dataclasses.replace(psf, flux_scale=1.0))
    bad = (np.asarray(mask) & int(UNUSABLE)) != 0
    aperture, aperture_err, flag = sep.sum_circle(np.ascontiguousarray(image, dtype=np.float32), x, y, radius,
                                                  var=np.ascontiguousarray(variance, dtype=np.float32),
                                                  mask=bad, subpix=5)
    wing = psf_aperture_correction(psf, radius, (nx - 1) / 2, (ny - 1) / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = aperture * wing / fit["flux"]
        ratio_err = np.abs(ratio) * np.hypot(aperture_err / aperture, fit["flux_err"] / fit["flux"])
    usable = (flag == 0) & np.isfinite(ratio) & np.isfinite(ratio_err) & (ratio_err > 0) & (fit["flux"] > 0)
    # Faint stars' apertures gather relatively more unrelated light (undetected neighbours, background
    # error): use the bright ones when there are enough.
    bright = usable & (fit["flux"] >= min_snr * fit["flux_err"])
    if bright.sum() >= min_stars:
        usable = bright
    if usable.sum() < min_stars:
        return 1.0, 0
    ratio, weight = ratio[usable], 1.0 / ratio_err[usable] ** 2
    kept = ~sigma_clip(ratio, sigma=clip_sigma, maxiters=5).mask
    if kept.sum() < min_stars:
        return 1.0, 0
    return float(np.average(ratio[kept], weights=weight[kept])), int(kept.sum())


def psf_aperture_correction(psf: Psf, radius_pix: float, x: float, y: float) -> float:
    """Total over aperture flux of the PSF model at (x, y): multiplies star aperture fluxes to total fluxes.

    The aperture flux is measured on the model exactly as on the stars (``sep.sum_circle``, subpix 5).
    """
    half = int(max(np.ceil(radius_pix) + 2, psf.half_size if isinstance(psf, PixelPsf) else 0))
    stamp = np.ascontiguousarray(psf.stamps(np.array([float(x)]), np.array([float(y)]), half)[0])
    inside, _, _ = sep.sum_circle(stamp.astype(np.float64), np.array([float(half)]), np.array([float(half)]),
                                  radius_pix, subpix=5)
    total = float(stamp.sum())
    return total / float(inside[0]) if inside[0] > 0 else 1.0


def measure_gaussian_sigma(image: np.ndarray, x: np.ndarray, y: np.ndarray, *, half_size: int = 12,
                           n_iter: int = 4) -> np.ndarray:
    """Per-star Gaussian sigma (pixels) from adaptively weighted second moments, vectorised over stars.

    With a Gaussian weight of width ``w`` a Gaussian star of width ``s`` has weighted moment
    ``m = s^2 w^2 / (s^2 + w^2)``, inverted exactly; ``w`` is iterated to the star's own width.
    """
    ny, nx = image.shape
    off = np.arange(-half_size, half_size + 1)
    cx, cy = np.rint(x).astype(int), np.rint(y).astype(int)
    yy = np.clip(cy[:, None, None] + off[None, :, None], 0, ny - 1)
    xx = np.clip(cx[:, None, None] + off[None, None, :], 0, nx - 1)
    stamps = image[yy, xx].astype(float)
    dx = xx - x[:, None, None]
    dy = yy - y[:, None, None]
    r2 = dx**2 + dy**2
    weight_sigma = np.full(len(x), 2.0)
    sigma = weight_sigma.copy()
    for _ in range(n_iter):
        w = np.exp(-0.5 * r2 / weight_sigma[:, None, None] ** 2)
        norm = np.sum(w * stamps, axis=(1, 2))
        m = np.sum(w * stamps * r2, axis=(1, 2)) / np.where(norm > 0, norm, np.nan) / 2.0
        ws2 = weight_sigma**2
        s2 = m * ws2 / np.where(ws2 - m > 1e-6, ws2 - m, np.nan)
        sigma = np.sqrt(np.clip(s2, 1e-4, None))
        weight_sigma = np.where(np.isfinite(sigma), np.clip(sigma, 0.8, half_size / 3), weight_sigma)
    return sigma


__all__ = ["CalibrateConfig", "calibrate", "halo_contaminated", "psf_flux_scale", "measure_gaussian_sigma",
           "psf_aperture_correction", "GaussianPsf"]
