"""FITS headers of simulated raws: DECam's primary and extension keywords, and the raw WCS cards."""

from __future__ import annotations

import numpy as np
from astropy.coordinates import Angle, SkyCoord
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS
from astropy.wcs.utils import fit_wcs_from_points

from schemas import datarepo
from simulator.camera import CCD_SHAPE, SimCcd
from simulator.world import BANDS, FILTER_NAMES, READ_COLS_OFFSET, READ_ROWS_OFFSET, Exposure

from . import camera, optics
from .config import SimConfig


def primary_header(exp: Exposure, cfg: SimConfig, next: int) -> fits.Header:
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


def detsec_origin(ccd: SimCcd) -> tuple[int, int]:
    xmin, _, ymin, _ = ccd.bounds_mm
    x1 = int(round((xmin + 216.48) / camera.PIXEL_SIZE_MM)) + 1
    y1 = int(round((ymin + 221.936) / camera.PIXEL_SIZE_MM)) + 1
    return max(x1, 1), max(y1, 1)


def extension_header(ccd: SimCcd, wcs_cards: list) -> fits.Header:
    dx, dy = detsec_origin(ccd)
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
        ("VALIDA", ccd.ccdnum not in camera.DEAD_CCDS, "Data from amp A is valid"),
        ("VALIDB", ccd.ccdnum not in camera.DEAD_CCDS, "Data from amp B is valid"),
        ("NDONUTS", 0, "AOS number of donuts analyzed for this CCD"),
    ]
    for k, v, c in cards:
        h[k] = (v, c)
    return h


def pixel_grid(nx=17, ny=33):
    gx, gy = np.meshgrid(np.linspace(0, CCD_SHAPE[1] - 1, nx), np.linspace(0, CCD_SHAPE[0] - 1, ny))
    return gx.ravel(), gy.ravel()


def header_wcs_cards(ccd: SimCcd, exp: Exposure) -> list:
    """Approximate telescope WCS: TAN about the (believed) pointing, linear fit to the true optics, in
    raw-file 1-based pixels; off from the truth by the pointing error (and the neglected distortion)."""
    gx, gy = pixel_grid()
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


def true_wcs(ccd: SimCcd, ra0: float, dec0: float) -> tuple[WCS, float]:
    """TAN-SIP (degree 3) fit of the true trimmed-pixel -> sky mapping; returns (wcs, max residual mas)."""
    gx, gy = pixel_grid(17, 33)
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
