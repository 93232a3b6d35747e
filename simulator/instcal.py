"""Simulated NOIRLab Community Pipeline (CP) InstCal products: what a DECam user downloads instead of raws.

Per exposure three multi-extension files in the CP's format and names (``instcal/c4d_<yymmdd>_<hhmmss>_<kind>_
<band>_v1.fits[.fz]``, kind ``ooi`` image, ``oow`` weight, ``ood`` data quality), each with the exposure's
primary header as the CP writes it (``PROCTYPE = 'InstCal'``, ``MAGZERO``, ``MAGZPT``, ``PHOTREF``...) and one
extension per CCD (``EXTNAME = DETPOS``, ``CCDNUM``, ``GAINA/B``, ``RDNOISEA/B``, ``SATURATA/B``,
``SATURATE``, ``FWHM``, ``AVSKY``, ``AVSIG``, ``ARAWGAIN``, the TPV WCS), on the CP's 2046 x 4094 pixels
(one edge pixel trimmed on every side: ``LTV1 = LTV2 = -1``). Headers follow
``shared/reference/decam/headers/fitsheader-decam-instcal-*.yaml``.

Signal model of one CCD, in the trimmed CCD frame of :mod:`simulator.core` (electrons ``e``):

    detected   = Poisson(flat * true_e) + cosmic rays, clipped at the full well with bleed trails, + read noise
    ooi (ADU)  = detected / flat / g          g = ARAWGAIN, the mean gain of the exposure's amplifiers
    oow        = g**2 / (sky_e / flat + read_noise**2 / flat**2)    sky and read noise only, as the CP's
    ood        = CP codes: 1 known defect (its pixels set to the sky, as the CP's fixpix), 3 saturated,
                 4 bleed-trail end, 5 cosmic ray (the bright ones; the CP misses faint ones); weight 0 there

One ADU is the same flux on every CCD (the CP's flat fields span the focal plane), so one ``MAGZERO`` (AB
magnitude of 1 ADU in the exposure) serves the exposure: ``MAGZERO = zero_point - 2.5 log10(g)`` with the
truth's ``zero_point`` (AB magnitude of 1 electron). A reader that takes a CCD's own gain G (the mean of its
GAINA and GAINB) as electrons per ADU counts ``true_e * G / g`` and should find the zero point
``MAGZERO + 2.5 log10(G)``. The TPV polynomial (PV1_0..10, PV2_0..10, third order) is a least-squares fit to
the simulator's true optics on a grid (worst residual under 5 mas), about a reference point off the true
boresight by up to :data:`CP_WCS_ERROR_ARCSEC`, the optics moved with it on the sky (the CP's own
astrometric error: the pipeline's fit against the reference stars removes it). Imports nothing from the
pipeline.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
from astropy.io import fits
from astropy.time import Time

from simulator import optics
from simulator.calibrations import bias_levels, flat_field
from simulator.headers import primary_header, true_wcs
from simulator.images import extension_order, true_electrons
from simulator.render import bleed, cosmic_rays
from simulator.sky import sky_gradient
from simulator.sources import Sources
from simulator.world import Exposure, name_tag, offset_sky, seeded_rng

from . import camera
from .camera import CCD_SHAPE
from .config import SimConfig

__all__ = ["CP_WCS_ERROR_ARCSEC", "KINDS", "instcal_path", "render_instcal_ccd", "tpv_cards",
           "write_instcal"]

KINDS = ("ooi", "oow", "ood")
"""The CP's image, weight and data-quality products."""

CP_WCS_ERROR_ARCSEC = 0.05
"""Largest offset of the CP's TPV reference point from the true boresight (CP ``RADSTD`` ~ 0.05 arcsec)."""

CR_FLAG_SIGMA = 5.0
"""Cosmic-ray pixels at least this many sky sigma bright are flagged (code 5); fainter ones are missed."""

_PRODTYPE = {"ooi": "image", "oow": "wtmap", "ood": "dqmask"}

_TPV_POWERS = ((0, 0), (1, 0), (0, 1), None, (2, 0), (1, 1), (0, 2), (3, 0), (2, 1), (1, 2), (0, 3))
"""TPV term k of PV1_k: powers (i, j) of (xi', eta'); k = 3 (the radial term) is not used. PV2_k swaps them."""


