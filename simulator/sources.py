"""The simulated sky: stars, galaxies and transients with their light curves, and the template tiles' plan."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.table import Table
from astropy.wcs import WCS

from simulator.asteroids import make_asteroids
from simulator.gaia import proper_motions, stellar_locus
from simulator.world import (
    BANDS,
    NJY_ZP,
    Exposure,
    flux_for_snr,
    mag_to_njy,
    name_tag,
    offset_sky,
    power_law_mags,
    seeded_rng,
)

from . import camera, optics
from .config import SimConfig
from .psf import ccd_psf


@dataclass
class Sources:
    table: Table  # source_id, ra, dec (at epoch_mjd), pmra, pmdec (mas/yr), kind, host_id, <band>_mag, r_eff, q, pa
    lightcurves: dict  # source_id -> {expnum: flux_njy (total)}
    epoch_mjd: float = 0.0  # when the stars are at (ra, dec): the night's start
    asteroids: Table | None = None  # simulator.asteroids.make_asteroids: moving sources, at epoch_mjd


def tile_plan(cfg: SimConfig, exps: list[Exposure], centers):
    """Tiles (per field) overlapping the simulated CCDs: list of dicts with id, ra, dec, wcs, shape."""
    sp = cfg.tile_spacing_deg
    half = sp / 2.0 + cfg.tile_overlap_deg
    npix = int(np.ceil(2 * half * 3600.0 / 0.263))
    tiles = []
    for f, (fra, fdec) in enumerate(centers):
        need = set()
        for exp in exps:
            if exp.field_id != f:
                continue
            for c in cfg.ccds:
                ccd = camera.ccd(c)
                ex = np.array([0, 2047, 0, 2047, 1024, 0, 2047, 1024])
                ey = np.array([0, 0, 4095, 4095, 0, 2048, 2048, 4095])
                ra, dec = optics.pixel_to_sky(ccd, ex, ey, exp.ra, exp.dec)
                xi, eta = optics.sky_to_tangent(ra, dec, fra, fdec)
                xi, eta = np.rad2deg(xi), np.rad2deg(eta)
                m = 0.01
                for i in range(int(np.floor((xi.min() - m) / sp + 0.5)), int(np.floor((xi.max() + m) / sp + 0.5)) + 1):
                    for j in range(int(np.floor((eta.min() - m) / sp + 0.5)),
                                   int(np.floor((eta.max() + m) / sp + 0.5)) + 1):
                        need.add((i, j))
        for i, j in sorted(need):
            tra, tdec = optics.tangent_to_sky(np.deg2rad(i * sp), np.deg2rad(j * sp), fra, fdec)
            w = WCS(naxis=2)
            w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
            w.wcs.crval = [float(tra), float(tdec)]
            w.wcs.crpix = [(npix + 1) / 2.0, (npix + 1) / 2.0]
            w.wcs.cd = np.array([[-0.263 / 3600.0, 0.0], [0.0, 0.263 / 3600.0]])
            w.wcs.cunit = ["deg", "deg"]
            tiles.append(dict(tile_id=f * 10000 + (j + 50) * 100 + (i + 50), field_id=f, i=i, j=j,
                              ra=float(tra), dec=float(tdec), wcs=w, npix=npix,
                              radius=float(np.sqrt(2) * half)))
    return tiles


def make_sources(cfg: SimConfig, exps, centers, tiles) -> Sources:
    """The simulated sky: stars and galaxies over each field's tiles, then per field and CCD the variables,
    supernovae and transients with their light curves."""
    table, next_id = _static_sources(cfg, centers, tiles)
    lightcurves: dict = {}
    # transients per field and CCD, placed on the CCD in the field's first exposure
    for f in range(len(centers)):
        fexps = [e for e in exps if e.field_id == f]
        for c in cfg.ccds:
            next_id = _add_transients(cfg, table, lightcurves, field=f, fexps=fexps, ccdnum=c, next_id=next_id)
    table["pmra"], table["pmdec"] = proper_motions(cfg.seed, np.asarray(table["kind"]))
    return Sources(table=table, lightcurves=lightcurves, epoch_mjd=cfg.start_mjd,
                   asteroids=make_asteroids(cfg, exps, centers))


def _static_sources(cfg: SimConfig, centers, tiles) -> tuple[Table, int]:
    """Stars and galaxies over each field's tiles (ids from 1): their table and the next free id."""
    sp = cfg.tile_spacing_deg
    half = sp / 2.0 + cfg.tile_overlap_deg + 0.01
    rows = []
    next_id = 1
    for f, (fra, fdec) in enumerate(centers):
        ftiles = [t for t in tiles if t["field_id"] == f]
        if not ftiles:
            continue
        rng = seeded_rng(cfg.seed, name_tag("srcs"), f)
        ii = np.array([t["i"] for t in ftiles])
        jj = np.array([t["j"] for t in ftiles])
        x0, x1 = ii.min() * sp - half, ii.max() * sp + half
        y0, y1 = jj.min() * sp - half, jj.max() * sp + half
        area = (x1 - x0) * (y1 - y0)
        for kind, dens in (("star", cfg.stars_per_deg2), ("galaxy", cfg.galaxies_per_deg2)):
            row = _population(rng, kind, dens * area, field=f, centre=(fra, fdec), ftiles=ftiles,
                              box=(x0, x1, y0, y1), sp=sp, half=half, first_id=next_id, galaxies=cfg.galaxy_model)
            next_id += row["source_id"].size
            rows.append(row)
    cols = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]} if rows else {}
    return Table(cols), next_id


