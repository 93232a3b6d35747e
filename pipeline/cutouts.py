"""Alert cutouts: science, template and difference stamps as gzipped FITS bytes with flux, variance, mask, WCS
(and the PSF with the difference stamp).

Each cutout is a FITS file (empty primary HDU, then IMAGE, MASK, VARIANCE and, for the difference, PSF image
extensions) compressed as a whole with gzip, as ZTF's alert cutouts are: a broker reads it with
``fits.open(io.BytesIO(gzip.decompress(data)))`` (or :func:`streamer.alerts.cutouts.open_cutout`). What makes it small:

* stamps sized to the source: ``bboxSize`` (already about twice the footprint's width), at least
  :data:`MIN_CUTOUT_SIZE` (Rubin: at least 30 x 30);
* IMAGE quantized as the DECam Community Pipeline quantizes its images, but finer: integers of a step of
  ``1 / flux_quantization`` of the stamp's noise (the square root of its median variance), stored as
  ``BITPIX = 32`` with ``BSCALE``/``BZERO`` (``BLANK`` for off-image pixels), which FITS readers turn back
  into floats; the error is at most half a step (``flux_quantization=None``: lossless float32);
* MASK as int16 (every :class:`~pipeline.masks.MaskBit` fits; ``MP_<NAME>`` cards give each bit's index, as
  Rubin's afw masks do), lossless; off-image pixels are ``NO_DATA``;
* VARIANCE and PSF as float32 rounded to :data:`VARIANCE_BITS` and :data:`PSF_BITS` significant bits
  (relative error at most ``2**-(bits + 1)``), which gzip then packs;
* gzip with a zero timestamp: the same inputs always give the same bytes (replayed alerts are identical).
"""

from __future__ import annotations

import gzip

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from pipeline.masks import MaskBit
from pipeline.measure import cut_stamps
from pipeline.subtract import SubtractionResult
from pipeline.types import CalibratedExposure, MaskedImage

MIN_CUTOUT_SIZE = 31
"""Smallest stamp side, pixels (odd: the source's pixel is the centre)."""
FLUX_QUANTIZATION = 16.0
"""Default IMAGE quantization: steps per noise sigma (the Community Pipeline's fpack uses 4)."""
VARIANCE_BITS = 10
"""Significant bits kept in VARIANCE (relative error at most 2**-11, about 0.05%)."""
PSF_BITS = 12
"""Significant bits kept in the PSF stamp (relative error at most 2**-13)."""
GZIP_LEVEL = 1
"""zlib level: 6 and 9 save a few percent on these stamps for 2 to 3 times the time."""
_BLANK = -(2**31)


def parent_header(wcs: WCS) -> fits.Header:
    """WCS header of the CCD (TAN-SIP) plus the LTV-like alternate WCS 'A' giving parent pixels."""
    header = wcs.to_header(relax=True)
    header["BUNIT"] = "nJy"
    header["WCSNAMEA"] = "PARENT"
    header["CTYPE1A"], header["CTYPE2A"] = "LINEAR", "LINEAR"
    header["CRPIX1A"], header["CRPIX2A"] = 1.0, 1.0
    header["CRVAL1A"], header["CRVAL2A"] = 0.0, 0.0
    return header


_FITS_BLOCK = 2880
_STAMP_KEYS = ("CRPIX1", "CRPIX2", "CRVAL1A", "CRVAL2A")
_SCALE_KEYS = ("BSCALE", "BZERO")
_PRIMARY = fits.PrimaryHDU().header.tostring().encode("ascii")


def _pad(raw: bytes, fill: bytes) -> bytes:
    return raw + fill * (-len(raw) % _FITS_BLOCK)


def _data_bytes(array: np.ndarray) -> bytes:
    return _pad(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder(">")).tobytes(), b"\0")


def _value_text(value: float | int) -> str:
    """A number as astropy writes it in a fixed-format card: ``str``, at most 20 characters."""
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    text = str(float(value)).replace("e", "E")
    if len(text) > 20:
        at = text.find("E")
        text = text[:20] if at < 0 else text[:20 - (len(text) - at)] + text[at:]
    return text


