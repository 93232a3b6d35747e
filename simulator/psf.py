"""The simulated PSF of one CCD in one exposure: an elliptical Moffat whose shape changes across the CCD.

The exposure sets the seeing (the FWHM at each CCD's centre); the CCD's PSF takes its Moffat ``beta``, its
ellipticity at the centre and the linear change of size and ellipticity across the CCD from one of the real
DECam PSFEx models measured in ``simulator/data/psfex_shapes.ecsv`` (14 models of 6 CCDs in g, r and z; see
the README beside it), drawn for each exposure and CCD, its ellipticity pattern turned by a random angle.
``SimConfig(psf_variation=False)`` gives the circular Moffat of ``beta = MOFFAT_BETA`` everywhere instead.

Ellipticity is the distortion of the second moments, ``e1 = (Ixx - Iyy) / (Ixx + Iyy)``, ``e2 = 2 Ixy /
(Ixx + Iyy)``, in trimmed-pixel axes; :func:`simulator.render.moffat_r2` renders it area-preserving. The
table's ellipticities are Gaussian-weighted moments, which round a profile: rendered as the profile's own, they
make PSFs somewhat rounder than the real ones (weighted alike, about 0.6 of the real ellipticity).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import numpy as np
from astropy.table import Table

from .camera import CCD_SHAPE
from .config import SimConfig
from .render import MOFFAT_BETA, noise_equivalent_area
from .world import Exposure, name_tag, seeded_rng

_HALF = ((CCD_SHAPE[1] - 1) / 2.0, (CCD_SHAPE[0] - 1) / 2.0)


@dataclass(frozen=True)
class CcdPsf:
    """The PSF over one CCD: FWHM (pixels) and ellipticity at the centre, their change per half CCD (x, y)."""

    fwhm_pix: float
    beta: float = MOFFAT_BETA
    e1: float = 0.0
    e2: float = 0.0
    dsize: tuple[float, float] = (0.0, 0.0)
    de1: tuple[float, float] = (0.0, 0.0)
    de2: tuple[float, float] = (0.0, 0.0)

    def at(self, x, y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """FWHM (pixels), e1 and e2 at trimmed pixels (x, y)."""
        s = (np.asarray(x, float) - _HALF[0]) / _HALF[0]
        t = (np.asarray(y, float) - _HALF[1]) / _HALF[1]
        fwhm = self.fwhm_pix * (1.0 + self.dsize[0] * s + self.dsize[1] * t)
        return fwhm, self.e1 + self.de1[0] * s + self.de1[1] * t, self.e2 + self.de2[0] * s + self.de2[1] * t

    @property
    def nea(self) -> float:
        """Noise-equivalent area (pixels) at the centre."""
        return noise_equivalent_area(self.fwhm_pix, beta=self.beta)


@functools.cache
def _shapes() -> Table:
    return Table.read((resources.files("simulator") / "data" / "psfex_shapes.ecsv").read_text(), format="ascii.ecsv")


def _turned(e1: float, e2: float, angle: float) -> tuple[float, float]:
    c, s = np.cos(2 * angle), np.sin(2 * angle)
    return float(c * e1 - s * e2), float(s * e1 + c * e2)


def ccd_psf(cfg: SimConfig, exp: Exposure, ccdnum: int) -> CcdPsf:
    """The PSF of CCD ``ccdnum`` in exposure ``exp`` (the same for the same seed, exposure and CCD)."""
    if not cfg.psf_variation:
        return CcdPsf(fwhm_pix=exp.fwhm_pix)
    rng = seeded_rng(cfg.seed, name_tag("psf_"), exp.expnum, ccdnum)
    row = _shapes()[int(rng.integers(len(_shapes())))]
    angle = float(rng.uniform(0.0, np.pi))
    e1, e2 = _turned(float(row["e1"]), float(row["e2"]), angle)
    de1x, de2x = _turned(float(row["de1_dx"]), float(row["de2_dx"]), angle)
    de1y, de2y = _turned(float(row["de1_dy"]), float(row["de2_dy"]), angle)
    return CcdPsf(fwhm_pix=exp.fwhm_pix, beta=float(row["moffat_beta"]), e1=e1, e2=e2,
                  dsize=(float(row["dsize_dx"]), float(row["dsize_dy"])), de1=(de1x, de1y), de2=(de2x, de2y))
