"""ISR pieces that the truth tests do not reach: crosstalk (the simulator makes none: injected here)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import yaml

from pipeline.decam.header import amp_geometry
from pipeline.isr import IsrConfig, run_isr
from streamer.decam.camera_tables import decam_camera
from tests.helpers import calib_data as data
from tests.helpers.reference import DECAM_REFERENCE_DIR


def intra_ccd_crosstalk(ccdnum: int) -> tuple[float, float]:
    """(A from B, B from A) of a CCD, as the packaged camera tables give them."""
    ccd = decam_camera().ccd(ccdnum)
    return ccd.crosstalk_a_from_b, ccd.crosstalk_b_from_a


def test_crosstalk_table_matches_lsst_yaml():
    """The 2013 text table and obs_decam's per-CCD yaml hold the same intra-CCD pair of coefficients."""
    path = next((DECAM_REFERENCE_DIR / "crosstalk" / "s1").glob("*.yaml"))
    head = path.read_text().split("crosstalkShape:")[0]  # the rest holds python-specific yaml tags
    coeffs = yaml.safe_load(head)["coeffs"]
    assert sorted(intra_ccd_crosstalk(25)) == pytest.approx(sorted([c for c in coeffs if c]))


def test_crosstalk_injected_is_removed():
    """A <-> B crosstalk added to a simulated raw with the real CCD 35 coefficients is removed by ISR."""
    i = data.inputs("good", 35)
    raw = i.raw
    a_from_b, b_from_a = intra_ccd_crosstalk(35)
    amps = amp_geometry(raw.header)
    pixels = raw.pixels.copy()
    signal = {n: raw.pixels[amp.data] - np.median(raw.pixels[amp.overscan]) for n, amp in amps.items()}
    # Pixels read at the same time sit mirrored about the CCD centre (the amplifiers face each other).
    pixels[amps["A"].data] += a_from_b * signal["B"][:, ::-1]
    pixels[amps["B"].data] += b_from_a * signal["A"][:, ::-1]
    leaked = dataclasses.replace(raw, pixels=pixels)
    plain = IsrConfig(do_cosmic_rays=False)
    reference = run_isr(raw, i.bias, i.flat, i.defects, config=plain)
    uncorrected = run_isr(leaked, i.bias, i.flat, i.defects, config=plain)
    corrected = run_isr(leaked, i.bias, i.flat, i.defects, config=plain.model_copy(update={"do_crosstalk": True}),
                        crosstalk=(a_from_b, b_from_a))
    ghost = np.abs(uncorrected.image - reference.image)
    left = np.abs(corrected.image - reference.image)
    good = reference.mask == 0
    assert ghost[good].max() > 20.0  # bright stars leave visible ghosts (electrons)
    assert left[good].max() < 0.02 * ghost[good].max()
    assert np.abs(np.mean(corrected.image[good] - reference.image[good])) < 0.05
