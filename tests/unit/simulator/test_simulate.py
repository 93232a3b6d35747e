"""The DECam simulator: formats, determinism, WCS truth, ISR by hand."""

from __future__ import annotations

import hashlib

import fastavro
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from pipeline.decam.header import amp_geometry
from pipeline.errors import InputError
from schemas import datarepo
from simulator import SimConfig, optics, simulate
from simulator import camera as sim_camera
from streamer.decam.camera_tables import decam_camera
from streamer.decam.raw_files import list_ccds, read_raw_ccd

CCDS = [28, 35]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim")
    cfg = SimConfig(seed=7, small=True, ccds=CCDS, n_epochs=2, n_transients=4)
    summary = simulate(root, cfg)
    return root, cfg, summary


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    cfg = SimConfig(seed=3, small=True, ccds=[1], n_epochs=1, n_transients=2, compress=True)
    a = tmp_path_factory.mktemp("packed_a")
    b = tmp_path_factory.mktemp("packed_b")
    simulate(a, cfg)
    simulate(b, cfg)
    return a, b, cfg


def test_layout(repo):
    root, cfg, summary = repo
    assert summary.n_exposures == 2 and summary.n_ccds == 2
    for e in summary.expnums:
        assert (root / datarepo.raw_path(e)).exists()
        assert (root / datarepo.event_path(e)).exists()
        assert (root / datarepo.truth_wcs_path(e)).exists()
    for p in (datarepo.bias_path(), datarepo.flat_path("r"), datarepo.template_index_path("r")):
        assert (root / p).exists(), p
    for name in ("exposures.ecsv", "sources.ecsv", "fluxes.ecsv"):
        assert (root / "truth" / name).exists()
    chunks = sorted((root / datarepo.refcat_source_dir()).glob("chunk-*.fits"))
    assert chunks, "no Gaia chunk files"
    ref = Table.read(chunks[0])
    assert {"source_id", "ra", "dec", "ref_epoch", "pmra", "pmdec", "phot_g_mean_mag", "phot_bp_mean_mag",
            "phot_rp_mean_mag"} <= set(ref.colnames)
    idx = Table.read(root / datarepo.template_index_path("r"))
    assert len(idx) == summary.n_template_tiles > 0
    with fits.open(root / idx["path"][0]) as t:
        assert [h.name for h in t[1:4]] == ["IMAGE", "VARIANCE", "MASK"]
        assert t["IMAGE"].data.dtype.kind == "f"
        assert t["MASK"].data.dtype.kind == "i" and t["MASK"].data.dtype.itemsize == 4
        assert "PSF_FWHM" not in t["IMAGE"].header  # no card that only the simulator would write
        assert t["PSF"].data.ndim == 3 and len(t["PSF_NODES"].data) == t["PSF"].data.shape[0]
        assert WCS(t["IMAGE"].header).wcs.ctype[0] == "RA---TAN"
    with fits.open(root / datarepo.bias_path()) as b:
        assert b[1].data.shape == (4096, 2048) and b[1].header["CCDNUM"] in CCDS


def test_raw_looks_real(repo):
    root, cfg, summary = repo
    path = root / datarepo.raw_path(summary.expnums[0])
    real_ext_keys = """BUNIT WCSAXES DETSIZE TRIMSEC DATASEC DETSEC CCDSEC TRIMSECA DETSECA CCDSECA AMPSECA DATASECA
        BIASSECA PRESECA POSTSECA TRIMSECB DETSECB CCDSECB AMPSECB DATASECB BIASSECB PRESECB POSTSECB DETECTOR
        CCDNUM DETPOS EXTNAME GAINA RDNOISEA SATURATA GAINB RDNOISEB SATURATB CRPIX1 CRPIX2 FPA INHERIT CCDBIN1
        CCDBIN2 RADESYS EQUINOX CD1_1 CD1_2 CD2_1 CD2_2 LTM1_1 LTM2_2 LTV1 LTV2 CTYPE1 CTYPE2 CRVAL1 CRVAL2
        VALIDA VALIDB BZERO BSCALE""".split()
    with fits.open(path, do_not_scale_image_data=True) as h:
        p = h[0].header
        for k in ("EXPNUM", "MJD-OBS", "DATE-OBS", "FILTER", "RA", "DEC", "TELRA", "TELDEC", "EXPTIME", "AIRMASS",
                  "OBSTYPE", "INSTRUME", "PROCTYPE", "NEXTEND"):
            assert k in p, k
        assert p["INSTRUME"] == "DECam" and p["PROCTYPE"] == "RAW" and p["OBSTYPE"] == "object"
        assert p["FILTER"].startswith("r DECam SDSS") and p["NEXTEND"] == len(CCDS)
        nums = [x.header["CCDNUM"] for x in h[1:]]
        assert sorted(nums) == sorted(CCDS) and nums != sorted(nums)
        for ext in h[1:]:
            missing = [k for k in real_ext_keys if k not in ext.header]
            assert not missing
            assert ext.header["BITPIX"] == 16 and ext.header["BZERO"] == 32768
            assert (ext.header["NAXIS1"], ext.header["NAXIS2"]) == (2160, 4146)
            assert ext.data.dtype == np.dtype(">i2")
            assert ext.header["EXTNAME"] == ext.header["DETPOS"] == decam_camera().ccd(ext.header["CCDNUM"]).detpos
            c = decam_camera().ccd(ext.header["CCDNUM"])
            assert ext.header["GAINA"] == c.amps["A"].gain


