"""The simulated Gaia: archive-format chunks of the simulator's stars at J2015.5, which the pipeline's
reference-star step brings back to the true positions and magnitudes within the simulated errors."""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from pipeline.refcat import reference_stars
from simulator.gaia import (
    G_LIMIT_MAG,
    GAIA_REF_EPOCH,
    gaia_catalog,
    gaia_colour_and_g,
    positions_at,
    proper_motions,
    stellar_locus,
    write_gaia_chunks,
)
from streamer.refcat import read_gaia_file

EPOCH_MJD = 61000.2


def _stars(n: int = 4000, seed: int = 5) -> Table:
    """Simulator-like stars: r from 15 to 23, g - r from 0.2 to 1.4, on the locus in i and z."""
    rng = np.random.default_rng(seed)
    r = rng.uniform(15.0, 23.0, n)
    gr = rng.uniform(0.2, 1.4, n)
    ri, iz = stellar_locus(gr)
    pmra, pmdec = proper_motions(seed, np.full(n, "star"))
    return Table({"source_id": np.arange(1, n + 1), "ra": rng.uniform(30.0, 31.0, n),
                  "dec": rng.uniform(-20.5, -19.5, n), "pmra": pmra, "pmdec": pmdec, "ref_mag_g": r + gr,
                  "ref_mag_r": r, "ref_mag_i": r - ri, "ref_mag_z": r - ri - iz})


def test_catalog_is_gaia_like():
    cat = gaia_catalog(_stars(), seed=1, epoch_mjd=EPOCH_MJD)
    g = np.asarray(cat["phot_g_mean_mag"], float)
    assert np.all((g >= 3.0) & (g <= G_LIMIT_MAG)) and 1000 < len(cat) < 4000
    assert np.all(cat["ref_epoch"] == GAIA_REF_EPOCH)
    pm = np.hypot(cat["pmra"], cat["pmdec"])
    assert 2.0 < np.nanmedian(pm) < 10.0  # a few mas/yr
    faint = g > 20.0
    assert np.isnan(cat["phot_bp_mean_mag"][faint]).mean() > 0.1 > np.isnan(cat["phot_bp_mean_mag"][~faint]).mean()
    assert np.isnan(cat["pmra"][faint]).mean() > 0.1 > np.isnan(cat["pmra"][g < 18]).mean()
    assert np.median(cat["ra_error"][faint]) > 5 * np.median(cat["ra_error"][g < 17.0])  # errors grow with G


def test_pipeline_recovers_true_positions_and_magnitudes():
    """Propagated to the night's epoch, bright stars land on their true positions (errors ~ pm error * 10 yr)
    and their r and i magnitudes through the pipeline's colour transformation on the truth, mean within 3 mmag."""
    stars = _stars()
    cat = gaia_catalog(stars, seed=2, epoch_mjd=EPOCH_MJD)
    by_id = {int(s): k for k, s in enumerate(stars["source_id"])}
    for band in ("r", "i"):
        ref = reference_stars(cat, mjd_tai=EPOCH_MJD, band=band)
        truth = stars[[by_id[int(s)] for s in ref["ref_id"]]]
        bright = (np.asarray(truth["ref_mag_r"]) < 19.0) & np.asarray(ref["phot_ok"])
        dmag = np.asarray(ref[f"{band}_mag"]) - np.asarray(truth[f"ref_mag_{band}"])
        assert abs(np.mean(dmag[bright])) < 0.003 and 0.005 < np.std(dmag[bright]) < 0.03, band
    dra = (ref["ra"] - truth["ra"]) * np.cos(np.radians(truth["dec"])) * 3.6e6
    ddec = (ref["dec"] - truth["dec"]) * 3.6e6
    pulls = np.hypot(dra / ref["ra_err_mas"], ddec / ref["dec_err_mas"])[ref["has_pm"]]
    assert np.median(pulls) < 1.5  # median of a 2-D unit Gaussian's radius is 1.18
    unmoved = (cat["dec"] - stars["dec"][[by_id[int(s)] for s in cat["source_id"]]]) * 3.6e6
    assert np.median(np.abs(unmoved)) > 10.0  # at J2015.5 the stars were tens of mas away


def test_inverse_relation_round_trips():
    g_minus_r = np.linspace(0.2, 1.4, 13)
    colour, g = gaia_colour_and_g(16.0 + g_minus_r, np.full(13, 16.0))
    from pipeline.refcat import colour_transform

    r_back, _ = colour_transform(g, colour, "r")
    g_back, _ = colour_transform(g, colour, "g")
    assert np.allclose(r_back, 16.0, atol=1e-6) and np.allclose(g_back - r_back, g_minus_r, atol=1e-4)


def test_chunks_are_gaia_archive_files(tmp_path):
    cat = gaia_catalog(_stars(500), seed=3, epoch_mjd=EPOCH_MJD)
    paths = write_gaia_chunks(tmp_path, cat)
    assert paths and all(p.name.startswith("chunk-") for p in paths)
    assert sum(len(read_gaia_file(p)) for p in paths) == len(cat)
    assert [p.name for p in write_gaia_chunks(tmp_path / "none", cat[:0])] == ["chunk-empty.fits"]


def test_stars_move_where_the_pipeline_propagates_them():
    """An exposure two years after the night's start renders the stars where pipeline.refcat puts them."""
    from pipeline.refcat import propagate

    stars = _stars(50)
    ra, dec = positions_at(stars, EPOCH_MJD + 730.5, EPOCH_MJD)
    ra_p, dec_p = propagate(stars["ra"], stars["dec"], stars["pmra"], stars["pmdec"], 2.0)
    assert np.allclose(ra, ra_p, atol=1e-10) and np.allclose(dec, dec_p, atol=1e-10)
    moved = np.hypot((ra - stars["ra"]) * np.cos(np.radians(stars["dec"])), dec - stars["dec"]) * 3.6e6
    assert 2.0 < np.median(moved) < 25.0
    assert np.all(proper_motions(1, np.array(["galaxy", "transient", "supernova"]))[0] == 0.0)
