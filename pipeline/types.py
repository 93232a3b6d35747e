"""Types shared by the pipeline stages: a raw CCD, a calibrated exposure, a warped template, a CCD's inputs and
outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from pipeline.decam.camera import CcdInfo
from pipeline.errors import TemplatePsfError
from pipeline.psf import Psf

if TYPE_CHECKING:  # pipeline.reliability imports this module
    from pipeline.reliability import ReliabilityModel


@dataclass(frozen=True)
class ExposureInfo:
    """Exposure-level metadata, translated from the DECam primary header.

    Attributes
    ----------
    expnum : int
        DECam EXPNUM (Rubin's ``visit``).
    mjd_mid_tai : float
        Exposure midpoint, MJD TAI.
    band : str
        Band letter from the first word of FILTER.
    exptime_s : float
        Exposure time, seconds.
    airmass : float
    ra_deg, dec_deg : float
        Telescope pointing, degrees.
    """

    expnum: int
    mjd_mid_tai: float
    band: str
    exptime_s: float
    airmass: float
    ra_deg: float
    dec_deg: float


@dataclass(frozen=True)
class RawCcd:
    """One CCD extension of a raw DECam exposure, untouched.

    Attributes
    ----------
    ccdnum : int
        CCDNUM (Rubin's ``detector``).
    detpos : str
        DETPOS, e.g. ``'S4'``.
    pixels : numpy.ndarray
        (4146, 2160) float32 ADU, BZERO applied, in file orientation.
    header : astropy.io.fits.Header
        The extension header (sections, GAINA/B, RDNOISEA/B, SATURATA/B, WCS).
    info : ExposureInfo
        From the primary header.
    """

    ccdnum: int
    detpos: str
    pixels: np.ndarray
    header: fits.Header
    info: ExposureInfo


@dataclass(frozen=True)
class MaskedImage:
    """Image, mask and variance planes of one CCD, all (ny, nx).

    ``image`` and ``variance`` are float32 in the units of the stage (electrons after ISR, nJy after
    calibration); ``mask`` is int32 with :class:`pipeline.masks.MaskBit` bits.
    """

    image: np.ndarray
    mask: np.ndarray
    variance: np.ndarray


@dataclass(frozen=True)
class CalibratedExposure:
    """A calibrated CCD exposure: pixels in nJy, with PSF, WCS and zero point.

    Attributes
    ----------
    masked : MaskedImage
        Background-subtracted image and variance in nJy, mask bits.
    wcs : astropy.wcs.WCS
        Fitted WCS, 0-based pixel convention when used through ``pixel_to_world``.
    psf_fwhm_pix : float
        PSF full width at half maximum, pixels (the model in :mod:`pipeline.psf` may vary across the CCD).
    psf_model : Psf
        The PSF model (see :mod:`pipeline.psf`); evaluates a normalised stamp at any position.
    zero_point : float
        AB magnitude of 1 electron (instrumental counts) in this exposure.
    info : ExposureInfo
    ccdnum : int
    metadata : dict
        Calibration figures (astrometric RMS and matches, zero-point error, PSF and aperture corrections).
    """

    masked: MaskedImage
    wcs: WCS
    psf_fwhm_pix: float
    psf_model: Psf
    zero_point: float
    info: ExposureInfo
    ccdnum: int
    metadata: dict[str, float | int] = field(default_factory=dict)


@dataclass(frozen=True)
class TilePsf:
    """PSF model of a template tile: normalised PSF images at nodes of the tile's pixel grid.

    For a coadd, the image at a node is the weighted combination of the input exposures' PSFs warped to the
    tile (:mod:`pipeline.coadd`); the nearest node's image stands for the PSF around it.

    Attributes
    ----------
    images : numpy.ndarray
        (k, n, n) images, n odd, centred on the central pixel, each summing to 1.
    x, y : numpy.ndarray
        (k,) node positions, 0-based tile pixels.

    Raises
    ------
    TemplatePsfError
        No node, or images that are not finite, odd-sized and of positive sum.
    """

    images: np.ndarray
    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        images = np.asarray(self.images)
        if images.ndim != 3 or images.shape[0] == 0 or images.shape[1] != images.shape[2] \
                or images.shape[1] % 2 == 0:
            raise TemplatePsfError(f"template PSF needs (k >= 1, n, n) images with n odd, got {images.shape}",
                                   stage="load_template")
        if np.shape(self.x) != (images.shape[0],) or np.shape(self.y) != (images.shape[0],):
            raise TemplatePsfError("template PSF node positions do not match its images", stage="load_template")
        sums = images.sum(axis=(1, 2))
        if not (np.isfinite(images).all() and (sums > 0).all()):
            raise TemplatePsfError("template PSF images are not finite with a positive sum",
                                   stage="load_template")

    def image_near(self, x: float, y: float) -> np.ndarray:
        """The (n, n) PSF image of the node nearest to tile pixel (x, y), normalised to sum 1."""
        k = int(np.argmin((np.asarray(self.x) - x) ** 2 + (np.asarray(self.y) - y) ** 2))
        image = np.asarray(self.images[k], dtype=float)
        return image / image.sum()


@dataclass(frozen=True)
class TemplateTile:
    """One deep coadd tile of the template, in nJy, with its own TAN WCS and PSF model.

    The planes may be read-only memory maps of the tile's FITS file in its byte order (big-endian): the warp
    reads only the part a CCD needs, and converts that part.
    """

    tile_id: int
    image: np.ndarray
    variance: np.ndarray
    mask: np.ndarray
    wcs: WCS
    psf: TilePsf


@dataclass(frozen=True)
class WarpedTemplate:
    """The template warped onto a science CCD's pixel grid.

    Attributes
    ----------
    masked : MaskedImage
        Image (nJy per science pixel), variance and mask; pixels no tile covers with data are 0 with NO_DATA set.
    psf_fwhm_arcsec : float
        FWHM of the template's PSF (``psf_image``), from its half-maximum radius.
    psf_image : numpy.ndarray or None
        (n, n) PSF of the template near the CCD's centre, in template (tile) pixels, summing to 1.
    """

    masked: MaskedImage
    psf_fwhm_arcsec: float
    psf_image: np.ndarray | None = None


@dataclass(frozen=True)
class CcdInputs:
    """Everything the per-CCD pipeline needs, gathered by the streamer worker.

    Attributes
    ----------
    raw : RawCcd
    bias, flat : numpy.ndarray
        Master bias (ADU, overscan removed) and normalised flat, trimmed (4096, 2048) float32.
    refcat : Table
        Reference stars overlapping the CCD (ref_id, ra, dec, <band>_mag).
    template_tiles : list of TemplateTile
        Template tiles overlapping the CCD with a margin.
    dia_objects, dia_sources, dia_forced_sources : Table
        APDB region data (see :class:`streamer.apdb.base.RegionData`).
    ccd : CcdInfo
        The instrument's description of this CCD (geometry, amplifiers, crosstalk), from the camera tables.
    defects : numpy.ndarray or None
        Boolean (4096, 2048) known-defect mask.
    reliability_model : ReliabilityModel or None
        The DiaSource reliability model (the shipped one, from the package data); needed when the reliability
        stage scores (``ReliabilityConfig.do_score``).
    """

    raw: RawCcd
    bias: np.ndarray
    flat: np.ndarray
    refcat: Table
    template_tiles: list[TemplateTile]
    dia_objects: Table
    dia_sources: Table
    dia_forced_sources: Table
    ccd: CcdInfo
    defects: np.ndarray | None = None
    reliability_model: ReliabilityModel | None = None


@dataclass(frozen=True)
class CcdOutputs:
    """Everything one CCD's processing produced.

    Attributes
    ----------
    exposure : CalibratedExposure
    difference : MaskedImage
        Decorrelated difference image (nJy).
    dia_sources : Table
        New DiaSources with Rubin diaSource columns (diaObjectId set by association).
    dia_objects : Table
        New versions of the DiaObjects touched by this CCD (new and updated), Rubin diaObject columns.
    dia_forced_sources : Table
        Forced photometry rows, Rubin diaForcedSource columns.
    cutouts : dict
        diaSourceId -> (science, template, difference) FITS bytes.
    metadata : dict
        Per-stage figures (zero point, astrometric RMS, kernel stamps, variance scale, counts).
    """

    exposure: CalibratedExposure
    difference: MaskedImage
    dia_sources: Table
    dia_objects: Table
    dia_forced_sources: Table
    cutouts: dict[int, tuple[bytes, bytes, bytes]]
    metadata: dict[str, object] = field(default_factory=dict)