def _card(key: str, value: float | int, comment: str) -> bytes:
    """The 80 bytes of a numeric card, as ``fits.Card(key, value, comment).image`` (checked by the tests), at a
    tenth of its cost: a cutout has a dozen cards that change with the stamp."""
    text = f"{key:<8}= {_value_text(value):>20}" + (f" / {comment}" if comment else "")
    return f"{text:<80}"[:80].encode("ascii")


class _HeaderCache:
    """FITS header bytes of the cutout extensions built once per (type, name) with astropy; per stamp only
    the cards that change with it (NAXISn, ``_STAMP_KEYS`` and, for a quantized IMAGE, ``_SCALE_KEYS``) are
    re-formatted and spliced in."""

    def __init__(self, parent: fits.Header):
        self.parent = parent
        self.comments = {k: parent.comments[k] if k in parent else "" for k in _STAMP_KEYS}
        self.templates: dict[tuple, tuple[list[bytes], dict[str, int], dict]] = {}
        self.sized: dict[tuple[str, int], bytes] = {}

    def _template(self, dtype: np.dtype, name: str, with_wcs: bool) -> tuple[list[bytes], dict[str, int], dict]:
        key = (dtype.str, name, with_wcs)
        if key not in self.templates:
            hdu = fits.ImageHDU(np.zeros((1, 1), dtype), header=self.parent.copy() if with_wcs else None, name=name)
            header = hdu.header
            keys = ("NAXIS1", "NAXIS2") + (_STAMP_KEYS if with_wcs else ())
            if name == "IMAGE" and dtype.kind == "i":
                header.set("BSCALE", 1.0, "physical = BZERO + BSCALE * stored", after="GCOUNT")
                header.set("BZERO", 0.0, "quantized: BSCALE is a fraction of the noise", after="BSCALE")
                header.set("BLANK", _BLANK, "off-image pixels (NaN)", after="BZERO")
                keys += _SCALE_KEYS
            if name == "MASK":
                for bit in MaskBit:
                    header[f"HIERARCH MP_{bit.name}"] = (bit.bit_length() - 1, "mask bit index")
            text = header.tostring(padding=False).encode("ascii")
            cards = [text[i:i + 80] for i in range(0, len(text), 80)]
            where = {c[:8].decode().strip(): i for i, c in enumerate(cards)}
            self.templates[key] = (cards, {k: where[k] for k in keys if k in where},
                                   {k: header.comments[k] for k in keys})
        return self.templates[key]

    def stamp_cards(self, x0: int, y0: int) -> dict[str, bytes]:
        """The cards of the parent's WCS moved to a stamp whose first pixel is parent pixel (x0, y0), 0-based:
        CRPIX shifted by (x0, y0), and the alternate WCS 'A' giving parent pixels starting at (x0, y0)."""
        values = {"CRPIX1": self.parent["CRPIX1"] - x0, "CRPIX2": self.parent["CRPIX2"] - y0,
                  "CRVAL1A": float(x0), "CRVAL2A": float(y0)}
        return {k: _card(k, v, self.comments[k]) for k, v in values.items()}

    def hdu(self, data: np.ndarray, name: str, cards: dict[str, bytes] | None,
            scale: tuple[float, float] | None = None) -> bytes:
        """One extension's bytes: header (the template with ``cards``, NAXISn and, if given, the
        ``(BSCALE, BZERO)`` of ``scale``) and big-endian pixels."""
        template, where, comments = self._template(data.dtype, name, cards is not None)
        cards = dict(cards or {})
        for axis, n in (("NAXIS1", data.shape[1]), ("NAXIS2", data.shape[0])):
            sized = (axis, n)
            if sized not in self.sized:
                self.sized[sized] = _card(axis, n, comments[axis])
            cards[axis] = self.sized[sized]
        if scale is not None:
            cards.update({k: _card(k, v, comments[k]) for k, v in zip(_SCALE_KEYS, scale)})
        template = list(template)
        for k, i in where.items():
            template[i] = cards[k]
        return _pad(b"".join(template), b" ") + _data_bytes(data)


