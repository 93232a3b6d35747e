"""Reference stars for one exposure from a Gaia-archive catalog: positions at the exposure's epoch and
magnitudes in its DECam band.

The input is a table in the Gaia archive's own columns (as ``blink refcat`` indexes them): ``source_id``,
``ra``, ``dec`` (deg), ``ra_error``, ``dec_error`` (mas), ``ref_epoch`` (Julian year, TCB), ``pmra``,
``pmdec``, ``pmra_error``, ``pmdec_error`` (mas/yr), ``phot_g_mean_mag``, ``phot_bp_mean_mag``,
``phot_rp_mean_mag`` and ``phot_<x>_mean_flux_over_error``. :func:`reference_stars` turns it into what
:func:`pipeline.calibrate.calibrate` reads (``ra``, ``dec``, ``<band>_mag``, ...).

Colour transformation (Gaia -> DECam)
-------------------------------------
``m_band = G + sum_k c_k (BP - RP)**k``, the polynomials fitted by Rongpu Zhou (2020-04-12) for the DESI
Legacy Imaging Surveys DR9 (DECam g, r, i, z against Gaia DR2 G, BP, RP; as in legacypipe
``py/legacypipe/gaiacat.py::gaia_to_decam``, https://github.com/legacysurvey/legacypipe). Legacypipe clips
the colour to -0.6 < BP - RP < 4.1, the colour range of the fit: Blink instead gives stars outside it
(:attr:`RefcatConfig.colour_range_mag`), and stars without BP or RP, no magnitude (``phot_ok`` False; they
stay astrometric references). The source gives no Y-band relation: a Y-band exposure needs
``colour_terms['Y']`` set in the configuration (else an :class:`InputError`).

Proper motions: linear, from each star's ``ref_epoch`` to the exposure's midpoint (:func:`propagate`; it
agrees with ``SkyCoord.apply_space_motion`` to a microarcsecond). Parallax is not applied (under a
milliarcsecond for the faint stars a CCD matches, at most a few for the nearest).
"""

from __future__ import annotations

import logging

import numpy as np
from astropy.table import Table
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["GAIA_COLUMNS", "LEGACY_SURVEYS_DR9_COLOUR_TERMS", "RefcatConfig", "colour_transform",
           "epoch_mjd", "propagate", "reference_stars"]

LEGACY_SURVEYS_DR9_COLOUR_TERMS: dict[str, tuple[float, ...]] = {
    "g": (-0.1178631039, 0.3650113495, 0.5608615360, -0.2850687702, -1.0243473939, 1.4378375491,
          0.0679401731, -1.1713172509, 0.9107811975, -0.3374324004, 0.0683946390, -0.0073089582,
          0.0003230170),
    "r": (0.1139078673, -0.2868955307, 0.0013196434, 0.1029151074, 0.1196710702, -0.3729031390,
          0.1859874242, 0.1370162451, -0.1808580848, 0.0803219195, -0.0180218196, 0.0020584707,
          -0.0000953486),
    "i": (0.3396481660, -0.6491867119, -0.3330769819, 0.4381097294, 0.5752125977, -1.4746570523,
          1.2979140762, -0.6371018151, 0.1948940062, -0.0382055596, 0.0046907449, -0.0003296841,
          0.0000101480),
    "z": (0.4811198057, -0.9990015041, 0.1403990019, 0.2150988888, -0.2917655866, 0.1326831887,
          -0.0259205004, 0.0018548776),
}
"""``m_DECam - G`` as polynomial coefficients in ``BP - RP`` (lowest order first), Legacy Surveys DR9
(R. Zhou 2020, legacypipe ``gaia_to_decam``); fitted over -0.6 < BP - RP < 4.1."""

GAIA_COLUMNS = ("source_id", "ra", "dec", "ra_error", "dec_error", "ref_epoch", "pmra", "pmdec", "pmra_error",
                "pmdec_error", "phot_g_mean_mag", "phot_bp_mean_mag", "phot_rp_mean_mag",
                "phot_g_mean_flux_over_error", "phot_bp_mean_flux_over_error", "phot_rp_mean_flux_over_error")
"""The Gaia-archive columns :func:`reference_stars` reads."""

MJD_J2000 = 51544.5
"""MJD of the Julian epoch J2000.0 (Gaia's ``ref_epoch`` is a Julian year: J2000 + 365.25 d per year)."""

MAG_PER_FRACTIONAL_FLUX = 2.5 / np.log(10.0)
"""d(mag) / d(flux) / flux: a flux-over-error ``s`` is a magnitude error of 1.0857 / s."""


