"""Astrometric calibration: match detections to the reference catalog from a rough WCS and fit TAN-SIP."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from astropy.table import Table
from astropy.wcs import WCS, Sip
from pydantic import BaseModel, ConfigDict, Field, field_validator
from scipy.spatial import cKDTree

from pipeline.errors import AlgorithmError

log = logging.getLogger(__name__)


class AstrometryConfig(BaseModel):
    """Configuration of the astrometric fit."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    max_offset_arcsec: float = Field(60.0, gt=0, le=3600.0, description="Largest header-WCS pointing error "
                                     "searched (a rotation error about the boresight adds to it on outer CCDs).")
    max_rotation_deg: float = Field(0.6, ge=0, le=10.0, description="Largest header-WCS rotation error searched.")
    rotation_step_deg: float = Field(0.1, gt=0, le=10.0, description="Step of the rotation search (the offset "
                                     "vote's 2-pixel bins tolerate about 0.05 degrees across a CCD).")
    refine_radii_pix: tuple[float, ...] = Field((8.0, 4.0, 2.0), min_length=1, description="Match radii of the "
                                                "affine refinement after the offset search, pixels, in turn.")
    clip_sigma: float = Field(4.0, gt=0, description="Matches beyond this many robust sigma are rejected in the "
                                                     "fit.")
    clip_floor_arcsec: float = Field(0.02, ge=0, description="Matches within this distance are never clipped.")
    clip_iterations: int = Field(5, ge=1, le=100, description="Most fit-and-clip rounds of the TAN-SIP fit to "
                                                              "the stars.")
    camera_clip_iterations: int = Field(7, ge=1, le=100, description="Most fit-and-clip rounds of the fit "
                                                                     "through a camera model.")
    match_radius_arcsec: float = Field(1.0, gt=0, le=60.0, description="Final match radius.")
    max_rms_arcsec: float = Field(1.0, gt=0, description="A fit whose match RMS exceeds this has diverged "
                                                         "(AlgorithmError).")
    sip_degree: int = Field(3, ge=1, le=9, description="Polynomial distortion order of the fitted TAN-SIP WCS "
                                           "(without a camera model: fitted to the stars; with one: the order "
                                           "of the TAN-SIP that represents the composed model).")
    camera_residual_order: int = Field(2, ge=1, le=5, description="With a camera model: order of the polynomial "
                                                      "from its field angles to the sky's tangent plane (1 = "
                                                      "affine).")
    camera_residual_prior_arcsec: float = Field(0.1, gt=0, le=60.0, description="With a camera model: expected "
                                                "size, at a CCD's edge, of each non-affine term of the camera "
                                                "model's departure from the sky (a Gaussian prior: with few "
                                                "stars the fit stays near affine, with many it follows them).")
    camera_star_error_arcsec: float = Field(0.02, gt=0, le=10.0, description="With a camera model: astrometric "
                                            "error of one fitted star (centroid and reference), weighing the "
                                            "stars against the prior.")
    min_matches: int = Field(8, ge=3, description="Fewest matched stars for a fit.")
    n_brightest: int = Field(300, ge=1, description="Brightest detections used in the offset search.")

    @field_validator("refine_radii_pix")
    @classmethod
    def _positive_radii(cls, radii: tuple[float, ...]) -> tuple[float, ...]:
        if not all(r > 0 for r in radii):
            raise ValueError(f"radii must be positive, got {radii}")
        return radii


def pixel_scale_arcsec(wcs: WCS) -> float:
    """Mean pixel scale of a celestial WCS at its reference pixel, arcsec per pixel (square root of the area)."""
    return float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))) * 3600.0)


CameraModel = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""Pixel (x, y) -> gnomonic field angles (xi, eta) in radians: the instrument's nominal optical distortion."""


