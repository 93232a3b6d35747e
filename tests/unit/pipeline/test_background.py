"""The sky background: the one-pass subtraction gives the model's numbers."""

from __future__ import annotations

import numpy as np

from pipeline.background import BackgroundConfig, estimate_background, subtract_background
from pipeline.masks import MaskBit


def test_subtract_background_is_image_minus_the_model():
    rng = np.random.default_rng(2)
    ny, nx = 300, 260
    yy, xx = np.mgrid[:ny, :nx]
    image = (500.0 + 0.3 * xx - 0.2 * yy + rng.normal(0.0, 20.0, (ny, nx))).astype(np.float32)
    mask = np.zeros((ny, nx), np.int32)
    mask[100:110, 50:200] = int(MaskBit.SAT)  # excluded from the mesh statistics
    image[100:110, 50:200] = 6.0e4
    config = BackgroundConfig(box_size_pix=64)
    background, rms = estimate_background(image, mask, config=config)
    subtracted, rms_once = subtract_background(image, mask, config=config)
    assert subtracted.dtype == np.float32 and subtracted.flags.c_contiguous
    np.testing.assert_array_equal(subtracted, image - background)  # the same float32 numbers
    assert rms_once == rms
    assert image[0, 0] != subtracted[0, 0]  # the input is left as it was
    # The model follows the gradient to well under the noise per box (20 / sqrt(64^2) ~ 0.3, 3x margin).
    good = mask == 0
    assert abs(float(np.median(subtracted[good]))) < 1.0