def test_event(repo):
    root, cfg, summary = repo
    with open(root / datarepo.event_path(summary.expnums[1]), "rb") as f:
        recs = list(fastavro.reader(f))
    assert len(recs) == 1
    r = recs[0]
    assert r["eventId"] == f"DECam-{summary.expnums[1]}" and r["instrument"] == "DECam"
    assert r["rawPath"] == str(datarepo.raw_path(summary.expnums[1])) and r["detectors"] == sorted(CCDS)
    assert r["shutterCloseMjdTai"] - r["midpointMjdTai"] == pytest.approx(45.0 / 86400.0, abs=1e-8)
    assert r["replay"] is False


def test_isr_by_hand_recovers_sky(repo):
    root, cfg, summary = repo
    exps = Table.read(root / "truth" / "exposures.ecsv")
    path = root / datarepo.raw_path(summary.expnums[0])
    for c in CCDS:
        raw = read_raw_ccd(path, c)
        geo = amp_geometry(raw.header)
        bias = fits.getdata(root / datarepo.bias_path(), raw.detpos)
        flat = fits.getdata(root / datarepo.flat_path("r"), raw.detpos)
        out = np.empty((4096, 2048), np.float32)
        for g in geo.values():
            os_row = np.median(raw.pixels[g.overscan], axis=1)
            out[g.ccd] = (raw.pixels[g.data] - os_row[:, None] - bias[g.ccd]) / flat[g.ccd] * g.gain
        sky = exps["sky_e_per_pix"][exps["expnum"] == summary.expnums[0]][0]
        for g in geo.values():
            assert np.median(out[g.ccd]) == pytest.approx(sky, rel=0.01)


def test_truth_wcs_matches_sim_projection(repo):
    root, cfg, summary = repo
    exps = Table.read(root / "truth" / "exposures.ecsv")
    e = exps[0]
    rng = np.random.default_rng(1)
    with fits.open(root / datarepo.truth_wcs_path(int(e["expnum"]))) as h:
        for c in CCDS:
            ccd = sim_camera.ccd(c)
            w = WCS(h[ccd.detpos].header)
            x = rng.uniform(0, 2047, 300)
            y = rng.uniform(0, 4095, 300)
            ra, dec = optics.pixel_to_sky(ccd, x, y, e["ra"], e["dec"])
            fra, fdec = w.all_pix2world(x + 1.0, y + 1.0, 1)  # header is 1-based FITS convention
            sep = SkyCoord(fra, fdec, unit="deg").separation(SkyCoord(ra, dec, unit="deg")).arcsec
            assert sep.max() < 0.005
            # round trip of the sim's own projection
            x2, y2 = optics.sky_to_pixel(ccd, ra, dec, e["ra"], e["dec"])
            assert np.abs(x2 - x).max() < 1e-6 and np.abs(y2 - y).max() < 1e-6


def test_header_wcs_within_pointing_error(repo):
    root, cfg, summary = repo
    exps = Table.read(root / "truth" / "exposures.ecsv")
    for e in exps:
        path = root / datarepo.raw_path(int(e["expnum"]))
        for c in CCDS:
            raw = read_raw_ccd(path, c)
            w = WCS(raw.header)
            ccd = sim_camera.ccd(c)
            x = np.array([0.0, 2047.0, 0.0, 2047.0, 1024.0])
            y = np.array([0.0, 0.0, 4095.0, 4095.0, 2048.0])
            ra, dec = optics.pixel_to_sky(ccd, x, y, e["ra"], e["dec"])
            hra, hdec = w.all_pix2world(x + 56.0, y + 50.0, 0)  # raw-file pixels: 56 columns, 50 rows offset
            sep = SkyCoord(hra, hdec, unit="deg").separation(SkyCoord(ra, dec, unit="deg")).arcsec
            assert sep.max() < cfg.pointing_error_arcsec + 0.5


def test_transients_and_photometric_truth(repo):
    root, cfg, summary = repo
    src = Table.read(root / "truth" / "sources.ecsv")
    flux = Table.read(root / "truth" / "fluxes.ecsv")
    kinds = set(src["kind"])
    assert {"star", "galaxy", "transient", "supernova", "variable"} <= kinds
    sn = src[src["kind"] == "supernova"]
    assert np.all(sn["host_id"] > 0)
    shown = flux[flux["delta_flux_njy"] != 0]
    assert len(shown) > 0
    assert np.all(np.abs(shown["snr"]) >= 4.99) and np.all(np.abs(shown["snr"]) <= 100.01)
    assert summary.n_transients == len(set(flux["source_id"]))


