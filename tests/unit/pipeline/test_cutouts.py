"""Cutouts carry the parent's pixels and a WCS that maps stamp pixels to the same sky."""

from __future__ import annotations

import io

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from pipeline.cutouts import cutouts_at
from pipeline.types import MaskedImage


def _wcs() -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [51.0, -28.2]
    wcs.wcs.crpix = [1024.5, 2048.5]
    wcs.wcs.cd = [[0.0, 0.2636 / 3600], [-0.2636 / 3600, 0.0]]
    return wcs


def test_cutout_pixels_and_wcs_match_the_parent():
    rng = np.random.default_rng(3)
    image = rng.normal(size=(400, 300)).astype(np.float32)
    masked = MaskedImage(image=image, mask=np.zeros(image.shape, np.int32),
                         variance=np.ones(image.shape, np.float32))
    wcs = _wcs()
    x, y = np.array([150.2, 3.0]), np.array([200.7, 5.0])
    cutouts = cutouts_at(masked, masked, masked, x, y, wcs=wcs, bbox_size=np.array([15, 15]))
    with fits.open(io.BytesIO(cutouts[0][2])) as hdus:
        stamp = hdus["IMAGE"].data
        assert stamp.shape == (31, 31)
        np.testing.assert_array_equal(stamp, image[201 - 15:201 + 16, 150 - 15:150 + 16])
        stamp_wcs = WCS(hdus["IMAGE"].header)
        ra, dec = stamp_wcs.all_pix2world([15.0], [15.0], 0)
        ra0, dec0 = wcs.all_pix2world([150.0], [201.0], 0)
        assert abs(ra[0] - ra0[0]) * 3600 < 1e-6 and abs(dec[0] - dec0[0]) * 3600 < 1e-6
        assert set(h.name for h in hdus[1:]) == {"IMAGE", "MASK", "VARIANCE"}
    with fits.open(io.BytesIO(cutouts[1][0])) as hdus:  # near the corner: off-image pixels are NaN
        assert np.isnan(hdus["IMAGE"].data[0, 0]) and np.isfinite(hdus["IMAGE"].data[15, 15])
