"""Reading DECam Community Pipeline (CP) InstCal products: image ``ooi``, weight ``oow``, mask ``ood``.

One file per product, each with a primary header and one image extension per CCD (found by ``CCDNUM``,
falling back on ``EXTNAME``/``DETPOS``), plain or fpack. This module reads the planes; the product's model
and the mapping of its planes to a masked image is :mod:`pipeline.decam.instcal`'s. Every failure raises
:class:`pipeline.errors.InputError` with ``stage="read_instcal"``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from pipeline.decam.instcal import STAGE, InstCalCcd, instcal_ccd_from_planes
from pipeline.errors import InputError


def _find_hdu(hdul: fits.HDUList, ccd, path) -> fits.hdu.base.ExtensionHDU:
    """The extension of ``ccd`` (an int CCDNUM or a DETPOS/EXTNAME string); the only one if ``ccd`` is None."""
    exts = [h for h in hdul[1:] if getattr(h, "is_image", True) and h.header.get("NAXIS", 0) == 2]
    if ccd is None:
        if len(exts) != 1:
            raise InputError(f"{path}: {len(exts)} image extensions; name the CCD", stage=STAGE)
        return exts[0]
    for h in exts:
        if isinstance(ccd, (int, np.integer)):
            v = h.header.get("CCDNUM")
            if v is not None and int(v) == int(ccd):
                return h
        elif str(h.header.get("DETPOS", h.header.get("EXTNAME", ""))).strip() == str(ccd).strip():
            return h
    raise InputError(f"{path}: no extension for CCD {ccd!r}", stage=STAGE)


def _read_plane(path, ccd, dtype) -> tuple[np.ndarray, fits.Header, fits.Header]:
    """Pixels, extension header and primary header of one CCD of one CP product file."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"InstCal file {p} does not exist", stage=STAGE)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AstropyUserWarning)
        try:
            with fits.open(p, memmap=False, mode="readonly") as hdul:
                hdu = _find_hdu(hdul, ccd, p)
                data = hdu.data
                if data is None:
                    raise InputError(f"{p}: CCD {ccd!r} has no data", stage=STAGE)
                return np.array(data, dtype=dtype), hdu.header.copy(), hdul[0].header.copy()
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - astropy raises many types on garbage
            raise InputError(f"{p}: not a readable FITS file: {exc}", stage=STAGE) from exc


def is_instcal_image(path) -> bool:
    """True for a CP InstCal image file name (``c4d_<date>_<time>_ooi_<band>_<version>.fits[.fz]``)."""
    return "_ooi_" in Path(path).name


def instcal_paths(image_path) -> tuple[Path, Path, Path]:
    """The ``ooi``, ``oow`` and ``ood`` files of a CP exposure from the path of any one of them."""
    p = Path(image_path)
    name = p.name
    for tag in ("_ooi_", "_oow_", "_ood_"):
        if tag in name:
            return tuple(p.with_name(name.replace(tag, t)) for t in ("_ooi_", "_oow_", "_ood_"))  # type: ignore[return-value]
    raise InputError(f"{p.name} is not a CP InstCal name (no _ooi_/_oow_/_ood_)", stage=STAGE)


def read_instcal_ccd(image_path, ccd=None, *, weight_path=None, mask_path=None) -> InstCalCcd:
    """Read one CCD of a CP InstCal exposure (image, weight -> variance, DQ mask -> MaskBit, TPV WCS).

    Parameters
    ----------
    image_path : str or Path
        The ``ooi`` file (plain FITS or fpack).
    ccd : int or str, optional
        CCDNUM (int) or DETPOS (str, e.g. ``'S4'``); may be omitted when the file holds one CCD.
    weight_path, mask_path : str or Path, optional
        The ``oow`` and ``ood`` files; by default found by name next to ``image_path``.

    Returns
    -------
    InstCalCcd

    Raises
    ------
    InputError
        Missing, truncated or corrupt file; CCD absent; planes of different shapes; image all NaN; not
        DECam.
    """
    ooi = Path(image_path)
    if weight_path is None or mask_path is None:
        _, default_w, default_d = instcal_paths(ooi)
    oow = Path(weight_path) if weight_path is not None else default_w
    ood = Path(mask_path) if mask_path is not None else default_d
    image, header, primary = _read_plane(ooi, ccd, np.float32)
    weight, _, _ = _read_plane(oow, ccd, np.float32)
    dq, _, _ = _read_plane(ood, ccd, np.int32)
    return instcal_ccd_from_planes(image, weight, dq, header, primary, name=ooi.name)


__all__ = ["instcal_paths", "is_instcal_image", "read_instcal_ccd"]