def test_star_flux_in_science_matches_template(repo):
    """A bright isolated star: ISR'd electrons -> nJy equals the template's nJy (aperture sums)."""
    root, cfg, summary = repo
    exps = Table.read(root / "truth" / "exposures.ecsv")
    e = exps[0]
    ref = Table.read(root / "truth" / "sources.ecsv")
    ref = ref[ref["kind"] == "star"]
    ccd = sim_camera.ccd(CCDS[0])
    x, y = optics.sky_to_pixel(ccd, ref["ra"], ref["dec"], e["ra"], e["dec"])
    ok = (x > 100) & (x < 1900) & (y > 100) & (y < 3900) & (ref["ref_mag_r"] > 18.0) & (ref["ref_mag_r"] < 19.0)
    # Isolated from brighter stars' wings (the PSFs' Moffat beta goes down to 2.1) and from galaxies
    everything = Table.read(root / "truth" / "sources.ecsv")
    ax, ay = optics.sky_to_pixel(ccd, everything["ra"], everything["dec"], e["ra"], e["dec"])
    dist = np.hypot(ax[None, :] - x[ok][:, None], ay[None, :] - y[ok][:, None])
    brighter = np.asarray(everything["ref_mag_r"])[None, :] < np.asarray(ref["ref_mag_r"])[ok][:, None]
    crowded = ((dist > 0.5) & (((dist < 150) & brighter) | (dist < 30))).any(axis=1)
    ok[np.flatnonzero(ok)[crowded]] = False
    # and with no cosmic ray (small mode writes their truth masks) nor bad pixel (hot or cold) in the aperture
    cosmic = np.load(root / "truth" / "cosmic_rays" / f"{int(e['expnum']):08d}_{CCDS[0]:02d}.npy")
    for x0, y0, w, h in sim_camera.defect_boxes(CCDS[0]):
        cosmic[y0:y0 + h, x0:x0 + w] = True
    hit = [cosmic[int(round(b)) - 25:int(round(b)) + 26, int(round(a)) - 25:int(round(a)) + 26].any()
           for a, b in zip(x[ok], y[ok])]
    ok[np.flatnonzero(ok)[np.asarray(hit, bool)]] = False
    assert ok.sum() > 0
    k = np.nonzero(ok)[0][0]
    expected = 10 ** (-0.4 * (ref["ref_mag_r"][k] - 31.4))
    raw = read_raw_ccd(root / datarepo.raw_path(int(e["expnum"])), ccd.ccdnum)
    geo = amp_geometry(raw.header)
    bias = fits.getdata(root / datarepo.bias_path(), ccd.detpos)
    flat = fits.getdata(root / datarepo.flat_path("r"), ccd.detpos)
    img = np.empty((4096, 2048), np.float32)
    for g in geo.values():
        img[g.ccd] = (raw.pixels[g.data] - np.median(raw.pixels[g.overscan], axis=1)[:, None] - bias[g.ccd]) \
            / flat[g.ccd] * g.gain
    ix, iy = int(round(x[k])), int(round(y[k]))
    r = 25
    # the local sky (the sky has a gradient): the median of an annulus 30-45 px out
    box = img[iy - 45:iy + 46, ix - 45:ix + 46]
    rr = np.hypot(*np.mgrid[-45:46, -45:46])
    cut = img[iy - r:iy + r + 1, ix - r:ix + r + 1] - np.median(box[(rr >= 30) & (rr <= 45)])
    njy = cut.sum() * 10 ** (-0.4 * (e["zero_point"] - 31.4))
    noise = np.sqrt(cut.size * e["sky_e_per_pix"]) * 10 ** (-0.4 * (e["zero_point"] - 31.4))
    assert abs(njy - expected) < 5 * noise + 0.05 * expected


def test_fpack_and_determinism(packed):
    a, b, cfg = packed
    rel = datarepo.raw_path(cfg.first_expnum, compressed=True)
    assert str(rel).endswith(".fits.fz")
    with fits.open(a / rel) as h:
        assert isinstance(h[1], fits.CompImageHDU)
    assert list_ccds(a / rel) == [1]
    r = read_raw_ccd(a / rel, 1)
    assert r.pixels.shape == (4146, 2160) and r.detpos == "S29"
    for p in sorted(x.relative_to(a) for x in a.rglob("*") if x.is_file()):
        assert hashlib.sha256((a / p).read_bytes()).digest() == hashlib.sha256((b / p).read_bytes()).digest(), p


def test_truncated_sim_raw_raises(repo, tmp_path):
    root, cfg, summary = repo
    data = (root / datarepo.raw_path(summary.expnums[0])).read_bytes()
    bad = tmp_path / "DECam_trunc.fits"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError):
        for c in CCDS:
            read_raw_ccd(bad, c)
    garbled = tmp_path / "DECam_garbled.fits"
    garbled.write_bytes(data[:2880] + b"\x00" * (len(data) - 2880))
    with pytest.raises(InputError):
        read_raw_ccd(garbled, CCDS[0])
