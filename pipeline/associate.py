"""Association of DiaSources with DiaObjects and recomputation of DiaObject summaries.

DiaSources are matched one-to-one to the region's DiaObjects within a radius (closest pairs first, a k-d
tree on unit vectors); unmatched DiaSources start new DiaObjects whose id is their own diaSourceId, so that
re-processing creates the same ids. Summaries are recomputed from the full (12-month) source history.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table, vstack
from pydantic import BaseModel, ConfigDict, Field
from scipy.spatial import cKDTree

BANDS = ("u", "g", "r", "i", "z", "y")


class AssociationConfig(BaseModel):
    """Configuration of association (defaults after lsst/ap_association)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    max_distance_arcsec: float = Field(1.0, gt=0, le=60.0,
                                       description="Largest DiaSource-DiaObject separation matched.")


def unit_vectors(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    """(n, 3) unit vectors of sky positions."""
    ra, dec = np.radians(np.asarray(ra_deg, float)), np.radians(np.asarray(dec_deg, float))
    return np.column_stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])


def match_one_to_one(source_xyz: np.ndarray, object_xyz: np.ndarray, radius_rad: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one matching, closest pairs first.

    Returns
    -------
    source_index, object_index : numpy.ndarray
        Matched pairs.
    """
    if len(source_xyz) == 0 or len(object_xyz) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    chord = 2.0 * np.sin(radius_rad / 2.0)
    sparse = cKDTree(source_xyz).sparse_distance_matrix(cKDTree(object_xyz), chord, output_type="ndarray")
    i_src, i_obj, dist = sparse["i"].astype(int), sparse["j"].astype(int), sparse["v"]
    order = np.lexsort((i_obj, i_src, dist))
    i_src, i_obj = i_src[order], i_obj[order]
    taken_src = np.zeros(len(source_xyz), bool)
    taken_obj = np.zeros(len(object_xyz), bool)
    out_s, out_o = [], []
    while i_src.size:
        _, first_s = np.unique(i_src, return_index=True)
        _, first_o = np.unique(i_obj, return_index=True)
        winners = np.intersect1d(first_s, first_o)
        out_s.append(i_src[winners])
        out_o.append(i_obj[winners])
        taken_src[i_src[winners]] = True
        taken_obj[i_obj[winners]] = True
        remain = ~taken_src[i_src] & ~taken_obj[i_obj]
        i_src, i_obj = i_src[remain], i_obj[remain]
    if not out_s:
        return np.zeros(0, int), np.zeros(0, int)
    return np.concatenate(out_s), np.concatenate(out_o)


def associate(dia_sources: Table, dia_objects: Table, *, config: AssociationConfig = AssociationConfig()
              ) -> tuple[Table, np.ndarray]:
    """Assign a diaObjectId to every DiaSource.

    Parameters
    ----------
    dia_sources : Table
        New DiaSources (``diaSourceId``, ``ra``, ``dec``).
    dia_objects : Table
        The region's DiaObjects (``diaObjectId``, ``ra``, ``dec``); may be empty.

    Returns
    -------
    dia_sources : Table
        A copy with ``diaObjectId`` filled.
    is_new : numpy.ndarray
        True for DiaSources that started a new DiaObject.
    """
    out = dia_sources.copy()
    n = len(out)
    object_ids = np.asarray(out["diaSourceId"], dtype=np.int64).copy()
    is_new = np.ones(n, bool)
    if n and len(dia_objects):
        s, o = match_one_to_one(unit_vectors(out["ra"], out["dec"]),
                                unit_vectors(dia_objects["ra"], dia_objects["dec"]),
                                np.radians(config.max_distance_arcsec / 3600.0))
        object_ids[s] = np.asarray(dia_objects["diaObjectId"], dtype=np.int64)[o]
        is_new[s] = False
    out["diaObjectId"] = object_ids
    return out, is_new


def summarize_objects(object_ids: np.ndarray, sources: Table, validity_start_mjd: float) -> Table:
    """Recompute DiaObject summary fields from their DiaSources, vectorised by grouping.

    Parameters
    ----------
    object_ids : numpy.ndarray
        DiaObjects to summarise.
    sources : Table
        All their DiaSources (history and new; duplicates by diaSourceId are removed).
    validity_start_mjd : float
        ``validityStartMjdTai`` of the new versions (the visit's midpoint).

    Returns
    -------
    Table
        One row per object, Rubin diaObject columns.
    """
    object_ids = np.unique(np.asarray(object_ids, dtype=np.int64))
    _, unique_rows = np.unique(np.asarray(sources["diaSourceId"], dtype=np.int64), return_index=True)
    src = sources[np.sort(unique_rows)]
    src = src[np.isin(np.asarray(src["diaObjectId"], np.int64), object_ids)]
    group = np.searchsorted(object_ids, np.asarray(src["diaObjectId"], np.int64))
    n_obj = object_ids.size
    count = np.bincount(group, minlength=n_obj)
    xyz = unit_vectors(src["ra"], src["dec"])
    mean_xyz = np.column_stack([np.bincount(group, xyz[:, k], minlength=n_obj) for k in range(3)])
    norm = np.linalg.norm(mean_xyz, axis=1)
    mean_xyz = mean_xyz / np.where(norm > 0, norm, 1.0)[:, None]
    ra = np.degrees(np.arctan2(mean_xyz[:, 1], mean_xyz[:, 0])) % 360.0
    dec = np.degrees(np.arcsin(np.clip(mean_xyz[:, 2], -1, 1)))
    mjd = np.asarray(src["midpointMjdTai"], float)
    first = np.full(n_obj, np.inf)
    last = np.full(n_obj, -np.inf)
    np.minimum.at(first, group, mjd)
    np.maximum.at(last, group, mjd)
    ra_err = _group_mean(group, np.asarray(src["raErr"], float), n_obj) / np.sqrt(np.maximum(count, 1))
    dec_err = _group_mean(group, np.asarray(src["decErr"], float), n_obj) / np.sqrt(np.maximum(count, 1))
    columns: dict[str, np.ndarray] = {
        "diaObjectId": object_ids,
        "validityStartMjdTai": np.full(n_obj, validity_start_mjd),
        "ra": ra, "dec": dec,
        "raErr": ra_err.astype(np.float32), "decErr": dec_err.astype(np.float32),
        "nDiaSources": count.astype(np.int32),
        "firstDiaSourceMjdTai": np.where(count > 0, first, np.nan),
        "lastDiaSourceMjdTai": np.where(count > 0, last, np.nan),
    }
    band = np.asarray(src["band"]).astype(str)
    flux = np.asarray(src["psfFlux"], float)
    flux_err = np.asarray(src["psfFluxErr"], float)
    sci = np.asarray(src["scienceFlux"], float)
    sci_err = np.asarray(src["scienceFluxErr"], float)
    for b in BANDS:
        columns.update(_band_columns(b, band=band, group=group, n_obj=n_obj, flux=flux, flux_err=flux_err, sci=sci,
                                     sci_err=sci_err))
    return Table(columns)


def _band_columns(b: str, *, band: np.ndarray, group: np.ndarray, n_obj: int, flux: np.ndarray,
                  flux_err: np.ndarray, sci: np.ndarray, sci_err: np.ndarray) -> dict[str, np.ndarray]:
    """The per-band summary columns (``{b}_psfFluxMean`` ... ``{b}_scienceFluxMeanErr``) of band ``b``, from
    the DiaSources' ``band``, their object's index ``group`` and their PSF and science fluxes."""
    columns: dict[str, np.ndarray] = {}
    in_band = (band == b) & np.isfinite(flux) & np.isfinite(flux_err) & (flux_err > 0)
    g = group[in_band]
    f, e = flux[in_band], flux_err[in_band]
    nd = np.bincount(g, minlength=n_obj)
    w = 1.0 / e**2
    wsum = np.bincount(g, w, minlength=n_obj)
    wmean = np.bincount(g, w * f, minlength=n_obj) / np.where(wsum > 0, wsum, np.nan)
    mean = np.bincount(g, f, minlength=n_obj) / np.where(nd > 0, nd, np.nan)
    sq = np.bincount(g, f**2, minlength=n_obj) / np.where(nd > 0, nd, np.nan)
    sigma = np.sqrt(np.clip(sq - mean**2, 0, None) * nd / np.where(nd > 1, nd - 1, np.nan))
    fmin = np.full(n_obj, np.inf)
    fmax = np.full(n_obj, -np.inf)
    np.minimum.at(fmin, g, f)
    np.maximum.at(fmax, g, f)
    columns[f"{b}_psfFluxMean"] = wmean.astype(np.float32)
    columns[f"{b}_psfFluxMeanErr"] = (1.0 / np.sqrt(np.where(wsum > 0, wsum, np.nan))).astype(np.float32)
    columns[f"{b}_psfFluxSigma"] = sigma.astype(np.float32)
    columns[f"{b}_psfFluxNdata"] = nd.astype(np.int32)
    columns[f"{b}_psfFluxMin"] = np.where(nd > 0, fmin, np.nan).astype(np.float32)
    columns[f"{b}_psfFluxMax"] = np.where(nd > 0, fmax, np.nan).astype(np.float32)
    columns[f"{b}_psfFluxErrMean"] = (np.bincount(g, e, minlength=n_obj)
                                      / np.where(nd > 0, nd, np.nan)).astype(np.float32)
    sci_ok = (band == b) & np.isfinite(sci) & np.isfinite(sci_err) & (sci_err > 0)
    gs = group[sci_ok]
    ws = 1.0 / sci_err[sci_ok] ** 2
    wss = np.bincount(gs, ws, minlength=n_obj)
    columns[f"{b}_scienceFluxMean"] = (np.bincount(gs, ws * sci[sci_ok], minlength=n_obj)
                                       / np.where(wss > 0, wss, np.nan)).astype(np.float32)
    columns[f"{b}_scienceFluxMeanErr"] = (1.0 / np.sqrt(np.where(wss > 0, wss, np.nan))).astype(np.float32)
    return columns


def _group_mean(group: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    ok = np.isfinite(values)
    total = np.bincount(group[ok], values[ok], minlength=n)
    count = np.bincount(group[ok], minlength=n)
    return total / np.where(count > 0, count, np.nan)


def history_with(new_sources: Table, history: Table) -> Table:
    """History plus the new DiaSources, on the columns they share."""
    if len(history) == 0:
        return new_sources
    shared = [c for c in new_sources.colnames if c in history.colnames]
    return vstack([history[shared], new_sources[shared]], metadata_conflicts="silent")