def _population(rng: np.random.Generator, kind: str, mean_count: float, *, field: int, centre, ftiles: list,
                box: tuple, sp: float, half: float, first_id: int, galaxies: str = "real") -> dict:
    """Stars or galaxies (``kind``) of one field: a Poisson number of ``mean_count`` drawn uniformly over the
    tangent-plane ``box`` and kept within ``half`` of a tile centre; their table columns (``galaxies``: the
    galaxy model, :attr:`SimConfig.galaxy_model`)."""
    x0, x1, y0, y1 = box
    fra, fdec = centre
    n = int(rng.poisson(mean_count))
    xi = rng.uniform(x0, x1, n)
    eta = rng.uniform(y0, y1, n)
    inside = np.zeros(n, bool)
    for t in ftiles:
        inside |= (np.abs(xi - t["i"] * sp) < half) & (np.abs(eta - t["j"] * sp) < half)
    xi, eta = xi[inside], eta[inside]
    n = xi.size
    ra, dec = optics.tangent_to_sky(np.deg2rad(xi), np.deg2rad(eta), fra, fdec)
    r, gr, reff, q, pa = _magnitudes_and_shapes(rng, kind, n, galaxies)
    bulge, bulge_reff = (bulges(rng, reff) if kind == "galaxy" and galaxies == "real" else (np.zeros(n), np.zeros(n)))
    ri = 0.35 * gr + 0.05 + rng.normal(0, 0.03, n)
    iz = 0.2 * gr + rng.normal(0, 0.03, n)
    if kind == "star":  # on the stellar locus (the simulated Gaia's), 0.01 mag about it; same random draws
        locus_ri, locus_iz = stellar_locus(gr)
        ri, iz = locus_ri + (ri - 0.35 * gr - 0.05) / 3.0, locus_iz + (iz - 0.2 * gr) / 3.0
    mags = {"g": r + gr, "r": r, "i": r - ri, "z": r - ri - iz, "Y": r - ri - iz - 0.1}
    ids = np.arange(first_id, first_id + n)
    return dict(source_id=ids, ra=ra, dec=dec, kind=np.full(n, kind, dtype="U10"),
                host_id=np.full(n, -1), field_id=np.full(n, field), r_eff=reff, q=q, pa=pa, bulge_frac=bulge,
                r_eff_bulge=bulge_reff,
                **{f"ref_mag_{b}": mags[b] for b in BANDS})


