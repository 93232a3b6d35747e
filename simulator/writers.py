"""Writing the simulated data repository: raws, events, calibrations, reference catalog, templates, truth."""

from __future__ import annotations

import functools
from pathlib import Path

import fastavro
import numpy as np
from astropy.io import fits
from astropy.table import Table, vstack

import schemas
from schemas import datarepo
from schemas.canonical import canonical_key_order
from simulator.asteroids import asteroid_truth
from simulator.calibrations import master_bias, master_flat
from simulator.camera import RAW_SHAPE
from simulator.gaia import gaia_catalog, write_gaia_chunks
from simulator.headers import extension_header, header_wcs_cards, primary_header, true_wcs
from simulator.images import extension_order, render_ccd, render_tile
from simulator.instcal import instcal_path
from simulator.psf import ccd_psf
from simulator.render import psf_stamp
from simulator.sources import Sources
from simulator.world import BANDS, FILTER_NAMES, PIXSCALE, Exposure

from . import camera, optics
from .config import SimConfig


def write_raw(root: Path, cfg: SimConfig, exp: Exposure, src: Sources, progress_cb=None) -> Path:
    rel = datarepo.raw_path(exp.expnum, compressed=cfg.compress)
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    order = extension_order(cfg.ccds)
    fits.HDUList([fits.PrimaryHDU(header=primary_header(exp, cfg, len(order)))]).writeto(path, overwrite=True)
    truth_hdus = [fits.PrimaryHDU()]
    for c in order:
        ccd = camera.ccd(c)
        pix, crmask = render_ccd(cfg, exp, ccd, src)
        hdr = extension_header(ccd, header_wcs_cards(ccd, exp))
        if cfg.compress:
            hdu = fits.CompImageHDU(pix, header=hdr, compression_type="RICE_1", tile_shape=(1, RAW_SHAPE[1]))
        else:
            hdu = fits.ImageHDU(pix, header=hdr)
        with fits.open(path, mode="append") as hdul:
            hdul.append(hdu)
        w, res = true_wcs(ccd, exp.ra, exp.dec)
        if res > 5.0:
            raise RuntimeError(f"true WCS fit residual {res:.2f} mas > 5 mas for CCD {c}")
        th = w.to_header(relax=True)
        th["EXTNAME"] = ccd.detpos
        th["CCDNUM"] = c
        th["DETPOS"] = ccd.detpos
        th["FITRES"] = (round(res, 4), "[mas] max residual of the SIP fit to the truth")
        truth_hdus.append(fits.ImageHDU(header=th))
        if cfg.small:
            cr_path = root / "truth" / "cosmic_rays" / f"{exp.expnum:08d}_{c:02d}.npy"
            cr_path.parent.mkdir(parents=True, exist_ok=True)
            np.save(cr_path, crmask)
        if progress_cb:
            progress_cb()
    wpath = root / datarepo.truth_wcs_path(exp.expnum)
    wpath.parent.mkdir(parents=True, exist_ok=True)
    ph = truth_hdus[0].header
    ph["EXPNUM"] = exp.expnum
    ph["RA0"] = (exp.ra, "[deg] true boresight RA")
    ph["DEC0"] = (exp.dec, "[deg] true boresight Dec")
    fits.HDUList(truth_hdus).writeto(wpath, overwrite=True)
    return path


def write_event(root: Path, cfg: SimConfig, exp: Exposure) -> Path:
    """The exposure's ``exposureReady`` event (``schemas/exposure_ready.avsc``) as an Avro container file of one
    record in ``events/``: naming the raw, or with ``cfg.instcal`` the CP image (product ``instcal``)."""
    if cfg.instcal:
        product, image = "instcal", str(instcal_path(exp, "ooi", compressed=cfg.compress))
    else:
        product, image = "raw", str(datarepo.raw_path(exp.expnum, compressed=cfg.compress))
    record = {"eventId": f"DECam-{exp.expnum}", "instrument": "DECam", "exposureId": exp.expnum, "rawPath": image,
              "band": exp.band, "midpointMjdTai": exp.mjd_mid,
              "shutterCloseMjdTai": exp.mjd_obs + exp.exptime / 86400.0, "ra": exp.target_ra,
              "dec": exp.target_dec, "detectors": sorted(int(c) for c in cfg.ccds), "replay": False,
              "product": product}
    path = root / datarepo.event_path(exp.expnum)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fo:
        fastavro.writer(fo, _event_schema(), [record],
                        sync_marker=np.random.default_rng([cfg.seed, exp.expnum]).bytes(16))
    return path


