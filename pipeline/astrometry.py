"""Astrometric calibration: match detections to the reference catalog from a rough WCS and fit TAN-SIP."""

from __future__ import annotations

import logging

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.table import Table
from astropy.wcs import WCS
from astropy.wcs.utils import fit_wcs_from_points
from pydantic import BaseModel, ConfigDict, Field
from scipy.spatial import cKDTree

from pipeline.errors import AlgorithmError

log = logging.getLogger(__name__)


class AstrometryConfig(BaseModel):
    """Configuration of the astrometric fit."""

    model_config = ConfigDict(frozen=True)
    max_offset_arcsec: float = Field(60.0, description="Largest header-WCS pointing error searched (a rotation "
                                                       "error about the boresight adds to it on outer CCDs).")
    max_rotation_deg: float = Field(0.6, description="Largest header-WCS rotation error searched.")
    rotation_step_deg: float = Field(0.1, description="Step of the rotation search (the offset vote's 2-pixel "
                                                      "bins tolerate about 0.05 degrees across a CCD).")
    clip_sigma: float = Field(4.0, description="Matches beyond this many robust sigma are rejected in the fit.")
    match_radius_arcsec: float = Field(1.0, description="Final match radius.")
    sip_degree: int = Field(3, description="Polynomial distortion order of the fitted TAN-SIP WCS.")
    min_matches: int = Field(8, description="Fewest matched stars for a fit.")
    n_brightest: int = Field(300, description="Brightest detections used in the offset search.")


def _pixel_scale_arcsec(wcs: WCS) -> float:
    return float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))) * 3600.0)


