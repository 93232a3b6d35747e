"""The simulated world's Gaia: a Gaia-archive catalog of the simulator's stars, written as chunk files.

What a user would download from the Gaia archive for the simulated fields: one FITS table per HEALPix
pixel (``chunk-<pixel>.fits``, nside 32, nested) in the archive's own columns, positions at Gaia's
reference epoch J2015.5.

The simulator's stars sit at their positions of the night's start (``SimConfig.start_mjd``) and move by
their proper motions (:func:`proper_motions`: a few mas/yr, a thick-disc-like dispersion): every exposure
renders them where they are at its midpoint (:func:`positions_at`), and the catalog carries them back to
J2015.5; Gaia's errors
are then added: position, proper-motion and photometric errors growing with G like Gaia DR2's (Lindegren et
al. 2018; Evans et al. 2018), no proper motion for some faint stars (two-parameter solutions) and no BP/RP
photometry for some (as in DR2). Stars fainter than G = 21 or brighter than G = 3 are not in the catalog.

Gaia magnitudes come from the star's DECam g and r through the inverse of the Legacy Surveys DR9
Gaia -> DECam relation (R. Zhou 2020, legacypipe ``gaia_to_decam``): BP - RP is the colour whose
predicted g - r is the star's, G is ``r - (r - G)(BP - RP)``, and the star then departs from the mean
relation by an intrinsic scatter (:data:`INTRINSIC_SCATTER_MAG` in G, :data:`INTRINSIC_COLOUR_SCATTER_MAG`
in BP - RP). BP and RP are split about G by an approximate stellar relation ``G - RP = 0.6 c - 0.05 c**2``.
The simulator's own copy of the relation: it imports nothing from the pipeline.
"""

from __future__ import annotations

from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy_healpix import HEALPix

from simulator import optics
from simulator.world import name_tag, seeded_rng

GAIA_REF_EPOCH = 2015.5
"""Gaia DR2's reference epoch (Julian year)."""

CHUNK_NSIDE = 32
"""HEALPix nside (nested) of the chunk files."""

G_LIMIT_MAG = 21.0
"""Faintest G in the catalog."""

G_SATURATION_MAG = 3.0
"""Brightest G in the catalog."""

INTRINSIC_SCATTER_MAG = 0.01
"""Per-star departure of G from the mean DECam -> Gaia relation, mag."""

INTRINSIC_COLOUR_SCATTER_MAG = 0.01
"""Per-star departure of BP - RP from the mean relation, mag."""

PM_MEAN_MAS_PER_YR = (-1.5, -3.0)
"""Mean (pmra, pmdec) of the simulated stars."""

PM_SIGMA_MAS_PER_YR = 4.0
"""Dispersion of each proper-motion component."""

# DECam band - G as polynomials in BP - RP (lowest order first): Legacy Surveys DR9 (R. Zhou 2020, in
# legacypipe gaiacat.py), inverted below on the colour range of the fit.
_R_MINUS_G = (0.1139078673, -0.2868955307, 0.0013196434, 0.1029151074, 0.1196710702, -0.3729031390, 0.1859874242,
              0.1370162451, -0.1808580848, 0.0803219195, -0.0180218196, 0.0020584707, -0.0000953486)
_G_MINUS_G = (-0.1178631039, 0.3650113495, 0.5608615360, -0.2850687702, -1.0243473939, 1.4378375491, 0.0679401731,
              -1.1713172509, 0.9107811975, -0.3374324004, 0.0683946390, -0.0073089582, 0.0003230170)
_I_MINUS_G = (0.3396481660, -0.6491867119, -0.3330769819, 0.4381097294, 0.5752125977, -1.4746570523, 1.2979140762,
              -0.6371018151, 0.1948940062, -0.0382055596, 0.0046907449, -0.0003296841, 0.0000101480)
_Z_MINUS_G = (0.4811198057, -0.9990015041, 0.1403990019, 0.2150988888, -0.2917655866, 0.1326831887, -0.0259205004,
              0.0018548776)
_COLOUR_GRID = np.linspace(-0.5, 2.3, 2801)
"""BP - RP grid of the inversion: decam g - r rises monotonically with BP - RP over it (-0.5 to 1.43)."""

MJD_J2000 = 51544.5


def julian_year(mjd: float) -> float:
    """Julian epoch of an MJD."""
    return 2000.0 + (mjd - MJD_J2000) / 365.25


