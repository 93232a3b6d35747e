"""The simulated camera's calibrations: bias levels and structure, flat fields with their drifts."""

from __future__ import annotations

import functools

import numpy as np

from simulator.camera import CCD_SHAPE, PIXEL_SIZE_MM, RAW_SHAPE
from simulator.world import BANDS, name_tag, seeded_rng

from . import camera
from .config import SimConfig


@functools.lru_cache(maxsize=4)
def bias_levels(seed: int, ccdnum: int) -> dict[str, float]:
    rng = seeded_rng(seed, name_tag("blev"), ccdnum)
    return {"A": float(rng.uniform(2000, 3000)), "B": float(rng.uniform(2000, 3000))}


@functools.lru_cache(maxsize=8)
def bias_structure(seed: int, ccdnum: int) -> np.ndarray:
    """Residual 2D bias structure (ADU) left after overscan subtraction, trimmed frame."""
    rng = seeded_rng(seed, name_tag("bias"), ccdnum)
    ny, nx = CCD_SHAPE
    y = np.arange(ny, dtype=np.float32)[:, None]
    x = np.arange(nx, dtype=np.float32)[None, :]
    cols = rng.normal(0.0, 0.7, nx).astype(np.float32)[None, :]
    glow = 6.0 * np.exp(-y / 40.0)
    grad = 1.5 * (x / nx - 0.5) + 0.8 * (y / ny)
    fixed = rng.normal(0.0, 0.3, CCD_SHAPE).astype(np.float32)
    out = (cols + glow + grad + fixed).astype(np.float32)
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=8)
def flat_field(seed: int, ccdnum: int, band: str) -> np.ndarray:
    """Flat field (mean 1): vignetting-like large-scale + band-dependent gradient + 1% pixel-to-pixel."""
    ccd = camera.ccd(ccdnum)
    rng = seeded_rng(seed, name_tag("flat"), ccdnum)
    brng = seeded_rng(seed, name_tag("flat"), ccdnum, name_tag(band))
    ny, nx = CCD_SHAPE
    ys = np.arange(0, ny, 64, dtype=float) + 32
    xs = np.arange(0, nx, 64, dtype=float) + 32
    gx, gy = np.meshgrid(xs, ys)
    # The illumination pattern, on the nominal focal plane (the CCDs' placement errors are microns)
    t = np.deg2rad(ccd.rotation_deg)
    u, v = (gx - 1023.5) * PIXEL_SIZE_MM, (gy - 2047.5) * PIXEL_SIZE_MM
    xc, yc = ccd.nominal_center_mm
    fx = xc + np.cos(t) * u - np.sin(t) * v
    fy = yc + np.sin(t) * u + np.cos(t) * v
    r = np.hypot(fx, fy) / 230.0
    k = BANDS.index(band)
    coarse = 1.0 - 0.05 * r**2 + 0.01 * (k - 2) * fx / 230.0 + 0.005 * np.sin(fy / 40.0 + k)
    from scipy.ndimage import zoom
    large = zoom(coarse, (ny / coarse.shape[0], nx / coarse.shape[1]), order=1)
    pix = rng.normal(0.0, 0.01, CCD_SHAPE) + brng.normal(0.0, 0.002, CCD_SHAPE)
    flat = large * (1.0 + pix)
    flat /= flat.mean()
    out = flat.astype(np.float32)
    out.flags.writeable = False
    return out


def flat_drift(rng: np.random.Generator) -> np.ndarray:
    """Row-dependent bias drift (ADU) over the 4146 raw rows."""
    rows = np.arange(RAW_SHAPE[0], dtype=float)
    walk = np.cumsum(rng.normal(0, 0.05, RAW_SHAPE[0]))
    walk -= walk.mean()
    return (rng.uniform(5, 20) * np.exp(-rows / rng.uniform(100, 400))
            + rng.uniform(0.5, 3.0) * np.sin(2 * np.pi * rows / rng.uniform(800, 3000) + rng.uniform(0, 6.3))
            + walk)


# ---------------------------------------------------------------------------------------------- headers


N_BIAS_FRAMES = 20
"""Bias frames combined into the master bias (:func:`master_bias`)."""

