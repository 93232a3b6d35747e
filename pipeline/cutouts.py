"""Alert cutouts: science, template and difference stamps as FITS bytes with flux, variance, mask and WCS."""

from __future__ import annotations

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from pipeline.measure import cut_stamps
from pipeline.subtract import SubtractionResult
from pipeline.types import CalibratedExposure, MaskedImage

MIN_CUTOUT_SIZE = 31


def parent_header(wcs: WCS) -> fits.Header:
    """WCS header of the CCD (TAN-SIP) plus the LTV-like alternate WCS 'A' giving parent pixels."""
    header = wcs.to_header(relax=True)
    header["BUNIT"] = "nJy"
    header["WCSNAMEA"] = "PARENT"
    header["CTYPE1A"], header["CTYPE2A"] = "LINEAR", "LINEAR"
    header["CRPIX1A"], header["CRPIX2A"] = 1.0, 1.0
    header["CRVAL1A"], header["CRVAL2A"] = 0.0, 0.0
    return header


_BLOCK = 2880
_STAMP_KEYS = ("CRPIX1", "CRPIX2", "CRVAL1A", "CRVAL2A")
_PRIMARY = fits.PrimaryHDU().header.tostring().encode("ascii")


def _pad(raw: bytes, fill: bytes) -> bytes:
    return raw + fill * (-len(raw) % _BLOCK)


def _data_bytes(array: np.ndarray) -> bytes:
    return _pad(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder(">")).tobytes(), b"\0")


class _HeaderCache:
    """FITS header bytes of the cutout extensions built once per (type, name) with astropy; per stamp only
    the cards that change with it (NAXISn and ``_STAMP_KEYS``) are re-formatted and spliced in."""

    def __init__(self, parent: fits.Header):
        self.parent = parent
        self.comments = {k: parent.comments[k] if k in parent else "" for k in _STAMP_KEYS}
        self.templates: dict[tuple, tuple[list[bytes], dict[str, int], dict]] = {}
        self.sized: dict[tuple[str, int], bytes] = {}

    def _template(self, dtype: np.dtype, name: str, with_wcs: bool) -> tuple[list[bytes], dict[str, int], dict]:
        key = (dtype.str, name, with_wcs)
        if key not in self.templates:
            hdu = fits.ImageHDU(np.zeros((1, 1), dtype), header=self.parent.copy() if with_wcs else None, name=name)
            text = hdu.header.tostring(padding=False).encode("ascii")
            cards = [text[i:i + 80] for i in range(0, len(text), 80)]
            where = {c[:8].decode().strip(): i for i, c in enumerate(cards)}
            keys = ("NAXIS1", "NAXIS2") + (_STAMP_KEYS if with_wcs else ())
            self.templates[key] = (cards, {k: where[k] for k in keys if k in where},
                                   {k: hdu.header.comments[k] for k in ("NAXIS1", "NAXIS2")})
        return self.templates[key]

    def stamp_cards(self, x0: int, y0: int) -> dict[str, bytes]:
        """The cards of the parent's WCS moved to a stamp whose first pixel is parent pixel (x0, y0), 0-based:
        CRPIX shifted by (x0, y0), and the alternate WCS 'A' giving parent pixels starting at (x0, y0)."""
        values = {"CRPIX1": self.parent["CRPIX1"] - x0, "CRPIX2": self.parent["CRPIX2"] - y0,
                  "CRVAL1A": float(x0), "CRVAL2A": float(y0)}
        return {k: fits.Card(k, v, self.comments[k]).image.encode("ascii") for k, v in values.items()}

    def hdu(self, data: np.ndarray, name: str, cards: dict[str, bytes] | None) -> bytes:
        template, where, naxis_comments = self._template(data.dtype, name, cards is not None)
        cards = dict(cards or {})
        for axis, n in (("NAXIS1", data.shape[1]), ("NAXIS2", data.shape[0])):
            sized = (axis, n)
            if sized not in self.sized:
                self.sized[sized] = fits.Card(axis, n, naxis_comments[axis]).image.encode("ascii")
            cards[axis] = self.sized[sized]
        template = list(template)
        for k, i in where.items():
            template[i] = cards[k]
        return _pad(b"".join(template), b" ") + _data_bytes(data)


