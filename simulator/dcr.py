"""Differential chromatic refraction: the atmosphere lifts blue light more than red towards the zenith, so
within one filter a star's position depends on its colour, more so at high airmass and in the blue.

A star of colour ``g - r`` is displaced towards the zenith, relative to one of :data:`REFERENCE_COLOUR` (the
mean star's, which an astrometric fit absorbs), by ``DCR_PER_MAG[band] * (REFERENCE_COLOUR - (g - r)) * tan(z)``
arcsec: about 0.1" per magnitude of colour at ``tan z = 1`` in g (the effective wavelength moves by some 25 nm
across the stellar locus where the refraction changes by about 4" per micron), a third of that in r and less
redder still. The zenith lies along the parallactic angle, drawn per exposure. Sources with no colour (the
transients and supernovae, whose truth positions are where they are rendered) are not displaced.
"""

from __future__ import annotations

import numpy as np

from simulator.world import Exposure, name_tag, seeded_rng

DCR_PER_MAG = {"g": 0.10, "r": 0.03, "i": 0.015, "z": 0.01, "Y": 0.008}
"""Displacement per magnitude of g - r at tan(z) = 1, arcsec, per band."""

REFERENCE_COLOUR = 0.7
"""g - r of no displacement."""


def dcr_offsets(exp: Exposure, seed: int, g_minus_r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(east, north) displacement in arcsec of sources of colour ``g_minus_r`` in ``exp`` (non-finite or
    placeholder colours: none)."""
    colour = np.asarray(g_minus_r, float)
    colour = np.where(np.isfinite(colour) & (np.abs(colour) < 5.0), colour, REFERENCE_COLOUR)
    tan_z = np.tan(np.arccos(1.0 / exp.airmass))
    shift = DCR_PER_MAG[exp.band] * (REFERENCE_COLOUR - colour) * tan_z
    parallactic = seeded_rng(seed, name_tag("dcr_"), exp.expnum).uniform(0.0, 2.0 * np.pi)
    return shift * np.sin(parallactic), shift * np.cos(parallactic)