def proper_motions(seed: int, kind: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pmra, pmdec), mas/yr, of the simulated sources: stars (and variable stars) move, the rest do not."""
    rng = seeded_rng(seed, name_tag("pm__"))
    n = len(kind)
    moving = np.isin(kind, ("star", "variable"))
    pmra = np.where(moving, rng.normal(PM_MEAN_MAS_PER_YR[0], PM_SIGMA_MAS_PER_YR, n), 0.0)
    pmdec = np.where(moving, rng.normal(PM_MEAN_MAS_PER_YR[1], PM_SIGMA_MAS_PER_YR, n), 0.0)
    return pmra, pmdec


def positions_at(table: Table, mjd: float, epoch_mjd: float) -> tuple[np.ndarray, np.ndarray]:
    """Where the sources of ``table`` (``ra``, ``dec`` at ``epoch_mjd``, ``pmra``, ``pmdec``) are at ``mjd``:
    what an exposure at ``mjd`` renders."""
    ra, dec = np.asarray(table["ra"], float), np.asarray(table["dec"], float)
    if "pmra" not in table.colnames or mjd == epoch_mjd:
        return ra, dec
    scale = np.radians(1.0 / 3.6e6) * (mjd - epoch_mjd) / 365.25
    return optics.tangent_to_sky(np.asarray(table["pmra"]) * scale, np.asarray(table["pmdec"]) * scale, ra, dec)


def gaia_colour_and_g(g_mag: np.ndarray, r_mag: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """BP - RP and G of stars of DECam ``g`` and ``r`` on the mean relation (colours clipped to the grid)."""
    colour = np.interp(np.asarray(g_mag, float) - np.asarray(r_mag, float), *_g_minus_r_grid())
    return colour, np.asarray(r_mag, float) - np.polynomial.Polynomial(_R_MINUS_G)(colour)


def stellar_locus(g_minus_r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DECam ``r - i`` and ``i - z`` of a main-sequence star of DECam ``g - r`` (the locus of the same Legacy
    Surveys DR9 relation): the simulator's stars follow it, so that one Gaia colour describes all bands."""
    colour = np.interp(np.asarray(g_minus_r, float), *_g_minus_r_grid())
    r_off, i_off, z_off = (np.polynomial.Polynomial(c)(colour) for c in (_R_MINUS_G, _I_MINUS_G, _Z_MINUS_G))
    return r_off - i_off, i_off - z_off


def _g_minus_r_grid() -> tuple[np.ndarray, np.ndarray]:
    """(g - r, BP - RP) along the colour grid, g - r increasing."""
    return (np.polynomial.Polynomial(_G_MINUS_G)(_COLOUR_GRID) - np.polynomial.Polynomial(_R_MINUS_G)(_COLOUR_GRID),
            _COLOUR_GRID)


def _errors(g: np.ndarray) -> dict[str, np.ndarray]:
    """Gaia DR2-like 1-sigma errors at magnitude G: positions (mas), proper motions (mas/yr), G and BP/RP."""
    faint = 10.0 ** (0.3 * (g - 17.0))
    # DR2 (Lindegren et al. 2018): 0.04 / 0.1 / 0.7 mas in position and 0.06 / 0.2 / 1.2 mas/yr in proper
    # motion at G < 15 / 17 / 20; photometry (Evans et al. 2018): ~2 mmag in G and ~8 in BP, RP at G = 17.
    return {"pos": np.hypot(0.04, 0.09 * faint), "pm": np.hypot(0.06, 0.19 * 10.0 ** (0.266 * (g - 17.0))),
            "g": np.hypot(0.0003, 0.0015 * faint), "bprp": np.hypot(0.002, 0.008 * faint)}