def round_significant_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """float32 copies of ``values`` rounded to ``bits`` significant bits (to nearest; NaN and inf kept).

    The relative error is at most ``2**-(bits + 1)``; the zeroed low bits of the mantissa are what a
    general compressor (gzip) then packs.
    """
    as_float = np.ascontiguousarray(values, np.float32)
    drop = 23 - int(bits)
    if drop <= 0:
        return as_float.copy()
    raw = as_float.view(np.uint32)
    rounded = (raw + np.uint32(1 << (drop - 1))) & np.uint32((0xFFFFFFFF << drop) & 0xFFFFFFFF)
    return np.where(np.isfinite(as_float), rounded, raw).view(np.float32)


def _six_digits(values: np.ndarray) -> np.ndarray:
    """Values rounded to 6 significant digits: exactly what their FITS cards say."""
    return np.array([float(f"{v:.6g}") for v in values.tolist()])


def _row_medians(rows: np.ndarray) -> np.ndarray:
    """Median of the finite values of each row (NaN for a row with none): ``np.median`` of all rows at once,
    ``np.nanmedian`` only for the few rows with off-image pixels (it loops over rows in Python)."""
    medians = np.median(rows, axis=1)
    partial = np.flatnonzero(~np.isfinite(medians))
    for k in partial.tolist():
        values = rows[k][np.isfinite(rows[k])]
        medians[k] = np.median(values) if len(values) else np.nan
    return medians


