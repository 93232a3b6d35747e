"""FITS files of a CCD's images, as DS9 and astropy open them, read back exactly.

Each image file holds IMAGE, MASK and VARIANCE extensions (the WCS in their headers, ``MP_<NAME>`` cards naming
the mask bits, as Rubin's afw writes them) and a one-row FACTS table holding every number the pipeline reads
back at full precision (header cards are limited to 20 characters): the fitted WCS's CRPIX, CRVAL, CD and SIP
arrays, the PSF's shape and flux scale, the zero point and the stage's figures. A PSF extension holds the PSF
model's images ((terms, n, n) float64, the first being the PSF at the CCD's centre).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS, Sip

from pipeline.masks import MaskBit
from pipeline.psf import GaussianPsf, PixelPsf, Psf
from pipeline.subtract import SubtractionResult
from pipeline.types import CalibratedExposure, ExposureInfo, MaskedImage

PLANES = ("IMAGE", "MASK", "VARIANCE")


def _native(data: np.ndarray) -> np.ndarray:
    """A FITS array in native byte order, owning its memory."""
    return np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("="))


def _plane_hdus(masked: MaskedImage, header: fits.Header, prefix: str = "") -> list[fits.ImageHDU]:
    mask_header = header.copy()
    for bit in MaskBit:
        mask_header[f"HIERARCH MP_{bit.name}"] = (bit.bit_length() - 1, "mask bit index")
    return [fits.ImageHDU(masked.image, header, name=f"{prefix}IMAGE"),
            fits.ImageHDU(masked.mask, mask_header, name=f"{prefix}MASK"),
            fits.ImageHDU(masked.variance, header, name=f"{prefix}VARIANCE")]


def _read_planes(hdus: fits.HDUList, prefix: str = "") -> MaskedImage:
    return MaskedImage(*(_native(hdus[f"{prefix}{name}"].data) for name in PLANES))


def _wcs_facts(wcs: WCS) -> dict[str, object]:
    facts: dict[str, object] = {"WCS_CRPIX": wcs.wcs.crpix, "WCS_CRVAL": wcs.wcs.crval, "WCS_CD": wcs.wcs.cd,
                                "WCS_CTYPE1": wcs.wcs.ctype[0], "WCS_CTYPE2": wcs.wcs.ctype[1]}
    if wcs.sip is not None:
        facts.update({"WCS_SIP_A": wcs.sip.a, "WCS_SIP_B": wcs.sip.b})
    return facts


def _wcs_from_facts(facts: dict) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.crpix = facts["WCS_CRPIX"]
    wcs.wcs.crval = facts["WCS_CRVAL"]
    wcs.wcs.cd = facts["WCS_CD"]
    wcs.wcs.ctype = [str(facts["WCS_CTYPE1"]), str(facts["WCS_CTYPE2"])]
    if "WCS_SIP_A" in facts:
        wcs.sip = Sip(facts["WCS_SIP_A"], facts["WCS_SIP_B"], None, None, wcs.wcs.crpix)
    return wcs


def _psf_hdu_and_facts(psf: Psf | None, shape: tuple[int, int], prefix: str = "") -> tuple[fits.ImageHDU, dict]:
    if isinstance(psf, PixelPsf):
        header = fits.Header({"PSFTYPE": "PIXEL", "FLUXSCAL": psf.flux_scale})
        return fits.ImageHDU(np.asarray(psf.images, np.float64), header, name=f"{prefix}PSF"), \
            {"PSF_TYPE": "PIXEL", "PSF_SHAPE": np.asarray(psf.shape), "PSF_FLUX_SCALE": psf.flux_scale}
    if isinstance(psf, GaussianPsf):
        image = psf.kernel((shape[1] - 1) / 2, (shape[0] - 1) / 2, 15)
        return fits.ImageHDU(image[None], fits.Header({"PSFTYPE": "GAUSSIAN"}), name=f"{prefix}PSF"), \
            {"PSF_TYPE": "GAUSSIAN", "PSF_COEFFS": np.asarray(psf.coeffs, float)}
    return fits.ImageHDU(None, fits.Header({"PSFTYPE": "NONE"}), name=f"{prefix}PSF"), {"PSF_TYPE": "NONE"}


def _psf_from(hdus: fits.HDUList, facts: dict) -> Psf | None:
    kind = str(facts["PSF_TYPE"])
    if kind == "PIXEL":
        return PixelPsf(images=_native(hdus["PSF"].data), shape=tuple(int(v) for v in facts["PSF_SHAPE"]),
                        flux_scale=float(facts["PSF_FLUX_SCALE"]))
    if kind == "GAUSSIAN":
        return GaussianPsf(tuple(float(v) for v in facts["PSF_COEFFS"]))
    return None


def _facts_hdu(facts: dict[str, object]) -> fits.BinTableHDU:
    hdu = fits.table_to_hdu(Table({k: [v] for k, v in facts.items()}))
    hdu.name = "FACTS"
    return hdu


def _read_facts(hdus: fits.HDUList) -> dict:
    row = Table.read(hdus["FACTS"])[0]
    return {name: (row[name].item() if np.ndim(row[name]) == 0 else np.asarray(row[name])) for name in row.colnames}


def _write(path: Path, primary: fits.Header, hdus: list) -> None:
    tmp = path.with_suffix(".tmp.fits")
    fits.HDUList([fits.PrimaryHDU(header=primary), *hdus]).writeto(tmp, overwrite=True)
    tmp.replace(path)


def _info_facts(info: ExposureInfo) -> dict[str, object]:
    return {f"INFO_{k.upper()}": v for k, v in vars(info).items()}


def _info_from(facts: dict) -> ExposureInfo:
    values = {k: facts[f"INFO_{k.upper()}"] for k in ExposureInfo.__dataclass_fields__}
    return ExposureInfo(**{k: (str(v) if k == "band" else int(v) if k == "expnum" else float(v))
                           for k, v in values.items()})


def write_masked_image(path: str | Path, masked: MaskedImage, *, header: fits.Header | None = None) -> None:
    """An image, mask and variance (the post-ISR image, in electrons) as IMAGE, MASK and VARIANCE."""
    _write(Path(path), header or fits.Header(), _plane_hdus(masked, fits.Header()))


def read_masked_image(path: str | Path) -> MaskedImage:
    """The planes written by :func:`write_masked_image` (native byte order)."""
    with fits.open(path, memmap=False) as hdus:
        return _read_planes(hdus)


def write_calexp(path: str | Path, exposure: CalibratedExposure) -> None:
    """A calibrated exposure (nJy planes, fitted WCS in every plane's header, PSF, zero point, figures)."""
    wcs_header = exposure.wcs.to_header(relax=True)
    primary = fits.Header([("EXPNUM", exposure.info.expnum), ("CCDNUM", exposure.ccdnum),
                           ("FILTER", exposure.info.band), ("MJD-MID", exposure.info.mjd_mid_tai),
                           ("MAGZERO", exposure.zero_point, "AB mag of 1 electron"), ("BUNIT", "nJy"),
                           ("FWHM", exposure.psf_fwhm_pix, "PSF FWHM, pixels")])
    psf_hdu, psf_facts = _psf_hdu_and_facts(exposure.psf_model, exposure.masked.image.shape)
    facts = {"ZERO_POINT": exposure.zero_point, "PSF_FWHM_PIX": exposure.psf_fwhm_pix, "CCDNUM": exposure.ccdnum,
             **_info_facts(exposure.info), **_wcs_facts(exposure.wcs), **psf_facts,
             **{f"META_{k}": v for k, v in exposure.metadata.items()}}
    _write(Path(path), primary, [*_plane_hdus(exposure.masked, wcs_header), psf_hdu, _facts_hdu(facts)])


def read_calexp(path: str | Path) -> CalibratedExposure:
    """The calibrated exposure written by :func:`write_calexp`, exactly."""
    with fits.open(path, memmap=False) as hdus:
        facts = _read_facts(hdus)
        return CalibratedExposure(masked=_read_planes(hdus), wcs=_wcs_from_facts(facts),
                                  psf_fwhm_pix=float(facts["PSF_FWHM_PIX"]), psf_model=_psf_from(hdus, facts),
                                  zero_point=float(facts["ZERO_POINT"]), info=_info_from(facts),
                                  ccdnum=int(facts["CCDNUM"]),
                                  metadata={k[5:]: v for k, v in facts.items() if k.startswith("META_")})


_SCALARS = ("convolved_science", "psf_sigma_pix", "kernel_fallback", "variance_scale", "n_stamps",
            "model_error_fraction")


def write_difference(path: str | Path, result: SubtractionResult, *, wcs: WCS, template_fwhm_arcsec: float) -> None:
    """A subtraction: the difference (IMAGE, MASK, VARIANCE), the template as subtracted (TEMPLATE_*), the
    difference image's PSF, the matching kernel at the CCD's centre and the subtraction's figures."""
    wcs_header = wcs.to_header(relax=True)
    psf_hdu, psf_facts = _psf_hdu_and_facts(result.difference_psf, result.difference.image.shape)
    facts = {**{s.upper(): getattr(result, s) for s in _SCALARS}, "TEMPLATE_FWHM_ARCSEC": template_fwhm_arcsec,
             **psf_facts}
    primary = fits.Header({"BUNIT": "nJy", "VARSCALE": result.variance_scale, "NSTAMPS": result.n_stamps,
                           "CONVSCI": result.convolved_science})
    _write(Path(path), primary, [*_plane_hdus(result.difference, wcs_header),
                                 *_plane_hdus(result.matched_template, wcs_header, "TEMPLATE_"), psf_hdu,
                                 fits.ImageHDU(np.asarray(result.kernel, np.float64), name="KERNEL"),
                                 _facts_hdu(facts)])


def read_difference(path: str | Path) -> tuple[SubtractionResult, float]:
    """The subtraction written by :func:`write_difference` (without the fitted kernel model), and the
    template's FWHM (arcsec)."""
    with fits.open(path, memmap=False) as hdus:
        facts = _read_facts(hdus)
        psf = _psf_from(hdus, facts)
        scalars = {s: facts[s.upper()] for s in _SCALARS}
        result = SubtractionResult(
            difference=_read_planes(hdus), matched_template=_read_planes(hdus, "TEMPLATE_"),
            kernel=_native(hdus["KERNEL"].data), convolved_science=bool(scalars["convolved_science"]),
            psf_sigma_pix=float(scalars["psf_sigma_pix"]), kernel_fallback=bool(scalars["kernel_fallback"]),
            variance_scale=float(scalars["variance_scale"]), n_stamps=int(scalars["n_stamps"]),
            difference_psf=psf if isinstance(psf, PixelPsf) else None,
            model_error_fraction=float(scalars["model_error_fraction"]))
        return result, float(facts["TEMPLATE_FWHM_ARCSEC"])
