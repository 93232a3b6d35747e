"""The DECam simulator: raws, calibrations, reference catalog, templates, events and truth.

Signal model of one CCD (trimmed frame, electrons ``e``):

    true_e     = sky_e + stars + galaxies + transients          (what ISR must recover)
    detected   = Poisson(flat * true_e) + cosmic rays, clipped at the full well with bleed trails
    raw ADU    = bias_level(amp) + drift(amp, file row) + bias2d + detected / gain(amp) + read noise / gain

so ``(raw - per-row overscan) -> trim -> - bias2d -> / flat -> * gain`` gives ``true_e`` + noise.
``zero_point`` (truth/exposures.ecsv) is the AB magnitude of 1 such electron; nJy = e * 10**(-0.4 (zp - 31.4)).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.coordinates import Angle, SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time
from astropy.wcs import WCS
from astropy.wcs.utils import fit_wcs_from_points

from schemas import datarepo
from pipeline.decam import camera as cam
from pipeline.decam.camera import CCD_SHAPE, RAW_SHAPE, CcdInfo
from streamer.decam.camera_tables import decam_camera, defect_boxes

from . import optics
from .config import SimConfig
from .render import add_galaxies, add_point_sources, bleed, cosmic_rays, noise_equivalent_area

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
def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) & 0xFFFFFFFF for k in key])


def _tag(s: str) -> int:
    return int.from_bytes(s.encode()[:4].ljust(4, b"\0"), "little")


def _offset_sky(ra: float, dec: float, east_arcsec: float, north_arcsec: float) -> tuple[float, float]:
    r, d = optics.tangent_to_sky(np.deg2rad(east_arcsec / 3600.0), np.deg2rad(north_arcsec / 3600.0), ra, dec)
    return float(r), float(d)


def _sexa(ra: float, dec: float) -> tuple[str, str, float, float]:
    ras = Angle(ra, unit="deg").to_string(unit="hourangle", sep=":", precision=3, pad=True)
    decs = Angle(dec, unit="deg").to_string(unit="deg", sep=":", precision=3, pad=True, alwayssign=True)
    if decs.startswith("+"):
        decs = decs[1:]
    return ras, decs, float(Angle(ras, unit="hourangle").deg), float(Angle(decs, unit="deg").deg)


def _mag_to_njy(m):
    return 10.0 ** (-0.4 * (np.asarray(m, dtype=float) - NJY_ZP))


def _flux_for_snr(snr, background):
    """Flux (e) with S/N ``snr`` against background variance ``background`` (e^2), source noise included."""
    s2 = np.asarray(snr, dtype=float) ** 2
    return 0.5 * s2 * (1.0 + np.sqrt(1.0 + 4.0 * np.asarray(background, dtype=float) / s2))


def _power_law_mags(rng, n, lo, hi, slope):
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


@dataclass
class SimSummary:
    """What ``simulate`` made."""

    root: Path
    expnums: list[int]
    raw_paths: list[Path]
    n_exposures: int
    n_ccds: int
    n_transients: int
    n_template_tiles: int
    fields: list[tuple[float, float]] = field(default_factory=list)


def _make_exposures(cfg: SimConfig) -> tuple[list[Exposure], list[tuple[float, float]]]:
    rng = _rng(cfg.seed, _tag("expo"))
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
    rn = np.mean([a.read_noise for c in cfg.ccds for a in decam_camera().ccd(c).amps.values()])
    for k, (mjd, f, e) in enumerate(rows):
        band = cfg.bands[e % len(cfg.bands)]
        d = cfg.dither_arcsec * np.sqrt(rng.random())
        phi = rng.uniform(0, 2 * np.pi)
        tra, tdec = _offset_sky(*centers[f], d * np.cos(phi), d * np.sin(phi))
        ra_str, dec_str, tra, tdec = _sexa(tra, tdec)
        p = cfg.pointing_error_arcsec * np.sqrt(rng.random())
        phi = rng.uniform(0, 2 * np.pi)
        bra, bdec = _offset_sky(tra, tdec, p * np.cos(phi), p * np.sin(phi))
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
@functools.lru_cache(maxsize=4)
def _bias_level(seed: int, ccdnum: int) -> dict[str, float]:
    rng = _rng(seed, _tag("blev"), ccdnum)
    return {"A": float(rng.uniform(2000, 3000)), "B": float(rng.uniform(2000, 3000))}


@functools.lru_cache(maxsize=8)
def _bias2d(seed: int, ccdnum: int) -> np.ndarray:
    """Residual 2D bias structure (ADU) left after overscan subtraction, trimmed frame."""
    rng = _rng(seed, _tag("bias"), ccdnum)
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
def _flat(seed: int, ccdnum: int, band: str) -> np.ndarray:
    """Flat field (mean 1): vignetting-like large-scale + band-dependent gradient + 1% pixel-to-pixel."""
    ccd = decam_camera().ccd(ccdnum)
    rng = _rng(seed, _tag("flat"), ccdnum)
    brng = _rng(seed, _tag("flat"), ccdnum, _tag(band))
    ny, nx = CCD_SHAPE
    ys = np.arange(0, ny, 64, dtype=float) + 32
    xs = np.arange(0, nx, 64, dtype=float) + 32
    gx, gy = np.meshgrid(xs, ys)
    fx, fy = optics.pixel_to_focal(ccd, gx, gy)
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


def _drift(rng: np.random.Generator) -> np.ndarray:
    """Row-dependent bias drift (ADU) over the 4146 raw rows."""
    rows = np.arange(RAW_SHAPE[0], dtype=float)
    walk = np.cumsum(rng.normal(0, 0.05, RAW_SHAPE[0]))
    walk -= walk.mean()
    return (rng.uniform(5, 20) * np.exp(-rows / rng.uniform(100, 400))
            + rng.uniform(0.5, 3.0) * np.sin(2 * np.pi * rows / rng.uniform(800, 3000) + rng.uniform(0, 6.3))
            + walk)


# ---------------------------------------------------------------------------------------------- headers
def _primary_header(exp: Exposure, cfg: SimConfig, next: int) -> fits.Header:
    t = Time(exp.mjd_obs, format="mjd", scale="utc")
    iso = t.isot + "000"
    iso = iso[:26]
    shut = Time(exp.mjd_obs + 0.08 / 86400.0, format="mjd", scale="utc").isot
    night = Time(exp.mjd_obs - 0.5, format="mjd", scale="utc").isot[:10]
    ha_h = float(np.random.default_rng(exp.expnum).uniform(-2.5, 2.5))
    zd = float(np.rad2deg(np.arccos(1.0 / exp.airmass)))
    fname = datarepo.raw_path(exp.expnum).name
    cards = [
        ("NEXTEND", next, "Number of extensions"),
        ("PROCTYPE", "RAW", "Data processing level"),
        ("PRODTYPE", "image", "Data product type"),
        ("PIXSCAL1", 0.27, "[arcsec/pixel] Pixel scale, axis 1"),
        ("PIXSCAL2", 0.27, "[arcsec/pixel] Pixel scale, axis 2"),
        ("FILENAME", fname, "Filename"),
        ("OBS-LONG", 70.81489, "[deg] Observatory east longitude"),
        ("TELESCOP", "CTIO 4.0-m telescope", "Telescope name"),
        ("OBSERVAT", "CTIO", "Observatory name"),
        ("OBS-LAT", -30.16606, "[deg] Observatory latitude"),
        ("OBS-ELEV", 2215.0, "[m] Observatory elevation"),
        ("INSTRUME", "DECam", "Instrument used to obtain these data"),
        ("EXPREQ", exp.exptime, "[s] Requested exposure duration"),
        ("EXPTIME", exp.exptime, "[s] Exposure duration"),
        ("DARKTIME", round(exp.exptime + 1.13, 5), "[s] Dark time"),
        ("OBSID", "ct4m" + iso[:19].replace("-", "").replace(":", "").lower(), "Unique Observation ID"),
        ("DATE-OBS", iso, "UTC epoch"),
        ("TIME-OBS", iso[11:], "Time of observation start (UTC)"),
        ("MJD-OBS", exp.mjd_obs, "MJD of observation start"),
        ("OPENSHUT", shut, "Time when shutter opened (UTC)"),
        ("TIMESYS", "UTC", "Time system"),
        ("EXPNUM", exp.expnum, "DECam exposure number"),
        ("OBJECT", f"Blink sim field {exp.field_id}", "Object name"),
        ("OBSTYPE", "object", "Observation type"),
        ("CAMSHUT", "Open", "Camera shutter at exposure start"),
        ("PROGRAM", "Blink simulated survey", "Current observing orogram"),
        ("OBSERVER", "Blink simulator", "Observer name(s)"),
        ("PROPOSER", "Blink", "Proposal Principle Investigator"),
        ("DTPI", "Blink", "Principal Investigator"),
        ("PROPID", "2026A-0000", "Proposal ID"),
        ("EXCLUDED", "", "DECam components not used for this frame"),
        ("SEQID", f"field {exp.field_id}", ""),
        ("SEQNUM", exp.epoch + 1, "Number of image in sequence"),
        ("SEQTOT", cfg.n_epochs, "Total number of images in sequence"),
        ("AOS", True, "AOS data available if true"),
        ("BCAM", True, "BCAM data available if true"),
        ("GUIDER", 1, "Guider (0-absent,1-ok,2-lost star)"),
        ("SKYSTAT", True, "Cloud camera (RASICAM) available if true"),
        ("FILTER", FILTER_NAMES[exp.band], "Unique filter identifier"),
        ("FILTPOS", f"cassette_{BANDS.index(exp.band) + 1}", "Filter position in FCM"),
        ("INSTANCE", "DECam_" + night.replace("-", ""), "SISPI instance name"),
        ("ERRORS", "None", "SISPI readout errors"),
        ("TELEQUIN", 2000.0, "Equinox of telescope coordinates"),
        ("TELSTAT", "Track", "Telescope tracking status"),
        ("RA", exp.ra_str, "[HH:MM:SS] Target RA"),
        ("DEC", exp.dec_str, "[DD:MM:SS] Target DEC"),
        ("TELRA", exp.ra_str, "[HH:MM:SS] Telescope RA"),
        ("TELDEC", exp.dec_str, "[DD:MM:SS] Telescope DEC"),
        ("HA", Angle(ha_h, unit="hourangle").to_string(sep=":", precision=2, pad=True, alwayssign=True),
         "[HH:MM:SS] Telescope hour angle"),
        ("ZD", round(zd, 2), "[deg] Telescope zenith distance"),
        ("AZ", round(float(np.random.default_rng(exp.expnum + 1).uniform(0, 360)), 2),
         "[deg] Telescope azimuth angle"),
        ("TELFOCUS", "-2439.52,-3332.57,2497.32,100.13,-210.58, 0.00", "DECam hexapod"),
        ("VSUB", True, "True if CCD substrate voltage is on"),
        ("WINDSPD", 5.0, "[m/s] Wind speed"),
        ("WINDDIR", 180.0, "[deg] Wind direction (from North)"),
        ("HUMIDITY", 20.0, "[%] Ambient relative humidity (outside)"),
        ("PRESSURE", 780.0, "[Torr] Barometric pressure (outside)"),
        ("DIMMSEE", round(exp.seeing * 0.8, 3), "[arcsec] DIMM Seeing"),
        ("OUTTEMP", 12.0, "[deg C] Outside temperature"),
        ("AIRMASS", exp.airmass, "Airmass"),
        ("G-SEEING", round(exp.seeing, 3), "[arcsec] Guider average seeing"),
        ("G-TRANSP", 1.0, "Guider average sky transparency"),
        ("SISPIVER", "trunk", "SISPI software version"),
        ("CONSTVER", "DECAM:19", "SISPI constants version"),
        ("HDRVER", "13", "DECam fits header version"),
        ("DTSITE", "ct", "observatory location"),
        ("DTTELESC", "ct4m", "telescope identifier"),
        ("DTINSTRU", "decam", "instrument identifier"),
        ("DTCALDAT", night, "calendar date from observing schedule"),
        ("DTOBSERV", "NOAO", "scheduling institution"),
        ("DTPROPID", "2026A-0000", "observing proposal ID"),
        ("DTACQNAM", f"/data_local/images/DTS/2026A-0000/{fname}.fz", ""),
        ("RECNO", exp.expnum - cfg.first_expnum + 1, "NOAO Science Archive sequence number"),
    ]
    h = fits.Header()
    h["SIMPLE"] = (True, "conforms to FITS standard")
    h["BITPIX"] = (16, "array data type")
    h["NAXIS"] = (0, "number of array dimensions")
    h["EXTEND"] = True
    for k, v, c in cards:
        h[k] = (v, c)
    return h


def _detsec(ccd: CcdInfo) -> tuple[int, int]:
    x1 = int(round((ccd.xmin + 216.48) / cam.PIXEL_SIZE_MM)) + 1
    y1 = int(round((ccd.ymin + 221.936) / cam.PIXEL_SIZE_MM)) + 1
    return max(x1, 1), max(y1, 1)


def _extension_header(ccd: CcdInfo, wcs_cards: list) -> fits.Header:
    dx, dy = _detsec(ccd)
    left, right = ccd.left_amp, ccd.right_amp
    h = fits.Header()
    cards = [
        ("BUNIT", "adu", "Brightness units for pixel array"),
        ("WCSAXES", 2, "WCS Dimensionality"),
        ("DETSIZE", "[1:29400,1:29050]", "Detector size"),
        ("TRIMSEC", "[57:2104,51:4146]", "Good section"),
        ("DATASEC", "[57:2104,51:4146]", "Data section to display"),
        ("DETSEC", f"[{dx}:{dx + 2047},{dy}:{dy + 4095}]", "Location of this CCD on Focal Plane"),
        ("CCDSEC", "[1:2048,1:4096]", "CCD section to display"),
    ]
    geo = {}
    for amp, side in ((right, "R"), (left, "L")):
        a = amp.name
        if side == "R":
            geo[a] = dict(TRIMSEC="[1081:2104,51:4146]", DETSEC=f"[{dx + 1024}:{dx + 2047},{dy}:{dy + 4095}]",
                          CCDSEC="[1025:2048,1:4096]", AMPSEC="[2048:1025,4096:1]",
                          DATASEC="[1081:2104,51:4146]", BIASSEC="[2105:2154,51:4146]",
                          PRESEC="[2155:2160,51:4146]", POSTSEC="[1081:2104,1:50]")
        else:
            geo[a] = dict(TRIMSEC="[57:1080,51:4146]", DETSEC=f"[{dx}:{dx + 1023},{dy}:{dy + 4095}]",
                          CCDSEC="[1:1024,1:4096]", AMPSEC="[1:1024,4096:1]",
                          DATASEC="[57:1080,51:4146]", BIASSEC="[7:56,51:4146]",
                          PRESEC="[1:6,51:4146]", POSTSEC="[57:1080,1:50]")
    comments = dict(TRIMSEC="Good section from amp {}", DETSEC="Detector display tile for amp {}",
                    CCDSEC="CCD section from amp {}", AMPSEC="CCD section in read order for amp {}",
                    DATASEC="Data section from amp {}", BIASSEC="Overscan from amp {}",
                    PRESEC="Prescan from amp {}", POSTSEC="Postscan from amp {}")
    for a in ("A", "B"):
        for key in ("TRIMSEC", "DETSEC", "CCDSEC", "AMPSEC", "DATASEC", "BIASSEC", "PRESEC", "POSTSEC"):
            cards.append((key + a, geo[a][key], comments[key].format(a)))
    cards += [
        ("DETECTOR", f"S3-{100 + ccd.ccdnum}_{107000 + 37 * ccd.ccdnum}-8-3", "Detector Identifier"),
        ("CCDNUM", ccd.ccdnum, "CCD number"),
        ("DETPOS", ccd.detpos, "detector position ID"),
        ("EXTNAME", ccd.detpos, "extension name"),
    ]
    for a in ("A", "B"):
        amp = ccd.amps[a]
        cards += [(f"GAIN{a}", amp.gain, f"[electrons/adu] Gain for amp {a}"),
                  (f"RDNOISE{a}", amp.read_noise, f"[electrons] Read noise for amp {a}"),
                  (f"SATURAT{a}", float(amp.saturation), f"[adu] Saturation for amp {a}")]
    cards += [
        ("FPA", "DECAM_BKP1", "DECam focal plane name"),
        ("INHERIT", True, "Inherits PHDU header"),
        ("CCDBIN1", 1, "Pixel binning, axis 1"),
        ("CCDBIN2", 1, "Pixel binning, axis 2"),
        ("DHEINF", "MNSN fermi hardware", "DHE Hardware"),
        ("DHEFIRM", "demo30", "DHE Firmware"),
        ("SLOT00", "MCB 15 5.210000", "Monsoon module"),
        ("SLOT01", "DESCB 22 4.010000", "Monsoon module"),
        ("RADESYS", "ICRS", "World coordinate reference frame"),
        ("EQUINOX", 2000.0, "[yr] Equinox of WCS"),
    ]
    cards += wcs_cards
    cards += [
        ("LTM1_1", 1.0, "Detector to image transformation"),
        ("LTM1_2", 0.0, "Detector to image transformation"),
        ("LTM2_1", 0.0, "Detector to image transformation"),
        ("LTM2_2", 1.0, "Detector to image transformation"),
        ("LTV1", 56.0, "Detector to image transformation"),
        ("LTV2", 50.0, "Detector to image transformation"),
        ("VALIDA", ccd.ccdnum not in cam.DEAD_CCDS, "Data from amp A is valid"),
        ("VALIDB", ccd.ccdnum not in cam.DEAD_CCDS, "Data from amp B is valid"),
        ("NDONUTS", 0, "AOS number of donuts analyzed for this CCD"),
    ]
    for k, v, c in cards:
        h[k] = (v, c)
    return h


def _grid(nx=17, ny=33):
    gx, gy = np.meshgrid(np.linspace(0, CCD_SHAPE[1] - 1, nx), np.linspace(0, CCD_SHAPE[0] - 1, ny))
    return gx.ravel(), gy.ravel()


def header_wcs_cards(ccd: CcdInfo, exp: Exposure) -> list:
    """Approximate telescope WCS: TAN about the (believed) pointing, linear fit to the true optics, in
    raw-file 1-based pixels; off from the truth by the pointing error (and the neglected distortion)."""
    gx, gy = _grid()
    ra, dec = optics.pixel_to_sky(ccd, gx, gy, exp.ra, exp.dec)
    xi, eta = optics.sky_to_tangent(ra, dec, exp.ra, exp.dec)
    a = np.column_stack([gx, gy, np.ones_like(gx)])
    coef, *_ = np.linalg.lstsq(a, np.column_stack([np.rad2deg(xi), np.rad2deg(eta)]), rcond=None)
    cd = coef[:2].T  # [[dxi/dx, dxi/dy], [deta/dx, deta/dy]]
    crpix0 = -np.linalg.solve(cd, coef[2])
    crpix1 = crpix0[0] + 1.0 + READ_COLS_OFFSET
    crpix2 = crpix0[1] + 1.0 + READ_ROWS_OFFSET
    return [
        ("CTYPE1", "RA---TAN", "Coordinate type"),
        ("CTYPE2", "DEC--TAN", "Coordinate type"),
        ("CUNIT1", "deg", ""),
        ("CUNIT2", "deg", ""),
        ("CRVAL1", round(exp.target_ra, 7), "[deg] WCS Reference Coordinate (RA)"),
        ("CRVAL2", round(exp.target_dec, 7), "[deg] WCS Reference Coordinate (DEC)"),
        ("CRPIX1", float(crpix1), "Coordinate Reference axis 1"),
        ("CRPIX2", float(crpix2), "Coordinate Reference axis 2"),
        ("CD1_1", float(cd[0, 0]), "World coordinate transformation matrix"),
        ("CD1_2", float(cd[0, 1]), "World coordinate transformation matrix"),
        ("CD2_1", float(cd[1, 0]), "World coordinate transformation matrix"),
        ("CD2_2", float(cd[1, 1]), "World coordinate transformation matrix"),
    ]


def true_wcs(ccd: CcdInfo, ra0: float, dec0: float) -> tuple[WCS, float]:
    """TAN-SIP (degree 3) fit of the true trimmed-pixel -> sky mapping; returns (wcs, max residual mas)."""
    gx, gy = _grid(17, 33)
    ra, dec = optics.pixel_to_sky(ccd, gx, gy, ra0, dec0)
    w = fit_wcs_from_points((gx, gy), SkyCoord(ra, dec, unit="deg"), proj_point="center", sip_degree=3)
    rng = np.random.default_rng(ccd.ccdnum)
    tx = rng.uniform(0, CCD_SHAPE[1] - 1, 200)
    ty = rng.uniform(0, CCD_SHAPE[0] - 1, 200)
    tra, tdec = optics.pixel_to_sky(ccd, tx, ty, ra0, dec0)
    fra, fdec = w.all_pix2world(tx, ty, 0)
    sep = SkyCoord(fra, fdec, unit="deg").separation(SkyCoord(tra, tdec, unit="deg")).arcsec * 1000.0
    return w, float(sep.max())


# ---------------------------------------------------------------------------------------------- sources
@dataclass
class Sources:
    table: Table  # source_id, ra, dec, kind, host_id, <band>_mag, r_eff, q, pa
    lightcurves: dict  # source_id -> {expnum: flux_njy (total)}


def _tile_plan(cfg: SimConfig, exps: list[Exposure], centers):
    """Tiles (per field) overlapping the simulated CCDs: list of dicts with id, ra, dec, wcs, shape."""
    sp = cfg.tile_spacing_deg
    half = sp / 2.0 + cfg.tile_overlap_deg
    npix = int(np.ceil(2 * half * 3600.0 / 0.263))
    tiles = []
    for f, (fra, fdec) in enumerate(centers):
        need = set()
        for exp in exps:
            if exp.field_id != f:
                continue
            for c in cfg.ccds:
                ccd = decam_camera().ccd(c)
                ex = np.array([0, 2047, 0, 2047, 1024, 0, 2047, 1024])
                ey = np.array([0, 0, 4095, 4095, 0, 2048, 2048, 4095])
                ra, dec = optics.pixel_to_sky(ccd, ex, ey, exp.ra, exp.dec)
                xi, eta = optics.sky_to_tangent(ra, dec, fra, fdec)
                xi, eta = np.rad2deg(xi), np.rad2deg(eta)
                m = 0.01
                for i in range(int(np.floor((xi.min() - m) / sp + 0.5)), int(np.floor((xi.max() + m) / sp + 0.5)) + 1):
                    for j in range(int(np.floor((eta.min() - m) / sp + 0.5)),
                                   int(np.floor((eta.max() + m) / sp + 0.5)) + 1):
                        need.add((i, j))
        for i, j in sorted(need):
            tra, tdec = optics.tangent_to_sky(np.deg2rad(i * sp), np.deg2rad(j * sp), fra, fdec)
            w = WCS(naxis=2)
            w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
            w.wcs.crval = [float(tra), float(tdec)]
            w.wcs.crpix = [(npix + 1) / 2.0, (npix + 1) / 2.0]
            w.wcs.cd = np.array([[-0.263 / 3600.0, 0.0], [0.0, 0.263 / 3600.0]])
            w.wcs.cunit = ["deg", "deg"]
            tiles.append(dict(tile_id=f * 10000 + (j + 50) * 100 + (i + 50), field_id=f, i=i, j=j,
                              ra=float(tra), dec=float(tdec), wcs=w, npix=npix,
                              radius=float(np.sqrt(2) * half)))
    return tiles


def _make_sources(cfg: SimConfig, exps, centers, tiles) -> Sources:
    sp = cfg.tile_spacing_deg
    half = sp / 2.0 + cfg.tile_overlap_deg + 0.01
    rows = []
    next_id = 1
    for f, (fra, fdec) in enumerate(centers):
        ftiles = [t for t in tiles if t["field_id"] == f]
        if not ftiles:
            continue
        rng = _rng(cfg.seed, _tag("srcs"), f)
        ii = np.array([t["i"] for t in ftiles])
        jj = np.array([t["j"] for t in ftiles])
        x0, x1 = ii.min() * sp - half, ii.max() * sp + half
        y0, y1 = jj.min() * sp - half, jj.max() * sp + half
        area = (x1 - x0) * (y1 - y0)
        for kind, dens in (("star", cfg.stars_per_deg2), ("galaxy", cfg.galaxies_per_deg2)):
            n = int(rng.poisson(dens * area))
            xi = rng.uniform(x0, x1, n)
            eta = rng.uniform(y0, y1, n)
            inside = np.zeros(n, bool)
            for t in ftiles:
                inside |= (np.abs(xi - t["i"] * sp) < half) & (np.abs(eta - t["j"] * sp) < half)
            xi, eta = xi[inside], eta[inside]
            n = xi.size
            ra, dec = optics.tangent_to_sky(np.deg2rad(xi), np.deg2rad(eta), fra, fdec)
            if kind == "star":
                r = _power_law_mags(rng, n, 15.0, 25.0, 0.22)
                gr = rng.uniform(0.2, 1.4, n)
                reff = np.zeros(n)
                q = np.ones(n)
                pa = np.zeros(n)
            else:
                r = _power_law_mags(rng, n, 18.0, 24.5, 0.3)
                gr = rng.uniform(0.4, 1.2, n)
                reff = np.exp(rng.uniform(np.log(0.4), np.log(2.0), n))
                q = rng.uniform(0.3, 1.0, n)
                pa = rng.uniform(0.0, 180.0, n)
            ri = 0.35 * gr + 0.05 + rng.normal(0, 0.03, n)
            iz = 0.2 * gr + rng.normal(0, 0.03, n)
            mags = {"g": r + gr, "r": r, "i": r - ri, "z": r - ri - iz, "Y": r - ri - iz - 0.1}
            ids = np.arange(next_id, next_id + n)
            next_id += n
            rows.append(dict(source_id=ids, ra=ra, dec=dec, kind=np.full(n, kind, dtype="U10"),
                             host_id=np.full(n, -1), field_id=np.full(n, f), r_eff=reff, q=q, pa=pa,
                             **{f"ref_mag_{b}": mags[b] for b in BANDS}))
    cols = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]} if rows else {}
    table = Table(cols)
    lightcurves: dict = {}
    # transients per field and CCD, placed on the CCD in the field's first exposure
    for f in range(len(centers)):
        fexps = [e for e in exps if e.field_id == f]
        e0 = fexps[0]
        for c in cfg.ccds:
            ccd = decam_camera().ccd(c)
            rng = _rng(cfg.seed, _tag("tran"), f, c)
            n = cfg.n_transients
            n_var = n // 4
            n_sn = (n - n_var) // 2
            n_new = n - n_var - n_sn
            m = 250.0
            on = table["field_id"] == f
            px, py = optics.sky_to_pixel(ccd, table["ra"], table["dec"], e0.ra, e0.dec)
            interior = on & (px > m) & (px < 2047 - m) & (py > m) & (py < 4095 - m)
            new_rows = []
            # variables: existing stars 18 < r < 21.5
            cand = np.nonzero(interior & (table["kind"] == "star") & (table["ref_mag_r"] > 18.0)
                              & (table["ref_mag_r"] < 21.5))[0]
            var_idx = rng.choice(cand, size=min(n_var, cand.size), replace=False) if cand.size else []
            for k in var_idx:
                table["kind"][k] = "variable"
            # supernovae on galaxies
            gal = np.nonzero(interior & (table["kind"] == "galaxy") & (table["ref_mag_r"] < 23.0))[0]
            hosts = rng.choice(gal, size=min(n_sn, gal.size), replace=False) if gal.size else []
            n_new += n_sn - len(hosts)
            for h in hosts:
                d = rng.uniform(0.3, 1.5) * table["r_eff"][h]
                phi = rng.uniform(0, 2 * np.pi)
                ra, dec = _offset_sky(table["ra"][h], table["dec"][h], d * np.cos(phi), d * np.sin(phi))
                new_rows.append((ra, dec, "supernova", int(table["source_id"][h])))
            xs = rng.uniform(m, 2047 - m, n_new)
            ys = rng.uniform(m, 4095 - m, n_new)
            ras, decs = optics.pixel_to_sky(ccd, xs, ys, e0.ra, e0.dec)
            for ra, dec in zip(ras, decs):
                new_rows.append((float(ra), float(dec), "transient", -1))
            for ra, dec, kind, host in new_rows:
                table.add_row(dict(source_id=next_id, ra=ra, dec=dec, kind=kind, host_id=host, field_id=f,
                                   r_eff=0.0, q=1.0, pa=0.0, **{f"ref_mag_{b}": 99.0 for b in BANDS}))
                next_id += 1
            # light curves
            trans = [(int(table["source_id"][k]), "variable", k) for k in var_idx]
            trans += [(sid, kind, None) for sid, (_, _, kind, _) in
                      zip(range(next_id - len(new_rows), next_id), new_rows)]
            ne = len(fexps)
            for sid, kind, k in trans:
                snr_peak = float(np.exp(rng.uniform(*np.log(cfg.snr_range))))
                if kind == "variable":
                    shape = rng.uniform(0.3, 1.0, ne) * rng.choice([-1.0, 1.0], ne)
                    shape[rng.integers(ne)] = rng.choice([-1.0, 1.0])
                elif kind == "supernova":
                    a = int(rng.integers(0, max(1, ne - 1))) if ne > 1 else 0
                    prof = [0.6, 1.0, 0.85, 0.7, 0.6, 0.5, 0.4, 0.3]
                    shape = np.array([prof[min(i - a, 7)] if i >= a else 0.0 for i in range(ne)])
                else:
                    a = int(rng.integers(1, ne)) if ne > 1 else 0
                    shape = np.array([0.8 ** (i - a) if i >= a else 0.0 for i in range(ne)])
                p = int(np.argmax(np.abs(shape)))
                base_njy = float(_mag_to_njy(table["ref_mag_" + fexps[p].band][k])) if k is not None else 0.0
                lc = {}
                for i, exp in enumerate(fexps):
                    base_e = float(exp.flux_e(_mag_to_njy(table["ref_mag_" + exp.band][k]))) if k is not None else 0.0
                    bg = exp.background_var() + base_e
                    lo, hi = _flux_for_snr(cfg.snr_range[0], bg), _flux_for_snr(cfg.snr_range[1], bg)
                    if i == p:
                        d_e = float(_flux_for_snr(snr_peak, bg))
                    else:
                        d_e = abs(shape[i] / shape[p]) * float(_flux_for_snr(snr_peak, fexps[p].background_var()
                                                                             + float(fexps[p].flux_e(base_njy))))
                        d_e = float(exp.flux_e(fexps[p].njy(d_e)))  # same nJy across exposures
                        d_e = float(np.clip(d_e, lo, hi)) if shape[i] != 0 else 0.0
                    if kind == "variable":
                        d_e = float(np.sign(shape[i]) * min(d_e, 0.8 * base_e) if shape[i] < 0 else d_e)
                    lc[exp.expnum] = (float(exp.njy(base_e + d_e)), float(exp.njy(d_e)),
                                      float(d_e / np.sqrt(bg + abs(d_e))) if d_e else 0.0)
                lightcurves[sid] = lc
                if k is None:  # reference magnitude of a transient: its peak
                    peak = max(v[0] for v in lc.values())
                    row = np.nonzero(table["source_id"] == sid)[0][0]
                    for b in BANDS:
                        table[f"ref_mag_{b}"][row] = NJY_ZP - 2.5 * np.log10(max(peak, 1e-3))
    return Sources(table=table, lightcurves=lightcurves)


def _flux_in(exp: Exposure, src: Sources, idx: np.ndarray) -> np.ndarray:
    """Fluxes (e) in an exposure of the sources at rows idx."""
    t = src.table
    mags = np.asarray(t["ref_mag_" + exp.band][idx], dtype=float)
    kinds = np.asarray(t["kind"][idx])
    flux = np.where(mags < 90, exp.flux_e(_mag_to_njy(mags)), 0.0)
    for n, k in enumerate(idx):
        if kinds[n] in ("variable", "transient", "supernova"):
            lc = src.lightcurves.get(int(t["source_id"][k]))
            flux[n] = float(exp.flux_e(lc[exp.expnum][0])) if lc and exp.expnum in lc else (
                flux[n] if kinds[n] == "variable" else 0.0)
    return flux


# ---------------------------------------------------------------------------------------------- rendering
def render_ccd(cfg: SimConfig, exp: Exposure, ccd: CcdInfo, src: Sources):
    """Raw (4146, 2160) uint16 pixels of one CCD and its truth CR mask."""
    rng = _rng(cfg.seed, _tag("ccd_"), exp.expnum, ccd.ccdnum)
    ny, nx = CCD_SHAPE
    dead = ccd.ccdnum in cam.DEAD_CCDS
    img = np.full(CCD_SHAPE, exp.sky_e, dtype=np.float32)
    t = src.table
    on = np.asarray(t["field_id"]) == exp.field_id
    px, py = optics.sky_to_pixel(ccd, np.asarray(t["ra"]), np.asarray(t["dec"]), exp.ra, exp.dec)
    near = on & (px > -300) & (px < nx + 300) & (py > -300) & (py < ny + 300)
    kinds = np.asarray(t["kind"])
    pts = np.nonzero(near & (kinds != "galaxy"))[0]
    add_point_sources(img, px[pts], py[pts], _flux_in(exp, src, pts), exp.fwhm_pix)
    gal = np.nonzero(near & (kinds == "galaxy"))[0]
    jac = optics.local_jacobian(ccd, 1023.5, 2047.5, exp.ra, exp.dec)
    add_galaxies(img, px[gal], py[gal], _flux_in(exp, src, gal), np.asarray(t["r_eff"])[gal],
                 np.asarray(t["q"])[gal], np.asarray(t["pa"])[gal], jac, exp.fwhm_pix)
    flat = _flat(cfg.seed, ccd.ccdnum, exp.band)
    if dead:
        det = np.zeros(CCD_SHAPE, dtype=np.float32)
    else:
        det = rng.poisson(img * flat).astype(np.float32)
    crs = cosmic_rays(CCD_SHAPE, cfg.cosmic_rays, rng)
    det += crs
    level = _bias_level(cfg.seed, ccd.ccdnum)
    gain_col = np.empty(nx, dtype=np.float32)
    fw_col = np.empty(nx, dtype=np.float32)
    for amp, cols in ((ccd.left_amp, slice(0, 1024)), (ccd.right_amp, slice(1024, 2048))):
        gain_col[cols] = amp.gain
        fw_col[cols] = (amp.saturation - level[amp.name] + 300.0) * amp.gain
    bleed(det, fw_col)
    raw = np.empty(RAW_SHAPE, dtype=np.float32)
    for amp, cols in ((ccd.left_amp, slice(0, 1080)), (ccd.right_amp, slice(1080, 2160))):
        drift = _drift(_rng(cfg.seed, _tag("drft"), exp.expnum, ccd.ccdnum, _tag(amp.name)))
        lev = level[amp.name] + float(rng.normal(0, 3.0))
        raw[:, cols] = (lev + drift)[:, None]
        raw[:, cols] += rng.normal(0.0, amp.read_noise / amp.gain, (RAW_SHAPE[0], 1080)).astype(np.float32)
    data = raw[READ_ROWS_OFFSET:, READ_COLS_OFFSET:READ_COLS_OFFSET + nx]
    data += det / gain_col[None, :] + _bias2d(cfg.seed, ccd.ccdnum)
    boxes = defect_boxes(ccd.ccdnum, exp.mjd_obs)
    if len(boxes):
        hot = rng.random(len(boxes)) < 0.5
        vals = np.where(hot, rng.uniform(8000, 65535, len(boxes)), rng.uniform(0, 1500, len(boxes)))
        for (x0, y0, w, h), v in zip(boxes, vals):  # a few hundred boxes, each a slice assignment
            data[y0:y0 + h, x0:x0 + w] = v
    out = np.clip(np.rint(raw), 0, 65535).astype(np.uint16)
    return out, crs > 0


def render_tile(cfg: SimConfig, tile: dict, band: str, src: Sources):
    """Template tile image and variance (nJy, nJy^2) with the static sky (variables at their mean)."""
    rng = _rng(cfg.seed, _tag("tile"), tile["tile_id"], _tag(band))
    n = tile["npix"]
    fwhm = cfg.template_fwhm / 0.263
    nea = noise_equivalent_area(fwhm)
    sigma = float(_mag_to_njy(cfg.template_depth) / 5.0 / np.sqrt(nea))
    img = rng.normal(0.0, sigma, (n, n)).astype(np.float32)
    t = src.table
    kinds = np.asarray(t["kind"])
    static = (np.asarray(t["field_id"]) == tile["field_id"]) & np.isin(kinds, ("star", "variable", "galaxy"))
    px, py = tile["wcs"].all_world2pix(np.asarray(t["ra"]), np.asarray(t["dec"]), 0)
    near = static & (px > -300) & (px < n + 300) & (py > -300) & (py < n + 300)
    flux = _mag_to_njy(np.asarray(t["ref_mag_" + band]))
    pts = np.nonzero(near & (kinds != "galaxy"))[0]
    add_point_sources(img, px[pts], py[pts], flux[pts], fwhm, floor_value=0.02 * sigma)
    gal = np.nonzero(near & (kinds == "galaxy"))[0]
    jac = np.array([[-0.263, 0.0], [0.0, 0.263]])
    add_galaxies(img, px[gal], py[gal], flux[gal], np.asarray(t["r_eff"])[gal], np.asarray(t["q"])[gal],
                 np.asarray(t["pa"])[gal], jac, fwhm)
    var = np.full((n, n), sigma**2, dtype=np.float32)
    return img, var, fwhm, sigma


# ---------------------------------------------------------------------------------------------- writing
def extension_order(ccds) -> list[int]:
    """Order of the CCD extensions in a raw file: by DETPOS descending, never CCDNUM order (if > 1 CCD)."""
    order = sorted(ccds, key=lambda c: decam_camera().ccd(c).detpos, reverse=True)
    if len(order) > 1 and order == sorted(order):
        order = order[::-1]
    return order


def _write_raw(root: Path, cfg: SimConfig, exp: Exposure, src: Sources, progress_cb=None) -> Path:
    rel = datarepo.raw_path(exp.expnum, compressed=cfg.compress)
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    order = extension_order(cfg.ccds)
    fits.HDUList([fits.PrimaryHDU(header=_primary_header(exp, cfg, len(order)))]).writeto(path, overwrite=True)
    truth_hdus = [fits.PrimaryHDU()]
    for c in order:
        ccd = decam_camera().ccd(c)
        pix, crmask = render_ccd(cfg, exp, ccd, src)
        hdr = _extension_header(ccd, header_wcs_cards(ccd, exp))
        if cfg.compress:
            hdu = fits.CompImageHDU(pix, header=hdr, compression_type="RICE_1", tile_shape=(1, RAW_SHAPE[1]))
        else:
            hdu = fits.ImageHDU(pix, header=hdr)
        with fits.open(path, mode="append") as hdul:
            hdul.append(hdu)
        w, res = true_wcs(ccd, exp.ra, exp.dec)
        if res > 5.0:
            raise RuntimeError(f"true WCS fit residual {res:.2f} mas > 5 mas for CCD {c}")
        th = w.to_header(relax=True)
        th["EXTNAME"] = ccd.detpos
        th["CCDNUM"] = c
        th["DETPOS"] = ccd.detpos
        th["FITRES"] = (round(res, 4), "[mas] max residual of the SIP fit to the truth")
        truth_hdus.append(fits.ImageHDU(header=th))
        if cfg.small:
            cr_path = root / "truth" / "cosmic_rays" / f"{exp.expnum:08d}_{c:02d}.npy"
            cr_path.parent.mkdir(parents=True, exist_ok=True)
            np.save(cr_path, crmask)
        if progress_cb:
            progress_cb()
    wpath = root / datarepo.truth_wcs_path(exp.expnum)
    wpath.parent.mkdir(parents=True, exist_ok=True)
    ph = truth_hdus[0].header
    ph["EXPNUM"] = exp.expnum
    ph["RA0"] = (exp.ra, "[deg] true boresight RA")
    ph["DEC0"] = (exp.dec, "[deg] true boresight Dec")
    fits.HDUList(truth_hdus).writeto(wpath, overwrite=True)
    return path


def _write_event(root: Path, cfg: SimConfig, exp: Exposure) -> None:
    from streamer.events.files import write_event_file
    from streamer.events.records import INSTRUMENT, ExposureReady

    event = ExposureReady(
        event_id=f"DECam-{exp.expnum}",
        instrument=INSTRUMENT,
        exposure_id=exp.expnum,
        raw_path=str(datarepo.raw_path(exp.expnum, compressed=cfg.compress)),
        band=exp.band,
        midpoint_mjd_tai=exp.mjd_mid,
        shutter_close_mjd_tai=exp.mjd_obs + exp.exptime / 86400.0,
        ra=exp.target_ra,
        dec=exp.target_dec,
        detectors=tuple(sorted(int(c) for c in cfg.ccds)),
        replay=False,
    )
    write_event_file(root / datarepo.event_path(exp.expnum), event,
                     sync_marker=np.random.default_rng([cfg.seed, exp.expnum]).bytes(16))


def _write_calibs(root: Path, cfg: SimConfig) -> None:
    (root / "calib").mkdir(parents=True, exist_ok=True)
    order = extension_order(cfg.ccds)
    targets = [(root / datarepo.bias_path(), lambda c: _bias2d(cfg.seed, c), "bias", None)]
    targets += [(root / datarepo.flat_path(b), (lambda b: lambda c: _flat(cfg.seed, c, b))(b), "flat", b)
                for b in cfg.bands]
    for path, make, kind, band in targets:
        ph = fits.Header()
        ph["INSTRUME"] = "DECam"
        ph["OBSTYPE"] = "zero" if kind == "bias" else "dome flat"
        ph["PROCTYPE"] = "MasterCal"
        if band:
            ph["FILTER"] = FILTER_NAMES[band]
            ph["BAND"] = band
        ph["BUNIT"] = "adu" if kind == "bias" else ""
        fits.HDUList([fits.PrimaryHDU(header=ph)]).writeto(path, overwrite=True)
        for c in order:
            ccd = decam_camera().ccd(c)
            h = fits.Header()
            h["EXTNAME"] = ccd.detpos
            h["CCDNUM"] = c
            h["DETPOS"] = ccd.detpos
            h["BUNIT"] = "adu" if kind == "bias" else ""
            with fits.open(path, mode="append") as hdul:
                hdul.append(fits.ImageHDU(np.ascontiguousarray(make(c)), header=h))


def _write_refcat(root: Path, src: Sources) -> None:
    t = src.table
    stars = t[t["kind"] == "star"]
    out = Table()
    out["ref_id"] = np.asarray(stars["source_id"], dtype=np.int64)
    out["ra"] = np.asarray(stars["ra"], dtype=np.float64)
    out["dec"] = np.asarray(stars["dec"], dtype=np.float64)
    for b in ("g", "r", "i", "z"):
        out[f"{b}_mag"] = np.asarray(stars[f"ref_mag_{b}"], dtype=np.float32)
    path = root / datarepo.refcat_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(out, name="REFCAT")]).writeto(path, overwrite=True)


def _write_templates(root: Path, cfg: SimConfig, tiles, src: Sources, progress_cb=None) -> None:
    for band in cfg.bands:
        rows = []
        for tile in tiles:
            img, var, fwhm, sigma = render_tile(cfg, tile, band, src)
            hdr = tile["wcs"].to_header()
            hdr["BUNIT"] = "nJy"
            hdr["PSF_FWHM"] = (cfg.template_fwhm, "[arcsec] PSF FWHM")
            hdr["DEPTH"] = (cfg.template_depth, "5-sigma point-source AB depth")
            hdr["BAND"] = band
            hdr["TILEID"] = tile["tile_id"]
            rel = datarepo.template_tile_path(band, tile["tile_id"])
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            hdus = [fits.PrimaryHDU(),
                    fits.ImageHDU(img, header=hdr, name="IMAGE"),
                    fits.ImageHDU(var, header=hdr, name="VARIANCE"),
                    fits.ImageHDU(np.zeros(img.shape, dtype=np.int32), header=hdr, name="MASK")]
            hdus[2].header["BUNIT"] = "nJy**2"
            hdus[3].header["BUNIT"] = ""
            fits.HDUList(hdus).writeto(path, overwrite=True)
            rows.append((tile["tile_id"], tile["ra"], tile["dec"], tile["radius"], str(rel)))
            if progress_cb:
                progress_cb()
        idx = Table(rows=rows, names=("tile_id", "ra", "dec", "radius_deg", "path"),
                    dtype=(np.int64, float, float, float, str))
        idx.write(root / datarepo.template_index_path(band), format="ascii.ecsv", overwrite=True)


def _write_truth(root: Path, exps: list[Exposure], src: Sources, cfg: SimConfig) -> None:
    tdir = root / datarepo.truth_dir()
    tdir.mkdir(parents=True, exist_ok=True)
    et = Table(rows=[(e.expnum, e.mjd_mid, e.mjd_obs, e.band, e.exptime, e.airmass, e.ra, e.dec, e.target_ra,
                      e.target_dec, e.seeing, e.zero_point, e.sky_e, e.field_id, e.epoch) for e in exps],
               names=("expnum", "mjd", "mjd_obs", "band", "exptime", "airmass", "ra", "dec", "target_ra",
                      "target_dec", "seeing_fwhm_arcsec", "zero_point", "sky_e_per_pix", "field_id", "epoch"))
    et.meta["comments"] = ["mjd: exposure midpoint (TAI); ra/dec: true boresight; target_ra/dec: header RA/DEC",
                           "zero_point: AB mag of 1 electron after ISR (flat-fielded, gain applied)"]
    et.write(tdir / "exposures.ecsv", format="ascii.ecsv", overwrite=True)
    t = src.table
    st = Table()
    for c in ("source_id", "ra", "dec", "kind", "host_id", "field_id", "r_eff", "q", "pa"):
        st[c] = t[c]
    for b in BANDS:
        st[f"ref_mag_{b}"] = np.asarray(t[f"ref_mag_{b}"], dtype=np.float32)
    st.write(tdir / "sources.ecsv", format="ascii.ecsv", overwrite=True)
    rows = []
    by_id = {int(s): k for k, s in enumerate(t["source_id"])}
    emap = {e.expnum: e for e in exps}
    for sid, lc in sorted(src.lightcurves.items()):
        k = by_id[sid]
        for expnum, (flux, delta, snr) in sorted(lc.items()):
            e = emap[expnum]
            ccdnum, x, y = -1, np.nan, np.nan
            for c in cfg.ccds:
                px, py = optics.sky_to_pixel(decam_camera().ccd(c), t["ra"][k], t["dec"][k], e.ra, e.dec)
                if 0 <= px <= 2047 and 0 <= py <= 4095:
                    ccdnum, x, y = c, float(px), float(py)
                    break
            rows.append((sid, expnum, str(t["kind"][k]), flux, delta, snr, ccdnum, x, y))
    ft = Table(rows=rows, names=("source_id", "expnum", "kind", "flux_njy", "delta_flux_njy", "snr", "ccdnum",
                                 "x", "y"),
               dtype=(np.int64, np.int64, str, float, float, float, np.int64, float, float))
    ft.meta["comments"] = ["flux_njy: total true flux; delta_flux_njy: flux minus template (static) flux",
                           "snr: expected S/N of delta in the science image; x, y: trimmed 0-based pixel"]
    ft.write(tdir / "fluxes.ecsv", format="ascii.ecsv", overwrite=True)


def simulate(root, config: SimConfig | None = None, **overrides) -> SimSummary:
    """Simulate a data repository at ``root`` (see :mod:`schemas.datarepo`)."""
    cfg = config or SimConfig()
    if overrides:
        cfg = cfg.model_copy(update=overrides)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    exps, centers = _make_exposures(cfg)
    tiles = _tile_plan(cfg, exps, centers)
    src = _make_sources(cfg, exps, centers, tiles)
    total = len(exps) * len(cfg.ccds) + len(tiles) * len(cfg.bands) + 2
    progress = None
    if cfg.progress:
        from rich.progress import Progress

        progress = Progress()
        progress.start()
        task = progress.add_task("blink sim", total=total)
        step = lambda: progress.advance(task)  # noqa: E731
    else:
        step = None
    try:
        _write_calibs(root, cfg)
        _write_refcat(root, src)
        _write_templates(root, cfg, tiles, src, step)
        raws = []
        for exp in exps:
            raws.append(_write_raw(root, cfg, exp, src, step))
            _write_event(root, cfg, exp)
        _write_truth(root, exps, src, cfg)
    finally:
        if progress is not None:
            progress.stop()
    return SimSummary(root=root, expnums=[e.expnum for e in exps], raw_paths=raws, n_exposures=len(exps),
                      n_ccds=len(cfg.ccds), n_transients=len(src.lightcurves), n_template_tiles=len(tiles),
                      fields=centers)
