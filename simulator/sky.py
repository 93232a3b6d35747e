"""The sky's light across a CCD: a gradient over the focal plane (moonlight, twilight, airglow) and, in z and Y,
fringes (interference of the night-sky OH emission lines in the CCD's thin layers).

Both multiply the flat sky level ``Exposure.sky_e``. The gradient is a plane across the focal plane, in a
random direction per exposure, changing the sky by up to ``SimConfig.sky_gradient`` (a fraction) from the
centre to the edge of the field (1.1 deg). The fringe pattern is fixed for a CCD (the same in every exposure
of a band: it is the CCD's thickness) and its amplitude scales with the sky: a sum of random plane waves of
40 to 120 pixel wavelength whose RMS is :data:`FRINGE_RMS` of the sky in z and Y (DES measured fringes of a
few tenths of a percent in z and under a percent in Y on DECam's thick, deep-depletion CCDs) times
``SimConfig.fringe_scale``.
"""

from __future__ import annotations

import functools

import numpy as np

from simulator.world import Exposure, name_tag, seeded_rng

from . import camera, optics

FRINGE_RMS = {"z": 0.002, "Y": 0.006}
"""RMS of the fringe pattern as a fraction of the sky, per band (none in g, r, i)."""

FRINGE_WAVES = 12
"""Plane waves summed in a CCD's fringe pattern."""

_FIELD_RADIUS_MM = 1.1 * 3600.0 / optics.PLATE_SCALE_ARCSEC_PER_MM


@functools.lru_cache(maxsize=4)
def fringe_pattern(seed: int, ccdnum: int) -> np.ndarray:
    """A CCD's fringe pattern (float32, trimmed frame), zero mean and unit RMS; the same in every band (only its
    amplitude differs)."""
    rng = seeded_rng(seed, name_tag("frng"), ccdnum)
    ny, nx = camera.CCD_SHAPE
    y = np.arange(ny, dtype=np.float32)[:, None]
    x = np.arange(nx, dtype=np.float32)[None, :]
    out = np.zeros(camera.CCD_SHAPE, dtype=np.float32)
    wavelength = rng.uniform(40.0, 120.0, FRINGE_WAVES)
    angle = rng.uniform(0.0, np.pi, FRINGE_WAVES)
    phase = rng.uniform(0.0, 2.0 * np.pi, FRINGE_WAVES)
    weight = rng.uniform(0.5, 1.0, FRINGE_WAVES)
    for k in range(FRINGE_WAVES):  # a dozen waves, each an image operation
        kx, ky = (2.0 * np.pi / wavelength[k]) * np.array([np.cos(angle[k]), np.sin(angle[k])], dtype=np.float32)
        out += np.float32(weight[k]) * np.sin(kx * x + ky * y + np.float32(phase[k]))
    out -= out.mean()
    out /= out.std()
    out.flags.writeable = False
    return out


def sky_gradient(exp: Exposure, ccd: camera.SimCcd, seed: int, amplitude: float) -> np.ndarray:
    """The sky's relative level across the CCD (float32, mean about 1): a plane over the focal plane rising by
    ``amplitude`` from the centre to the field's edge, in a direction drawn per exposure."""
    rng = seeded_rng(seed, name_tag("skyg"), exp.expnum)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    ny, nx = camera.CCD_SHAPE
    fx, fy = optics.pixel_to_focal(ccd, np.array([0.0, nx - 1.0, 0.0]), np.array([0.0, 0.0, ny - 1.0]))
    level = 1.0 + amplitude * (np.cos(angle) * fx + np.sin(angle) * fy) / _FIELD_RADIUS_MM
    # A plane on the focal plane is a plane on the CCD: from its value at three corners
    gx = (level[1] - level[0]) / (nx - 1.0)
    gy = (level[2] - level[0]) / (ny - 1.0)
    return (np.float32(level[0]) + np.float32(gx) * np.arange(nx, dtype=np.float32)[None, :]
            + np.float32(gy) * np.arange(ny, dtype=np.float32)[:, None])


def sky_image(exp: Exposure, ccd: camera.SimCcd, *, seed: int, gradient: float, fringe_scale: float) -> np.ndarray:
    """The sky in electrons per pixel across the CCD (float32): ``exp.sky_e`` times the gradient and, in z and Y,
    plus the fringes."""
    sky = np.full(camera.CCD_SHAPE, np.float32(exp.sky_e), dtype=np.float32)
    if gradient > 0:
        sky *= sky_gradient(exp, ccd, seed, gradient)
    rms = FRINGE_RMS.get(exp.band, 0.0) * fringe_scale
    if rms > 0:
        sky += np.float32(rms * exp.sky_e) * fringe_pattern(seed, ccd.ccdnum)
    return sky
