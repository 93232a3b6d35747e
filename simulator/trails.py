"""Satellite and aircraft trails: straight lines of light across a CCD, in one exposure only.

A satellite in low Earth orbit crosses the focal plane in well under a second; the 4-m pupil is out of focus
for it (a few hundred km away), so its trail is wider than the PSF: a Gaussian cross-section of FWHM 1.2 to
4 arcsec, with a brightness per unit length drawn log-uniformly (from barely above the sky noise to saturated)
and a slow glint along it (tumbling). An aircraft's trail is its navigation lights: two parallel lines 20 to
60 pixels apart plus a strobe (bright dashes at a regular spacing along the middle). Trails are drawn per
CCD and exposure as a Poisson number of mean ``SimConfig.satellite_trails`` and ``aircraft_trails``, each
through a random point of the CCD at a random angle.
"""

from __future__ import annotations

import numpy as np

from simulator.world import PIXSCALE

FWHM_ARCSEC = (1.2, 4.0)
"""Cross-section FWHM of a satellite trail."""

ELECTRONS_PER_PIXEL = (30.0, 30000.0)
"""Electrons per pixel of trail length (log-uniform)."""

AIRCRAFT_SEPARATION_PIX = (20.0, 60.0)
"""Distance between an aircraft's two wing-light lines."""

_SIGMA_PER_FWHM = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


def _line(shape: tuple[int, int], x0: float, y0: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Distance across (perpendicular) and along a line through (x0, y0) at ``angle`` (radians from +x) of
    every pixel of an image of ``shape``."""
    y, x = np.ogrid[: shape[0], : shape[1]]
    dx, dy = x - x0, y - y0
    return dx * np.sin(angle) - dy * np.cos(angle), dx * np.cos(angle) + dy * np.sin(angle)


def _band(across: np.ndarray, sigma: float, per_pixel: float) -> np.ndarray:
    """A Gaussian cross-section of ``per_pixel`` electrons per unit length."""
    return (per_pixel / (np.sqrt(2.0 * np.pi) * sigma)) * np.exp(-0.5 * (across / sigma) ** 2)


def satellite_trail(shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """One satellite trail's electrons (float32 image of ``shape``) and its parameters (``x0``, ``y0``,
    ``angle``, ``sigma_pix``, ``per_pixel``)."""
    x0, y0 = rng.uniform(0, shape[1]), rng.uniform(0, shape[0])
    angle = rng.uniform(0.0, np.pi)
    sigma = rng.uniform(*FWHM_ARCSEC) / PIXSCALE * _SIGMA_PER_FWHM
    per_pixel = float(np.exp(rng.uniform(*np.log(ELECTRONS_PER_PIXEL))))
    across, along = _line(shape, x0, y0, angle)
    glint = 1.0 + 0.3 * np.sin(2.0 * np.pi * along / rng.uniform(300.0, 3000.0) + rng.uniform(0, 2 * np.pi))
    img = (_band(across, sigma, per_pixel) * glint).astype(np.float32)
    return img, dict(x0=x0, y0=y0, angle=angle, sigma_pix=sigma, per_pixel=per_pixel)


def aircraft_trail(shape: tuple[int, int], rng: np.random.Generator, psf_sigma_pix: float
                   ) -> tuple[np.ndarray, dict]:
    """One aircraft's trail (two wing-light lines and a strobe between them, each as sharp as the PSF: an
    aircraft is kilometres away) and its parameters (``x0``, ``y0``, ``angle``, ``separation_pix``,
    ``per_pixel``)."""
    x0, y0 = rng.uniform(0, shape[1]), rng.uniform(0, shape[0])
    angle = rng.uniform(0.0, np.pi)
    sep = rng.uniform(*AIRCRAFT_SEPARATION_PIX)
    per_pixel = float(np.exp(rng.uniform(np.log(300.0), np.log(30000.0))))
    across, along = _line(shape, x0, y0, angle)
    sigma = max(psf_sigma_pix, 1.0)
    lights = _band(across - sep / 2, sigma, per_pixel) + _band(across + sep / 2, sigma, per_pixel)
    period = rng.uniform(40.0, 150.0)
    strobe = (np.mod(along + rng.uniform(0, period), period) < 0.15 * period) * 3.0
    img = (lights + _band(across, sigma, per_pixel) * strobe).astype(np.float32)
    return img, dict(x0=x0, y0=y0, angle=angle, separation_pix=sep, per_pixel=per_pixel)


def trails(shape: tuple[int, int], rng: np.random.Generator, *, satellites: float, aircraft: float,
           psf_sigma_pix: float) -> np.ndarray:
    """Electrons of a CCD's satellite and aircraft trails in one exposure (Poisson numbers of means
    ``satellites`` and ``aircraft``); zeros when it has none."""
    out = np.zeros(shape, dtype=np.float32)
    for _ in range(int(rng.poisson(satellites)) if satellites > 0 else 0):  # a trail or two: image ops each
        out += satellite_trail(shape, rng)[0]
    for _ in range(int(rng.poisson(aircraft)) if aircraft > 0 else 0):
        out += aircraft_trail(shape, rng, psf_sigma_pix)[0]
    return out
