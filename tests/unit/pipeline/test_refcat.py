"""Reference stars from Gaia columns: proper motions against astropy/ERFA, the Legacy Surveys colour
transformation, the drops and the errors; and on real Gaia chunks."""

from __future__ import annotations

import warnings
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.table import Table, vstack
from astropy.time import Time

from pipeline.errors import InputError
from pipeline.refcat import (
    LEGACY_SURVEYS_DR9_COLOUR_TERMS,
    RefcatConfig,
    colour_transform,
    epoch_mjd,
    propagate,
    reference_stars,
)
from tests.helpers.reference import REFERENCE_DIR

GAIA_CHUNKS = sorted(Path(REFERENCE_DIR / "real-cutouts").glob("*/gaia/chunk-*.fits"))


def _gaia(n: int = 4, **columns) -> Table:
    """A small Gaia-archive table at J2015.5 with sensible values, ``columns`` overriding."""
    t = Table({"source_id": np.arange(1, n + 1, dtype=np.int64), "ra": np.linspace(10.0, 10.01, n),
               "dec": np.full(n, -30.0), "ra_error": np.full(n, 0.1), "dec_error": np.full(n, 0.2),
               "ref_epoch": np.full(n, 2015.5), "pmra": np.full(n, 5.0), "pmdec": np.full(n, -3.0),
               "pmra_error": np.full(n, 0.3), "pmdec_error": np.full(n, 0.4), "phot_g_mean_mag": np.full(n, 17.0),
               "phot_bp_mean_mag": np.full(n, 17.4), "phot_rp_mean_mag": np.full(n, 16.4),
               "phot_g_mean_flux_over_error": np.full(n, 500.0), "phot_bp_mean_flux_over_error": np.full(n, 100.0),
               "phot_rp_mean_flux_over_error": np.full(n, 100.0)})
    for name, value in columns.items():
        t[name] = value
    return t


def test_propagation_matches_astropy_space_motion():
    """Linear proper motion over 10.4 years agrees with SkyCoord.apply_space_motion (ERFA pmsafe) to 1 uas,
    across RA = 0, near a pole and for a fast star."""
    ra = np.array([10.0, 359.99, 120.0, 200.0, 244.6])
    dec = np.array([-30.0, 5.0, 85.0, -89.5, 12.0])
    pmra = np.array([5.0, -300.0, 1000.0, 20.0, -2.5])
    pmdec = np.array([-3.0, 50.0, -800.0, 10.0, -4.0])
    start, end = Time(2015.5, format="jyear", scale="tcb"), Time(2025.9, format="jyear", scale="tcb")
    coords = SkyCoord(ra=ra * u.deg, dec=dec * u.deg, pm_ra_cosdec=pmra * u.mas / u.yr, pm_dec=pmdec * u.mas / u.yr,
                      distance=10 * u.kpc, radial_velocity=0 * u.km / u.s, obstime=start)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ERFA: "distance overridden" is about parallaxes, not used here
        moved = coords.apply_space_motion(new_obstime=end)
    new_ra, new_dec = propagate(ra, dec, pmra, pmdec, (end - start).to_value(u.year))
    sep = SkyCoord(new_ra * u.deg, new_dec * u.deg).separation(SkyCoord(moved.ra, moved.dec)).to_value(u.uas)
    assert np.all(sep < 1.0), sep
    assert SkyCoord(ra * u.deg, dec * u.deg).separation(SkyCoord(moved.ra, moved.dec)).to_value(u.mas).min() > 40


def test_reference_stars_at_the_exposure_epoch():
    """Positions move by pm * dt (mjd_tai from J2015.5) and their errors grow by the pm errors."""
    mjd = epoch_mjd(2025.5)
    out = reference_stars(_gaia(), mjd_tai=mjd, band="r")
    dt = 10.0
    ra, dec = propagate(np.asarray(_gaia()["ra"]), np.asarray(_gaia()["dec"]), 5.0, -3.0, dt)
    assert np.allclose(out["ra"], ra, atol=1e-10) and np.allclose(out["dec"], dec, atol=1e-10)
    shift_mas = (np.asarray(out["dec"]) - np.asarray(_gaia()["dec"])) * 3.6e6
    assert np.allclose(shift_mas, -30.0, atol=1e-3)
    assert np.allclose(out["ra_err_mas"], np.hypot(0.1, 0.3 * dt), rtol=1e-5)
    assert np.allclose(out["dec_err_mas"], np.hypot(0.2, 0.4 * dt), rtol=1e-5)
    assert out["has_pm"].all() and list(out["ref_id"]) == [1, 2, 3, 4]