def _magnitudes_and_shapes(rng: np.random.Generator, kind: str, n: int, galaxies: str = "simple"
                           ) -> tuple[np.ndarray, ...]:
    """r magnitudes, g - r colours, effective radii (arcsec; a galaxy's disk), axis ratios and position angles
    (degrees) of ``n`` stars (points) or galaxies (``galaxies``: ``simple``, or ``real``:
    :func:`galaxy_magnitudes` and :func:`disk_radii`)."""
    if kind == "star":
        r = power_law_mags(rng, n, 15.0, 25.0, 0.22)
        gr = rng.uniform(0.2, 1.4, n)
        reff = np.zeros(n)
        q = np.ones(n)
        pa = np.zeros(n)
    elif galaxies == "real":
        r = galaxy_magnitudes(rng, n)
        gr = rng.uniform(0.4, 1.2, n)
        reff = disk_radii(rng, r)
        q = rng.uniform(0.2, 1.0, n)
        pa = rng.uniform(0.0, 180.0, n)
    else:
        r = power_law_mags(rng, n, 18.0, 24.5, 0.3)
        gr = rng.uniform(0.4, 1.2, n)
        reff = np.exp(rng.uniform(np.log(0.4), np.log(2.0), n))
        q = rng.uniform(0.3, 1.0, n)
        pa = rng.uniform(0.0, 180.0, n)
    return r, gr, reff, q, pa


GALAXY_COUNT_SLOPES = ((18.0, 0.45), (20.5, 0.32))
"""Slopes of the galaxies' differential r-band number counts, d log10 N / dm, from each magnitude on: about 0.45
brighter than r = 20.5 and 0.32 fainter (SDSS, Yasuda et al. 2001; deep fields, e.g. Capak et al. 2004)."""


def galaxy_magnitudes(rng: np.random.Generator, n: int, lo: float = 18.0, hi: float = 24.5) -> np.ndarray:
    """r magnitudes of ``n`` galaxies following the broken power-law counts of :data:`GALAXY_COUNT_SLOPES`
    (inverse CDF on a 0.001-mag grid)."""
    m = np.linspace(lo, hi, int(round((hi - lo) * 1000)) + 1)
    (m0, a0), (m1, a1) = GALAXY_COUNT_SLOPES
    log_n = np.where(m < m1, a0 * (m - m0), a0 * (m1 - m0) + a1 * (m - m1))
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (10 ** log_n[1:] + 10 ** log_n[:-1]) * np.diff(m))])
    return np.interp(rng.random(n) * cdf[-1], cdf, m)


def disk_radii(rng: np.random.Generator, r_mag: np.ndarray) -> np.ndarray:
    """Half-light radii (arcsec) of the disks: log-normal about a median that shrinks with magnitude, 1.2" at r =
    20 and 0.5" at r = 24 (log10 r_e = 0.08 - 0.095 (r - 20), scatter 0.2 dex: the size-magnitude relation of
    deep HST fields, e.g. Shen et al. 2003 at the bright end)."""
    return 10 ** (0.08 - 0.095 * (r_mag - 20.0) + rng.normal(0.0, 0.2, r_mag.size))