def fit_wcs(x: np.ndarray, y: np.ndarray, flux: np.ndarray, refcat: Table, header_wcs: WCS, *,
            shape: tuple[int, int], config: AstrometryConfig = AstrometryConfig(),
            camera: CameraModel | None = None) -> tuple[WCS, Table]:
    """Fit a TAN-SIP WCS of a CCD against the reference catalog.

    With a camera model the stars fit only a low-order map from the model's field angles to the sky's
    tangent plane (as Rubin starts from camera geometry), so the distortion stays right in corners with few
    stars; the composed mapping is then written as a TAN-SIP. Without one, the TAN-SIP is fitted to the stars.

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
    camera : callable, optional
        The nominal optical model, pixel -> field angles (see :data:`CameraModel`).

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
    scale = pixel_scale_arcsec(header_wcs)
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
    affine = _vote_rotation_offset(x[order], y[order], ref_pix, centre=((nx - 1) / 2, (ny - 1) / 2),
                                   max_offset_pix=config.max_offset_arcsec / scale, config=config)
    # Affine refinement with shrinking radius, in pixel space.
    src = np.column_stack([x, y])
    for radius_pix in config.refine_radii_pix:
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
    if camera is not None:
        wcs, i_src, ref_rows = _fit_through_camera(x, y, i_src, ref_rows, ref_ra=ref_ra, ref_dec=ref_dec,
                                                   camera=camera, header_wcs=header_wcs, shape=shape, config=config)
        return _checked(wcs, x, y, i_src, ref_rows, ref_ra=ref_ra, ref_dec=ref_dec,
                        max_rms_arcsec=config.max_rms_arcsec)
    # Enough stars per distortion term, else a lower order: overfitting bends the corners.
    sip = next((d for d in range(config.sip_degree, 1, -1) if i_src.size >= 3 * (d + 1) * (d + 2) // 2),
               None)
    centre = ((nx - 1) / 2, (ny - 1) / 2)
    wcs = tan_sip_through_points(x[i_src], y[i_src], ref_ra[ref_rows], ref_dec[ref_rows], centre=centre,
                                 degree=sip or 1)
    for _ in range(config.clip_iterations):
        resid = _residuals_arcsec(wcs, x[i_src], y[i_src], ref_ra[ref_rows], ref_dec[ref_rows])
        dist = np.hypot(resid[:, 0], resid[:, 1])
        # Robust per-axis sigma: the median distance of a 2-D Gaussian is 1.177 sigma.
        sigma = float(np.median(dist)) / 1.177
        keep = dist < max(config.clip_sigma * sigma, config.clip_floor_arcsec)
        if keep.all() or keep.sum() < config.min_matches:
            break
        i_src, ref_rows = i_src[keep], ref_rows[keep]
        wcs = tan_sip_through_points(x[i_src], y[i_src], ref_ra[ref_rows], ref_dec[ref_rows], centre=centre,
                                     degree=sip or 1)
    return _checked(wcs, x, y, i_src, ref_rows, ref_ra=ref_ra, ref_dec=ref_dec,
                    max_rms_arcsec=config.max_rms_arcsec)


def _checked(wcs: WCS, x: np.ndarray, y: np.ndarray, i_src: np.ndarray, ref_rows: np.ndarray, *, ref_ra: np.ndarray,
             ref_dec: np.ndarray, max_rms_arcsec: float) -> tuple[WCS, Table]:
    """The fitted WCS and the match table of detections ``i_src`` and references ``ref_rows``; AlgorithmError if
    the fit diverged (RMS above ``max_rms_arcsec``)."""
    resid = _residuals_arcsec(wcs, x[i_src], y[i_src], ref_ra[ref_rows], ref_dec[ref_rows])
    rms = float(np.sqrt(np.mean(np.sum(resid**2, axis=1))))
    if not np.isfinite(rms) or rms > max_rms_arcsec:
        raise AlgorithmError(f"astrometric fit diverged: {rms:.3f} arcsec RMS", stage="astrometry")
    log.debug("astrometry: %d matches, rms %.4f arcsec", i_src.size, rms)
    matches = Table({"x": x[i_src], "y": y[i_src], "src_index": i_src, "ref_index": ref_rows,
                     "ra": ref_ra[ref_rows], "dec": ref_dec[ref_rows],
                     "dra_arcsec": resid[:, 0], "ddec_arcsec": resid[:, 1]})
    matches.meta["rms_arcsec"] = rms
    return wcs, matches


def _fit_through_camera(x: np.ndarray, y: np.ndarray, i_src: np.ndarray, ref_rows: np.ndarray, *, ref_ra: np.ndarray,
                        ref_dec: np.ndarray, camera: CameraModel, header_wcs: WCS, shape: tuple[int, int],
                        config: AstrometryConfig) -> tuple[WCS, np.ndarray, np.ndarray]:
    """Fit camera field angles -> sky tangent plane with clipping; write the composition as a TAN-SIP WCS.

    The sky is projected about the header's reference point (the boresight on DECam): a pointing error of
    tens of arcsec changes the projection by much less than a milliarcsecond across a CCD, and the polynomial
    absorbs it.
    """
    tangent = tangent_plane(header_wcs.wcs.crval)
    order = config.camera_residual_order
    ny, nx = shape
    # Field angles normalised to [-1, 1] over the CCD: a term's coefficient is then its size at the CCD's edge.
    corners = np.column_stack(camera(np.array([0.0, nx - 1.0, 0.0, nx - 1.0]),
                                     np.array([0.0, 0.0, ny - 1.0, ny - 1.0])))
    centre, half = corners.mean(axis=0), np.ptp(corners, axis=0) / 2.0

    def terms(field_angles: np.ndarray) -> np.ndarray:
        return _poly_terms((field_angles - centre) / half / 100.0, order)

    # The prior as extra rows of the least-squares problem: each non-affine coefficient ~ N(0, prior).
    n_terms = _n_terms(order)
    prior_rows = np.zeros((n_terms - 3, n_terms))
    prior_rows[:, 3:] = np.eye(n_terms - 3) * config.camera_star_error_arcsec / config.camera_residual_prior_arcsec
    field = np.column_stack(camera(x, y))
    sky = np.column_stack(tangent.wcs_world2pix(ref_ra, ref_dec, 0))
    for attempt in range(config.camera_clip_iterations):
        design = terms(field[i_src])
        coeffs, *_ = np.linalg.lstsq(np.vstack([design, prior_rows]),
                                     np.vstack([sky[ref_rows], np.zeros((n_terms - 3, 2))]), rcond=None)
        dist = np.hypot(*((design @ coeffs - sky[ref_rows]) * 3600.0).T)
        sigma = float(np.median(dist)) / 1.177
        keep = dist < max(config.clip_sigma * sigma, config.clip_floor_arcsec)
        if keep.all() or keep.sum() < config.min_matches or attempt == config.camera_clip_iterations - 1:
            break
        i_src, ref_rows = i_src[keep], ref_rows[keep]

    def model_sky(px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        projected = terms(np.column_stack(camera(px, py))) @ coeffs
        return tangent.wcs_pix2world(projected[:, 0], projected[:, 1], 0)

    # Write the smooth composed model as a TAN-SIP through a dense grid of noise-free points.
    gx, gy = np.meshgrid(np.linspace(-20, nx + 19, 17), np.linspace(-20, ny + 19, 33))
    wcs = tan_sip_through_points(gx.ravel(), gy.ravel(), *model_sky(gx.ravel(), gy.ravel()),
                                 centre=((nx - 1) / 2, (ny - 1) / 2), degree=config.sip_degree)
    return wcs, i_src, ref_rows


def tan_sip_through_points(x: np.ndarray, y: np.ndarray, ra: np.ndarray, dec: np.ndarray, *,
                           centre: tuple[float, float], degree: int) -> WCS:
    """Least-squares TAN-SIP WCS through matched pixel and sky positions, about a given pixel.

    With CRPIX fixed, the tangent-plane coordinates are linear in CD and in the SIP coefficients (CD times
    them), so one linear solve gives all of them; a first solve with a constant term finds CRVAL, the sky at
    ``centre``. Equivalent to ``astropy.wcs.utils.fit_wcs_from_points`` for a fixed reference pixel, about
    100 times faster (no iterative optimiser).

    Parameters
    ----------
    x, y : numpy.ndarray
        0-based pixel positions.
    ra, dec : numpy.ndarray
        Their sky positions, degrees.
    centre : tuple of float
        0-based reference pixel (x, y).
    degree : int
        SIP polynomial degree; 1 gives a plain TAN WCS.
    """
    cx, cy = centre
    scale = 1000.0  # pixel offsets in units of 1000 pixels keep the normal equations well conditioned
    u, v = (np.asarray(x, float) - cx) / scale, (np.asarray(y, float) - cy) / scale
    powers = [(p, k - p) for k in range(1, degree + 1) for p in range(k, -1, -1)]
    terms = np.column_stack([u**p * v**q for p, q in powers])
    crval = np.array([np.degrees(np.arctan2(np.mean(np.sin(np.radians(ra))), np.mean(np.cos(np.radians(ra))))),
                      float(np.mean(dec))])
    for with_constant in (True, False):
        tangent = tangent_plane(crval)
        plane = np.column_stack(tangent.wcs_world2pix(ra, dec, 0))
        design = np.column_stack([np.ones_like(u), terms]) if with_constant else terms
        coeffs, *_ = np.linalg.lstsq(design, plane, rcond=None)
        if with_constant:
            crval = np.asarray(tangent.wcs_pix2world(coeffs[0, 0], coeffs[0, 1], 0), float)
    cd = coeffs[:2].T / scale  # rows: d(xi, eta) / d(u, v) per pixel
    wcs = WCS(naxis=2)
    wcs.wcs.crpix = [cx + 1.0, cy + 1.0]
    wcs.wcs.crval = crval
    wcs.wcs.cd = cd
    if degree < 2:
        wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        return wcs
    wcs.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
    # SIP: plane = CD @ (U + A(U, V), V + B(U, V)) with U, V in pixels.
    higher = np.linalg.solve(cd, coeffs[2:].T)  # (2, n_higher) in scaled units
    a = np.zeros((degree + 1, degree + 1))
    b = np.zeros((degree + 1, degree + 1))
    for (p, q), ca, cb in zip(powers[2:], higher[0], higher[1]):
        a[p, q] = ca / scale ** (p + q)
        b[p, q] = cb / scale ** (p + q)
    wcs.sip = Sip(a, b, None, None, wcs.wcs.crpix)
    return wcs


def tangent_plane(crval: np.ndarray) -> WCS:
    """A TAN projection about ``crval`` (degrees) whose 'pixels' are tangent-plane degrees."""
    tangent = WCS(naxis=2)
    tangent.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    tangent.wcs.crval = crval
    tangent.wcs.crpix = [1.0, 1.0]  # 0-based "pixel" = intermediate world coordinate
    tangent.wcs.cdelt = [1.0, 1.0]
    return tangent


def _n_terms(order: int) -> int:
    return (order + 1) * (order + 2) // 2


def _poly_terms(uv: np.ndarray, order: int) -> np.ndarray:
    """(n, n_terms) monomials u^i v^j, i + j <= order, of (n, 2) coordinates (scaled to about unity)."""
    u, v = uv[:, 0] * 100.0, uv[:, 1] * 100.0
    return np.column_stack([u**i * v**(k - i) for k in range(order + 1) for i in range(k + 1)])


def _vote_rotation_offset(x: np.ndarray, y: np.ndarray, ref_pix: np.ndarray, *, centre: tuple[float, float],
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
