"""The simulated world's plan: bands and their sky, exposures (when, where, how), and small helpers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.coordinates import Angle

from schemas import datarepo

from . import camera, optics
from .config import SimConfig
from .render import noise_equivalent_area

PIXSCALE = 0.2635  # arcsec / pixel at the centre of the focal plane
BANDS = ("g", "r", "i", "z", "Y")
FILTER_NAMES = {
    "g": "g DECam SDSS c0001 4720.0 1520.0",
    "r": "r DECam SDSS c0002 6415.0 1480.0",
    "i": "i DECam SDSS c0003 7835.0 1470.0",
    "z": "z DECam SDSS c0004 9260.0 1520.0",
    "Y": "Y DECam c0005 10095.0 1130.0",
}
ZP_1S = {"g": 28.45, "r": 28.65, "i": 28.55, "z": 28.25, "Y": 27.2}  # AB mag of 1 e/s above the atmosphere
EXTINCTION = {"g": 0.18, "r": 0.10, "i": 0.08, "z": 0.08, "Y": 0.08}
SKY_MAG = {"g": 22.1, "r": 21.2, "i": 20.4, "z": 19.4, "Y": 18.1}  # mag / arcsec^2
READ_ROWS_OFFSET = 50  # parallel overscan rows at the bottom of the raw
READ_COLS_OFFSET = 56  # prescan + overscan columns left of the data
NJY_ZP = datarepo.NJY_AB_ZERO_POINT


# ---------------------------------------------------------------------------------------------- helpers
def seeded_rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) & 0xFFFFFFFF for k in key])


def name_tag(s: str) -> int:
    return int.from_bytes(s.encode()[:4].ljust(4, b"\0"), "little")


def offset_sky(ra: float, dec: float, east_arcsec: float, north_arcsec: float) -> tuple[float, float]:
    r, d = optics.tangent_to_sky(np.deg2rad(east_arcsec / 3600.0), np.deg2rad(north_arcsec / 3600.0), ra, dec)
    return float(r), float(d)


def sexagesimal(ra: float, dec: float) -> tuple[str, str, float, float]:
    ras = Angle(ra, unit="deg").to_string(unit="hourangle", sep=":", precision=3, pad=True)
    decs = Angle(dec, unit="deg").to_string(unit="deg", sep=":", precision=3, pad=True, alwayssign=True)
    if decs.startswith("+"):
        decs = decs[1:]
    return ras, decs, float(Angle(ras, unit="hourangle").deg), float(Angle(decs, unit="deg").deg)


def mag_to_njy(m):
    return 10.0 ** (-0.4 * (np.asarray(m, dtype=float) - NJY_ZP))


def flux_for_snr(snr, background):
    """Flux (e) with S/N ``snr`` against background variance ``background`` (e^2), source noise included."""
    s2 = np.asarray(snr, dtype=float) ** 2
    return 0.5 * s2 * (1.0 + np.sqrt(1.0 + 4.0 * np.asarray(background, dtype=float) / s2))


def power_law_mags(rng, n, lo, hi, slope):
    """Magnitudes with dN/dm ~ 10**(slope m) between lo and hi."""
    u = rng.random(n)
    a, b = 10 ** (slope * lo), 10 ** (slope * hi)
    return np.log10(a + u * (b - a)) / slope


# ---------------------------------------------------------------------------------------------- exposures
@dataclass
class Exposure:
    expnum: int
    field_id: int
    epoch: int
    band: str
    mjd_obs: float
    exptime: float
    airmass: float
    seeing: float
    target_ra: float
    target_dec: float
    ra_str: str
    dec_str: str
    ra: float  # true boresight
    dec: float
    zero_point: float
    sky_e: float
    fwhm_pix: float
    nea: float
    read_var: float

    @property
    def mjd_mid(self) -> float:
        return self.mjd_obs + self.exptime / 2.0 / 86400.0

    def flux_e(self, njy):
        return np.asarray(njy, dtype=float) * 10.0 ** (0.4 * (self.zero_point - NJY_ZP))

    def njy(self, flux_e):
        return np.asarray(flux_e, dtype=float) * 10.0 ** (-0.4 * (self.zero_point - NJY_ZP))

    def background_var(self) -> float:
        return self.nea * (self.sky_e + self.read_var)


def make_exposures(cfg: SimConfig) -> tuple[list[Exposure], list[tuple[float, float]]]:
    rng = seeded_rng(cfg.seed, name_tag("expo"))
    if cfg.field_centers:
        centers = [tuple(map(float, c)) for c in cfg.field_centers[: cfg.n_fields]]
    else:
        centers = []
    while len(centers) < cfg.n_fields:
        centers.append((float(rng.uniform(20.0, 80.0)), float(rng.uniform(-40.0, -5.0))))
    rows = []
    for f in range(cfg.n_fields):
        mjd = cfg.start_mjd + 0.013 * f
        for e in range(cfg.n_epochs):
            if e > 0:
                mjd += float(rng.uniform(1.0, 3.0))
            rows.append((mjd + float(rng.uniform(0, 0.002)), f, e))
    rows.sort()
    exps = []
    rn = np.mean([a.read_noise for c in cfg.ccds for a in camera.ccd(c).amps.values()])
    for k, (mjd, f, e) in enumerate(rows):
        band = cfg.bands[e % len(cfg.bands)]
        d = cfg.dither_arcsec * np.sqrt(rng.random())
        phi = rng.uniform(0, 2 * np.pi)
        tra, tdec = offset_sky(*centers[f], d * np.cos(phi), d * np.sin(phi))
        ra_str, dec_str, tra, tdec = sexagesimal(tra, tdec)
        p = cfg.pointing_error_arcsec * np.sqrt(rng.random())
        phi = rng.uniform(0, 2 * np.pi)
        bra, bdec = offset_sky(tra, tdec, p * np.cos(phi), p * np.sin(phi))
        airmass = float(rng.uniform(*cfg.airmass_range))
        seeing = float(rng.uniform(*cfg.seeing_range))
        zp = ZP_1S[band] + 2.5 * np.log10(cfg.exptime) - EXTINCTION[band] * airmass - float(rng.uniform(0, 0.05))
        sky_mag = SKY_MAG[band] + float(rng.uniform(-0.3, 0.2))
        sky_e = float(10 ** (-0.4 * (sky_mag - zp)) * PIXSCALE**2)
        fwhm_pix = seeing / PIXSCALE
        exps.append(Exposure(
            expnum=cfg.first_expnum + k, field_id=f, epoch=e, band=band, mjd_obs=round(mjd, 8),
            exptime=cfg.exptime, airmass=round(airmass, 3), seeing=seeing, target_ra=tra, target_dec=tdec,
            ra_str=ra_str, dec_str=dec_str, ra=bra, dec=bdec, zero_point=float(zp), sky_e=sky_e,
            fwhm_pix=fwhm_pix, nea=noise_equivalent_area(fwhm_pix), read_var=float(rn**2 + 4.0)))
    return exps, centers


# ---------------------------------------------------------------------------------------------- calibs
