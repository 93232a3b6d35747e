"""Alert cutouts: science, template and difference stamps as FITS bytes with flux, variance, mask and WCS."""

from __future__ import annotations

import io

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from pipeline.measure import cut_stamps
from pipeline.types import MaskedImage

MIN_CUTOUT_SIZE = 31


def _stamp_header(parent: fits.Header, x0: int, y0: int) -> fits.Header:
    """The parent CCD's WCS header moved to a stamp whose first pixel is parent pixel (x0, y0), 0-based."""
    header = parent.copy()
    header["CRPIX1"] = parent["CRPIX1"] - x0
    header["CRPIX2"] = parent["CRPIX2"] - y0
    header["CRVAL1A"], header["CRVAL2A"] = float(x0), float(y0)
    return header


def parent_header(wcs: WCS) -> fits.Header:
    """WCS header of the CCD (TAN-SIP) plus the LTV-like alternate WCS 'A' giving parent pixels."""
    header = wcs.to_header(relax=True)
    header["BUNIT"] = "nJy"
    header["WCSNAMEA"] = "PARENT"
    header["CTYPE1A"], header["CTYPE2A"] = "LINEAR", "LINEAR"
    header["CRPIX1A"], header["CRPIX2A"] = 1.0, 1.0
    header["CRVAL1A"], header["CRVAL2A"] = 0.0, 0.0
    return header


def cutout_fits(masked: MaskedImage, header: fits.Header, x: float, y: float, size: int,
                psf_stamp: np.ndarray | None) -> bytes:
    """One cutout as FITS bytes: IMAGE, MASK, VARIANCE (and PSF) HDUs, the stamp's WCS in each header.

    Pixels outside the CCD are NaN in IMAGE and VARIANCE.
    """
    half = size // 2
    xs, ys = np.array([x]), np.array([y])
    image, _ = cut_stamps(masked.image, xs, ys, half, fill=np.nan)
    variance, _ = cut_stamps(masked.variance, xs, ys, half, fill=np.nan)
    mask, _ = cut_stamps(masked.mask, xs, ys, half, fill=0)
    stamp_header = _stamp_header(header, int(np.rint(x)) - half, int(np.rint(y)) - half)
    hdus = [fits.PrimaryHDU(),
            fits.ImageHDU(image[0].astype(np.float32), header=stamp_header, name="IMAGE"),
            fits.ImageHDU(mask[0].astype(np.int32), header=stamp_header, name="MASK"),
            fits.ImageHDU(variance[0].astype(np.float32), header=stamp_header, name="VARIANCE")]
    if psf_stamp is not None:
        hdus.append(fits.ImageHDU(psf_stamp.astype(np.float32), name="PSF"))
    buffer = io.BytesIO()
    fits.HDUList(hdus).writeto(buffer, output_verify="ignore")
    return buffer.getvalue()


def make_cutouts(science: MaskedImage, template: MaskedImage, difference: MaskedImage, wcs: WCS,
                 x: np.ndarray, y: np.ndarray, bbox_size: np.ndarray, psf_stamps: np.ndarray | None = None
                 ) -> list[tuple[bytes, bytes, bytes]]:
    """Science, template and difference cutouts around each DiaSource.

    Parameters
    ----------
    x, y : numpy.ndarray
        Positions, 0-based pixels.
    bbox_size : numpy.ndarray
        Footprint sizes; cutouts are at least ``MIN_CUTOUT_SIZE`` and at least twice the footprint.
    psf_stamps : numpy.ndarray, optional
        (n, s, s) PSF images stored with the difference cutout.

    Returns
    -------
    list of tuple
        (science, template, difference) FITS bytes per source.
    """
    header = parent_header(wcs)
    out = []
    for k in range(len(x)):
        size = int(max(MIN_CUTOUT_SIZE, 2 * int(bbox_size[k]) + 1))
        size += 1 - size % 2
        psf = psf_stamps[k] if psf_stamps is not None else None
        out.append((cutout_fits(science, header, x[k], y[k], size, None),
                    cutout_fits(template, header, x[k], y[k], size, None),
                    cutout_fits(difference, header, x[k], y[k], size, psf)))
    return out