def bulges(rng: np.random.Generator, disk_r_eff: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bulge-to-total flux ratios and bulge half-light radii (arcsec) of galaxies with disks of ``disk_r_eff``:
    a quarter early types (B/T 0.5 to 1), the rest disks with a small bulge (B/T 0 to 0.3); the bulge's radius a
    fifth to a half of the disk's."""
    n = disk_r_eff.size
    early = rng.random(n) < 0.25
    frac = np.where(early, rng.uniform(0.5, 1.0, n), rng.uniform(0.0, 0.3, n))
    return frac, disk_r_eff * rng.uniform(0.2, 0.5, n)


def _add_transients(cfg: SimConfig, table: Table, lightcurves: dict, *, field: int, fexps: list[Exposure],
                    ccdnum: int, next_id: int) -> int:
    """Add one field's and CCD's variables, supernovae and transients to ``table`` and their light curves to
    ``lightcurves`` (both in place); returns the next free source id."""
    f = field
    e0 = fexps[0]
    ccd = camera.ccd(ccdnum)
    rng = seeded_rng(cfg.seed, name_tag("tran"), f, ccdnum)
    var_idx, new_rows = _place_transients(cfg, table, rng, field=f, ccd=ccd, first=e0)
    nea = {e.expnum: ccd_psf(cfg, e, ccdnum).nea for e in fexps}
    for ra, dec, kind, host in new_rows:
        table.add_row(dict(source_id=next_id, ra=ra, dec=dec, kind=kind, host_id=host, field_id=f,
                           r_eff=0.0, q=1.0, pa=0.0, bulge_frac=0.0, r_eff_bulge=0.0,
                           **{f"ref_mag_{b}": 99.0 for b in BANDS}))
        next_id += 1
    # light curves
    trans = [(int(table["source_id"][k]), "variable", k) for k in var_idx]
    trans += [(sid, kind, None) for sid, (_, _, kind, _) in
              zip(range(next_id - len(new_rows), next_id), new_rows)]
    for sid, kind, k in trans:
        lc = _light_curve(cfg, rng, table, kind=kind, row=k, fexps=fexps, nea=nea)
        lightcurves[sid] = lc
        if k is None:  # reference magnitude of a transient: its peak
            peak = max(v[0] for v in lc.values())
            row = np.nonzero(table["source_id"] == sid)[0][0]
            for b in BANDS:
                table[f"ref_mag_{b}"][row] = NJY_ZP - 2.5 * np.log10(max(peak, 1e-3))
    return next_id


def _place_transients(cfg: SimConfig, table: Table, rng: np.random.Generator, *, field: int, ccd,
                      first: Exposure) -> tuple:
    """Choose the variables among the field's stars on the CCD (their ``kind`` set in place) and place the
    supernovae (near galaxies) and transients on it, in the field's ``first`` exposure.

    Returns
    -------
    var_idx
        Rows of ``table`` that became variables.
    new_rows : list of tuple
        ``(ra, dec, kind, host_id)`` of the new sources.
    """
    f, e0 = field, first
    n = cfg.n_transients
    n_var = n // 4
    n_sn = (n - n_var) // 2
    n_new = n - n_var - n_sn
    m = 250.0
    on = table["field_id"] == f
    px, py = optics.sky_to_pixel(ccd, table["ra"], table["dec"], e0.ra, e0.dec)
    interior = on & (px > m) & (px < 2047 - m) & (py > m) & (py < 4095 - m)
    new_rows = []
    # variables: existing stars 18 < r < 21.5
    cand = np.nonzero(interior & (table["kind"] == "star") & (table["ref_mag_r"] > 18.0)
                      & (table["ref_mag_r"] < 21.5))[0]
    var_idx = rng.choice(cand, size=min(n_var, cand.size), replace=False) if cand.size else []
    for k in var_idx:
        table["kind"][k] = "variable"
    # supernovae on galaxies
    gal = np.nonzero(interior & (table["kind"] == "galaxy") & (table["ref_mag_r"] < 23.0))[0]
    hosts = rng.choice(gal, size=min(n_sn, gal.size), replace=False) if gal.size else []
    n_new += n_sn - len(hosts)
    for h in hosts:
        d = rng.uniform(0.3, 1.5) * table["r_eff"][h]
        phi = rng.uniform(0, 2 * np.pi)
        ra, dec = offset_sky(table["ra"][h], table["dec"][h], d * np.cos(phi), d * np.sin(phi))
        new_rows.append((ra, dec, "supernova", int(table["source_id"][h])))
    xs = rng.uniform(m, 2047 - m, n_new)
    ys = rng.uniform(m, 4095 - m, n_new)
    ras, decs = optics.pixel_to_sky(ccd, xs, ys, e0.ra, e0.dec)
    for ra, dec in zip(ras, decs):
        new_rows.append((float(ra), float(dec), "transient", -1))
    return var_idx, new_rows


def _light_curve_shape(rng: np.random.Generator, kind: str, ne: int) -> np.ndarray:
    """Relative signed amplitude of a variable, supernova or transient in each of ``ne`` exposures."""
    if kind == "variable":
        shape = rng.uniform(0.3, 1.0, ne) * rng.choice([-1.0, 1.0], ne)
        shape[rng.integers(ne)] = rng.choice([-1.0, 1.0])
    elif kind == "supernova":
        a = int(rng.integers(0, max(1, ne - 1))) if ne > 1 else 0
        prof = [0.6, 1.0, 0.85, 0.7, 0.6, 0.5, 0.4, 0.3]
        shape = np.array([prof[min(i - a, 7)] if i >= a else 0.0 for i in range(ne)])
    else:
        a = int(rng.integers(1, ne)) if ne > 1 else 0
        shape = np.array([0.8 ** (i - a) if i >= a else 0.0 for i in range(ne)])
    return shape


def _light_curve(cfg: SimConfig, rng: np.random.Generator, table: Table, *, kind: str, row, fexps: list[Exposure],
                 nea: dict[int, float]) -> dict:
    """Light curve of one variable (``row``: its row of ``table``), supernova or transient (``row`` None) over
    the field's exposures (``nea``: the noise-equivalent area of the PSF where it is, by exposure): ``{expnum:
    (total nJy, difference nJy, true SNR)}``, peaking at an SNR drawn log-uniformly in ``cfg.snr_range``."""
    k = row
    ne = len(fexps)
    snr_peak = float(np.exp(rng.uniform(*np.log(cfg.snr_range))))
    shape = _light_curve_shape(rng, kind, ne)
    p = int(np.argmax(np.abs(shape)))
    base_njy = float(mag_to_njy(table["ref_mag_" + fexps[p].band][k])) if k is not None else 0.0
    lc = {}
    for i, exp in enumerate(fexps):
        base_e = float(exp.flux_e(mag_to_njy(table["ref_mag_" + exp.band][k]))) if k is not None else 0.0
        bg = nea[exp.expnum] * (exp.sky_e + exp.read_var) + base_e
        lo, hi = flux_for_snr(cfg.snr_range[0], bg), flux_for_snr(cfg.snr_range[1], bg)
        if i == p:
            d_e = float(flux_for_snr(snr_peak, bg))
        else:
            peak = fexps[p]
            d_e = abs(shape[i] / shape[p]) * float(flux_for_snr(
                snr_peak, nea[peak.expnum] * (peak.sky_e + peak.read_var) + float(peak.flux_e(base_njy))))
            d_e = float(exp.flux_e(fexps[p].njy(d_e)))  # same nJy across exposures
            d_e = float(np.clip(d_e, lo, hi)) if shape[i] != 0 else 0.0
        if kind == "variable":
            d_e = float(np.sign(shape[i]) * min(d_e, 0.8 * base_e) if shape[i] < 0 else d_e)
        lc[exp.expnum] = (float(exp.njy(base_e + d_e)), float(exp.njy(d_e)),
                          float(d_e / np.sqrt(bg + abs(d_e))) if d_e else 0.0)
    return lc


def flux_in(exp: Exposure, src: Sources, idx: np.ndarray) -> np.ndarray:
    """Fluxes (e) in an exposure of the sources at rows idx."""
    t = src.table
    mags = np.asarray(t["ref_mag_" + exp.band][idx], dtype=float)
    kinds = np.asarray(t["kind"][idx])
    flux = np.where(mags < 90, exp.flux_e(mag_to_njy(mags)), 0.0)
    for n, k in enumerate(idx):
        if kinds[n] in ("variable", "transient", "supernova"):
            lc = src.lightcurves.get(int(t["source_id"][k]))
            flux[n] = float(exp.flux_e(lc[exp.expnum][0])) if lc and exp.expnum in lc else (
                flux[n] if kinds[n] == "variable" else 0.0)
    return flux


# ---------------------------------------------------------------------------------------------- rendering
