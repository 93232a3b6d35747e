"""The worker on Community Pipeline InstCal events: the product dispatch (no bias or flat read), the checks
against the event, and the named InputErrors that make a broken InstCal exposure a dead letter."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
from astropy.io import fits

from pipeline.decam.instcal import InstCalInputs
from pipeline.errors import HeaderError, InputError
from schemas import datarepo
from streamer.decam.instcal_files import instcal_paths
from streamer.events.files import read_event_file
from streamer.worker.inputs import DataRepository
from streamer.worker.processor import CcdProcessor, empty_region
from tests.helpers.instcal_night import exposure_truth, instcal_night
from tests.helpers.night_files import link_fits


class _EmptyApdb:
    def read_region(self, region, visit_mjd_tai):
        return empty_region()


def _processor(root) -> CcdProcessor:
    return CcdProcessor(DataRepository(root), _EmptyApdb(), alert_sink=None)  # type: ignore[arg-type]


def _event(root):
    return read_event_file(root / datarepo.event_path(int(exposure_truth()["expnum"])))


@pytest.fixture
def night(tmp_path):
    """A private copy of the InstCal night (FITS files hard-linked: replace a file, never write into one)."""
    root = tmp_path / "night"
    shutil.copytree(instcal_night(), root, ignore=shutil.ignore_patterns("out"), copy_function=link_fits)
    return root


def test_instcal_event_reads_the_cp_files_and_no_calibration_frame(night):
    for name in ("bias.fits", "flat_r.fits"):   # an InstCal worker never reads them
        (night / "calib" / name).unlink()
    proc = _processor(night)
    event = _event(night)
    proc.check_exposure(event)
    assert proc.raw_ccds(event) == (35, 1)
    inputs, region = proc.gather(event, 35)
    assert isinstance(inputs, InstCalInputs) and len(region.dia_objects) == 0
    assert inputs.instcal.ccdnum == 35 and inputs.instcal.info.expnum == event.exposure_id
    assert inputs.instcal.masked.image.shape == (4094, 2046)
    assert len(inputs.refcat) > 20 and len(inputs.template_tiles) >= 1


def _replace(path, hdul_or_bytes) -> None:
    path.unlink()                                   # the copy's file is a hard link to the shared night's
    if isinstance(hdul_or_bytes, bytes):
        path.write_bytes(hdul_or_bytes)
    else:
        hdul_or_bytes.writeto(path)


def test_missing_weight_or_mask_is_an_input_error_before_any_ccd(night):
    event = _event(night)
    _, oow, ood = instcal_paths(night / event.raw_path)
    oow.unlink()
    with pytest.raises(InputError, match="missing .*_oow_") as info:
        _processor(night).check_exposure(event)
    assert info.value.stage == "read_instcal"
    ood.unlink()
    with pytest.raises(InputError, match="_oow_.*_ood_") as info:
        _processor(night).load_static(event, 35)
    assert info.value.stage == "read_instcal"


def test_corrupt_mask_is_an_input_error(night):
    event = _event(night)
    _, _, ood = instcal_paths(night / event.raw_path)
    _replace(ood, b"SIMPLE  =                    T" + b"\x00garbage" * 500)
    with pytest.raises(InputError, match="not a readable FITS") as info:
        _processor(night).load_static(event, 35)
    assert info.value.stage == "read_instcal"


def test_mask_of_another_shape_is_an_input_error(night):
    event = _event(night)
    _, _, ood = instcal_paths(night / event.raw_path)
    with fits.open(ood) as hdul:
        hdus = fits.HDUList([fits.PrimaryHDU(header=hdul[0].header)] +
                            [fits.ImageHDU(np.zeros((100, 100), np.int16), header=h.header) for h in hdul[1:]])
    _replace(ood, hdus)
    with pytest.raises(InputError, match="differ") as info:
        _processor(night).load_static(event, 1)
    assert info.value.stage == "read_instcal"


def test_a_raw_named_as_an_instcal_image_is_refused(night):
    event = _event(night)
    ooi = night / event.raw_path
    with fits.open(ooi) as hdul:
        hdul[0].header["PROCTYPE"] = "RAW"
        hdus = fits.HDUList([fits.PrimaryHDU(header=hdul[0].header), *[h.copy() for h in hdul[1:]]])
        _replace(ooi, hdus)
    with pytest.raises(InputError, match="not a CP InstCal product") as info:
        _processor(night).check_exposure(event)
    assert info.value.stage == "read_instcal"


def test_instcal_of_another_exposure_or_ccd(night):
    event = _event(night)
    proc = _processor(night)
    with pytest.raises(HeaderError, match="EXPNUM"):
        proc.check_exposure(dataclasses.replace(event, exposure_id=event.exposure_id + 1))
    with pytest.raises(HeaderError, match="EXPNUM"):
        proc.load_static(dataclasses.replace(event, exposure_id=event.exposure_id + 1), 35)
    with pytest.raises(InputError, match="no extension for CCD 28"):
        proc.load_static(event, 28)


def test_the_product_decides_how_the_file_is_read(night):
    """An InstCal image under a raw event is read as a raw, and refused as one (a named InputError)."""
    event = dataclasses.replace(_event(night), product="raw")
    with pytest.raises(InputError) as info:
        _processor(night).load_static(event, 35)
    assert info.value.stage == "read_raw"


def test_template_build_takes_instcal_images(night):
    """``blink templates build`` calibrates a CP image as the worker does (no ISR) and coadds it."""
    from streamer.templates.build import build_templates, calibrated_input

    shutil.rmtree(night / "templates")
    repo = DataRepository(night)
    relative = _event(night).raw_path
    exposure = calibrated_input(repo, relative, 35, config=_processor(night).config)
    assert exposure.ccdnum == 35 and exposure.metadata["astrometry_rms_arcsec"] < 0.05
    summary = build_templates(repo, [relative])
    assert summary.failures == [] and summary.inputs_added == 2 and summary.tiles_written
    assert (night / datarepo.template_index_path("r")).exists()