N_FLAT_FRAMES, FLAT_FRAME_E = 10, 20000.0
"""Flat frames combined into the master flat, and the electrons per pixel in each (:func:`master_flat`)."""


def master_bias(cfg: SimConfig, ccdnum: int) -> np.ndarray:
    """The master bias written to ``calib/``: the true 2D bias structure, plus (``cfg.calibration_noise``) the
    read noise of its :data:`N_BIAS_FRAMES` frames averaged (ADU)."""
    out = bias_structure(cfg.seed, ccdnum)
    if not cfg.calibration_noise:
        return out
    ccd = camera.ccd(ccdnum)
    rng = seeded_rng(cfg.seed, name_tag("mbia"), ccdnum)
    sigma = np.empty(CCD_SHAPE[1], dtype=np.float32)
    sigma[:1024] = ccd.left_amp.read_noise / ccd.left_amp.gain
    sigma[1024:] = ccd.right_amp.read_noise / ccd.right_amp.gain
    return (out + rng.standard_normal(CCD_SHAPE, dtype=np.float32) * sigma[None, :] / np.sqrt(N_BIAS_FRAMES)
            ).astype(np.float32)


def master_flat(cfg: SimConfig, ccdnum: int, band: str) -> np.ndarray:
    """The master flat written to ``calib/``: the true flat times a smooth illumination error of up to
    ``cfg.flat_illumination_error`` (a tilted plane and a bowl across the CCD, drawn per CCD and band) and, with
    ``cfg.calibration_noise``, the photon noise of :data:`N_FLAT_FRAMES` frames of :data:`FLAT_FRAME_E`."""
    if not cfg.calibration_noise and cfg.flat_illumination_error == 0:
        return flat_field(cfg.seed, ccdnum, band)
    out = flat_field(cfg.seed, ccdnum, band).astype(np.float64)
    rng = seeded_rng(cfg.seed, name_tag("mfla"), ccdnum, name_tag(band))
    if cfg.flat_illumination_error > 0:
        ny, nx = CCD_SHAPE
        s = (np.arange(nx) - (nx - 1) / 2.0)[None, :] / ((nx - 1) / 2.0)
        t = (np.arange(ny) - (ny - 1) / 2.0)[:, None] / ((ny - 1) / 2.0)
        a, b, c = rng.uniform(-1.0, 1.0, 3)
        pattern = a * s + b * t + c * (s * s + t * t - 2.0 / 3.0)
        out = out * (1.0 + cfg.flat_illumination_error * pattern / max(float(np.abs(pattern).max()), 1e-12))
    if cfg.calibration_noise:
        out = out * (1.0 + rng.standard_normal(CCD_SHAPE) / np.sqrt(N_FLAT_FRAMES * FLAT_FRAME_E))
    return (out / out.mean()).astype(np.float32)


def true_gains(cfg: SimConfig, ccd: camera.SimCcd) -> dict[str, float]:
    """The amplifiers' gains (e-/ADU) on the night: the tabulated ones (``segmentfile.txt``, which the pipeline
    has too) off by a fraction drawn with standard deviation ``cfg.gain_error`` per amplifier (gains drift with
    the electronics' temperature; the master flat was taken at the tabulated gains, so it does not remove it)."""
    rng = seeded_rng(cfg.seed, name_tag("gain"), ccd.ccdnum)
    error = rng.normal(0.0, 1.0, 2) * cfg.gain_error
    return {amp.name: amp.gain * (1.0 + float(e)) for amp, e in zip((ccd.left_amp, ccd.right_amp), error)}


def unlisted_hot_pixels(cfg: SimConfig, ccdnum: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y, x, electrons per exposure) of the CCD's hot pixels that no defect list has (``cfg.n_unlisted_hot_pixels``,
    the same in every exposure of a simulation)."""
    rng = seeded_rng(cfg.seed, name_tag("hotp"), ccdnum)
    n = cfg.n_unlisted_hot_pixels
    ny, nx = CCD_SHAPE
    return (rng.integers(0, ny, n), rng.integers(0, nx, n),
            np.exp(rng.uniform(np.log(200.0), np.log(20000.0), n)).astype(np.float32))