def fit_wcs(x: np.ndarray, y: np.ndarray, flux: np.ndarray, refcat: Table, header_wcs: WCS,
            shape: tuple[int, int], config: AstrometryConfig = AstrometryConfig()) -> tuple[WCS, Table]:
    """Fit a TAN-SIP WCS of a CCD against the reference catalog.

    Parameters
    ----------
    x, y : numpy.ndarray
        Detected star centroids, 0-based pixels.
    flux : numpy.ndarray
        Their fluxes (used to rank them).
    refcat : Table
        Reference stars with ``ra``, ``dec`` (degrees).
    header_wcs : WCS
        Starting guess (the raw's header WCS), possibly off by tens of arcsec.
    shape : tuple
        (ny, nx) of the image.

    Returns
    -------
    wcs : WCS
        Fitted WCS.
    matches : Table
        Matched pairs: x, y, ref_index, ra, dec, dra_arcsec, ddec_arcsec (residuals after the fit).

    Raises
    ------
    AlgorithmError
        Too few matches (no reference overlap, clouds) or a diverging fit.
    """
    if len(refcat) < config.min_matches or len(x) < config.min_matches:
        raise AlgorithmError(f"astrometry needs {config.min_matches} stars and references; have {len(x)} "
                             f"detections and {len(refcat)} references", stage="astrometry")
    scale = _pixel_scale_arcsec(header_wcs)
    ref_ra = np.asarray(refcat["ra"], dtype=float)
    ref_dec = np.asarray(refcat["dec"], dtype=float)
    rx, ry = header_wcs.all_world2pix(ref_ra, ref_dec, 0)
    ny, nx = shape
    margin = config.max_offset_arcsec / scale + 10
    on_ccd = (rx > -margin) & (rx < nx + margin) & (ry > -margin) & (ry < ny + margin)
    if on_ccd.sum() < config.min_matches:
        raise AlgorithmError(f"reference catalog does not overlap the CCD ({int(on_ccd.sum())} stars)",
                             stage="astrometry")
    ref_idx_all = np.flatnonzero(on_ccd)
    order = np.argsort(-flux)[: config.n_brightest]
    ref_pix = np.column_stack([rx[on_ccd], ry[on_ccd]])
    affine = _vote_rotation_offset(x[order], y[order], ref_pix, ((nx - 1) / 2, (ny - 1) / 2),
                                   config.max_offset_arcsec / scale, config)
    # Affine refinement with shrinking radius, in pixel space.
    src = np.column_stack([x, y])
    for radius_pix in (8.0, 4.0, 2.0):
        moved = ref_pix @ affine[:, :2].T + affine[:, 2]
        i_src, i_ref = _nearest_unique(src, moved, radius_pix)
        if i_src.size < config.min_matches:
            raise AlgorithmError(f"only {i_src.size} astrometric matches within {radius_pix} pix",
                                 stage="astrometry")
        design = np.column_stack([ref_pix[i_ref], np.ones(i_ref.size)])
        solution, *_ = np.linalg.lstsq(design, src[i_src], rcond=None)
        affine = solution.T
    moved = ref_pix @ affine[:, :2].T + affine[:, 2]
    i_src, i_ref = _nearest_unique(src, moved, config.match_radius_arcsec / scale * 2)
    ref_rows = ref_idx_all[i_ref]
    world = SkyCoord(ref_ra[ref_rows], ref_dec[ref_rows], unit="deg")
    # Enough stars per distortion term, else a lower order: overfitting bends the corners.
    sip = next((d for d in range(config.sip_degree, 1, -1) if i_src.size >= 3 * (d + 1) * (d + 2) // 2),
               None)
    centre = header_wcs.pixel_to_world((nx - 1) / 2, (ny - 1) / 2)
    wcs = fit_wcs_from_points((x[i_src], y[i_src]), world, proj_point=centre, sip_degree=sip)
    for _ in range(5):
        resid = _residuals_arcsec(wcs, x[i_src], y[i_src], ref_ra[ref_rows], ref_dec[ref_rows])
        dist = np.hypot(resid[:, 0], resid[:, 1])
        # Robust per-axis sigma: the median distance of a 2-D Gaussian is 1.177 sigma.
        sigma = float(np.median(dist)) / 1.177
        keep = dist < max(config.clip_sigma * sigma, 0.02)
        if keep.all() or keep.sum() < config.min_matches:
            break
        i_src, ref_rows = i_src[keep], ref_rows[keep]
        world = SkyCoord(ref_ra[ref_rows], ref_dec[ref_rows], unit="deg")
        wcs = fit_wcs_from_points((x[i_src], y[i_src]), world, proj_point=centre, sip_degree=sip)
    resid = _residuals_arcsec(wcs, x[i_src], y[i_src], ref_ra[ref_rows], ref_dec[ref_rows])
    rms = float(np.sqrt(np.mean(np.sum(resid**2, axis=1))))
    if not np.isfinite(rms) or rms > 1.0:
        raise AlgorithmError(f"astrometric fit diverged: {rms:.3f} arcsec RMS", stage="astrometry")
    log.debug("astrometry: %d matches, rms %.4f arcsec", i_src.size, rms)
    matches = Table({"x": x[i_src], "y": y[i_src], "src_index": i_src, "ref_index": ref_rows,
                     "ra": ref_ra[ref_rows], "dec": ref_dec[ref_rows],
                     "dra_arcsec": resid[:, 0], "ddec_arcsec": resid[:, 1]})
    matches.meta["rms_arcsec"] = rms
    return wcs, matches


def _vote_rotation_offset(x: np.ndarray, y: np.ndarray, ref_pix: np.ndarray, centre: tuple[float, float],
                          max_offset_pix: float, config: AstrometryConfig) -> np.ndarray:
    """Rotation (about the CCD centre) and offset of the references onto the detections, as a 2x3 affine.

    For each trial angle the references are rotated about the CCD centre and the (detection - reference)
    offsets vote in 2-pixel bins; the angle with the tallest peak wins, refined by the peak's neighbours.
    """
    n_steps = int(np.ceil(config.max_rotation_deg / config.rotation_step_deg))
    angles = np.arange(-n_steps, n_steps + 1) * np.radians(config.rotation_step_deg)
    cx, cy = centre
    best = (-1.0, 0.0, 0.0, 0.0)
    for angle in angles:
        c, s = np.cos(angle), np.sin(angle)
        rx = cx + c * (ref_pix[:, 0] - cx) - s * (ref_pix[:, 1] - cy)
        ry = cy + s * (ref_pix[:, 0] - cx) + c * (ref_pix[:, 1] - cy)
        try:
            dx, dy, votes = _vote_offset(x, y, rx, ry, max_offset_pix)
        except AlgorithmError:
            continue
        if votes > best[0]:
            best = (votes, float(angle), dx, dy)
    if best[0] < 3:
        raise AlgorithmError("no consistent rotation and offset between detections and references "
                             "(no overlap with the reference catalog?)", stage="astrometry")
    _, angle, dx, dy = best
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    shift = np.array([cx, cy]) - rot @ np.array([cx, cy]) + np.array([dx, dy])
    return np.column_stack([rot, shift])


def _vote_offset(x: np.ndarray, y: np.ndarray, rx: np.ndarray, ry: np.ndarray, max_offset_pix: float
                 ) -> tuple[float, float, int]:
    """Most common (detection - reference) offset within ``max_offset_pix``, by a 2-D histogram vote.

    Returns the offset (dx, dy) in pixels and the number of pairs that voted for it.
    """
    tree = cKDTree(np.column_stack([rx, ry]))
    pairs = tree.query_ball_point(np.column_stack([x, y]), r=max_offset_pix)
    lengths = np.fromiter((len(p) for p in pairs), dtype=int, count=len(pairs))
    if lengths.sum() == 0:
        raise AlgorithmError("no reference star within the pointing-error radius", stage="astrometry")
    i_src = np.repeat(np.arange(len(x)), lengths)
    i_ref = np.concatenate([np.asarray(p, dtype=int) for p in pairs if len(p)])
    ddx = x[i_src] - rx[i_ref]
    ddy = y[i_src] - ry[i_ref]
    bins = np.arange(-max_offset_pix, max_offset_pix + 2.0, 2.0)
    hist, xe, ye = np.histogram2d(ddx, ddy, bins=[bins, bins])
    ix, iy = np.unravel_index(np.argmax(hist), hist.shape)
    near = (np.abs(ddx - 0.5 * (xe[ix] + xe[ix + 1])) < 3) & (np.abs(ddy - 0.5 * (ye[iy] + ye[iy + 1])) < 3)
    return float(np.median(ddx[near])), float(np.median(ddy[near])), int(hist[ix, iy])


def _nearest_unique(src: np.ndarray, ref: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one nearest matches (src index, ref index) within ``radius``, closest pairs first."""
    if len(ref) == 0 or len(src) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    dist, idx = cKDTree(ref).query(src, distance_upper_bound=radius)
    ok = np.isfinite(dist)
    i_src = np.flatnonzero(ok)
    i_ref = idx[ok]
    order = np.argsort(dist[ok])
    i_src, i_ref = i_src[order], i_ref[order]
    _, first = np.unique(i_ref, return_index=True)
    return i_src[first], i_ref[first]


def _residuals_arcsec(wcs: WCS, x: np.ndarray, y: np.ndarray, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """(n, 2) residuals (dRA cos dec, dDec) in arcsec of the fitted positions against the references."""
    fit_ra, fit_dec = wcs.all_pix2world(x, y, 0)
    dra = ((fit_ra - ra + 180.0) % 360.0 - 180.0) * np.cos(np.radians(dec)) * 3600.0
    ddec = (fit_dec - dec) * 3600.0
    return np.column_stack([dra, ddec])
