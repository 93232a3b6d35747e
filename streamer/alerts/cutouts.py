"""Reading an alert's cutouts back: gzipped FITS (:mod:`pipeline.cutouts`), or plain FITS as older alerts carry."""

from __future__ import annotations

import gzip
import io

from astropy.io import fits

__all__ = ["open_cutout"]

_GZIP_MAGIC = b"\x1f\x8b"


def open_cutout(data: bytes) -> fits.HDUList:
    """Open an alert cutout with astropy.

    Parameters
    ----------
    data : bytes
        ``cutoutScience``, ``cutoutTemplate`` or ``cutoutDifference`` of an alert.

    Returns
    -------
    astropy.io.fits.HDUList
        Extensions IMAGE, MASK, VARIANCE (and PSF with the difference); IMAGE is scaled back to floats when
        read (read its ``BSCALE`` first: astropy drops the card once it has scaled the data).
    """
    raw = gzip.decompress(data) if data[:2] == _GZIP_MAGIC else data
    return fits.open(io.BytesIO(raw))
