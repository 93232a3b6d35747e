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
    data = np.ascontiguousarray(image, dtype=np.float32)
    bad = (mask & int(UNUSABLE)) != 0
    bkg = sep.Background(data, mask=bad, bw=config.box_size_pix, bh=config.box_size_pix,
                         fw=config.filter_size, fh=config.filter_size)
    return bkg.back(dtype=np.float32), float(bkg.globalrms)
