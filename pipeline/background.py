"""Sky background model (sep's mesh-interpolated background), masked pixels excluded."""

from __future__ import annotations

import numpy as np
import sep
from pydantic import BaseModel, ConfigDict, Field

from pipeline.masks import UNUSABLE


class BackgroundConfig(BaseModel):
    """Background mesh configuration."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    box_size_pix: int = Field(128, ge=4, le=4096, description="Mesh cell size, pixels.")
    filter_size: int = Field(3, ge=1, le=31, description="Median filter over mesh cells.")


def estimate_background(image: np.ndarray, mask: np.ndarray, *, config: BackgroundConfig = BackgroundConfig()
                        ) -> tuple[np.ndarray, float]:
    """Model the sky of ``image``.

    Parameters
    ----------
    image : numpy.ndarray
        (ny, nx) float32.
    mask : numpy.ndarray
        (ny, nx) int32 mask bits; UNUSABLE pixels are ignored.

    Returns
    -------
    background : numpy.ndarray
        (ny, nx) float32 sky model.
    global_rms : float
        Global background RMS, image units.
    """
    bkg = _sep_background(np.ascontiguousarray(image, dtype=np.float32), mask, config)
    return bkg.back(dtype=np.float32), float(bkg.globalrms)


def subtract_background(image: np.ndarray, mask: np.ndarray, *, config: BackgroundConfig = BackgroundConfig()
                        ) -> tuple[np.ndarray, float]:
    """``image`` minus its sky model (:func:`estimate_background`'s, the same numbers), without making the
    model image: sep subtracts it row by row from a float32 copy.

    Returns
    -------
    subtracted : numpy.ndarray
        (ny, nx) float32.
    global_rms : float
    """
    subtracted = np.array(image, dtype=np.float32, order="C")
    bkg = _sep_background(subtracted, mask, config)
    bkg.subfrom(subtracted)
    return subtracted, float(bkg.globalrms)


def _sep_background(data: np.ndarray, mask: np.ndarray, config: BackgroundConfig) -> sep.Background:
    """sep's mesh background of a C-contiguous float32 ``data``, UNUSABLE pixels of ``mask`` excluded."""
    bad = (mask & int(UNUSABLE)) != 0
    return sep.Background(data, mask=bad, bw=config.box_size_pix, bh=config.box_size_pix,
                          fw=config.filter_size, fh=config.filter_size)
