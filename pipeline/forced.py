"""Forced PSF photometry of known DiaObjects on the difference and science images."""

from __future__ import annotations

import numpy as np
from astropy.table import Table
from pydantic import BaseModel, ConfigDict, Field

from pipeline.measure import psf_flux
from pipeline.subtract import SubtractionResult
from pipeline.types import CalibratedExposure


class ForcedConfig(BaseModel):
    """Configuration of forced photometry (Rubin measures DiaObjects with at least 2 DiaSources)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    min_dia_sources: int = Field(2, ge=0, description="Least nDiaSources of a DiaObject to be measured.")
    edge_margin_pix: int = Field(5, ge=0, le=1024, description="Positions closer to the edge are skipped.")


def forced_source_id(dia_object_id: np.ndarray, visit: int, detector: int) -> np.ndarray:
    """Deterministic 63-bit DiaForcedSource ids: a splitmix64 hash of (diaObjectId, visit, detector)."""
    with np.errstate(over="ignore"):
        z = np.asarray(dia_object_id, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z ^= np.uint64(visit * 100 + detector) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return (z >> np.uint64(1)).astype(np.int64)


def forced_photometry(dia_objects: Table, subtraction: SubtractionResult, exposure: CalibratedExposure, *,
                      config: ForcedConfig = ForcedConfig()) -> Table:
    """Measure PSF fluxes at the positions of DiaObjects that fall on the CCD.

    Parameters
    ----------
    dia_objects : Table
        Up-to-date DiaObjects of the region (``diaObjectId``, ``ra``, ``dec``, ``nDiaSources``).
    subtraction : SubtractionResult
        The difference image and its PSF.
    exposure : CalibratedExposure
        The science image, its WCS, PSF model, exposure metadata and CCD number.
    config : ForcedConfig

    Returns
    -------
    Table
        Rubin diaForcedSource columns.
    """
    difference, diff_psf = subtraction.difference, subtraction.psf
    science, wcs, science_psf = exposure.masked, exposure.wcs, exposure.psf_model
    info, detector = exposure.info, exposure.ccdnum
    enough = np.asarray(dia_objects["nDiaSources"]) >= config.min_dia_sources if len(dia_objects) else []
    objects = dia_objects[enough] if len(dia_objects) else dia_objects
    ny, nx = difference.image.shape
    if len(objects):
        x, y = wcs.all_world2pix(np.asarray(objects["ra"], float), np.asarray(objects["dec"], float), 0)
    else:
        x = y = np.zeros(0)
    m = config.edge_margin_pix
    on = (x >= m) & (x < nx - m) & (y >= m) & (y < ny - m)
    objects, x, y = objects[on], x[on], y[on]
    diff = psf_flux(difference, x, y, diff_psf)
    sci = psf_flux(science, x, y, science_psf)
    n = len(objects)
    ids = np.asarray(objects["diaObjectId"], np.int64) if n else np.zeros(0, np.int64)
    table = Table({
        "diaForcedSourceId": forced_source_id(ids, info.expnum, detector),
        "diaObjectId": ids,
        "ra": np.asarray(objects["ra"], float) if n else np.zeros(0),
        "dec": np.asarray(objects["dec"], float) if n else np.zeros(0),
        "visit": np.full(n, info.expnum, np.int64),
        "detector": np.full(n, detector, np.int32),
        "psfFlux": diff["flux"].astype(np.float32), "psfFluxErr": diff["flux_err"].astype(np.float32),
        "midpointMjdTai": np.full(n, info.mjd_mid_tai),
        "scienceFlux": sci["flux"].astype(np.float32), "scienceFluxErr": sci["flux_err"].astype(np.float32),
        "band": np.full(n, info.band, dtype="U1"),
        "timeProcessedMjdTai": np.full(n, info.mjd_mid_tai),
    })
    return table
