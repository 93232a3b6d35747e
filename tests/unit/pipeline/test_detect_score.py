"""The detection score image: its coverage found only where a detection can be makes the same detections."""

from __future__ import annotations

import numpy as np

from pipeline.convolution import coverage_at, matched_filter
from pipeline.detect import DetectConfig, _detect_sign, score_image
from pipeline.psf import GaussianPsf
from simulator.render import add_point_sources


def _field(seed: int = 4, shape=(400, 300)):
    rng = np.random.default_rng(seed)
    ny, nx = shape
    positive, negative = np.zeros(shape), np.zeros(shape)
    for plane in (positive, negative):  # a difference image: sources of both signs
        add_point_sources(plane, rng.uniform(5, nx - 5, 30), rng.uniform(5, ny - 5, 30),
                          10 ** rng.uniform(2.5, 4.5, 30), 3.5)
    image = (positive - negative + rng.normal(0.0, 10.0, shape)).astype(np.float32)
    variance = np.full(shape, 100.0, np.float32)
    bad = np.zeros(shape, bool)
    bad[:, 100:102] = True  # a bad column through sources
    bad[200:260, 150:230] = True  # a saturated star's block
    bad |= rng.random(shape) < 0.01  # cosmic rays
    image[200:260, 150:230] = 5.0e4
    return image, variance, bad


def test_coverage_at_equals_the_fft_plane():
    image, variance, bad = _field()
    kernel = np.random.default_rng(1).random((9, 9))
    kernel[0] += 2.0  # lopsided: the orientation matters
    kernel /= kernel.sum()
    _, _, coverage = matched_filter(image, variance, bad, kernel)
    iy, ix = np.nonzero(np.ones(bad.shape, bool))
    direct = coverage_at(bad, kernel, iy, ix).reshape(bad.shape)
    np.testing.assert_allclose(direct, coverage, atol=1e-6)  # float32 FFT round-off


def test_threshold_score_makes_the_same_detections():
    image, variance, bad = _field()
    kernel = GaussianPsf((3.5 / 2.355, 0.0, 0.0)).kernel(0.0, 0.0, 7)
    config = DetectConfig()
    full = score_image(image, variance, bad, kernel)
    fast = score_image(image, variance, bad, kernel, threshold=config.threshold_sigma)
    above = (np.abs(full) >= config.threshold_sigma) | (np.abs(fast) >= config.threshold_sigma)
    assert above.sum() > 500  # sources of both signs, and pixels next to the masked block
    np.testing.assert_array_equal(fast[above], full[above])
    changed = fast != full
    assert np.all(full[changed] == 0.0) and np.all(np.abs(fast[changed]) < config.threshold_sigma)
    for sign in (1.0, -1.0):
        a = _detect_sign(np.ascontiguousarray(sign * full), bad, config)
        b = _detect_sign(np.ascontiguousarray(sign * fast), bad, config)
        assert len(a) > 5
        np.testing.assert_array_equal(a, b)
