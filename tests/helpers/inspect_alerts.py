"""Alerts with real cutouts (stars on noise, cut by :func:`pipeline.cutouts.cutouts_at`) to decode and draw."""

from __future__ import annotations

import numpy as np
from astropy.wcs import WCS

from pipeline.cutouts import cutouts_at
from pipeline.types import MaskedImage
from streamer.alerts.schema import sample_alert

STAR_XY = ((60.0, 70.0), (120.0, 40.0), (30.0, 110.0))
"""Pixel positions (x, y) of the stars, one alert each."""
NOISE_NJY = 10.0
"""Noise sigma of the images; their variance is its square everywhere."""


def _wcs() -> WCS:
    """A TAN WCS of 0.26 arcsec pixels, north up."""
    return WCS({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 51.0, "CRVAL2": -28.2, "CRPIX1": 80.5,
                "CRPIX2": 80.5, "CDELT1": -0.26 / 3600, "CDELT2": 0.26 / 3600})


def star_image(amplitude: float, seed: int) -> MaskedImage:
    """160 x 160 pixels of noise with a star of peak ``amplitude`` (nJy) at each of :data:`STAR_XY`."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:160, :160]
    image = rng.normal(scale=NOISE_NJY, size=yy.shape)
    for x, y in STAR_XY:
        image += amplitude * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.0**2))
    return MaskedImage(image=image.astype(np.float32), mask=np.zeros(yy.shape, np.int32),
                       variance=np.full(yy.shape, NOISE_NJY**2, np.float32))


SCIENCE = dict(amplitude=500.0, seed=1)
"""Arguments of :func:`star_image` for the science image (the template's stars are fainter)."""


def alerts_with_cutouts(*, visit: int = 7, detector: int = 12, first_id: int = 900) -> list[dict]:
    """One alert per star, ``diaSourceId`` ``first_id + k`` (``diaObjectId`` ``first_id - 400 + k``), with ``k``
    previous DiaSources and real science, template and difference cutouts."""
    science, template = star_image(**SCIENCE), star_image(200.0, 2)
    difference = MaskedImage(image=science.image - template.image, mask=science.mask,
                             variance=science.variance + template.variance)
    x, y = np.array([p[0] for p in STAR_XY]), np.array([p[1] for p in STAR_XY])
    cutouts = cutouts_at(science, template, difference, x, y, wcs=_wcs(), bbox_size=np.full(len(x), 10))
    alerts = []
    for k, (sci, tmpl, diff) in enumerate(cutouts):
        alert = sample_alert(dia_object_id=first_id - 400 + k, dia_source_id=first_id + k, visit=visit,
                             detector=detector, n_prv_dia_sources=k)
        alert.update(cutoutScience=sci, cutoutTemplate=tmpl, cutoutDifference=diff)
        alerts.append(alert)
    return alerts