def quantize_flux(images: np.ndarray, variances: np.ndarray, steps_per_sigma: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer images and their ``BSCALE``/``BZERO``, one pair per stamp of (n, s, s) stacks.

    The step (``BSCALE``) is the stamp's noise (square root of its median finite variance; 1 if none) over
    ``steps_per_sigma``, made coarser only where the stamp's range would not fit in int32; ``BZERO`` is the
    stamp's median. NaN pixels become ``BLANK``. ``BZERO + BSCALE * q`` is within half a step of the input.

    Returns
    -------
    stored : numpy.ndarray
        (n, s, s) int32.
    bscale, bzero : numpy.ndarray
        (n,) float64, as written in the cards.
    """
    n = len(images)
    flat = images.reshape(n, -1).astype(np.float64)
    finite = np.isfinite(flat)
    sigma = np.sqrt(_row_medians(variances.reshape(n, -1)))
    zero = np.nan_to_num(_row_medians(flat))
    span = np.max(np.abs(np.where(finite, flat - zero[:, None], 0.0)), axis=1, initial=0.0)
    sigma = np.where(np.isfinite(sigma) & (sigma > 0), sigma, 1.0)
    bzero = _six_digits(zero)
    bscale = _six_digits(np.maximum(sigma / steps_per_sigma, 1.01 * (span + np.abs(zero - bzero)) / 2**30))
    stored = np.rint((flat - bzero[:, None]) / bscale[:, None])
    stored = np.where(finite, stored, _BLANK).astype(np.int32)
    return stored.reshape(images.shape), bscale, bzero


def _planes(masked: MaskedImage, x: np.ndarray, y: np.ndarray, half: int, flux_quantization: float | None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """(n, s, s) IMAGE (int32 or float32), MASK (int16), VARIANCE (rounded float32) stacks, and the
    (n, 2) (BSCALE, BZERO) of a quantized IMAGE (None for float32)."""
    image, _ = cut_stamps(masked.image, x, y, half, fill=np.nan)
    variance, _ = cut_stamps(masked.variance, x, y, half, fill=np.nan)
    mask, _ = cut_stamps(masked.mask, x, y, half, fill=int(MaskBit.NO_DATA))
    scales = None
    if flux_quantization is None:
        image = image.astype(np.float32)
    else:
        image, bscale, bzero = quantize_flux(image, variance, flux_quantization)
        scales = np.stack([bscale, bzero], axis=1)
    return image, mask.astype(np.int16), round_significant_bits(variance, VARIANCE_BITS), scales


def _cutout_bytes(headers: _HeaderCache, planes: tuple, k: int, cards: dict[str, bytes],
                  psf_stamp: np.ndarray | None = None) -> bytes:
    """Stamp ``k`` of :func:`_planes` stacks as gzipped FITS: IMAGE, MASK, VARIANCE (and PSF) HDUs, the stamp's
    WCS (``cards``, from :meth:`_HeaderCache.stamp_cards`) in each header. The FITS bytes are those astropy's
    ``HDUList.writeto`` writes, assembled directly from header strings and big-endian pixel bytes."""
    image, mask, variance, scales = planes
    scale = None if scales is None else tuple(scales[k].tolist())
    parts = [_PRIMARY,
             headers.hdu(image[k], "IMAGE", cards, scale),
             headers.hdu(mask[k], "MASK", cards),
             headers.hdu(variance[k], "VARIANCE", cards)]
    if psf_stamp is not None:
        parts.append(headers.hdu(round_significant_bits(psf_stamp, PSF_BITS), "PSF", None))
    return gzip.compress(b"".join(parts), compresslevel=GZIP_LEVEL, mtime=0)


def cutout_sizes(bbox_size: np.ndarray) -> np.ndarray:
    """Stamp sides for footprint sizes: ``bboxSize`` made odd, at least :data:`MIN_CUTOUT_SIZE`."""
    size = np.maximum(MIN_CUTOUT_SIZE, np.asarray(bbox_size, int))
    return size + 1 - size % 2


def make_cutouts(dia_sources: Table, subtraction: SubtractionResult, exposure: CalibratedExposure, *,
                 flux_quantization: float | None = FLUX_QUANTIZATION) -> dict[int, tuple[bytes, bytes, bytes]]:
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
    flux_quantization : float or None, optional
        IMAGE steps per noise sigma (see the module's notes); None: lossless float32.

    Returns
    -------
    dict
        diaSourceId -> (science, template, difference) gzipped FITS bytes.
    """
    x, y = np.asarray(dia_sources["x"], float), np.asarray(dia_sources["y"], float)
    psf_half = int(np.clip(np.ceil(3 * subtraction.psf_sigma_pix), 5, 15))
    psf_stamps = subtraction.psf.stamps(np.rint(x), np.rint(y), psf_half) if len(x) else None
    made = cutouts_at(exposure.masked, subtraction.matched_template, subtraction.difference, x, y, wcs=exposure.wcs,
                      bbox_size=np.asarray(dia_sources["bboxSize"]), psf_stamps=psf_stamps,
                      flux_quantization=flux_quantization)
    return dict(zip(np.asarray(dia_sources["diaSourceId"]).tolist(), made))


def cutouts_at(science: MaskedImage, template: MaskedImage, difference: MaskedImage, x: np.ndarray, y: np.ndarray,
               *, wcs: WCS, bbox_size: np.ndarray, psf_stamps: np.ndarray | None = None,
               flux_quantization: float | None = FLUX_QUANTIZATION) -> list[tuple[bytes, bytes, bytes]]:
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
        Footprint sizes (:func:`cutout_sizes` gives the stamps').
    psf_stamps : numpy.ndarray, optional
        (n, s, s) PSF images stored with the difference cutout.
    flux_quantization : float or None, optional
        IMAGE steps per noise sigma; None: lossless float32.

    Returns
    -------
    list of tuple
        (science, template, difference) gzipped FITS bytes per source, in input order.
    """
    headers = _HeaderCache(parent_header(wcs))
    x, y = np.asarray(x, float), np.asarray(y, float)
    sizes = cutout_sizes(bbox_size) if len(x) else np.zeros(0, int)
    out: list[tuple[bytes, bytes, bytes]] = [(b"", b"", b"")] * len(x)
    for size in np.unique(sizes).tolist():  # stamps of one size are cut together
        which = np.flatnonzero(sizes == size)
        half = size // 2
        sx, sy = x[which], y[which]
        planes = [_planes(m, sx, sy, half, flux_quantization) for m in (science, template, difference)]
        x0, y0 = np.rint(sx).astype(int) - half, np.rint(sy).astype(int) - half
        for j, k in enumerate(which.tolist()):
            cards = headers.stamp_cards(int(x0[j]), int(y0[j]))
            psf = psf_stamps[k] if psf_stamps is not None else None
            out[k] = (_cutout_bytes(headers, planes[0], j, cards),
                      _cutout_bytes(headers, planes[1], j, cards),
                      _cutout_bytes(headers, planes[2], j, cards, psf))
    return out
