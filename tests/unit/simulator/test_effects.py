"""The simulator's switchable effects, each alone: elliptical PSFs of real PSFEx shapes, calibration frames with
their own noise, a master flat whose illumination is off by a stated fraction, hot pixels in no defect list.
Tolerances: the noise of a master bias of 20 frames within 3% of read noise / gain / sqrt(20) (a 4096 x 2048
frame measures it to 0.1%); the flat's illumination error at most the stated fraction and at least half of it
somewhere (smooth: its pixel-to-pixel part is the frames' photon noise, 1 / sqrt(10 x 20,000), within 3%)."""

from __future__ import annotations

import numpy as np
import pytest

from simulator import SimConfig, camera
from simulator.calibrations import bias_structure, flat_field, master_bias, master_flat, unlisted_hot_pixels
from simulator.psf import ccd_psf
from simulator.render import add_point_sources
from simulator.world import make_exposures


def test_effects_off_and_then_the_truth_is_written():
    cfg = SimConfig(ccds=[35], calibration_noise=False, flat_illumination_error=0.0, n_unlisted_hot_pixels=0)
    assert np.array_equal(master_bias(cfg, 35), bias_structure(cfg.seed, 35))
    assert np.array_equal(master_flat(cfg, 35, "r"), flat_field(cfg.seed, 35, "r"))
    assert unlisted_hot_pixels(cfg, 35)[0].size == 0


def test_master_bias_carries_the_noise_of_its_frames():
    cfg = SimConfig(ccds=[35], calibration_noise=True)
    resid = master_bias(cfg, 35) - bias_structure(cfg.seed, 35)
    amp = camera.ccd(35).left_amp
    assert np.std(resid[:, :1024]) == pytest.approx(amp.read_noise / amp.gain / np.sqrt(20), rel=0.03)


@pytest.mark.parametrize("error", [0.01, 0.03])
def test_master_flat_illumination_error_is_smooth_and_of_the_stated_size(error):
    cfg = SimConfig(ccds=[28], flat_illumination_error=error, calibration_noise=False)
    ratio = master_flat(cfg, 28, "g") / flat_field(cfg.seed, 28, "g")
    assert np.ptp(ratio) <= 2 * error * 1.001 and np.abs(ratio - 1).max() >= 0.5 * error
    assert np.abs(np.diff(ratio, axis=1)).max() < 1e-4      # smooth: no pixel-to-pixel part
    noisy = master_flat(cfg.model_copy(update={"calibration_noise": True}), 28, "g") / master_flat(cfg, 28, "g")
    assert np.std(noisy) == pytest.approx(1 / np.sqrt(10 * 20000.0), rel=0.03)


def test_unlisted_hot_pixels_are_fixed_and_not_in_the_defect_lists():
    cfg = SimConfig(ccds=[1], n_unlisted_hot_pixels=50)
    y, x, e = unlisted_hot_pixels(cfg, 1)
    assert y.size == 50 and np.all((e >= 200) & (e <= 20000))
    again = unlisted_hot_pixels(cfg.model_copy(update={"n_epochs": 5}), 1)
    assert np.array_equal(again[0], y) and np.array_equal(again[1], x)
    listed = np.zeros((4096, 2048), bool)
    for x0, y0, w, h in camera.defect_boxes(1):
        listed[y0:y0 + h, x0:x0 + w] = True
    assert listed[y, x].mean() < 0.5     # drawn anywhere: most are outside the listed boxes


def test_psfs_vary_between_ccds_and_exposures_and_are_elliptical():
    cfg = SimConfig(ccds=[1, 28, 35], n_epochs=3)
    exps, _ = make_exposures(cfg)
    psfs = [ccd_psf(cfg, e, c) for e in exps for c in cfg.ccds]
    assert len({(p.beta, round(p.e1, 6)) for p in psfs}) > 5
    assert len({round(p.fwhm_pix, 6) for p in psfs}) == len(exps)    # the seeing: one per exposure
    p = max(psfs, key=lambda q: np.hypot(q.e1, q.e2))
    img = np.zeros((101, 101), np.float32)
    add_point_sources(img, [50.0], [50.0], [1e5], p.fwhm_pix, beta=p.beta, shape=([p.fwhm_pix], [p.e1], [p.e2]))
    yy, xx = np.mgrid[:101, :101] - 50.0
    w = img * np.exp(-(xx**2 + yy**2) / (2 * (1.5 * p.fwhm_pix / 2.355) ** 2))
    ixx, iyy, ixy = (w * xx * xx).sum(), (w * yy * yy).sum(), (w * xx * yy).sum()
    e1, e2 = (ixx - iyy) / (ixx + iyy), 2 * ixy / (ixx + iyy)
    # A circular weight rounds an elliptical profile (here to about 0.6 of its ellipticity); the direction stays
    measured, intended = np.hypot(e1, e2), np.hypot(p.e1, p.e2)
    assert 0.4 * intended <= measured <= 1.0 * intended
    assert np.cos(np.arctan2(e2, e1) - np.arctan2(p.e2, p.e1)) > 0.99
    assert np.hypot(p.e1, p.e2) > 0.02
    flat = SimConfig(ccds=[35], psf_variation=False)
    q = ccd_psf(flat, make_exposures(flat)[0][0], 35)
    assert (q.e1, q.e2, q.beta) == (0.0, 0.0, 3.5)
