"""Camera tables and the raw reader."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from pipeline.decam import camera as cam
from pipeline.decam.header import amp_geometry, parse_section, read_exposure_info
from pipeline.errors import InputError
from streamer.decam.camera_tables import decam_camera, defect_boxes, known_defects
from streamer.decam.raw_files import list_ccds, read_raw_ccd


def test_camera_tables():
    c = decam_camera().ccd(25)
    assert c.detpos == "S1" and c.xmax - c.xmin == pytest.approx(30.72, abs=1e-3)
    assert set(c.amps) == {"A", "B"} and 3.0 < c.amps["A"].gain < 5.0
    assert decam_camera().ccdnum_of("N4") == 35
    assert len(cam.SCIENCE_CCDS) == 62 and 61 in cam.DEAD_CCDS
    # S CCDs have amp B on the left, N CCDs amp A (segmentfile.txt)
    assert decam_camera().ccd(28).left_amp.name == "B" and decam_camera().ccd(35).left_amp.name == "A"


def test_defect_mask():
    m = known_defects(32, 61000.0)
    assert m.shape == (4096, 2048) and m.dtype == bool
    assert 0 < m.sum() < 0.1 * m.size  # includes edge strips
    old = defect_boxes(32, "1990-01-01")
    new = defect_boxes(32, 61000.0)
    assert len(old) != len(new) or not np.array_equal(old, new)


def test_parse_section():
    assert parse_section("[57:1080,51:4146]") == (slice(50, 4146), slice(56, 1080))
    assert parse_section("[2048:1025,4096:1]") == (slice(0, 4096), slice(1024, 2048))
    with pytest.raises(InputError):
        parse_section("57:1080")


REAL_AMP_KEYWORDS = dict(DATASECA="[1081:2104,51:4146]", BIASSECA="[2105:2154,51:4146]", PRESECA="[2155:2160,51:4146]",
                     POSTSECA="[1081:2104,1:50]", CCDSECA="[1025:2048,1:4096]", AMPSECA="[2048:1025,4096:1]",
                     DATASECB="[57:1080,51:4146]", BIASSECB="[7:56,51:4146]", PRESECB="[1:6,51:4146]",
                     POSTSECB="[57:1080,1:50]", CCDSECB="[1:1024,1:4096]", AMPSECB="[1:1024,4096:1]",
                     GAINA=4.59, RDNOISEA=7.18, SATURATA=43266.0, GAINB=4.40, RDNOISEB=7.02,
                     SATURATB=44935.0)
"""Amplifier keywords of a real DECam raw extension (CCD 25, 2013)."""


def test_amp_geometry_real_header():
    h = fits.Header()
    h.update(REAL_AMP_KEYWORDS)
    g = amp_geometry(h)
    assert g["A"].data == (slice(50, 4146), slice(1080, 2104))
    assert g["A"].overscan == (slice(50, 4146), slice(2104, 2154))
    assert g["A"].parallel_overscan == (slice(0, 50), slice(1080, 2104))
    assert g["A"].ccd == (slice(0, 4096), slice(1024, 2048))
    assert not g["A"].flip_x and not g["A"].flip_y and g["A"].readout_reversed_x
    assert g["B"].ccd == (slice(0, 4096), slice(0, 1024)) and not g["B"].readout_reversed_x
    assert g["B"].gain == pytest.approx(4.40)


def _primary():
    h = fits.Header()
    h["INSTRUME"] = "DECam"
    h["EXPNUM"] = 177764
    h["EXPTIME"] = 30.0
    h["MJD-OBS"] = 56336.3761686
    h["FILTER"] = "g DECam SDSS c0001 4720.0 1520.0"
    h["RA"] = "18:02:33.333"
    h["DEC"] = "-23:46:59.999"
    h["AIRMASS"] = 1.77
    return h


def test_read_exposure_info():
    info = read_exposure_info(_primary())
    assert info.band == "g" and info.expnum == 177764
    assert info.mjd_mid_tai == pytest.approx(56336.3761686 + 15.0 / 86400.0, abs=1e-9)
    assert info.ra_deg == pytest.approx(270.638888, abs=1e-5)
    assert info.dec_deg == pytest.approx(-23.7833331, abs=1e-6)
    h = _primary()
    h["INSTRUME"] = "Mosaic"
    with pytest.raises(InputError):
        read_exposure_info(h)


def _write_fake(path, ccds=(28, 5), compressed=False):
    hdus = [fits.PrimaryHDU(header=_primary())]
    rng = np.random.default_rng(0)
    for c in ccds:
        d = rng.integers(2000, 3000, (4146, 2160)).astype(np.uint16)
        h = fits.Header()
        h["CCDNUM"] = c
        h["DETPOS"] = decam_camera().ccd(c).detpos
        h["EXTNAME"] = decam_camera().ccd(c).detpos
        h.update(REAL_AMP_KEYWORDS)
        hdus.append(fits.CompImageHDU(d, header=h, compression_type="RICE_1") if compressed
                    else fits.ImageHDU(d, header=h))
    fits.HDUList(hdus).writeto(path)


@pytest.mark.parametrize("compressed", [False, True])
def test_read_raw_by_ccdnum(tmp_path, compressed):
    p = tmp_path / ("x.fits.fz" if compressed else "x.fits")
    _write_fake(p, compressed=compressed)
    assert list_ccds(p) == [28, 5]
    r = read_raw_ccd(p, 5)
    assert r.ccdnum == 5 and r.detpos == "S26" and r.pixels.shape == (4146, 2160)
    assert r.pixels.dtype == np.float32 and 2000 <= r.pixels.min() and r.pixels.max() < 3000
    with pytest.raises(InputError, match="CCDNUM = 7"):
        read_raw_ccd(p, 7)


def test_read_raw_errors(tmp_path):
    with pytest.raises(InputError):
        read_raw_ccd(tmp_path / "missing.fits", 1)
    junk = tmp_path / "junk.fits"
    junk.write_bytes(b"not a fits file at all" * 200)
    with pytest.raises(InputError):
        read_raw_ccd(junk, 1)
    p = tmp_path / "x.fits"
    _write_fake(p)
    trunc = tmp_path / "trunc.fits"
    trunc.write_bytes(p.read_bytes()[: 2880 * 5 + 4146 * 2160 * 2 // 2])
    with pytest.raises(InputError):
        read_raw_ccd(trunc, 5)