@functools.cache
def _event_schema() -> dict:
    """The parsed ``exposureReady`` schema of the contract (``schemas/``), keys in canonical order."""
    definition = fastavro.schema.load_schema(Path(schemas.__file__).parent / "exposure_ready.avsc", _write_hint=False)
    return canonical_key_order(fastavro.schema.parse_schema(definition))


def write_calibs(root: Path, cfg: SimConfig) -> None:
    (root / "calib").mkdir(parents=True, exist_ok=True)
    order = extension_order(cfg.ccds)
    targets = [(root / datarepo.bias_path(), lambda c: master_bias(cfg, c), "bias", None)]
    targets += [(root / datarepo.flat_path(b), (lambda b: lambda c: master_flat(cfg, c, b))(b), "flat", b)
                for b in cfg.bands]
    for path, make, kind, band in targets:
        ph = fits.Header()
        ph["INSTRUME"] = "DECam"
        ph["OBSTYPE"] = "zero" if kind == "bias" else "dome flat"
        ph["PROCTYPE"] = "MasterCal"
        if band:
            ph["FILTER"] = FILTER_NAMES[band]
            ph["BAND"] = band
        ph["BUNIT"] = "adu" if kind == "bias" else ""
        fits.HDUList([fits.PrimaryHDU(header=ph)]).writeto(path, overwrite=True)
        for c in order:
            ccd = camera.ccd(c)
            h = fits.Header()
            h["EXTNAME"] = ccd.detpos
            h["CCDNUM"] = c
            h["DETPOS"] = ccd.detpos
            h["BUNIT"] = "adu" if kind == "bias" else ""
            with fits.open(path, mode="append") as hdul:
                hdul.append(fits.ImageHDU(np.ascontiguousarray(make(c)), header=h))


def write_refcat(root: Path, src: Sources, cfg: SimConfig) -> list[Path]:
    """The simulated sky's Gaia catalog as Gaia-archive chunk files in ``datarepo.refcat_source_dir()``
    (:mod:`simulator.gaia`); ``blink refcat`` indexes them."""
    t = src.table
    stars = t[t["kind"] == "star"]
    catalog = gaia_catalog(stars, seed=cfg.seed, epoch_mjd=cfg.start_mjd)
    return write_gaia_chunks(root / datarepo.refcat_source_dir(), catalog)


def truth_psf_hdus(fwhm_pix: float, shape: tuple[int, int]) -> list:
    """The PSF model of a truth-rendered tile, in the tile format (schemas.datarepo): the simulator's own
    Moffat at one node, the tile's centre (the truth tiles have one PSF everywhere)."""
    stamp = psf_stamp(fwhm_pix, 15).astype(np.float32)
    nodes = Table({"x": [(shape[1] - 1) / 2.0], "y": [(shape[0] - 1) / 2.0]})
    return [fits.ImageHDU((stamp / stamp.sum())[None], name="PSF"), fits.BinTableHDU(nodes, name="PSF_NODES")]


def write_templates(root: Path, cfg: SimConfig, tiles, src: Sources, progress_cb=None) -> None:
    for band in cfg.bands:
        rows = []
        for tile in tiles:
            img, var, fwhm, sigma = render_tile(cfg, tile, band, src)
            hdr = tile["wcs"].to_header()
            hdr["BUNIT"] = "nJy"
            hdr["BAND"] = band
            hdr["TILEID"] = tile["tile_id"]
            rel = datarepo.template_tile_path(band, tile["tile_id"])
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            hdus = [fits.PrimaryHDU(),
                    fits.ImageHDU(img, header=hdr, name="IMAGE"),
                    fits.ImageHDU(var, header=hdr, name="VARIANCE"),
                    fits.ImageHDU(np.zeros(img.shape, dtype=np.int32), header=hdr, name="MASK"),
                    *truth_psf_hdus(fwhm, img.shape)]
            hdus[2].header["BUNIT"] = "nJy**2"
            hdus[3].header["BUNIT"] = ""
            fits.HDUList(hdus).writeto(path, overwrite=True)
            rows.append((tile["tile_id"], tile["ra"], tile["dec"], tile["radius"], str(rel)))
            if progress_cb:
                progress_cb()
        idx = Table(rows=rows, names=("tile_id", "ra", "dec", "radius_deg", "path"),
                    dtype=(np.int64, float, float, float, str))
        idx.write(root / datarepo.template_index_path(band), format="ascii.ecsv", overwrite=True)


