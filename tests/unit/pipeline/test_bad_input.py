"""Bad inputs give a named Blink error with its stage (or a flagged result), never a raw traceback.

Driven through :func:`streamer.decam.raw_files.read_raw_ccd` and :func:`pipeline.ccd.process_ccd` on the
simulated ``good`` night of ``tests.helpers.calib_data`` (shared, made once per session).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from pipeline.ccd import process_ccd
from pipeline.errors import AlgorithmError, BlinkError, InputError, NoWorkError
from pipeline.types import CcdInputs
from schemas import datarepo
from streamer.decam.camera_tables import decam_camera
from streamer.decam.raw_files import read_raw_ccd
from streamer.reliability_model import shipped_model
from tests.helpers import calib_data as data

CCD = 35


def _raw_path():
    i = data.inputs("good", CCD)
    return i.root / datarepo.raw_path(int(i.truth["expnum"]))


def _ccd_inputs(raw=None, refcat=None) -> CcdInputs:
    i = data.inputs("good", CCD)
    empty = Table()
    return CcdInputs(raw=raw if raw is not None else i.raw, bias=i.bias, flat=i.flat,
                     refcat=refcat if refcat is not None else i.refcat, template_tiles=[],
                     dia_objects=empty, dia_sources=empty, dia_forced_sources=empty,
                     ccd=decam_camera().ccd(i.raw.ccdnum), defects=i.defects, reliability_model=shipped_model())


def _ccd_ext_offsets(path) -> tuple[int, int, int]:
    """(header start, data start, data size) in bytes of the CCD extension."""
    with fits.open(path) as hdul:
        for hdu in hdul[1:]:
            if hdu.header.get("CCDNUM") == CCD:
                info = hdu.fileinfo()
                return info["hdrLoc"], info["datLoc"], info["datSpan"]
    raise AssertionError("CCD not in simulated raw")


def _expect(exc_type, stage, func, *args):
    with pytest.raises(exc_type) as err:
        func(*args)
    assert isinstance(err.value, BlinkError)
    assert err.value.stage == stage, (err.value.stage, str(err.value))
    return err.value


def test_truncated_raw(tmp_path):
    src = _raw_path()
    _, dat, span = _ccd_ext_offsets(src)
    bad = tmp_path / src.name
    bad.write_bytes(src.read_bytes()[: dat + span // 2])
    _expect(InputError, "read_raw", read_raw_ccd, bad, CCD)


def test_garbage_in_data_is_flagged_or_named(tmp_path):
    """Garbage bytes in the middle of the pixels: still a valid FITS, so ISR must flag, not crash."""
    src = _raw_path()
    _, dat, span = _ccd_ext_offsets(src)
    blob = bytearray(src.read_bytes())
    rng = np.random.default_rng(1)
    start = dat + span // 3
    blob[start:start + 200_000] = rng.integers(0, 256, 200_000, dtype=np.uint8).tobytes()
    bad = tmp_path / src.name
    bad.write_bytes(bytes(blob))
    raw = read_raw_ccd(bad, CCD)
    try:
        out = process_ccd(_ccd_inputs(raw=raw))
    except BlinkError as err:
        assert err.stage in ("isr", "calibrate", "astrometry", "photometry", "template", "subtract")
    else:
        assert out.exposure.masked.image.shape == (4096, 2048)


def test_garbage_in_header(tmp_path):
    src = _raw_path()
    hdr, _, _ = _ccd_ext_offsets(src)
    blob = bytearray(src.read_bytes())
    blob[hdr:hdr + 2880] = b"\x00\xff" * 1440      # the CCD extension's first header block
    bad = tmp_path / src.name
    bad.write_bytes(bytes(blob))
    _expect(InputError, "read_raw", read_raw_ccd, bad, CCD)


def test_garbage_primary_header(tmp_path):
    src = _raw_path()
    blob = bytearray(src.read_bytes())
    blob[80:2880] = np.random.default_rng(2).integers(32, 127, 2800, dtype=np.uint8).tobytes()
    bad = tmp_path / src.name
    bad.write_bytes(bytes(blob))
    _expect(InputError, "read_raw", read_raw_ccd, bad, CCD)


def test_missing_extension():
    err = _expect(InputError, "read_raw", read_raw_ccd, _raw_path(), 7)
    assert "CCDNUM = 7" in str(err)


def test_all_saturated_ccd():
    raw = data.inputs("good", CCD).raw
    pixels = np.full_like(raw.pixels, 65535.0)
    pixels[:, ::97] += 0.0
    pixels[0, 0] = 65534.0                           # not constant, else the reader calls it garbled
    sat = dataclasses.replace(raw, pixels=pixels)
    with pytest.raises((NoWorkError, InputError, AlgorithmError)) as err:
        process_ccd(_ccd_inputs(raw=sat))
    assert err.value.stage in ("isr", "calibrate")


def test_nan_pixels_in_raw():
    raw = data.inputs("good", CCD).raw
    pixels = raw.pixels.copy()
    pixels[1000:1100, :] = np.nan
    out_or_err = None
    try:
        out_or_err = process_ccd(_ccd_inputs(raw=dataclasses.replace(raw, pixels=pixels)))
    except BlinkError as err:
        out_or_err = err
        assert err.stage != "unknown"
    if not isinstance(out_or_err, BlinkError):
        m = out_or_err.exposure.masked
        assert np.isfinite(m.image[m.mask == 0]).all()


def test_wrong_shape_bias():
    i = data.inputs("good", CCD)
    inputs = dataclasses.replace(_ccd_inputs(), bias=i.bias[:100])
    _expect(InputError, "isr", process_ccd, inputs)


def test_refcat_does_not_overlap():
    refcat = data.inputs("good", CCD).refcat.copy()
    refcat["ra"] = (np.asarray(refcat["ra"]) + 30.0) % 360.0
    with pytest.raises((AlgorithmError, NoWorkError)) as err:
        process_ccd(_ccd_inputs(refcat=refcat))
    assert err.value.stage in ("astrometry", "calibrate")


def test_empty_refcat():
    refcat = data.inputs("good", CCD).refcat[:0]
    with pytest.raises((AlgorithmError, NoWorkError)) as err:
        process_ccd(_ccd_inputs(refcat=refcat))
    assert err.value.stage in ("astrometry", "calibrate")