def test_missing_proper_motion_keeps_reference_position_with_a_large_error():
    """A two-parameter solution stays at its Gaia position, its error grown by the assumed pm dispersion; once
    that error passes max_position_error_mas it is no reference any more."""
    gaia = _gaia(pmra=np.array([np.nan, 5.0, 5.0, 5.0]), pmdec=np.array([np.nan, -3.0, -3.0, -3.0]))
    config = RefcatConfig(missing_pm_sigma_mas_per_yr=8.0, max_position_error_mas=200.0)
    out = reference_stars(gaia, mjd_tai=epoch_mjd(2025.5), band="g", config=config)
    assert not out["has_pm"][0] and out["has_pm"][1:].all()
    assert out["ra"][0] == pytest.approx(gaia["ra"][0], abs=1e-12)
    assert out["ra_err_mas"][0] == pytest.approx(np.hypot(0.1, 80.0), rel=1e-5)
    strict = reference_stars(gaia, mjd_tai=epoch_mjd(2025.5), band="g")  # 10 mas/yr x 10 yr > 50 mas
    assert list(strict["ref_id"]) == [2, 3, 4]
    early = reference_stars(gaia, mjd_tai=epoch_mjd(2018.5), band="g")  # 3 years: 30 mas in each axis
    assert list(early["ref_id"]) == [1, 2, 3, 4]


def test_colour_transformation_is_the_legacy_surveys_polynomial():
    """m - G is the DR9 polynomial: its constant term at BP - RP = 0, and sum_k c_k at BP - RP = 1."""
    for band, coeffs in LEGACY_SURVEYS_DR9_COLOUR_TERMS.items():
        mag, _ = colour_transform(np.array([15.0, 15.0]), np.array([0.0, 1.0]), band)
        assert mag[0] == pytest.approx(15.0 + coeffs[0], abs=1e-9)
        assert mag[1] == pytest.approx(15.0 + sum(coeffs), abs=1e-9)
    assert LEGACY_SURVEYS_DR9_COLOUR_TERMS["g"][0] == pytest.approx(-0.1178631039)
    assert LEGACY_SURVEYS_DR9_COLOUR_TERMS["z"][7] == pytest.approx(0.0018548776)
    # A Sun-like star (BP - RP = 0.82): DECam g - r about 0.43, r - i about 0.10 (Legacy Surveys' locus).
    g, _ = colour_transform(0.0, 0.82, "g")
    r, _ = colour_transform(0.0, 0.82, "r")
    i, _ = colour_transform(0.0, 0.82, "i")
    assert 0.35 < g - r < 0.5 and 0.05 < r - i < 0.15


def test_stars_outside_the_colour_range_or_without_bp_rp_have_no_magnitude():
    """They stay astrometric references (``phot_ok`` False, NaN magnitude); saturated stars are dropped."""
    bp = np.array([17.4, np.nan, 17.0 + 4.5, 17.0 - 0.8, 17.4, 17.4, 21.4])
    rp = np.array([16.4, 16.4, 17.0, 17.0, 16.4, 16.4, 20.4])
    g = np.array([17.0, 17.0, 17.0, 17.0, 2.5, np.nan, 21.0])
    foe = np.array([100.0] * 6 + [10.0])  # the last: BP and RP errors 0.11 mag, a magnitude error > 0.05
    gaia = _gaia(7, phot_bp_mean_mag=bp, phot_rp_mean_mag=rp, phot_g_mean_mag=g, phot_bp_mean_flux_over_error=foe,
                 phot_rp_mean_flux_over_error=foe)
    out = reference_stars(gaia, mjd_tai=epoch_mjd(2020.0), band="i")
    assert list(out["ref_id"]) == [1, 2, 3, 4, 6, 7]  # the saturated star (G = 2.5) is gone
    assert list(out["phot_ok"]) == [True, False, False, False, False, False]
    assert np.isfinite(out["i_mag"][0]) and np.isnan(out["i_mag"][1:]).all() and np.isnan(out["i_mag_err"][1:]).all()
    assert out["bp_rp"][0] == pytest.approx(1.0) and np.isfinite(out["ra"]).all()
    loose = reference_stars(gaia, mjd_tai=epoch_mjd(2020.0), band="i", config=RefcatConfig(max_mag_err_mag=1.0))
    assert list(loose["phot_ok"]) == [True, False, False, False, False, True]


