"""A valid exposure-ready event to start from, for the tests of event records, files and sources."""

from __future__ import annotations

import dataclasses

from streamer.events.records import ExposureReady


def make_event(**changes) -> ExposureReady:
    """A DECam exposure-ready event of three CCDs, with ``changes`` applied to its fields."""
    ev = ExposureReady(
        event_id="DECam-00123456",
        instrument="DECam",
        exposure_id=123456,
        raw_path="raw/2024-01-01/c4d_240101_000000_ori.fits.fz",
        band="r",
        midpoint_mjd_tai=60310.1,
        shutter_close_mjd_tai=60310.1005,
        ra=150.1,
        dec=2.2,
        detectors=(1, 5, 62),
        replay=False,
    )
    return dataclasses.replace(ev, **changes)
