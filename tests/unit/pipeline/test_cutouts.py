"""Cutouts carry the parent's pixels and a WCS that maps stamp pixels to the same sky; they are gzipped FITS
that astropy opens, small, and byte-identical for the same inputs."""

from __future__ import annotations

import gzip
import io

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from pipeline.cutouts import FLUX_QUANTIZATION, PSF_BITS, VARIANCE_BITS, cutouts_at
from pipeline.masks import MaskBit
from pipeline.types import MaskedImage
from streamer.alerts.cutouts import open_cutout

SIGMA = 30.0  # noise of the test image, nJy


def _wcs() -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [51.0, -28.2]
    wcs.wcs.crpix = [1024.5, 2048.5]
    wcs.wcs.cd = [[0.0, 0.2636 / 3600], [-0.2636 / 3600, 0.0]]
    return wcs


def _masked(seed: int = 3) -> MaskedImage:
    """Noise with a bright star at (150, 201), a variance that follows it, and a few mask bits."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:400, :300]
    star = 5e5 * np.exp(-((xx - 150) ** 2 + (yy - 201) ** 2) / (2 * 2.0**2))
    image = (rng.normal(scale=SIGMA, size=star.shape) + star).astype(np.float32)
    variance = (SIGMA**2 + star * 0.01).astype(np.float32)
    mask = np.zeros(image.shape, np.int32)
    mask[195:198, 140:160] = MaskBit.SAT | MaskBit.DETECTED
    mask[210, 150] = MaskBit.NO_DATA | MaskBit.DETECTED_NEGATIVE
    return MaskedImage(image=image, mask=mask, variance=variance)


def _cut(masked: MaskedImage, **kwargs) -> list[tuple[bytes, bytes, bytes]]:
    psf = np.random.default_rng(5).random((2, 11, 11)).astype(np.float32)
    return cutouts_at(masked, masked, masked, np.array([150.2, 3.0]), np.array([200.7, 5.0]), wcs=_wcs(),
                      bbox_size=np.array([15, 15]), psf_stamps=psf / psf.sum(axis=(1, 2), keepdims=True), **kwargs)


def test_cutout_pixels_and_wcs_match_the_parent():
    masked = _masked()
    wcs = _wcs()
    cutouts = _cut(masked, flux_quantization=None)
    parent = np.s_[201 - 15:201 + 16, 150 - 15:150 + 16]
    with open_cutout(cutouts[0][2]) as hdus:
        stamp = hdus["IMAGE"].data
        assert stamp.shape == (31, 31) and stamp.dtype == np.dtype(">f4")
        np.testing.assert_array_equal(stamp, masked.image[parent])  # lossless without quantization
        stamp_wcs = WCS(hdus["IMAGE"].header)
        ra, dec = stamp_wcs.all_pix2world([15.0], [15.0], 0)
        ra0, dec0 = wcs.all_pix2world([150.0], [201.0], 0)
        assert abs(ra[0] - ra0[0]) * 3600 < 1e-6 and abs(dec[0] - dec0[0]) * 3600 < 1e-6
        assert [h.name for h in hdus[1:]] == ["IMAGE", "MASK", "VARIANCE", "PSF"]
    with open_cutout(cutouts[1][0]) as hdus:  # near the corner: off-image pixels are NaN, masked NO_DATA
        assert [h.name for h in hdus[1:]] == ["IMAGE", "MASK", "VARIANCE"]
        assert np.isnan(hdus["IMAGE"].data[0, 0]) and np.isfinite(hdus["IMAGE"].data[15, 15])
        assert hdus["MASK"].data[0, 0] == MaskBit.NO_DATA and np.isnan(hdus["VARIANCE"].data[0, 0])


def test_quantized_planes_stay_within_their_stated_errors():
    masked = _masked()
    psf = np.random.default_rng(5).random((2, 11, 11)).astype(np.float32)
    psf /= psf.sum(axis=(1, 2), keepdims=True)
    parent = np.s_[201 - 15:201 + 16, 150 - 15:150 + 16]
    with fits.open(io.BytesIO(gzip.decompress(_cut(masked)[0][2]))) as hdus:  # a broker's way to read it
        bscale = hdus["IMAGE"].header["BSCALE"]  # astropy drops the card once it has scaled the data
        image = hdus["IMAGE"].data
        # IMAGE: within half a step of the input, the step 1/16 of the stamp's noise (its median variance
        # is SIGMA**2: the star covers few pixels), so the bright star's core is kept as well as the noise
        assert bscale <= SIGMA / FLUX_QUANTIZATION * 1.001
        err = np.abs(image - masked.image[parent])
        assert err.max() <= 0.5 * bscale * 1.001
        assert image.max() > 4e5
        np.testing.assert_array_equal(hdus["MASK"].data, masked.mask[parent])  # lossless
        assert hdus["MASK"].data.dtype == np.dtype(">i2")
        assert hdus["MASK"].header["MP_DETECTED_NEGATIVE"] == 6
        variance = hdus["VARIANCE"].data
        np.testing.assert_allclose(variance, masked.variance[parent], rtol=2.0 ** -(VARIANCE_BITS + 1), atol=0)
        np.testing.assert_allclose(hdus["PSF"].data, psf[0], rtol=2.0 ** -(PSF_BITS + 1), atol=0)
        assert abs(hdus["PSF"].data.sum() - 1) < 1e-3


def test_cutouts_are_small_and_byte_identical_for_the_same_inputs():
    first, again = _cut(_masked()), _cut(_masked())
    assert first == again
    for triplet in first:
        for data in triplet:
            assert data[:2] == b"\x1f\x8b" and data[4:8] == b"\0\0\0\0"  # gzip, no timestamp
    # 31 x 31: 2.5 kB a cutout of noise, 3.7 kB with the star (4.2 kB with the PSF), against 29 kB (35 kB)
    # as plain FITS (2880-byte blocks, float and int32 planes)
    assert max(len(d) for d in first[0]) < 5_000 and max(len(d) for d in first[1]) < 3_500
    lossless = _cut(_masked(), flux_quantization=None)
    assert len(lossless[0][0]) > len(first[0][0])


def test_cards_are_written_as_astropy_writes_them():
    from astropy.io import fits

    from pipeline.cutouts import _card

    for value in (1041.5, -3.0, 0.1, 1.87654e-7, 2.5e12, 12345678.901234567, 1e-300, 31, -(2**31), 0.0):
        assert _card("CRPIX1", value, "Pixel coordinate of reference point") == \
            fits.Card("CRPIX1", value, "Pixel coordinate of reference point").image.encode("ascii"), value
    assert _card("BZERO", 1.5, "") == fits.Card("BZERO", 1.5).image.encode("ascii")