def _cutout_bytes(masked: MaskedImage, headers: _HeaderCache, x: float, y: float, *, size: int,
                  cards: dict[str, bytes], psf_stamp: np.ndarray | None = None) -> bytes:
    """One cutout as FITS bytes: IMAGE, MASK, VARIANCE (and PSF) HDUs, the stamp's WCS (``cards``, from
    :meth:`_HeaderCache.stamp_cards`) in each header.

    Pixels outside the CCD are NaN in IMAGE and VARIANCE. The bytes are those astropy's
    ``HDUList.writeto`` writes, assembled directly from header strings and big-endian pixel bytes.
    """
    half = size // 2
    xs, ys = np.array([x]), np.array([y])
    image, _ = cut_stamps(masked.image, xs, ys, half, fill=np.nan)
    variance, _ = cut_stamps(masked.variance, xs, ys, half, fill=np.nan)
    mask, _ = cut_stamps(masked.mask, xs, ys, half, fill=0)
    parts = [_PRIMARY,
             headers.hdu(image[0].astype(np.float32), "IMAGE", cards),
             headers.hdu(mask[0].astype(np.int32), "MASK", cards),
             headers.hdu(variance[0].astype(np.float32), "VARIANCE", cards)]
    if psf_stamp is not None:
        parts.append(headers.hdu(np.asarray(psf_stamp, np.float32), "PSF", None))
    return b"".join(parts)


def make_cutouts(dia_sources: Table, subtraction: SubtractionResult, exposure: CalibratedExposure
                 ) -> dict[int, tuple[bytes, bytes, bytes]]:
    """The cutouts stage: science, template and difference cutouts of each DiaSource, the difference image's
    PSF at the source's pixel stored with the difference cutout.

    Parameters
    ----------
    dia_sources : Table
        ``diaSourceId``, ``x``, ``y`` and ``bboxSize`` (see :func:`pipeline.detect.detect_dia_sources`).
    subtraction : SubtractionResult
        The difference image, its PSF and the matched template.
    exposure : CalibratedExposure
        The science image and its WCS.

    Returns
    -------
    dict
        diaSourceId -> (science, template, difference) FITS bytes.
    """
    x, y = np.asarray(dia_sources["x"], float), np.asarray(dia_sources["y"], float)
    psf_half = int(np.clip(np.ceil(3 * subtraction.psf_sigma_pix), 5, 15))
    psf_stamps = subtraction.psf.stamps(np.rint(x), np.rint(y), psf_half) if len(x) else None
    made = cutouts_at(exposure.masked, subtraction.matched_template, subtraction.difference, x, y, wcs=exposure.wcs,
                      bbox_size=np.asarray(dia_sources["bboxSize"]), psf_stamps=psf_stamps)
    return dict(zip(np.asarray(dia_sources["diaSourceId"]).tolist(), made))


def cutouts_at(science: MaskedImage, template: MaskedImage, difference: MaskedImage, x: np.ndarray, y: np.ndarray,
               *, wcs: WCS, bbox_size: np.ndarray, psf_stamps: np.ndarray | None = None
               ) -> list[tuple[bytes, bytes, bytes]]:
    """Science, template and difference cutouts around positions.

    Parameters
    ----------
    science, template, difference : MaskedImage
        The three images on the same grid.
    x, y : numpy.ndarray
        Positions, 0-based pixels.
    wcs : WCS
        Their WCS.
    bbox_size : numpy.ndarray
        Footprint sizes; cutouts are at least ``MIN_CUTOUT_SIZE`` and at least twice the footprint.
    psf_stamps : numpy.ndarray, optional
        (n, s, s) PSF images stored with the difference cutout.

    Returns
    -------
    list of tuple
        (science, template, difference) FITS bytes per source.
    """
    headers = _HeaderCache(parent_header(wcs))
    out = []
    for k in range(len(x)):
        size = int(max(MIN_CUTOUT_SIZE, 2 * int(bbox_size[k]) + 1))
        size += 1 - size % 2
        psf = psf_stamps[k] if psf_stamps is not None else None
        half = size // 2
        cards = headers.stamp_cards(int(np.rint(x[k])) - half, int(np.rint(y[k])) - half)
        out.append((_cutout_bytes(science, headers, x[k], y[k], size=size, cards=cards),
                    _cutout_bytes(template, headers, x[k], y[k], size=size, cards=cards),
                    _cutout_bytes(difference, headers, x[k], y[k], size=size, cards=cards, psf_stamp=psf)))
    return out
