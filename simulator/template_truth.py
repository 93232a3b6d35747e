"""The truth a built template is checked against: the PSF of a weighted coadd of the simulator's exposures.

Every simulated CCD-visit has a Moffat PSF of FWHM ``seeing_fwhm_arcsec`` (``truth/template_exposures.ecsv``)
at the CCD's centre and its own ``beta`` (``truth/psf.ecsv``; its ellipticity of a few per cent is neglected
here, as is the change of size across the CCD, under 2%). A coadd weighting its inputs by ``w_i`` has the PSF
``sum(w_i M_i) / sum(w_i)`` (each ``M_i`` normalised to unit flux); its FWHM is found here on the continuous
radial profile, independently of how the pipeline measures PSF images.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from .render import MOFFAT_BETA


def moffat_profile(radius_arcsec: np.ndarray, fwhm_arcsec: float, beta: float = MOFFAT_BETA) -> np.ndarray:
    """Unit-flux circular Moffat surface brightness at ``radius_arcsec`` (per arcsec^2)."""
    alpha = fwhm_arcsec / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    return (beta - 1.0) / (np.pi * alpha**2) * (1.0 + (np.asarray(radius_arcsec) / alpha) ** 2) ** (-beta)


def coadd_fwhm_arcsec(seeing_fwhm_arcsec: np.ndarray, weights: np.ndarray, betas: np.ndarray | None = None) -> float:
    """FWHM of the weighted sum of unit-flux Moffats of the given FWHMs (and betas, default ``MOFFAT_BETA``)."""
    betas = np.full(len(seeing_fwhm_arcsec), MOFFAT_BETA) if betas is None else np.asarray(betas, float)
    r = np.linspace(0.0, 3.0 * float(np.max(seeing_fwhm_arcsec)), 30001)
    profile = sum(w * moffat_profile(r, s, b) for s, w, b in zip(seeing_fwhm_arcsec, weights, betas))
    half = profile[0] / 2.0
    k = int(np.argmax(profile < half))
    # Linear interpolation between the grid points around half maximum (the grid is 0.1 mas fine).
    r_half = r[k - 1] + (half - profile[k - 1]) * (r[k] - r[k - 1]) / (profile[k] - profile[k - 1])
    return float(2.0 * r_half)


def true_tile_fwhm_arcsec(inputs: Table, template_exposures: Table, psf_truth: Table | None = None) -> float:
    """The true PSF FWHM of a coadd whose provenance table is ``inputs`` (``visit``, ``ccdnum``, ``weight``), at a
    place that every input covers, from the simulator's template-epoch truth (and its ``truth/psf.ecsv``)."""
    seeing = {int(e): float(s) for e, s in zip(template_exposures["expnum"], template_exposures["seeing_fwhm_arcsec"])}
    beta = {} if psf_truth is None else {(int(e), int(c)): float(b) for e, c, b in
                                         zip(psf_truth["expnum"], psf_truth["ccdnum"], psf_truth["beta"])}
    betas = [beta.get((int(v), int(c)), MOFFAT_BETA) for v, c in zip(inputs["visit"], inputs["ccdnum"])]
    return coadd_fwhm_arcsec(np.array([seeing[int(v)] for v in inputs["visit"]]), np.asarray(inputs["weight"], float),
                             np.array(betas))
