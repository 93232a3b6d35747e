"""Satellite and aircraft trails on the difference image, found from the detections' own footprints.

A trail brighter than the detection threshold is detected as long, thin footprints (one, or several where the
noise or a glint breaks it) lying on one straight line across the CCD; a real DIASource's footprint is the
PSF's, round. A footprint whose second moments make it at least ``min_elongation`` times longer than wide and
``min_length_sigma`` PSF sigmas long (RMS along its axis) defines a line; every detection within
``half_width_pix`` of any such line, across the whole CCD, is taken as part of the trail (Rubin masks the
same trails with a Hough transform of the detection mask, ``maskStreaks``; the footprints' moments give the
lines here without another pass over the pixels).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class StreakConfig(BaseModel):
    """Which detections are taken for a trail's."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    min_elongation: float = Field(4.0, gt=1.0, le=1000.0, description="Least ratio of the major to the minor "
                                                                      "RMS size of a trail's footprint.")
    min_length_sigma: float = Field(4.0, gt=0, le=1000.0, description="Least RMS size along the major axis of a "
                                                                      "trail's footprint, in PSF sigmas.")
    half_width_pix: float = Field(12.0, gt=0, le=500.0, description="Detections closer than this to a trail's "
                                                                    "line are the trail's, pixels.")


def streak_lines(moments: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, *, psf_sigma_pix: float,
                 config: StreakConfig = StreakConfig()) -> np.ndarray:
    """Lines of the trail-like footprints: ``(n_lines, 3)`` of ``x0, y0, angle`` (radians from +x).

    ``moments``: the footprints' second moments ``x2``, ``y2``, ``xy`` (pixels^2), at positions ``x``, ``y``.
    """
    x2, y2, xy = (np.asarray(moments[k], float) for k in ("x2", "y2", "xy"))
    mean, half_diff = 0.5 * (x2 + y2), np.sqrt(0.25 * (x2 - y2) ** 2 + xy**2)
    major2, minor2 = mean + half_diff, np.maximum(mean - half_diff, 1e-6)
    trail = (major2 >= config.min_elongation**2 * minor2) & (major2 >= (config.min_length_sigma * psf_sigma_pix) ** 2)
    angle = 0.5 * np.arctan2(2.0 * xy, x2 - y2)
    return np.column_stack([np.asarray(x, float)[trail], np.asarray(y, float)[trail], angle[trail]])


def on_streaks(x: np.ndarray, y: np.ndarray, lines: np.ndarray, *, config: StreakConfig = StreakConfig()
               ) -> np.ndarray:
    """True for each position (``x``, ``y``) within ``config.half_width_pix`` of one of ``lines``
    (:func:`streak_lines`)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(lines) == 0 or x.size == 0:
        return np.zeros(x.size, bool)
    x0, y0, angle = (lines[:, k][:, None] for k in range(3))
    across = (x[None, :] - x0) * np.sin(angle) - (y[None, :] - y0) * np.cos(angle)
    return (np.abs(across) < config.half_width_pix).any(axis=0)
