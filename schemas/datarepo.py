"""Layout of a Blink data repository (what ``blink sim`` writes and the worker reads).

Only path conventions live here: no reading or writing. All paths are relative to a data root.

::

    <root>/
      raw/DECam_<EXPNUM:08d>.fits[.fz]   raw exposures, exactly like real DECam raws (primary + one int16
                                          BZERO=32768 2160x4146 extension per CCD, EXTNAME = DETPOS)
      calib/bias.fits                    master bias: primary + one float32 ImageHDU per CCD, EXTNAME = DETPOS,
                                          header CCDNUM; trimmed and assembled (4096, 2048) array, in ADU,
                                          overscan already removed (what remains after overscan subtraction)
      calib/flat_<band>.fits             master flat, same layout, normalised to mean 1 per CCD
      refcat/gaia/*.fits|csv|ecsv        (optional) Gaia-archive files as downloaded (the simulator writes its
                                          Gaia as chunk-<pixel>.fits here); `blink refcat` indexes any folder
      refcat/index.ecsv                  Blink's sky-indexed reference catalog (written by `blink refcat`): one
                                          row per partition: pixel (HEALPix nested, nside in meta REFCAT_NSIDE),
                                          n_stars, path (relative to root)
      refcat/nside32/<pixel:05d>.fits    one partition: one BinTable of the Gaia-archive columns
                                          (pipeline.refcat.GAIA_COLUMNS: source_id, ra, dec at ref_epoch, errors in
                                          mas, pmra/pmdec in mas/yr, G/BP/RP mean mags, flux_over_error), sorted by
                                          source_id, one row per source
      templates/<band>/index.ecsv        one row per tile: tile_id (int), ra, dec (tile centre, deg),
                                          radius_deg (circumscribed radius), path (relative to root)
      templates/<band>/tile_<id>.fits    deep coadd tile (pipeline.skymap tile id): IMAGE (float32, nJy per
                                          pixel, TAN WCS), VARIANCE (nJy^2), MASK (int32, bits of pipeline.masks),
                                          PSF ((k, n, n) float32 PSF images, each summing to 1) and PSF_NODES
                                          (x, y: 0-based pixels of the PSF nodes) are what the worker reads;
                                          built by ``blink templates build`` it also has WEIGHT (float32 summed
                                          input weights), COVERAGE (int16 inputs per pixel), PSF_NODES weight and
                                          depth_mag, INPUTS (visit, ccdnum, band, mjd_tai, weight, seeing_arcsec,
                                          zero_point, n_pixels) and primary TILEID, BAND, TILEX0/TILEY0 (the
                                          stored box's corner in the full sky-map tile)
      events/<EXPNUM:08d>.avro           one exposure-ready event (Avro OCF, schemas/exposure_ready.avsc)
      truth/template_exposures.ecsv      (templates="epochs"/"both") the earlier epochs: expnum, mjd, band,
                                          airmass, seeing_fwhm_arcsec, zero_point, field_id, epoch
      truth/exposures.ecsv               expnum, mjd, band, exptime, airmass, ra, dec, seeing_fwhm_arcsec,
                                          zero_point (AB mag of 1 electron in the exposure), sky_e_per_pix, field_id
      truth/sources.ecsv                 source_id, ra, dec, kind (star, galaxy, transient, variable, supernova),
                                          host_id (-1 if none), ref_mag_<band>
      truth/fluxes.ecsv                  source_id, expnum, flux_njy (true flux in that exposure, band of the
                                          exposure; static sources included only when they vary), kind,
                                          delta_flux_njy, snr, ccdnum, x, y; with asteroid_density > 0 also
                                          the asteroids (kind asteroid, in no sources.ecsv) and columns ra, dec
                                          (an asteroid's position in that exposure; NaN for the other rows)
      truth/wcs/<EXPNUM:08d>.fits        primary + one header-only HDU per simulated CCD (EXTNAME = DETPOS)
                                          holding the true WCS as TAN-SIP keywords (pixel frame of the trimmed,
                                          assembled CCD, 1-based FITS convention)
      truth/cosmic_rays/<EXPNUM:08d>_<CCDNUM:02d>.npy  (optional, small mode) boolean mask of CR pixels in the
                                          trimmed CCD frame

Fluxes are in nJy everywhere downstream of calibration (AB: 31.4 mag = 1 nJy).
"""

from __future__ import annotations

from pathlib import PurePosixPath

NJY_AB_ZERO_POINT = 31.4
"""AB magnitude of 1 nJy."""


def raw_path(expnum: int, *, compressed: bool = False) -> PurePosixPath:
    """Relative path of a raw exposure."""
    return PurePosixPath("raw") / f"DECam_{expnum:08d}.fits{'.fz' if compressed else ''}"


def bias_path() -> PurePosixPath:
    """Relative path of the master bias."""
    return PurePosixPath("calib") / "bias.fits"


def flat_path(band: str) -> PurePosixPath:
    """Relative path of the master flat of one band."""
    return PurePosixPath("calib") / f"flat_{band}.fits"


REFCAT_NSIDE = 32
"""HEALPix nside (nested) of the reference catalog's partitions (1.8 degree pixels)."""


def refcat_source_dir() -> PurePosixPath:
    """Relative path of the folder of Gaia-archive files inside a repository (what the simulator writes)."""
    return PurePosixPath("refcat") / "gaia"


def refcat_index_path() -> PurePosixPath:
    """Relative path of the reference catalog's partition index."""
    return PurePosixPath("refcat") / "index.ecsv"


def refcat_partition_path(pixel: int) -> PurePosixPath:
    """Relative path of one reference-catalog partition (HEALPix nested pixel at :data:`REFCAT_NSIDE`)."""
    return PurePosixPath("refcat") / f"nside{REFCAT_NSIDE}" / f"{pixel:05d}.fits"


def template_index_path(band: str) -> PurePosixPath:
    """Relative path of the template tile index of one band."""
    return PurePosixPath("templates") / band / "index.ecsv"


def template_tile_path(band: str, tile_id: int) -> PurePosixPath:
    """Relative path of one template tile."""
    return PurePosixPath("templates") / band / f"tile_{tile_id:05d}.fits"


def event_path(expnum: int) -> PurePosixPath:
    """Relative path of an exposure-ready event in the local event folder."""
    return PurePosixPath("events") / f"{expnum:08d}.avro"


def truth_dir() -> PurePosixPath:
    """Relative path of the truth folder."""
    return PurePosixPath("truth")


def truth_wcs_path(expnum: int) -> PurePosixPath:
    """Relative path of the true per-CCD WCS of an exposure."""
    return PurePosixPath("truth") / "wcs" / f"{expnum:08d}.fits"
