"""ISR pieces that the truth tests do not reach: crosstalk (the simulator's own, from its copy of the real
coefficients, and more injected here)."""

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
    plain = IsrConfig(do_cosmic_rays=False, do_crosstalk=False)
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


def test_the_simulators_crosstalk_is_removed_by_default():
    """The same CCD rendered with and without the simulator's crosstalk: the default ISR (``do_crosstalk``, with
    the pipeline's own table) leaves no more than the two raws' separate rounding to ADU (1 ADU: 4-5 e-; the
    ghosts reach more than five times that) and no mean offset above 0.05 e-."""
    from simulator import SimConfig
    from simulator import camera as sim_camera
    from simulator.images import render_ccd
    from simulator.sources import make_sources, tile_plan
    from simulator.world import make_exposures
    from tests.helpers.calib_data import NIGHTS

    i = data.inputs("good", 35)
    cfg = SimConfig(n_epochs=1, small=True, **NIGHTS["good"])
    exps, centers = make_exposures(cfg)
    src = make_sources(cfg, exps, centers, tile_plan(cfg, exps, centers))
    clean_pixels, _ = render_ccd(cfg.model_copy(update={"crosstalk": False}), exps[0], sim_camera.ccd(35), src)
    assert not np.array_equal(clean_pixels, i.raw.pixels)
    clean = dataclasses.replace(i.raw, pixels=clean_pixels)
    plain = IsrConfig(do_cosmic_rays=False, do_crosstalk=False)
    reference = run_isr(clean, i.bias, i.flat, i.defects, config=plain)
    uncorrected = run_isr(i.raw, i.bias, i.flat, i.defects, config=plain)
    corrected = run_isr(i.raw, i.bias, i.flat, i.defects, config=IsrConfig(do_cosmic_rays=False),
                        crosstalk=intra_ccd_crosstalk(35))
    good = reference.mask == 0
    ghost = np.abs(uncorrected.image - reference.image)[good]
    left = np.abs(corrected.image - reference.image)[good]
    one_adu = max(a.gain for a in sim_camera.ccd(35).amps.values()) / float(i.flat[reference.mask == 0].min())
    assert ghost.max() > 5 * one_adu          # a saturated star's or hot defect's ghost: 3e-4 of it
    assert left.max() < 1.01 * one_adu        # what is left: the two raws' rounding to ADU
    assert abs(np.mean(corrected.image[good] - reference.image[good])) < 0.05