def gaia_catalog(stars: Table, *, seed: int, epoch_mjd: float) -> Table:
    """The Gaia-archive catalog of the simulator's stars.

    Parameters
    ----------
    stars : Table
        Simulated stars: ``source_id``, ``ra``, ``dec`` (at ``epoch_mjd``), ``pmra``, ``pmdec`` (mas/yr),
        ``ref_mag_g``, ``ref_mag_r``.
    seed : int
        The simulation's seed.
    epoch_mjd : float
        Epoch of the stars' positions.

    Returns
    -------
    Table
        Gaia columns (``source_id``, ``ra``, ``dec``, ``ra_error``, ..., ``phot_rp_mean_flux_over_error``)
        of the stars with 3 <= G <= 21.
    """
    rng = seeded_rng(seed, name_tag("gaia"))
    n = len(stars)
    colour, g_true = gaia_colour_and_g(stars["ref_mag_g"], stars["ref_mag_r"])
    g_true = g_true + rng.normal(0.0, INTRINSIC_SCATTER_MAG, n)
    colour = colour + rng.normal(0.0, INTRINSIC_COLOUR_SCATTER_MAG, n)
    pmra, pmdec = np.asarray(stars["pmra"], float), np.asarray(stars["pmdec"], float)
    err = _errors(g_true)
    dt_yr = GAIA_REF_EPOCH - julian_year(epoch_mjd)
    ra = np.asarray(stars["ra"], float)
    dec = np.asarray(stars["dec"], float)
    # Back to J2015.5 along a straight line in space: the gnomonic point (pm * dt) about the star.
    mas = np.radians(1.0 / 3.6e6)
    off_e = (pmra * dt_yr + rng.normal(0.0, 1.0, n) * err["pos"]) * mas
    off_n = (pmdec * dt_yr + rng.normal(0.0, 1.0, n) * err["pos"]) * mas
    ra_ref, dec_ref = optics.tangent_to_sky(off_e, off_n, ra, dec)  # elementwise: one tangent point per star
    two_parameter = rng.random(n) < 0.01 + 0.3 * np.clip((g_true - 19.5) / 1.5, 0.0, 1.0)
    no_bprp = rng.random(n) < 0.02 + 0.28 * np.clip((g_true - 19.0) / 2.0, 0.0, 1.0)
    g_minus_rp = 0.6 * colour - 0.05 * colour**2
    rp_true = g_true - g_minus_rp
    bp_true = rp_true + colour
    out = Table()
    out["source_id"] = np.asarray(stars["source_id"], np.int64)
    out["ra"], out["dec"] = ra_ref, dec_ref
    out["ra_error"] = err["pos"].astype(np.float32)
    out["dec_error"] = err["pos"].astype(np.float32)
    out["ref_epoch"] = np.full(n, GAIA_REF_EPOCH)
    pm_err = np.where(two_parameter, np.nan, err["pm"])
    out["pmra"] = np.where(two_parameter, np.nan, pmra + rng.normal(0.0, 1.0, n) * err["pm"]).astype(np.float32)
    out["pmdec"] = np.where(two_parameter, np.nan, pmdec + rng.normal(0.0, 1.0, n) * err["pm"]).astype(np.float32)
    out["pmra_error"] = pm_err.astype(np.float32)
    out["pmdec_error"] = pm_err.astype(np.float32)
    for name, true, sigma, missing in (("g", g_true, err["g"], np.zeros(n, bool)),
                                       ("bp", bp_true, err["bprp"], no_bprp), ("rp", rp_true, err["bprp"], no_bprp)):
        observed = true + rng.normal(0.0, 1.0, n) * sigma
        out[f"phot_{name}_mean_mag"] = np.where(missing, np.nan, observed).astype(np.float32)
        out[f"phot_{name}_mean_flux_over_error"] = np.where(missing, np.nan, 1.0857 / sigma).astype(np.float32)
    keep = (np.asarray(out["phot_g_mean_mag"]) <= G_LIMIT_MAG) & (np.asarray(out["phot_g_mean_mag"])
                                                                   >= G_SATURATION_MAG)
    return out[keep]


def write_gaia_chunks(folder: Path, catalog: Table) -> list[Path]:
    """Write ``catalog`` as chunk files ``chunk-<pixel:05d>.fits`` (HEALPix nside 32, nested) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    pixels = HEALPix(nside=CHUNK_NSIDE, order="nested").lonlat_to_healpix(np.asarray(catalog["ra"]) * u.deg,
                                                                        np.asarray(catalog["dec"]) * u.deg)
    if len(catalog) == 0:  # a starless sky (clouds): one empty chunk, as the archive answers an empty query
        path = folder / "chunk-empty.fits"
        fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(catalog)]).writeto(path, overwrite=True)
        return [path]
    paths = []
    for pixel in np.unique(pixels):
        path = folder / f"chunk-{int(pixel):05d}.fits"
        fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(catalog[pixels == pixel])]).writeto(path, overwrite=True)
        paths.append(path)
    return paths