def test_magnitude_error_propagates_gaia_errors_and_the_scatter():
    out = reference_stars(_gaia(1), mjd_tai=epoch_mjd(2020.0), band="g", config=RefcatConfig(
        colour_term_scatter_mag=0.015))
    _, slope = colour_transform(17.0, 1.0, "g")
    sigma_g, sigma_c = 1.0857 / 500.0, 1.0857 / 100.0
    expected = np.sqrt(sigma_g**2 + slope**2 * 2 * sigma_c**2 + 0.015**2)
    assert out["g_mag_err"][0] == pytest.approx(expected, rel=1e-4)
    assert out["g_mag"][0] == pytest.approx(float(colour_transform(17.0, 1.0, "g")[0]), abs=1e-6)


def test_band_without_transformation_and_missing_columns_are_input_errors():
    with pytest.raises(InputError, match="band 'Y'"):
        reference_stars(_gaia(), mjd_tai=epoch_mjd(2020.0), band="Y")
    gaia = _gaia()
    del gaia["pmra"]
    with pytest.raises(InputError, match="pmra"):
        reference_stars(gaia, mjd_tai=epoch_mjd(2020.0), band="r")
    y = RefcatConfig(colour_terms={"Y": (0.5, -0.9)})
    assert len(reference_stars(_gaia(), mjd_tai=epoch_mjd(2020.0), band="Y", config=y)) == 4


def test_empty_catalog_gives_empty_typed_result():
    out = reference_stars(_gaia()[:0], mjd_tai=epoch_mjd(2020.0), band="r")
    assert len(out) == 0 and {"ra", "dec", "r_mag", "r_mag_err"} <= set(out.colnames)


@pytest.mark.skipif(not GAIA_CHUNKS, reason="reference Gaia chunks not present")
def test_real_gaia_chunks():
    """Real Legacy Surveys Gaia DR2 chunks (masked NaNs, two-parameter solutions): every kept star has finite
    positions, magnitudes and errors; the stars without BP/RP or out of the colour range are the ones dropped."""
    gaia = vstack([Table.read(p) for p in GAIA_CHUNKS])
    with_pm = np.isfinite(np.ma.filled(np.ma.asarray(gaia["pmra"], float), np.nan))
    assert 0 < (~with_pm).sum() < 0.3 * len(gaia)  # the chunks hold two-parameter solutions
    assert len(reference_stars(gaia, mjd_tai=60000.0, band="r")) == with_pm.sum()  # 7.6 yr: 76 mas, dropped
    out = reference_stars(gaia, mjd_tai=60000.0, band="r", config=RefcatConfig(max_position_error_mas=1e4))
    assert len(out) == len(gaia)  # none saturated
    bp_rp = np.ma.filled(np.ma.asarray(gaia["phot_bp_mean_mag"] - gaia["phot_rp_mean_mag"], float), np.nan)
    in_range = np.isfinite(bp_rp) & (bp_rp > -0.6) & (bp_rp < 4.1)
    phot = np.asarray(out["phot_ok"])
    assert not phot[~in_range].any() and 0.5 * len(gaia) < phot.sum() <= in_range.sum()
    for name in ("ra", "dec", "ra_err_mas", "dec_err_mas"):
        assert np.isfinite(np.asarray(out[name])).all(), name
    assert np.isfinite(np.asarray(out["r_mag"])[phot]).all() and (np.asarray(out["r_mag_err"])[phot] <= 0.05).all()
    assert (~out["has_pm"]).sum() == (~with_pm).sum()
    assert 10.0 < float(np.median(out["r_mag"][phot])) < 21.5
    g = np.ma.filled(np.ma.asarray(gaia["phot_g_mean_mag"], float), np.nan)[phot]
    assert np.all(np.abs(np.asarray(out["r_mag"])[phot] - g) < 1.5)
