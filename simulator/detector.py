"""The CCD's response beyond the linear: non-linearity near saturation and the brighter-fatter effect.

Non-linearity: the amplifier's output falls short of the charge as the signal approaches saturation,
``adu = s (1 - a s / s_sat)`` for a linear signal ``s`` (ADU above the bias) and the amplifier's saturation
``s_sat`` (ADU above the bias), so that the output is ``a`` (``SimConfig.nonlinearity``, about 1% on DECam
before its linearity correction) low at saturation and ``a / 10`` low at a tenth of it; the full well is
where the output, so reduced, is just above the saturation level (which is measured on the output).

Brighter-fatter: the charge already collected in a pixel repels the charge that follows, so bright stars are
broader than faint ones: the FWHM grows by ``b`` (``SimConfig.brighter_fatter``; a couple of percent on DECam
for stars near full well) times the star's peak charge over the full well. Templates (coadds of many
exposures, or rendered from the truth) carry their stars at the faint-star PSF.
"""

from __future__ import annotations

import numpy as np

from . import camera


def nonlinear(signal: np.ndarray, saturation: np.ndarray, amount: float) -> np.ndarray:
    """The amplifiers' output (ADU) for the linear ``signal`` (ADU above the bias, (ny, nx)) with saturation
    ``saturation`` (ADU above the bias, per column): ``signal (1 - amount signal / saturation)``, clipped at
    no signal."""
    frac = np.clip(signal / saturation[None, :], 0.0, None)
    return signal * (1.0 - np.float32(amount) * frac)


def full_well_e(ccd: camera.SimCcd) -> float:
    """The CCD's full well (electrons): the smaller of its amplifiers' saturation levels times their gains."""
    return float(min(a.saturation * a.gain for a in (ccd.left_amp, ccd.right_amp)))


def brighter_fatter(flux_e: np.ndarray, fwhm_pix: np.ndarray, beta: float, amount: float, full_well: float
                    ) -> np.ndarray:
    """The factor by which each star's FWHM grows: ``1 + amount min(peak / full_well, 1)``, ``peak`` its central
    pixel's charge under a Moffat of ``beta`` (``flux (beta - 1) / (pi alpha^2)``)."""
    alpha = np.asarray(fwhm_pix, float) / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    peak = np.asarray(flux_e, float) * (beta - 1.0) / (np.pi * alpha**2)
    return 1.0 + amount * np.minimum(peak / full_well, 1.0)