def instcal_path(exp: Exposure, kind: str, *, compressed: bool = False) -> PurePosixPath:
    """Relative path of one CP product of an exposure, named as the CP names it (UTC of the shutter opening)."""
    stamp = Time(exp.mjd_obs, format="mjd", scale="utc").strftime("%y%m%d_%H%M%S")
    return PurePosixPath("instcal") / f"c4d_{stamp}_{kind}_{exp.band}_v1.fits{'.fz' if compressed else ''}"


def _tpv_terms(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.column_stack([u**i * v**j for p in _TPV_POWERS if p is not None for i, j in [p]])


def tpv_cards(ccd, ra0: float, dec0: float, *, crval: tuple[float, float]) -> tuple[list, float]:
    """TPV WCS cards of a CCD in CP pixels (1-based, the trimmed frame shifted by one pixel), fitted to the true
    optics of boresight (ra0, dec0) about ``crval``; and the worst residual (mas) at 300 random points.

    Raises
    ------
    RuntimeError
        The third-order TPV does not represent the optics to 5 mas.
    """
    gx, gy = np.meshgrid(np.linspace(0, CCD_SHAPE[1] - 1, 17), np.linspace(0, CCD_SHAPE[0] - 1, 33))
    gx, gy = gx.ravel(), gy.ravel()
    ra, dec = optics.pixel_to_sky(ccd, gx, gy, ra0, dec0)
    xi, eta = (np.degrees(a) for a in optics.sky_to_tangent(ra, dec, *crval))
    # 1-based CP pixel of trimmed 0-based pixel g: (g - 1) + 1 = g (one edge pixel trimmed)
    px, py = gx, gy
    affine, *_ = np.linalg.lstsq(np.column_stack([px, py, np.ones_like(px)]), np.column_stack([xi, eta]),
                                 rcond=None)
    cd = affine[:2].T
    crpix = -np.linalg.solve(cd, affine[2])
    u, v = cd @ np.vstack([px - crpix[0], py - crpix[1]])
    pv1, *_ = np.linalg.lstsq(_tpv_terms(u, v), xi, rcond=None)
    pv2, *_ = np.linalg.lstsq(_tpv_terms(v, u), eta, rcond=None)
    ks = [k for k, p in enumerate(_TPV_POWERS) if p is not None]
    cards = [("WCSAXES", 2, "WCS Dimensionality"), ("CTYPE1", "RA---TPV", "Coordinate type"),
             ("CTYPE2", "DEC--TPV", "Coordinate type"), ("CUNIT1", "deg", ""), ("CUNIT2", "deg", ""),
             ("CRVAL1", float(crval[0]), "[deg] WCS Reference Coordinate (RA)"),
             ("CRVAL2", float(crval[1]), "[deg] WCS Reference Coordinate (DEC)"),
             ("CRPIX1", float(crpix[0]), "Coordinate Reference axis 1"),
             ("CRPIX2", float(crpix[1]), "Coordinate Reference axis 2"),
             ("CD1_1", float(cd[0, 0]), ""), ("CD1_2", float(cd[0, 1]), ""),
             ("CD2_1", float(cd[1, 0]), ""), ("CD2_2", float(cd[1, 1]), "")]
    for axis, coeffs in ((1, pv1), (2, pv2)):
        values = dict(zip(ks, coeffs))
        cards += [(f"PV{axis}_{k}", float(values.get(k, 0.0)), "") for k in range(11)]
    rng = np.random.default_rng(ccd.ccdnum)
    tx, ty = rng.uniform(0, CCD_SHAPE[1] - 1, 300), rng.uniform(0, CCD_SHAPE[0] - 1, 300)
    tu, tv = cd @ np.vstack([tx - crpix[0], ty - crpix[1]])
    fra, fdec = optics.tangent_to_sky(np.radians(_tpv_terms(tu, tv) @ pv1), np.radians(_tpv_terms(tv, tu) @ pv2),
                                      *crval)
    tra, tdec = optics.pixel_to_sky(ccd, tx, ty, ra0, dec0)
    resid_mas = float(np.max(np.hypot((fra - tra) * np.cos(np.radians(tdec)), fdec - tdec)) * 3.6e6)
    if resid_mas > 5.0:
        raise RuntimeError(f"TPV fit residual {resid_mas:.2f} mas > 5 mas for CCD {ccd.ccdnum}")
    return cards, resid_mas


def render_instcal_ccd(cfg: SimConfig, exp: Exposure, ccd, src: Sources, *, adu_gain: float) -> dict[str, object]:
    """One CCD's CP planes on the CP's (4094, 2046) pixels, with the numbers its header states.

    Parameters
    ----------
    adu_gain : float
        Electrons per ADU of the image (the exposure's ``g``).

    Returns
    -------
    dict
        ``ooi`` (float32 ADU), ``oow`` (float32 ADU^-2), ``ood`` (int16 CP codes), ``cosmic_rays`` (bool, the
        truth in the same pixels), ``saturate_adu``, ``avsky_adu``, ``avsig_adu``, ``nsatpix``.
    """
    rng = seeded_rng(cfg.seed, name_tag("cpin"), exp.expnum, ccd.ccdnum)
    true_e = true_electrons(cfg, exp, ccd, src)
    flat = flat_field(cfg.seed, ccd.ccdnum, exp.band)
    detected = rng.poisson(true_e * flat).astype(np.float32)
    crs = cosmic_rays(CCD_SHAPE, cfg.cosmic_rays, rng)
    detected += crs
    level = bias_levels(cfg.seed, ccd.ccdnum)
    full_well = np.empty(CCD_SHAPE[1], dtype=np.float32)
    read_noise = np.empty(CCD_SHAPE[1], dtype=np.float32)
    for amp, cols in ((ccd.left_amp, slice(0, 1024)), (ccd.right_amp, slice(1024, 2048))):
        full_well[cols] = (amp.saturation - level[amp.name] + 300.0) * amp.gain
        read_noise[cols] = amp.read_noise
    saturated = bleed(detected, full_well)
    detected += rng.normal(0.0, 1.0, CCD_SHAPE).astype(np.float32) * read_noise[None, :]
    gain = float(adu_gain)
    image = detected / flat / np.float32(gain)
    sky_var_e = (exp.sky_e * flat + read_noise[None, :] ** 2) / flat**2
    weight = (np.float32(gain**2) / sky_var_e).astype(np.float32)
    dq = np.zeros(CCD_SHAPE, dtype=np.int16)
    sky_sigma_adu = float(np.sqrt(exp.sky_e + float(np.mean(read_noise)) ** 2)) / gain
    for x0, y0, w, h in camera.defect_boxes(ccd.ccdnum):  # a few hundred boxes, slice assignments
        dq[y0:y0 + h, x0:x0 + w] = 1
        # the CP's fixpix fills defects from their surroundings: here the sky and its noise
        filled = image[y0:y0 + h, x0:x0 + w]
        filled[...] = np.float32(exp.sky_e / gain) + rng.normal(0.0, sky_sigma_adu, filled.shape).astype(np.float32)
    dq[crs > CR_FLAG_SIGMA * np.sqrt(sky_var_e)] = 5
    bleed_end = (np.roll(saturated, 1, axis=0) | np.roll(saturated, -1, axis=0)) & ~saturated
    dq[bleed_end] = 4
    dq[saturated] = 3
    weight[dq != 0] = 0.0
    inner = (slice(1, -1), slice(1, -1))
    # the CP's AVSKY: the mean sky over the CCD (the sky has a gradient over the focal plane)
    sky_adu = exp.sky_e * (float(np.mean(sky_gradient(exp, ccd, cfg.seed, cfg.sky_gradient)))
                           if cfg.sky_gradient > 0 else 1.0) / gain
    return {"ooi": np.ascontiguousarray(image[inner], dtype=np.float32),
            "oow": np.ascontiguousarray(weight[inner]), "ood": np.ascontiguousarray(dq[inner]),
            "cosmic_rays": crs[inner] > 0,
            "saturate_adu": float(full_well.min() / gain / flat.max()),
            "avsky_adu": float(sky_adu), "avsig_adu": float(np.sqrt(np.median(sky_var_e)) / gain),
            "nsatpix": int(saturated.sum())}


def _primary(exp: Exposure, cfg: SimConfig, kind: str, n_ext: int, *, magzero: float, name: str) -> fits.Header:
    """The CP's primary header: the raw's exposure keywords, then the CP's processing and photometry keywords."""
    h = primary_header(exp, cfg, n_ext)
    for key in ("FILENAME", "DTACQNAM", "RECNO"):
        h.remove(key, ignore_missing=True)
    h["PROCTYPE"] = ("InstCal", "Data processing level")
    h["PRODTYPE"] = (_PRODTYPE[kind], "Data product type")
    cards = [("MJD-END", exp.mjd_obs + exp.exptime / 86400.0, "Exposure end"),
             ("DTNSANAM", name, "file name in NOIRLab Archive"),
             ("BAND", exp.band, ""), ("NITE", Time(exp.mjd_obs - 0.5, format="mjd").strftime("%Y%m%d"), ""),
             ("PHOTFLAG", 1, ""), ("DES_EXT", "IMAGE", ""), ("RADECSYS", "ICRS", ""), ("SCAMPFLG", 0, ""),
             ("PHOTREF", "Gaia", "Photometric ref. catalog"),
             ("MAGZERO", round(magzero, 4), "[mag] Magnitude zero point"),
             ("MAGZPT", round(magzero - 2.5 * np.log10(exp.exptime), 4), "[mag] Magnitude zero point per sec"),
             ("RADSTD", CP_WCS_ERROR_ARCSEC, "[arcsec] Astrometric RMS"),
             ("WCSCAL", "Successful", "WCS calibration"), ("PLVER", "V4.8.2a", "Processing version"),
             ("FILENAME", name.removesuffix(".fz"), "")]
    for key, value, comment in cards:
        h[key] = (value, comment)
    return h


def _extension(ccd, planes: dict[str, object], wcs_cards: list, exp: Exposure) -> fits.Header:
    """A CP image extension header (before the data cards astropy adds)."""
    h = fits.Header()
    cards = [("EXTNAME", ccd.detpos, "Extension name"), ("INHERIT", True, "Inherits global header"),
             ("DETECTOR", f"S3-{100 + ccd.ccdnum}_{107000 + 37 * ccd.ccdnum}-8-3", "Detector Identifier"),
             ("CCDNUM", ccd.ccdnum, "CCD number"), ("DETPOS", ccd.detpos, "detector position ID")]
    for a in ("A", "B"):
        amp = ccd.amps[a]
        cards += [(f"GAIN{a}", amp.gain, f"[electrons/adu] Gain for amp {a}"),
                  (f"RDNOISE{a}", amp.read_noise, f"[electrons] Read noise for amp {a}"),
                  (f"SATURAT{a}", float(amp.saturation), f"[adu] Saturation for amp {a}")]
    cards += wcs_cards
    cards += [("LTM1_1", 1.0, ""), ("LTM2_2", 1.0, ""), ("LTV1", -1.0, ""), ("LTV2", -1.0, ""),
              ("FLATMEDA", ccd.amps["A"].gain, ""), ("FLATMEDB", ccd.amps["B"].gain, ""),
              ("SATURATE", round(planes["saturate_adu"], 3), "[adu] Saturation level of the image"),
              ("NSATPIX", planes["nsatpix"], "Number of saturated pixels"),
              ("FWHM", round(exp.fwhm_pix, 4), "[pixel] Median FWHM"), ("ELLIPTIC", 0.05, "Median ellipticity"),
              ("AVSKY", round(planes["avsky_adu"], 4), "[adu] Average sky"),
              ("AVSIG", round(planes["avsig_adu"], 4), "[adu] Average sky sigma"),
              ("ARAWGAIN", round(planes["adu_gain"], 4), "[e/adu] Average raw gain"),
              ("WAT0_001", "system=image", ""), ("WAT1_001", "wtype=tpv axtype=ra", ""),
              ("WAT2_001", "wtype=tpv axtype=dec", "")]
    for key, value, comment in cards:
        h[key] = (value, comment)
    return h


def _hdu(kind: str, data: np.ndarray, header: fits.Header, compress: bool, *, dither_seed: int
         ) -> fits.hdu.base.ExtensionHDU:
    """One CCD's extension, plain or fpack-compressed as the CP does (RICE_1; floats quantised at 1/4 of
    their noise, FZQVALUE = 4, with a dither seed of their own so that every run writes the same bytes).

    The image is tiled by rows as the CP's; the weight as one tile (a row of zero weights, a defect across the
    CCD, cannot be quantised and would fall back to GZIP, whose stream carries the time); the integer mask is
    compressed losslessly.
    """
    if not compress:
        return fits.ImageHDU(data, header=header)
    if kind == "ood":
        return fits.CompImageHDU(data, header=header, compression_type="RICE_1")
    if kind == "ooi":
        return fits.CompImageHDU(data, header=header, compression_type="RICE_1", quantize_level=4.0,
                                 quantize_method=1, dither_seed=dither_seed, tile_shape=(1, data.shape[1]))
    # SUBTRACTIVE_DITHER_2 keeps the zero weights of flagged pixels exactly 0
    return fits.CompImageHDU(data, header=header, compression_type="RICE_1", quantize_level=4.0,
                             quantize_method=2, dither_seed=dither_seed, tile_shape=data.shape)


def write_instcal(root: Path, cfg: SimConfig, exp: Exposure, src: Sources, progress_cb=None) -> Path:
    """Write the ooi, oow and ood files of one exposure and its true WCS; return the ooi path.

    The truth (``truth/wcs``, ``truth/cosmic_rays`` in small mode) is in the trimmed CCD frame as for raws;
    a CP pixel (x, y) is trimmed pixel (x + 1, y + 1).
    """
    rng = seeded_rng(cfg.seed, name_tag("cpws"), exp.expnum)
    error = CP_WCS_ERROR_ARCSEC * np.sqrt(rng.random())
    phi = rng.uniform(0.0, 2.0 * np.pi)
    crval = offset_sky(exp.ra, exp.dec, error * np.cos(phi), error * np.sin(phi))
    adu_gain = float(np.mean([a.gain for c in cfg.ccds for a in camera.ccd(c).amps.values()]))
    magzero = exp.zero_point - 2.5 * np.log10(adu_gain)
    order = extension_order(cfg.ccds)
    paths = {kind: root / instcal_path(exp, kind, compressed=cfg.compress) for kind in KINDS}
    hdus: dict[str, list] = {kind: [fits.PrimaryHDU(header=_primary(exp, cfg, kind, len(order), magzero=magzero,
                                                                    name=paths[kind].name))] for kind in KINDS}
    truth = [fits.PrimaryHDU()]
    for c in order:
        ccd = camera.ccd(c)
        planes = render_instcal_ccd(cfg, exp, ccd, src, adu_gain=adu_gain) | {"adu_gain": adu_gain}
        cards, _ = tpv_cards(ccd, *crval, crval=crval)  # the CP's solution: the truth moved by its error
        header = _extension(ccd, planes, cards, exp)
        for kind in KINDS:
            hdus[kind].append(_hdu(kind, planes[kind], header, cfg.compress,
                                   dither_seed=1 + (exp.expnum * 62 + c) % 10000))
        w, _ = true_wcs(ccd, exp.ra, exp.dec)
        th = w.to_header(relax=True)
        th["EXTNAME"], th["CCDNUM"], th["DETPOS"] = ccd.detpos, c, ccd.detpos
        truth.append(fits.ImageHDU(header=th))
        if cfg.small:
            cr_path = root / "truth" / "cosmic_rays" / f"{exp.expnum:08d}_{c:02d}.npy"
            cr_path.parent.mkdir(parents=True, exist_ok=True)
            np.save(cr_path, np.pad(planes["cosmic_rays"], 1))
        if progress_cb:
            progress_cb()
    for kind in KINDS:
        paths[kind].parent.mkdir(parents=True, exist_ok=True)
        fits.HDUList(hdus[kind]).writeto(paths[kind], overwrite=True)
    wpath = root / "truth" / "wcs" / f"{exp.expnum:08d}.fits"
    wpath.parent.mkdir(parents=True, exist_ok=True)
    truth[0].header["EXPNUM"] = exp.expnum
    truth[0].header["RA0"], truth[0].header["DEC0"] = exp.ra, exp.dec
    fits.HDUList(truth).writeto(wpath, overwrite=True)
    return paths["ooi"]