def write_truth(root: Path, exps: list[Exposure], src: Sources, cfg: SimConfig) -> None:
    tdir = root / datarepo.truth_dir()
    tdir.mkdir(parents=True, exist_ok=True)
    et = Table(rows=[(e.expnum, e.mjd_mid, e.mjd_obs, e.band, e.exptime, e.airmass, e.ra, e.dec, e.target_ra,
                      e.target_dec, e.seeing, e.zero_point, e.sky_e, e.field_id, e.epoch) for e in exps],
               names=("expnum", "mjd", "mjd_obs", "band", "exptime", "airmass", "ra", "dec", "target_ra",
                      "target_dec", "seeing_fwhm_arcsec", "zero_point", "sky_e_per_pix", "field_id", "epoch"))
    et.meta["comments"] = ["mjd: exposure midpoint (TAI); ra/dec: true boresight; target_ra/dec: header RA/DEC",
                           "zero_point: AB mag of 1 electron after ISR (flat-fielded, gain applied)"]
    et.write(tdir / "exposures.ecsv", format="ascii.ecsv", overwrite=True)
    t = src.table
    st = Table()
    for c in ("source_id", "ra", "dec", "kind", "host_id", "field_id", "r_eff", "q", "pa", "bulge_frac",
              "r_eff_bulge"):
        st[c] = t[c]
    for b in BANDS:
        st[f"ref_mag_{b}"] = np.asarray(t[f"ref_mag_{b}"], dtype=np.float32)
    st.write(tdir / "sources.ecsv", format="ascii.ecsv", overwrite=True)
    rows = []
    by_id = {int(s): k for k, s in enumerate(t["source_id"])}
    emap = {e.expnum: e for e in exps}
    for sid, lc in sorted(src.lightcurves.items()):
        k = by_id[sid]
        for expnum, (flux, delta, snr) in sorted(lc.items()):
            e = emap[expnum]
            ccdnum, x, y = -1, np.nan, np.nan
            for c in cfg.ccds:
                px, py = optics.sky_to_pixel(camera.ccd(c), t["ra"][k], t["dec"][k], e.ra, e.dec)
                if 0 <= px <= 2047 and 0 <= py <= 4095:
                    ccdnum, x, y = c, float(px), float(py)
                    break
            rows.append((sid, expnum, str(t["kind"][k]), flux, delta, snr, ccdnum, x, y))
    ft = Table(rows=rows, names=("source_id", "expnum", "kind", "flux_njy", "delta_flux_njy", "snr", "ccdnum",
                                 "x", "y"),
               dtype=(np.int64, np.int64, str, float, float, float, np.int64, float, float))
    comments = ["flux_njy: total true flux; delta_flux_njy: flux minus template (static) flux",
                "snr: expected S/N of delta in the science image; x, y: trimmed 0-based pixel"]
    if src.asteroids is not None and len(src.asteroids):  # moving: each row has its own position
        ft["ra"], ft["dec"] = np.full(len(ft), np.nan), np.full(len(ft), np.nan)
        ft = vstack([ft, asteroid_truth(src.asteroids, exps, cfg.ccds, src.epoch_mjd)])
        comments.append("ra, dec: an asteroid's position at the exposure's midpoint (NaN: the source's own)")
    ft.meta["comments"] = comments
    ft.write(tdir / "fluxes.ecsv", format="ascii.ecsv", overwrite=True)


def write_psf_truth(root: Path, cfg: SimConfig, exps: list[Exposure]) -> Path:
    """The PSF of every simulated CCD-visit (:func:`simulator.psf.ccd_psf`), night and template epochs:
    ``truth/psf.ecsv`` (FWHM at the CCD's centre, Moffat beta, ellipticity at the centre and its change per half
    CCD in x and y)."""
    rows = []
    for e in exps:
        for c in cfg.ccds:
            p = ccd_psf(cfg, e, c)
            rows.append((e.expnum, c, p.fwhm_pix * PIXSCALE, p.beta, p.e1, p.e2, *p.dsize, *p.de1, *p.de2))
    table = Table(rows=rows, names=("expnum", "ccdnum", "fwhm_arcsec", "beta", "e1", "e2", "dsize_dx", "dsize_dy",
                                    "de1_dx", "de1_dy", "de2_dx", "de2_dy"))
    path = root / datarepo.truth_dir() / "psf.ecsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    table.write(path, format="ascii.ecsv", overwrite=True)
    return path