class RefcatConfig(BaseModel):
    """How a Gaia-archive catalog becomes an exposure's reference stars."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    colour_terms: dict[str, tuple[float, ...]] = Field(
        default_factory=lambda: dict(LEGACY_SURVEYS_DR9_COLOUR_TERMS),
        description="Per band, ``m_band - G`` as polynomial coefficients in BP - RP, lowest order first "
                    "(default: Legacy Surveys DR9, g r i z).")
    colour_range_mag: tuple[float, float] = Field((-0.6, 4.1), description="BP - RP range where the colour "
                                                  "terms hold; stars outside it get no magnitude.")
    colour_term_scatter_mag: float = Field(0.01, ge=0, le=1.0, description="Per-star scatter of main-sequence "
                                           "stars about the colour transformation (an assumed 0.01 mag; added in "
                                           "quadrature to the magnitude error, it sets the zero point's weights).")
    missing_pm_sigma_mas_per_yr: float = Field(10.0, ge=0, le=1000.0, description="Proper-motion error assumed "
                                               "for stars without a proper motion (two-parameter solutions, "
                                               "placed at their reference-epoch position; with the default "
                                               "max_position_error_mas they are dropped after 5 years).")
    min_g_mag: float = Field(3.0, ge=-2.0, le=30.0, description="Brighter stars (saturated in Gaia) are dropped.")
    max_position_error_mas: float = Field(50.0, gt=0, description="Stars whose position at the epoch is less "
                                          "certain (no proper motion, or a poor one) are dropped: the astrometric "
                                          "fit weighs its stars equally.")
    max_mag_err_mag: float = Field(0.05, gt=0, le=10.0, description="Stars whose predicted magnitude is less "
                                   "certain (faint BP/RP on a steep part of the colour term) get no magnitude: "
                                   "the zero point weighs stars by their instrumental errors only.")

    @field_validator("colour_terms")
    @classmethod
    def _non_empty_terms(cls, v: dict[str, tuple[float, ...]]) -> dict[str, tuple[float, ...]]:
        empty = [band for band, coeffs in v.items() if not coeffs]
        if empty:
            raise ValueError(f"colour terms without coefficients for {empty}")
        return v

    @field_validator("colour_range_mag")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not v[0] < v[1]:
            raise ValueError(f"needs low < high, got {v}")
        return v


def epoch_mjd(julian_year: np.ndarray | float) -> np.ndarray:
    """MJD of a Julian epoch (Gaia's ``ref_epoch``, e.g. 2015.5 -> 57205.875)."""
    return MJD_J2000 + (np.asarray(julian_year, dtype=float) - 2000.0) * 365.25


def propagate(ra_deg: np.ndarray, dec_deg: np.ndarray, pmra_mas_per_yr: np.ndarray, pmdec_mas_per_yr: np.ndarray,
              dt_yr: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Positions moved by a constant proper motion over ``dt_yr`` years.

    Parameters
    ----------
    ra_deg, dec_deg : numpy.ndarray
        Positions at the reference epoch, degrees.
    pmra_mas_per_yr, pmdec_mas_per_yr : numpy.ndarray
        Proper motion, mas/yr (``pmra`` includes cos(dec), as in Gaia).
    dt_yr : float or numpy.ndarray
        Target epoch minus reference epoch, Julian years.

    Returns
    -------
    ra_deg, dec_deg : numpy.ndarray

    Notes
    -----
    The star moves along a straight line in space at constant velocity, infinitely far away (no parallax,
    no radial velocity): its unit vector plus ``dt`` times the tangential velocity (east and north unit
    vectors times ``pmra`` and ``pmdec``), renormalised. Over decades this agrees with
    ``SkyCoord.apply_space_motion`` to micro-arcseconds for such stars.
    """
    ra, dec = np.radians(np.asarray(ra_deg, float)), np.radians(np.asarray(dec_deg, float))
    scale = np.radians(1.0 / 3.6e6) * np.asarray(dt_yr, float)
    mu_e, mu_n = np.asarray(pmra_mas_per_yr, float) * scale, np.asarray(pmdec_mas_per_yr, float) * scale
    cos_ra, sin_ra, cos_dec, sin_dec = np.cos(ra), np.sin(ra), np.cos(dec), np.sin(dec)
    x = cos_dec * cos_ra - mu_e * sin_ra - mu_n * sin_dec * cos_ra
    y = cos_dec * sin_ra + mu_e * cos_ra - mu_n * sin_dec * sin_ra
    z = sin_dec + mu_n * cos_dec
    return np.degrees(np.arctan2(y, x)) % 360.0, np.degrees(np.arctan2(z, np.hypot(x, y)))


def colour_transform(g_mag: np.ndarray, bp_rp_mag: np.ndarray, band: str, *,
                     config: RefcatConfig = RefcatConfig()) -> tuple[np.ndarray, np.ndarray]:
    """A DECam-band magnitude from Gaia G and BP - RP, and the transformation's slope d(m)/d(BP - RP).

    Raises
    ------
    InputError
        The configuration has no colour terms for ``band``.
    """
    if band not in config.colour_terms:
        raise InputError(f"no Gaia colour transformation for band {band!r} (pipeline.refcat.colour_terms has "
                         f"{sorted(config.colour_terms)})", stage="refcat")
    poly = np.polynomial.Polynomial(config.colour_terms[band])
    colour = np.asarray(bp_rp_mag, float)
    return np.asarray(g_mag, float) + poly(colour), poly.deriv()(colour)


def _floats(table: Table, name: str) -> np.ndarray:
    """A column as float64 with masked entries as NaN."""
    return np.ma.filled(np.ma.asarray(table[name], dtype=float), np.nan)


def reference_stars(refcat: Table, *, mjd_tai: float, band: str, config: RefcatConfig = RefcatConfig()) -> Table:
    """The reference stars of one exposure: Gaia positions at its epoch and magnitudes in its band.

    Parameters
    ----------
    refcat : Table
        Gaia-archive columns (:data:`GAIA_COLUMNS`; ``source_id`` optional), e.g. from
        ``DataRepository.refcat_in``.
    mjd_tai : float
        The exposure's epoch (midpoint), MJD (TAI; the 69 s to TCB move a star by nanoarcseconds).
    band : str
        The exposure's band.
    config : RefcatConfig

    Returns
    -------
    Table
        One row per star with a position known to ``max_position_error_mas`` at the epoch, not saturated
        (``min_g_mag``): ``ref_id``, ``ra``, ``dec`` (deg, at the epoch), ``ra_err_mas``, ``dec_err_mas``
        (reference-epoch errors grown by the proper-motion errors), ``has_pm``, ``bp_rp``, ``phot_ok``,
        ``<band>_mag`` and ``<band>_mag_err`` (Gaia errors through the transformation, plus its scatter). A
        star without G, BP or RP, outside the colour range or with a magnitude error above ``max_mag_err_mag``
        has ``phot_ok`` False and NaN magnitudes: it still serves the astrometry, not the zero point.

    Raises
    ------
    InputError
        A needed column is missing, or the band has no colour transformation.
    """
    missing = [c for c in GAIA_COLUMNS[1:] if c not in refcat.colnames]
    if missing:
        raise InputError(f"reference catalog lacks Gaia columns {missing}", stage="refcat")
    g, bp, rp = (_floats(refcat, f"phot_{b}_mean_mag") for b in ("g", "bp", "rp"))
    with np.errstate(invalid="ignore"):
        keep = np.isfinite(_floats(refcat, "ra")) & np.isfinite(_floats(refcat, "dec")) & ~(g < config.min_g_mag)
    g, colour = g[keep], (bp - rp)[keep]
    mag, slope = colour_transform(g, colour, band, config=config)
    g_err, bp_err, rp_err = (MAG_PER_FRACTIONAL_FLUX / _floats(refcat, f"phot_{b}_mean_flux_over_error")[keep]
                             for b in ("g", "bp", "rp"))
    mag_err = np.sqrt(g_err**2 + slope**2 * (bp_err**2 + rp_err**2) + config.colour_term_scatter_mag**2)
    lo, hi = config.colour_range_mag
    with np.errstate(invalid="ignore"):
        phot_ok = np.isfinite(mag) & np.isfinite(mag_err) & (colour > lo) & (colour < hi) \
            & (mag_err <= config.max_mag_err_mag)
    mag, mag_err = np.where(phot_ok, mag, np.nan), np.where(phot_ok, mag_err, np.nan)

    pmra, pmdec = _floats(refcat, "pmra")[keep], _floats(refcat, "pmdec")[keep]
    has_pm = np.isfinite(pmra) & np.isfinite(pmdec)
    dt_yr = (mjd_tai - epoch_mjd(_floats(refcat, "ref_epoch")[keep])) / 365.25
    ra, dec = propagate(_floats(refcat, "ra")[keep], _floats(refcat, "dec")[keep], np.where(has_pm, pmra, 0.0),
                        np.where(has_pm, pmdec, 0.0), dt_yr)
    errors = {}
    for axis in ("ra", "dec"):
        pm_err = np.where(has_pm, _floats(refcat, f"pm{axis}_error")[keep], config.missing_pm_sigma_mas_per_yr)
        errors[axis] = np.hypot(_floats(refcat, f"{axis}_error")[keep], pm_err * dt_yr)
    ref_id = (np.asarray(refcat["source_id"], np.int64)[keep] if "source_id" in refcat.colnames
              else np.flatnonzero(keep).astype(np.int64))
    out = Table({"ref_id": ref_id, "ra": ra, "dec": dec, "ra_err_mas": errors["ra"], "dec_err_mas": errors["dec"],
                 "has_pm": has_pm, "bp_rp": colour, "phot_ok": phot_ok, f"{band}_mag": mag,
                 f"{band}_mag_err": mag_err})
    with np.errstate(invalid="ignore"):
        out = out[np.hypot(errors["ra"], errors["dec"]) <= config.max_position_error_mas]
    log.debug("reference stars: %d of %d Gaia stars kept for band %s at MJD %.3f (%d photometric)", len(out),
              len(refcat), band, mjd_tai, int(np.sum(out["phot_ok"])))
    return out
